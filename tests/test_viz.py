"""Tests of the ranking figures, metric plots, the browser and `bpbreid visualize`."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from bpbreid.config import Config  # noqa: E402
from bpbreid.engine.evaluation import evaluate  # noqa: E402
from bpbreid.viz.ranking import (  # noqa: E402
    CORRECT_COLOUR,
    WRONG_COLOUR,
    RankedImage,
    channel_for_embedding,
    plot_ranking,
    ranking_items,
    save_rankings,
    select_queries,
)

NAMES = ["bn_foreground", "head_mask", "left_arm_mask", "right_arm_mask"]


def _image(seed: int, size=(32, 16)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (*size, 3), dtype=np.uint8)


def _masks(seed: int, k: int = 3) -> np.ndarray:
    m = np.random.default_rng(seed).random((k + 1, 8, 4))
    return m / m.sum(0)


def _ranking(topk: int = 4):
    query = RankedImage(_image(0), 7, 1, "/x/0007_c1_q.jpg", _masks(0), [1, 1, 0, 1])
    pids = [7, 3, 7, 5, 9, 7][:topk]
    gallery = [
        RankedImage(
            _image(i), pid, 2, f"/x/{pid:04d}_c2_{i}.jpg", _masks(i), [1, i % 2, 1, 0],
            part_distances=[0.5 + 0.1 * i, 0.2, 0.9, 0.1], distance=0.4 + 0.1 * i,
        )
        for i, pid in enumerate(pids, start=1)
    ]  # fmt: skip
    return query, gallery


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.get_images()]


def test_plot_ranking_grid_labels_and_backgrounds():
    query, gallery = _ranking(topk=4)
    fig = plot_ranking(query, gallery, NAMES, title="q")
    try:
        # (top-k + query) rows x (image + one column per embedding)
        assert len(_image_axes(fig)) == (4 + 1) * (len(NAMES) + 1)
        titles = [ax.get_title() for ax in fig.axes[: len(NAMES) + 1]]
        assert titles == ["image", "foreground", "head", "left arm", "right arm"]
        # Rank and "pair visibility | overall distance" on the left of each gallery row.
        row1 = fig.axes[len(NAMES) + 1]
        assert row1.get_ylabel().startswith("#1\n")
        assert "| 0.50" in row1.get_ylabel()
        # Under each map: visibility and distance; the row's max and min distance in bold.
        labels = [ax.xaxis.label for ax in fig.axes[len(NAMES) + 2 : 2 * (len(NAMES) + 1)]]
        assert labels[0].get_text() == "v 1.00\nd 0.60"
        bold = [lab.get_fontweight() == "bold" for lab in labels]
        # Row 1 (visibility [1, 1, 0, 1] x query [1, 1, 0, 1] -> foreground, head, right
        # arm valid; right arm visible in the query only): max 0.60 (foreground), min 0.10.
        assert bold.count(True) == 2
        # Backgrounds: green rows for the right identity (7), red for the others.
        colours = [a.get_facecolor() for a in fig.artists if isinstance(a, Rectangle)]
        correct = sum(c == to_rgba(CORRECT_COLOUR) for c in colours)
        wrong = sum(c == to_rgba(WRONG_COLOUR) for c in colours)
        assert (correct, wrong) == (2, 2)
    finally:
        plt.close(fig)


def test_plot_ranking_selected_columns_and_invisible_parts_greyed():
    query, gallery = _ranking(topk=2)
    fig = plot_ranking(query, gallery, NAMES, columns=[2])
    try:
        assert len(_image_axes(fig)) == 3 * 2
        # The query's left arm is invisible: drawn grey (all channels equal).
        pixels = fig.axes[1].get_images()[0].get_array()
        assert np.allclose(pixels[..., 0], pixels[..., 1]) and np.allclose(
            pixels[..., 1], pixels[..., 2]
        )
    finally:
        plt.close(fig)


def test_plot_ranking_follows_the_active_style_unless_given_a_dpi():
    query, gallery = _ranking(topk=1)
    with matplotlib.rc_context({"figure.dpi": 100}):
        styled = plot_ranking(query, gallery, NAMES)
        pinned = plot_ranking(query, gallery, NAMES, dpi=60)
    try:
        assert styled.dpi == 100 and pinned.dpi == 60
        # The layout is set in inches: the same figure size whatever the resolution.
        assert tuple(styled.get_size_inches()) == tuple(pinned.get_size_inches())
    finally:
        plt.close(styled)
        plt.close(pinned)


def test_channel_for_embedding():
    names = ["bn_global", "bn_foreground", "background", "head", "legs", "concat_parts"]
    assert channel_for_embedding(names) == [None, "foreground", 0, 1, 2, "foreground"]


# --------------------------------------------------------------------------------------
# From an evaluation
# --------------------------------------------------------------------------------------


class ColourModel(nn.Module):
    """A fake part model: regions' mean colours as embeddings (identity-coloured images)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.part_names = ("head_mask", "left_arm_mask", "right_arm_mask")

    def forward(self, images, external_masks=None):
        h, w = images.shape[-2:]
        regions = [
            images[..., : h // 2, :],
            images[..., h // 2 :, : w // 2],
            images[..., h // 2 :, w // 2 :],
        ]
        parts = torch.stack([self.proj(r.mean(dim=(2, 3))) for r in regions], 1)
        n = images.shape[0]
        masks = torch.softmax(
            torch.arange(n * 4 * 8 * 4, dtype=torch.float32).reshape(n, 4, 8, 4).sin(), 1
        )
        vis = torch.ones(n, 3)
        vis[::2, 1] = 0
        return SimpleNamespace(
            embeddings={"bn_foreground": self.proj(images.mean(dim=(2, 3))), "parts": parts},
            visibility=vis,
            parts_masks=masks,
        )


def _split(root: Path, name: str, pids, cams, noise: float):
    folder = root / name
    folder.mkdir(parents=True)
    items = []
    for i, (pid, cam) in enumerate(zip(pids, cams)):
        colour = np.random.default_rng(pid).integers(30, 225, 3)
        pixels = colour + np.random.default_rng(100 * i + cam).normal(0, noise, (32, 16, 3))
        array = np.clip(pixels, 0, 255).astype(np.uint8)
        path = folder / f"{pid:04d}_c{cam}s1_{i:06d}_00.jpg"
        Image.fromarray(array).save(path)
        tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255.0
        items.append({"image": tensor, "pid": pid, "camid": cam, "img_path": str(path)})
    return torch.utils.data.DataLoader(items, batch_size=4)


@pytest.fixture(scope="module")
def eval_result(tmp_path_factory):
    root = tmp_path_factory.mktemp("viz")
    gallery = _split(
        root, "gallery", [p for p in range(4) for _ in range(3)] + [0], [1, 2, 3] * 4 + [0], 25.0
    )
    query = _split(root, "query", [0, 1, 2, 3, 9], [0, 0, 0, 0, 0], 25.0)
    cfg = Config()
    cfg.model.bpbreid.masks.preprocess = "four"
    torch.manual_seed(0)
    return evaluate(ColourModel(), query, gallery, cfg, progress=False)


def test_select_queries(eval_result):
    details = eval_result.details["query"]
    worst = select_queries(eval_result, "worst", count=4)
    assert 4 not in worst  # id 9 has no match: never chosen by AP
    aps = details.average_precision[worst]
    assert list(aps) == sorted(aps)
    best = select_queries(eval_result, "best", count=2)
    assert details.average_precision[best[0]] == np.nanmax(details.average_precision)
    assert select_queries(eval_result, "0,3") == [0, 3]
    assert len(select_queries(eval_result, "random", count=3)) == 3
    with pytest.raises(ValueError, match="out of range"):
        select_queries(eval_result, [99])
    with pytest.raises(ValueError, match="worst, best, random"):
        select_queries(eval_result, "hardest")


def test_ranking_items_skip_same_camera_junk(eval_result):
    query, items = ranking_items(eval_result, 0, topk=20)
    # The gallery holds 13 images; the id-0 image from camera 0 is the query's junk.
    assert len(items) == 12
    assert not any(it.pid == 0 and it.camid == 0 for it in items)
    assert [it.distance for it in items] == sorted(it.distance for it in items)
    assert query.image.dtype == np.uint8 and query.image.shape == (32, 16, 3)
    assert items[0].part_distances.shape == (4,)
    assert query.masks.shape == (4, 8, 4)


def test_save_rankings_writes_pngs(eval_result, tmp_path):
    paths = save_rankings(eval_result, tmp_path / "out", which="worst", topk=3, count=2)
    assert len(paths) == 2
    for path in paths:
        with Image.open(path) as img:
            assert img.size[0] > 100 and img.size[1] > 100
    picked = save_rankings(eval_result, tmp_path / "idx", which=[4], topk=2)
    assert picked[0].name == "query_query01_q00004.png" and picked[0].is_file()


def test_save_rankings_resolution_from_the_style_or_the_argument(eval_result, tmp_path):
    def width(dpi=None, **style):
        with matplotlib.rc_context(style):
            (path,) = save_rankings(eval_result, tmp_path / str(dpi), which=[0], topk=1, dpi=dpi)
        with Image.open(path) as img:
            return img.size[0]

    styled = width(**{"figure.dpi": 50, "savefig.dpi": 100})
    pinned = width(dpi=50, **{"savefig.dpi": 100})
    # savefig.dpi of the style sets the PNG's resolution; an explicit dpi overrides it
    assert abs(styled - 2 * pinned) <= 2


def test_plots_cmc_and_ap_histogram(eval_result):
    from bpbreid.viz.plots import plot_ap_histogram, plot_cmc

    fig = plot_cmc({"a": np.linspace(0.5, 1.0, 30), "b": np.linspace(20, 90, 30)}, max_rank=10)
    try:
        ax = fig.axes[0]
        lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 10]
        assert len(lines) == 2
        assert np.isclose(lines[0].get_ydata()[0], 50.0)  # fractions shown in percent
    finally:
        plt.close(fig)
    fig = plot_cmc(eval_result)
    plt.close(fig)
    fig = plot_ap_histogram({"occluded": [0.1, 0.2, 0.9], "holistic": [0.8, 1.0]}, bins=10)
    try:
        assert fig.axes[0].get_xlim() == (0.0, 100.0)
        assert fig.axes[0].get_legend() is not None
    finally:
        plt.close(fig)
    plt.close(plot_ap_histogram(eval_result))


def test_ranking_browser_builds_and_redraws(eval_result):
    from bpbreid.viz.browser import ranking_browser

    browser = ranking_browser(eval_result, topk=2)
    assert len(_image_axes(browser.figure)) == 3 * 5
    browser.topk.value = 3
    assert len(_image_axes(browser.figure)) == 4 * 5
    browser.part.value = 1
    assert len(_image_axes(browser.figure)) == 4 * 2
    assert len(browser.query.options) == 4  # queries with a correct match, worst first


def test_visualize_cli_missing_checkpoint_is_a_readable_error(tmp_path, capsys):
    from bpbreid.__main__ import main

    status = main(["visualize", "--checkpoint", str(tmp_path / "none.pth")])
    assert status == 2
    assert "not found" in capsys.readouterr().err


def test_visualize_cli_end_to_end(tmp_path, capsys):
    from bpbreid.__main__ import main
    from bpbreid.config import load_config
    from bpbreid.engine import save_checkpoint
    from bpbreid.model import build_model

    cfg = load_config(
        "synthetic_cpu",
        [
            f"data.root={tmp_path / 'data'}",
            "data.synthetic.preset=tiny",
            "train.batch_size=16",
            "data.extra_query_sets=[]",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=12)
    ckpt = save_checkpoint(tmp_path / "run" / "model.pth", model, cfg, num_classes=12)
    status = main(
        ["visualize", "--checkpoint", str(ckpt), "--count", "2", "--topk", "3", "--no-progress"]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "rank-1" in out
    pngs = sorted((tmp_path / "run" / "rankings").glob("*.png"))
    assert {p.name for p in pngs} >= {"cmc.png", "ap_histogram.png"}
    assert len(pngs) == 4


def test_plot_ranking_without_masks_or_visibility():
    # A global-only model: one embedding, no attention maps, always visible.
    query = RankedImage(_image(0), 1, 0, "q.jpg")
    gallery = [RankedImage(_image(1), 2, 1, "g.jpg", part_distances=[0.3], distance=0.3)]
    fig = plot_ranking(query, gallery, ["bn_global"])
    try:
        assert len(_image_axes(fig)) == 2 * 2
        assert fig.axes[3].xaxis.label.get_text() == "v 1.00\nd 0.30"
    finally:
        plt.close(fig)
