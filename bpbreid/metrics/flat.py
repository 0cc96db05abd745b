"""One flat vector per image whose cosine distance approximates the part-based distance.

Tracking libraries (BoT-SORT, StrongSORT, Deep OC-SORT...) accept one embedding ``[N, D]`` per
box and compare them with a cosine distance. :func:`flatten_part_embeddings` turns the test
embeddings ``[N, P, D]`` (foreground + K parts) and their visibility ``[N, P]`` into such a
vector: each embedding L2-normalized and multiplied by the square root of its visibility
(an invisible part becomes zeros), concatenated, then the whole vector normalized.

What the cosine distance of two flat vectors is: with ``s_p`` the cosine similarity of
embedding ``p`` and ``v`` the visibility,

    1 - sum_p sqrt(v_q,p v_g,p) s_p / sqrt(sum_p v_q,p * sum_p v_g,p)

while :func:`bpbreid.metrics.part_based_distance` with ``metric="cosine"`` is

    sum_p sqrt(v_q,p v_g,p) (1 - s_p) / sum_p sqrt(v_q,p v_g,p).

They are **equal when both images show the same parts** (the denominators coincide). When one
image shows a part the other does not, the flat distance counts that part as a similarity of 0
instead of leaving it out; with binary visibility,
``flat = 1 - c * (1 - part_based)`` with ``c = n_both / sqrt(n_q * n_g)`` <= 1 (``n``: the
number of visible embeddings): the similarity is shrunk towards 0, more so the more parts are
seen in only one image. A pair with no visible part in common gets distance 1 (the part-based
distance ranks such pairs last too). The ranking of one detection against tracks that all show
the same parts is therefore the part-based ranking.
"""

from __future__ import annotations

from typing import Any

import torch

from bpbreid.metrics._convert import as_tensor

__all__ = ["flatten_part_embeddings"]


def flatten_part_embeddings(
    features: Any, visibility: Any = None, eps: float = 1e-12
) -> torch.Tensor:
    """``[N, P, D]`` embeddings + ``[N, P]`` visibility -> unit vectors ``[N, P * D]``.

    Args:
        features: ``[N, P, D]`` test embeddings (tensor or array).
        visibility: ``[N, P]`` bool or float in [0, 1]; None = every embedding visible.
        eps: guards the normalizations (an all-invisible row stays all zeros).

    Returns:
        float32 ``[N, P * D]``; the cosine distance of two rows approximates the visibility-aware
        part-based cosine distance (equal when both show the same parts; see the module).

    Written with tensor operations only (no Python branch on values), so that it traces and
    exports to ONNX with a dynamic batch axis.
    """
    feats = as_tensor(features, torch.float32)
    if feats.dim() != 3:
        raise ValueError(f"features must be [N, P, D], got shape {tuple(feats.shape)}.")
    unit = feats / torch.linalg.vector_norm(feats, dim=-1, keepdim=True).clamp_min(eps)
    if visibility is not None:
        vis = as_tensor(visibility, None, feats.device).to(torch.float32)
        if tuple(vis.shape) != tuple(feats.shape[:2]):
            raise ValueError(
                f"visibility must be [N, P] = {tuple(feats.shape[:2])}, got {tuple(vis.shape)}."
            )
        # sqrt: the product of two rows then weighs part p by sqrt(v_q v_g), as the distance does.
        unit = unit * vis.clamp(0, 1).sqrt().unsqueeze(-1)
    flat = unit.flatten(1)
    return flat / torch.linalg.vector_norm(flat, dim=1, keepdim=True).clamp_min(eps)
