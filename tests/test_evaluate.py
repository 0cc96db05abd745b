"""Tests of the evaluation loop (bpbreid.engine.evaluation) on tiny fake and real models."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bpbreid.config import Config, load_config
from bpbreid.engine.evaluation import (
    EvalResult,
    embedding_names,
    evaluate,
    extract_features,
    flip_permutation,
)
from bpbreid.metrics import evaluate_rank, part_based_distance

PART_NAMES = ("head_mask", "left_arm_mask", "right_arm_mask", "legs_mask")


class SideModel(nn.Module):
    """A fake BPBReID: parts read fixed image regions, so left/right are well defined.

    head = top rows, left/right arm = the left/right half of the middle rows (as drawn in
    the image), legs = bottom rows; the foreground embedding is the whole image. Each
    embedding is a fixed linear map of the region's mean colour. A region whose mean is
    dark (< 0) counts as invisible.
    """

    def __init__(self, dim: int = 6, global_only: bool = False):
        super().__init__()
        self.proj = nn.Linear(3, dim)
        self.part_names = PART_NAMES
        self.global_only = global_only
        self.calls = 0

    def regions(self, images):
        h, w = images.shape[-2:]
        top, mid, bottom = (
            images[..., : h // 3, :],
            images[..., h // 3 : 2 * h // 3, :],
            images[..., 2 * h // 3 :, :],
        )
        return [
            top,
            mid[..., : w // 2],
            mid[..., w // 2 :],
            bottom,
        ]

    def forward(self, images, external_masks=None):
        self.calls += 1
        whole = self.proj(images.mean(dim=(2, 3)))
        if self.global_only:
            return SimpleNamespace(
                embeddings={"global": whole, "bn_global": 2 * whole},
                visibility=None,
                parts_masks=None,
            )
        means = [r.mean(dim=(2, 3)) for r in self.regions(images)]
        parts = torch.stack([self.proj(m) for m in means], dim=1)  # [N, K, D]
        visibility = torch.stack([m.mean(1) > 0 for m in means], dim=1).float()
        n, _, h, w = images.shape
        masks = torch.softmax(
            torch.randn(n, 5, h // 4, w // 4, generator=torch.Generator().manual_seed(0)), 1
        )
        return SimpleNamespace(
            embeddings={"bn_foreground": whole, "foreground": whole, "parts": parts},
            visibility=visibility,
            parts_masks=masks,
        )


class TinyDataset(Dataset):
    """Images whose colours depend on the identity (plus noise), Market-style samples."""

    def __init__(self, pids, camids, seed=0, size=(24, 12)):
        gen = torch.Generator().manual_seed(seed)
        self.items = []
        for i, (pid, cam) in enumerate(zip(pids, camids)):
            base = torch.Generator().manual_seed(1000 + pid)
            image = torch.randn(3, *size, generator=base) + 0.05 * torch.randn(
                3, *size, generator=gen
            )
            self.items.append(
                {
                    "image": image,
                    "pid": pid,
                    "camid": cam,
                    "img_path": f"/tmp/{pid:04d}_c{cam}_{i}.jpg",
                }
            )

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def _cfg(**test) -> Config:
    cfg = Config()
    cfg.model.bpbreid.test_embeddings = ["bn_foreground", "parts"]
    cfg.model.bpbreid.masks.preprocess = "four"
    cfg.model.bpbreid.masks.parts_num = 4
    for key, value in test.items():
        setattr(cfg.test, key, value)
    return cfg


def _loaders(n_ids=5):
    gallery = TinyDataset([p for p in range(n_ids) for _ in range(3)], [1, 2, 3] * n_ids, seed=1)
    query = TinyDataset(list(range(n_ids)), [0] * n_ids, seed=2)
    holistic = TinyDataset(list(range(n_ids)), [4] * n_ids, seed=3)
    make = lambda ds: DataLoader(ds, batch_size=4, shuffle=False)  # noqa: E731
    return make(query), make(gallery), make(holistic)


def test_evaluate_fake_model_metrics_match_direct_computation():
    model = SideModel()
    model.train()
    query_loader, gallery_loader, holistic_loader = _loaders()
    result = evaluate(
        model,
        query_loader,
        gallery_loader,
        _cfg(),
        {"query_holistic": holistic_loader},
        progress=False,
    )
    assert isinstance(result, EvalResult)
    assert model.training  # mode restored
    assert set(result.metrics) == {"query", "query_holistic"}
    m = result.metrics["query"]
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP"):
        assert 0.0 <= m[key] <= 100.0
    assert m["num_queries"] == 5 and m["num_skipped"] == 0

    gallery, query = result.gallery, result.queries["query"]
    assert gallery["features"].shape == (15, 5, 6)
    assert gallery["visibility"].shape == (15, 5)
    assert torch.all(gallery["visibility"][:, 0] == 1)  # foreground always visible
    assert gallery["parts_masks"].shape == (15, 5, 6, 3)
    assert gallery["parts_masks"].dtype == torch.float16
    assert gallery["img_paths"][0].endswith(".jpg") and len(gallery["img_paths"]) == 15
    assert result.embedding_names == ["bn_foreground", *PART_NAMES]

    distmat = part_based_distance(
        query["features"], gallery["features"], query["visibility"], gallery["visibility"]
    )
    np.testing.assert_allclose(result.distmats["query"], distmat.numpy())
    cmc, mAP = evaluate_rank(
        distmat, query["pids"], gallery["pids"], query["camids"], gallery["camids"], max_rank=15
    )
    assert m["mAP"] == pytest.approx(100 * mAP)
    assert m["rank1"] == pytest.approx(100 * cmc[0])
    # Identity-coloured images: the fake model finds every identity at rank 1.
    assert m["rank1"] == 100.0

    flat = result.flat_metrics()
    assert flat["query/mAP"] == m["mAP"] and "query_holistic/rank1" in flat
    assert "query_holistic" in result.summary()
    parts = result.part_distances("query", [0, 2])
    assert parts.shape == (5, 2, 15)


def test_flip_swaps_left_and_right_parts():
    model = SideModel()
    query_loader, _, _ = _loaders()
    plain = extract_features(model, query_loader, ["bn_foreground", "parts"], progress=False)
    flipped = extract_features(
        model, query_loader, ["bn_foreground", "parts"], flip=True, progress=False
    )
    # Mirroring moves the left half to the right: with the swap, every part reads the same
    # region of the person as without the flip, so the averaged features are unchanged.
    torch.testing.assert_close(flipped["features"], plain["features"], atol=1e-5, rtol=1e-5)


def test_flip_without_sides_averages_plain():
    model = SideModel()
    model.part_names = ("p1", "p2", "p3", "p4")  # no left/right: nothing to swap
    query_loader, _, _ = _loaders()
    plain = extract_features(model, query_loader, ["parts"], progress=False)
    flipped = extract_features(model, query_loader, ["parts"], flip=True, progress=False)
    images = torch.cat([b["image"] for b in query_loader])
    mirrored_parts = torch.stack(
        [model.proj(r.mean(dim=(2, 3))) for r in model.regions(images.flip(-1))], dim=1
    )
    expected = (plain["features"] + mirrored_parts.detach()) / 2
    torch.testing.assert_close(flipped["features"], expected, atol=1e-5, rtol=1e-5)
    # Arms differ between the two views, so the average really changed them.
    assert not torch.allclose(flipped["features"][:, 1], plain["features"][:, 1])


def test_flip_permutation_and_embedding_names():
    names = embedding_names(["bn_foreg", "parts"], ["head", "left_arm", "right_arm", "torso"])
    assert names == ["bn_foreground", "head", "left_arm", "right_arm", "torso"]
    assert flip_permutation(names) == [0, 1, 3, 2, 4]
    assert flip_permutation(["left_x", "right_x", "left_y"]) == [1, 0, 2]  # no right_y


def test_global_only_model_gives_one_always_visible_embedding():
    model = SideModel(global_only=True)
    query_loader, gallery_loader, _ = _loaders()
    result = evaluate(model, query_loader, gallery_loader, _cfg(), progress=False)
    assert result.gallery["features"].shape == (15, 1, 6)
    assert torch.all(result.gallery["visibility"] == 1)
    assert result.gallery["parts_masks"] is None
    assert result.embedding_names == ["bn_global"]
    assert result.metrics["query"]["rank1"] == 100.0


def test_cosine_and_rerank_options_run():
    model = SideModel()
    query_loader, gallery_loader, _ = _loaders()
    cos = evaluate(model, query_loader, gallery_loader, _cfg(dist_metric="cosine"), progress=False)
    assert cos.dist_metric == "cosine"
    assert cos.distmats["query"].max() <= 2.0 + 1e-5
    rr = evaluate(model, query_loader, gallery_loader, _cfg(rerank=True), progress=False)
    assert rr.distmats["query"].shape == (5, 15)
    assert 0.0 <= rr.metrics["query"]["mAP"] <= 100.0


def test_real_model_and_select_test_embeddings():
    from bpbreid.model import build_model

    cfg = load_config("synthetic_cpu")
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=5)
    query_loader, gallery_loader, _ = _loaders()

    def resized(loader):
        items = [
            {
                **item,
                "image": torch.nn.functional.interpolate(item["image"][None], size=(64, 32))[0],
            }
            for item in loader.dataset.items
        ]
        return DataLoader(items, batch_size=4)

    result = evaluate(model, resized(query_loader), resized(gallery_loader), cfg, progress=False)
    k = cfg.model.bpbreid.masks.parts_num
    assert result.gallery["features"].shape == (15, k + 1, cfg.model.bpbreid.dim_reduce_output)
    assert result.gallery["parts_masks"].shape[1] == k + 1
    assert len(result.embedding_names) == k + 1
    assert np.isfinite(result.distmats["query"]).all()
