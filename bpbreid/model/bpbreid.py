"""BPBReID: part attention, GWAP pooling, embeddings, visibility and BNNeck classifiers.

One class covers the method and its baselines (``cfg.model.bpbreid.part_mode``):

* ``attention`` (BPBReID): a part head predicts K+1 attention maps (channel 0 =
  background) from the feature map; part features are pooled under them;
* ``stripes`` (PCB): K fixed horizontal stripes as part masks, all parts visible;
* ``global`` (BoT): global average pooling + BNNeck only, no part head;
* ``external``: the parsing labels given to ``forward`` are the part masks (an oracle
  that needs labels at test time).

Data flow for a batch of images ``[N, 3, H, W]`` (K parts, D = ``dim_reduce_output``)::

    backbone            -> feature_map  [N, C, Hf, Wf]   (+ earlier stages)
    part head + softmax -> parts_masks  [N, K+1, Hm, Wm]  (Hm = Hf for the 1x1 head,
                                                            H/4 for the 3x3_stride4 head)
    GAP                 -> global       [N, C] -> reduce -> [N, D]
    GWAP (fg, bg, K)    -> [N, 2+K, C]         -> reduce -> foreground, background [N, D],
                                                            parts [N, K, D] (one shared layer)
    concat parts        -> concat_parts [N, K*D]
    BNNeck per embedding-> bn_* embeddings, id_logits [N, num_classes] ([N, K, C] for parts)
    argmax over K+1     -> visibility   [N, K]

Where this differs from the official code (bpbreid c0db006), and why:

* foreground and background are pooled with GWAP like the parts (the paper's description);
  the official code averages ``mask * feature`` over all pixels (no division by the mask
  sum). ``model.bpbreid.foreground_pooling = "masked_average"`` restores the official behaviour,
  e.g. to reproduce official checkpoints' ``bn_foreg`` features exactly;
* visibility is returned as float 0/1 (official: bool) so it can weight distances directly;
* the ``3x3_stride4`` head is an addition for small inputs (the paper uses ``1x1``);
* the BoT baseline is a model without part branches (official: one horizontal stripe).

Reference: Somers, Vleeschouwer, Alahi, "Body Part-Based Representation Learning for
Occluded Person Re-Identification" (WACV 2023), arXiv 2211.03679; official code
github.com/VlSomers/bpbreid (``torchreid/models/bpbreid.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bpbreid.config import Config, ConfigError, canonical_embedding
from bpbreid.model.backbones import Backbone, build_backbone
from bpbreid.parts import PART_EMBEDDINGS, PART_GROUPINGS, check_grouping, part_names

PART_MODES: tuple[str, ...] = ("attention", "stripes", "global", "external")
PART_HEADS: tuple[str, ...] = ("1x1", "3x3_stride4")
TARGET_SEGMENTATION_MODES: tuple[str, ...] = ("none", "soft", "hard")
# Embeddings that hold one vector per part ([N, K, D]); the others are [N, D] or [N, K*D].
# How foreground/background are pooled: GWAP (paper text) or the official masked average.
FOREGROUND_POOLINGS: tuple[str, ...] = ("gwap", "masked_average")


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


@dataclass
class BPBReIDOutput:
    """Everything one forward pass produces (global-only mode fills only the global entries).

    Attributes:
        embeddings: ``"global"``, ``"foreground"``, ``"background"`` ``[N, D]``,
            ``"concat_parts"`` ``[N, K*D]``, ``"parts"`` ``[N, K, D]`` and the same names
            prefixed ``"bn_"`` (after the BNNeck batch norm).
        visibility: ``[N, K]`` float in [0, 1] (0/1 when binary); None in global mode.
        parts_masks: ``[N, K+1, Hm, Wm]`` attention maps (softmax over channels, channel 0
            = background); None in global mode.
        pixel_logits: ``[N, K+1, Hm, Wm]`` part-head logits for the pixel loss; None when
            no part head is used (stripes, external, global).
        id_logits: identity logits per embedding: ``[N, num_classes]``, ``"parts"``
            ``[N, K, num_classes]``.
        feature_map: backbone output ``[N, C, Hf, Wf]``.
    """

    embeddings: dict[str, Tensor]
    visibility: Tensor | None
    parts_masks: Tensor | None
    pixel_logits: Tensor | None
    id_logits: dict[str, Tensor]
    feature_map: Tensor

    @property
    def foreground_masks(self) -> Tensor | None:
        """``[N, Hm, Wm]``: max over the K part maps (the person, without background)."""
        if self.parts_masks is None:
            return None
        return self.parts_masks[:, 1:].amax(dim=1)

    def shapes(self) -> dict[str, tuple[int, ...] | None]:
        """``{name: shape}`` of every tensor in the output (for printing and checks)."""
        out: dict[str, tuple[int, ...] | None] = {}
        for name, value in self.embeddings.items():
            out[f"embeddings[{name!r}]"] = tuple(value.shape)
        for name, value in self.id_logits.items():
            out[f"id_logits[{name!r}]"] = tuple(value.shape)
        for name in ("visibility", "parts_masks", "pixel_logits", "feature_map"):
            value = getattr(self, name)
            out[name] = None if value is None else tuple(value.shape)
        return out

    def describe(self) -> str:
        """A table of the output's tensors and their shapes."""
        rows = self.shapes()
        width = max(len(k) for k in rows)
        return "\n".join(
            f"{k:<{width}}  {list(v) if v is not None else None}" for k, v in rows.items()
        )


