"""The training engine: loss goes down, exact resume, NaN guard, AMP, schedule, loggers."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import torch

from bpbreid.bench.train import TensorReIDSet, tensor_train_loader
from bpbreid.config import ConfigError, load_config
from bpbreid.data.datasets import ReIDData, Sample
from bpbreid.engine.checkpoint import read_checkpoint
from bpbreid.engine.distributed import resolve_amp
from bpbreid.engine.loggers import CSVLogger, build_loggers
from bpbreid.engine.metrics_log import flatten_metrics
from bpbreid.engine.optim import StepSchedule, build_schedule
from bpbreid.engine.state import EngineState
from bpbreid.engine.trainer import Trainer
from bpbreid.engine.validation import split_validation
from bpbreid.errors import TrainingError
from bpbreid.losses import GiLtLoss
from bpbreid.model import build_model

NUM_IDS = 8


def tiny_cfg(tmp_path, *overrides: str):
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
            f"train.output_dir={tmp_path}",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A data root holding the tiny synthetic set (generated once for this module)."""
    from bpbreid.data.synthetic import generate

    root = tmp_path_factory.mktemp("data")
    generate(root / "synthetic", "tiny", 0, progress=False)
    return root


def synthetic_cfg(data_root, output_dir, *overrides: str):
    """The CPU configuration on the tiny synthetic set, read from disk with augmentations."""
    return load_config(
        "synthetic_cpu",
        [
            "data.synthetic.preset=tiny",
            f"data.root={data_root}",
            "train.device=cpu",
            "train.batch_size=16",
            "train.loggers=[csv]",
            f"train.output_dir={output_dir}",
            *overrides,
        ],
    )


def tiny_loader(cfg, rank=0, world_size=1):
    dataset = TensorReIDSet(num_ids=NUM_IDS, per_id=4, height=64, width=32, parts=4)
    return tensor_train_loader(
        dataset, cfg.train.batch_size, 4, rank=rank, world_size=world_size, seed=cfg.train.seed
    )


def full_batch_loss(trainer: Trainer) -> float:
    """The training loss on every image of the tiny set at once (a fixed yardstick)."""
    dataset = trainer.train_loader.dataset
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([item["image"] for item in items])
    masks = torch.stack([item["target_masks"] for item in items])
    pids = torch.tensor([item["pid"] for item in items])
    model = trainer.model
    was_training = model.training
    model.train()
    with torch.no_grad():
        loss, _ = trainer.criterion(model(images), pids, masks)
    model.train(was_training)
    return float(loss)


def test_a_few_steps_lower_the_loss(tmp_path):
    cfg = tiny_cfg(tmp_path, "train.max_epoch=3", "train.save_every=100")
    trainer = Trainer(cfg, data={"train": tiny_loader(cfg)}, num_classes=NUM_IDS)
    before = full_batch_loss(trainer)
    state = trainer.fit()
    after = full_batch_loss(trainer)
    assert state.step == 3 * trainer.steps_per_epoch
    assert after < 0.9 * before, (before, after)
    assert (tmp_path / "model.pth").is_file() and (tmp_path / "last.pth").is_file()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_equals_the_uninterrupted_run(tmp_path, data_root):
    """Real pipeline (images and labels from disk, random crop and erasing), cosine schedule."""
    overrides = (
        "train.max_steps=null",
        "train.max_epoch=3",
        "train.save_every=1",
        "train.deterministic=true",
        "train.warmup_epochs=1",
    )
    straight = Trainer(synthetic_cfg(data_root, tmp_path / "a", *overrides), progress=False)
    straight.fit()
    expected = _params(straight.model)

    cfg_b = synthetic_cfg(data_root, tmp_path / "b", *overrides)

    def kill_in_epoch_3(trainer, step, components):
        if step == 2 * trainer.steps_per_epoch + 1:
            raise KeyboardInterrupt  # the process dies after epoch 2's checkpoint

    killed = Trainer(cfg_b, progress=False, step_hooks=[kill_in_epoch_3])
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    assert read_checkpoint(tmp_path / "b" / "last.pth")["state"]["epoch"] == 2

    torch.manual_seed(1234)  # a fresh process starts from other RNG states
    resumed = Trainer(cfg_b, progress=False)
    state = resumed.fit(resume=True)
    assert state.epoch == 3 and state.step == straight.state.step
    for key, value in _params(resumed.model).items():
        assert torch.equal(value, expected[key]), f"{key} differs after resuming"
    assert [h["total"] for h in state.history] == [h["total"] for h in straight.state.history]
    assert state.final_metrics == straight.state.final_metrics


class NaNAtStep(torch.nn.Module):
    """The real GiLt loss, with the pixel term turned NaN at one step."""

    def __init__(self, cfg, bad_step: int):
        super().__init__()
        self.loss = GiLtLoss(cfg.loss)
        self.bad_step = bad_step
        self.calls = 0

    def forward(self, output, pids, target_masks):
        self.calls += 1
        total, components = self.loss(output, pids, target_masks)
        if self.calls == self.bad_step:
            total = total + float("nan")
            components["pixel"] = float("nan")
            components["total"] = float("nan")
        return total, components


