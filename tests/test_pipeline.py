"""The tensor training pipeline against the reference one (bpbreid.data.pipeline).

Equivalence: the same random parameters are injected into both paths (the reference's
albumentations transforms are called with explicit parameters); images must agree exactly,
part maps and targets up to the float rounding of the bilinear label resize (different
implementations: OpenCV's ``resize`` and ``grid_sample``, both in float32). Distributions:
the tensor pipeline's random parameters against the reference transforms' own samplers, with
fixed seeds. Resume: a killed and resumed run ends with the weights of the uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bpbreid.config import Config, ConfigError, load_config
from bpbreid.data import parsing as P
from bpbreid.data.datasets import ImageReadError, LabelReadError, Sample, build_loaders
from bpbreid.data.pipeline import (
    PIPELINES,
    AugmentParams,
    BatchAugment,
    TensorTrainLoader,
    build_cache,
    label_field_sets,
)
from bpbreid.data.samplers import RandomIdentitySampler
from bpbreid.data.transforms import FlipWithFieldSwap, build_transforms
from bpbreid.engine.checkpoint import read_checkpoint
from bpbreid.engine.trainer import Trainer

H, W = 64, 32
ALL = ["rc", "re", "flip", "cj"]
# Part maps: OpenCV's resize and torch's interpolate / grid_sample compute the same bilinear
# samples in float32, with sample positions and weights rounded differently: the values differ
# by a few float32 ulps (about 2e-7 measured); 1e-5 leaves room for other CPUs and libraries.
PARTS_TOL = 1e-5
# Targets: softmax(15 x block mean) amplifies that by at most 15 / 4 (about 1e-6 measured).
TARGETS_TOL = 1e-4


def make_cfg(
    transforms: list[str],
    grouping: str = "eight",
    height: int = H,
    width: int = W,
    erasing: str = "area_ratio",
    targets: str = "area",
):
    cfg = Config()
    cfg.data.height, cfg.data.width = height, width
    cfg.data.transforms = transforms
    cfg.data.erasing = erasing
    cfg.model.bpbreid.masks.preprocess = grouping
    cfg.model.bpbreid.masks.parts_num = P.num_parts(grouping)
    cfg.model.bpbreid.masks.targets = targets
    return cfg


def reference_with_params(ref, image, fields, params: AugmentParams, i: int):
    """The reference pipeline on one sample, its random parameters taken from ``params[i]``.

    Walks the reference ``Compose`` and calls each albumentations transform with explicit
    parameters, as ``Compose`` would after drawing them. Returns ``(image [3, H, W], parts
    [K, H, W], targets [K+1, H/4, W/4])``.
    """
    height, width = ref.height, ref.width
    data = {"image": image, "masks": np.ascontiguousarray(fields, dtype=np.float32)}
    for step in ref.compose.transforms:
        explicit: dict = {}
        if isinstance(step, FlipWithFieldSwap) and not bool(params.flip[i]):
            continue
        if isinstance(step, A.ColorJitter):
            if not bool(params.jitter[i]):
                continue
            explicit = {
                "brightness": float(params.brightness[i]),
                "contrast": float(params.contrast[i]),
                "saturation": 1.0,
                "hue": 0.0,
                "order": [1, 0, 2, 3] if bool(params.contrast_first[i]) else [0, 1, 2, 3],
            }
        erasing = isinstance(step, A.Erasing | A.CoarseDropout)
        if erasing and not bool(params.erase[i]):
            continue
        values = step.update_transform_params(dict(explicit), data)
        if isinstance(step, A.RandomCrop):
            y, x = (int(v) for v in params.offset[i])
            values.update(crop_coords=(x, y, x + width, y + height), pad_params=None)
        elif erasing:
            top, left, box_h, box_w = (int(v) for v in params.box[i])
            values.update(holes=np.array([[left, top, left + box_w, top + box_h]]), seed=0)
        elif not isinstance(step, A.ColorJitter):
            values.update(step.get_params_dependent_on_data(values, data))
        data = step.apply_with_params(values, **data)
    out_image, targets = ref.finish(data["image"], data["masks"])
    return out_image, torch.from_numpy(np.asarray(data["masks"])), targets


def random_fields(rng, size=(16, 8)) -> np.ndarray:
    """Smooth random fields [36, h, w] in [0, 1] with large areas near 0 and near 1."""
    coarse = rng.random((36, 4, 2), dtype=np.float32) ** 2
    fields = P.resize_maps(coarse, size)
    return np.clip(fields + 0.05 * rng.random((36, *size), dtype=np.float32), 0, 1)


def tensor_inputs(samples_images, samples_fields, cfg):
    """What the cache would hold for these decoded images and fields (uniform label size)."""
    resize = A.Resize(cfg.data.height, cfg.data.width)
    images = torch.stack(
        [
            torch.from_numpy(resize(image=im)["image"].transpose(2, 0, 1).copy())
            for im in samples_images
        ]
    )
    flip = "flip" in cfg.data.transforms
    sets, _, _ = label_field_sets(cfg.model.bpbreid.masks.preprocess, flip)
    labels = torch.stack(
        [torch.from_numpy(np.stack([f[list(s)].max(0) for s in sets])) for f in samples_fields]
    )
    return images, labels


def assert_equivalent(cfg, images0, fields0, params, images=None, labels=None, sizes=None):
    ref = build_transforms(cfg, train=True, seed=0)
    augment = BatchAugment.from_config(cfg)
    if images is None:
        images, labels = tensor_inputs(images0, fields0, cfg)
    out, parts = augment.apply(images, labels, params, sizes)
    targets = augment.targets(parts)
    # What the loader calls: the same (official targets: made at the kept pixels only).
    called_image, called_targets = augment(images, labels, params, sizes)
    assert torch.equal(called_image, out) and torch.equal(called_targets, targets)
    worst_parts = worst_targets = 0.0
    for i in range(len(images0)):
        ref_image, ref_parts, ref_targets = reference_with_params(
            ref, images0[i], fields0[i], params, i
        )
        assert torch.equal(out[i], ref_image), f"sample {i}: image pixels differ"
        worst_parts = max(worst_parts, float((parts[i] - ref_parts).abs().max()))
        worst_targets = max(worst_targets, float((targets[i] - ref_targets).abs().max()))
        # Hard labels: equal except at ties (two parts equally strong: the same field leads
        # both) and where the background rule is within float noise of its threshold.
        ref_labels, labels_i = P.hard_labels(ref_targets), P.hard_labels(targets[i])
        if augment.targets_mode == "official":
            small = F.interpolate(ref_parts[None], size=ref_targets.shape[-2:])[0].numpy()
        else:
            small = P.resize_maps(ref_parts.numpy(), tuple(ref_targets.shape[-2:]), mode="area")
        top2 = ref_targets.topk(2, dim=0).values
        ambiguous = (top2[0] - top2[1] < TARGETS_TOL) | (
            torch.from_numpy(np.abs(small.max(0) - 0.5)) < 1e-4
        )
        assert bool(((ref_labels == labels_i) | ambiguous).all()), f"sample {i}: labels differ"
    assert worst_parts <= PARTS_TOL, worst_parts
    assert worst_targets <= TARGETS_TOL, worst_targets
    if augment.targets_mode == "official":
        # Nearest neighbour picks label values: nothing to round, the maps are equal.
        assert worst_parts == 0.0 and worst_targets == 0.0, (worst_parts, worst_targets)
    return worst_parts, worst_targets


# --------------------------------------------------------------------------------------
# Flip of grouped parts
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("grouping", sorted(P.PART_GROUPINGS))
def test_grouped_flip_equals_flipping_the_36_fields(grouping):
    """Mirror + channel choice on the stored field sets == the reference's flip-then-group."""
    fields = np.random.default_rng(0).random((36, 12, 6), dtype=np.float32)
    sets, plain, flipped = label_field_sets(grouping, flip=True)
    maps = np.stack([fields[list(s)].max(0) for s in sets])
    expected = P.group_fields(P.flip_fields(fields), grouping)
    np.testing.assert_array_equal(maps[list(flipped), :, ::-1], expected)
    np.testing.assert_array_equal(maps[list(plain)], P.group_fields(fields, grouping))
    assert len(plain) == P.num_parts(grouping)