def _register_output_pytree() -> None:
    """Let torch.export (and AOT tooling) flatten the output object like a tuple of tensors."""
    register = getattr(getattr(torch, "export", None), "register_dataclass", None)
    if register is None:  # older torch: export of the raw output is unsupported, all else works
        return
    try:
        register(BPBReIDOutput, serialized_type_name="bpbreid.model.BPBReIDOutput")
    except ValueError:  # already registered (module reloaded)
        pass


_register_output_pytree()


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


def weighted_average_pool(features: Tensor, masks: Tensor, eps: float = 1e-6) -> Tensor:
    """Global weighted average pooling (GWAP): ``sum(mask * feat) / sum(mask)`` per mask.

    Args:
        features: ``[N, C, H, W]``.
        masks: ``[N, M, H, W]`` non-negative weights (same H, W as ``features``).
        eps: floor of the mask sum, so an empty mask gives a zero vector, not NaN.

    Returns:
        ``[N, M, C]``.

    Reference: BPBReID (WACV 2023) eq. (2); official ``GlobalWeightedAveragePoolingHead``
    (same 1e-6 floor).
    """
    # One batched matmul ([N, M, HW] x [N, HW, C]) instead of materializing [N, M, C, H, W].
    weighted_sum = torch.einsum("nmhw,nchw->nmc", masks, features)
    mask_area = masks.sum(dim=(2, 3)).unsqueeze(-1).clamp_min(eps)
    return weighted_sum / mask_area


def masked_average_pool(features: Tensor, masks: Tensor) -> Tensor:
    """Masked average pooling: ``mean over pixels of mask * feat`` per mask (no division by
    the mask's sum, unlike GWAP), the official foreground and background pooling.

    Args:
        features: ``[N, C, H, W]``.
        masks: ``[N, M, H, W]`` non-negative weights (same H, W as ``features``).

    Returns:
        ``[N, M, C]``: ``sum(mask * feat) / (H * W)``.

    Reference: bpbreid c0db006, ``torchreid/models/bpbreid.py`` (``GlobalAveragePoolingHead``
    of ``mask * feature`` for foreground and background; the parts use GWAP).
    """
    weighted_sum = torch.einsum("nmhw,nchw->nmc", masks, features)
    return weighted_sum / (features.shape[-2] * features.shape[-1])


