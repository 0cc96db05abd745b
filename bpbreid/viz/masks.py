"""Drawing part masks: colour overlays on images, field grids, skeletons.

Shared by the notebooks that show parsing labels (chapter 01) and the masks a model predicts
(chapter 02 and later). Every function accepts NumPy arrays or tensors, and part maps in the
three shapes the course uses:

* ``[K, h, w]`` part masks (e.g. :func:`bpbreid.data.parsing.group_fields`);
* ``[K+1, h, w]`` soft targets or attention masks with channel 0 = background;
* ``[h, w]`` integer labels (0 = background, ``k`` = part ``k``).

Colours: :data:`bpbreid.viz.diagrams.PART_COLOURS` (background first), the same in every
figure of the course.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from bpbreid.viz.diagrams import PART_COLOURS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Panel titles of the map and overlay grids: the smallest size that stays readable at the course's
# 100 dpi (11 px tall), and the average glyph width of the default font (DejaVu Sans) in ems, to
# wrap a title before it runs into its neighbour's.
PANEL_TITLE_SIZE = 8.0
GLYPH_WIDTH = 0.6


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def part_colours(num_parts: int) -> np.ndarray:
    """``[K+1, 3]`` RGB colours in [0, 1]: background (grey) then one per part.

    Beyond the course palette, colours come from matplotlib's ``tab20``.
    """
    colours = [to_rgb(c) for c in PART_COLOURS]
    extra = plt.get_cmap("tab20")
    while len(colours) < num_parts + 1:
        colours.append(extra(len(colours) % 20)[:3])
    return np.array(colours[: num_parts + 1], dtype=np.float32)


def to_image(
    image: Any, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """An image as ``float [H, W, 3]`` in [0, 1] for ``imshow``.

    Accepts ``uint8 [H, W, 3]``, float ``[H, W, 3]`` in [0, 1], or a normalized tensor
    ``[3, H, W]`` (as the transforms return it; ``mean``/``std`` undo the normalization).
    """
    array = _numpy(image)
    # A tensor [3, H, W] is channel-first (what the transforms return) even when W == 3.
    channel_first = hasattr(image, "detach") or array.shape[-1] != 3
    if array.ndim == 3 and array.shape[0] == 3 and channel_first:
        array = array.transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)
    elif array.dtype == np.uint8 or array.max() > 1.5:
        array = array.astype(np.float32) / 255.0
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def part_labels(
    masks: Any, has_background: bool | None = None, threshold: float = 0.5
) -> np.ndarray:
    """Integer labels ``[h, w]`` (0 = background, ``k`` = part ``k``) from any part maps.

    Args:
        masks: ``[h, w]`` labels (returned as they are), ``[K+1, h, w]`` maps with channel 0 =
            background (argmax), or ``[K, h, w]`` part masks (argmax where the maximum reaches
            ``threshold``, background elsewhere: the official rule).
        has_background: whether channel 0 is the background; default: True when the maps sum
            to 1 over channels (soft targets, softmax attention).
        threshold: background threshold for ``[K, h, w]`` maps.
    """
    array = _numpy(masks)
    if array.ndim == 2:
        return array.astype(np.int64)
    if array.ndim != 3:
        raise ValueError(f"masks must be [h, w], [K, h, w] or [K+1, h, w], got {array.shape}")
    if has_background is None:
        has_background = bool(np.allclose(array.sum(axis=0), 1.0, atol=1e-3))
    if has_background:
        return array.argmax(axis=0).astype(np.int64)
    labels = array.argmax(axis=0) + 1
    return np.where(array.max(axis=0) >= threshold, labels, 0).astype(np.int64)


def _resize_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of ``[h, w]`` labels (pixel centres aligned)."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(int), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(int), w - 1)
    return labels[rows][:, cols]


def colorize(labels: Any, num_parts: int | None = None) -> np.ndarray:
    """``float [h, w, 3]`` picture of integer part labels (background grey)."""
    lab = part_labels(labels)
    k = int(num_parts if num_parts is not None else max(1, lab.max()))
    return part_colours(k)[np.clip(lab, 0, k)]


def overlay_parts(
    image: Any,
    masks: Any,
    alpha: float = 0.55,
    num_parts: int | None = None,
    has_background: bool | None = None,
) -> np.ndarray:
    """Part colours blended over an image; background pixels keep the image.

    Args:
        image: ``uint8 [H, W, 3]``, float ``[H, W, 3]`` or a normalized tensor ``[3, H, W]``.
        masks: part maps at any resolution (see :func:`part_labels`); resized to the image
            with nearest neighbour, so each label cell shows as a block.
        alpha: opacity of the part colours.
        num_parts: ``K`` (fixes the colours when some parts are absent).
        has_background: see :func:`part_labels`.

    Returns:
        ``float [H, W, 3]`` in [0, 1].
    """
    picture = to_image(image)
    height, width = picture.shape[:2]
    array = _numpy(masks)
    parts_in_maps = None
    if array.ndim == 3:
        if has_background is None:
            has_background = bool(np.allclose(array.sum(axis=0), 1.0, atol=1e-3))
        parts_in_maps = array.shape[0] - 1 if has_background else array.shape[0]
    labels = part_labels(array, has_background)
    labels = _resize_nearest(labels, height, width)
    colours = colorize(labels, num_parts or parts_in_maps or int(max(1, labels.max())))
    body = (labels > 0)[..., None]
    return np.where(body, (1 - alpha) * picture + alpha * colours, picture)


def legend(ax: Axes, names: Sequence[str], num_parts: int | None = None, **kwargs: Any) -> None:
    """A legend of part colours (background first) beside ``ax``."""
    colours = part_colours(num_parts or len(names) - 1)
    handles = [Patch(color=colours[i], label=name) for i, name in enumerate(names)]
    kwargs = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "fontsize": 8, **kwargs}
    ax.legend(handles=handles, frameon=False, **kwargs)


def show_overlay(ax: Axes, image: Any, masks: Any, title: str | None = None, **kwargs: Any) -> None:
    """``imshow`` of :func:`overlay_parts` without ticks."""
    ax.imshow(overlay_parts(image, masks, **kwargs))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def short_name(name: str) -> str:
    """A field or part name short enough for a panel title: ``left_knee_to_left_hip`` ->
    ``L knee-L hip``, ``head_mask`` -> ``head``."""
    name = name.removesuffix("_mask").replace("left_", "L ").replace("right_", "R ")
    return name.replace("_to_", "-").replace("_", " ")


def panel_title(text: str, width: float, fontsize: float = PANEL_TITLE_SIZE) -> str:
    """``text`` wrapped onto as many lines as it needs to fit a panel ``width`` inches wide.

    A field name breaks between its two keypoints (``L shoulder-`` / ``R shoulder``), anything
    else between words.
    """
    chars = max(4, int(width * 72 / (GLYPH_WIDTH * fontsize)))
    lines: list[str] = []
    for line in text.split("\n"):
        head, dash, tail = line.partition("-")
        if len(line) <= chars:
            lines.append(line)
        elif dash and len(head) < chars and len(tail) <= chars:
            lines += [head + dash, tail]
        else:
            lines += textwrap.wrap(line, chars, break_on_hyphens=False) or [line]
    return "\n".join(lines)


def plot_maps(
    maps: Any,
    names: Sequence[str],
    image: Any | None = None,
    ncols: int = 9,
    size: float = 0.9,
    cmap: str = "viridis",
    title: str | None = None,
) -> Figure:
    """A grid of single-channel maps ``[C, h, w]`` (fields, parts, attention), one per name.

    With ``image``, the image is drawn first (so the reader can compare positions). Titles are
    wrapped to the panel width (``size`` inches), so 36 PifPaf field names fit side by side.
    """
    array = _numpy(maps)
    panels = array.shape[0] + (image is not None)
    rows = int(np.ceil(panels / ncols))
    h, w = array.shape[1:]
    # Leave a little of the column for the gap between panels.
    titles = ["image"] * (image is not None) + [
        panel_title(short_name(n), 0.92 * size) for n in names[: array.shape[0]]
    ]
    lines = max(t.count("\n") + 1 for t in titles)
    title_height = lines * PANEL_TITLE_SIZE * 1.3 / 72  # inches above each row of panels
    header = 0.35 if title else 0.0  # inches for the figure title, kept out of the panels' room
    height = rows * (size * h / w + title_height) + header + 0.1
    fig, axes = plt.subplots(rows, ncols, figsize=(ncols * size, height))
    axes = np.atleast_1d(axes).ravel()
    offset = 0
    if image is not None:
        axes[0].imshow(to_image(image))
        offset = 1
    for i in range(array.shape[0]):
        axes[i + offset].imshow(array[i], cmap=cmap, vmin=0.0, vmax=1.0)
    for ax, text in zip(axes, titles):
        ax.set_title(text, fontsize=PANEL_TITLE_SIZE, linespacing=1.0)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[panels:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    fig.tight_layout(pad=0.3, w_pad=0.3, h_pad=0.3, rect=(0, 0, 1, 1 - header / height))
    return fig


def plot_overlay_grid(
    rows: Mapping[str, Sequence[tuple[Any, Any | None]]],
    titles: Sequence[str] | None = None,
    legends: Mapping[str, Sequence[str]] | None = None,
    size: float = 1.0,
    alpha: float = 0.55,
) -> Figure:
    """A grid of images with part overlays: one row per entry of ``rows``.

    Args:
        rows: row name -> ``(image, masks)`` per column; ``masks=None`` shows the image alone
            (masks in any shape :func:`overlay_parts` accepts).
        titles: one title per column (above the first row).
        legends: row name -> ``["background", part 1, ...]`` for a legend right of that row.
        size: width of one panel in inches (height follows the image's aspect ratio).
        alpha: opacity of the part colours.
    """
    names = list(rows)
    ncols = max(len(cells) for cells in rows.values())
    first_image = to_image(next(iter(rows.values()))[0][0])
    aspect = first_image.shape[0] / first_image.shape[1]
    # 'compressed' packs fixed-aspect images without the gaps tight_layout leaves.
    fig, axes = plt.subplots(
        len(names),
        ncols,
        figsize=(ncols * size + 1.8 * bool(legends), len(names) * size * aspect + 0.3),
        squeeze=False,
        layout="compressed",
    )
    for r, name in enumerate(names):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(rows[name]):
                ax.axis("off")
                continue
            image, masks = rows[name][c]
            ax.imshow(
                to_image(image) if masks is None else overlay_parts(image, masks, alpha=alpha)
            )
        axes[r, 0].set_ylabel(name, fontsize=8)
        if legends and name in legends:
            legend(axes[r, -1], legends[name])
    for c, title in enumerate(titles or []):
        axes[0, c].set_title(panel_title(title, 0.95 * size), fontsize=PANEL_TITLE_SIZE)
    return fig


def draw_skeleton(
    ax: Axes,
    keypoints: Any,
    limbs: Sequence[tuple[int, int]] | None = None,
    min_confidence: float = 0.0,
) -> None:
    """Keypoints ``[17, 3]`` (x, y, confidence) and their limbs on ``ax``.

    The person's left side is drawn in red, the right side in blue, the middle in white.
    """
    from bpbreid.parts import KEYPOINT_NAMES, LIMBS

    kps = _numpy(keypoints)
    limbs = LIMBS if limbs is None else limbs

    def side(i: int) -> str:
        name = KEYPOINT_NAMES[i]
        return (
            "#e6194b"
            if name.startswith("left")
            else "#4363d8"
            if name.startswith("right")
            else "white"
        )

    for a, b in limbs:
        if kps[a, 2] > min_confidence and kps[b, 2] > min_confidence:
            colour = side(a) if side(a) == side(b) else "white"
            ax.plot([kps[a, 0], kps[b, 0]], [kps[a, 1], kps[b, 1]], color=colour, lw=1.2)
    seen = kps[:, 2] > min_confidence
    ax.scatter(
        kps[seen, 0],
        kps[seen, 1],
        s=8,
        c=[side(i) for i in np.flatnonzero(seen)],
        edgecolors="k",
        linewidths=0.3,
        zorder=3,
    )


__all__ = [
    "colorize",
    "draw_skeleton",
    "legend",
    "overlay_parts",
    "panel_title",
    "part_colours",
    "part_labels",
    "plot_maps",
    "plot_overlay_grid",
    "short_name",
    "show_overlay",
    "to_image",
]