def test_nan_loss_stops_with_step_and_component_and_keeps_the_checkpoint(tmp_path):
    cfg = tiny_cfg(tmp_path, "train.max_epoch=3", "train.save_every=1")
    loader = tiny_loader(cfg)
    bad_step = len(loader) + 1  # first step of epoch 2, after epoch 1's checkpoint
    trainer = Trainer(
        cfg, data={"train": loader}, num_classes=NUM_IDS, criterion=NaNAtStep(cfg, bad_step)
    )
    with pytest.raises(TrainingError, match=rf"step {bad_step}\b.*pixel") as info:
        trainer.fit()
    assert "last.pth" in str(info.value)
    kept = read_checkpoint(tmp_path / "last.pth")
    assert kept["state"]["step"] == len(loader)
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_bf16_autocast_forward_matches_fp32():
    cfg = load_config("synthetic_cpu")
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=NUM_IDS).eval()
    images = torch.randn(4, 3, 64, 32)
    with torch.no_grad():
        reference = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(images)
    for name in ("global", "foreground", "parts"):
        a = reference.embeddings[name].float()
        b = mixed.embeddings[name].float()
        cosine = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).min()
        assert cosine > 0.99, (name, float(cosine))
    diff = (reference.parts_masks - mixed.parts_masks.float()).abs().max()
    assert diff < 0.05


def test_amp_policy():
    cpu = torch.device("cpu")
    assert not resolve_amp("auto", cpu).enabled  # fp32 on CPU by default
    assert resolve_amp("bf16", cpu).dtype == torch.bfloat16
    assert resolve_amp("fp16", cpu).use_scaler
    assert not resolve_amp("False", cpu).enabled  # `amp: off` read by YAML as false
    with pytest.raises(ConfigError, match="train.amp"):
        resolve_amp("fp8", cpu)


def test_schedule_warmup_multistep_and_cosine():
    cfg = load_config(None, ["train.warmup_epochs=2", "train.stepsize=[4,6]", "train.max_epoch=8"])
    schedule = build_schedule(cfg.train, steps_per_epoch=10)
    assert schedule(0) == pytest.approx(0.01)
    assert schedule(10) < schedule(19) < 1.0 == schedule(20)
    assert schedule(40) == pytest.approx(0.1) and schedule(60) == pytest.approx(0.01)
    cosine = StepSchedule("cosine", total_steps=100, warmup_steps=0)
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.505) and cosine(100) == 0.01
    by_steps = build_schedule(
        load_config(None, ["train.max_steps=50", "train.lr_scheduler=cosine"]).train, 1000
    )
    assert by_steps.total_steps == 50  # max_steps sets the schedule's length


def test_csv_logger_resume_drops_rows_after_the_checkpoint(tmp_path):
    logger = CSVLogger(tmp_path)
    for step in range(1, 7):
        logger.log_scalars(step, {"total": float(step)})
    for epoch in (1, 2, 3):
        logger.log_epoch(epoch, {"step": 2 * epoch, "total": 1.0, "mAP": 0.1 * epoch})
    resumed = CSVLogger(tmp_path, resume_step=4, resume_epoch=2)
    resumed.log_scalars(5, {"total": 9.0, "lr": 0.1})  # a new column rewrites the header
    steps = list(csv.DictReader((tmp_path / "steps.csv").open()))
    assert [r["step"] for r in steps] == ["1", "2", "3", "4", "5"]
    assert steps[-1]["lr"] == "0.1" and steps[-1]["total"] == "9.0"
    epochs = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["epoch"] for r in epochs] == ["1", "2"]


def test_optional_loggers_fail_clearly_when_missing(tmp_path):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            build_loggers(["tensorboard"], tmp_path)
    with pytest.raises(ConfigError, match="Unknown logger"):
        build_loggers(["carrier_pigeon"], tmp_path)


def _reid_data(num_ids=10, per_cam=2, cams=3):
    train = [
        Sample(f"{pid}_{cam}_{i}.jpg", pid, cam, None)
        for pid in range(num_ids)
        for cam in range(cams)
        for i in range(per_cam)
    ]
    return ReIDData(name="synthetic", dataset_dir=".", train=train, query=[], gallery=[])


def test_validation_split_holds_out_whole_identities():
    data = _reid_data()
    train, val = split_validation(data, num_ids=3, seed=0)
    val_pids = {s.pid for s in val.query} | {s.pid for s in val.gallery}
    assert len(val_pids) == 3
    assert sorted({s.pid for s in train.train}) == list(range(7))  # relabelled 0..6
    assert len(train.train) + len(val.query) + len(val.gallery) == len(data.train)
    for query in val.query:  # every query has a match from another camera
        assert any(g.pid == query.pid and g.camid != query.camid for g in val.gallery)
    assert val.train == []
    with pytest.raises(ConfigError, match="validation_ids"):
        split_validation(data, num_ids=9)