def part_visibility(parts_masks: Tensor, binary: bool = True) -> Tensor:
    """Visibility score of each part from its attention map.

    Args:
        parts_masks: ``[N, K+1, H, W]`` (channel 0 = background).
        binary: a part is visible (1.0) when it wins the argmax over the K+1 channels at
            one pixel at least; otherwise the score is the max of its map over pixels.

    Returns:
        ``[N, K]`` float32 in [0, 1].
    """
    num_channels = parts_masks.shape[1]
    if binary:
        winners = parts_masks.argmax(dim=1)  # [N, H, W]
        labels = torch.arange(1, num_channels, device=parts_masks.device).view(1, -1, 1, 1)
        return (winners.unsqueeze(1) == labels).flatten(2).any(dim=2).float()
    return parts_masks[:, 1:].flatten(2).amax(dim=2).float()


def horizontal_stripes(
    num_parts: int, height: int, width: int, device: torch.device | None = None
) -> Tensor:
    """PCB part masks: ``[K+1, H, W]`` with an empty background and K equal horizontal stripes.

    Row ``r`` belongs to stripe ``floor(r * K / H)`` (stripes differ by one row at most
    when K does not divide H).

    Reference: Sun et al., "Beyond Part Models: Person Retrieval with Refined Part
    Pooling" (ECCV 2018).
    """
    rows = torch.arange(height, device=device)
    stripe_of_row = torch.div(rows * num_parts, height, rounding_mode="floor")  # [H]
    labels = torch.arange(num_parts, device=device).view(-1, 1)  # [K, 1]
    stripes = (stripe_of_row.view(1, -1) == labels).float()  # [K, H]
    stripes = stripes.unsqueeze(-1).expand(num_parts, height, width)
    background = torch.zeros(1, height, width, device=device)
    return torch.cat([background, stripes], dim=0)


class DimReduce(nn.Module):
    """Linear + BatchNorm1d + ReLU after pooling: ``[N, C] -> [N, D]`` or ``[N, K, C] -> [N, K, D]``.

    For ``[N, K, C]`` inputs all K vectors go through the same weights (the official model
    shares one reduction layer between all parts) and the batch norm sees N*K samples.

    Reference: official ``AfterPoolingDimReduceLayer`` (``dim_reduce='after_pooling'``, the
    default of every official config).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        nn.init.normal_(self.linear.weight, 0.0, 0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            n, k, _ = x.shape
            return self.forward(x.flatten(0, 1)).view(n, k, -1)
        return F.relu(self.bn(self.linear(x)))


class BNClassifier(nn.Module):
    """BNNeck: BatchNorm1d with a frozen (zero) bias, then a bias-free Linear classifier.

    Returns ``(bn_embedding [N, D], logits [N, num_classes])``. The triplet loss sees the
    embedding before the batch norm, the identity loss the logits after it.

    Reference: Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-ID"
    (CVPRW 2019), BNNeck.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, 0.0, 0.001)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        bn_x = self.bn(x)
        return bn_x, self.classifier(bn_x)