def test_symmetric_groupings_need_no_extra_channel_and_left_right_swap():
    sets, _, flipped = label_field_sets("four", flip=True)
    assert len(sets) == 4 and flipped == (0, 1, 2, 3)
    sets, _, flipped = label_field_sets("eight", flip=True)
    names = P.part_names("eight")
    # Arms and feet swap; the official leg lists are not symmetric: two field sets of their own.
    assert names[flipped[1]] == "right_arm_mask" and names[flipped[2]] == "left_arm_mask"
    assert flipped[6:] == (7, 6)
    assert len(sets) == 10 and set(flipped[4:6]) == {8, 9}
    assert len(label_field_sets("eight", flip=False)[0]) == 8


# --------------------------------------------------------------------------------------
# Equivalence with the reference for the same parameters
# --------------------------------------------------------------------------------------


OFFICIAL = {"erasing": "official", "targets": "official"}


@pytest.mark.parametrize(
    ("transforms", "grouping", "official"),
    [
        (ALL, "eight", {}),
        (ALL, "four", {}),
        (ALL, "five_v", {}),
        (["rc", "re"], "five", {}),
        ([], "one", {}),
        # The paper configs' recipe (data.erasing, model.bpbreid.masks.targets: official).
        (ALL, "eight", OFFICIAL),
        (["rc", "re"], "five_v", OFFICIAL),
        (ALL, "five_v", {"erasing": "official"}),
        (ALL, "four", {"targets": "official"}),
    ],
)
def test_same_parameters_same_pixels(transforms, grouping, official):
    rng = np.random.default_rng(1)
    batch = 24
    images0 = [rng.integers(0, 256, (128, 64, 3), dtype=np.uint8) for _ in range(batch)]
    fields0 = [random_fields(rng) for _ in range(batch)]
    cfg = make_cfg(transforms, grouping, **official)
    augment = BatchAugment.from_config(cfg)
    params = augment.sample(batch, torch.Generator().manual_seed(3))
    if transforms:  # every branch is taken somewhere in the batch
        for name in ("flip", "jitter", "erase") if "flip" in transforms else ("erase",):
            flags = getattr(params, name)
            assert 0 < int(flags.sum()) < batch, name
    assert_equivalent(cfg, images0, fields0, params)


