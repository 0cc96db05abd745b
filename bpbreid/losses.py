"""Training losses of BPBReID: identity CE, batch-hard and part-averaged triplets, pixel loss, GiLt.

The GiLt loss ("global identity, local triplet") is a configurable sum over the embeddings
{global, foreground, concat_parts, parts} (+ background) of an identity loss and/or a triplet
loss, plus the part-attention (pixel) loss that teaches the part head from parsing labels:

* identity loss: cross-entropy with label smoothing on the BNNeck classifier logits; on
  ``parts`` it is the mean over the K per-part classifiers;
* triplet loss: batch-hard mining on the embedding before its BNNeck; on ``parts`` the
  part-averaged triplet, whose pairwise distance is the mean of the per-part distances over
  the parts visible in both samples;
* pixel loss: cross-entropy with label smoothing between the part-attention logits and the
  parsing targets (argmax label per pixel, as the official code; soft targets optional).

Example::

    from bpbreid.config import Config
    from bpbreid.losses import GiLtLoss

    criterion = GiLtLoss(Config().loss)
    total, components = criterion(output, pids, target_masks)  # output: BPBReIDOutput
    total.backward()

Reference: Somers et al., "Body Part-Based Representation Learning for Occluded Person
Re-Identification", WACV 2023 (arXiv 2211.03679): the GiLt strategy, the
part-averaged triplet loss and the body part attention loss.
Reference: Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification",
2017 (batch-hard mining, soft margin).
Reference: Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016 (label smoothing).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bpbreid.config import (
    LOSS_EMBEDDINGS,
    LOSS_PRESETS,
    ConfigError,
    EmbeddingLossWeights,
    LossConfig,
    canonical_embedding,
)
from bpbreid.errors import LabelError
from bpbreid.parts import hard_labels

if TYPE_CHECKING:  # the loss reads the model output by its fields only
    from bpbreid.model.bpbreid import BPBReIDOutput

__all__ = [
    "LOSS_PRESETS",
    "PART_TRIPLET_MODES",
    "GiLtLoss",
    "MissingTrainingLabelsError",
    "PartAveragedTripletLoss",
    "TripletMining",
    "batch_hard_triplet_loss",
    "hard_mining",
    "identity_loss",
    "loss_weights_table",
    "mine_part_triplets",
    "pair_visibility_weights",
    "pairwise_euclidean",
    "part_attention_loss",
    "part_based_pair_distance",
    "resize_part_targets",
    "resolve_loss_weights",
    "triplet_from_mining",
]

# Squared distances are clamped here before the square root: the gradient of sqrt is infinite
# at 0, and clamping gives a zero gradient instead of NaN for identical embeddings.
_SQRT_EPS = 1e-12
PART_TRIPLET_MODES: tuple[str, ...] = ("average", "max", "min")
# model.bpbreid.masks.targets: how pixel-loss targets are resized to the logits.
PIXEL_TARGET_MODES: tuple[str, ...] = ("area", "official")


class MissingTrainingLabelsError(LabelError, ValueError):
    """The pixel loss is on but the batch carries no parsing targets."""


def _full_precision(x: Tensor) -> Tensor:
    """float16/bfloat16/float32 -> float32 (losses are computed in full precision); float64 kept."""
    return x if x.dtype == torch.float64 else x.float()


# --------------------------------------------------------------------------------------
# Identity loss
# --------------------------------------------------------------------------------------


def identity_loss(
    logits: Tensor,
    labels: Tensor,
    label_smoothing: float = 0.1,
    weights: Tensor | None = None,
) -> Tensor:
    """Cross-entropy with label smoothing, optionally weighted per sample.

    The smoothed target of a sample of class ``y`` is ``(1 - eps) * onehot(y) + eps / C``.

    Args:
        logits: ``[N, C]`` classifier scores, or ``[N, K, C]`` for K per-part classifiers
            (then every part of a sample has the sample's label, and the loss is the mean over
            samples and parts).
        labels: ``[N]`` int64 identity labels in ``[0, C)``.
        label_smoothing: ``eps`` (paper: 0.1).
        weights: ``[N]`` (or ``[N, K]`` with 3-D logits) non-negative weights, e.g. the part
            visibility; the loss is then ``sum(w * ce) / sum(w)``, and exactly 0 (still in the
            graph, zero gradient) when every weight is 0.

    Returns:
        A scalar tensor.
    """
    if logits.dim() == 3:
        n, k, c = logits.shape
        labels = labels.repeat_interleave(k)
        logits = logits.reshape(n * k, c)
        weights = None if weights is None else weights.reshape(n * k)
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"identity_loss expects logits [N, C] (or [N, K, C]) and labels [N]; got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}."
        )
    per_sample = F.cross_entropy(
        _full_precision(logits), labels, reduction="none", label_smoothing=label_smoothing
    )
    if weights is None:
        return per_sample.mean()
    weights = weights.detach().to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp_min(_SQRT_EPS)


# --------------------------------------------------------------------------------------
# Distances and hard mining
# --------------------------------------------------------------------------------------


def pairwise_euclidean(x: Tensor, y: Tensor | None = None) -> Tensor:
    """Euclidean distances with a gradient that stays finite at zero distance.

    Computed in float32 (or float64 for float64 inputs) outside autocast, so half-precision
    training does not lose the small differences hard mining depends on.

    Args:
        x: ``[..., N, D]``.
        y: ``[..., M, D]`` (default ``x``).

    Returns:
        ``[..., N, M]`` distances ``sqrt(max(|x_i - y_j|^2, 1e-12))``.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = _full_precision(x)
        y = x if y is None else _full_precision(y)
        squared = (
            x.pow(2).sum(-1).unsqueeze(-1)
            + y.pow(2).sum(-1).unsqueeze(-2)
            - 2.0 * x @ y.transpose(-1, -2)
        )
        return squared.clamp_min(_SQRT_EPS).sqrt()


