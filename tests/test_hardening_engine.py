"""The engine under abuse: divergence, resumes with new settings, shared folders, kills."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import warnings

import pytest
import torch

from bpbreid.__main__ import main
from bpbreid.bench.train import TensorReIDSet, tensor_train_loader
from bpbreid.config import load_config
from bpbreid.engine.checkpoint import (
    load_checkpoint,
    non_finite_entries,
    read_checkpoint,
    save_checkpoint,
)
from bpbreid.engine.files import atomic_write_text, remove_stale_temporaries
from bpbreid.engine.health import TrainingWarning, runaway_findings
from bpbreid.engine.lock import LOCK_NAME, RunLock
from bpbreid.engine.loggers import CSVLogger
from bpbreid.engine.trainer import Trainer
from bpbreid.errors import CheckpointError, TrainingError
from bpbreid.model import build_model

NUM_IDS = 8


def tiny_cfg(output_dir, *overrides: str):
    """The CPU configuration (real model, 64x32) with 16-image batches on tensors."""
    return load_config(
        "synthetic_cpu",
        [
            "train.device=cpu",
            "train.batch_size=16",
            "train.warmup_epochs=0",
            "train.lr_scheduler=constant",
            "train.max_steps=null",
            "train.loggers=[csv]",
            f"train.output_dir={output_dir}",
            *overrides,
        ],
    )


def tiny_loader(cfg):
    dataset = TensorReIDSet(num_ids=NUM_IDS, per_id=4, height=64, width=32, parts=4)
    return tensor_train_loader(dataset, cfg.train.batch_size, 4, seed=cfg.train.seed)


def tiny_trainer(cfg, **kwargs) -> Trainer:
    return Trainer(cfg, data={"train": tiny_loader(cfg)}, num_classes=NUM_IDS, **kwargs)


def csv_column(path, key: str) -> list[str]:
    with path.open(newline="") as handle:
        return [row[key] for row in csv.DictReader(handle)]


def dead_pid() -> int:
    """The id of a process that has just ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(folder, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": host or socket.gethostname(), "started": "2024-01-01T00:00:00"}
    (folder / LOCK_NAME).write_text(json.dumps(holder))


# --------------------------------------------------------------------------------------
# Divergence: non-finite weights are never saved nor loaded
# --------------------------------------------------------------------------------------


def _first_running_var(model) -> torch.Tensor:
    return next(v for k, v in model.state_dict().items() if k.endswith("running_var"))


def test_non_finite_weights_stop_training_and_keep_the_last_checkpoint(tmp_path):
    cfg = tiny_cfg(tmp_path, "train.max_epoch=3", "train.save_every=1")

    def blow_up_batchnorm(trainer, step, components):
        # What a huge learning rate does first: BatchNorm variances overflow while the
        # loss (computed with batch statistics) stays finite.
        if step == trainer.steps_per_epoch + 1:
            _first_running_var(trainer.model).fill_(float("inf"))

    trainer = tiny_trainer(cfg, step_hooks=[blow_up_batchnorm])
    with pytest.raises(TrainingError, match=r"running_var \(\d+ inf\)") as info:
        trainer.fit()
    message = str(info.value)
    assert "last.pth (epoch 1," in message and "train.lr" in message
    kept = read_checkpoint(tmp_path / "last.pth")
    assert kept["state"]["epoch"] == 1
    assert not non_finite_entries(kept["model"])
    assert not (tmp_path / "model.pth").exists()


def test_save_checkpoint_refuses_non_finite_weights_and_keeps_the_file(tmp_path):
    cfg = load_config("synthetic_cpu", ["train.device=cpu"])
    model = build_model(cfg, num_classes=NUM_IDS)
    path = save_checkpoint(tmp_path / "last.pth", model, cfg, num_classes=NUM_IDS)
    before = path.read_bytes()
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match=r"non-finite.*\(1 NaN\)"):
        save_checkpoint(path, model, cfg, num_classes=NUM_IDS)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]