@pytest.mark.parametrize("official", [{}, OFFICIAL], ids=["default", "official"])
def test_extreme_parameters_same_pixels(official):
    """Crops at every corner, boxes at the borders, the jitter range ends, both orders."""
    rng = np.random.default_rng(2)
    cfg = make_cfg(ALL, "eight", **official)
    augment = BatchAugment.from_config(cfg)
    pad = augment.pad
    corners = [(0, 0), (0, 2 * pad), (2 * pad, 0), (2 * pad, 2 * pad)]
    batch = 8
    params = AugmentParams.none(batch, pad)
    params.offset = torch.tensor([corners[i % 4] for i in range(batch)])
    params.flip = torch.tensor([i % 2 == 0 for i in range(batch)])
    params.jitter = torch.ones(batch, dtype=torch.bool)
    params.brightness = torch.tensor([0.8, 1.2] * 4, dtype=torch.float64)
    params.contrast = torch.tensor([0.85, 1.15, 1.15, 0.85] * 2, dtype=torch.float64)
    params.contrast_first = torch.tensor([i < 4 for i in range(batch)])
    params.erase = torch.ones(batch, dtype=torch.bool)
    params.box = torch.tensor(
        [[0, 0, 10, 5], [H - 7, W - 9, 7, 9], [0, W - 3, H, 3], [5, 0, 3, W]] * 2
    )
    images0 = [rng.integers(0, 256, (96, 48, 3), dtype=np.uint8) for _ in range(batch)]
    fields0 = [random_fields(rng, (20, 10)) for _ in range(batch)]
    assert_equivalent(cfg, images0, fields0, params)


@pytest.mark.parametrize("official", [{}, OFFICIAL], ids=["default", "official"])
def test_size_not_a_multiple_of_four_shrinks_as_opencv(official):
    rng = np.random.default_rng(3)
    cfg = make_cfg(["rc", "re", "flip"], "four", height=62, width=30, **official)
    augment = BatchAugment.from_config(cfg)
    params = augment.sample(12, torch.Generator().manual_seed(0))
    images0 = [rng.integers(0, 256, (100, 40, 3), dtype=np.uint8) for _ in range(12)]
    fields0 = [random_fields(rng, (15, 7)) for _ in range(12)]
    assert_equivalent(cfg, images0, fields0, params)