def pair_visibility_weights(visibility: Tensor) -> Tensor:
    """Per-part pair weights ``sqrt(v_i * v_j)``: 1 when both samples show the part (binary).

    Args:
        visibility: ``[N, K]`` bool or float in [0, 1].

    Returns:
        ``[K, N, N]`` float weights (detached: visibility is not trained through the loss).
    """
    v = _full_precision(visibility.detach()).t()  # [K, N]
    return (v.unsqueeze(2) * v.unsqueeze(1)).sqrt()


def part_based_pair_distance(
    part_distances: Tensor, pair_weights: Tensor | None = None, mode: str = "average"
) -> tuple[Tensor, Tensor]:
    """Combine per-part distances into one distance per pair.

    Args:
        part_distances: ``[K, N, N]`` distances of each part.
        pair_weights: ``[K, N, N]`` pair weights (:func:`pair_visibility_weights`), or None
            when every part counts.
        mode: ``average`` (weighted mean over the parts visible in both samples, the paper),
            ``max`` or ``min`` (over the parts visible in both).

    Returns:
        ``(distance [N, N], valid_pairs [N, N] bool)``: a pair without a common visible part is
        invalid and its distance is 0 (a finite placeholder that mining must ignore).
    """
    if mode not in PART_TRIPLET_MODES:
        raise ConfigError(
            f"Unknown part triplet mode '{mode}' (config key loss.part_triplet). "
            f"Valid: {', '.join(PART_TRIPLET_MODES)}."
        )
    if pair_weights is None:
        valid = torch.ones(part_distances.shape[1:], dtype=torch.bool, device=part_distances.device)
        if mode == "average":
            return part_distances.mean(0), valid
        reduced = part_distances.amax(0) if mode == "max" else part_distances.amin(0)
        return reduced, valid
    pair_weights = pair_weights.to(part_distances.dtype)
    visible = pair_weights > 0  # [K, N, N]
    valid = visible.any(0)
    if mode == "average":
        total = pair_weights.sum(0)
        distance = (pair_weights * part_distances).sum(0) / total.clamp_min(_SQRT_EPS)
    elif mode == "max":
        # Distances are >= 0, so masking invisible parts with 0 leaves the max unchanged.
        distance = part_distances.masked_fill(~visible, 0.0).amax(0)
    else:
        distance = part_distances.masked_fill(~visible, float("inf")).amin(0)
    return torch.where(valid, distance, torch.zeros_like(distance)), valid


