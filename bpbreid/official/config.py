"""The official yacs training config and its translation into our :class:`Config`.

A pickled yacs ``CfgNode`` becomes :class:`OfficialConfig` (a plain dict with attribute
access: yacs need not be installed), and :func:`config_from_official` maps the settings that
decide the architecture, the test-time embeddings, the preprocessing and the GiLt loss onto
:class:`bpbreid.config.Config`, refusing the settings this package cannot reproduce.

Reference:
    Official code github.com/VlSomers/bpbreid, ``scripts/default_config.py`` (config keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from bpbreid.config import Config, config_from_dict, config_to_dict
from bpbreid.errors import CheckpointError, ConfigError
from bpbreid.parts import DEFAULT_MASKS_DIR, PART_GROUPINGS

__all__ = [
    "OFFICIAL_BACKBONES",
    "OFFICIAL_DATASETS",
    "OFFICIAL_FIXED_LAST_STRIDE",
    "OfficialConfig",
    "config_from_official",
]


class OfficialConfig(dict):
    """What a pickled yacs ``CfgNode`` becomes: a plain dict with attribute access.

    ``cfg.model.bpbreid.masks.preprocess`` and ``cfg["model"]["bpbreid"]...`` both work.
    The attributes yacs pickles beside the items (``__immutable__``, ...) land in
    ``__dict__`` and are ignored.
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"The official config has no key '{name}' (keys: {', '.join(map(str, self))})."
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """A plain nested ``dict`` copy."""
        return {k: v.to_dict() if isinstance(v, OfficialConfig) else v for k, v in self.items()}


# Official backbone names -> ours.
OFFICIAL_BACKBONES: dict[str, str] = {
    "hrnet32": "hrnet_w32",
    "resnet50": "resnet50",
    "resnet50_ibn_a": "resnet50_ibn_a",
}
# Official backbones that build their last stage with a fixed stride whatever
# model.bpbreid.last_stride says: the IBN-a ResNet's constructor takes no last_stride (it
# lands in **kwargs) and builds layer4 with stride 2 (torchreid/models/resnet_ibn_a.py:140-165
# at c0db006). Its checkpoints therefore come from a stride-32 network.
OFFICIAL_FIXED_LAST_STRIDE: dict[str, int] = {"resnet50_ibn_a": 2}
# Official dataset names (data.sources) -> our registry names.
OFFICIAL_DATASETS: dict[str, str] = {
    "market1501": "market1501",
    "dukemtmcreid": "dukemtmc",
    "occluded_duke": "occluded_duke",
    "occluded_reid": "occluded_reid",
    "p_dukemtmc_reid": "p_dukemtmc",
}