def write_samples(root: Path, image_sizes, label_sizes, seed: int = 0) -> list[Sample]:
    """Images (PNG, lossless) and labels on disk, two images per identity."""
    rng = np.random.default_rng(seed)
    samples = []
    for i, ((ih, iw), lsize) in enumerate(zip(image_sizes, label_sizes)):
        image_path = root / f"{i // 2 + 1:04d}_c{i % 2 + 1}s1_{i:06d}_00.png"
        Image.fromarray(rng.integers(0, 256, (ih, iw, 3), dtype=np.uint8)).save(image_path)
        label_path = root / f"{image_path.stem}.npy"
        np.save(label_path, random_fields(rng, lsize))
        samples.append(Sample(str(image_path), i // 2, i % 2, str(label_path)))
    return samples


@pytest.mark.parametrize("official", [{}, OFFICIAL], ids=["default", "official"])
def test_cache_from_files_with_mixed_label_sizes_matches_the_reference(tmp_path, official):
    from bpbreid.data.datasets import read_image, read_label

    count = 10
    image_sizes = [(128, 64), (100, 40), (64, 32), (150, 70), (77, 33)] * 2
    label_sizes = [(16, 8), (12, 6), (20, 10), (16, 8), (9, 5)] * 2
    samples = write_samples(tmp_path, image_sizes, label_sizes)
    cfg = make_cfg(ALL, "eight", **official)
    cache = build_cache(samples, H, W, grouping="eight", flip=True, progress=False)
    assert cache.images.shape == (count, 3, H, W) and cache.images.dtype == torch.uint8
    assert cache.labels.shape == (count, 10, 20, 10) and cache.labels.dtype == torch.float32
    assert cache.label_sizes.tolist() == [list(s) for s in label_sizes]
    augment = BatchAugment.from_config(cfg)
    params = augment.sample(count, torch.Generator().manual_seed(5))
    params.flip[:4] = torch.tensor([True, False, True, False])  # both cases on every size
    images, labels, sizes = cache.gather(torch.arange(count), "cpu")
    assert_equivalent(
        cfg,
        [read_image(s.img_path) for s in samples],
        [read_label(s) for s in samples],
        params,
        images,
        labels,
        sizes,
    )


def test_memory_mapped_cache_holds_the_same_and_leaves_no_file(tmp_path):
    samples = write_samples(tmp_path, [(128, 64)] * 4, [(16, 8)] * 4)
    in_memory = build_cache(samples, H, W, grouping="four", progress=False)
    scratch = tmp_path / "scratch"
    mapped = build_cache(samples, H, W, grouping="four", cache_dir=scratch, progress=False)
    assert torch.equal(in_memory.images, mapped.images)
    assert torch.equal(in_memory.labels, mapped.labels)
    assert in_memory.label_sizes is None
    assert list(scratch.iterdir()) == []  # unlinked once mapped


def test_an_unusable_cache_dir_is_a_clear_error(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    samples = write_samples(tmp_path, [(128, 64)] * 2, [(16, 8)] * 2)
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    with pytest.raises(ConfigError, match="data.cache_dir=.*a_file.*not a folder"):
        build_cache(samples, H, W, grouping="four", cache_dir=in_the_way, progress=False)
    # Not enough space: refused before anything is mapped (a full disk would kill the run).
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    scratch = tmp_path / "scratch"
    with pytest.raises(ConfigError, match=r"need 12288 bytes .* 100 bytes free"):
        build_cache(samples, H, W, grouping="four", cache_dir=scratch, progress=False)
    assert list(scratch.iterdir()) == []


def test_a_cache_larger_than_memory_is_refused_with_the_way_out(tmp_path, monkeypatch):
    from bpbreid.data import pipeline

    samples = write_samples(tmp_path, [(128, 64)] * 2, [(16, 8)] * 2)
    monkeypatch.setattr(pipeline, "available_memory", lambda: 10_000)  # < 12,288 bytes / 0.8
    with pytest.raises(ConfigError, match=r"need 12288 bytes .*data\.cache_dir=<folder>"):
        build_cache(samples, H, W, grouping="four", progress=False)
    # On disk it is fine; and unknown memory (not Linux) is not a reason to refuse.
    mapped = build_cache(samples, H, W, grouping="four", cache_dir=tmp_path / "s", progress=False)
    assert mapped.images.shape == (2, 3, H, W)
    monkeypatch.setattr(pipeline, "available_memory", lambda: None)
    assert build_cache(samples, H, W, grouping="four", progress=False).images.shape[0] == 2


def test_unreadable_files_are_named(tmp_path):
    samples = write_samples(tmp_path, [(128, 64)] * 3, [(16, 8)] * 3)
    Path(samples[1].img_path).write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match=Path(samples[1].img_path).name):
        build_cache(samples, H, W, grouping="four", threads=2, progress=False)
    samples = write_samples(tmp_path, [(128, 64)] * 3, [(16, 8)] * 3, seed=1)
    Path(samples[2].mask_path).unlink()
    with pytest.raises(LabelReadError, match=Path(samples[2].mask_path).name):
        build_cache(samples, H, W, grouping="four", progress=False)


def test_no_labels_gives_images_only(tmp_path):
    samples = write_samples(tmp_path, [(128, 64)] * 2, [(16, 8)] * 2)
    cache = build_cache(samples, H, W, load_masks=False, progress=False)
    assert cache.labels is None
    augment = BatchAugment.from_config(make_cfg(["rc", "re"], "four"))
    image, targets = augment(cache.images, None, augment.sample(2, torch.Generator()))
    assert image.shape == (2, 3, H, W) and targets is None


# --------------------------------------------------------------------------------------
# Distributions of the random parameters
# --------------------------------------------------------------------------------------

N = 4000


def within(a: np.ndarray, b: np.ndarray, sigmas: float = 5.0) -> bool:
    """Means of two samples agree within ``sigmas`` standard errors."""
    se = np.sqrt(a.var() / len(a) + b.var() / len(b))
    return abs(a.mean() - b.mean()) <= sigmas * se + 1e-12


def reference_step(ref, kind):
    return next(step for step in ref.compose.transforms if isinstance(step, kind))


def reference_boxes(step, shape, seed: int) -> np.ndarray:
    """``N`` boxes ``(left, top, right, bottom)`` from an erasing step's own sampler."""
    step.set_random_seed(seed)
    return np.array(
        [step.get_params_dependent_on_data({"shape": shape}, {})["holes"][0] for _ in range(N)]
    )


def test_probabilities_match_the_reference():
    cfg = make_cfg(ALL, "eight")
    ref = build_transforms(cfg, train=True, seed=0)
    params = BatchAugment.from_config(cfg).sample(N, torch.Generator().manual_seed(0))
    for kind, flags in (
        (FlipWithFieldSwap, params.flip),
        (A.ColorJitter, params.jitter),
        (A.Erasing, params.erase),
    ):
        step = reference_step(ref, kind)
        step.set_random_seed(1)
        reference = np.array([step.should_apply() for _ in range(N)], dtype=float)
        ours = flags.numpy().astype(float)
        assert within(ours, reference), kind.__name__
        assert abs(ours.mean() - step.p) < 0.04
    order = params.contrast_first.numpy().astype(float)
    assert abs(order.mean() - 0.5) < 0.04


def test_crop_offsets_are_uniform_over_the_padding():
    cfg = make_cfg(["rc"], "four")
    ref = build_transforms(cfg, train=True, seed=0)
    augment = BatchAugment.from_config(cfg)
    pad = augment.pad
    assert pad == 2  # 10 px at width 128, scaled to 32
    ours = augment.sample(N, torch.Generator().manual_seed(0)).offset.numpy()
    crop = reference_step(ref, A.RandomCrop)
    crop.set_random_seed(2)
    shape = {"shape": (H + 2 * pad, W + 2 * pad, 3)}
    coords = [crop.get_params_dependent_on_data(dict(shape), {})["crop_coords"] for _ in range(N)]
    reference = np.array([(y, x) for x, y, _, _ in coords])
    expected = N / (2 * pad + 1)
    for axis in (0, 1):
        for sample in (ours[:, axis], reference[:, axis]):
            counts = np.bincount(sample, minlength=2 * pad + 1)
            assert len(counts) == 2 * pad + 1  # 0..2 pad, nothing else
            assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)


def test_erasing_boxes_follow_the_reference_distribution():
    cfg = make_cfg(["re"], "four")
    ref = build_transforms(cfg, train=True, seed=0)
    params = BatchAugment.from_config(cfg).sample(N, torch.Generator().manual_seed(0))
    top, left, box_h, box_w = params.box.numpy().T.astype(float)
    holes = reference_boxes(reference_step(ref, A.Erasing), (H, W, 3), seed=3).astype(float)
    r_left, r_top, r_right, r_bottom = holes.T
    r_h, r_w = r_bottom - r_top, r_right - r_left
    area, r_area = box_h * box_w / (H * W), r_h * r_w / (H * W)
    aspect, r_aspect = box_w / box_h, r_w / r_h
    assert within(area, r_area) and within(aspect, r_aspect)
    assert within(box_h, r_h) and within(box_w, r_w)
    # Range: at least 2 % of the image, at most what fits (15 % of a 2:1 image at ratio 3.3),
    # up to the rounding of the sides; the aspect within [0.3, 3.3] up to rounding.
    for a in (area, r_area):
        assert a.min() >= 0.02 * 0.75 and a.max() <= 0.15 * 1.25
        assert a.min() < 0.025 and a.max() > 0.13  # the whole range is used
    for r in (aspect, r_aspect):
        assert r.min() >= 0.3 * 0.7 and r.max() <= 3.34 * 1.3
    # Position uniform over what keeps the box inside.
    for start, size, full in ((top, box_h, H), (left, box_w, W)):
        assert (start >= 0).all() and (start + size <= full).all()
        relative = (start + 0.5) / (full - size + 1)
        assert abs(relative.mean() - 0.5) < 0.02
    r_relative = (r_top + 0.5) / (H - r_h + 1)
    assert within((top + 0.5) / (H - box_h + 1), r_relative)


def test_official_erasing_boxes_follow_the_reference_distribution():
    """data.erasing=official: CoarseDropout's one box, sides uniform integers, p 0.5."""
    height, width = 256, 128
    cfg = make_cfg(["re"], "four", height=height, width=width, erasing="official")
    ref = build_transforms(cfg, train=True, seed=0)
    params = BatchAugment.from_config(cfg).sample(N, torch.Generator().manual_seed(0))
    top, left, box_h, box_w = params.box.numpy().T
    dropout = reference_step(ref, A.CoarseDropout)
    holes = reference_boxes(dropout, (height, width, 3), seed=4)
    r_left, r_top, r_right, r_bottom = holes.T
    r_h, r_w = r_bottom - r_top, r_right - r_left
    # The official ranges: [int(0.15 s), int(0.65 s)], both ends drawn, nothing outside.
    for ours, theirs, (low, high) in ((box_h, r_h, (38, 166)), (box_w, r_w, (19, 83))):
        for sample in (ours, theirs):
            assert sample.min() == low and sample.max() == high
            counts = np.bincount(sample - low, minlength=high - low + 1)
            expected = N / (high - low + 1)
            assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)
        assert within(ours.astype(float), theirs.astype(float))
    for start, size, full, r_start, r_size in (
        (top, box_h, height, r_top, r_h),
        (left, box_w, width, r_left, r_w),
    ):
        assert (start >= 0).all() and (start + size <= full).all()
        relative = (start + 0.5) / (full - size + 1)
        r_relative = (r_start + 0.5) / (full - r_size + 1)
        assert abs(relative.mean() - 0.5) < 0.02 and within(relative, r_relative)
    dropout.set_random_seed(5)
    reference = np.array([dropout.should_apply() for _ in range(N)], dtype=float)
    assert within(params.erase.numpy().astype(float), reference)