@dataclass
class TripletMining:
    """The outcome of batch-hard mining, one row per anchor.

    Attributes:
        distances: ``[N, N]`` pair distances used for mining.
        valid_pairs: ``[N, N]`` bool, pairs that share at least one visible part.
        positive_index: ``[N]`` int64, hardest (farthest) valid positive of each anchor.
        negative_index: ``[N]`` int64, hardest (closest) valid negative of each anchor.
        dist_ap: ``[N]`` anchor-positive distances (0 where the anchor is invalid).
        dist_an: ``[N]`` anchor-negative distances (0 where the anchor is invalid).
        valid_anchors: ``[N]`` bool, anchors with at least one valid positive and negative.
    """

    distances: Tensor
    valid_pairs: Tensor
    positive_index: Tensor
    negative_index: Tensor
    dist_ap: Tensor
    dist_an: Tensor
    valid_anchors: Tensor


def hard_mining(
    distances: Tensor, labels: Tensor, valid_pairs: Tensor | None = None
) -> TripletMining:
    """Batch-hard mining: for each anchor, its farthest positive and its closest negative.

    Positives are the other samples of the anchor's identity (the anchor itself is not a
    positive); pairs marked invalid are never mined; an anchor without a valid positive or a
    valid negative is reported invalid.

    Args:
        distances: ``[N, N]`` pair distances.
        labels: ``[N]`` identity labels.
        valid_pairs: ``[N, N]`` bool or None (all pairs valid).

    Returns:
        :class:`TripletMining`; ``dist_ap``/``dist_an`` carry the gradient of ``distances``.

    Reference: Hermans et al. 2017, "In Defense of the Triplet Loss", batch-hard.
    """
    n = distances.shape[0]
    labels = labels.to(distances.device)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    not_self = ~torch.eye(n, dtype=torch.bool, device=distances.device)
    positive_mask = same & not_self
    negative_mask = ~same
    if valid_pairs is not None:
        positive_mask &= valid_pairs
        negative_mask &= valid_pairs
    detached = distances.detach()
    positive_index = detached.masked_fill(~positive_mask, float("-inf")).argmax(1)
    negative_index = detached.masked_fill(~negative_mask, float("inf")).argmin(1)
    valid_anchors = positive_mask.any(1) & negative_mask.any(1)
    # Gather from the (finite) distances, then zero invalid rows with where(): no inf reaches
    # the loss and the gradient of a skipped anchor is exactly zero.
    dist_ap = distances.gather(1, positive_index.unsqueeze(1)).squeeze(1)
    dist_an = distances.gather(1, negative_index.unsqueeze(1)).squeeze(1)
    zero = torch.zeros_like(dist_ap)
    return TripletMining(
        distances=distances,
        valid_pairs=valid_pairs
        if valid_pairs is not None
        else torch.ones_like(same, dtype=torch.bool),
        positive_index=positive_index,
        negative_index=negative_index,
        dist_ap=torch.where(valid_anchors, dist_ap, zero),
        dist_an=torch.where(valid_anchors, dist_an, zero),
        valid_anchors=valid_anchors,
    )


def triplet_from_mining(
    mining: TripletMining, margin: float = 0.3, soft_margin: bool = False
) -> tuple[Tensor, dict[str, Tensor]]:
    """The triplet loss of mined triplets, averaged over the valid anchors.

    ``max(0, d_ap - d_an + margin)`` (hinge), or ``softplus(d_ap - d_an)`` with the soft margin.

    Returns:
        ``(loss, stats)``; ``stats`` holds detached scalars ``valid`` (fraction of anchors with
        a valid positive and negative) and ``trivial`` (fraction of valid triplets that already
        satisfy ``d_an >= d_ap + margin``; 0 when there is none). With no valid anchor the loss
        is exactly 0, still attached to the graph with a zero gradient.
    """
    difference = mining.dist_ap - mining.dist_an
    per_anchor = F.softplus(difference) if soft_margin else F.relu(difference + margin)
    valid = mining.valid_anchors
    per_anchor = torch.where(valid, per_anchor, torch.zeros_like(per_anchor))
    count = valid.sum()
    loss = per_anchor.sum() / count.clamp_min(1)
    trivial = ((mining.dist_an.detach() - mining.dist_ap.detach()) >= margin) & valid
    stats = {
        "valid": valid.float().mean(),
        "trivial": trivial.sum().float() / count.clamp_min(1).float(),
    }
    return loss, stats


# --------------------------------------------------------------------------------------
# Triplet losses
# --------------------------------------------------------------------------------------


