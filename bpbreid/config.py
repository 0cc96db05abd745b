"""Configuration: nested dataclasses, YAML load/save and dotted overrides.

The schema is a tree of dataclasses (``data``, ``model``, ``loss``, ``train``, ``test``)
validated by OmegaConf's structured configs: YAML files and ``key=value`` overrides are
merged onto the defaults, and an unknown key or a value of the wrong type stops with a
:class:`ConfigError` that names the key and lists the valid ones.

Values that can never work are refused the same way, when the config is read and so before
any command builds a dataset or a model: numbers outside their domain
(:data:`SETTING_BOUNDS`: a zero batch, a negative learning rate, a probability above 1),
names the code does not implement (:data:`SETTING_CHOICES`: ``test.dist_metric=foo``) and
settings that contradict each other (``parts_num`` against the grouping's number of parts).

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
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf  # noqa: F401  (MISSING re-exported)
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from bpbreid.errors import ConfigError  # re-exported: bpbreid.config.ConfigError
from bpbreid.parts import (  # noqa: F401  (re-exported: the names lived here first)
    DEFAULT_MASKS_DIR,
    DEFAULT_PNG_FOLDER,
    EMBEDDING_ALIASES,
    EMBEDDINGS,
    LOSS_EMBEDDINGS,
    PART_GROUPINGS,
    canonical_embedding,
)

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


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
    # How 're' draws and fills its box (docs/fidelity.md): area_ratio (area fraction and aspect
    # ratio as Zhong et al., mean-colour fill) | official (one box, each side uniform in 15-65 %
    # of the image side, drawn after normalization with the value (0.485, 0.456, 0.406)).
    erasing: str = "area_ratio"
    norm_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    norm_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    workers: int = 4
    # How training batches are made: reference (DataLoader, JPEG decode + albumentations per
    # image) | tensor (decode once, augment whole batches on the training device; see
    # bpbreid.data.pipeline). Evaluation always reads as the reference does.
    pipeline: str = "reference"
    device_cache_mb: float = 4096  # tensor: largest decoded cache kept on a GPU (else host memory)
    cache_dir: str | None = None  # tensor: memory-map the decoded images there; null: in memory
    extra_query_sets: list[str] = field(default_factory=list)  # e.g. ["query_holistic"]
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class MasksConfig:
    """Parsing labels and how they become K part targets (official ``model.bpbreid.masks``)."""

    type: str = "disk"  # labels read from disk (official)
    # Which labels: pifpaf (official .npy files of 36 PifPaf fields under masks/<dir>/<split>/)
    # | parsing_png (LIP/SCHP human-parsing class maps, <split>_parsing_pgt/<stem>.png).
    source: str = "pifpaf"
    dir: str = DEFAULT_MASKS_DIR  # pifpaf: official label folder name under <dataset>/masks/
    # parsing_png: the label folder of a split, relative to the dataset folder ({split} is the
    # split's image folder, e.g. bounding_box_train).
    png_folder: str = DEFAULT_PNG_FOLDER
    # A training image without a label file: error (stop, listing them) | drop (train without
    # those images, with a warning saying how many).
    missing: str = "error"
    preprocess: str = "eight"  # part grouping: one | two | four | five | five_v | eight | ...
    parts_num: int = 8  # K, must match the grouping
    softmax_weight: float = 15.0  # official: targets = softmax(masks * 15) over K+1
    background_computation_strategy: str = "threshold"  # threshold | diff_from_max
    mask_filtering_threshold: float = 0.5  # official background threshold
    soft_targets: bool = False  # pixel loss on soft targets instead of argmax labels
    # How labels become pixel-loss targets (docs/fidelity.md): area (grouped fields resized
    # bilinearly, area-averaged to 1/4, then the background rule; area-averaged again to the
    # logits) | official (nearest to the image size, background rule at full size, nearest to
    # 1/4, bilinear with aligned corners to the logits, then argmax).
    targets: str = "area"


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


# The GiLt table and its ablations: embedding -> (identity weight, triplet weight).
# `loss.preset` picks one instead of `loss.weights`; "gilt" is the paper's default (global
# identity on global, foreground and concat_parts; local triplet on the parts).
LOSS_PRESETS: dict[str, dict[str, tuple[float, float]]] = {
    "gilt": {
        "global": (1.0, 0.0),
        "foreground": (1.0, 0.0),
        "concat_parts": (1.0, 0.0),
        "parts": (0.0, 1.0),
    },
    "global_only": {"global": (1.0, 1.0)},
    "parts_only": {"parts": (1.0, 1.0)},
    "id_everywhere": {
        "global": (1.0, 0.0),
        "foreground": (1.0, 0.0),
        "concat_parts": (1.0, 0.0),
        "parts": (1.0, 0.0),
    },
    "triplet_everywhere": {
        "global": (0.0, 1.0),
        "foreground": (0.0, 1.0),
        "concat_parts": (0.0, 1.0),
        "parts": (0.0, 1.0),
    },
}


def _default_loss_weights() -> dict[str, EmbeddingLossWeights]:
    # GiLt as in the paper (the "gilt" preset).
    return {
        name: EmbeddingLossWeights(id=id_weight, tr=triplet_weight)
        for name, (id_weight, triplet_weight) in LOSS_PRESETS["gilt"].items()
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
    # What the learning-rate schedule advances with: step (a smooth warmup, every optimizer
    # step) | epoch (official: the rate changes only between epochs).
    warmup_unit: str = "step"
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
# Value domains
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bounds:
    """The values a numeric setting can take, checked when a config is loaded.

    A bad value is refused before a dataset, model or run folder is built: a zero batch or
    a negative learning rate would otherwise fail deep inside training, or worse, run to the
    end and save a model that means nothing. ``meaning`` says what the setting is, in the
    error message.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: ``value > low``; False: ``value >= low``
    high_open: bool = False  # True: ``value < high``; False: ``value <= high``
    nullable: bool = False  # ``null`` (None) is a valid "not set"
    meaning: str = ""

    def admits(self, value: Any) -> bool:
        """Whether ``value`` (a number, or None when ``nullable``) lies in the range."""
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def describe(self) -> str:
        """``'>= 1'``, ``'> 0'``, ``'in [0, 1)'``; ``'... or null'`` when None is allowed."""
        if self.low is not None and self.high is not None:
            text = (
                f"in {'(' if self.low_open else '['}{_number(self.low)}, "
                f"{_number(self.high)}{')' if self.high_open else ']'}"
            )
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {_number(self.low)}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {_number(self.high)}"
        else:
            text = "a finite number"
        return f"{text} or null" if self.nullable else text