def test_erasing_boxes_with_fractional_sides_follow_the_reference():
    """A CoarseDropout with side ranges as fractions of the image: int(size * uniform)."""
    cfg = make_cfg(["re"], "four", height=128, width=64, erasing="official")
    ref = build_transforms(cfg, train=True, seed=0)
    index = next(i for i, t in enumerate(ref.compose.transforms) if isinstance(t, A.CoarseDropout))
    fractional = A.CoarseDropout(
        num_holes_range=(1, 1),
        hole_height_range=(0.2, 0.5),
        hole_width_range=(0.1, 0.6),
        fill=(0.485, 0.456, 0.406),
        fill_mask=0,
        p=0.5,
    )
    ref.compose.transforms[index] = fractional
    params = BatchAugment(ref).sample(N, torch.Generator().manual_seed(0))
    holes = reference_boxes(fractional, (128, 64, 3), seed=6)
    _, _, box_h, box_w = params.box.numpy().T
    r_h, r_w = holes[:, 3] - holes[:, 1], holes[:, 2] - holes[:, 0]
    # int(128 * [0.2, 0.5)) = 25..63, int(64 * [0.1, 0.6)) = 6..38: truncated, not rounded.
    for ours, theirs, (low, high) in ((box_h, r_h, (25, 63)), (box_w, r_w, (6, 38))):
        for sample in (ours, theirs):
            assert sample.min() == low and sample.max() == high
        assert within(ours.astype(float), theirs.astype(float))


