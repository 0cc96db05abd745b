"""Ranking figures: a query, its top-k gallery matches and every part's evidence.

One figure per query, as the official BPBReID visualization shows it:

* first row the query, then the top-k gallery matches, each row on a green (correct
  identity) or red (wrong identity) background;
* column 0 the image; one further column per test embedding (foreground, then each part)
  with its attention heatmap over the image, framed in a colour that goes from red
  (invisible) to green (visible); invisible parts are greyed out;
* under each map the part's visibility and its distance to the query (the largest and the
  smallest distance of the row in bold);
* on the left the rank and "pair visibility | overall distance"; on the right the
  identity, camera, file name, visible parts and min/mean/max part distances.

:func:`plot_ranking` takes plain arrays (no model needed); :func:`save_rankings` draws
the worst, best, random or chosen queries of an evaluation.

Reference:
    Somers et al., WACV 2023, and the official BPBReID ranking visualization
    (``visrank`` in its test configuration).
"""

from __future__ import annotations

import os
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from bpbreid.viz.masks import to_image

__all__ = [
    "RankedImage",
    "channel_for_embedding",
    "plot_ranking",
    "ranking_items",
    "save_rankings",
    "select_queries",
]

CORRECT_COLOUR = "#7ccf7c"
WRONG_COLOUR = "#ef8080"
QUERY_COLOUR = "#d8dde6"
# Below this visibility score a part is drawn as invisible (greyed out).
VISIBLE_THRESHOLD = 0.5
CELL_WIDTH = 0.95  # inches per image column
CELL_HEIGHT = 2.35  # inches per row (image + two lines of text)
FOOTER_HEIGHT = 0.45  # inches under the last row, for its visibility/distance labels
SIDE_WIDTH = 2.1  # inches for the text on the right
LEFT_WIDTH = 1.0  # inches for the rank annotation on the left


@dataclass
class RankedImage:
    """One image of a ranking figure, as plain data.

    Attributes:
        image: ``uint8 [H, W, 3]`` (or float in [0, 1], or a normalized ``[3, H, W]``).
        pid: identity.
        camid: camera.
        path: file path (its name is printed).
        masks: ``[K+1, h, w]`` part attention (channel 0 = background), any resolution.
        visibility: ``[P]`` visibility of each test embedding.
        part_distances: ``[P]`` distance of each embedding to the query (gallery only).
        distance: overall distance to the query (gallery only).
    """

    image: Any
    pid: int
    camid: int
    path: str = ""
    masks: Any = None
    visibility: Any = None
    part_distances: Any = None
    distance: float | None = None


def channel_for_embedding(names: Sequence[str]) -> list[int | str | None]:
    """Which mask each embedding's heatmap shows.

    ``"foreground"`` (max over the parts), ``0`` (background), ``k`` (part k, 1-based
    channel) or ``None`` (global: no map). Part embeddings are numbered in order.
    """
    out: list[int | str | None] = []
    part = 0
    for name in names:
        base = name.removeprefix("bn_")
        if base in ("foreground", "concat_parts"):
            out.append("foreground")
        elif base == "background":
            out.append(0)
        elif base == "global":
            out.append(None)
        else:
            part += 1
            out.append(part)
    return out


def _pretty(name: str) -> str:
    return name.removeprefix("bn_").removesuffix("_mask").replace("_", " ")


