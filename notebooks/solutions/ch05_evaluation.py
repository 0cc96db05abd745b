"""Solution to exercise 3 of chapter 05: a distractor in the hand-made example of section 1.

Run ``python notebooks/solutions/ch05_evaluation.py``; ``tests/test_solutions.py`` runs it too.
Exercises 1 and 2 need the chapter's trained models: run them in the notebook.
"""

from __future__ import annotations

import numpy as np

from bpbreid.metrics import evaluate_rank

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


def exercise_3():
    """CMC, per-query AP and mAP with the distractor added as gallery image g6."""
    distmat = np.concatenate([DISTMAT, np.full((2, 1), 0.05)], axis=1)
    g_pids, g_camids = np.append(G_PIDS, 0), np.append(G_CAMIDS, 2)
    cmc, mAP, details = evaluate_rank(
        distmat, Q_PIDS, g_pids, Q_CAMIDS, g_camids, max_rank=7, return_details=True
    )
    return np.asarray(cmc), np.asarray(details.average_precision), float(mAP)


if __name__ == "__main__":
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
