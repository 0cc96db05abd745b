"""Ranking: CMC and mAP under the Market-1501 protocol, vectorized (no compile step).

* :func:`evaluate_rank` - the torchreid interface and numbers, on a full distance matrix
  (NumPy array or tensor; a CUDA tensor is ranked on the GPU).
* :func:`evaluate_chunked` - :func:`~bpbreid.metrics.distance.part_based_distance` and the
  ranking one block of queries at a time, for galleries whose full distance matrix would not
  fit in memory.

Example::

    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    print(f"rank-1 {cmc[0]:.1%}  mAP {mAP:.1%}")

Reference:
    Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015: the Market-1501
    protocol (gallery images of the query's identity taken by the query's camera are ignored);
    torchreid ``metrics/rank.py`` (``eval_market1501``) for the exact CMC/AP definitions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bpbreid.errors import DatasetError
from bpbreid.metrics._convert import as_tensor, to_numpy
from bpbreid.metrics.distance import part_based_distance

__all__ = ["RankDetails", "evaluate_chunked", "evaluate_rank"]

# Elements of one [n_query, n_gallery] block sorted at once by the ranking.
_CPU_RANK_ELEMENTS = 1 << 22
_CUDA_RANK_ELEMENTS = 1 << 27


@dataclass
class RankDetails:
    """Per-query results of :func:`evaluate_rank` (``return_details=True``).

    Attributes:
        average_precision: ``[Nq]`` float64 AP of each query (NaN where skipped).
        first_match_rank: ``[Nq]`` int64, 0-based rank of the first correct match among the
            gallery items that count for that query (-1 where skipped).
        num_matches: ``[Nq]`` int64 number of correct matches (same identity, other camera).
        valid: ``[Nq]`` bool, False for queries skipped because they have no correct match.
        num_skipped: how many queries were skipped.
    """

    average_precision: np.ndarray
    first_match_rank: np.ndarray
    num_matches: np.ndarray
    valid: np.ndarray
    num_skipped: int


def _sortable_keys(block: np.ndarray) -> np.ndarray:
    """uint64 keys whose order is (distance, gallery index): one SIMD sort ranks a block.

    The float32 bit pattern is mapped to an unsigned integer with the same order (flip all
    bits of negatives, set the sign bit of positives) and placed above the gallery index, so
    equal distances keep gallery order - a stable sort without the cost of one.
    """
    values = np.add(block, np.float32(0.0), dtype=np.float32)  # also turns -0.0 into +0.0
    bits = values.view(np.uint32)
    flip = (values.view(np.int32) >> 31).view(np.uint32) | np.uint32(0x80000000)
    np.bitwise_xor(bits, flip, out=bits)
    keys = bits.astype(np.uint64)
    keys <<= np.uint64(32)
    keys |= np.arange(block.shape[1], dtype=np.uint64)
    return keys


def _sorted_order(block: Any) -> torch.Tensor:
    """``[n, Ng]`` int64 gallery indices sorted by distance, ties by gallery index."""
    if isinstance(block, torch.Tensor) and block.device.type != "cpu":
        return torch.sort(block, dim=1, stable=True).indices
    arr = to_numpy(block)
    if arr.dtype != np.float32:
        as32 = arr.astype(np.float32)
        if not np.array_equal(as32, arr, equal_nan=True):
            # float64 values that float32 would tie: rank them exactly (slower).
            return torch.from_numpy(np.argsort(arr, axis=1, kind="stable"))
        arr = as32
    if arr.shape[1] >= 1 << 32:
        return torch.from_numpy(np.argsort(arr, axis=1, kind="stable"))
    keys = np.sort(_sortable_keys(arr), axis=1)
    keys &= np.uint64(0xFFFFFFFF)
    return torch.from_numpy(keys.view(np.int64))


def _segment_sum(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Sum of ``values`` per row id (rows sorted), deterministic (no atomics)."""
    counts = torch.bincount(rows, minlength=n_rows)
    ends = counts.cumsum(0)
    csum = torch.cat([values.new_zeros(1), values.cumsum(0)])
    return csum[ends] - csum[ends - counts]


def _exclusive_row_cumsum(values: torch.Tensor, row_start: torch.Tensor) -> torch.Tensor:
    """Sum of the values before each item within its row (items grouped by row, in order)."""
    exclusive = values.cumsum(0) - values
    return exclusive - exclusive[row_start]


