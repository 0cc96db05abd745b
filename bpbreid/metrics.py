"""Re-identification metrics: part-based distances with visibility, CMC and mAP.

Pure functions of features: nothing here knows about models, loaders or training.

* :func:`part_based_distance` - the BPBReID test-time distance. Every test embedding (the
  foreground embedding and the K part embeddings by default) is compared on its own; a
  query-gallery pair averages the distances of the embeddings *visible in both* images.
* :func:`evaluate_rank` - CMC and mAP under the Market-1501 protocol, vectorized (no compile
  step), giving the same numbers as torchreid's reference implementation.
* :func:`evaluate_chunked` - distance and ranking one block of queries at a time, for
  galleries whose full distance matrix would not fit in memory.
* :func:`re_ranking` - k-reciprocal re-ranking.

Example::

    distmat = part_based_distance(q_feats, g_feats, q_vis, g_vis)   # [Nq, Ng]
    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    print(f"rank-1 {cmc[0]:.1%}  mAP {mAP:.1%}")

Reference:
    Somers et al., "Body Part-Based Representation Learning for Occluded Person
    Re-Identification", WACV 2023 (arXiv 2211.03679), Sec. 3.5: test-time distance averaged
    over the parts visible in both images.
    Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015: the Market-1501
    protocol (gallery images of the query's identity taken by the query's camera are ignored).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bpbreid.errors import DatasetError

__all__ = [
    "RankDetails",
    "evaluate_chunked",
    "evaluate_rank",
    "part_based_distance",
    "re_ranking",
]

METRICS = ("euclidean", "cosine")

# Elements of one [P, n_query, n_gallery] block of per-part distances. On the CPU a block of
# ~5 MB (256 queries x 512 gallery x 9 embeddings) stays in cache, so the element-wise passes
# after each matrix multiplication are cheap; on a GPU larger blocks keep the device busy.
_CPU_BLOCK_ELEMENTS = 5 << 18
_CUDA_BLOCK_ELEMENTS = 1 << 28
# Elements of one [n_query, n_gallery] block sorted at once by the ranking.
_CPU_RANK_ELEMENTS = 1 << 22
_CUDA_RANK_ELEMENTS = 1 << 27


# --------------------------------------------------------------------------------------
# Part-based distance
# --------------------------------------------------------------------------------------


def _as_tensor(x: Any, dtype: torch.dtype | None = None, device: Any = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device if device is not None else t.device, dtype=dtype or t.dtype)


def _check_features(feats: torch.Tensor, visibility: torch.Tensor | None, name: str) -> None:
    if feats.dim() != 3:
        raise ValueError(f"{name} features must be [N, P, D], got shape {tuple(feats.shape)}.")
    if visibility is not None and tuple(visibility.shape) != tuple(feats.shape[:2]):
        raise ValueError(
            f"{name} visibility must be [N, P] = {tuple(feats.shape[:2])}, "
            f"got {tuple(visibility.shape)}."
        )


def _augmented(
    feats: torch.Tensor, weights: torch.Tensor, metric: str, normalize: bool, side: str
) -> torch.Tensor:
    """Embed each part so that one matmul gives the *weighted* per-part distance.

    For the euclidean metric the product of a query row and a gallery row is
    ``v_q v_g ||q - g||^2 = (v_q q).(-2 v_g g) + (v_q |q|^2) v_g + v_q (v_g |g|^2)``, so
    visibility weights and squared norms ride along as two extra coordinates; a part invisible
    on either side (weight 0) gives exactly 0. For the cosine metric the product is
    ``sqrt(v_q v_g) (1 - q.g)`` with unit vectors.

    Args:
        feats: ``[N, P, D]`` float32.
        weights: ``[N, P]`` visibility in [0, 1].
        side: ``"query"`` or ``"gallery"``.

    Returns:
        ``[N, P, D + 2]`` (euclidean) or ``[N, P, D + 1]`` (cosine), contiguous; the matmul
        reads it through a ``[P, N, D']`` view (no transposed copy).
    """
    n, n_parts, dim = feats.shape
    extra = 2 if metric == "euclidean" else 1
    # Filled in place, one [N, P, D'] buffer: no full-size temporaries (memory stays bounded).
    out = torch.empty(n, n_parts, dim + extra, dtype=torch.float32, device=feats.device)
    body = out[..., :dim]
    body.copy_(feats)
    norm = torch.linalg.vector_norm(body, dim=-1, keepdim=True)  # [N, P, 1]
    if normalize or metric == "cosine":
        body.div_(norm.clamp_(min=1e-12))
        # The norms of the stored vectors (1 up to rounding) keep d(x, x) closest to 0.
        norm = torch.linalg.vector_norm(body, dim=-1, keepdim=True)
    sq_norm = norm.square_()
    w = weights.unsqueeze(-1).to(torch.float32)  # [N, P, 1]
    if metric == "euclidean":
        body.mul_(w if side == "query" else -2.0 * w)
        first, second = (w * sq_norm, w) if side == "query" else (w, w * sq_norm)
        out[..., dim : dim + 1] = first
        out[..., dim + 1 :] = second
    else:
        root = w.sqrt()
        body.mul_(root if side == "query" else -root)
        out[..., dim:] = root
    return out


def _block_sizes(
    n_query: int,
    n_gallery: int,
    n_parts: int,
    device: torch.device,
    chunk_size: int | None,
    query_chunk: int | None,
) -> tuple[int, int]:
    budget = _CUDA_BLOCK_ELEMENTS if device.type == "cuda" else _CPU_BLOCK_ELEMENTS
    qc = query_chunk or min(n_query, 256 if device.type != "cuda" else 8192)
    # Gallery blocks in multiples of 64 columns: the matrix multiplication runs fastest there.
    gc = chunk_size or max(64, budget // max(1, n_parts * qc) // 64 * 64)
    return max(1, min(qc, n_query)), max(1, min(gc, n_gallery))


def part_based_distance(
    query_feats: Any,
    gallery_feats: Any,
    query_visibility: Any = None,
    gallery_visibility: Any = None,
    metric: str = "euclidean",
    normalize: bool = True,
    chunk_size: int | None = None,
    query_chunk: int | None = None,
    return_parts_for: list[int] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Query-gallery distances averaged over the embeddings visible in both images.

    Each of the P embeddings (e.g. foreground + K parts) is compared on its own, then a pair's
    distance is the mean over the embeddings visible in both images, weighted by
    ``sqrt(v_q * v_g)`` for soft visibility scores (the plain mean for boolean ones). A pair
    with no embedding visible in both gets the largest valid per-embedding distance of the
    whole matrix + 1, so it ranks after every real candidate.

    The per-embedding distances are one batched matrix multiplication per block
    (``[P, nq, D] x [P, D, ng]``, using ``||q||^2 + ||g||^2 - 2 q.g``), on the device of the
    inputs (CUDA when they are there), in float32, block by block so that the full
    ``[P, Nq, Ng]`` tensor never exists.

    Args:
        query_feats: ``[Nq, P, D]`` query embeddings (tensor or array).
        gallery_feats: ``[Ng, P, D]`` gallery embeddings.
        query_visibility: ``[Nq, P]`` bool or float in [0, 1]; None = all visible.
        gallery_visibility: ``[Ng, P]`` bool or float in [0, 1]; None = all visible.
        metric: ``"euclidean"`` (not squared) or ``"cosine"`` (1 - cosine similarity).
        normalize: L2-normalize each embedding first (the paper does; cosine always does).
        chunk_size: gallery items per block (None: chosen from a memory budget).
        query_chunk: query items per block (None: chosen from a memory budget).
        return_parts_for: query indices whose per-embedding distances are also returned.

    Returns:
        ``distmat [Nq, Ng]`` float32 on the inputs' device; with ``return_parts_for``, also
        ``part_distances [P, n, Ng]`` (unweighted per-embedding distances of those queries,
        whatever their visibility).

    Reference:
        Somers et al., WACV 2023, Sec. 3.5 (visibility-aware test-time distance).
    """
    if metric not in METRICS:
        raise ValueError(f"Unknown distance metric '{metric}'. Valid: {', '.join(METRICS)}.")
    q = _as_tensor(query_feats, torch.float32)
    g = _as_tensor(gallery_feats, torch.float32, q.device)
    device = q.device
    _check_features(q, None, "query")
    _check_features(g, None, "gallery")
    if q.shape[1:] != g.shape[1:]:
        raise ValueError(
            f"Query features {tuple(q.shape)} and gallery features {tuple(g.shape)} "
            "must have the same number of embeddings P and dimension D."
        )
    qv = _visibility(query_visibility, q)
    gv = _visibility(gallery_visibility, g)
    _check_features(q, qv, "query")
    _check_features(g, gv, "gallery")

    with _exact_float32(device):
        distmat = _blocked_distance(q, g, qv, gv, metric, normalize, chunk_size, query_chunk)
        if return_parts_for is None:
            return distmat
        return distmat, _per_part_distances(q, g, return_parts_for, metric, normalize)


@contextmanager
def _exact_float32(device: torch.device) -> Iterator[None]:
    """Plain float32 products on CUDA (no TF32): distances are compared to 1e-6."""
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _blocked_distance(
    q: torch.Tensor,
    g: torch.Tensor,
    qv: torch.Tensor,
    gv: torch.Tensor,
    metric: str,
    normalize: bool,
    chunk_size: int | None,
    query_chunk: int | None,
) -> torch.Tensor:
    device = q.device
    n_query, n_parts, _ = q.shape
    n_gallery = g.shape[0]
    binary = _is_binary(qv) and _is_binary(gv)
    q_aug = _augmented(q, qv, metric, normalize, "query").transpose(0, 1)  # [P, Nq, D'] view
    g_aug = _augmented(g, gv, metric, normalize, "gallery").transpose(0, 1)  # [P, Ng, D']
    # Sum of pair weights sqrt(v_q v_g) over embeddings: a tiny [Nq, P] x [P, Ng] product.
    q_root, g_root = qv.sqrt(), gv.sqrt()

    qc, gc = _block_sizes(n_query, n_gallery, n_parts, device, chunk_size, query_chunk)
    distmat = torch.empty(n_query, n_gallery, dtype=torch.float32, device=device)
    block = torch.empty(n_parts, qc, gc, dtype=torch.float32, device=device)
    max_valid = torch.zeros((), dtype=torch.float32, device=device)
    for q0 in range(0, n_query, qc):
        q1 = min(q0 + qc, n_query)
        for g0 in range(0, n_gallery, gc):
            g1 = min(g0 + gc, n_gallery)
            out = block[:, : q1 - q0, : g1 - g0]
            # The only O(P Nq Ng D) work; everything after it is element-wise on the block.
            torch.bmm(q_aug[:, q0:q1], g_aug[:, g0:g1].transpose(1, 2), out=out)
            if metric == "euclidean":
                out.clamp_(min=0).sqrt_()  # weighted distance sqrt(v_q v_g) ||q - g||
            if binary:
                # Weights are 0 or 1: the block max is the largest valid distance.
                max_valid = torch.maximum(max_valid, out.amax())
            else:
                max_valid = torch.maximum(
                    max_valid, _max_valid_soft(out, q_root[q0:q1], g_root[g0:g1])
                )
            weight_sum = q_root[q0:q1] @ g_root[g0:g1].t()  # [nq, ng]
            # Weighted mean, written in place; a pair with no common embedding is 0 / 0 = NaN.
            torch.div(out.sum(0), weight_sum, out=distmat[q0:q1, g0:g1])
    invalid = torch.isnan(distmat)
    if bool(invalid.any()):
        # One value for the whole matrix (not per block): larger than every valid distance.
        distmat.masked_fill_(invalid, max_valid + 1.0)
    return distmat


def _visibility(visibility: Any, feats: torch.Tensor) -> torch.Tensor:
    if visibility is None:
        return torch.ones(feats.shape[:2], dtype=torch.float32, device=feats.device)
    v = _as_tensor(visibility, None, feats.device).to(torch.float32)
    if v.numel() and (v.min() < 0 or v.max() > 1):
        raise ValueError("Visibility scores must be boolean or in [0, 1].")
    return v


def _is_binary(v: torch.Tensor) -> bool:
    return bool(((v == 0) | (v == 1)).all())


def _max_valid_soft(
    block: torch.Tensor, q_root: torch.Tensor, g_root: torch.Tensor
) -> torch.Tensor:
    """Largest unweighted distance among embeddings with weight > 0 in a weighted block."""
    # weighted = sqrt(v_q) sqrt(v_g) d: divide the weights back out where they are non-zero
    # (zero weights give weighted 0, divided by 1 -> 0, which never raises the max).
    qr = torch.where(q_root > 0, q_root, torch.ones_like(q_root)).t().unsqueeze(-1)  # [P, nq, 1]
    gr = torch.where(g_root > 0, g_root, torch.ones_like(g_root)).t().unsqueeze(1)  # [P, 1, ng]
    return (block / qr / gr).amax()


def _per_part_distances(
    q: torch.Tensor, g: torch.Tensor, indices: list[int], metric: str, normalize: bool
) -> torch.Tensor:
    """Unweighted per-embedding distances ``[P, n, Ng]`` of the chosen queries."""
    idx = torch.as_tensor(list(indices), dtype=torch.long, device=q.device)
    sub = q.index_select(0, idx)
    ones_q = torch.ones(sub.shape[:2], device=q.device)
    ones_g = torch.ones(g.shape[:2], device=q.device)
    q_aug = _augmented(sub, ones_q, metric, normalize, "query").transpose(0, 1)
    g_aug = _augmented(g, ones_g, metric, normalize, "gallery").transpose(0, 1)
    out = torch.bmm(q_aug, g_aug.transpose(1, 2))
    if metric == "euclidean":
        out.clamp_(min=0).sqrt_()
    return out


# --------------------------------------------------------------------------------------
# Ranking: CMC and mAP
# --------------------------------------------------------------------------------------


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


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


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
    arr = _to_numpy(block)
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
    t = _as_tensor(x, None, device).reshape(-1)
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
    q = _as_tensor(query_feats)
    g = _as_tensor(gallery_feats, None, q.device)
    n_query = q.shape[0]
    q_pids_np, q_cams_np = _to_numpy(q_pids).reshape(-1), _to_numpy(q_camids).reshape(-1)
    first, ap, nm = [], [], []
    for q0 in range(0, n_query, query_chunk):
        q1 = min(q0 + query_chunk, n_query)
        vis = None if q_vis is None else _as_tensor(q_vis)[q0:q1]
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


# --------------------------------------------------------------------------------------
# k-reciprocal re-ranking
# --------------------------------------------------------------------------------------


def re_ranking(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranking: ``(1 - lambda) d_Jaccard + lambda d*``, as published.

    Follows the published algorithm step by step (the reference implementation that
    torchreid and the official BPBReID code ship, in float32), over the probe and gallery
    items together:

    * ``d*``: the input distances squared, then each item's row divided by its largest
      entry (the input is expected to be a plain, not squared, euclidean distance);
    * ``N(p, k)``: the k + 1 nearest neighbours of p under ``d*`` (p included);
    * ``R(p, k) = {g in N(p, k) : p in N(g, k)}``, the k-reciprocal neighbours;
    * ``R*(p, k)``: R(p, k) plus, for each c in R(p, k), R(c, round(k/2)) when strictly
      more than 2/3 of it lies in R(p, k);
    * ``V_p[g] = exp(-d*(p, g))`` on R*(p, k), normalised to sum 1; local query expansion
      replaces V_p by the mean of V over the k2 nearest neighbours of p;
    * ``d_J(p, g) = 1 - sum_j min(V_p[j], V_g[j]) / sum_j max(V_p[j], V_g[j])``;
    * the result mixes ``d_J`` with ``d*`` (not with the raw input distances).

    With ``lambda_value=1`` the input distances come back unchanged (re-ranking off).
    Dense ``[N, N]`` matrices over all N = Nq + Ng items (at Market-1501 scale,
    N = 19,281: a few GB).

    Args:
        q_g_dist: ``[Nq, Ng]`` query-gallery distances.
        q_q_dist: ``[Nq, Nq]`` query-query distances.
        g_g_dist: ``[Ng, Ng]`` gallery-gallery distances.
        k1: neighbourhood size of the k-reciprocal sets (paper: 20).
        k2: neighbourhood size of the local query expansion (paper: 6).
        lambda_value: weight of the original distance (paper: 0.3).

    Returns:
        ``[Nq, Ng]`` float32 re-ranked distances.

    Reference:
        Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding",
        CVPR 2017, Eq. 4-13, and its reference implementation (re_ranking, float32 as in
        torchreid's ``utils/rerank.py``).
    """
    qg = torch.as_tensor(_to_numpy(q_g_dist), dtype=torch.float32)
    qq = torch.as_tensor(_to_numpy(q_q_dist), dtype=torch.float32)
    gg = torch.as_tensor(_to_numpy(g_g_dist), dtype=torch.float32)
    n_query, n_gallery = qg.shape
    if qq.shape != (n_query, n_query) or gg.shape != (n_gallery, n_gallery):
        raise ValueError(
            f"re_ranking needs q_q_dist [{n_query}, {n_query}] and g_g_dist "
            f"[{n_gallery}, {n_gallery}]; got {tuple(qq.shape)} and {tuple(gg.shape)}."
        )
    if lambda_value >= 1.0:
        return qg.numpy().copy()
    dist = torch.cat([torch.cat([qq, qg], 1), torch.cat([qg.t(), gg], 1)], 0)  # [N, N]
    del qq, gg
    n = dist.shape[0]
    # The published algorithm squares the distances and scales column j by its maximum,
    # then transposes: row i of the result is the distances *to* item i over their largest
    # value (for a symmetric matrix, each row over its own maximum). The kernel exp(-d) and
    # the final mix both use this scaled, squared distance.
    dist = dist.square()
    dist = (dist / dist.amax(dim=0, keepdim=True).clamp(min=1e-12)).t().contiguous()
    k1 = max(1, min(k1, n - 1))
    half = max(1, int(round(k1 / 2)))
    k2 = max(1, min(k2, n))
    nearest = torch.topk(dist, k1 + 1, dim=1, largest=False, sorted=True).indices  # N(p, k1)
    rows = torch.arange(n).unsqueeze(1)
    in_k = torch.zeros(n, n, dtype=torch.bool)
    in_k[rows, nearest] = True
    in_half = torch.zeros(n, n, dtype=torch.bool)
    in_half[rows, nearest[:, : half + 1]] = True
    reciprocal = in_k & in_k.t()  # R(p, k1): g in N(p, k1) and p in N(g, k1)
    reciprocal_half = in_half & in_half.t()  # R(p, k1 / 2)
    del in_k, in_half

    # R*(p, k1): add R(c, k1/2) of each c in R(p, k1) when > 2/3 of it is in R(p, k1).
    expanded = reciprocal.clone()
    p_idx, c_idx = reciprocal.nonzero(as_tuple=True)
    cand = nearest[c_idx, : half + 1]  # superset of R(c, k1/2): [M, half + 1]
    cand_valid = reciprocal_half[c_idx.unsqueeze(1), cand]
    overlap = (cand_valid & reciprocal[p_idx.unsqueeze(1), cand]).sum(1)
    size = cand_valid.sum(1)
    accept = 3 * overlap > 2 * size  # strictly more than 2/3 (an empty set never joins)
    add = cand_valid & accept.unsqueeze(1)
    expanded[p_idx.unsqueeze(1).expand_as(cand)[add], cand[add]] = True
    del reciprocal, reciprocal_half

    # V_p[g] = exp(-d(p, g)) on R*(p, k1), normalized so that sets of any size weigh alike.
    weights = torch.where(expanded, torch.exp(-dist), torch.zeros(()))
    del expanded
    weights /= weights.sum(1, keepdim=True).clamp(min=1e-12)
    if k2 > 1:
        # Local query expansion: mean encoding of the k2 nearest neighbours (block by block,
        # the gather would otherwise be [N, k2, N]).
        expansion = (
            nearest[:, :k2] if k2 <= k1 + 1 else torch.topk(dist, k2, dim=1, largest=False).indices
        )
        smoothed = torch.empty_like(weights)
        step = max(1, (1 << 24) // max(1, k2 * n))
        for r0 in range(0, n, step):
            smoothed[r0 : r0 + step] = weights[expansion[r0 : r0 + step]].mean(dim=1)
        weights = smoothed
    scaled_qg = dist[:n_query, n_query:].clone()
    del dist

    # Jaccard distance of each query to each gallery item. min + max = a + b, so only the
    # sum of minima over the query's non-zero entries is needed.
    gallery_by_entry = weights[n_query:].t().contiguous()  # [N, Ng]: rows read contiguously
    gallery_mass = gallery_by_entry.sum(0)  # [Ng]
    jaccard = torch.empty(n_query, n_gallery, dtype=torch.float32)
    for p in range(n_query):
        nz = weights[p].nonzero().flatten()
        mins = torch.minimum(gallery_by_entry[nz], weights[p, nz].unsqueeze(1)).sum(0)
        maxs = weights[p, nz].sum() + gallery_mass - mins
        jaccard[p] = 1.0 - mins / maxs.clamp(min=1e-12)
    final = (1.0 - lambda_value) * jaccard + lambda_value * scaled_qg
    return final.numpy()
