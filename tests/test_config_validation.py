"""Settings that can never work are refused when the config is read, naming the key.

Every command reads its configuration through ``load_config``/``apply_overrides``, so a bad
value stops with a ``ConfigError`` (exit code 2 on the command line) before a dataset,
model or run folder is built, instead of a traceback mid-run or a meaningless model.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from bpbreid.__main__ import main
from bpbreid.config import (
    PART_GROUPING_SIZES,
    SETTING_CHOICES,
    ConfigError,
    check_overrides,
    load_config,
)

# (override, the dotted key the message must name)
INVALID: list[tuple[str, str]] = [
    # batches and image sizes
    ("train.num_instances=0", "train.num_instances"),
    ("train.batch_size=-4", "train.batch_size"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.batch_size=30", "train.batch_size"),  # not a multiple of num_instances=4
    ("test.batch_size=0", "test.batch_size"),
    ("data.height=0", "data.height"),
    ("data.width=-5", "data.width"),
    ("data.workers=-1", "data.workers"),
    ("data.norm_std=[0.2,0.0,0.2]", "data.norm_std"),
    ("data.norm_mean=[0.5,0.5]", "data.norm_mean"),
    ("data.transforms=[rc,zoom]", "data.transforms"),
    ("data.synthetic.seed=-1", "data.synthetic.seed"),
    ("data.synthetic.height=0", "data.synthetic.height"),
    # optimisation
    ("train.lr=-1", "train.lr"),
    ("train.lr=0", "train.lr"),
    ("train.lr=.nan", "train.lr"),
    ("train.lr=.inf", "train.lr"),
    ("train.lr=[1,", "train.lr"),  # not YAML
    ("train.max_steps=-1", "train.max_steps"),
    ("train.max_steps=0", "train.max_steps"),  # would save an untrained model
    ("train.max_epoch=0", "train.max_epoch"),
    ("train.weight_decay=-0.1", "train.weight_decay"),
    ("train.warmup_epochs=-1", "train.warmup_epochs"),
    ("train.stepsize=[40,-1]", "train.stepsize"),
    ("train.gamma=0", "train.gamma"),
    ("train.gamma=1.5", "train.gamma"),
    ("train.eval_freq=-1", "train.eval_freq"),
    ("train.validation_ids=-1", "train.validation_ids"),
    ("train.save_every=0", "train.save_every"),
    ("train.threads=0", "train.threads"),
    ("train.seed=-1", "train.seed"),
    ("train.optim=sgdd", "train.optim"),
    ("train.lr_scheduler=step", "train.lr_scheduler"),
    ("train.amp=fp8", "train.amp"),
    ("train.loggers=[console,carrier_pigeon]", "train.loggers"),
    # model and parts
    ("model.backbone=osnet", "model.backbone"),
    ("model.bpbreid.part_mode=pcb", "model.bpbreid.part_mode"),
    ("model.bpbreid.head=5x5", "model.bpbreid.head"),
    ("model.bpbreid.last_stride=3", "model.bpbreid.last_stride"),
    ("model.bpbreid.dim_reduce_output=-1", "model.bpbreid.dim_reduce_output"),
    ("model.bpbreid.masks.parts_num=0", "model.bpbreid.masks.parts_num"),
    ("model.bpbreid.masks.parts_num=5", "model.bpbreid.masks.parts_num"),  # 'four' has 4
    ("model.bpbreid.masks.preprocess=nine", "model.bpbreid.masks.preprocess"),
    ("model.bpbreid.masks.softmax_weight=.nan", "model.bpbreid.masks.softmax_weight"),
    ("model.bpbreid.masks.mask_filtering_threshold=1.5", "mask_filtering_threshold"),
    ("model.bpbreid.masks.background_computation_strategy=avg", "background_computation"),
    # losses
    ("loss.label_smoothing=1.0", "loss.label_smoothing"),
    ("loss.label_smoothing=-0.1", "loss.label_smoothing"),
    ("loss.triplet_margin=-0.3", "loss.triplet_margin"),
    ("loss.pixel_weight=-1", "loss.pixel_weight"),
    ("loss.weights.parts.tr=-1", "loss.weights.parts.tr"),
    ("loss.part_triplet=median", "loss.part_triplet"),
    ("loss.preset=nope", "loss.preset"),
    # evaluation
    ("test.dist_metric=foo", "test.dist_metric"),
    ("test.visrank_topk=0", "test.visrank_topk"),
    ("test.visrank_count=0", "test.visrank_count"),
]


@pytest.mark.parametrize(("override", "key"), INVALID, ids=[o for o, _ in INVALID])
def test_setting_that_cannot_work_is_refused_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("synthetic_cpu", [override])
    assert key in str(info.value)


def test_message_gives_the_value_and_the_allowed_range() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("synthetic_cpu", ["train.num_instances=0"])
    assert str(info.value) == (
        "train.num_instances=0 is invalid: it must be >= 1 "
        "(K, images per identity in a training batch)."
    )
    with pytest.raises(ConfigError, match=r"test\.dist_metric='foo'.*euclidean, cosine"):
        load_config("synthetic_cpu", ["test.dist_metric=foo"])
    with pytest.raises(ConfigError, match=r"loss\.label_smoothing=1\.0 .* in \[0, 1\)"):
        load_config("synthetic_cpu", ["loss.label_smoothing=1.0"])
    with pytest.raises(ConfigError, match=r">= 1 or null"):
        load_config("synthetic_cpu", ["train.max_steps=0"])


def test_every_bad_value_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("synthetic_cpu", ["train.lr=-1", "data.height=0", "test.batch_size=0"])
    message = str(info.value)
    assert message.startswith("3 invalid settings")
    assert all(k in message for k in ("train.lr=", "data.height=", "test.batch_size="))


@pytest.mark.parametrize(
    "override",
    [
        "train.max_steps=null",  # no step limit: max_epoch ends the run
        "train.max_steps=1",
        "train.warmup_epochs=0",
        "train.eval_freq=0",
        "train.gamma=1",
        "train.amp=OFF",  # the trainer lower-cases it
        "train.optim=AdamW",
        "data.transforms=[random_crop,RE]",
        "data.workers=0",
        "loss.label_smoothing=0",
        "loss.pixel_weight=0",
        "loss.preset=gilt",
        "model.bpbreid.dim_reduce_output=0",  # keeps the backbone's channels
        "model.bpbreid.masks.softmax_weight=0",  # official: maps divided by their sum
        "test.dist_metric=cosine",
    ],
)
def test_boundary_values_are_accepted(override: str) -> None:
    load_config("synthetic_cpu", [override])


def test_file_that_is_no_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"train:\n  lr: \xff\xfe\x00\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


def test_overrides_are_checked_without_a_base_config() -> None:
    """``eval`` checks its overrides before reading the checkpoint that holds the base."""
    with pytest.raises(ConfigError, match="test.dist_metric"):
        check_overrides(["test.dist_metric=foo"])
    with pytest.raises(ConfigError, match="train.lr"):
        check_overrides(["train.lr=[1,"])
    with pytest.raises(ConfigError, match="Unknown config key 'test.dist'"):
        check_overrides(["test.dist=cosine"])
    # Cross-field checks need the base: parts_num=5 is fine with a five-part grouping.
    check_overrides(["model.bpbreid.masks.parts_num=5", "test.batch_size=7"])
    check_overrides(None)


# The modules that implement each setting hold the same names as bpbreid.config.
IMPLEMENTED: list[tuple[str, str, str]] = [
    ("test.dist_metric", "bpbreid.metrics", "METRICS"),
    ("train.optim", "bpbreid.engine.optim", "OPTIMIZERS"),
    ("train.lr_scheduler", "bpbreid.engine.optim", "SCHEDULERS"),
    ("train.loggers", "bpbreid.engine.loggers", "LOGGERS"),
    ("loss.part_triplet", "bpbreid.losses", "PART_TRIPLET_MODES"),
    ("loss.preset", "bpbreid.losses", "LOSS_PRESETS"),
    ("model.backbone", "bpbreid.model.backbones", "BACKBONES"),
    ("model.bpbreid.part_mode", "bpbreid.model.bpbreid", "PART_MODES"),
    ("model.bpbreid.head", "bpbreid.model.bpbreid", "PART_HEADS"),
    (
        "model.bpbreid.test_use_target_segmentation",
        "bpbreid.model.bpbreid",
        "TARGET_SEGMENTATION_MODES",
    ),
    ("model.bpbreid.foreground_pooling", "bpbreid.model.bpbreid", "FOREGROUND_POOLINGS"),
    (
        "model.bpbreid.masks.background_computation_strategy",
        "bpbreid.data.parsing",
        "BACKGROUND_STRATEGIES",
    ),
    ("data.transforms", "bpbreid.data.transforms", "TRANSFORM_ALIASES"),
    ("data.pipeline", "bpbreid.data.pipeline", "PIPELINES"),
]


@pytest.mark.parametrize(("key", "module", "name"), IMPLEMENTED, ids=[k for k, _, _ in IMPLEMENTED])
def test_valid_names_match_the_implementation(key: str, module: str, name: str) -> None:
    implemented = getattr(importlib.import_module(module), name)
    assert set(SETTING_CHOICES[key].values) == set(implemented), (
        f"{module}.{name} and bpbreid.config.SETTING_CHOICES['{key}'] differ: update the config"
    )


def test_grouping_sizes_match_the_groupings() -> None:
    from bpbreid.data.parsing import PART_GROUPINGS

    assert PART_GROUPING_SIZES == {name: len(parts) for name, parts in PART_GROUPINGS.items()}


def test_amp_names_are_the_ones_the_trainer_resolves() -> None:
    import torch

    from bpbreid.engine.distributed import resolve_amp

    for name in SETTING_CHOICES["train.amp"].values:
        resolve_amp(name, torch.device("cpu"))  # raises on a name it does not know


def test_bundled_configs_satisfy_every_domain() -> None:
    from bpbreid.config import CONFIGS_DIR

    for path in sorted(CONFIGS_DIR.glob("*.yaml")):
        load_config(path)


# --------------------------------------------------------------------------------------
# Through the command line: exit code 2, `error: <message>`, no traceback, nothing trained
# --------------------------------------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test at once if a command got as far as building a trainer."""
    import bpbreid.engine.trainer as trainer

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a Trainer was built from an invalid configuration")

    monkeypatch.setattr(trainer, "Trainer", refuse)


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["train", "--config", "synthetic_cpu", "train.num_instances=0"], "train.num_instances"),
        (["train", "--config", "synthetic_cpu", "test.dist_metric=foo"], "test.dist_metric"),
        (["train", "--config", "synthetic_cpu", "train.max_steps=-1"], "train.max_steps"),
        (["train", "--config", "synthetic_cpu", "train.lr=[1,"], "train.lr"),
        (["config", "synthetic_cpu", "data.height=0"], "data.height"),
        (["eval", "--checkpoint", "missing.pth", "test.dist_metric=foo"], "test.dist_metric"),
        (["demo", "train.lr=-1"], "train.lr"),
    ],
)
def test_cli_refuses_with_exit_code_2_and_no_traceback(
    argv: list[str], key: str, capsys: pytest.CaptureFixture[str], no_training: None
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and key in err
    assert "Traceback" not in err


def test_cli_refuses_a_directory_as_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_training: None
) -> None:
    assert main(["train", "--config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "Traceback" not in err


def test_demo_lists_the_valid_model_names(capsys: pytest.CaptureFixture[str]) -> None:
    from bpbreid.demo import MODELS

    with pytest.raises(SystemExit) as info:  # argparse: usage and error, exit code 2
        main(["demo", "--models", "foo"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "foo" in err and all(name in err for name in MODELS) and "Traceback" not in err
    with pytest.raises(SystemExit) as info:
        main(["demo", "--steps", "0"])
    assert info.value.code == 2 and "--steps" in capsys.readouterr().err