@dataclasses.dataclass
class _FakeResult:
    mAP: float
    rank1: float
    cmc: list
    per_set: dict


def test_flatten_metrics_keeps_scalars():
    result = _FakeResult(0.5, 0.7, [0.7, 0.8], {"query_holistic": {"mAP": 0.9}})
    assert flatten_metrics(result, "test/") == {
        "test/mAP": 0.5,
        "test/rank1": 0.7,
        "test/per_set/query_holistic/mAP": 0.9,
    }


def test_former_import_paths_still_work():
    import importlib

    import bpbreid.engine
    from bpbreid.engine import evaluation, pool, trainer, validation
    from bpbreid.paths import resolve_path

    assert trainer.flatten_metrics is flatten_metrics
    assert trainer.split_validation is split_validation
    assert trainer.run_parallel is pool.run_parallel
    assert trainer.SELECTION_METRICS is validation.SELECTION_METRICS
    assert trainer.resolve_output_dir is resolve_path
    # bpbreid.engine.evaluate is the function (notebook 05), never a module of that name.
    from bpbreid.engine import evaluate

    assert evaluate is evaluation.evaluate and bpbreid.engine.evaluate is evaluate
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("bpbreid.engine.evaluate")
    assert bpbreid.engine.evaluate is evaluation.evaluate


def test_engine_state_is_plain():
    state = EngineState(epoch=1, step=5, history=[{"total": torch.tensor(2.0)}])
    assert state.to_dict()["history"] == [{"total": 2.0}]


def test_run_parallel_trains_each_config_in_its_own_process(tmp_path, data_root):
    from bpbreid.engine.pool import run_parallel

    def config(name, *extra):
        return synthetic_cfg(
            data_root, tmp_path / name, f"name={name}", "train.max_steps=2", *extra
        )

    global_only = ("model.bpbreid.part_mode=global", "model.bpbreid.test_embeddings=[bn_global]")
    configs = [config("parts"), config("global", *global_only)]
    states = run_parallel(configs, processes=2)
    assert [s.step for s in states] == [2, 2]
    for cfg, state in zip(configs, states):
        assert (tmp_path / cfg.name / "model.pth").is_file()
        assert "test/query/mAP" in state.final_metrics
    with pytest.raises(ConfigError, match="output_dir"):
        run_parallel([configs[0], configs[0]])


def test_test_at_end_false_skips_the_final_evaluation(tmp_path, data_root):
    cfg = synthetic_cfg(data_root, tmp_path / "run", "train.max_steps=2", "train.test_at_end=false")
    trainer = Trainer(cfg, progress=False)
    state = trainer.fit()
    assert trainer.test_result is None
    assert not any(k.startswith("test/") for k in state.final_metrics)
    assert (tmp_path / "run" / "model.pth").is_file()  # the model is still saved


def test_training_benchmark_runs_tiny(capsys):
    import argparse

    from bpbreid.bench import train as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(
        "--device cpu --backbone resnet18_half --parts 4 --height 64 --width 32 "
        "--batch-size 8 --steps 2 --warmup 0".split()
    )
    assert bench.run(args) == 0
    table = capsys.readouterr().out
    assert "| fp32 eager (TF32 off) |" in table and "1.00x" in table
    assert "AMP + channels_last (bf16)" in table


def test_validation_split_selects_the_model_and_test_only_reports(tmp_path, data_root):
    cfg = synthetic_cfg(
        data_root,
        tmp_path / "run",
        "train.max_steps=6",
        "train.validation_ids=4",
        "train.eval_freq=1",
    )
    trainer = Trainer(cfg, progress=False)
    assert trainer.num_classes == 12 - 4  # the tiny preset has 12 training identities
    state = trainer.fit()
    assert state.best_epoch is not None
    assert state.final_metrics["selected_epoch"] == state.best_epoch
    assert "test/query/mAP" in state.final_metrics
    assert all("val/query/mAP" in h for h in state.history)  # validated every epoch
    best = max(state.history, key=lambda h: h["val/query/mAP"])
    assert best["epoch"] == state.best_epoch
    # The reported model (model.pth) is the selected one, not the last epoch's.
    selected = read_checkpoint(tmp_path / "run" / "best.pth")["model"]
    reported = read_checkpoint(tmp_path / "run" / "model.pth")["model"]
    assert all(torch.equal(selected[k], reported[k]) for k in selected)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_training_process_stops_when_the_process_that_started_it_is_killed(tmp_path):
    # `kill <demo pid>` must not leave the trainings running on, unseen, in the background.
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    child = (
        "import os, sys, time\n"
        "from bpbreid.engine.pool import _exit_with_parent\n"
        "_exit_with_parent(int(sys.argv[1]), interval=0.05)\n"
        "open(sys.argv[2], 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    parent = (
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}, str(os.getpid()), sys.argv[1]])\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", parent, str(pid_file)])
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())

    def running(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state not in ("Z", "X")

    assert running(child_pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while running(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(child_pid)