def _resize_bilinear(heat: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a ``[h, w]`` map (pixel centres aligned)."""
    h, w = heat.shape
    ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
    xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = heat[y0][:, x0] * (1 - wx) + heat[y0][:, x1] * wx
    bottom = heat[y1][:, x0] * (1 - wx) + heat[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def _heatmap(image: np.ndarray, masks: Any, channel: int | str | None) -> np.ndarray:
    """The image with one attention map blended over it (``jet``), ``float [H, W, 3]``."""
    if masks is None or channel is None:
        return image
    maps = np.asarray(masks, dtype=np.float32)
    heat = maps[1:].max(axis=0) if channel == "foreground" else maps[int(channel)]
    heat = _resize_bilinear(heat, *image.shape[:2])
    colours = plt.get_cmap("jet")(np.clip(heat, 0.0, 1.0))[..., :3]
    return 0.5 * image + 0.5 * colours


def _grey(picture: np.ndarray) -> np.ndarray:
    lum = picture @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return 0.35 * np.repeat(lum[..., None], 3, axis=-1) + 0.45


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def plot_ranking(
    query: RankedImage,
    gallery: Sequence[RankedImage],
    embedding_names: Sequence[str],
    columns: Sequence[int] | None = None,
    title: str | None = None,
    dpi: float | None = None,
) -> Figure:
    """The ranking figure of one query.

    Args:
        query: the query image (its ``visibility`` is ``[P]``).
        gallery: its top-k gallery matches, best first (with ``part_distances`` ``[P]`` and
            ``distance``).
        embedding_names: names of the P test embeddings (``"bn_foreground"``, part names).
        columns: which embeddings get a column (default: all P).
        title: figure title.
        dpi: figure resolution; default: the active style's ``figure.dpi`` (the course's
            figure style sets it in every notebook).

    Returns:
        A figure with ``(1 + k) x (1 + len(columns))`` image axes.
    """
    names = list(embedding_names)
    shown = list(range(len(names))) if columns is None else list(columns)
    channels = channel_for_embedding(names)
    n_rows, n_cols = 1 + len(gallery), 1 + len(shown)
    width = LEFT_WIDTH + n_cols * CELL_WIDTH + SIDE_WIDTH
    header = 0.75 if title else 0.35  # inches above the first row (title, column names)
    height = n_rows * CELL_HEIGHT + header + FOOTER_HEIGHT
    fig = plt.figure(figsize=(width, height), dpi=dpi)
    top = 1 - header / height
    grid = fig.add_gridspec(
        n_rows, n_cols, left=LEFT_WIDTH / width, right=1 - SIDE_WIDTH / width,
        top=top, bottom=FOOTER_HEIGHT / height, wspace=0.12, hspace=0.55,
    )  # fmt: skip
    axes = np.empty((n_rows, n_cols), dtype=object)
    for r in range(n_rows):
        for c in range(n_cols):
            axes[r, c] = fig.add_subplot(grid[r, c])
    q_vis = _as_array(query.visibility, len(names), 1.0)
    rows = [(query, None)] + [(item, rank) for rank, item in enumerate(gallery, start=1)]
    for r, (item, rank) in enumerate(rows):
        _draw_row(fig, axes[r], item, rank, query, q_vis, names, shown, channels)
    for c, index in enumerate(shown, start=1):
        axes[0, c].set_title(_pretty(names[index]), fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / height)
    return fig


def _as_array(values: Any, length: int, default: float) -> np.ndarray:
    if values is None:
        return np.full(length, default, dtype=np.float32)
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32).reshape(-1)


def _draw_row(
    fig: Figure,
    axes_row: np.ndarray,
    item: RankedImage,
    rank: int | None,
    query: RankedImage,
    q_vis: np.ndarray,
    names: list[str],
    shown: list[int],
    channels: list[int | str | None],
) -> None:
    is_query = rank is None
    picture = to_image(item.image)
    vis = _as_array(item.visibility, len(names), 1.0)
    dists = None if is_query else _as_array(item.part_distances, len(names), np.nan)
    pair = np.sqrt(np.clip(q_vis * vis, 0.0, 1.0))

    # Row background (behind the axes, the labels under them and the side text): green for
    # the right identity, red for a wrong one.
    first, last = axes_row[0].get_position(), axes_row[-1].get_position()
    fig_w, fig_h = fig.get_size_inches()
    if is_query or query.pid < 0 or item.pid < 0:
        # Images of unknown identity (your own photos: pid -1) cannot be right or wrong.
        colour = QUERY_COLOUR
    else:
        colour = CORRECT_COLOUR if item.pid == query.pid else WRONG_COLOUR
    x0, x1 = first.x0 - 0.9 * LEFT_WIDTH / fig_w, last.x1 + (SIDE_WIDTH - 0.08) / fig_w
    y0, y1 = first.y0 - 0.38 / fig_h, first.y1 + (0.22 if is_query else 0.06) / fig_h
    fig.add_artist(
        Rectangle((x0, y0), x1 - x0, y1 - y0, transform=fig.transFigure, facecolor=colour,
                  edgecolor="none", zorder=-1)
    )  # fmt: skip

    ax = axes_row[0]
    ax.imshow(picture)
    _frame(ax, "#333333", 1.0)
    if is_query:
        ax.set_ylabel("query", fontsize=9, fontweight="bold")
    else:
        weight = float(pair.sum())
        pair_text = f"{weight:.0f}" if abs(weight - round(weight)) < 1e-6 else f"{weight:.1f}"
        ax.set_ylabel(
            f"#{rank}\n{pair_text}/{len(names)} | {_fmt(float(item.distance or 0.0))}",
            fontsize=8,
        )

    # Bold: largest and smallest distance among the embeddings visible in both images.
    bold: set[int] = set()
    if dists is not None:
        valid = [i for i in shown if pair[i] > 0 and np.isfinite(dists[i])]
        candidates = valid or [i for i in shown if np.isfinite(dists[i])]
        if candidates:
            bold = {
                max(candidates, key=lambda i: dists[i]),
                min(candidates, key=lambda i: dists[i]),
            }

    for c, index in enumerate(shown, start=1):
        ax = axes_row[c]
        overlay = _heatmap(picture, item.masks, channels[index])
        visible = vis[index] >= VISIBLE_THRESHOLD
        ax.imshow(overlay if visible else _grey(overlay))
        _frame(ax, plt.get_cmap("RdYlGn")(float(np.clip(vis[index], 0.0, 1.0))), 3.0)
        label = f"v {_fmt(vis[index])}"
        if dists is not None:
            label += f"\nd {_fmt(dists[index])}"
        ax.set_xlabel(label, fontsize=7, fontweight="bold" if index in bold else "normal")

    side = [f"id {item.pid} | cam {item.camid}", _short(os.path.basename(item.path))]
    if is_query:
        seen = [_pretty(names[i]) for i in range(len(names)) if vis[i] >= VISIBLE_THRESHOLD]
        side.append(textwrap.fill("visible: " + (", ".join(seen) if seen else "none"), 30))
    elif dists is not None:
        valid = dists[(pair > 0) & np.isfinite(dists)]
        if valid.size:
            side.append(
                f"part d min/mean/max\n{_fmt(valid.min())} / {_fmt(valid.mean())} / "
                f"{_fmt(valid.max())}"
            )
        side.append(f"visible in both: {int((pair > 0).sum())}/{len(names)}")
    last_ax = axes_row[-1]
    last_ax.text(
        1.12, 0.5, "\n".join(side), transform=last_ax.transAxes, fontsize=7.5,
        va="center", ha="left", wrap=False,
    )  # fmt: skip


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else name[: limit - 3] + "..."


def _frame(ax: Any, colour: Any, width: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


# --------------------------------------------------------------------------------------
# From an evaluation result
# --------------------------------------------------------------------------------------


def select_queries(
    result: Any, which: str | Sequence[int] = "worst", count: int = 10, set_name: str = "query",
    seed: int = 0,
) -> list[int]:  # fmt: skip
    """Query indices to draw: ``"worst"``/``"best"`` (by AP), ``"random"``, or given indices.

    ``which`` may also be a string of indices (``"0,5,9"``). Skipped queries (no correct
    match in the gallery) are never chosen by AP.
    """
    n_queries = len(result.queries[set_name]["pids"])
    if isinstance(which, str) and which not in ("worst", "best", "random"):
        try:
            which = [int(x) for x in which.split(",") if x.strip()]
        except ValueError:
            raise ValueError(
                f"Unknown query selection '{which}': use worst, best, random or indices like 0,5,9."
            ) from None
    if not isinstance(which, str):
        indices = [int(i) for i in which]
        bad = [i for i in indices if not 0 <= i < n_queries]
        if bad:
            raise ValueError(f"Query indices {bad} out of range: {set_name} has {n_queries}.")
        return indices
    details = result.details[set_name]
    valid = np.flatnonzero(details.valid)
    if which == "random":
        rng = np.random.default_rng(seed)
        return sorted(rng.choice(n_queries, size=min(count, n_queries), replace=False).tolist())
    ap = details.average_precision[valid]
    order = np.argsort(ap, kind="stable")
    if which == "best":
        order = order[::-1]
    return valid[order[:count]].tolist()


def _load_image(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    # A decompression bomb (an image header claiming a huge size) is drawn as a grey box too:
    # a figure should not stop on one bad file of a gallery.
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        warnings.warn(
            f"Cannot read image '{path}' ({type(exc).__name__}): drawn as a grey box.",
            stacklevel=3,
        )
        h, w = size or (128, 64)
        return np.full((h, w, 3), 160, dtype=np.uint8)


def _masks_of(features: dict, index: int) -> np.ndarray | None:
    masks = features.get("parts_masks")
    if masks is None:
        return None
    return np.asarray(masks[index].float().numpy() if hasattr(masks, "float") else masks[index])


def ranking_items(
    result: Any, query_index: int, topk: int = 10, set_name: str = "query"
) -> tuple[RankedImage, list[RankedImage]]:
    """The query and its top-k gallery matches of an evaluation, as :class:`RankedImage`.

    Gallery images of the query's identity taken by the query's camera are left out, as the
    evaluation protocol ignores them.
    """
    query_feats, gallery = result.queries[set_name], result.gallery
    q_pid = int(query_feats["pids"][query_index])
    q_cam = int(query_feats["camids"][query_index])
    distances = np.asarray(result.distmats[set_name][query_index])
    order = np.argsort(distances, kind="stable")
    junk = (gallery["pids"][order] == q_pid) & (gallery["camids"][order] == q_cam)
    top = order[~junk][:topk]
    parts = result.part_distances(set_name, [query_index])[:, 0]  # [P, Ng]
    query = RankedImage(
        image=_load_image(query_feats["img_paths"][query_index]),
        pid=q_pid,
        camid=q_cam,
        path=query_feats["img_paths"][query_index],
        masks=_masks_of(query_feats, query_index),
        visibility=_as_array(query_feats["visibility"][query_index], 0, 1.0),
    )
    items = [
        RankedImage(
            image=_load_image(gallery["img_paths"][g]),
            pid=int(gallery["pids"][g]),
            camid=int(gallery["camids"][g]),
            path=gallery["img_paths"][g],
            masks=_masks_of(gallery, g),
            visibility=_as_array(gallery["visibility"][g], 0, 1.0),
            part_distances=parts[:, g],
            distance=float(distances[g]),
        )
        for g in top
    ]
    return query, items


def save_rankings(
    result: Any,
    out_dir: str | Path,
    which: str | Sequence[int] = "worst",
    topk: int = 10,
    count: int = 10,
    set_name: str = "query",
    seed: int = 0,
    dpi: float | None = None,
) -> list[Path]:
    """Write one ranking PNG per chosen query of an evaluation.

    Args:
        result: an evaluation result (:class:`bpbreid.engine.evaluation.EvalResult`).
        out_dir: folder for the PNGs (created).
        which: ``"worst"``, ``"best"`` (by average precision), ``"random"``, or indices.
        topk: gallery matches per figure.
        count: number of queries for worst/best/random.
        set_name: query set (``"query"``, ``"query_holistic"``...).
        seed: for ``"random"``.
        dpi: resolution of the figures and of the PNGs; default: the active style's
            ``figure.dpi`` to draw and ``savefig.dpi`` to save.

    Returns:
        The paths written, in order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    indices = select_queries(result, which, count, set_name, seed)
    tag = which if isinstance(which, str) and which in ("worst", "best", "random") else "query"
    details = result.details[set_name]
    paths = []
    for position, index in enumerate(indices, start=1):
        query, items = ranking_items(result, index, topk, set_name)
        ap = details.average_precision[index]
        ap_text = "no correct match" if np.isnan(ap) else f"AP {100 * ap:.1f}%"
        title = f"{set_name} #{index} (id {query.pid}, cam {query.camid}): {ap_text}"
        fig = plot_ranking(query, items, result.embedding_names, title=title, dpi=dpi)
        path = out / f"{set_name}_{tag}{position:02d}_q{index:05d}.png"
        fig.savefig(path, dpi=dpi)  # None: savefig.dpi of the active style
        plt.close(fig)
        paths.append(path)
    return paths
