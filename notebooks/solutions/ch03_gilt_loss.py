"""Solutions to the exercises of chapter 03 (GiLt loss).

Run ``python notebooks/solutions/ch03_gilt_loss.py``; ``tests/test_solutions.py`` runs it too.
The chapter's model and batch are shrunk to fit a test: the tiny synthetic set (generated in a
temporary folder), batches of 4 identities x 4 images and two training steps of the CPU model.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch

from bpbreid.config import LossConfig, load_config
from bpbreid.data.datasets import build_dataset_from_config, build_loaders
from bpbreid.data.synthetic import generate
from bpbreid.losses import GiLtLoss
from bpbreid.model import build_model


@functools.cache
def _root() -> Path:
    """A temporary data root holding the tiny synthetic set (generated once, removed at exit)."""
    root = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    generate(root / "synthetic", "tiny", progress=False)
    return root


def _setup(*overrides: str):
    """The chapter's config (hinge triplet, so trivial anchors exist), a fresh model, the loader."""
    cfg = load_config(
        "synthetic_cpu",
        [f"data.root={_root()}", "data.synthetic.preset=tiny", "train.batch_size=16",
         "data.workers=0", "loss.triplet_soft_margin=false", *overrides],
    )  # fmt: skip
    data = build_dataset_from_config(cfg)
    loader = build_loaders(cfg, data)["train"]
    torch.manual_seed(0)
    model = build_model(cfg, data.num_train_pids).train()
    return cfg, model, loader


def _train(cfg, model, loader, steps: int) -> list[dict[str, float]]:
    """``steps`` steps of the chapter's training loop; the loss components of each step."""
    criterion = GiLtLoss(cfg.loss, soft_targets=cfg.model.bpbreid.masks.soft_targets)
    history, batches = [], iter(loader)
    for _ in range(steps):
        batch = next(batches, None)
        if batch is None:
            batches = iter(loader)
            batch = next(batches)
        loss, components = criterion(model(batch["image"]), batch["pid"], batch["target_masks"])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():  # plain SGD: enough for two steps, and cheap to set up
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.01 * p.grad
        history.append(components)
    return history


@functools.cache
def _trained(steps: int = 2):
    """Exercise 2's run (visibility in the losses), shared by the other two exercises.

    Returns its config, the model after ``steps`` steps, the history and one training batch.
    """
    cfg, model, loader = _setup("loss.mask_filtering_training=true")
    history = _train(cfg, model, loader, steps)
    return cfg, model, history, next(iter(loader))


def exercise_1() -> dict[str, tuple[float, float]]:
    """(trivial ratio, loss) of the part triplet under ``average``, ``max`` and ``min``.

    Each variant's criterion is applied to the same output of the model trained two steps: the
    max over parts makes every pair look farther apart, the min closer.
    """
    cfg, model, _, batch = _trained()
    with torch.no_grad():
        output = model(batch["image"])
    answer = {}
    for mode in ("average", "max", "min"):
        cfg.loss.part_triplet = mode
        criterion = GiLtLoss(cfg.loss, soft_targets=cfg.model.bpbreid.masks.soft_targets)
        _, components = criterion(output, batch["pid"], batch["target_masks"])
        answer[mode] = (float(components["parts_tr_trivial"]), float(components["parts_tr"]))
    cfg.loss.part_triplet = "average"
    return answer


def exercise_2() -> list[float]:
    """``parts_tr_valid`` over the training steps with ``mask_filtering_training=true``."""
    return [float(h["parts_tr_valid"]) for h in _trained()[2]]


def exercise_3() -> dict[str, float]:
    """The ``parts_only`` preset's loss components on one batch."""
    _, model, _, batch = _trained()
    criterion = GiLtLoss(LossConfig(preset="parts_only"))
    with torch.no_grad():
        _, components = criterion(model(batch["image"]), batch["pid"], batch["target_masks"])
    return {name: float(value) for name, value in components.items()}


if __name__ == "__main__":
    one = exercise_1()
    print(
        "1. (trivial ratio, parts_tr):", {k: tuple(round(x, 3) for x in v) for k, v in one.items()}
    )
    print("2. parts_tr_valid per step:", [round(v, 3) for v in exercise_2()])
    print("3. parts_only components:", {k: round(v, 3) for k, v in exercise_3().items()})