class PartHead1x1(nn.Module):
    """The paper's part head: BatchNorm2d + 1x1 conv, ``[N, C, Hf, Wf] -> [N, K+1, Hf, Wf]``.

    Reference: official ``PixelToPartClassifier`` (weights N(0, 0.001)).
    """

    def __init__(self, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.classifier = nn.Conv2d(in_channels, num_outputs, kernel_size=1)
        nn.init.normal_(self.classifier.weight, 0.0, 0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, feature_map: Tensor, stages: dict[str, Tensor]) -> Tensor:
        return self.classifier(self.bn(feature_map))


class PartHeadStride4(nn.Module):
    """A 3x3 part head on a stride-4 map that fuses an early stage with the upsampled last map.

    ``fused = relu(bn(1x1(early))) + upsample(relu(bn(1x1(last))))``, then BatchNorm2d and
    a 3x3 conv to K+1 logits at the early stage's resolution (stride 4). The early stage
    brings the resolution thin parts (feet, arms) need to win the argmax somewhere; the
    last map brings the semantics. When the backbone is already at stride 4 (HRNet), the
    head is BatchNorm2d + 3x3 conv on the last map.

    Args:
        last_channels: C of the backbone's last map.
        num_outputs: K+1.
        early_stage: name of the stage to fuse (None: no fusion).
        early_channels: its channel count.
        hidden: channels of the fused map.
    """

    def __init__(
        self,
        last_channels: int,
        num_outputs: int,
        early_stage: str | None = None,
        early_channels: int = 0,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        self.early_stage = early_stage
        if early_stage is None:
            self.lateral = None
            self.top = None
            hidden = last_channels
        else:
            self.lateral = _conv_bn_relu(early_channels, hidden)
            self.top = _conv_bn_relu(last_channels, hidden)
        self.bn = nn.BatchNorm2d(hidden)
        self.classifier = nn.Conv2d(hidden, num_outputs, kernel_size=3, padding=1)
        nn.init.normal_(self.classifier.weight, 0.0, 0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, feature_map: Tensor, stages: dict[str, Tensor]) -> Tensor:
        if self.early_stage is None or self.lateral is None or self.top is None:
            fused = feature_map
        else:
            early = stages[self.early_stage]
            top = F.interpolate(
                self.top(feature_map), size=early.shape[-2:], mode="bilinear", align_corners=False
            )
            fused = self.lateral(early) + top
        return self.classifier(self.bn(fused))


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def _stride4_stage(backbone: Backbone) -> tuple[str | None, int]:
    """The deepest backbone stage at stride 4 (None when the last map is already there)."""
    if backbone.stride <= 4:
        return None, 0
    candidates = [(name, ch, s) for name, (ch, s) in backbone.stage_info.items() if s == 4]
    if not candidates:  # no stage at exactly stride 4: take the finest one
        candidates = sorted(
            ((name, ch, s) for name, (ch, s) in backbone.stage_info.items()), key=lambda t: t[2]
        )[:1]
    name, channels, _ = candidates[-1]
    return name, channels


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


class BPBReID(nn.Module):
    """Body part-based re-id model (and its PCB / BoT / external-mask variants).

    Args:
        cfg: the whole configuration (reads ``cfg.model``).
        num_classes: training identities (size of every identity classifier).
        backbone: a ready backbone (default: built from ``cfg.model``).
        pool_at_mask_resolution: with the ``3x3_stride4`` head, GWAP needs masks and
            features at one size. True (default): features are upsampled bilinearly to
            the stride-4 mask size, so thin parts keep their exact weights. False: masks
            are area-averaged down to the feature size (cheaper: no upsampled feature map;
            exactly GWAP over nearest-upsampled features). Visibility is always computed
            on the stride-4 masks.
        foreground_pooling: ``"gwap"`` (default) or ``"masked_average"`` (official code:
            ``mean(mask * feature)`` over all pixels) for the foreground and background.

    ``forward(images, external_masks=None)`` returns a :class:`BPBReIDOutput`.
    """

    def __init__(
        self,
        cfg: Config,
        num_classes: int,
        backbone: Backbone | None = None,
        pool_at_mask_resolution: bool = True,
        foreground_pooling: str = "gwap",
    ) -> None:
        super().__init__()
        if foreground_pooling not in FOREGROUND_POOLINGS:
            raise ConfigError(
                f"foreground_pooling={foreground_pooling!r}; valid: {', '.join(FOREGROUND_POOLINGS)}."
            )
        self.foreground_pooling = foreground_pooling
        model_cfg = cfg.model
        bp = model_cfg.bpbreid
        self.part_mode = bp.part_mode
        self.head_type = bp.head
        self.num_classes = num_classes
        self.parts_num = bp.masks.parts_num if bp.part_mode != "global" else 0
        self.test_use_target_segmentation = bp.test_use_target_segmentation
        self.training_binary_visibility_score = bp.training_binary_visibility_score
        self.testing_binary_visibility_score = bp.testing_binary_visibility_score
        self.shared_parts_id_classifier = bp.shared_parts_id_classifier
        self.pool_at_mask_resolution = pool_at_mask_resolution
        self.part_names = _part_names(bp.part_mode, bp.masks.preprocess, self.parts_num)

        self.backbone = backbone or build_backbone(
            model_cfg.backbone,
            pretrained=model_cfg.pretrained,
            pretrained_path=model_cfg.pretrained_path,
            last_stride=bp.last_stride,
        )
        channels = self.backbone.out_channels
        reduce = bp.dim_reduce_output > 0
        self.embedding_dim = bp.dim_reduce_output if reduce else channels

        def reducer() -> nn.Module:
            return DimReduce(channels, self.embedding_dim) if reduce else nn.Identity()

        self.global_reduce = reducer()
        self.global_classifier = BNClassifier(self.embedding_dim, num_classes)
        self.part_head: nn.Module | None = None
        if self.part_mode == "global":
            return

        num_masks = self.parts_num + 1
        if self.part_mode == "attention":
            if self.head_type == "1x1":
                self.part_head = PartHead1x1(channels, num_masks)
            else:
                stage, stage_channels = _stride4_stage(self.backbone)
                # Fused width: C/4 within [64, 256] (64 for the CPU backbone, 256 for ResNet-50).
                hidden = min(256, max(64, channels // 4))
                self.part_head = PartHeadStride4(channels, num_masks, stage, stage_channels, hidden)
        self.foreground_reduce = reducer()
        self.background_reduce = reducer()
        self.parts_reduce = reducer()  # ONE layer shared by all K parts (as the official model)
        self.foreground_classifier = BNClassifier(self.embedding_dim, num_classes)
        self.background_classifier = BNClassifier(self.embedding_dim, num_classes)
        self.concat_parts_classifier = BNClassifier(
            self.parts_num * self.embedding_dim, num_classes
        )
        if self.shared_parts_id_classifier:
            self.parts_classifiers = nn.ModuleList([BNClassifier(self.embedding_dim, num_classes)])
        else:
            self.parts_classifiers = nn.ModuleList(
                BNClassifier(self.embedding_dim, num_classes) for _ in range(self.parts_num)
            )

    # ---- forward --------------------------------------------------------------------

    def forward(self, images: Tensor, external_masks: Tensor | None = None) -> BPBReIDOutput:
        """Embed a batch of images.

        Args:
            images: ``[N, 3, H, W]`` normalized images.
            external_masks: ``[N, K+1, h, w]`` part targets (channel 0 = background, any
                size): the part masks in ``external`` mode; merged with the learned maps at
                test time when ``test_use_target_segmentation`` is soft/hard; else ignored.
        """
        feature_map, stages = self.backbone(images)
        global_embedding = self.global_reduce(feature_map.mean(dim=(2, 3)))
        bn_global, global_logits = self.global_classifier(global_embedding)
        if self.part_mode == "global":
            return BPBReIDOutput(
                embeddings={"global": global_embedding, "bn_global": bn_global},
                visibility=None,
                parts_masks=None,
                pixel_logits=None,
                id_logits={"global": global_logits},
                feature_map=feature_map,
            )

        parts_masks, pixel_logits = self._parts_masks(
            feature_map, stages, external_masks, (images.shape[-2], images.shape[-1])
        )
        binary = (
            self.training_binary_visibility_score
            if self.training
            else self.testing_binary_visibility_score
        )
        if self.part_mode == "stripes":
            visibility = parts_masks.new_ones(parts_masks.shape[0], self.parts_num).float()
        else:
            visibility = part_visibility(parts_masks, binary)

        pooling_masks = torch.cat(
            [parts_masks[:, 1:].amax(dim=1, keepdim=True), parts_masks], dim=1
        )  # [N, 1 + 1 + K, Hm, Wm]: foreground, background, parts
        pooled = self._pool(feature_map, pooling_masks)  # [N, 2 + K, C]
        foreground = self.foreground_reduce(pooled[:, 0])
        background = self.background_reduce(pooled[:, 1])
        parts = self.parts_reduce(pooled[:, 2:])  # [N, K, D]
        concat_parts = parts.flatten(1, 2)  # [N, K*D]

        bn_foreground, foreground_logits = self.foreground_classifier(foreground)
        bn_background, background_logits = self.background_classifier(background)
        bn_concat, concat_logits = self.concat_parts_classifier(concat_parts)
        bn_parts, parts_logits = self._classify_parts(parts)

        return BPBReIDOutput(
            embeddings={
                "global": global_embedding,
                "foreground": foreground,
                "background": background,
                "concat_parts": concat_parts,
                "parts": parts,
                "bn_global": bn_global,
                "bn_foreground": bn_foreground,
                "bn_background": bn_background,
                "bn_concat_parts": bn_concat,
                "bn_parts": bn_parts,
            },
            visibility=visibility,
            parts_masks=parts_masks,
            pixel_logits=pixel_logits,
            id_logits={
                "global": global_logits,
                "foreground": foreground_logits,
                "background": background_logits,
                "concat_parts": concat_logits,
                "parts": parts_logits,
            },
            feature_map=feature_map,
        )

    def _parts_masks(
        self,
        feature_map: Tensor,
        stages: dict[str, Tensor],
        external_masks: Tensor | None,
        image_size: tuple[int, int],
    ) -> tuple[Tensor, Tensor | None]:
        """``(parts_masks [N, K+1, Hm, Wm], pixel_logits or None)`` for the current mode."""
        n, _, hf, wf = feature_map.shape
        if self.part_mode == "stripes":
            stripes = horizontal_stripes(self.parts_num, hf, wf, feature_map.device)
            return stripes.unsqueeze(0).expand(n, -1, -1, -1).to(feature_map.dtype), None
        if self.part_mode == "external":
            if external_masks is None:
                raise ValueError(
                    "part_mode='external' pools parts under the parsing labels: pass them as "
                    "forward(images, external_masks=[N, K+1, h, w])."
                )
            self._check_external(external_masks)
            # Labels are pooled where the head would predict: stride 4 for the stride-4 head.
            size = (hf, wf)
            if self.head_type == "3x3_stride4":
                size = (image_size[0] // 4, image_size[1] // 4)
            return self._resize_external(external_masks, size).detach(), None

        assert self.part_head is not None
        pixel_logits = self.part_head(feature_map, stages)
        parts_masks = pixel_logits.softmax(dim=1)
        mode = self.test_use_target_segmentation
        if not self.training and external_masks is not None and mode != "none":
            self._check_external(external_masks)
            parts_masks = self._merge_external(parts_masks, external_masks, mode)
        return parts_masks, pixel_logits

    def _check_external(self, external_masks: Tensor) -> None:
        if external_masks.dim() != 4 or external_masks.shape[1] != self.parts_num + 1:
            raise ValueError(
                f"external_masks must be [N, K+1={self.parts_num + 1}, h, w] (background first), "
                f"got {tuple(external_masks.shape)}: check model.bpbreid.masks.parts_num against "
                "the grouping of the labels (model.bpbreid.masks.preprocess)."
            )

    @staticmethod
    def _resize_external(external_masks: Tensor, size: tuple[int, int]) -> Tensor:
        # Bilinear with align_corners=True, as the official code resizes label masks.
        masks = external_masks.float()
        if tuple(masks.shape[-2:]) == tuple(size):
            return masks
        return F.interpolate(masks, size=size, mode="bilinear", align_corners=True)

    def _merge_external(self, parts_masks: Tensor, external_masks: Tensor, mode: str) -> Tensor:
        """Test-time merge of the learned maps with label masks (official semantics).

        soft: each part map is multiplied by its label map; hard: part maps are zeroed
        (1e-12) where the labels say background, and the background map becomes that
        outside-the-person indicator.
        """
        external = self._resize_external(external_masks, tuple(parts_masks.shape[-2:]))
        external = external.to(parts_masks.dtype)
        if mode == "soft":
            return torch.cat([parts_masks[:, :1], parts_masks[:, 1:] * external[:, 1:]], dim=1)
        person = external[:, 1:].amax(dim=1, keepdim=True) > external[:, :1]  # [N, 1, Hm, Wm]
        parts = torch.where(person, parts_masks[:, 1:], torch.full_like(parts_masks[:, 1:], 1e-12))
        return torch.cat([(~person).to(parts_masks.dtype), parts], dim=1)

    def _pool(self, feature_map: Tensor, masks: Tensor) -> Tensor:
        """GWAP of ``feature_map`` ``[N, C, Hf, Wf]`` under ``masks`` ``[N, M, Hm, Wm]`` -> ``[N, M, C]``.

        With ``foreground_pooling="masked_average"`` the first two masks (foreground,
        background) are pooled by :func:`masked_average_pool` instead, as the official code.
        """
        if masks.shape[-2:] != feature_map.shape[-2:]:
            if self.pool_at_mask_resolution:
                feature_map = F.interpolate(
                    feature_map, size=masks.shape[-2:], mode="bilinear", align_corners=False
                )
            else:
                masks = F.adaptive_avg_pool2d(masks, feature_map.shape[-2:])
        masks = masks.to(feature_map.dtype)
        if self.foreground_pooling == "masked_average":
            return torch.cat(
                [
                    masked_average_pool(feature_map, masks[:, :2]),
                    weighted_average_pool(feature_map, masks[:, 2:]),
                ],
                dim=1,
            )
        return weighted_average_pool(feature_map, masks)

    def _classify_parts(self, parts: Tensor) -> tuple[Tensor, Tensor]:
        """BNNeck per part: ``[N, K, D] -> ([N, K, D], [N, K, num_classes])``."""
        if self.shared_parts_id_classifier:
            n, k, d = parts.shape
            bn_parts, logits = self.parts_classifiers[0](parts.reshape(n * k, d))
            return bn_parts.view(n, k, d), logits.view(n, k, -1)
        results = [clf(parts[:, i]) for i, clf in enumerate(self.parts_classifiers)]
        bn_parts = torch.stack([bn for bn, _ in results], dim=1)
        logits = torch.stack([lg for _, lg in results], dim=1)
        return bn_parts, logits


def _part_names(part_mode: str, grouping: str, parts_num: int) -> tuple[str, ...]:
    if part_mode == "global":
        return ()
    if part_mode == "stripes":
        return tuple(f"stripe_{i + 1}" for i in range(parts_num))
    if grouping in PART_GROUPINGS and len(PART_GROUPINGS[grouping]) == parts_num:
        return part_names(grouping)
    return tuple(f"part_{i + 1}" for i in range(parts_num))


# --------------------------------------------------------------------------------------
# Test embeddings and the factory
# --------------------------------------------------------------------------------------


def select_test_embeddings(output: BPBReIDOutput, names: list[str]) -> tuple[Tensor, Tensor]:
    """Stack the embeddings used at test time, with one visibility score per entry.

    ``"parts"``/``"bn_parts"`` expand to K entries carrying the part visibility; every
    other embedding (global, foreground, background, concat_parts) counts as visible.
    Official names (``bn_foreg``, ``globl``...) are accepted.

    Args:
        output: a model output.
        names: e.g. ``["bn_foreground", "parts"]`` (the paper's choice).

    Returns:
        ``features [N, P, D]`` and ``visibility [N, P]`` (float32).

    Raises:
        ConfigError: an embedding the model does not produce, or entries of different sizes.
    """
    features: list[Tensor] = []
    visibility: list[Tensor] = []
    for raw in names:
        name = canonical_embedding(raw)
        if name not in output.embeddings:
            raise ConfigError(
                f"Test embedding '{raw}' (model.bpbreid.test_embeddings) is not produced by this "
                f"model; it has: {', '.join(output.embeddings)}. A global-only model "
                "(part_mode=global) needs model.bpbreid.test_embeddings=[bn_global]."
            )
        embedding = output.embeddings[name]
        if name in PART_EMBEDDINGS:
            features.append(embedding)
            vis = output.visibility
            visibility.append(
                vis.float() if vis is not None else embedding.new_ones(embedding.shape[:2]).float()
            )
        else:
            features.append(embedding.unsqueeze(1))
            visibility.append(embedding.new_ones(embedding.shape[0], 1).float())
    dims = {int(f.shape[-1]) for f in features}  # ints: shapes are tensors under tracing
    if len(dims) > 1:
        raise ConfigError(
            f"Test embeddings {names} have different sizes {sorted(dims)} and cannot be compared "
            "entry by entry; concat_parts (K*D) does not mix with the others (D)."
        )
    return torch.cat(features, dim=1), torch.cat(visibility, dim=1)


def validate_model_config(cfg: Config) -> None:
    """Check the model settings that the type system cannot (mode names, K vs grouping)."""
    bp = cfg.model.bpbreid
    for key, value, valid in (
        ("model.bpbreid.part_mode", bp.part_mode, PART_MODES),
        ("model.bpbreid.head", bp.head, PART_HEADS),
        (
            "model.bpbreid.test_use_target_segmentation",
            bp.test_use_target_segmentation,
            TARGET_SEGMENTATION_MODES,
        ),
    ):
        if value not in valid:
            raise ConfigError(f"Invalid {key}={value!r}. Valid values: {', '.join(valid)}.")
    if bp.part_mode == "global":
        wanted = [canonical_embedding(n) for n in bp.test_embeddings]
        others = [n for n in wanted if n.removeprefix("bn_") != "global"]
        if others:
            raise ConfigError(
                f"model.bpbreid.part_mode=global produces only the global embedding, but "
                f"model.bpbreid.test_embeddings asks for {others}: set "
                "model.bpbreid.test_embeddings=[bn_global]."
            )
        return
    if bp.masks.parts_num < 1:
        raise ConfigError(f"model.bpbreid.masks.parts_num must be >= 1, got {bp.masks.parts_num}.")
    if bp.part_mode in ("attention", "external"):
        check_grouping(bp.masks.preprocess, bp.masks.parts_num)


def build_model(cfg: Config, num_classes: int) -> BPBReID:
    """Build the configured model (backbone, part mode, head) from the config alone.

    Args:
        cfg: the configuration (``cfg.model``).
        num_classes: number of training identities.

    Raises:
        ConfigError: invalid model settings (unknown backbone, mode, K vs grouping...).
        CheckpointError: pretrained weights asked for but unavailable.
    """
    if cfg.model.name != "bpbreid":
        raise ConfigError(f"Unknown model.name={cfg.model.name!r}. Valid: bpbreid.")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1 (training identities), got {num_classes}.")
    validate_model_config(cfg)
    bp = cfg.model.bpbreid
    return BPBReID(
        cfg,
        num_classes,
        pool_at_mask_resolution=bp.pool_at_mask_resolution,
        foreground_pooling=bp.foreground_pooling,
    )


# --------------------------------------------------------------------------------------
# Cost
# --------------------------------------------------------------------------------------


def measure_cost(
    model: nn.Module,
    input_size: tuple[int, int] = (256, 128),
    batch_size: int = 1,
    iterations: int = 3,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Parameters, FLOPs and inference latency of a model on random images.

    FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` (2 per
    multiply-add, convolutions and matrix products only) on the first forward pass, which
    also serves as warm-up; the latency is the median of ``iterations`` further passes
    (eval mode, no grad). Note: on CPU the result depends on ``torch.get_num_threads()``.

    Returns:
        ``{"params_m": millions of parameters, "gflops": GFLOPs per image,
        "latency_ms": milliseconds per batch}`` (latency NaN when ``iterations`` is 0).
    """
    import statistics
    import time

    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(device)
    model = model.eval().to(device)
    images = torch.randn(batch_size, 3, *input_size, device=device)
    params = sum(p.numel() for p in model.parameters())
    times: list[float] = []
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            model(images)
        for _ in range(iterations):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(images)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    return {
        "params_m": params / 1e6,
        "gflops": counter.get_total_flops() / 1e9 / batch_size,
        "latency_ms": statistics.median(times) * 1e3 if times else float("nan"),
    }