@dataclass(frozen=True)
class Choices:
    """The names a string setting can take (each item of a list setting, for lists)."""

    values: tuple[str, ...]
    meaning: str = ""
    ignore_case: bool = False  # the code that reads it lower-cases the value first
    nullable: bool = False

    def admits(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        name = str(value).lower() if self.ignore_case else value
        return name in self.values

    def describe(self) -> str:
        text = f"one of {', '.join(self.values)}"
        return f"{text}, or null" if self.nullable else text


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _at_least(low: float, meaning: str, nullable: bool = False) -> Bounds:
    return Bounds(low=low, meaning=meaning, nullable=nullable)


def _positive(meaning: str) -> Bounds:
    return Bounds(low=0, low_open=True, meaning=meaning)


def _fraction(meaning: str, high_open: bool = False) -> Bounds:
    return Bounds(low=0, high=1, high_open=high_open, meaning=meaning)


# Numeric settings and their domains. A list setting (train.stepsize, data.norm_std) has
# the domain checked on each item. Loss weights (loss.weights.<embedding>.id/tr) are checked
# by LOSS_WEIGHT_BOUNDS, their keys being the embedding names of the table.
SETTING_BOUNDS: dict[str, Bounds] = {
    "data.height": _at_least(1, "image height in pixels fed to the network"),
    "data.width": _at_least(1, "image width in pixels fed to the network"),
    "data.norm_mean": Bounds(meaning="per-channel mean subtracted from the images"),
    "data.norm_std": _positive("per-channel standard deviation the images are divided by"),
    "data.workers": _at_least(0, "DataLoader worker processes; 0 loads in the main process"),
    "data.device_cache_mb": _at_least(
        0, "MiB of decoded training images the tensor pipeline keeps on a GPU at most"
    ),
    "data.synthetic.seed": _at_least(0, "seed of the synthetic dataset"),
    "data.synthetic.height": _at_least(1, "synthetic image height; null: the preset's", True),
    "data.synthetic.width": _at_least(1, "synthetic image width; null: the preset's", True),
    "model.bpbreid.last_stride": Bounds(low=1, high=2, meaning="stride of the last stage"),
    "model.bpbreid.dim_reduce_output": _at_least(
        0, "embedding size after dimension reduction; 0 keeps the backbone's channels"
    ),
    "model.bpbreid.masks.parts_num": _at_least(1, "K, the number of body parts"),
    "model.bpbreid.masks.softmax_weight": Bounds(
        meaning="sharpness of the part-target softmax; <= 0 divides the maps by their sum"
    ),
    "model.bpbreid.masks.mask_filtering_threshold": _fraction(
        "label confidence above which a pixel belongs to a part"
    ),
    "loss.pixel_weight": _at_least(0, "weight of the part-attention (pixel) loss"),
    "loss.label_smoothing": _fraction("label smoothing of the identity losses", high_open=True),
    "loss.triplet_margin": _at_least(0, "margin of the triplet losses"),
    "train.seed": _at_least(0, "random seed of the run"),
    "train.max_epoch": _at_least(1, "epochs of the run"),
    "train.max_steps": _at_least(
        1, "optimizer steps of the run; null: no step limit, train.max_epoch ends the run", True
    ),
    "train.batch_size": _at_least(1, "training images per batch, P identities x K images"),
    "train.num_instances": _at_least(1, "K, images per identity in a training batch"),
    "train.lr": _positive("learning rate"),
    "train.weight_decay": _at_least(0, "weight decay of the optimizer"),
    "train.stepsize": _at_least(1, "epochs at which multi_step decays the learning rate"),
    "train.gamma": Bounds(low=0, high=1, low_open=True, meaning="multi_step decay factor"),
    "train.warmup_epochs": _at_least(0, "epochs of linear learning-rate warmup"),
    "train.eval_freq": _at_least(0, "epochs between evaluations; 0: only at the end"),
    "train.validation_ids": _at_least(0, "training identities held out for validation"),
    "train.threads": _at_least(1, "intra-op CPU threads; null: the default policy", True),
    "train.save_every": _at_least(
        1, "epochs between checkpoints (a large value saves only at the end)"
    ),
    "test.batch_size": _at_least(1, "images per evaluation batch"),
    "test.visrank_topk": _at_least(1, "gallery ranks shown per ranking figure"),
    "test.visrank_count": _at_least(1, "ranking figures saved"),
}
# List settings with a fixed length: one value per RGB channel.
SETTING_LENGTHS: dict[str, int] = {"data.norm_mean": 3, "data.norm_std": 3}
LOSS_WEIGHT_BOUNDS: dict[str, Bounds] = {
    "id": _at_least(0, "weight of the identity loss on this embedding"),
    "tr": _at_least(0, "weight of the triplet loss on this embedding"),
}

# Body-part groupings (model.bpbreid.masks.preprocess) and their number of parts K, so that
# a K that does not match the grouping is refused when the config is read. The groupings
# themselves (fields per part) are defined in bpbreid.parts.
PART_GROUPING_SIZES: dict[str, int] = {name: len(parts) for name, parts in PART_GROUPINGS.items()}

# String settings and their valid names. The modules that implement them (metrics, optim,
# losses, model, data) hold the same names; the tests keep the two in step. Checked here so
# that a typo is refused when the config is read, not after the dataset and model are built.
SETTING_CHOICES: dict[str, Choices] = {
    "data.transforms": Choices(
        tuple("rc re flip cj random_crop random_erase rf random_flip color_jitter".split()),
        "training augmentations: rc, re, flip, cj or an official long name",
        ignore_case=True,
    ),
    "data.erasing": Choices(
        ("area_ratio", "official"), "how random erasing draws and fills its box"
    ),
    "data.pipeline": Choices(
        ("reference", "tensor"),
        "how training batches are made: per-image DataLoader, or decode once + batch tensor ops",
    ),
    "model.name": Choices(("bpbreid",), "the model family"),
    "model.backbone": Choices(
        ("resnet50", "resnet50_ibn_a", "hrnet_w32", "resnet18", "resnet18_half"), "backbone"
    ),
    "model.bpbreid.part_mode": Choices(
        ("attention", "stripes", "global", "external"), "how part masks are obtained"
    ),
    "model.bpbreid.head": Choices(("1x1", "3x3_stride4"), "part-attention head"),
    "model.bpbreid.test_use_target_segmentation": Choices(
        ("none", "soft", "hard"), "external masks at test time"
    ),
    "model.bpbreid.foreground_pooling": Choices(("gwap", "masked_average"), "foreground pooling"),
    "model.bpbreid.masks.preprocess": Choices(tuple(PART_GROUPING_SIZES), "body-part grouping"),
    "model.bpbreid.masks.source": Choices(
        ("pifpaf", "parsing_png"), "label source: PifPaf fields (.npy) or human-parsing PNGs"
    ),
    "model.bpbreid.masks.missing": Choices(
        ("error", "drop"), "what a training image without a label file does"
    ),
    "model.bpbreid.masks.targets": Choices(
        ("area", "official"), "how the labels are resized into pixel-loss targets"
    ),
    "model.bpbreid.masks.background_computation_strategy": Choices(
        ("threshold", "diff_from_max", "sum"), "how the background map is computed"
    ),
    "loss.preset": Choices(
        tuple(LOSS_PRESETS),
        "GiLt ablation preset; null: the loss.weights table",
        nullable=True,
    ),
    "loss.part_triplet": Choices(("average", "max", "min"), "how part distances are combined"),
    "train.optim": Choices(("adam", "adamw", "sgd"), "optimizer", ignore_case=True),
    "train.lr_scheduler": Choices(("multi_step", "cosine", "constant"), "learning-rate schedule"),
    "train.warmup_unit": Choices(
        ("step", "epoch"), "whether the learning rate changes every step or every epoch"
    ),
    "train.amp": Choices(("auto", "bf16", "fp16", "off"), "mixed precision", ignore_case=True),
    "train.loggers": Choices(
        ("console", "csv", "tensorboard", "wandb"), "training loggers", ignore_case=True
    ),
    "test.dist_metric": Choices(("euclidean", "cosine"), "query-gallery distance"),
}


def _lookup(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _domain_problems(cfg: Config, keys: Iterable[str] | None = None) -> list[str]:
    """One line per setting outside its domain (empty when every value is valid).

    Args:
        cfg: the configuration.
        keys: only the settings at or under these dotted keys (e.g. the keys of some
            overrides); None: every setting.
    """
    checks: list[tuple[str, str, Any, Bounds | Choices]] = []  # (key, shown key, value, rule)
    for key, rule in (*SETTING_BOUNDS.items(), *SETTING_CHOICES.items()):
        value = _lookup(cfg, key)
        if isinstance(value, list | tuple):
            checks += [(key, f"{key}[{i}]", item, rule) for i, item in enumerate(value)]
        else:
            checks.append((key, key, value, rule))
    for name, weights in cfg.loss.weights.items():
        for term, rule in LOSS_WEIGHT_BOUNDS.items():
            key = f"loss.weights.{name}.{term}"
            checks.append((key, key, getattr(weights, term), rule))
    wanted = None if keys is None else tuple(keys)

    def selected(key: str) -> bool:
        return wanted is None or any(key == k or key.startswith(f"{k}.") for k in wanted)

    problems = []
    for key, length in SETTING_LENGTHS.items():
        values = _lookup(cfg, key)
        if selected(key) and len(values) != length:
            problems.append(f"{key}={values} is invalid: it must hold {length} values.")
    for key, shown_key, value, rule in checks:
        if selected(key) and not rule.admits(value):
            shown = "null" if value is None else repr(value)
            finite = isinstance(value, float) and not math.isfinite(value)
            problems.append(
                f"{shown_key}={shown} is invalid: it must be {'finite and ' if finite else ''}"
                f"{rule.describe()} ({rule.meaning})."
            )
    return problems


def _cross_field_problems(cfg: Config) -> list[str]:
    """Settings valid one by one but not together (checked once each is in its domain)."""
    problems = []
    train, masks = cfg.train, cfg.model.bpbreid.masks
    if train.batch_size % train.num_instances != 0:
        problems.append(
            f"train.batch_size={train.batch_size} must be a multiple of "
            f"train.num_instances={train.num_instances} (batches are P identities x K images)."
        )
    k = PART_GROUPING_SIZES[masks.preprocess]
    if masks.parts_num != k:
        same_k = [g for g, n in PART_GROUPING_SIZES.items() if n == masks.parts_num]
        hint = (
            f", or a grouping with {masks.parts_num} parts: {', '.join(same_k)}" if same_k else ""
        )
        problems.append(
            f"model.bpbreid.masks.parts_num={masks.parts_num} does not match "
            f"model.bpbreid.masks.preprocess='{masks.preprocess}', which has {k} parts: "
            f"set model.bpbreid.masks.parts_num={k}{hint}."
        )
    return problems


def _refuse(problems: list[str]) -> None:
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(
            f"{len(problems)} invalid settings:\n" + "\n".join(f"  {p}" for p in problems)
        )


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
    """Normalizes names, then refuses every value outside its domain and every cross-field
    mismatch, all in one message, so that a run never starts with settings that cannot work.
    """
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
    # Cross-field checks divide by and index with values that must be valid first.
    _refuse(_domain_problems(cfg))
    _refuse(_cross_field_problems(cfg))


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"Override '{item}' is not of the form key=value (e.g. train.lr=1e-3).")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"Override '{item}' has an empty key.")
    if raw.strip() == "":
        return key, ""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"Override '{item}': the value of {key} is not valid YAML ({problem}). "
            "Write lists as [a,b] and quote a value that YAML would misread, "
            f"e.g. \"{key}='a: b'\"."
        ) from None
    return key, value