def batch_hard_triplet_loss(
    embeddings: Tensor, labels: Tensor, margin: float = 0.3, soft_margin: bool = False
) -> tuple[Tensor, dict[str, Tensor]]:
    """Batch-hard triplet loss on euclidean distances.

    Args:
        embeddings: ``[N, D]``.
        labels: ``[N]``.
        margin: hinge margin (paper: 0.3); used for the ``trivial`` statistic with soft margin.
        soft_margin: ``softplus(d_ap - d_an)`` instead of the hinge.

    Returns:
        ``(loss, stats)`` as :func:`triplet_from_mining`.

    Reference: Hermans et al. 2017, "In Defense of the Triplet Loss".
    """
    if embeddings.dim() != 2:
        raise ValueError(f"batch_hard_triplet_loss expects [N, D], got {tuple(embeddings.shape)}.")
    # Same batched distance kernel as the part triplet ([1, N, D]), so that the part triplet
    # with K = 1 reproduces this loss bit for bit.
    distances = pairwise_euclidean(embeddings.unsqueeze(0)).squeeze(0)
    return triplet_from_mining(hard_mining(distances, labels), margin, soft_margin)


def mine_part_triplets(
    part_embeddings: Tensor,
    labels: Tensor,
    visibility: Tensor | None = None,
    mode: str = "average",
) -> TripletMining:
    """Part-based pair distances and their batch-hard mining (what the part triplet trains on).

    Args:
        part_embeddings: ``[N, K, D]``.
        labels: ``[N]``.
        visibility: ``[N, K]`` bool or float in [0, 1], or None (every part visible).
        mode: ``average`` | ``max`` | ``min`` (see :func:`part_based_pair_distance`).

    Returns:
        :class:`TripletMining` (its ``distances`` are the combined part-based distances).
    """
    if part_embeddings.dim() != 3:
        raise ValueError(f"part embeddings must be [N, K, D], got {tuple(part_embeddings.shape)}.")
    n, k, _ = part_embeddings.shape
    if visibility is not None and tuple(visibility.shape) != (n, k):
        raise ValueError(
            f"visibility must be [N, K] = {[n, k]} to match the part embeddings, "
            f"got {list(visibility.shape)}."
        )
    part_distances = pairwise_euclidean(part_embeddings.transpose(0, 1))  # [K, N, N]
    weights = None if visibility is None else pair_visibility_weights(visibility)
    distances, valid_pairs = part_based_pair_distance(part_distances, weights, mode)
    return hard_mining(distances, labels, None if visibility is None else valid_pairs)