def test_nearest_label_index_is_opencvs():
    """The official targets' label resize: the source index OpenCV's INTER_NEAREST reads."""
    import cv2

    from bpbreid.data.pipeline import _nearest_table

    for size_out in (*range(1, 70), 96, 128, 196, 256, 384):
        table = _nearest_table(47, size_out).numpy()
        assert table.shape == (48, size_out)
        for size_in in range(1, 48):
            column = np.tile(np.arange(size_in, dtype=np.float32)[:, None], (1, 2))
            expected = cv2.resize(column, (2, size_out), interpolation=cv2.INTER_NEAREST)[:, 0]
            assert np.array_equal(table[size_in], expected), (size_in, size_out)


def test_jitter_factors_are_uniform_in_their_ranges():
    params = BatchAugment.from_config(make_cfg(["cj"], "four")).sample(
        N, torch.Generator().manual_seed(0)
    )
    for values, (low, high) in ((params.brightness, (0.8, 1.2)), (params.contrast, (0.85, 1.15))):
        v = values.numpy()
        assert low <= v.min() < low + 0.01 and high - 0.01 < v.max() <= high
        assert abs(v.mean() - (low + high) / 2) < 0.01
        assert abs(v.std() - (high - low) / np.sqrt(12)) < 0.01


def test_same_seed_same_parameters():
    augment = BatchAugment.from_config(make_cfg(ALL, "eight"))
    a = augment.sample(16, torch.Generator().manual_seed(7))
    b = augment.sample(16, torch.Generator().manual_seed(7))
    c = augment.sample(16, torch.Generator().manual_seed(8))
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in vars(a))
    assert not all(torch.equal(getattr(a, k), getattr(c, k)) for k in vars(a))


def test_steps_the_tensor_pipeline_cannot_reproduce_are_refused():
    cfg = make_cfg(["rc"], "four")
    ref = build_transforms(cfg, train=True, seed=0)
    ref.compose.transforms.insert(3, A.Blur(p=1.0))
    with pytest.raises(ConfigError, match="data.pipeline=reference"):
        BatchAugment(ref)


# --------------------------------------------------------------------------------------
# The loader, the config switch and exact resume
# --------------------------------------------------------------------------------------


def test_pipeline_setting_is_validated():
    assert PIPELINES == ("reference", "tensor")
    with pytest.raises(ConfigError, match="data.pipeline"):
        load_config(None, ["data.pipeline=fast"])
    assert load_config(None, ["data.pipeline=tensor"]).data.pipeline == "tensor"
    assert Config().data.pipeline == "reference"


