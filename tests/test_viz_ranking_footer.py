"""Regression: the labels under the last row of a ranking figure lie inside the figure."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bpbreid.viz.ranking import RankedImage, plot_ranking  # noqa: E402

NAMES = ["bn_foreground", "head_mask", "legs_mask"]


def _item(seed, pid, distance=None):
    rng = np.random.default_rng(seed)
    return RankedImage(
        image=rng.integers(0, 255, (32, 16, 3), dtype=np.uint8),
        pid=pid,
        camid=seed,
        masks=rng.random((3, 8, 4)),
        visibility=np.ones(3),
        part_distances=None if distance is None else np.full(3, distance),
        distance=distance,
    )


def test_last_row_labels_inside_the_figure():
    for topk in (1, 3):
        fig = plot_ranking(_item(0, 1), [_item(i, i, 0.1 * i) for i in range(1, topk + 1)], NAMES)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        last_row = fig.axes[-len(NAMES) :]  # the part columns of the last row
        for ax in last_row:
            box = ax.xaxis.label.get_window_extent(renderer)
            assert ax.get_xlabel()
            assert box.y0 >= 0, f"label '{ax.get_xlabel()}' cut off at the bottom (y0={box.y0:.1f})"
        plt.close(fig)