def _get(node: Any, dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _plain(value: Any) -> Any:
    """Lists/tuples/NumPy scalars from a yacs config -> plain Python values."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):
        return value.item()
    return value


def config_from_official(
    official: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor] | None = None
) -> Config:
    """Our :class:`Config` from an official (yacs) training config.

    Maps the model settings that decide the architecture and the test-time embeddings
    (backbone, ``masks.preprocess``, ``parts_num``, ``test_embeddings``,
    ``dim_reduce_output``, ``last_stride``, visibility and classifier options), the mask
    preprocessing, the image size and normalization, the test distance and the GiLt loss
    weights. ``last_stride`` is the one the official network really had
    (:data:`OFFICIAL_FIXED_LAST_STRIDE`: 2 for ``resnet50_ibn_a``, whose official
    constructor ignores the setting). ``parts_num`` comes from the grouping, else from the
    part head's shape in ``state_dict``.

    Raises:
        CheckpointError: a setting this package cannot reproduce (an unknown backbone,
            ``dim_reduce`` other than ``after_pooling``, pooling other than ``gwap``).
    """
    bp = _get(official, "model.bpbreid", {}) or {}
    backbone = _get(bp, "backbone", "hrnet32")
    if backbone not in OFFICIAL_BACKBONES:
        raise CheckpointError(
            f"Official backbone '{backbone}' is not available here; supported: "
            f"{', '.join(OFFICIAL_BACKBONES)}."
        )
    for key, wanted in (("dim_reduce", "after_pooling"), ("pooling", "gwap")):
        value = _get(bp, key, wanted)
        if value != wanted:
            raise CheckpointError(
                f"Official setting model.bpbreid.{key}='{value}' is not supported "
                f"(only '{wanted}', the setting of every published model)."
            )
    preprocess = _get(bp, "masks.preprocess", "eight")
    parts_num = None
    if preprocess in PART_GROUPINGS:
        parts_num = len(PART_GROUPINGS[preprocess])
    elif state_dict is not None and "pixel_classifier.classifier.weight" in state_dict:
        parts_num = int(state_dict["pixel_classifier.classifier.weight"].shape[0]) - 1
    if parts_num is None:
        raise CheckpointError(
            f"Official grouping masks.preprocess='{preprocess}' is unknown here (known: "
            f"{', '.join(PART_GROUPINGS)}) and the checkpoint has no part head to count parts."
        )
    if preprocess not in PART_GROUPINGS:
        preprocess = {1: "one", 2: "two", 4: "four", 5: "five_v", 8: "eight"}.get(parts_num)
        if preprocess is None:
            raise CheckpointError(f"No grouping with {parts_num} parts is known here.")

    learnable = bool(_get(bp, "learnable_attention_enabled", True))
    model = {
        "backbone": OFFICIAL_BACKBONES[backbone],
        "pretrained": False,
        "bpbreid": {
            "part_mode": "attention" if learnable else "external",
            "head": "1x1",
            "last_stride": OFFICIAL_FIXED_LAST_STRIDE.get(
                backbone, int(_get(bp, "last_stride", 1))
            ),
            "dim_reduce_output": int(_get(bp, "dim_reduce_output", 512)),
            "test_embeddings": [str(n) for n in _get(bp, "test_embeddings", [])]
            or ["bn_foreground", "parts"],
            "training_binary_visibility_score": bool(
                _get(bp, "training_binary_visibility_score", True)
            ),
            "testing_binary_visibility_score": bool(
                _get(bp, "testing_binary_visibility_score", True)
            ),
            "test_use_target_segmentation": str(_get(bp, "test_use_target_segmentation", "none")),
            "shared_parts_id_classifier": bool(_get(bp, "shared_parts_id_classifier", False)),
            # The official model averages mask * features over all pixels for the
            # foreground/background embeddings (GWAP only for parts): reproduce it exactly.
            "foreground_pooling": "masked_average",
            "masks": {
                "dir": str(_get(bp, "masks.dir", DEFAULT_MASKS_DIR)),
                "preprocess": preprocess,
                "parts_num": parts_num,
                "softmax_weight": float(_get(bp, "masks.softmax_weight", 15.0)),
                "background_computation_strategy": str(
                    _get(bp, "masks.background_computation_strategy", "threshold")
                ),
                "mask_filtering_threshold": float(_get(bp, "masks.mask_filtering_threshold", 0.5)),
                # Training from an official config follows the official recipe
                # (docs/fidelity.md): nearest-resized pixel targets, as below.
                "targets": "official",
            },
        },
    }
    data: dict[str, Any] = {
        "height": int(_get(official, "data.height", 384)),
        "width": int(_get(official, "data.width", 128)),
        "norm_mean": [
            float(v) for v in _plain(_get(official, "data.norm_mean", [0.485, 0.456, 0.406]))
        ],
        "norm_std": [
            float(v) for v in _plain(_get(official, "data.norm_std", [0.229, 0.224, 0.225]))
        ],
    }
    # The official erasing box and fill, and the official per-image pipeline.
    data.update({"erasing": "official", "pipeline": "reference"})
    sources = _plain(_get(official, "data.sources", [])) or []
    if sources and str(sources[0]) in OFFICIAL_DATASETS:
        data["name"] = OFFICIAL_DATASETS[str(sources[0])]
    test = {
        "dist_metric": str(_get(official, "test.dist_metric", "euclidean")),
        "normalize_feature": bool(_get(official, "test.normalize_feature", True)),
    }
    loss: dict[str, Any] = {}
    weights = _get(official, "loss.part_based.weights", None)
    if isinstance(weights, Mapping):
        table = {}
        for name, value in weights.items():
            if name == "pixls" and isinstance(value, Mapping):
                loss["pixel_weight"] = float(value.get("ce", 0.35))
            elif isinstance(value, Mapping) and name in (
                "globl",
                "foreg",
                "backg",
                "conct",
                "parts",
            ):
                table[name] = {"id": float(value.get("id", 0.0)), "tr": float(value.get("tr", 0.0))}
        if table:
            loss["weights"] = table
    # Official training: fp32 eager, learning-rate warm-up per epoch.
    train = {"amp": "off", "warmup_unit": "epoch"}
    tree = {"model": model, "data": data, "test": test, "loss": loss, "train": train}
    base = config_to_dict(Config())
    merged = _merge(base, tree)
    if "weights" in loss:
        merged["loss"]["weights"] = loss["weights"]  # a whole GiLt recipe replaces the default
    try:
        return config_from_dict(merged)
    except ConfigError as exc:
        raise CheckpointError(f"The official config could not be mapped: {exc}") from exc


def _merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
