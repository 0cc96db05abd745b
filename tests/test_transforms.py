"""Augmentation pipelines: shapes, normalization, alignment of image and targets, seeding."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from bpbreid.config import Config, ConfigError
from bpbreid.data import parsing as P
from bpbreid.data.transforms import MASK_STRIDE, build_transforms, canonical_transforms

H, W = 64, 32
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def make_cfg(transforms: list[str], grouping: str = "eight") -> Config:
    cfg = Config()
    cfg.data.height, cfg.data.width = H, W
    cfg.data.transforms = transforms
    cfg.model.bpbreid.masks.preprocess = grouping
    cfg.model.bpbreid.masks.parts_num = P.num_parts(grouping)
    return cfg


def marked_sample(field: str = "left_wrist") -> tuple[np.ndarray, np.ndarray]:
    """A grey image with a white block on its left side, and ``field`` = 1 on the same block.

    The image is 2x the target size and the label 1/2 of it, so the pipeline must resize both.
    """
    image = np.full((2 * H, 2 * W, 3), 60, dtype=np.uint8)
    image[32:64, 8:24] = 255  # rows 16..32, cols 4..12 at (H, W)
    fields = np.zeros((36, H // 2, W // 2), dtype=np.float32)
    fields[P.FIELD_INDEX[field], 8:16, 2:6] = 1.0
    return image, fields


def to_pixels(image: torch.Tensor) -> np.ndarray:
    """Undo the normalization: [3, H, W] -> [H, W, 3] in [0, 255]."""
    return (image.numpy().transpose(1, 2, 0) * STD + MEAN) * 255


def test_test_pipeline_shapes_and_normalization():
    transform = build_transforms(make_cfg(["rc", "re"]), train=False)
    image = np.zeros((100, 40, 3), dtype=np.uint8)
    image[:, :, 0] = 255
    fields = np.random.default_rng(0).random((36, 30, 15), dtype=np.float32)
    out_image, targets = transform(image, fields)
    assert out_image.shape == (3, H, W) and out_image.dtype == torch.float32
    np.testing.assert_allclose(out_image[0].numpy(), (1 - MEAN[0]) / STD[0], atol=1e-4)
    np.testing.assert_allclose(out_image[1].numpy(), -MEAN[1] / STD[1], atol=1e-4)
    assert targets.shape == (9, H // MASK_STRIDE, W // MASK_STRIDE)
    assert targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(0), torch.ones(H // 4, W // 4), atol=1e-5, rtol=0)
    # Without a label only the image comes back.
    again, none = transform(image, None)
    assert none is None and torch.equal(again, out_image)


def test_test_pipeline_targets_follow_the_grouping():
    cfg = make_cfg([], grouping="four")
    transform = build_transforms(cfg, train=False)
    image, fields = marked_sample("left_wrist")  # an arm keypoint -> four's 'arms_mask'
    _, targets = transform(image, fields)
    labels = P.hard_labels(targets)
    assert targets.shape[0] == 5
    assert (labels[4:8, 1:3] == 2).all()  # block rows 16..32, cols 4..12 at 1/4
    assert (labels[12:, :] == 0).all()
    # diff_from_max background: the same argmax here, different soft values.
    cfg.model.bpbreid.masks.background_computation_strategy = "diff_from_max"
    _, soft = build_transforms(cfg, train=False)(image, fields)
    assert torch.equal(P.hard_labels(soft), labels)
    assert not torch.allclose(soft, targets)


def test_flip_keeps_image_and_targets_aligned_and_swaps_arms():
    transform = build_transforms(make_cfg(["flip"]), train=True, seed=0)
    image, fields = marked_sample("left_wrist")
    seen = set()
    for _ in range(40):
        out_image, targets = transform(image, fields)
        labels = P.hard_labels(targets).numpy()
        bright = to_pixels(out_image)[..., 0] > 200  # [H, W]
        bright_small = bright.reshape(H // 4, 4, W // 4, 4).all(axis=(1, 3))
        flipped = bright[:, W // 2 :].any()
        seen.add(flipped)
        arm = labels > 0
        assert (arm == bright_small).all()  # label exactly where the white block is
        # eight: channel 2 = left_arm_mask, channel 3 = right_arm_mask
        assert set(np.unique(labels[arm])) == {3 if flipped else 2}
    assert seen == {True, False}  # p = 0.5: both cases occurred


def test_random_crop_moves_image_and_targets_together():
    transform = build_transforms(make_cfg(["rc"]), train=True, seed=1)
    image, fields = marked_sample("nose")
    shifts = set()
    for _ in range(10):
        out_image, targets = transform(image, fields)
        bright = to_pixels(out_image)[..., 0] > 200
        rows, cols = np.nonzero(bright)
        labels = P.hard_labels(targets).numpy()
        label_rows, label_cols = np.nonzero(labels == 1)  # head
        # Centres agree to within one target pixel.
        assert abs(rows.mean() / 4 - (label_rows.mean() + 0.5)) <= 1.0
        assert abs(cols.mean() / 4 - (label_cols.mean() + 0.5)) <= 1.0
        shifts.add((rows.min(), cols.min()))
    assert len(shifts) > 1  # the crop moved


def test_erased_pixels_become_background():
    transform = build_transforms(make_cfg(["re"], grouping="one"), train=True, seed=2)
    image = np.full((H, W, 3), 200, dtype=np.uint8)
    fields = np.ones((36, H // 2, W // 2), dtype=np.float32)  # the whole crop is the person
    erased_count = 0
    for _ in range(30):
        out_image, targets = transform(image, fields)
        erased = np.abs(out_image.numpy()).max(axis=0) < 0.05  # mean colour -> ~0
        labels = P.hard_labels(targets).numpy()
        blocks = erased.reshape(H // 4, 4, W // 4, 4)
        fully, untouched = blocks.all(axis=(1, 3)), ~blocks.any(axis=(1, 3))
        assert (labels[fully] == 0).all()
        assert (labels[untouched] == 1).all()
        erased_count += bool(fully.any())
    assert 5 <= erased_count <= 25  # p = 0.5


def test_same_seed_same_augmentations():
    cfg = make_cfg(["rc", "re", "flip", "cj"])
    image, fields = marked_sample()
    a = build_transforms(cfg, train=True, seed=7)
    b = build_transforms(cfg, train=True, seed=7)
    c = build_transforms(cfg, train=True, seed=8)
    outs_a = [a(image, fields) for _ in range(4)]
    outs_b = [b(image, fields) for _ in range(4)]
    outs_c = [c(image, fields) for _ in range(4)]
    for (ia, ta), (ib, tb) in zip(outs_a, outs_b):
        assert torch.equal(ia, ib) and torch.equal(ta, tb)
    assert any(not torch.equal(ia, ic) for (ia, _), (ic, _) in zip(outs_a, outs_c))
    a.set_seed(7)
    assert torch.equal(a(image, fields)[0], outs_a[0][0])


def test_workers_get_different_random_streams(monkeypatch):
    cfg = make_cfg(["rc", "re", "flip"])
    image, fields = marked_sample()

    def run_as_worker(worker_seed: int) -> list[torch.Tensor]:
        info = types.SimpleNamespace(id=worker_seed % 2, seed=worker_seed)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: info)
        transform = build_transforms(cfg, train=True, seed=3)
        return [transform(image, fields)[0] for _ in range(3)]

    first, second, first_again = run_as_worker(100), run_as_worker(101), run_as_worker(100)
    assert any(not torch.equal(x, y) for x, y in zip(first, second))
    assert all(torch.equal(x, y) for x, y in zip(first, first_again))


def test_transform_names_and_config_errors():
    assert canonical_transforms(["random_crop", "RE", "rf", "color_jitter"]) == [
        "rc",
        "re",
        "flip",
        "cj",
    ]
    with pytest.raises(ConfigError, match="data.transforms"):
        build_transforms(make_cfg(["rc", "mixup"]), train=True)
    cfg = make_cfg([])
    cfg.model.bpbreid.masks.parts_num = 5
    with pytest.raises(ConfigError, match="parts_num"):
        build_transforms(cfg, train=False)


def test_bad_inputs():
    transform = build_transforms(make_cfg([]), train=False)
    with pytest.raises(ValueError, match="36"):
        transform(np.zeros((8, 4, 3), dtype=np.uint8), np.zeros((17, 4, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="RGB"):
        transform(np.zeros((8, 4), dtype=np.uint8), None)


def test_crop_padding_scales_with_the_width():
    from bpbreid.data.transforms import crop_padding

    assert crop_padding(128) == 10  # the official padding at the official width
    assert crop_padding(32) == 2  # not a third of a 32-pixel-wide image
    assert crop_padding(4) == 1  # never zero: the crop still moves