def test_loader_gathers_the_sampler_batches(tmp_path):
    samples = write_samples(tmp_path, [(128, 64)] * 12, [(16, 8)] * 12)  # 6 ids x 2
    cfg = make_cfg(ALL, "eight")
    sampler = RandomIdentitySampler(samples, batch_size=4, num_instances=2, seed=0)
    loader = TensorTrainLoader.from_config(cfg, samples, sampler, load_masks=True, progress=False)
    assert loader.cache is None  # nothing decoded before the first batch
    assert len(loader) == len(sampler) // 4
    sampler.set_epoch(0)
    order = list(sampler)
    sampler.set_epoch(0)
    batches = list(loader)
    assert len(batches) == len(loader)
    for n, batch in enumerate(batches):
        indices = order[4 * n : 4 * n + 4]
        assert batch["pid"].tolist() == [samples[i].pid for i in indices]
        assert batch["img_path"] == [samples[i].img_path for i in indices]
        assert batch["image"].shape == (4, 3, H, W) and batch["image"].dtype == torch.float32
        assert batch["target_masks"].shape == (4, 9, H // 4, W // 4)
        torch.testing.assert_close(batch["target_masks"].sum(1), torch.ones(4, H // 4, W // 4))
    # The generator's state is the whole randomness: restoring it repeats a batch.
    state = loader.generator.get_state()
    first = loader.batch(order[:4])
    loader.generator.set_state(state)
    again = loader.batch(order[:4])
    assert torch.equal(first["image"], again["image"])
    assert torch.equal(first["target_masks"], again["target_masks"])


def test_the_cache_moves_to_the_device_only_with_room_beside_the_training(
    tmp_path, monkeypatch, caplog
):
    """``data.device_cache_mb`` allows it, the card's free memory decides (meta: a stand-in)."""
    from bpbreid.data import pipeline

    samples = write_samples(tmp_path, [(128, 64)] * 4, [(16, 8)] * 4)
    cfg = make_cfg(["rc"], "four")
    sampler = RandomIdentitySampler(samples, batch_size=4, num_instances=2, seed=0)
    for free, expected in ((10**12, "meta"), (1000, "cpu")):
        monkeypatch.setattr(pipeline, "device_free_memory", lambda device, free=free: free)
        loader = TensorTrainLoader.from_config(
            cfg, samples, sampler, load_masks=True, device="meta", progress=False
        )
        assert loader.prepare().device.type == expected
    assert "stay in host memory: meta has 1000 bytes free" in caplog.text


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from bpbreid.data.synthetic import generate

    root = tmp_path_factory.mktemp("data")
    generate(root / "synthetic", "tiny", 0, progress=False)
    return root


def synthetic_cfg(data_root, output_dir, *overrides: str):
    return load_config(
        "synthetic_cpu",
        [
            "data.synthetic.preset=tiny",
            f"data.root={data_root}",
            "data.pipeline=tensor",
            "data.transforms=[rc,re,flip,cj]",
            "train.device=cpu",
            "train.batch_size=16",
            "train.loggers=[csv]",
            f"train.output_dir={output_dir}",
            *overrides,
        ],
    )


def test_build_loaders_makes_the_tensor_loader_and_reference_test_loaders(data_root, tmp_path):
    from bpbreid.data.datasets import build_dataset_from_config

    cfg = synthetic_cfg(data_root, tmp_path)
    loaders = build_loaders(cfg, build_dataset_from_config(cfg), progress=False)
    assert isinstance(loaders["train"], TensorTrainLoader)
    assert loaders["train"].cache is None
    assert isinstance(loaders["query"], torch.utils.data.DataLoader)


def test_fit_decodes_the_cache_before_the_first_step_and_says_so(data_root, tmp_path, capsys):
    """The decoding is said on its own line, not counted as the first steps' wait for data."""
    cfg = synthetic_cfg(data_root, tmp_path, "train.max_steps=1", "train.test_at_end=false")
    trainer = Trainer(cfg, progress=True)
    seen: list[bool] = []
    trainer.step_hooks.append(lambda t, step, c: seen.append(t.train_loader.cache is not None))
    decoded_before_steps: list[bool] = []
    original = trainer._train_epoch

    def train_epoch() -> None:
        decoded_before_steps.append(trainer.train_loader.cache is not None)
        original()

    trainer._train_epoch = train_epoch
    trainer.fit()
    assert decoded_before_steps == [True] and seen == [True]
    assert "Decoded the 48 training images once in" in capsys.readouterr().out
    # A DataLoader has nothing to prepare; neither has a finished run.
    reference = Trainer(synthetic_cfg(data_root, tmp_path / "r", "data.pipeline=reference"))
    reference._prepare_train_data()
    assert "Decoded" not in capsys.readouterr().out


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_with_the_tensor_pipeline_equals_the_uninterrupted_run(tmp_path, data_root):
    overrides = (
        "train.max_steps=null",
        "train.max_epoch=3",
        "train.save_every=1",
        "train.deterministic=true",
        "train.warmup_epochs=1",
        "train.test_at_end=false",
    )
    straight = Trainer(synthetic_cfg(data_root, tmp_path / "a", *overrides), progress=False)
    assert isinstance(straight.train_loader, TensorTrainLoader)
    straight.fit()
    expected = _params(straight.model)

    cfg_b = synthetic_cfg(data_root, tmp_path / "b", *overrides)

    def kill_in_epoch_3(trainer, step, components):
        if step == 2 * trainer.steps_per_epoch + 1:
            raise KeyboardInterrupt

    killed = Trainer(cfg_b, progress=False, step_hooks=[kill_in_epoch_3])
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    saved = read_checkpoint(tmp_path / "b" / "last.pth")
    assert saved["state"]["epoch"] == 2 and "loader_generator" in saved["sampler"]

    torch.manual_seed(1234)  # a fresh process starts from other RNG states
    resumed = Trainer(cfg_b, progress=False)
    state = resumed.fit(resume=True)
    assert state.step == straight.state.step
    for key, value in _params(resumed.model).items():
        assert torch.equal(value, expected[key]), f"{key} differs after resuming"
    assert [h["total"] for h in state.history] == [h["total"] for h in straight.state.history]
    # Without the generator state, the resumed run would draw other augmentations.
    fresh = Trainer(cfg_b, progress=False)
    assert not torch.equal(
        fresh.train_loader.generator.get_state(), saved["sampler"]["loader_generator"]
    )


@pytest.mark.parametrize(
    "recipe",
    [[], ["data.erasing=official", "model.bpbreid.masks.targets=official"]],
    ids=["default", "official"],
)
def test_pipeline_comparison_runs_tiny(data_root, recipe):
    from bpbreid.bench.train import compare_pipelines, format_pipeline_comparison

    cfg = synthetic_cfg(data_root, "unused", "data.transforms=[rc,re]", *recipe)
    result = compare_pipelines(cfg, steps=2, warmup=0, rounds=2)
    assert result["cache"]["images"] == 48 and result["threads"] == 1
    for name in ("reference", "tensor"):
        assert result["data"][name] > 0 and result["training"][name]["images_per_s"] > 0
        assert 0 <= result["training"][name]["data_wait"] <= 1
    table = format_pipeline_comparison(result)
    assert "| tensor (decode once, batch tensor ops) |" in table and "1.00x" in table


def test_ranks_draw_their_own_augmentations_from_disjoint_batches(tmp_path):
    from bpbreid.data.pipeline import augment_seed

    samples = write_samples(tmp_path, [(64, 32)] * 16, [(16, 8)] * 16)  # 8 ids x 2
    cfg = make_cfg(["rc", "re"], "four")
    loaders = []
    for rank in (0, 1):
        sampler = RandomIdentitySampler(samples, 4, 2, rank=rank, world_size=2, seed=0)
        loaders.append(
            TensorTrainLoader.from_config(
                cfg, samples, sampler, load_masks=True, rank=rank, progress=False
            )
        )
    assert augment_seed(0, 0) != augment_seed(0, 1) and augment_seed(0, 0) == augment_seed(0, 0)
    state0, state1 = (loader.generator.get_state() for loader in loaders)
    assert not torch.equal(state0, state1)
    paths = [{p for batch in loader for p in batch["img_path"]} for loader in loaders]
    assert paths[0] and paths[1] and not paths[0] & paths[1]


def test_demo_model_comparison_runs_tiny(data_root):
    from bpbreid.bench.train import compare_demo_models, format_demo_comparison

    overrides = ["data.synthetic.preset=tiny", f"data.root={data_root}", "train.batch_size=16"]
    result = compare_demo_models(
        steps=2, rounds=2, models=("bpbreid", "global_id"), overrides=overrides
    )
    assert list(result) == ["bpbreid", "global_id"]
    for variants in result.values():
        assert set(variants) == {"before", "after"}
        assert all(v["images_per_s"] > 0 and 0 <= v["data_wait"] <= 1 for v in variants.values())
    table = format_demo_comparison(result)
    assert table.count("\n") == 3 and "| bpbreid |" in table


def test_demo_phases_time_each_phase_and_price_the_floor(data_root):
    from bpbreid.bench.train import PHASES, demo_phases, format_demo_phases

    overrides = ["data.synthetic.preset=tiny", f"data.root={data_root}", "train.batch_size=16"]
    result = demo_phases(steps=2, rounds=2, models=("bpbreid", "global_id"), overrides=overrides)
    assert result["peak_gflops"] > 0
    for info in result["models"].values():
        assert set(info["phases"]) == set(PHASES)
        assert info["phases"]["forward"] > 0 and info["phases"]["backward"] > 0
        assert info["gflop_per_step"] > 0
        assert info["floor_s_per_step"] == info["gflop_per_step"] / result["peak_gflops"]
    # The part head costs FLOPs that the global-only model does not have.
    models = result["models"]
    assert models["bpbreid"]["gflop_per_step"] > models["global_id"]["gflop_per_step"]
    demo = result["demo"]
    assert 0 < demo["floor_s"] and 0 < demo["measured_s"]
    table = format_demo_phases(result)
    assert "| bpbreid |" in table and "floor" in table


def test_ceiling_compares_model_alone_and_both_pipelines_per_variant(data_root, tmp_path):
    from bpbreid.bench.train import SOURCES, compare_ceiling, format_ceiling

    cfg = synthetic_cfg(data_root, tmp_path / "run")
    result = compare_ceiling(cfg, steps=2, device="cpu", warmup=1, threads=1)
    rows = result["rows"]
    assert [(r["variant"], r["source"]) for r in rows] == [
        (v, s) for v in ("fp32", "amp_cl") for s in SOURCES
    ]
    for row in rows:
        assert row["images_per_s"] > 0 and 0 <= row["data_wait"] <= 1
        if row["source"] == "model":
            assert row["vs_ceiling"] == 1.0
    reference_fp32 = rows[1]
    assert reference_fp32["source"] == "reference" and reference_fp32["vs_fp32"] == 1.0
    table = format_ceiling(result)
    assert table.count("| fp32 eager") == 3 and "of the ceiling (goal: at least 90%)" in table


def test_step_flops_counts_forward_and_both_gradients():
    from types import SimpleNamespace

    from torch import nn

    from bpbreid.bench.train import step_flops

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    images = torch.randn(2, 3, 8, 8)
    trainer = SimpleNamespace(model=model, train_step=lambda batch: model(batch).sum().backward())
    conv_macs = 2 * 4 * 8 * 8 * 3 * 3 * 3  # output elements x (in channels x kernel)
    linear_macs = 2 * 5 * 4 * 8 * 8
    # The image needs no gradient: forward + weight gradient for the convolution; the linear
    # layer also passes a gradient to its input.
    assert step_flops(trainer, images) == 2 * conv_macs * 2 + 2 * linear_macs * 3


def test_tensor_loader_answers_the_dataloader_questions(data_root, tmp_path):
    # Notebook 04 prints a training loader's workers and pinning, whichever pipeline built it.
    from bpbreid.engine import Trainer

    trainer = Trainer(synthetic_cfg(data_root, tmp_path / "run"), progress=False)
    loader = trainer.train_loader
    assert isinstance(loader, TensorTrainLoader)
    assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (0, False, False)