def test_loading_non_finite_weights_is_refused(tmp_path, capsys):
    cfg = load_config("synthetic_cpu", ["train.device=cpu"])
    model = build_model(cfg, num_classes=NUM_IDS)
    path = save_checkpoint(tmp_path / "model.pth", model, cfg, num_classes=NUM_IDS)
    data = torch.load(path, weights_only=True)
    name = next(k for k in data["model"] if k.endswith("running_var"))
    data["model"][name][0] = float("inf")
    torch.save(data, path)  # what an unguarded writer saved after a divergence
    with pytest.raises(CheckpointError, match=rf"non-finite weights.*{name} \(1 inf\)"):
        load_checkpoint(path)
    assert main(["eval", "--checkpoint", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "non-finite" in err and "Traceback" not in err


# --------------------------------------------------------------------------------------
# Resume: changed optimizer/schedule settings take effect
# --------------------------------------------------------------------------------------


def test_resume_with_a_lower_lr_trains_at_the_new_rate(tmp_path, capsys):
    first = tiny_trainer(tiny_cfg(tmp_path, "train.max_epoch=1", "train.test_at_end=false"))
    first.fit()
    assert first.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)

    cfg = tiny_cfg(
        tmp_path,
        "train.max_epoch=2",
        "train.lr=1e-4",
        "train.weight_decay=0.0",
        "train.test_at_end=false",
    )
    resumed = tiny_trainer(cfg)
    resumed.resume()
    group = resumed.optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(1e-4) and group["weight_decay"] == 0.0
    assert resumed.scheduler.base_lrs == [pytest.approx(1e-4)]
    out = capsys.readouterr().out
    assert "resume: train.lr changed 0.001 -> 0.0001" in out
    assert "train.weight_decay changed 0.0005 -> 0" in out
    assert "the optimizer and schedule use the new values" in out

    resumed.fit(resume=True)
    rates = csv_column(tmp_path / "steps.csv", "lr")
    steps = first.steps_per_epoch
    assert [float(r) for r in rates[steps:]] == [pytest.approx(1e-4)] * steps


def test_resume_recomputes_the_current_rate_from_a_changed_schedule(tmp_path):
    tiny_trainer(tiny_cfg(tmp_path, "train.max_epoch=1", "train.test_at_end=false")).fit()
    cfg = tiny_cfg(
        tmp_path,
        "train.max_epoch=3",
        "train.warmup_epochs=2",
        "train.lr=2e-3",
        "train.test_at_end=false",
    )
    resumed = tiny_trainer(cfg)
    resumed.resume()
    step = resumed.state.step
    schedule = resumed.scheduler.lr_lambdas[0]
    assert 0.01 < schedule(step) < 1.0  # still warming up under the new schedule
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 * schedule(step))


def test_resume_with_another_optimizer_starts_its_moments_afresh(tmp_path, capsys):
    tiny_trainer(tiny_cfg(tmp_path, "train.max_epoch=1", "train.test_at_end=false")).fit()
    cfg = tiny_cfg(tmp_path, "train.max_epoch=2", "train.optim=sgd", "train.test_at_end=false")
    resumed = tiny_trainer(cfg)
    state = resumed.fit(resume=True)
    assert state.epoch == 2
    assert isinstance(resumed.optimizer, torch.optim.SGD)
    assert resumed.optimizer.param_groups[0]["momentum"] == 0.9
    assert "train.optim changed 'adam' -> 'sgd'" in capsys.readouterr().out


# --------------------------------------------------------------------------------------
# Run-away training (finite, but absurd)
# --------------------------------------------------------------------------------------


def test_runaway_findings_compare_the_loss_and_the_weights():
    healthy = {"w": torch.ones(3), "count": torch.tensor(5)}
    assert runaway_findings(30.0, [20.0, 25.0, 31.0], healthy) == []
    assert runaway_findings(30.0, [20.0, 1e14, 25.0], healthy) == []  # one bad batch
    loss = runaway_findings(30.0, [1e14, 2e14, 25.0], healthy)
    assert len(loss) == 1 and "loss rose from 30" in loss[0]
    weights = runaway_findings(None, [], {"w": torch.tensor([1.0, -3e31])})
    assert len(weights) == 1 and "3e+31 in w" in weights[0]


def test_a_huge_learning_rate_ends_with_a_runaway_warning(tmp_path):
    cfg = tiny_cfg(tmp_path, "train.max_epoch=4", "train.lr=1e6", "train.test_at_end=false")
    trainer = tiny_trainer(cfg)
    with pytest.warns(TrainingWarning, match="ran away.*train.lr") as record:
        state = trainer.fit()
    assert len(record) == 1
    assert state.warnings and "ran away" in state.warnings[0]
    assert read_checkpoint(tmp_path / "model.pth")["state"]["warnings"] == state.warnings


