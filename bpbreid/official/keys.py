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
    HRNet-W32 module names, which timm's ``hrnet_w32`` keeps).
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
    "KeyMappingReport",
    "backbone_prefix_of",
    "map_official_state_dict",
    "official_key_to_ours",
    "our_key_to_official",
    "state_dict_to_official",
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

# Official keys that the official model itself never uses at inference: HRNet's 1x1
# 'cls_head' (a dimension reduction that is off with dim_reduce='after_pooling', the
# setting of every official config).
IGNORED_OFFICIAL_KEYS = re.compile(rf"^{re.escape(OFFICIAL_BACKBONE_PREFIX)}cls_head\.")

_PARTS_CLASSIFIER = re.compile(r"^parts_identity_classifier\.(?:(\d+)\.)?(.*)$")
_OUR_PARTS_CLASSIFIER = re.compile(r"^parts_classifiers\.(\d+)\.(.*)$")


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
    if IGNORED_OFFICIAL_KEYS.match(key):
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
        unexpected: official keys with no counterpart in the model.
        ignored: official keys that the official model does not use either (HRNet cls_head).
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

    def summary(self, limit: int = 5) -> str:
        """One line per category, with the first ``limit`` keys of each problem."""
        lines = [
            f"loaded {len(self.loaded)} tensors; ignored {len(self.ignored)} unused official "
            f"tensors (HRNet cls_head)"
        ]
        for title, items in (
            ("missing in the checkpoint", self.missing),
            ("unexpected (no counterpart in the model)", self.unexpected),
            ("wrong shape", self.mismatched),
        ):
            if items:
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                lines.append(f"{title}: {len(items)}: {', '.join(items[:limit])}{more}")
        return "\n".join(lines)


def map_official_state_dict(
    official: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], KeyMappingReport]:
    """Rename an official state dict to our model's names and check every shape.

    Args:
        official: the checkpoint's ``state_dict`` (official names, ``module.`` allowed).
        model_state: our model's ``state_dict()`` (names and shapes to match).

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
        ours = official_key_to_ours(key, prefix)
        if ours is None:
            (
                report.ignored
                if IGNORED_OFFICIAL_KEYS.match(key.removeprefix("module."))
                else report.unexpected
            ).append(key)
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
