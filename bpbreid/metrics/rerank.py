"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), as published.

Reference:
    Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding",
    CVPR 2017, and its reference implementation (torchreid ``utils/rerank.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bpbreid.metrics._convert import to_numpy

__all__ = ["re_ranking"]


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
    qg = torch.as_tensor(to_numpy(q_g_dist), dtype=torch.float32)
    qq = torch.as_tensor(to_numpy(q_q_dist), dtype=torch.float32)
    gg = torch.as_tensor(to_numpy(g_g_dist), dtype=torch.float32)
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
