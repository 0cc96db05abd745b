"""Part-mask drawing helpers (bpbreid.viz.masks)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bpbreid.viz.masks import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    overlay_parts,
    panel_title,
    part_colours,
    part_labels,
    plot_maps,
    plot_overlay_grid,
    short_name,
    to_image,
)


def _two_parts() -> np.ndarray:
    """Part masks [2, 4, 2]: part 1 on the top rows, part 2 on row 2, nothing on row 3."""
    parts = np.zeros((2, 4, 2), dtype=np.float32)
    parts[0, :2] = 0.9
    parts[1, 2] = 0.7
    parts[1, 3] = 0.3  # below the 0.5 background threshold
    return parts


def test_part_labels_from_every_shape():
    parts = _two_parts()
    expected = np.array([[1, 1], [1, 1], [2, 2], [0, 0]])
    np.testing.assert_array_equal(part_labels(parts, has_background=False), expected)
    # Soft targets with a background channel (they sum to 1): argmax.
    background = (parts.max(0) < 0.5).astype(np.float32)
    stacked = np.concatenate([background[None], parts])
    soft = torch.softmax(torch.from_numpy(stacked) * 15, dim=0)
    np.testing.assert_array_equal(part_labels(soft), expected)
    np.testing.assert_array_equal(part_labels(expected), expected)


def test_overlay_colours_body_and_keeps_background():
    image = np.full((8, 4, 3), 100, dtype=np.uint8)
    out = overlay_parts(image, _two_parts(), alpha=1.0, has_background=False)
    assert out.shape == (8, 4, 3)
    colours = part_colours(2)
    # Label rows are resized x2 (nearest): image rows 0-3 -> part 1, 4-5 -> part 2, 6-7 none.
    np.testing.assert_allclose(out[0, 0], colours[1])
    np.testing.assert_allclose(out[5, 3], colours[2])
    np.testing.assert_allclose(out[7, 0], 100 / 255)


def test_to_image_undoes_the_normalization():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(6, 3, 3), dtype=np.uint8)
    tensor = (
        torch.from_numpy(image).permute(2, 0, 1).float() / 255
        - torch.tensor(IMAGENET_MEAN)[:, None, None]
    ) / torch.tensor(IMAGENET_STD)[:, None, None]
    np.testing.assert_allclose(to_image(tensor), image / 255, atol=1e-5)
    np.testing.assert_allclose(to_image(image), image / 255, atol=1e-6)


def test_plot_maps_draws_one_panel_per_map():
    maps = np.random.default_rng(1).random((5, 8, 4))
    fig = plot_maps(maps, [f"m{i}" for i in range(5)], image=np.zeros((8, 4, 3)), ncols=4)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 6 and drawn[0].get_title() == "image"
    plt.close(fig)


def _overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of panel titles whose drawn boxes intersect."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(ax.title.get_text(), ax.title.get_window_extent(renderer)) for ax in fig.axes]
    boxes = [(text, box) for text, box in boxes if text]
    return [
        (a, b)
        for i, (a, box_a) in enumerate(boxes)
        for b, box_b in boxes[i + 1 :]
        if box_a.overlaps(box_b)
    ]


def test_36_field_titles_are_readable_and_do_not_overlap():
    from bpbreid.data.parsing import FIELD_NAMES

    maps = np.random.default_rng(0).random((36, 32, 16))
    # Chapters 01 and 06 draw the 36 fields with an image, ten panels a row.
    fig = plot_maps(maps, FIELD_NAMES, image=np.zeros((64, 32, 3)), ncols=10, size=0.95, title="t")
    try:
        titled = [ax for ax in fig.axes if ax.get_title()]
        assert len(titled) == 37
        assert min(ax.title.get_fontsize() for ax in titled) >= 8
        assert _overlaps(fig) == []
    finally:
        plt.close(fig)


def test_overlay_grid_titles_are_readable_and_do_not_overlap():
    image = np.zeros((64, 32, 3), dtype=np.uint8)
    titles = ["right, pedestrian", "front, none", "left, vehicle"]
    fig = plot_overlay_grid({"image": [(image, None)] * 3}, titles=titles, size=0.8)
    try:
        assert min(ax.title.get_fontsize() for ax in fig.axes if ax.get_title()) >= 8
        assert _overlaps(fig) == []
    finally:
        plt.close(fig)


def test_panel_title_breaks_field_names_between_their_keypoints():
    assert panel_title("L shoulder-R shoulder", 0.9) == "L shoulder-\nR shoulder"
    assert panel_title("nose", 0.9) == "nose"
    # 0.9 inch at 8 pt holds 13 average glyphs
    lines = panel_title("a long title of many words", 0.9).split("\n")
    assert len(lines) == 2 and all(len(line) <= 13 for line in lines)


def test_short_names():
    assert short_name("left_knee_to_left_hip") == "L knee-L hip"
    assert short_name("right_feet_mask") == "R feet"
    assert short_name("nose") == "nose"