class PartAveragedTripletLoss(nn.Module):
    """Batch-hard triplet loss on a part-based distance, with visibility.

    The distance of a pair is the mean of its K per-part euclidean distances over the parts
    visible in both samples (weights ``sqrt(v_i * v_j)`` for soft visibility); pairs without a
    common visible part are left out of hard mining, and anchors without a valid positive or
    negative are skipped. With K = 1 and no visibility it is the batch-hard triplet loss.
    ``mode="max"``/``"min"`` take the max/min over the common visible parts instead of the mean.

    Reference: Somers et al., WACV 2023 (part-averaged triplet loss).

    Example::

        loss_fn = PartAveragedTripletLoss(margin=0.3)
        loss, stats = loss_fn(parts, pids, visibility)  # [N, K, D], [N], [N, K]
        stats  # {"valid": 1.0, "trivial": 0.25}
    """

    def __init__(self, margin: float = 0.3, mode: str = "average", soft_margin: bool = False):
        super().__init__()
        if mode not in PART_TRIPLET_MODES:
            raise ConfigError(
                f"Unknown part triplet mode '{mode}' (config key loss.part_triplet). "
                f"Valid: {', '.join(PART_TRIPLET_MODES)}."
            )
        self.margin = margin
        self.mode = mode
        self.soft_margin = soft_margin

    def compute(
        self, part_embeddings: Tensor, labels: Tensor, visibility: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """As :meth:`forward`, with the statistics as detached tensors (no device sync)."""
        mining = mine_part_triplets(part_embeddings, labels, visibility, self.mode)
        return triplet_from_mining(mining, self.margin, self.soft_margin)

    def forward(
        self, part_embeddings: Tensor, labels: Tensor, visibility: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """Args: ``part_embeddings [N, K, D]``, ``labels [N]``, ``visibility [N, K]`` or None.

        Returns:
            ``(loss, {"valid": ratio, "trivial": ratio})``.
        """
        loss, stats = self.compute(part_embeddings, labels, visibility)
        return loss, {name: float(value) for name, value in stats.items()}

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mode={self.mode!r}, soft_margin={self.soft_margin}"


# --------------------------------------------------------------------------------------
# Part-attention (pixel) loss
# --------------------------------------------------------------------------------------


def resize_part_targets(
    target_masks: Tensor, size: tuple[int, int], targets: str = "area"
) -> Tensor:
    """Resize soft part targets to ``size`` and renormalize them to sum 1 over channels.

    ``targets='area'``: shrinking uses adaptive average pooling (every label pixel counts, thin
    parts are not skipped); enlarging uses bilinear interpolation. ``targets='official'``
    (``model.bpbreid.masks.targets``): bilinear interpolation with aligned corners either way,
    as the official engine (a convex blend: the sums stay 1, nothing is renormalized).

    Args:
        target_masks: ``[N, K+1, h, w]`` soft targets (channel 0 background).
        size: ``(H, W)`` of the part-attention logits.
        targets: ``'area'`` | ``'official'``.

    Returns:
        ``[N, K+1, H, W]`` float targets summing to 1 at every pixel.

    Reference: bpbreid c0db006, ``torchreid/engine/image/part_based_engine.py`` (targets
    resized bilinearly with ``align_corners=True``, then argmax).
    """
    if targets not in PIXEL_TARGET_MODES:
        raise ConfigError(
            f"Unknown model.bpbreid.masks.targets '{targets}'. "
            f"Valid: {', '.join(PIXEL_TARGET_MODES)}."
        )
    target_masks = _full_precision(target_masks)
    h, w = target_masks.shape[-2:]
    height, width = size
    if targets == "official":
        if (h, w) == (height, width):
            return target_masks
        return F.interpolate(target_masks, size=size, mode="bilinear", align_corners=True)
    if (h, w) == (height, width):
        resized = target_masks
    elif h >= height and w >= width:
        resized = F.adaptive_avg_pool2d(target_masks, size)
    else:
        resized = F.interpolate(target_masks, size=size, mode="bilinear", align_corners=False)
    resized = resized.clamp_min(0.0)
    total = resized.sum(1, keepdim=True)
    # A pixel with no mass anywhere (should not happen) becomes background, not NaN.
    background = torch.zeros_like(resized)
    background[:, 0] = 1.0
    return torch.where(total > 0, resized / total.clamp_min(_SQRT_EPS), background)


def part_attention_loss(
    pixel_logits: Tensor,
    target_masks: Tensor,
    label_smoothing: float = 0.1,
    soft_targets: bool = False,
    targets: str = "area",
) -> Tensor:
    """Pixel-wise cross-entropy between the part-attention logits and the parsing targets.

    Default (the official code): the target of a pixel is its argmax part label (background =
    0), with label smoothing. With ``soft_targets`` the cross-entropy is taken against the
    resized soft targets themselves (smoothed the same way).

    Args:
        pixel_logits: ``[N, K+1, H, W]`` part-attention logits (before the softmax).
        target_masks: ``[N, K+1, h, w]`` soft targets summing to 1 over channels; resized to
            ``(H, W)`` here.
        label_smoothing: ``eps`` (paper: 0.1).
        soft_targets: train on soft targets instead of argmax labels.
        targets: how the targets are resized to the logits (:func:`resize_part_targets`).

    Returns:
        A scalar: the mean over pixels and samples.

    Reference: Somers et al., WACV 2023 (body part attention loss).
    """
    if pixel_logits.dim() != 4 or target_masks.dim() != 4:
        raise ValueError(
            f"pixel loss expects logits [N, K+1, H, W] and targets [N, K+1, h, w]; got "
            f"{tuple(pixel_logits.shape)} and {tuple(target_masks.shape)}."
        )
    if pixel_logits.shape[:2] != target_masks.shape[:2]:
        raise ValueError(
            f"part targets have {target_masks.shape[1]} channels for a part head with "
            f"{pixel_logits.shape[1]} (K+1, background first) and batch "
            f"{target_masks.shape[0]} vs {pixel_logits.shape[0]}: check that "
            "model.bpbreid.masks.parts_num matches the grouping model.bpbreid.masks.preprocess."
        )
    resized = resize_part_targets(
        target_masks.to(pixel_logits.device), pixel_logits.shape[-2:], targets
    )
    logits = _full_precision(pixel_logits)
    resized = resized.to(logits.dtype)
    if soft_targets:
        return F.cross_entropy(logits, resized, label_smoothing=label_smoothing)
    hard = hard_labels(resized)  # [N, H, W] argmax part label, ties to the background
    return F.cross_entropy(logits, hard, label_smoothing=label_smoothing)


# --------------------------------------------------------------------------------------
# GiLt
# --------------------------------------------------------------------------------------


def resolve_loss_weights(cfg: LossConfig) -> dict[str, EmbeddingLossWeights]:
    """The (canonical embedding name -> weights) table in force: the preset's, else cfg.weights.

    Raises:
        ConfigError: unknown preset or embedding name.
    """
    if cfg.preset is not None:
        if cfg.preset not in LOSS_PRESETS:
            raise ConfigError(
                f"Unknown loss preset '{cfg.preset}' (config key loss.preset). "
                f"Valid presets: {', '.join(LOSS_PRESETS)}."
            )
        table: Mapping[str, Any] = {
            name: EmbeddingLossWeights(id=id_w, tr=tr_w)
            for name, (id_w, tr_w) in LOSS_PRESETS[cfg.preset].items()
        }
    else:
        table = cfg.weights
    resolved: dict[str, EmbeddingLossWeights] = {}
    for name, value in table.items():
        canonical = canonical_embedding(name)
        if canonical not in LOSS_EMBEDDINGS:
            raise ConfigError(
                f"Unknown embedding '{name}' in loss.weights. Valid names: "
                f"{', '.join(LOSS_EMBEDDINGS)} (official aliases: globl, foreg, backg, conct)."
            )
        if isinstance(value, Mapping):
            value = EmbeddingLossWeights(**value)
        elif isinstance(value, tuple | list):
            value = EmbeddingLossWeights(id=float(value[0]), tr=float(value[1]))
        resolved[canonical] = value
    # Canonical order, whatever order the table was written in.
    return {name: resolved[name] for name in LOSS_EMBEDDINGS if name in resolved}


def loss_weights_table(cfg: LossConfig) -> dict[str, dict[str, float]]:
    """The loss recipe for printing: ``{embedding: {"id": w, "tr": w}, "pixel": {"ce": w}}``.

    Embeddings without any non-zero weight are left out.
    """
    table: dict[str, dict[str, float]] = {
        name: {"id": float(w.id), "tr": float(w.tr)}
        for name, w in resolve_loss_weights(cfg).items()
        if w.id != 0 or w.tr != 0
    }
    table["pixel"] = {"ce": float(cfg.pixel_weight)}
    return table


class GiLtLoss(nn.Module):
    """The GiLt training loss: identity/triplet terms per embedding plus the pixel loss.

    Args:
        cfg: the ``loss`` section of the config (weights or preset, pixel weight, margins...).
        soft_targets: pixel loss on soft targets instead of argmax labels
            (``cfg.model.bpbreid.masks.soft_targets``).
        targets: how the targets are resized to the logits, ``'area'`` | ``'official'``
            (``cfg.model.bpbreid.masks.targets``; :func:`resize_part_targets`).

    Call ``loss(output, pids, target_masks)`` with a ``BPBReIDOutput``; it returns
    ``(total, components)`` where ``components`` holds the unweighted value of every term
    (``global_id``, ``parts_tr``, ``pixel``...), the weighted ``total``, and the triplet
    statistics (``parts_tr_valid``, ``parts_tr_trivial``) as floats.

    Reference: Somers et al., WACV 2023 (GiLt: global identity, local triplet).
    """

    def __init__(self, cfg: LossConfig, soft_targets: bool = False, targets: str = "area"):
        super().__init__()
        self.cfg = cfg
        self.weights = resolve_loss_weights(cfg)
        if cfg.part_triplet not in PART_TRIPLET_MODES:
            raise ConfigError(
                f"Unknown loss.part_triplet '{cfg.part_triplet}'. "
                f"Valid: {', '.join(PART_TRIPLET_MODES)}."
            )
        if not any(w.id or w.tr for w in self.weights.values()) and not cfg.pixel_weight:
            raise ConfigError(
                "Every loss weight is 0 (loss.weights / loss.preset and loss.pixel_weight): "
                "nothing would be trained. Give at least one term a non-zero weight."
            )
        self.soft_targets = soft_targets
        if targets not in PIXEL_TARGET_MODES:
            raise ConfigError(
                f"Unknown model.bpbreid.masks.targets '{targets}'. "
                f"Valid: {', '.join(PIXEL_TARGET_MODES)}."
            )
        self.targets = targets
        self.part_triplet = PartAveragedTripletLoss(
            margin=cfg.triplet_margin, mode=cfg.part_triplet, soft_margin=cfg.triplet_soft_margin
        )

    def forward(
        self,
        output: BPBReIDOutput,
        pids: Tensor,
        target_masks: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Args:
            output: the model output (embeddings, id_logits, visibility, pixel_logits...).
            pids: ``[N]`` int64 training identity labels.
            target_masks: ``[N, K+1, h, w]`` soft parsing targets, or None (no pixel loss;
                an error when the model has a part head and ``pixel_weight > 0``).

        Returns:
            ``(total, components)``.
        """
        cfg = self.cfg
        has_parts = output.parts_masks is not None
        use_visibility = cfg.mask_filtering_training and output.visibility is not None
        terms: OrderedDict[str, Tensor] = OrderedDict()
        stats: OrderedDict[str, Tensor] = OrderedDict()
        total: Tensor | None = None

        def add(name: str, value: Tensor, weight: float) -> None:
            nonlocal total
            terms[name] = value
            total = value * weight if total is None else total + value * weight

        for name, weight in self.weights.items():
            if name != "global" and not has_parts:
                continue  # a global-only model has no part-based embedding
            if weight.id:
                logits = _lookup(output.id_logits, name, "id_logits")
                weights = None
                if name == "parts" and use_visibility:
                    weights = output.visibility
                add(
                    f"{name}_id",
                    identity_loss(logits, pids, cfg.label_smoothing, weights),
                    weight.id,
                )
            if weight.tr:
                embedding = _lookup(output.embeddings, name, "embeddings")
                if name == "parts":
                    visibility = output.visibility if use_visibility else None
                    value, triplet_stats = self.part_triplet.compute(embedding, pids, visibility)
                else:
                    value, triplet_stats = batch_hard_triplet_loss(
                        embedding, pids, cfg.triplet_margin, cfg.triplet_soft_margin
                    )
                add(f"{name}_tr", value, weight.tr)
                stats[f"{name}_tr_valid"] = triplet_stats["valid"]
                stats[f"{name}_tr_trivial"] = triplet_stats["trivial"]

        if cfg.pixel_weight and has_parts and output.pixel_logits is not None:
            if target_masks is None:
                raise MissingTrainingLabelsError(
                    f"The part-attention loss (loss.pixel_weight={cfg.pixel_weight}) needs "
                    "parsing labels, but this batch has no target_masks: training labels are "
                    "required. Provide labels under <dataset>/masks/<model.bpbreid.masks.dir>/ "
                    "or set loss.pixel_weight=0."
                )
            pixel = part_attention_loss(
                output.pixel_logits,
                target_masks,
                cfg.label_smoothing,
                self.soft_targets,
                self.targets,
            )
            add("pixel", pixel, cfg.pixel_weight)

        if total is None:
            raise ConfigError(
                "No loss term applies to this model: the weights in loss.weights / loss.preset "
                f"({', '.join(self.weights) or 'none'}) need part-based outputs that a "
                "global-only model does not have. Use loss.preset=global_only."
            )
        names = [*terms, "total", *stats]
        values = torch.stack(
            [t.detach().float() for t in (*terms.values(), total, *stats.values())]
        )
        components = dict(zip(names, values.tolist()))  # one device sync for all of them
        return total, OrderedDict(components)


def _lookup(table: Mapping[str, Tensor] | None, name: str, field_name: str) -> Tensor:
    if table is None or name not in table:
        available = ", ".join(table) if table else "none"
        raise ValueError(
            f"The loss needs output.{field_name}['{name}'] but the model output has only: "
            f"{available}. Check loss.weights against the model (model.bpbreid.part_mode)."
        )
    return table[name]