def _rank_block(
    block: Any,
    q_pids: torch.Tensor,
    g_pids: torch.Tensor,
    q_camids: torch.Tensor,
    g_camids: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First-match rank, AP and number of correct matches of each query of a block.

    Only the sort and one comparison pass touch every pair; the rest works on the (few)
    gallery items of the query's identity.
    A gallery item with the query's identity *and* camera is removed from the list, so the
    rank of a correct match is its sorted position minus the removed items before it.
    """
    order = _sorted_order(block)  # [n, Ng]
    device = order.device
    n = order.shape[0]
    same_pid = g_pids[order] == q_pids.unsqueeze(1)  # [n, Ng]
    rows, cols = same_pid.nonzero(as_tuple=True)  # row-major: rows sorted, cols ascending
    same_cam = g_camids[order[rows, cols]] == q_camids[rows]
    removed = same_cam.to(torch.int64)
    correct = (~same_cam).to(torch.int64)
    counts = torch.bincount(rows, minlength=n)
    row_start = (counts.cumsum(0) - counts)[rows]  # flat index of each item's row start
    rank = cols - _exclusive_row_cumsum(removed, row_start)  # 0-based rank among kept items
    hits = _exclusive_row_cumsum(correct, row_start) + correct  # correct matches so far
    precision = hits.double() / (rank.double() + 1.0) * correct.double()
    num_matches = _segment_sum(correct, rows, n)
    ap_sum = _segment_sum(precision, rows, n)
    average_precision = ap_sum / num_matches.clamp(min=1).double()
    big = torch.iinfo(torch.int64).max
    first_rank = torch.full((n,), big, dtype=torch.int64, device=device)
    if rows.numel():
        masked_rank = torch.where(correct.bool(), rank, torch.full_like(rank, big))
        first_rank.scatter_reduce_(0, rows, masked_rank, reduce="amin")
    first_rank = torch.where(num_matches > 0, first_rank, torch.full_like(first_rank, -1))
    return first_rank, average_precision, num_matches


def _id_tensor(x: Any, device: torch.device, name: str, length: int) -> torch.Tensor:
    t = as_tensor(x, None, device).reshape(-1)
    if t.numel() != length:
        raise ValueError(f"{name} has {t.numel()} entries, expected {length}.")
    return t.to(torch.int64)


def _rank_all(
    distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, rows_per_block: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    on_cuda = isinstance(distmat, torch.Tensor) and distmat.device.type == "cuda"
    device = distmat.device if on_cuda else torch.device("cpu")
    n_query, n_gallery = distmat.shape
    qp = _id_tensor(q_pids, device, "q_pids", n_query)
    gp = _id_tensor(g_pids, device, "g_pids", n_gallery)
    qc = _id_tensor(q_camids, device, "q_camids", n_query)
    gcam = _id_tensor(g_camids, device, "g_camids", n_gallery)
    budget = _CUDA_RANK_ELEMENTS if on_cuda else _CPU_RANK_ELEMENTS
    rows = rows_per_block or max(1, budget // max(1, n_gallery))
    if not on_cuda and isinstance(distmat, torch.Tensor):
        distmat = distmat.detach().cpu()
    first, ap, nm = [], [], []
    for r0 in range(0, n_query, rows):
        r1 = min(r0 + rows, n_query)
        f, a, m = _rank_block(distmat[r0:r1], qp[r0:r1], gp, qc[r0:r1], gcam)
        first.append(f)
        ap.append(a)
        nm.append(m)
    return (
        torch.cat(first).cpu().numpy(),
        torch.cat(ap).cpu().numpy(),
        torch.cat(nm).cpu().numpy(),
    )


def _summarize(
    first_rank: np.ndarray,
    ap: np.ndarray,
    num_matches: np.ndarray,
    max_rank: int,
    n_gallery: int,
    return_details: bool,
) -> tuple:
    if n_gallery < max_rank:
        # Same behaviour as torchreid: a gallery smaller than max_rank shortens the CMC.
        warnings.warn(
            f"The gallery has {n_gallery} items, fewer than max_rank={max_rank}: "
            f"the CMC curve stops at rank {n_gallery}.",
            stacklevel=3,
        )
        max_rank = n_gallery
    valid = num_matches > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise DatasetError(
            f"None of the {len(first_rank)} queries has a correct match in the gallery (same "
            "identity, another camera). Check that query and gallery come from the same "
            "dataset and split, and that identities and camera ids were parsed correctly."
        )
    hist = np.bincount(first_rank[valid], minlength=max_rank)[:max_rank]
    cmc = (np.cumsum(hist) / num_valid).astype(np.float32)
    mAP = float(np.mean(ap[valid]))
    if not return_details:
        return cmc, mAP
    details = RankDetails(
        average_precision=np.where(valid, ap, np.nan),
        first_match_rank=np.where(valid, first_rank, -1).astype(np.int64),
        num_matches=num_matches.astype(np.int64),
        valid=valid,
        num_skipped=int(len(valid) - num_valid),
    )
    return cmc, mAP, details


def evaluate_rank(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    return_details: bool = False,
    rows_per_block: int | None = None,
) -> tuple[np.ndarray, float] | tuple[np.ndarray, float, RankDetails]:
    """CMC curve and mean average precision under the Market-1501 protocol.

    For each query, the gallery is sorted by distance (ties keep gallery order); gallery
    items with the query's identity *and* camera are removed; a query with no remaining
    item of its identity is skipped (counted in ``details.num_skipped``). A query's CMC is
    1 from the rank of its first correct match on; its AP is the mean, over its correct
    matches, of the precision at each of them. Same definitions and numbers as torchreid's
    ``evaluate_rank`` (Market/Duke path), vectorized: one sort and one comparison pass per
    block of queries, then work proportional to the number of same-identity items only.

    Args:
        distmat: ``[Nq, Ng]`` distances (numpy array or tensor; a CUDA tensor is ranked on
            the GPU).
        q_pids, g_pids: ``[Nq]``, ``[Ng]`` identities.
        q_camids, g_camids: ``[Nq]``, ``[Ng]`` camera ids.
        max_rank: length of the CMC curve (shortened to Ng, with a warning, when Ng is
            smaller).
        return_details: also return a :class:`RankDetails` with per-query AP and ranks.
        rows_per_block: queries sorted at once (None: from a memory budget).

    Returns:
        ``(cmc [max_rank] float32, mAP float)`` in [0, 1], plus ``details`` on request.

    Raises:
        DatasetError: no query has a correct match in the gallery.

    Reference:
        Zheng et al., ICCV 2015 (Market-1501 protocol); torchreid ``metrics/rank.py``
        (``eval_market1501``) for the exact CMC/AP definitions.
    """
    if isinstance(distmat, torch.Tensor):
        dm = distmat.detach()
    else:
        dm = np.asarray(distmat)
    if dm.ndim != 2:
        raise ValueError(f"distmat must be [Nq, Ng], got shape {tuple(dm.shape)}.")
    first, ap, nm = _rank_all(dm, q_pids, g_pids, q_camids, g_camids, rows_per_block)
    return _summarize(first, ap, nm, max_rank, dm.shape[1], return_details)


def evaluate_chunked(
    query_feats: Any,
    gallery_feats: Any,
    q_vis: Any,
    g_vis: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    query_chunk: int = 512,
    metric: str = "euclidean",
    normalize: bool = True,
    return_details: bool = False,
) -> tuple:
    """:func:`part_based_distance` + :func:`evaluate_rank`, one block of queries at a time.

    Memory stays at ``query_chunk x Ng`` distances, whatever the number of queries. The
    result equals the full evaluation: pairs with no common visible embedding get, within a
    block, a value above every valid distance of that block - a different number than the
    full matrix's, but the same place in every ranking (after all valid items, in gallery
    order).

    Args:
        query_feats, gallery_feats: ``[Nq, P, D]``, ``[Ng, P, D]``.
        q_vis, g_vis: ``[Nq, P]``, ``[Ng, P]`` visibility (None: all visible).
        q_pids, g_pids, q_camids, g_camids: identities and cameras.
        max_rank: length of the CMC curve.
        query_chunk: queries per block.
        metric, normalize: as in :func:`part_based_distance`.
        return_details: also return the per-query :class:`RankDetails`.

    Returns:
        ``(cmc, mAP)`` or ``(cmc, mAP, details)`` as :func:`evaluate_rank`.
    """
    q = as_tensor(query_feats)
    g = as_tensor(gallery_feats, None, q.device)
    n_query = q.shape[0]
    q_pids_np, q_cams_np = to_numpy(q_pids).reshape(-1), to_numpy(q_camids).reshape(-1)
    first, ap, nm = [], [], []
    for q0 in range(0, n_query, query_chunk):
        q1 = min(q0 + query_chunk, n_query)
        vis = None if q_vis is None else as_tensor(q_vis)[q0:q1]
        block = part_based_distance(q[q0:q1], g, vis, g_vis, metric=metric, normalize=normalize)
        f, a, m = _rank_all(block, q_pids_np[q0:q1], g_pids, q_cams_np[q0:q1], g_camids, None)
        first.append(f)
        ap.append(a)
        nm.append(m)
    return _summarize(
        np.concatenate(first),
        np.concatenate(ap),
        np.concatenate(nm),
        max_rank,
        g.shape[0],
        return_details,
    )
