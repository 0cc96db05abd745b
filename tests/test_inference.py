"""FeatureExtractor: embedding folders, ranking, checkpoint dispatch, the infer CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bpbreid.__main__ import main
from bpbreid.config import load_config
from bpbreid.data.transforms import build_transforms
from bpbreid.engine.checkpoint import save_checkpoint
from bpbreid.errors import CheckpointError, DatasetError
from bpbreid.inference import Embeddings, FeatureExtractor, identity_and_camera, list_images
from bpbreid.metrics import part_based_distance
from bpbreid.model import build_model, select_test_embeddings

NUM_CLASSES = 5


def tiny_config():
    return load_config(
        "synthetic_cpu",
        ["model.bpbreid.dim_reduce_output=16", "data.height=32", "data.width=16"],
    )


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg, NUM_CLASSES)
    # A few training-mode passes give the batch norms non-trivial running statistics.
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 32, 16))
    return save_checkpoint(tmp_path / "model.pth", model.eval(), cfg, num_classes=NUM_CLASSES)


@pytest.fixture
def image_dir(tmp_path):
    """Six person-like crops (drawn by the synthetic generator) with Market-style names."""
    from bpbreid.data.synthetic import render_sample

    folder = tmp_path / "crops"
    folder.mkdir()
    for i in range(6):
        pid = 1 + i // 2
        sample = render_sample(0, pid, 1 + i % 2, np.random.default_rng(i), height=48, width=24)
        Image.fromarray(sample.image).save(folder / f"{pid:04d}_c{1 + i % 2}s1_00000{i}_00.jpg")
    return folder


def test_embed_a_folder_matches_the_evaluation_pipeline(checkpoint, image_dir):
    extractor = FeatureExtractor(checkpoint, device="cpu", progress=False, batch_size=4)
    emb = extractor.embed(image_dir)
    n = len(list_images(image_dir))
    k = extractor.cfg.model.bpbreid.masks.parts_num
    assert emb.features.shape == (n, 1 + k, 16)  # foreground + K parts
    assert emb.visibility.shape == (n, 1 + k)
    assert ((emb.visibility >= 0) & (emb.visibility <= 1)).all()
    assert emb.parts_masks.shape[:2] == (n, k + 1)
    assert emb.names[0] == "bn_foreground" and len(emb.names) == 1 + k
    assert emb.pids.tolist() == [1, 1, 2, 2, 3, 3] and emb.camids.tolist() == [0, 1] * 3

    # The same numbers as the model run on the test transform (resize + normalize).
    transform = build_transforms(extractor.cfg, train=False, seed=0)
    batch = torch.stack(
        [transform(np.asarray(Image.open(p).convert("RGB")), None)[0] for p in emb.paths]
    )
    with torch.no_grad():
        feats, vis = select_test_embeddings(extractor.model(batch), extractor.test_embeddings)
    torch.testing.assert_close(emb.features, feats)
    torch.testing.assert_close(emb.visibility, vis)

    # Paths, a list of paths and arrays give the same embeddings.
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in emb.paths]
    from_list = extractor.embed([Path(p) for p in emb.paths])
    from_arrays = extractor(arrays)
    torch.testing.assert_close(from_list.features, emb.features)
    torch.testing.assert_close(from_arrays.features, emb.features)
    assert from_arrays.paths[0] == "<array 0>" and from_arrays.image(0).shape == arrays[0].shape


def test_rank_returns_a_sorted_table_and_the_part_based_distance(checkpoint, image_dir):
    extractor = FeatureExtractor(checkpoint, device="cpu", progress=False)
    ranking = extractor.rank(image_dir, image_dir, topk=3)
    n = len(ranking.query)
    assert len(ranking.table) == 3 * n and ranking.order.shape == (n, 3)
    expected = part_based_distance(
        ranking.query.features, ranking.gallery.features, ranking.query.visibility,
        ranking.gallery.visibility,
    )  # fmt: skip
    np.testing.assert_allclose(ranking.distances, expected.numpy(), rtol=1e-5, atol=1e-6)
    for qi in range(n):
        rows = ranking.matches(qi)
        assert [r["rank"] for r in rows] == [1, 2, 3]
        distances = [r["distance"] for r in rows]
        assert distances == sorted(distances)
        # The query itself is in the gallery: distance 0, rank 1.
        assert rows[0]["gallery"] == ranking.query.paths[qi] and distances[0] < 1e-3
        assert rows[0]["same_identity"] is True
        assert 1 <= rows[0]["shared_visible"] <= ranking.query.features.shape[1]
    csv_path = ranking.to_csv(Path(ranking.query.paths[0]).parent.parent / "out" / "r.csv")
    assert len(list(csv.DictReader(open(csv_path)))) == 3 * n


def test_ranking_figure_when_the_viz_module_exists(checkpoint, image_dir):
    pytest.importorskip("bpbreid.viz.ranking")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extractor = FeatureExtractor(checkpoint, device="cpu", progress=False)
    ranking = extractor.rank(image_dir, image_dir, topk=2)
    fig = ranking.figure(1)
    assert fig is not None and len(fig.axes) >= 3 * 2  # (1 + topk) rows of image axes
    assert fig.dpi == matplotlib.rcParams["figure.dpi"]  # the active style's resolution
    plt.close(fig)
    fig = ranking.figure(1, dpi=60)
    assert fig.dpi == 60
    plt.close(fig)
    parts = ranking.part_distances(1)
    assert parts.shape == (ranking.query.features.shape[1], len(ranking.gallery))


def test_embeddings_save_and_identity_parsing(tmp_path, checkpoint, image_dir):
    extractor = FeatureExtractor(checkpoint, device="cpu", progress=False)
    emb = extractor.embed(image_dir)
    data = np.load(emb.save(tmp_path / "e.npz"))
    np.testing.assert_allclose(data["features"], emb.features.numpy())
    assert list(data["names"]) == emb.names
    assert identity_and_camera("0002_c3s1_000451_03.jpg") == (2, 2)
    assert identity_and_camera("holiday_photo.jpg") == (-1, -1)
    assert isinstance(emb, Embeddings) and len(emb) == 6


def test_clear_errors_for_missing_inputs(tmp_path, checkpoint):
    with pytest.raises(CheckpointError, match="not found"):
        FeatureExtractor(tmp_path / "missing.pth")
    extractor = FeatureExtractor(checkpoint, device="cpu", progress=False)
    with pytest.raises(DatasetError, match="does not exist"):
        extractor.embed(tmp_path / "no_folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="No images"):
        extractor.embed(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="configuration"):
        FeatureExtractor(build_model(tiny_config(), NUM_CLASSES))


def test_official_checkpoints_are_dispatched_to_the_restricted_loader(tmp_path, image_dir):
    from bpbreid.official import state_dict_to_official

    cfg = load_config(
        "synthetic_cpu",
        [
            "model.bpbreid.head=1x1",
            "model.bpbreid.dim_reduce_output=16",
            "data.height=32",
            "data.width=16",
        ],
    )
    model = build_model(cfg, NUM_CLASSES).eval()
    path = tmp_path / "official_like.pth"
    torch.save({"state_dict": state_dict_to_official(model.state_dict()), "epoch": 3}, path)
    extractor = FeatureExtractor(path, config=cfg, device="cpu", progress=False)
    emb = extractor.embed(image_dir)
    direct = FeatureExtractor(model, config=cfg, device="cpu", progress=False).embed(image_dir)
    torch.testing.assert_close(emb.features, direct.features)
    with pytest.raises(CheckpointError, match="stores no config"):
        FeatureExtractor(path, device="cpu")


def test_infer_cli_writes_the_ranking(tmp_path, checkpoint, image_dir, capsys):
    out = tmp_path / "infer"
    argv = [
        "infer", "--checkpoint", str(checkpoint), "--query", str(image_dir), "--gallery",
        str(image_dir), "--out", str(out), "--topk", "2", "--figures", "1", "--no-progress",
        "--device", "cpu",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "#1" in printed and "visible in both" in printed
    rows = list(csv.DictReader(open(out / "ranking.csv")))
    assert len(rows) == 2 * 6 and rows[0]["rank"] == "1"
    assert (out / "query.npz").is_file() and (out / "gallery.npz").is_file()
    assert (
        main(
            ["infer", "--checkpoint", str(tmp_path / "nope.pth"), "--query", "q", "--gallery", "g"]
        )
        == 2
    )