def _merge_overrides(node: DictConfig, overrides: Iterable[str]) -> list[str]:
    """Apply ``key=value`` overrides to ``node`` in place; returns their dotted keys."""
    keys = []
    for item in overrides:
        key, value = _parse_override(item)
        _check_unknown(_nest(key, value), Config, "", f"override '{item}'")
        try:
            if key == "loss.weights":  # replaces the table (see _without_default_loss_table)
                node.loss.weights = {}
            OmegaConf.update(node, key, value, merge=True)
        except OmegaConfBaseException as exc:
            raise _describe(exc, f"override '{item}'") from None
        keys.append(key)
    return keys


def apply_overrides(cfg: Config, overrides: list[str] | None, source: str = "overrides") -> Config:
    """Return a copy of ``cfg`` with dotted ``key=value`` overrides applied (values in YAML)."""
    node = OmegaConf.structured(cfg)
    _merge_overrides(node, overrides or [])
    try:
        return _to_config(node)
    except OmegaConfBaseException as exc:
        raise _describe(exc, source) from None


def check_overrides(overrides: list[str] | None) -> None:
    """Refuse malformed overrides, unknown keys and values outside their domain at once.

    Commands whose base configuration is stored in a checkpoint (eval without ``--config``)
    can only apply their overrides once the checkpoint is read; checking them first makes
    a typo fail before torch is imported. The cross-field checks (``batch_size`` a multiple
    of ``num_instances``, ``parts_num`` against the grouping) need the base configuration
    and run when :func:`apply_overrides` applies the overrides to it.

    Raises:
        ConfigError: the first malformed override or unknown key; else every value of the
            overrides outside its domain.
    """
    node = _structured()
    keys = _merge_overrides(node, overrides or [])
    try:
        cfg = OmegaConf.to_object(node)
    except OmegaConfBaseException as exc:
        raise _describe(exc, "overrides") from None
    assert isinstance(cfg, Config)
    _refuse(_domain_problems(cfg, keys))


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


def _read_yaml(path: Path) -> Any:
    """The YAML content of a config file; anything unreadable is a :class:`ConfigError`."""
    if path.is_dir():
        raise ConfigError(
            f"Config '{path}' is a directory: give a YAML file or a bundled config name "
            "(python -m bpbreid config --list)."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Config file {path} is not UTF-8 text (byte {exc.start}): give a YAML config file."
        ) from None
    except OSError as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc.strerror or exc}.") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, merged with a YAML file (if given), then with dotted overrides."""
    node = _structured()
    source = "defaults"
    if path is not None:
        p = resolve_config_path(path)
        source = str(p)
        data = _read_yaml(p)
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
