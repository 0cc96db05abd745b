"""Solutions to the exercises of chapter 04 (training).

Run ``python notebooks/solutions/ch04_training_cuda.py``; ``tests/test_solutions.py`` runs it too.
Every run here is the CPU config on the tiny synthetic set (generated in a temporary folder) for a
few steps of 16 images, so the metrics are those of an untrained model: the exercises are about the
engine (validation split, checkpoints, resume, data loading), which works the same at any size.
Exercise 2 stops the run from a step hook (as Ctrl-C would) instead of by hand. Exercise 3 reads
the ``workers=0`` timings of exercise 1's run; comparing them with ``data.workers=1`` is a
measurement of your machine (a worker process on 2 cores), run it there:
``python -m bpbreid train --config synthetic_cpu data.workers=1 train.max_steps=50``.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from bpbreid.config import copy_config, load_config
from bpbreid.data.synthetic import generate
from bpbreid.engine import Trainer, read_checkpoint


@functools.cache
def _root() -> Path:
    """A temporary folder holding the tiny synthetic set (removed at exit)."""
    root = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    generate(root / "data" / "synthetic", "tiny", progress=False)
    return root


@functools.cache
def _base():
    root = _root()
    return load_config(
        "synthetic_cpu",
        [f"data.root={root / 'data'}", "data.synthetic.preset=tiny", "data.workers=0",
         "train.device=cpu", "train.batch_size=16", "train.loggers=[csv]"],
    )  # fmt: skip


def _config(name: str, **train):
    """The base config writing to its own folder, with some ``train`` settings changed."""
    cfg = copy_config(_base())
    cfg.train.output_dir = str(_root() / name)
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


@functools.cache
def exercise_1() -> dict[str, object]:
    """Train with 4 held-out validation identities, validated after every epoch."""
    cfg = _config("validation", validation_ids=4, eval_freq=1, max_steps=4)
    state = Trainer(cfg, progress=False).fit()
    out = Path(cfg.train.output_dir)
    return {
        "output_dir": str(out),
        "epochs": state.epoch,
        "val mAP per epoch": [h["val/query/mAP"] for h in state.history],
        "best_epoch": state.best_epoch,
        "selected_epoch": state.final_metrics["selected_epoch"],
        "test mAP": state.final_metrics["test/query/mAP"],
        "best.pth": (out / "best.pth").is_file(),
        "history": state.history,
    }


@functools.cache
def exercise_2() -> dict[str, int]:
    """Stop a run in its second epoch (after epoch 1's ``last.pth``), then resume it."""
    cfg = _config("resume", max_steps=None, max_epoch=2, save_every=1, test_at_end=False)

    def stop_in_epoch_2(trainer, step, components):
        if step == trainer.steps_per_epoch + 1:
            raise KeyboardInterrupt  # Ctrl-C

    stopped = Trainer(cfg, progress=False, step_hooks=[stop_in_epoch_2])
    try:
        stopped.fit()
    except KeyboardInterrupt:
        pass
    saved = read_checkpoint(Path(cfg.train.output_dir) / "last.pth")["state"]
    state = Trainer(cfg, progress=False).fit(resume=True)
    return {
        "steps per epoch": stopped.steps_per_epoch,
        "steps done when stopped": stopped.steps_per_epoch + 1,
        "step of last.pth": saved["step"],
        "epoch of last.pth": saved["epoch"],
        "final step": state.step,
        "final epoch": state.epoch,
    }


def exercise_3() -> dict[str, float]:
    """Images per second and share of time waiting for data of exercise 1's run (``workers=0``).

    The epoch records (``metrics.csv``) hold ``img/s`` and ``data_wait`` (a fraction of the epoch's
    time); ``steps.csv`` has ``img/s`` per logged step.
    """
    history = exercise_1()["history"]
    return {
        "img/s": sum(h["img/s"] for h in history) / len(history),
        "data_wait": sum(h["data_wait"] for h in history) / len(history),
    }


if __name__ == "__main__":
    print("1.", {k: v for k, v in exercise_1().items() if k != "history"})
    print("2.", exercise_2())
    print("3.", exercise_3())
