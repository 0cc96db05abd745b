"""Occluders: their kinds, their random shapes, and an extent fitted to a hidden fraction.

Boxes, walls, poles, vehicles, bushes and *other pedestrians* of the dataset (the occluder
that fools a global embedding most) are drawn in front of the person; :func:`_fit_occluder`
bisects an occluder's extent until it hides the requested fraction of the silhouette.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bpbreid.data.synthetic.appearance import RGB, _pick, identity_appearance, sample_pose
from bpbreid.data.synthetic.drawing import _draw_person_on, _Painter

OCCLUDER_KINDS: tuple[str, ...] = ("pedestrian", "box", "wall", "pole", "vehicle", "bush")
# Occluder mix. Other pedestrians are the most frequent and the most harmful for a global
# embedding (their clothes are those of real identities), as in crowded street scenes.
OCCLUDER_WEIGHTS: tuple[float, ...] = (0.35, 0.15, 0.15, 0.1, 0.15, 0.1)
# An occluding pedestrian stands at least this far (fraction of the image width) to the side
# of the person, as in the re-id benchmarks, where the box is centred on the person of
# interest: a passer-by squarely in front would make "who is the person?" unanswerable.
PEDESTRIAN_MIN_OFFSET = 0.3
PEDESTRIAN_GROWTH = 0.35  # scale increase at full extent

_OCCLUDER_COLORS: tuple[RGB, ...] = (
    (150, 110, 70), (90, 90, 95), (170, 170, 160), (60, 60, 65), (180, 60, 40), (40, 70, 120),
    (200, 190, 150), (110, 130, 90),
)  # fmt: skip
_GREENS: tuple[RGB, ...] = ((40, 100, 40), (60, 130, 50), (30, 80, 35), (80, 120, 40))


@dataclass
class _OccluderPlan:
    """The random parameters of one occluder; ``extent`` in [0, 1] scales how much it hides."""

    kind: str
    params: dict = field(default_factory=dict)


def _plan_occluder(
    kind: str, rng: np.random.Generator, pool: Sequence[int], seed: int, exclude: int
) -> _OccluderPlan:
    p: dict = {"color": _pick(rng, _OCCLUDER_COLORS)}
    if kind == "pedestrian":
        candidates = [pid for pid in pool if pid != exclude] or [exclude + 1]
        other = int(_pick(rng, candidates))
        p.update(
            pid=other,
            appearance=identity_appearance(seed, other),
            pose=sample_pose(rng),
            side=1.0 if rng.random() < 0.5 else -1.0,
            scale=float(rng.uniform(0.95, 1.2)),
            drop=float(rng.uniform(0.0, 0.08)),
        )
    elif kind == "wall":
        p["side"] = _pick(rng, ("bottom", "bottom", "left", "right"))
    elif kind == "box":
        p["anchor"] = float(rng.uniform(-0.35, 0.35))
        p["aspect"] = float(rng.uniform(0.6, 1.6))
    elif kind == "pole":
        p["x"] = float(rng.uniform(0.3, 0.7))
    elif kind == "bush":
        p["color"] = _pick(rng, _GREENS)
        p["blobs"] = rng.uniform(-1, 1, size=(7, 3)).astype(np.float32)
        p["x"] = float(rng.uniform(0.3, 0.7))
    return _OccluderPlan(kind, p)


def _draw_occluder(
    painter: _Painter,
    plan: _OccluderPlan,
    extent: float,
    height: int,
    width: int,
    person_height: float,
    seed: int,
) -> None:
    """Draw one occluder at ``extent`` (0: hides little, 1: hides most) with ``painter``."""
    p, H, W = plan.params, height, width
    color = p["color"]
    e = float(np.clip(extent, 0.0, 1.0))
    if plan.kind == "pedestrian":
        # Closer to the camera (larger) as it hides more: beside the person it can then
        # still hide up to about half of the body.
        ph = person_height * p["scale"] * (1.0 + PEDESTRIAN_GROWTH * e)
        span = 0.95 - PEDESTRIAN_MIN_OFFSET
        offset = p["side"] * (PEDESTRIAN_MIN_OFFSET + (1.0 - e) * span) * W
        top = H - ph * 0.98 + p["drop"] * H
        rng = np.random.default_rng([seed, 400, p["pid"]])
        _draw_person_on(
            painter,
            p["appearance"],
            p["pose"],
            W / 2 + offset,
            top,
            ph,
            rng if painter.draw is not None else None,
        )
    elif plan.kind == "wall":
        darker = tuple(int(c * 0.8) for c in color)
        if p["side"] == "bottom":
            y = H * (1.0 - (0.12 + 0.78 * e))
            painter.polygon([(-1, y), (W + 1, y), (W + 1, H + 1), (-1, H + 1)], color)
            if painter.draw is not None:  # brick courses
                step = max(3.0, H * 0.06)
                for k in range(1, int((H - y) / step) + 1):
                    painter.draw.line([(0, y + k * step), (W, y + k * step)], fill=darker, width=1)
        else:
            x = W * (0.12 + 0.78 * e)
            x0, x1 = (-1, x) if p["side"] == "left" else (W - x, W + 1)
            painter.polygon([(x0, -1), (x1, -1), (x1, H + 1), (x0, H + 1)], color)
            if painter.draw is not None:
                edge = x1 if p["side"] == "left" else x0
                painter.draw.line([(edge, 0), (edge, H)], fill=darker, width=max(1, W // 32))
    elif plan.kind == "box":
        w = W * (0.35 + 0.75 * e) * p["aspect"] ** 0.5
        h = H * (0.15 + 0.6 * e) / p["aspect"] ** 0.5
        x = W / 2 + p["anchor"] * W
        y1 = H + 1
        painter.polygon(
            [(x - w / 2, y1 - h), (x + w / 2, y1 - h), (x + w / 2, y1), (x - w / 2, y1)], color
        )
        if painter.draw is not None:  # lid edge and tape
            lid = tuple(int(c * 0.75) for c in color)
            painter.draw.line(
                [(x - w / 2, y1 - h), (x + w / 2, y1 - h)], fill=lid, width=max(1, H // 40)
            )
            painter.draw.line([(x, y1 - h), (x, y1)], fill=lid, width=max(1, W // 32))
    elif plan.kind == "pole":
        w = W * (0.08 + 0.5 * e)
        x = W * p["x"]
        painter.polygon(
            [(x - w / 2, -1), (x + w / 2, -1), (x + w / 2, H + 1), (x - w / 2, H + 1)], color
        )
        if painter.draw is not None:  # a highlight stripe reads as a cylinder
            light = tuple(min(255, int(c * 1.3) + 20) for c in color)
            painter.draw.line(
                [(x - w / 4, 0), (x - w / 4, H)], fill=light, width=max(1, int(w / 6))
            )
    elif plan.kind == "vehicle":
        y = H * (1.0 - (0.2 + 0.62 * e))
        rounding = W * 0.25
        painter.polygon(
            [(-1, y + rounding * 0.6), (rounding * 0.5, y), (W - rounding * 0.5, y),
             (W + 1, y + rounding * 0.6), (W + 1, H + 1), (-1, H + 1)],
            color,
        )  # fmt: skip
        if painter.draw is not None:
            glass = (60, 75, 90)
            gy = y + (H - y) * 0.12
            painter.draw.polygon(
                [
                    (W * 0.1, gy),
                    (W * 0.9, gy),
                    (W * 0.95, gy + (H - y) * 0.25),
                    (W * 0.05, gy + (H - y) * 0.25),
                ],
                fill=glass,
            )
            r = W * 0.14
            for wx in (W * 0.15, W * 0.85):
                painter.draw.ellipse((wx - r, H - r, wx + r, H + r), fill=(20, 20, 20))
    elif plan.kind == "bush":
        cx, base = W * p["x"], H * 1.02
        size = H * (0.18 + 0.55 * e)
        dark = tuple(int(c * 0.7) for c in color)
        for k, (dx, dy, dr) in enumerate(p["blobs"]):
            r = size * (0.45 + 0.12 * dr)
            bx = cx + dx * size * 0.6
            by = base - size * 0.55 - (dy + 1) * size * 0.25
            painter.ellipse(bx, by, r * 0.9, r, dark if k % 3 == 0 else color)
        painter.ellipse(cx, base, size * 0.9, size * 0.7, color)
    else:  # pragma: no cover - kinds come from OCCLUDER_KINDS
        raise ValueError(f"unknown occluder kind '{plan.kind}'")


def _occluder_mask(
    plan: _OccluderPlan, extent: float, height: int, width: int, person_height: float, seed: int
) -> np.ndarray:
    painter = _Painter((width, height), None)
    _draw_occluder(painter, plan, extent, height, width, person_height, seed)
    return np.asarray(painter.mask) > 127


def _fit_occluder(
    rng: np.random.Generator,
    person_mask: np.ndarray,
    person_height: float,
    hidden_range: tuple[float, float],
    pool: Sequence[int],
    seed: int,
    exclude: int,
    kind: str | None,
) -> tuple[_OccluderPlan, float, float]:
    """Choose an occluder and its extent so that the hidden fraction falls in ``hidden_range``.

    Bisection on the extent (the hidden fraction grows with it); a kind that cannot hide
    enough of this person (a thin pole in front of a side view) is replaced by another.

    Returns:
        ``(plan, extent, hidden fraction)``.
    """
    height, width = person_mask.shape
    area = max(1, int(person_mask.sum()))
    lo, hi = hidden_range
    target = float(rng.uniform(lo, hi))

    def hidden(plan: _OccluderPlan, extent: float) -> float:
        mask = _occluder_mask(plan, extent, height, width, person_height, seed)
        return float((mask & person_mask).sum()) / area

    kinds = [kind] if kind else []
    kinds += [str(k) for k in rng.choice(OCCLUDER_KINDS, size=4, p=OCCLUDER_WEIGHTS)]
    kinds += ["wall"]  # a bottom or side wall can always reach the target
    best: tuple[_OccluderPlan, float, float] | None = None
    for attempt, k in enumerate(kinds):
        plan = _plan_occluder(k, rng, pool, seed, exclude)
        if attempt == len(kinds) - 1:
            plan.params["side"] = "bottom"
        low_e, high_e = 0.0, 1.0
        h_low, h_high = hidden(plan, low_e), hidden(plan, high_e)
        if h_high < lo or h_low > hi:
            continue
        extent, frac = (low_e, h_low) if h_low >= lo else (high_e, h_high)
        for _ in range(9):
            mid = (low_e + high_e) / 2
            frac_mid = hidden(plan, mid)
            if lo <= frac_mid <= hi:
                extent, frac = mid, frac_mid
                if abs(frac_mid - target) < 0.04:
                    break
            if frac_mid < target:
                low_e = mid
            else:
                high_e = mid
        if lo <= frac <= hi:
            return plan, extent, frac
        best = best or (plan, extent, frac)
    if best is None:  # pragma: no cover - the bottom wall covers any fraction up to ~90%
        raise RuntimeError("could not place an occluder")
    return best
