"""Configuration: nested dataclasses, YAML load/save and dotted overrides.

The schema is a tree of dataclasses (``data``, ``model``, ``loss``, ``train``, ``test``)
validated by OmegaConf's structured configs: YAML files and ``key=value`` overrides are
merged onto the defaults, and an unknown key or a value of the wrong type stops with a
:class:`ConfigError` that names the key and lists the valid ones.

Where the official BPBReID code has a name the field knows, the same name is used
(``model.bpbreid.masks.preprocess``, ``parts_num``, ``test_embeddings``,
``dim_reduce_output``, ``mask_filtering_training``...).

Example::

    from bpbreid.config import load_config
    cfg = load_config("bpbreid/configs/synthetic_cpu.yaml", ["model.bpbreid.masks.parts_num=4"])
    cfg.model.backbone  # 'resnet18_half'
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf  # noqa: F401  (MISSING re-exported)
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""


# Readable embedding names, and the official BPBReID names accepted as aliases.
EMBEDDINGS: tuple[str, ...] = ("global", "foreground", "background", "concat_parts", "parts")
LOSS_EMBEDDINGS: tuple[str, ...] = ("global", "foreground", "background", "concat_parts", "parts")
EMBEDDING_ALIASES: dict[str, str] = {
    "globl": "global",
    "foreg": "foreground",
    "backg": "background",
    "conct": "concat_parts",
}


def canonical_embedding(name: str) -> str:
    """``'bn_foreg'`` -> ``'bn_foreground'``; readable names pass through unchanged."""
    prefix = "bn_" if name.startswith("bn_") else ""
    base = name.removeprefix("bn_")
    return prefix + EMBEDDING_ALIASES.get(base, base)


# --------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------


@dataclass
class SyntheticConfig:
    """The procedural occluded-pedestrian dataset (``data.name=synthetic``)."""

    preset: str = "small"  # tiny (tests) | small (notebooks) | default (demo)
    seed: int = 0
    height: int | None = None  # image size written to disk; None: the preset's size
    width: int | None = None


@dataclass
class DataConfig:
    """Where the images and parsing labels are, and how they are augmented."""

    name: str = "synthetic"  # market1501 | dukemtmc | occluded_duke | occluded_reid | p_dukemtmc | synthetic
    root: str = "data"  # folder holding the dataset folders; relative paths from the repo root
    height: int = 256  # paper: 384 (HRNet-W32); ResNet configs 256
    width: int = 128
    transforms: list[str] = field(default_factory=lambda: ["rc", "re"])  # official default
    norm_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    norm_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    workers: int = 4
    extra_query_sets: list[str] = field(default_factory=list)  # e.g. ["query_holistic"]
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class MasksConfig:
    """Parsing labels and how they become K part targets (official ``model.bpbreid.masks``)."""

    type: str = "disk"  # labels read from disk (official)
    dir: str = "pifpaf_maskrcnn_filtering"  # official label folder name
    preprocess: str = "eight"  # part grouping: one | two | four | five | five_v | eight | ...
    parts_num: int = 8  # K, must match the grouping
    softmax_weight: float = 15.0  # official: targets = softmax(masks * 15) over K+1
    background_computation_strategy: str = "threshold"  # threshold | diff_from_max
    mask_filtering_threshold: float = 0.5  # official background threshold
    soft_targets: bool = False  # pixel loss on soft targets instead of argmax labels


@dataclass
class BPBReIDConfig:
    """Method settings (official ``model.bpbreid``)."""

    part_mode: str = "attention"  # attention | stripes (PCB) | global (BoT) | external
    head: str = "1x1"  # 1x1 (paper: BN + 1x1 conv on the last map) | 3x3_stride4
    last_stride: int = 1
    dim_reduce_output: int = 512
    test_embeddings: list[str] = field(default_factory=lambda: ["bn_foreground", "parts"])
    training_binary_visibility_score: bool = True
    testing_binary_visibility_score: bool = True
    test_use_target_segmentation: str = "none"  # external masks at test time: none | soft | hard
    shared_parts_id_classifier: bool = False
    foreground_pooling: str = "gwap"  # gwap (DESIGN) | masked_average (official code's pooling)
    pool_at_mask_resolution: bool = True  # 3x3_stride4 head: upsample features to the masks
    masks: MasksConfig = field(default_factory=MasksConfig)


@dataclass
class ModelConfig:
    name: str = "bpbreid"
    backbone: str = "resnet50"  # resnet50 | resnet50_ibn_a | hrnet_w32 | resnet18_half
    pretrained: bool = False  # ImageNet weights, only on request (needs a download or a file)
    pretrained_path: str | None = None  # a local weights file for the backbone
    bpbreid: BPBReIDConfig = field(default_factory=BPBReIDConfig)


@dataclass
class EmbeddingLossWeights:
    """Weights of the identity and triplet losses on one embedding."""

    id: float = 0.0
    tr: float = 0.0


def _default_loss_weights() -> dict[str, EmbeddingLossWeights]:
    # GiLt as in the paper: identity on global, foreground, concat_parts; triplet on parts.
    return {
        "global": EmbeddingLossWeights(id=1.0, tr=0.0),
        "foreground": EmbeddingLossWeights(id=1.0, tr=0.0),
        "concat_parts": EmbeddingLossWeights(id=1.0, tr=0.0),
        "parts": EmbeddingLossWeights(id=0.0, tr=1.0),
    }


@dataclass
class LossConfig:
    """GiLt loss (official ``loss.part_based``)."""

    name: str = "part_based"
    preset: str | None = None  # an ablation preset (see bpbreid.losses) instead of `weights`
    weights: dict[str, EmbeddingLossWeights] = field(default_factory=_default_loss_weights)
    pixel_weight: float = 0.35  # official loss.part_based.weights.pixls.ce
    label_smoothing: float = 0.1
    triplet_margin: float = 0.3
    triplet_soft_margin: bool = False
    part_triplet: str = "average"  # average (paper) | max | min
    mask_filtering_training: bool = False  # use visibility in the training losses (paper: False)


@dataclass
class TrainConfig:
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:1
    max_epoch: int = 120
    max_steps: int | None = None  # stop after this many steps (CPU configs count steps)
    batch_size: int = 64  # P x K with K = num_instances
    num_instances: int = 4
    optim: str = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    lr_scheduler: str = "multi_step"  # multi_step | cosine
    stepsize: list[int] = field(default_factory=lambda: [40, 70])
    gamma: float = 0.1
    warmup_epochs: int = 10
    eval_freq: int = 0  # evaluate every N epochs; 0 = only at the end
    test_at_end: bool = True  # evaluate the final model on the test sets
    validation_ids: int = 0  # carve this many training ids into a validation split
    amp: str = "auto"  # auto (bf16/fp16 on CUDA, off on CPU) | bf16 | fp16 | off
    channels_last: bool | None = None  # None: on CUDA only
    compile: bool = False
    deterministic: bool = False
    threads: int | None = None  # intra-op threads; None: the harness's policy
    output_dir: str = "outputs/train"
    save_every: int = 1  # epochs between checkpoints; models are always saved at the end
    loggers: list[str] = field(default_factory=lambda: ["console", "csv"])


@dataclass
class TestConfig:
    batch_size: int = 128
    dist_metric: str = "euclidean"  # euclidean | cosine
    normalize_feature: bool = True
    flip: bool = False  # flip test-time augmentation
    rerank: bool = False  # k-reciprocal re-ranking
    visrank: bool = False  # save ranking figures after evaluation
    visrank_topk: int = 10
    visrank_count: int = 10


@dataclass
class Config:
    """The whole configuration. ``Config()`` gives the defaults (ResNet-50, paper losses)."""

    name: str = "bpbreid"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)


# --------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------


def valid_keys(node: Any) -> list[str]:
    """The field names of a dataclass (or dataclass instance)."""
    return [f.name for f in dataclasses.fields(node)]


def _schema_at(dotted: str) -> Any:
    """The dataclass type that holds the last component of ``dotted``, or None."""
    node: Any = Config
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not dataclasses.is_dataclass(node):
            return None
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            return node
        node = _field_type(node, part)
    return node if dataclasses.is_dataclass(node) else None


def _field_type(owner: Any, name: str) -> Any:
    default = getattr(owner(), name)
    return type(default) if dataclasses.is_dataclass(default) else None


def _describe(exc: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or ""
    if isinstance(exc, ConfigKeyError) or "not in" in str(exc):
        owner = _schema_at(key) if key else None
        hint = f" Valid keys here: {', '.join(valid_keys(owner))}." if owner else ""
        return ConfigError(f"Unknown config key '{key}' in {source}.{hint}")
    if isinstance(exc, ValidationError):
        msg = str(exc).splitlines()[0]
        return ConfigError(f"Invalid value for config key '{key}' in {source}: {msg}")
    return ConfigError(f"Invalid configuration in {source}: {str(exc).splitlines()[0]}")


def _check_unknown(tree: Any, schema: Any, prefix: str, source: str) -> None:
    """Walk a plain dict and fail on the first key that the schema does not have."""
    if not isinstance(tree, dict) or not dataclasses.is_dataclass(schema):
        return
    names = valid_keys(schema)
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(
                f"Unknown config key '{full}' in {source}. "
                f"Valid keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(names)}."
            )
        sub = getattr(schema(), key)
        if dataclasses.is_dataclass(sub):
            _check_unknown(value, type(sub), full + ".", source)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def _structured() -> DictConfig:
    return OmegaConf.structured(Config)


def _without_default_loss_table(data: dict) -> DictConfig:
    """The defaults, with an empty loss table when ``data`` brings its own.

    A loss table is a whole GiLt recipe: merged onto the default table it would silently
    keep the default terms the recipe left out.
    """
    node = _structured()
    if isinstance(data.get("loss"), dict) and "weights" in data["loss"]:
        node.loss.weights = {}
    return node


def _to_config(node: DictConfig) -> Config:
    obj = OmegaConf.to_object(node)
    assert isinstance(obj, Config)
    _check_semantics(obj)
    return obj


def _check_semantics(cfg: Config) -> None:
    """Cross-field checks that the type system cannot express; normalizes embedding names."""
    bp = cfg.model.bpbreid
    # YAML reads a bare `off`/`no` as false; the AMP switch means "off" then.
    if cfg.train.amp.lower() in ("false", "no", "none", "0"):
        cfg.train.amp = "off"
    bp.test_embeddings = [canonical_embedding(name) for name in bp.test_embeddings]
    weights = {}
    for name, value in cfg.loss.weights.items():
        canonical = canonical_embedding(name)
        if canonical not in LOSS_EMBEDDINGS:
            raise ConfigError(
                f"Unknown embedding '{name}' in loss.weights. "
                f"Valid names: {', '.join(LOSS_EMBEDDINGS)} (official aliases: globl, foreg, conct)."
            )
        weights[canonical] = value
    cfg.loss.weights = weights
    for name in bp.test_embeddings:
        if name.removeprefix("bn_") not in EMBEDDINGS:
            valid = ", ".join(EMBEDDINGS + tuple(f"bn_{e}" for e in EMBEDDINGS))
            raise ConfigError(
                f"Unknown test embedding '{name}' in model.bpbreid.test_embeddings. Valid: {valid}."
            )
    if cfg.train.batch_size % cfg.train.num_instances != 0:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} must be a multiple of "
            f"train.num_instances={cfg.train.num_instances} (batches are P identities x K images)."
        )


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"Override '{item}' is not of the form key=value (e.g. train.lr=1e-3).")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"Override '{item}' has an empty key.")
    value = yaml.safe_load(raw) if raw.strip() != "" else ""
    return key, value


def apply_overrides(cfg: Config, overrides: list[str] | None, source: str = "overrides") -> Config:
    """Return a copy of ``cfg`` with dotted ``key=value`` overrides applied (values in YAML)."""
    node = OmegaConf.structured(cfg)
    for item in overrides or []:
        key, value = _parse_override(item)
        _check_unknown(_nest(key, value), Config, "", f"override '{item}'")
        try:
            if key == "loss.weights":  # replaces the table (see _without_default_loss_table)
                node.loss.weights = {}
            OmegaConf.update(node, key, value, merge=True)
        except OmegaConfBaseException as exc:
            raise _describe(exc, f"override '{item}'") from None
    try:
        return _to_config(node)
    except OmegaConfBaseException as exc:
        raise _describe(exc, source) from None


def _nest(dotted: str, value: Any) -> dict:
    out: dict = {}
    cur = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = value
    return out


def resolve_config_path(path: str | Path) -> Path:
    """A YAML path as given, or the name of a bundled config (``synthetic_cpu``)."""
    p = Path(path)
    if p.exists():
        return p
    for candidate in (CONFIGS_DIR / p, CONFIGS_DIR / f"{p}.yaml"):
        if candidate.exists():
            return candidate
    bundled = sorted(q.stem for q in CONFIGS_DIR.glob("*.yaml"))
    raise ConfigError(
        f"Config file '{path}' not found (looked at {p.resolve()} and in {CONFIGS_DIR}). "
        f"Bundled configs: {', '.join(bundled) or 'none'}."
    )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, merged with a YAML file (if given), then with dotted overrides."""
    node = _structured()
    source = "defaults"
    if path is not None:
        p = resolve_config_path(path)
        source = str(p)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"{p} must hold a mapping of config sections, got {type(data).__name__}."
            )
        _check_unknown(data, Config, "", source)
        try:
            node = OmegaConf.merge(_without_default_loss_table(data), data)
        except OmegaConfBaseException as exc:
            raise _describe(exc, source) from None
    try:
        cfg = _to_config(node)
    except OmegaConfBaseException as exc:
        raise _describe(exc, source) from None
    return apply_overrides(cfg, overrides, source)


def config_to_dict(cfg: Config) -> dict:
    """A plain nested dict (YAML/JSON-serializable) of the configuration."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def config_from_dict(data: dict) -> Config:
    """Rebuild a :class:`Config` from :func:`config_to_dict` output (e.g. from a checkpoint)."""
    _check_unknown(data, Config, "", "dict")
    try:
        return _to_config(OmegaConf.merge(_without_default_loss_table(data), data))
    except OmegaConfBaseException as exc:
        raise _describe(exc, "dict") from None


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write ``cfg`` as YAML; ``load_config(path)`` gives it back."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return p


def config_diff(cfg: Config, base: Config | None = None) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose value differs from ``base`` (defaults): ``{key: (base, value)}``."""
    a = _flatten(config_to_dict(base or Config()))
    b = _flatten(config_to_dict(cfg))
    return {k: (a.get(k), v) for k, v in b.items() if a.get(k) != v}


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def copy_config(cfg: Config) -> Config:
    return copy.deepcopy(cfg)
