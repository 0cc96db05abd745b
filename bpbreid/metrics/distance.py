"""The BPBReID test-time distance: per-embedding distances averaged over visible parts.

Every test embedding (the foreground embedding and the K part embeddings by default) is
compared on its own; a query-gallery pair averages the distances of the embeddings *visible
in both* images (weights ``sqrt(v_q * v_g)`` for soft visibility scores). The work is one
batched matrix multiplication per block of queries and gallery items, so the full
``[P, Nq, Ng]`` tensor of per-embedding distances never exists.

Example::

    distmat = part_based_distance(q_feats, g_feats, q_vis, g_vis)   # [Nq, Ng]

Reference:
    Somers et al., "Body Part-Based Representation Learning for Occluded Person
    Re-Identification", WACV 2023 (arXiv 2211.03679), Sec. 3.5: test-time distance averaged
    over the parts visible in both images.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from bpbreid.metrics._convert import as_tensor

__all__ = ["METRICS", "part_based_distance"]

METRICS = ("euclidean", "cosine")

# Elements of one [P, n_query, n_gallery] block of per-part distances. On the CPU a block of
# ~5 MB (256 queries x 512 gallery x 9 embeddings) stays in cache, so the element-wise passes
# after each matrix multiplication are cheap; on a GPU larger blocks keep the device busy.
_CPU_BLOCK_ELEMENTS = 5 << 18
_CUDA_BLOCK_ELEMENTS = 1 << 28


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
    q = as_tensor(query_feats, torch.float32)
    g = as_tensor(gallery_feats, torch.float32, q.device)
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
    v = as_tensor(visibility, None, feats.device).to(torch.float32)
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
