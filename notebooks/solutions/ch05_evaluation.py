"""Solutions to the exercises of chapter 05 (evaluation).

Run ``python notebooks/solutions/ch05_evaluation.py``; ``tests/test_solutions.py`` runs it too.
Exercises 1 and 2 use a stand-in for the chapter's part-based model: the CPU model trained a few
steps on the tiny synthetic set (generated in a temporary folder), so their numbers show how to
read the evaluation, not what the trained model of the chapter reaches; run them in the notebook
on ``models["bpbreid"]`` for those.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from bpbreid.config import apply_overrides, load_config
from bpbreid.data.datasets import build_dataset_from_config, build_loaders
from bpbreid.data.synthetic import generate
from bpbreid.engine import evaluate
from bpbreid.losses import GiLtLoss
from bpbreid.metrics import evaluate_rank
from bpbreid.model import build_model

# The chapter's example: 2 queries, 6 gallery images.
DISTMAT = np.array(
    [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # q0
     [0.2, 0.4, 0.5, 0.3, 0.6, 0.1]]  # q1
)  # fmt: skip
Q_PIDS, Q_CAMIDS = np.array([1, 2]), np.array([1, 1])
G_PIDS, G_CAMIDS = np.array([1, 2, 1, 3, 1, 2]), np.array([1, 2, 2, 1, 3, 3])

# By hand: the distractor (id 0, camera 2) comes first for both queries and is never a correct
# match, so every correct match moves one rank down.
#   q0: d x, g1 x, g2 v (rank 3), g3 x, g4 v (rank 5): AP = (1/3 + 2/5) / 2 = 0.367
#   q1: d x, g5 v (rank 2), g0 x, g3 x, g1 v (rank 5): AP = (1/2 + 2/5) / 2 = 0.45
#   mAP = 0.408; CMC = [0, 0.5, 1, 1, ...] (no query is right at rank 1 any more).
PREDICTED_AP = [(1 / 3 + 2 / 5) / 2, (1 / 2 + 2 / 5) / 2]
PREDICTED_CMC = [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]


@functools.cache
def _trained(steps: int = 3):
    """The CPU part-based model after ``steps`` GiLt steps on the tiny set; cfg and loaders."""
    root = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    generate(root / "synthetic", "tiny", progress=False)
    cfg = load_config(
        "synthetic_cpu",
        [f"data.root={root}", "data.synthetic.preset=tiny", "train.batch_size=16",
         "data.workers=0", "train.device=cpu"],
    )  # fmt: skip
    data = build_dataset_from_config(cfg)
    loaders = build_loaders(cfg, data)
    torch.manual_seed(0)
    model = build_model(cfg, data.num_train_pids).train()
    criterion = GiLtLoss(cfg.loss, soft_targets=cfg.model.bpbreid.masks.soft_targets)
    for _, batch in zip(range(steps), loaders["train"]):
        loss, _ = criterion(model(batch["image"]), batch["pid"], batch["target_masks"])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():  # plain SGD: enough for a few steps, and cheap to set up
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.01 * p.grad
    return model.eval(), cfg, loaders


def _evaluate(model, cfg, loaders):
    return evaluate(
        model, loaders["query"], loaders["gallery"], cfg,
        extra_query_loaders={"query_holistic": loaders["query_holistic"]}, progress=False,
    )  # fmt: skip


@functools.cache
def exercise_1() -> dict[str, dict[str, np.ndarray]]:
    """Mean visibility per part (foreground first) on occluded and holistic queries.

    ``binary``: a part is visible where it wins the argmax somewhere (the default); ``soft``: the
    maximum of its map. The soft score of a hidden part is not 0 but the highest probability it
    reaches anywhere, so hidden parts keep some weight; compare ``holistic - occluded`` per part.
    """
    model, cfg, loaders = _trained()
    answer = {}
    for name, binary in (("binary", True), ("soft", False)):
        model.testing_binary_visibility_score = binary
        result = _evaluate(model, cfg, loaders)
        answer[name] = {
            s: np.asarray(q["visibility"], dtype=float).mean(0) for s, q in result.queries.items()
        }
    model.testing_binary_visibility_score = True
    return answer


@functools.cache
def exercise_2() -> dict[str, dict[str, float]]:
    """Rank-1, mAP and number of embeddings P with each choice of ``test_embeddings``."""
    model, cfg, loaders = _trained()
    answer = {}
    for embeddings in ("[bn_global]", "[parts]", "[bn_foreground]", "[bn_foreground,parts]"):
        override = f"model.bpbreid.test_embeddings={embeddings}"
        result = _evaluate(model, apply_overrides(cfg, [override]), loaders)
        answer[embeddings] = {
            "rank1": float(result.metrics["query"]["rank1"]),
            "mAP": float(result.metrics["query"]["mAP"]),
            "P": int(np.asarray(result.queries["query"]["features"]).shape[1]),
        }
    return answer


def exercise_3():
    """CMC, per-query AP and mAP with the distractor added as gallery image g6."""
    distmat = np.concatenate([DISTMAT, np.full((2, 1), 0.05)], axis=1)
    g_pids, g_camids = np.append(G_PIDS, 0), np.append(G_CAMIDS, 2)
    cmc, mAP, details = evaluate_rank(
        distmat, Q_PIDS, g_pids, Q_CAMIDS, g_camids, max_rank=7, return_details=True
    )
    return np.asarray(cmc), np.asarray(details.average_precision), float(mAP)


if __name__ == "__main__":
    print("1. mean visibility per embedding (foreground, then parts):")
    for kind, sets in exercise_1().items():
        for name, rates in sets.items():
            print(f"   {kind:<6} {name:<15}", rates.round(2).tolist())
    print("2. occluded queries with each test_embeddings:")
    for embeddings, row in exercise_2().items():
        print(f"   {embeddings:<23} P={row['P']} rank-1 {row['rank1']:.1f} mAP {row['mAP']:.1f}")
    cmc, ap, mAP = exercise_3()
    print("3. with a distractor at distance 0.05")
    print("   CMC (rank 1..7):", cmc.round(3).tolist(), " predicted:", PREDICTED_CMC)
    print(
        "   AP per query:   ",
        ap.round(3).tolist(),
        " predicted:",
        np.round(PREDICTED_AP, 3).tolist(),
    )
    print(f"   mAP {mAP:.3f} (was 0.625)")