def test_a_normal_run_does_not_warn(tmp_path):
    trainer = tiny_trainer(tiny_cfg(tmp_path, "train.max_epoch=2", "train.test_at_end=false"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)
        state = trainer.fit()
    assert state.warnings == [] and state.first_loss is not None


# --------------------------------------------------------------------------------------
# One run per output folder
# --------------------------------------------------------------------------------------


def test_a_second_run_on_a_busy_folder_is_refused(tmp_path):
    holder = os.getppid()  # alive: the process that started this test run
    write_lock(tmp_path, holder)
    trainer = tiny_trainer(tiny_cfg(tmp_path, "train.max_epoch=1"))
    with pytest.raises(TrainingError, match=rf"{tmp_path}.*in use.*pid {holder}\b"):
        trainer.fit()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder  # left alone
    assert not (tmp_path / "steps.csv").exists()


def test_a_lock_held_in_this_process_refuses_a_second_one(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(TrainingError, match=rf"{tmp_path}.*this process.*pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_respected(tmp_path):
    write_lock(tmp_path, dead_pid(), host="some-other-machine")
    with pytest.raises(TrainingError, match=r"some-other-machine.*delete .*\.lock"):
        RunLock(tmp_path).acquire()


def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path, capsys):
    gone = dead_pid()
    write_lock(tmp_path, gone)
    trainer = tiny_trainer(tiny_cfg(tmp_path, "train.max_epoch=1", "train.test_at_end=false"))
    trainer.fit()
    out = capsys.readouterr().out
    assert f"Took over {tmp_path}" in out and f"pid {gone}" in out
    assert not (tmp_path / LOCK_NAME).exists()  # released at the end
    assert (tmp_path / "model.pth").is_file()


def test_the_lock_is_released_when_the_run_is_interrupted(tmp_path):
    seen = []

    def interrupt(trainer, step, components):
        seen.append(json.loads((tmp_path / LOCK_NAME).read_text())["pid"])
        raise KeyboardInterrupt

    trainer = tiny_trainer(tiny_cfg(tmp_path, "train.max_epoch=1"), step_hooks=[interrupt])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert seen == [os.getpid()]
    assert not (tmp_path / LOCK_NAME).exists()


# --------------------------------------------------------------------------------------
# Logs that survive kills, and resumes that never log a row twice
# --------------------------------------------------------------------------------------


def test_a_kill_while_the_history_is_rewritten_keeps_it(tmp_path, monkeypatch):
    logger = CSVLogger(tmp_path)
    for step in range(1, 5):
        logger.log_scalars(step, {"total": float(step)})
    before = (tmp_path / "steps.csv").read_bytes()

    def killed(self, rows):
        if list(rows):
            raise KeyboardInterrupt  # the process dies in the middle of the rewrite

    monkeypatch.setattr(csv.DictWriter, "writerows", killed)
    with pytest.raises(KeyboardInterrupt):
        CSVLogger(tmp_path, resume_step=2, resume_epoch=1)
    assert (tmp_path / "steps.csv").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_logging_an_epoch_again_replaces_its_row(tmp_path):
    logger = CSVLogger(tmp_path)
    for epoch in (1, 2, 3):
        logger.log_epoch(epoch, {"step": 2 * epoch, "total": 1.0})
    resumed = CSVLogger(tmp_path, resume_step=6, resume_epoch=3)
    resumed.log_epoch(3, {"step": 6, "total": 0.5, "test/mAP": 0.7})
    resumed.log_scalars(6, {"total": 0.5})
    assert csv_column(tmp_path / "metrics.csv", "epoch") == ["1", "2", "3"]
    assert csv_column(tmp_path / "metrics.csv", "total") == ["1.0", "1.0", "0.5"]
    assert csv_column(tmp_path / "steps.csv", "step") == ["6"]


def test_a_half_written_last_row_is_dropped_on_resume(tmp_path):
    logger = CSVLogger(tmp_path)
    for step in (1, 2, 3):
        logger.log_scalars(step, {"total": float(step), "lr": 0.1})
    with (tmp_path / "steps.csv").open("a") as handle:
        handle.write("4,4.0")  # killed mid-line: no lr, no newline
    CSVLogger(tmp_path, resume_step=10, resume_epoch=1)
    assert csv_column(tmp_path / "steps.csv", "step") == ["1", "2", "3"]


def test_resuming_a_run_killed_while_writing_model_pth_logs_each_epoch_once(tmp_path):
    cfg = tiny_cfg(tmp_path, "train.max_epoch=2", "train.save_every=1", "train.test_at_end=false")
    tiny_trainer(cfg).fit()
    (tmp_path / "model.pth").unlink()  # the kill came during the final model.pth write
    tiny_trainer(cfg).fit(resume=True)
    assert csv_column(tmp_path / "metrics.csv", "epoch") == ["1", "2"]
    steps = csv_column(tmp_path / "steps.csv", "step")
    assert steps == sorted(set(steps), key=int)
    assert (tmp_path / "model.pth").is_file()


def test_temporary_files_of_killed_writes_are_removed_at_the_next_start(tmp_path, capsys):
    tmp_path.mkdir(exist_ok=True)
    leftovers = [tmp_path / ".last.pth.k3x9q1.tmp", tmp_path / ".steps.csv.a1b2c3.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    (tmp_path / "notes.tmp").write_text("not ours")
    trainer = tiny_trainer(tiny_cfg(tmp_path, "train.max_epoch=1", "train.test_at_end=false"))
    trainer.fit()
    assert not any(path.exists() for path in leftovers)
    assert (tmp_path / "notes.tmp").exists()
    out = capsys.readouterr().out
    assert "Removed 2 temporary file(s)" in out and ".last.pth.k3x9q1.tmp" in out


def test_temporary_files_stay_while_another_run_holds_the_folder(tmp_path):
    write_lock(tmp_path, os.getppid())
    leftover = tmp_path / ".last.pth.inflight.tmp"
    leftover.write_bytes(b"being written by the other run")
    with pytest.raises(TrainingError, match="in use"):
        tiny_trainer(tiny_cfg(tmp_path, "train.max_epoch=1")).fit()
    assert leftover.exists()


def test_atomic_text_files_get_the_usual_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "metrics.csv", "epoch\n1\n")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert remove_stale_temporaries(tmp_path) == []
