"""Explanatory diagrams drawn with matplotlib (no data needed): the re-id task, and
global vs part-based pooling under occlusion. Used by notebook 00 and the README."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle

# Part colours shared by every figure of the course (background first).
PART_COLOURS = ("#d9d9d9", "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
                "#f032e6", "#bfef45")  # fmt: skip


def draw_pedestrian(
    ax: Axes,
    x: float,
    y: float,
    height: float = 1.0,
    shirt: str = "#c0392b",
    pants: str = "#2c3e50",
    hair: str = "#3b2a1a",
    alpha: float = 1.0,
) -> None:
    """A simple pedestrian with its feet at ``(x, y)``: head, torso with arms, legs."""
    h = height
    w = 0.34 * h
    ax.add_patch(Rectangle((x - w * 0.45, y), w * 0.4, 0.45 * h, color=pants, alpha=alpha))
    ax.add_patch(Rectangle((x + w * 0.05, y), w * 0.4, 0.45 * h, color=pants, alpha=alpha))
    ax.add_patch(Rectangle((x - w / 2, y + 0.45 * h), w, 0.35 * h, color=shirt, alpha=alpha))
    ax.add_patch(Rectangle((x - w * 0.72, y + 0.5 * h), w * 0.2, 0.3 * h, color=shirt, alpha=alpha))
    ax.add_patch(Rectangle((x + w * 0.52, y + 0.5 * h), w * 0.2, 0.3 * h, color=shirt, alpha=alpha))
    ax.add_patch(Circle((x, y + 0.89 * h), 0.09 * h, color="#f1c27d", alpha=alpha))
    ax.add_patch(Rectangle((x - 0.09 * h, y + 0.93 * h), 0.18 * h, 0.06 * h, color=hair))


def _frame(ax: Axes, x: float, y: float, w: float, h: float, colour: str, lw: float = 3) -> None:
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=lw))


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="#555"))


def draw_reid_task(figsize: tuple[float, float] = (10, 3.2)) -> Figure:
    """Query -> embedding -> distances to a gallery from other cameras -> ranked list."""
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 3.2)
    ax.axis("off")
    # Query: a person seen by camera 1.
    draw_pedestrian(ax, 0.8, 0.7, 1.6, shirt="#c0392b", pants="#2c3e50")
    _frame(ax, 0.2, 0.5, 1.2, 2.0, "#333", 2)
    ax.text(0.8, 2.7, "query\n(camera 1)", ha="center", fontsize=10)
    _arrow(ax, (1.5, 1.5), (2.4, 1.5))
    ax.text(2.9, 1.5, "embed\n[D]", ha="center", va="center", fontsize=10,
            bbox={"boxstyle": "round", "fc": "#eef"})  # fmt: skip
    _arrow(ax, (3.4, 1.5), (4.2, 1.5))
    # Gallery ranked by distance: correct matches framed green, wrong ones red.
    gallery = [
        ("#c0392b", "#2c3e50", True, "cam 3"),
        ("#c0392b", "#7f8c8d", False, "cam 2"),
        ("#c0392b", "#2c3e50", True, "cam 5"),
        ("#2980b9", "#2c3e50", False, "cam 4"),
        ("#27ae60", "#8e44ad", False, "cam 2"),
    ]
    for i, (shirt, pants, correct, cam) in enumerate(gallery):
        x0 = 4.4 + i * 1.1
        draw_pedestrian(ax, x0 + 0.5, 0.7, 1.6, shirt=shirt, pants=pants)
        _frame(ax, x0, 0.5, 1.0, 2.0, "#2ca02c" if correct else "#d62728")
        ax.text(x0 + 0.5, 2.7, f"rank {i + 1}\n{cam}", ha="center", fontsize=9)
    ax.text(7.0, 0.15, "gallery, sorted by distance to the query (green = same identity)",
            ha="center", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig


def draw_global_vs_parts(figsize: tuple[float, float] = (10, 4.2)) -> Figure:
    """Global pooling mixes the occluder into the embedding; part pooling keeps visible
    parts clean and flags the hidden ones as invisible."""
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    titles = ("global: one vector for the whole box", "part-based: one vector per visible part")
    for ax, title in zip(axes, titles):
        ax.set_xlim(0, 5)
        ax.set_ylim(0, 4)
        ax.axis("off")
        ax.set_title(title, fontsize=11)
        draw_pedestrian(ax, 1.2, 0.4, 3.0, shirt="#c0392b", pants="#2c3e50")
        # An occluder (a car, say) hides the legs.
        ax.add_patch(Rectangle((0.2, 0.2), 2.1, 1.4, color="#95a5a6"))
        ax.text(1.25, 0.85, "occluder", ha="center", color="white", fontsize=10)
    # Left: a single pooled vector that is part person, part occluder.
    ax = axes[0]
    ax.add_patch(Rectangle((0.15, 0.15), 2.2, 3.4, fill=False, ls="--", lw=2, ec="#555"))
    _arrow(ax, (2.5, 2.0), (3.2, 2.0))
    colours = ["#c0392b"] * 4 + ["#95a5a6"] * 4
    for i, colour in enumerate(colours):
        ax.add_patch(Rectangle((3.4, 0.4 + i * 0.4), 0.5, 0.38, color=colour))
    ax.text(4.2, 2.0, "person +\noccluder\nmixed", va="center", fontsize=9)
    # Right: head, torso, legs pooled separately; legs invisible.
    ax = axes[1]
    parts = [("head", 3.05, 0.6, PART_COLOURS[1], True), ("torso", 1.75, 1.3, PART_COLOURS[2], True),
             ("legs", 0.3, 1.45, PART_COLOURS[3], False)]  # fmt: skip
    for name, y0, h, colour, visible in parts:
        ax.add_patch(Rectangle((0.55, y0), 1.3, h, fill=False, ec=colour, lw=2.5,
                               ls="-" if visible else ":"))  # fmt: skip
        ax.text(3.3, y0 + h / 2, f"{name}: {'visible' if visible else 'invisible'}",
                va="center", fontsize=10, color=colour if visible else "#999")  # fmt: skip
        _arrow(ax, (1.95, y0 + h / 2), (3.2, y0 + h / 2))
    ax.text(2.5, -0.05, "distance = mean over parts visible in both images", ha="center",
            fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig
