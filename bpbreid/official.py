"""Official BPBReID checkpoints: safe loading, key mapping, config mapping, download.

The official checkpoints (``bpbreid_market1501_hrnet32_10642.pth`` ...) are dicts with the
model's ``state_dict``, the training ``config`` (a pickled yacs ``CfgNode``), the epoch, the
optimizer and scheduler states and the test scores (NumPy scalars). Opening them needs more
than ``torch.load(weights_only=True)`` allows, and a full unpickler would run whatever a file
asks for. This module reads them with a *restricted* unpickler: only the globals in
:data:`ALLOWED_GLOBALS` (tensor rebuild functions, ``OrderedDict``, ``set``, NumPy arrays and
scalars) may be loaded; ``yacs.config.CfgNode`` becomes :class:`OfficialConfig`, a plain dict
with attribute access (yacs need not be installed); any other global stops the load with a
:class:`~bpbreid.errors.CheckpointError` naming it.

Then the official parameter names are mapped onto :class:`bpbreid.model.BPBReID` by an
explicit table (:data:`HEAD_KEY_PREFIXES`), the yacs config onto :class:`bpbreid.config.Config`
(:func:`config_from_official`) and the result is reported key by key
(:class:`KeyMappingReport`).

Example::

    from bpbreid.official import download_official_checkpoint, load_official_checkpoint
    path = download_official_checkpoint("market1501")          # explicit download (gdown)
    model, cfg, report = load_official_checkpoint(path, device="cuda")
    print(report.summary())

Reference:
    Somers, Vleeschouwer, Alahi, "Body Part-Based Representation Learning for Occluded Person
    Re-Identification", WACV 2023; official code github.com/VlSomers/bpbreid
    (``torchreid/models/bpbreid.py``: module names ``backbone_appearance_feature_extractor``,
    ``{global,foreground,background,parts}_after_pooling_dim_reduce.layers.{0: Linear,
    1: BatchNorm1d}``, ``pixel_classifier.{bn,classifier}``, ``*_identity_classifier.{bn,
    classifier}``; ``torchreid/models/hrnet.py``: HRNet-W32 module names, which timm's
    ``hrnet_w32`` keeps; ``scripts/default_config.py``: config keys). Pretrained models:
    Google Drive folder ``1aUjpSXXVGtAh2nzV0RVsCq0tTXuDZWoH`` (BPBReID README).
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import re
import types
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from bpbreid.config import Config, ConfigError, config_from_dict, config_to_dict
from bpbreid.errors import CheckpointError, DownloadError
from bpbreid.serialization import check_not_torchscript

# --------------------------------------------------------------------------------------
# The stand-in for yacs' CfgNode
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------


def _numpy_global(name: str) -> Any:
    """``numpy._core.multiarray.<name>`` (NumPy 2), else ``numpy.core.multiarray.<name>``."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return getattr(core.multiarray, name)


def _numpy_attr(name: str) -> Any:
    import numpy as np

    return getattr(np, name)


def _torch_utils(name: str) -> Any:
    import torch._utils

    return getattr(torch._utils, name)


# (module, name) -> a function returning the object. Everything a model checkpoint of the
# official code holds: tensors (rebuild functions; storages are handled by torch.load
# itself), ordered dicts (state dicts), sets (yacs bookkeeping), NumPy arrays and scalars
# (test scores), bytes (_codecs.encode: how protocol 2 stores bytes), and the yacs config.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): lambda: OrderedDict,
    ("collections", "Counter"): lambda: __import__("collections").Counter,
    ("builtins", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
    ("builtins", "slice"): lambda: slice,
    ("_codecs", "encode"): lambda: __import__("_codecs").encode,
    ("torch._utils", "_rebuild_tensor"): lambda: _torch_utils("_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"): lambda: _torch_utils("_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"): lambda: _torch_utils("_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"): lambda: _torch_utils("_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"): lambda: _torch_utils(
        "_rebuild_parameter_with_state"
    ),
    ("torch", "Size"): lambda: torch.Size,
    ("torch", "device"): lambda: torch.device,
    ("numpy", "ndarray"): lambda: _numpy_attr("ndarray"),
    ("numpy", "dtype"): lambda: _numpy_attr("dtype"),
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("yacs.config", "CfgNode"): lambda: OfficialConfig,
}


