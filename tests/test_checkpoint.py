"""Checkpoints: atomic writes, weights_only loads, clear errors, EngineState round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from bpbreid.config import config_to_dict, load_config
from bpbreid.engine.checkpoint import (
    atomic_save,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from bpbreid.engine.optim import build_optimizer, build_scheduler
from bpbreid.engine.state import EngineState
from bpbreid.errors import CheckpointError
from bpbreid.model import build_model

NUM_CLASSES = 6


@pytest.fixture(scope="module")
def cfg():
    return load_config("synthetic_cpu", ["train.device=cpu"])


@pytest.fixture(scope="module")
def model(cfg):
    torch.manual_seed(0)
    return build_model(cfg, num_classes=NUM_CLASSES)


def _training_checkpoint(path, cfg, model):
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, steps_per_epoch=10)
    # One step so that the optimizer has state (exp_avg...) worth saving.
    model.zero_grad()
    sum(p.sum() for p in model.parameters()).backward()
    optimizer.step()
    scheduler.step()
    state = EngineState(epoch=2, step=20, history=[{"epoch": 1, "total": 3.5}])
    state.capture_rng()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return save_checkpoint(
        path,
        model,
        cfg,
        num_classes=NUM_CLASSES,
        state=state,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        sampler_state={"epoch": 2, "loader_generator": torch.Generator().get_state()},
    )


def test_training_checkpoint_loads_with_weights_only(tmp_path, cfg, model):
    path = _training_checkpoint(tmp_path / "last.pth", cfg, model)
    data = torch.load(path, weights_only=True)  # raises if anything needs a full unpickler
    assert data["format"] == "bpbreid-checkpoint"
    assert data["num_classes"] == NUM_CLASSES
    assert data["config"] == config_to_dict(cfg)
    assert data["state"]["step"] == 20
    assert set(data) >= {"model", "optimizer", "scheduler", "scaler", "sampler", "state"}
    assert data["optimizer"]["state"], "the optimizer moments were not saved"


def test_load_checkpoint_rebuilds_the_same_model(tmp_path, cfg, model):
    path = save_checkpoint(tmp_path / "model.pth", model, cfg, num_classes=NUM_CLASSES)
    loaded, loaded_cfg, state = load_checkpoint(path)
    assert state is None
    assert loaded_cfg.model.backbone == cfg.model.backbone
    assert not loaded.training
    reference = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_engine_state_round_trip_restores_rng():
    state = EngineState(epoch=3, step=30, history=[{"epoch": 3, "mAP": 0.5}], best_metric=0.5)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)  # noqa: NPY002
    state.capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    copy = EngineState.from_dict(state.to_dict())
    random.seed(2), np.random.seed(2), torch.manual_seed(2)  # noqa: NPY002
    copy.restore_rng()
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected  # noqa: NPY002
    assert copy.history == state.history and copy.best_metric == 0.5


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, cfg, model, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pth", model, cfg, num_classes=NUM_CLASSES)
    before = path.read_bytes()
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")  # some bytes reach the disk, then the process dies
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, cfg, num_classes=NUM_CLASSES)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert read_checkpoint(path)["num_classes"] == NUM_CLASSES
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"], "a temporary file was left"


def test_atomic_save_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "x.pth"
    atomic_save({"a": torch.ones(2)}, path)
    atomic_save({"a": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(2))


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"\x00\x01 not a zip archive at all")
    with pytest.raises(CheckpointError, match="broken.pth"):
        load_checkpoint(path)


def test_foreign_file_is_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}}, path)
    with pytest.raises(CheckpointError, match="not a bpbreid checkpoint"):
        read_checkpoint(path)


def test_mismatched_model_lists_the_keys(tmp_path, cfg, model):
    path = save_checkpoint(tmp_path / "model.pth", model, cfg, num_classes=NUM_CLASSES)
    other = load_config(
        "synthetic_cpu",
        ["model.bpbreid.masks.preprocess=five_v", "model.bpbreid.masks.parts_num=5"],
    )
    with pytest.raises(CheckpointError, match="does not match the model.*wrong shape"):
        load_checkpoint(path, cfg=other)
