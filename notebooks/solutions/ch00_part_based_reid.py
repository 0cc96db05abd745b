"""Solutions to the exercises of chapter 00 (the numerical toy of section 2).

Run ``python notebooks/solutions/ch00_part_based_reid.py``; ``tests/test_solutions.py`` runs it too.
The toy is the notebook's, with its sizes (100 identities, K = 4 parts of D = 16 numbers) and seed.
"""

from __future__ import annotations

import numpy as np


def make_toy(noise: float = 1.0, seed: int = 0, num_ids: int = 100, k: int = 4, d: int = 16):
    """The chapter's toy: returns ``rank1(kind, occluder_of, hidden=2, use_visibility=True)``."""
    rng = np.random.default_rng(seed)
    appearance = rng.normal(size=(num_ids, k, d))
    obstacle = rng.normal(size=d)

    def photo(pid, occluder=None, hidden=2):
        feats = appearance[pid] + noise * rng.normal(size=(k, d))
        visible = np.ones(k, dtype=bool)
        if occluder is not None:  # the `hidden` lowest parts are covered
            feats[k - hidden :] = occluder[-hidden:] + noise * rng.normal(size=(hidden, d))
            visible[k - hidden :] = False
        return feats, visible

    gallery = [photo(pid) for pid in range(num_ids)]
    g_feats = np.stack([f for f, _ in gallery])
    g_vis = np.stack([v for _, v in gallery])

    def rank1(kind, occluder_of, hidden=2, use_visibility=True):
        hits = 0
        for pid in range(num_ids):
            q_feats, q_vis = photo(pid, occluder_of(pid), hidden)
            if kind == "global":
                dist = np.linalg.norm(g_feats.reshape(num_ids, -1) - q_feats.reshape(-1), axis=1)
            else:
                per_part = np.linalg.norm(g_feats - q_feats, axis=2)
                common = g_vis & q_vis if use_visibility else np.ones_like(g_vis)
                dist = (per_part * common).sum(1) / common.sum(1)
            hits += int(dist.argmin() == pid)
        return 100.0 * hits / num_ids

    scenarios = {
        "holistic": lambda pid: None,
        "obstacle": lambda pid: np.stack([obstacle] * k),
        "another person": lambda pid: appearance[(pid + 1) % num_ids],
    }
    return rank1, scenarios


def exercise_1() -> dict[str, tuple[float, float]]:
    """Hide one part instead of two: rank-1 (global, part-based) per occluded scenario."""
    out = {}
    for hidden in (2, 1):
        rank1, scenarios = make_toy()
        for name in ("obstacle", "another person"):
            occ = scenarios[name]
            out[f"{name}, {hidden} hidden"] = (
                rank1("global", occ, hidden),
                rank1("parts", occ, hidden),
            )
    return out


def exercise_2() -> dict[str, tuple[float, float]]:
    """Part-based distance with and without visibility, per scenario."""
    rank1, scenarios = make_toy()
    return {
        name: (rank1("parts", occ, use_visibility=True), rank1("parts", occ, use_visibility=False))
        for name, occ in scenarios.items()
    }


def exercise_3() -> dict[str, dict[str, float]]:
    """Gap part-based minus global (rank-1 points) at photo noise 1.0 and 1.5."""
    out = {}
    for noise in (1.0, 1.5):
        rank1, scenarios = make_toy(noise=noise)
        out[f"noise {noise}"] = {
            name: rank1("parts", occ) - rank1("global", occ) for name, occ in scenarios.items()
        }
    return out


if __name__ == "__main__":
    print("1. rank-1 global / part-based with 2 or 1 hidden parts")
    for name, (g, p) in exercise_1().items():
        print(f"   {name:<26} {g:5.1f}% / {p:5.1f}%")
    print("2. part-based rank-1 with / without visibility")
    for name, (v, nv) in exercise_2().items():
        print(f"   {name:<26} {v:5.1f}% / {nv:5.1f}%")
    print("3. gap part-based - global (rank-1 points)")
    for noise, gaps in exercise_3().items():
        print(f"   {noise}: " + ", ".join(f"{k} {v:+.0f}" for k, v in gaps.items()))