class UnsafeGlobalError(CheckpointError):
    """A pickle asked for a global outside :data:`ALLOWED_GLOBALS`."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of :data:`ALLOWED_GLOBALS`.

    Torch dtypes (``torch.float32``...) are allowed too; ``torch.load`` resolves storage
    types itself before asking this class. Python 2 names (``__builtin__``) are translated
    as the standard unpickler does.
    """

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles name Python 2 modules ('__builtin__ set'): translate them.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        factory = ALLOWED_GLOBALS.get((module, name))
        if factory is not None:
            return factory()
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeGlobalError(
            f"refusing to load the global '{module}.{name}': it is not on the allow-list of "
            "the restricted unpickler (only tensors, plain containers, NumPy scalars/arrays "
            "and the yacs config of the official BPBReID checkpoints may appear)"
        )


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


def _restricted_loads(data: bytes, **kwargs: Any) -> Any:
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


# A module-like object for torch.load(pickle_module=...): torch subclasses its Unpickler
# (zip format) or calls its load() (legacy format), so both paths are restricted.
restricted_pickle = types.ModuleType("bpbreid_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]
restricted_pickle.loads = _restricted_loads  # type: ignore[attr-defined]
restricted_pickle.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
restricted_pickle.__doc__ = "pickle restricted to bpbreid.official.ALLOWED_GLOBALS"


def restricted_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` through :class:`RestrictedUnpickler` (zip and legacy formats).

    Raises:
        CheckpointError: missing file, a global outside the allow-list (named), or a
            corrupt/truncated file.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(
            f"Checkpoint '{p}' not found. Download an official one with "
            "bpbreid.official.download_official_checkpoint('market1501') or "
            "`python -m bpbreid infer --official market1501 ...`."
        )
    # torch.load would hand a TorchScript archive to torch.jit.load, which runs the
    # archive's own code whatever pickle_module says: refuse those before opening.
    check_not_torchscript(p)
    try:
        return torch.load(
            p, map_location=map_location, pickle_module=restricted_pickle, weights_only=False
        )
    except UnsafeGlobalError as exc:
        raise CheckpointError(f"Checkpoint '{p}' was not loaded: {exc}.") from None
    except Exception as exc:  # corrupt zip, truncated pickle, wrong file type...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"Checkpoint '{p}' could not be read ({type(exc).__name__}: {first}). The file "
            "is corrupt or incomplete: download it again."
        ) from None


# --------------------------------------------------------------------------------------
# Key mapping
# --------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------
# Config mapping
# --------------------------------------------------------------------------------------

# Official backbone names -> ours.
OFFICIAL_BACKBONES: dict[str, str] = {
    "hrnet32": "hrnet_w32",
    "resnet50": "resnet50",
    "resnet50_ibn_a": "resnet50_ibn_a",
}
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
    weights. ``parts_num`` comes from the grouping, else from the part head's shape in
    ``state_dict``.

    Raises:
        CheckpointError: a setting this package cannot reproduce (an unknown backbone,
            ``dim_reduce`` other than ``after_pooling``, pooling other than ``gwap``).
    """
    from bpbreid.data.parsing import PART_GROUPINGS

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
            "last_stride": int(_get(bp, "last_stride", 1)),
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
                "dir": str(_get(bp, "masks.dir", "pifpaf_maskrcnn_filtering")),
                "preprocess": preprocess,
                "parts_num": parts_num,
                "softmax_weight": float(_get(bp, "masks.softmax_weight", 15.0)),
                "background_computation_strategy": str(
                    _get(bp, "masks.background_computation_strategy", "threshold")
                ),
                "mask_filtering_threshold": float(_get(bp, "masks.mask_filtering_threshold", 0.5)),
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
    tree = {"model": model, "data": data, "test": test, "loss": loss}
    base = config_to_dict(Config())
    merged = _merge(base, tree)
    if "weights" in loss:
        merged["loss"]["weights"] = loss["weights"]  # a whole GiLt recipe replaces the default
    try:
        return config_from_dict(merged)
    except ConfigError as exc:
        raise CheckpointError(f"The official config could not be mapped: {exc}") from None


def _merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


@dataclass
class OfficialCheckpoint:
    """The parts of an official checkpoint file.

    Attributes:
        state_dict: the model weights (official names).
        config: the training config (:class:`OfficialConfig`), or None when absent.
        extra: the other entries (epoch, rank1, mAP...), optimizer/scheduler left out.
    """

    state_dict: dict[str, torch.Tensor]
    config: OfficialConfig | None
    extra: dict[str, Any]


def read_official_checkpoint(path: str | Path, map_location: Any = "cpu") -> OfficialCheckpoint:
    """Open an official checkpoint with the restricted unpickler.

    Accepts a dict with ``state_dict`` (+ ``config``) as the official engine saves, or a
    bare state dict.

    Raises:
        CheckpointError: unreadable file, a refused global, or no state dict inside.
    """
    data = restricted_torch_load(path, map_location)
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        state = data["state_dict"]
        config = data.get("config")
        extra = {
            k: v
            for k, v in data.items()
            if k not in ("state_dict", "config", "optimizer", "scheduler")
        }
    elif (
        isinstance(data, Mapping)
        and data
        and all(isinstance(v, torch.Tensor) for v in data.values())
    ):
        state, config, extra = data, None, {}
    else:
        found = (
            ", ".join(sorted(map(str, data))[:8])
            if isinstance(data, Mapping)
            else type(data).__name__
        )
        raise CheckpointError(
            f"'{path}' is not an official BPBReID checkpoint: no 'state_dict' (found: {found})."
        )
    if config is not None and not isinstance(config, Mapping):
        config = None
    if isinstance(config, Mapping) and not isinstance(config, OfficialConfig):
        config = OfficialConfig(config)
    return OfficialCheckpoint(
        state_dict={k: v for k, v in state.items() if isinstance(v, torch.Tensor)},
        config=config,  # type: ignore[arg-type]
        extra=extra,
    )


def num_classes_of(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Training identities of an official state dict (rows of the global classifier)."""
    for key, value in state_dict.items():
        if key.removeprefix("module.") == "global_identity_classifier.classifier.weight":
            return int(value.shape[0])
    raise CheckpointError(
        "The checkpoint has no 'global_identity_classifier.classifier.weight': it is not a "
        "BPBReID model."
    )


def load_official_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    cfg: Config | None = None,
    strict: bool = True,
) -> tuple[torch.nn.Module, Config, KeyMappingReport]:
    """Build our model from an official checkpoint and load its weights.

    Args:
        path: an official ``.pth`` (e.g. ``bpbreid_occluded_duke_hrnet32_10670.pth``).
        device: where the model goes.
        cfg: our configuration to use instead of the one mapped from the checkpoint.
        strict: raise when a model tensor is missing, an official tensor has no
            counterpart, or a shape differs (False: load what matches and report).

    Returns:
        ``(model, cfg, report)``: the model in eval mode, the configuration, the key report.

    Raises:
        CheckpointError: unreadable or unsafe file, unsupported settings, or (strict) keys
            that do not match.
    """
    from bpbreid.model import build_model

    checkpoint = read_official_checkpoint(path)
    state = {k.removeprefix("module."): v for k, v in checkpoint.state_dict.items()}
    if cfg is None:
        if checkpoint.config is None:
            raise CheckpointError(
                f"'{path}' stores no config: pass cfg= (our Config with the model settings "
                "the checkpoint was trained with)."
            )
        cfg = config_from_official(checkpoint.config, state)
    model = build_model(cfg, num_classes=num_classes_of(state))
    mapped, report = map_official_state_dict(state, model.state_dict())
    if strict and not report.ok:
        raise CheckpointError(
            f"Checkpoint '{path}' does not match the model built from its config:\n"
            f"{report.summary()}\nPass strict=False to load the matching tensors anyway."
        )
    model.load_state_dict(mapped, strict=False)
    model.to(device).eval()
    return model, cfg, report


# --------------------------------------------------------------------------------------
# Download (explicit only)
# --------------------------------------------------------------------------------------

OFFICIAL_MODELS_FOLDER_ID = "1aUjpSXXVGtAh2nzV0RVsCq0tTXuDZWoH"
OFFICIAL_MODELS_URL = f"https://drive.google.com/drive/folders/{OFFICIAL_MODELS_FOLDER_ID}"
OFFICIAL_CHECKPOINTS: dict[str, str] = {
    "market1501": "bpbreid_market1501_hrnet32_10642.pth",
    "dukemtmc": "bpbreid_dukemtmcreid_hrnet32_10669.pth",
    "occluded_duke": "bpbreid_occluded_duke_hrnet32_10670.pth",
    "p_dukemtmc": "bpbreid_p_dukemtmc_hrnet32_10672.pth",
}
CACHE_ENV = "BPBREID_CACHE"


def default_cache_dir() -> Path:
    """Where downloads go: ``$BPBREID_CACHE/official``, else ``~/.cache/bpbreid/official``."""
    root = os.environ.get(CACHE_ENV) or str(Path("~/.cache/bpbreid"))
    return Path(root).expanduser() / "official"


def download_official_checkpoint(
    dataset: str, dest: str | Path | None = None, quiet: bool = False
) -> Path:
    """Download an official BPBReID checkpoint (HRNet-W32) from Google Drive, once.

    A file already at ``<dest>/<name>`` is reused. Needs ``gdown`` (extra ``download``).

    Args:
        dataset: ``market1501``, ``dukemtmc``, ``occluded_duke`` or ``p_dukemtmc``.
        dest: folder for the file (default :func:`default_cache_dir`).
        quiet: no progress bar.

    Returns:
        The path of the checkpoint.

    Raises:
        DownloadError: unknown dataset, gdown missing, offline, or the file not found in
            the Drive folder; the message says how to download it by hand.
    """
    key = dataset.strip().lower().replace("-", "_")
    if key not in OFFICIAL_CHECKPOINTS:
        raise DownloadError(
            f"No official checkpoint for '{dataset}'. Available: {', '.join(OFFICIAL_CHECKPOINTS)}."
        )
    name = OFFICIAL_CHECKPOINTS[key]
    folder = Path(dest).expanduser() if dest is not None else default_cache_dir()
    target = folder / name
    if target.is_file() and target.stat().st_size > 0:
        return target
    manual = (
        f"Download {name} by hand from {OFFICIAL_MODELS_URL} and pass its path "
        f"(e.g. put it at {target})."
    )
    try:
        import gdown
    except ImportError:
        raise DownloadError(
            f"Downloading from Google Drive needs gdown: pip install 'bpbreid[download]'. {manual}"
        ) from None
    try:
        listing = gdown.download_folder(
            id=OFFICIAL_MODELS_FOLDER_ID, skip_download=True, quiet=True
        )
    except Exception as exc:  # network errors come from requests, gdown or urllib
        raise DownloadError(
            f"Cannot list the official models folder {OFFICIAL_MODELS_URL} "
            f"({type(exc).__name__}: {exc}). {manual}"
        ) from None
    files = {PurePosixPath(str(f.path)).name: f.id for f in listing or []}
    if name not in files:
        raise DownloadError(
            f"{name} is not in {OFFICIAL_MODELS_URL} (found: {', '.join(sorted(files)) or 'nothing'}). "
            f"{manual}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        result = gdown.download(id=files[name], output=str(partial), quiet=quiet, resume=True)
    except Exception as exc:  # network errors come from requests, gdown or urllib
        raise DownloadError(
            f"Downloading {name} failed ({type(exc).__name__}: {exc}). Run again to resume. {manual}"
        ) from None
    if result is None or not partial.is_file():
        raise DownloadError(f"Downloading {name} failed (no file written). {manual}")
    os.replace(partial, target)  # never a half-downloaded checkpoint under the final name
    return target
