"""Official <-> our state-dict names, and the key-by-key report of a mapping.

The official backbone lives under ``backbone_appearance_feature_extractor.`` and the heads
under the names of ``torchreid/models/bpbreid.py``; an explicit table
(:data:`HEAD_KEY_PREFIXES`) maps them onto :class:`bpbreid.model.BPBReID`, and
:func:`map_official_state_dict` checks every name and shape (:class:`KeyMappingReport`).

Reference:
    Official code github.com/VlSomers/bpbreid (``torchreid/models/bpbreid.py``: module names
    ``backbone_appearance_feature_extractor``, ``{global,foreground,background,parts}_after_
    pooling_dim_reduce.layers.{0: Linear, 1: BatchNorm1d}``, ``pixel_classifier.{bn,
    classifier}``, ``*_identity_classifier.{bn,classifier}``; ``torchreid/models/hrnet.py``:
    HRNet-W32 module names, which timm's ``hrnet_w32`` keeps; ``torchreid/models/resnet.py``
    and ``torchreid/models/resnet_ibn_a.py``: torchvision ResNet-50 names, which ours keep).
    The official backbones also carry modules that BPBReID never calls; they are listed by
    name in :data:`UNUSED_OFFICIAL_HEADS` and reported as ignored, never loaded.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "HEAD_KEY_PREFIXES",
    "IGNORED_OFFICIAL_KEYS",
    "OFFICIAL_BACKBONE_PREFIX",
    "UNUSED_OFFICIAL_HEADS",
    "KeyMappingReport",
    "UnusedOfficialHead",
    "backbone_prefix_of",
    "map_official_state_dict",
    "official_key_to_ours",
    "our_key_to_official",
    "state_dict_to_official",
    "unused_official_head",
]

OFFICIAL_BACKBONE_PREFIX = "backbone_appearance_feature_extractor."

# Official prefix -> our prefix, for everything but the backbone. The official dimension
# reduction is Sequential(Linear, BatchNorm1d, ReLU) under '.layers'; ours names them.
HEAD_KEY_PREFIXES: tuple[tuple[str, str], ...] = tuple(
    pair
    for name in ("global", "foreground", "background", "parts")
    for pair in (
        (f"{name}_after_pooling_dim_reduce.layers.0.", f"{name}_reduce.linear."),
        (f"{name}_after_pooling_dim_reduce.layers.1.", f"{name}_reduce.bn."),
    )
) + (
    ("pixel_classifier.bn.", "part_head.bn."),
    ("pixel_classifier.classifier.", "part_head.classifier."),
    ("global_identity_classifier.", "global_classifier."),
    ("foreground_identity_classifier.", "foreground_classifier."),
    ("background_identity_classifier.", "background_classifier."),
    ("concat_parts_identity_classifier.", "concat_parts_classifier."),
)


@dataclass(frozen=True)
class UnusedOfficialHead:
    """A module that an official backbone builds (so its tensors are in every checkpoint)
    but that the official BPBReID model never calls, in training or at test time.

    Attributes:
        prefix: the official state-dict prefix of its tensors (ends with ``.``).
        backbones: the official backbone names (``model.bpbreid.backbone``) that carry it.
        description: what it is and why it is unused, with the official source lines.
    """

    prefix: str
    backbones: tuple[str, ...]
    description: str


# Every official tensor that may be dropped, by name: any other official key without a
# counterpart in our model is an error in a strict load. Sources: bpbreid c0db006.
UNUSED_OFFICIAL_HEADS: tuple[UnusedOfficialHead, ...] = (
    UnusedOfficialHead(
        # weight [num_classes, 2048], bias [num_classes]
        prefix=f"{OFFICIAL_BACKBONE_PREFIX}classifier.",
        backbones=("resnet50", "resnet50_ibn_a"),
        description=(
            "ResNet identity classifier Linear(2048, num_classes) "
            "(torchreid/models/resnet.py:243, resnet_ibn_a.py:170); BPBReID uses the "
            "feature map before it (resnet.py:357-358) and its own identity classifiers"
        ),
    ),
    UnusedOfficialHead(
        # 0: Conv2d(1920, dim_reduce_output, 1) weight + bias, 1: BatchNorm2d (5 tensors)
        prefix=f"{OFFICIAL_BACKBONE_PREFIX}cls_head.",
        backbones=("hrnet32",),
        description=(
            "HRNet 1x1 channel reduction (torchreid/models/hrnet.py:362-371), applied only "
            "with dim_reduce='before_pooling' (hrnet.py:574-575, bpbreid.py:44); every "
            "official config uses 'after_pooling'"
        ),
    ),
)

# The same prefixes as one pattern (kept for callers that only need a yes/no on a key).
IGNORED_OFFICIAL_KEYS = re.compile(
    "^(?:" + "|".join(re.escape(head.prefix) for head in UNUSED_OFFICIAL_HEADS) + ")"
)

_PARTS_CLASSIFIER = re.compile(r"^parts_identity_classifier\.(?:(\d+)\.)?(.*)$")
_OUR_PARTS_CLASSIFIER = re.compile(r"^parts_classifiers\.(\d+)\.(.*)$")


def unused_official_head(
    key: str, official_backbone: str | None = None
) -> UnusedOfficialHead | None:
    """The entry of :data:`UNUSED_OFFICIAL_HEADS` that ``key`` belongs to, or None.

    Args:
        key: an official parameter name (``module.`` allowed).
        official_backbone: the checkpoint's official backbone (``resnet50``,
            ``resnet50_ibn_a``, ``hrnet32``); when given, only the heads that this backbone
            carries count (an HRNet checkpoint with a ResNet classifier is not official).
    """
    key = key.removeprefix("module.")
    for head in UNUSED_OFFICIAL_HEADS:
        if key.startswith(head.prefix) and (
            official_backbone is None or official_backbone in head.backbones
        ):
            return head
    return None


def backbone_prefix_of(our_keys: Any) -> str:
    """Our backbone prefix: ``backbone.body.`` for timm backbones (HRNet), else ``backbone.``."""
    return (
        "backbone.body." if any(k.startswith("backbone.body.") for k in our_keys) else "backbone."
    )


def official_key_to_ours(key: str, backbone_prefix: str = "backbone.body.") -> str | None:
    """Our name for an official parameter name, or None when it has no counterpart.

    ``module.`` (DataParallel) is stripped first.
    """
    key = key.removeprefix("module.")
    if unused_official_head(key) is not None:
        return None
    if key.startswith(OFFICIAL_BACKBONE_PREFIX):
        return backbone_prefix + key[len(OFFICIAL_BACKBONE_PREFIX) :]
    match = _PARTS_CLASSIFIER.match(key)
    if match:
        index, rest = match.groups()
        return f"parts_classifiers.{index or 0}.{rest}"  # shared classifier: one module
    for official, ours in HEAD_KEY_PREFIXES:
        if key.startswith(official):
            return ours + key[len(official) :]
    return None


def our_key_to_official(key: str, shared_parts_classifier: bool = False) -> str | None:
    """The official name of one of our parameter names (None: no official counterpart)."""
    for prefix in ("backbone.body.", "backbone."):
        if key.startswith(prefix):
            return OFFICIAL_BACKBONE_PREFIX + key[len(prefix) :]
    match = _OUR_PARTS_CLASSIFIER.match(key)
    if match:
        index, rest = match.groups()
        if shared_parts_classifier:
            return f"parts_identity_classifier.{rest}"
        return f"parts_identity_classifier.{index}.{rest}"
    for official, ours in HEAD_KEY_PREFIXES:
        if key.startswith(ours):
            return official + key[len(ours) :]
    return None


def state_dict_to_official(
    state_dict: Mapping[str, torch.Tensor], shared_parts_classifier: bool = False
) -> OrderedDict[str, torch.Tensor]:
    """Rename our state dict to the official names (the inverse of :func:`map_official_state_dict`).

    Keys without an official counterpart (the ``3x3_stride4`` part head's extra layers...)
    are left out.
    """
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        official = our_key_to_official(key, shared_parts_classifier)
        if official is not None:
            out[official] = value
    return out


@dataclass
class KeyMappingReport:
    """How an official state dict matched the model.

    Attributes:
        loaded: our keys that received a tensor.
        missing: our keys with no official tensor (they keep their initial values).
        unexpected: official keys with no counterpart in the model and not in
            :data:`UNUSED_OFFICIAL_HEADS`.
        ignored: official keys of a module that the official model never calls either
            (:data:`UNUSED_OFFICIAL_HEADS`: ResNet ``classifier``, HRNet ``cls_head``).
        mismatched: ``"key official_shape vs model_shape"`` for same-name, different-shape keys.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every model tensor was loaded and every official tensor was used (or ignorable)."""
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def ignored_heads(self) -> dict[str, int]:
        """``{prefix: number of tensors}`` of the unused official modules that were dropped."""
        counts: dict[str, int] = {}
        for key in self.ignored:
            head = unused_official_head(key)
            prefix = head.prefix if head is not None else key
            counts[prefix] = counts.get(prefix, 0) + 1
        return counts

    def summary(self, limit: int = 5) -> str:
        """One line per category, with the first ``limit`` keys of each problem."""
        heads = ", ".join(f"{p}* ({n})" for p, n in self.ignored_heads.items()) or "none"
        lines = [
            f"loaded {len(self.loaded)} tensors; ignored {len(self.ignored)} tensors of official "
            f"modules that BPBReID never uses: {heads}"
        ]
        known = ", ".join(f"{h.prefix}* ({'/'.join(h.backbones)})" for h in UNUSED_OFFICIAL_HEADS)
        for title, items in (
            ("missing in the checkpoint", self.missing),
            (
                "unexpected (no counterpart in the model, and not a known unused official "
                f"module: {known})",
                self.unexpected,
            ),
            ("wrong shape", self.mismatched),
        ):
            if items:
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                lines.append(f"{title}: {len(items)}: {', '.join(items[:limit])}{more}")
        return "\n".join(lines)


def map_official_state_dict(
    official: Mapping[str, torch.Tensor],
    model_state: Mapping[str, torch.Tensor],
    official_backbone: str | None = None,
) -> tuple[dict[str, torch.Tensor], KeyMappingReport]:
    """Rename an official state dict to our model's names and check every shape.

    Args:
        official: the checkpoint's ``state_dict`` (official names, ``module.`` allowed).
        model_state: our model's ``state_dict()`` (names and shapes to match).
        official_backbone: the checkpoint's ``model.bpbreid.backbone`` when known: only the
            unused modules of that backbone are ignored (None: those of every backbone).

    Returns:
        ``(mapped, report)``: the tensors to load (only keys of the model with the right
        shape) and the :class:`KeyMappingReport`.
    """
    prefix = backbone_prefix_of(model_state)
    report = KeyMappingReport()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in official.items():
        if not isinstance(value, torch.Tensor):
            continue
        if unused_official_head(key) is not None:
            # Known by name: dropped when this backbone carries it, an error otherwise.
            known = unused_official_head(key, official_backbone) is not None
            (report.ignored if known else report.unexpected).append(key)
            continue
        ours = official_key_to_ours(key, prefix)
        if ours is None:
            report.unexpected.append(key)
            continue
        if ours not in model_state:
            report.unexpected.append(key)
            continue
        expected = tuple(model_state[ours].shape)
        if tuple(value.shape) != expected:
            report.mismatched.append(f"{key} {tuple(value.shape)} vs model {expected}")
            continue
        mapped[ours] = value
    report.loaded = sorted(mapped)
    report.missing = sorted(k for k in model_state if k not in mapped)
    return mapped, report
