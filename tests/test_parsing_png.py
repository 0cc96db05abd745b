"""Human-parsing PNGs (LIP/SCHP class maps) as a label source: sides, datasets, training."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bpbreid.config import load_config
from bpbreid.data import parsing as P
from bpbreid.errors import LabelError
from bpbreid.parts import DEFAULT_MASKS_DIR

# LIP class indices used below.
FACE, UPPER, PANTS, SKIRT, SOCKS, GLOVE = 13, 5, 9, 12, 8, 3
L_ARM, R_ARM, L_LEG, R_LEG, L_SHOE, R_SHOE = 14, 15, 16, 17, 18, 19


def person(width: int = 16, facing: bool = True, legs: int = PANTS, sided_legs: bool = False):
    """A 32 x ``width`` class map: face, upper clothes with arms, pants (or skirt) and shoes.

    ``facing``: the person's own left is on the image's right (arms placed accordingly).
    ``sided_legs``: legs drawn as left/right leg classes instead of a side-less class.
    """
    m = np.zeros((32, width), dtype=np.int64)
    c = width // 2
    m[1:5, c - 2 : c + 2] = FACE
    m[5:14, c - 3 : c + 3] = UPPER
    image_right_arm, image_left_arm = (L_ARM, R_ARM) if facing else (R_ARM, L_ARM)
    m[5:13, c + 3 : c + 5] = image_right_arm
    m[5:13, c - 5 : c - 3] = image_left_arm
    m[14:28, c - 3 : c + 3] = legs
    if sided_legs:
        m[14:28, c : c + 3] = L_LEG if facing else R_LEG
        m[14:28, c - 3 : c] = R_LEG if facing else L_LEG
    m[28:31, c : c + 3] = L_SHOE if facing else R_SHOE
    m[28:31, c - 3 : c] = R_SHOE if facing else L_SHOE
    return m


def mirrored(class_map: np.ndarray) -> np.ndarray:
    """The class map of the mirrored image: columns reversed, left/right classes swapped."""
    swap = np.arange(20)
    for left, right in P.LIP_SIDED_PAIRS:
        swap[left], swap[right] = right, left
    return swap[class_map[:, ::-1]]


def region(regions: np.ndarray, name: str) -> np.ndarray:
    return regions[P.PNG_REGIONS.index(name)]


@pytest.mark.parametrize("facing", [True, False])
def test_side_less_classes_go_to_the_persons_own_sides(facing):
    regions = P.png_regions(person(facing=facing))
    assert P.facing_camera(person(facing=facing)) is facing
    left_leg, right_leg = region(regions, "left_leg"), region(regions, "right_leg")
    # Pants split at their middle: the half on the person's left goes to the left leg.
    image_right = slice(8, 11)  # columns c..c+2
    image_left = slice(5, 8)
    left_cols, right_cols = (image_right, image_left) if facing else (image_left, image_right)
    assert left_leg[14:28, left_cols].all() and not left_leg[14:28, right_cols].any()
    assert right_leg[14:28, right_cols].all() and not right_leg[14:28, left_cols].any()
    assert left_leg.sum() == right_leg.sum()


def test_a_flip_of_the_regions_is_the_regions_of_the_flipped_map():
    for class_map in (person(), person(facing=False), person(legs=SKIRT), person(17)):
        class_map = class_map.copy()
        class_map[20:24, 7:9] = GLOVE  # a glove held in front: split by the person's centre
        class_map[28:31][class_map[28:31] > 0] = SOCKS
        flipped = P.LABEL_SOURCES["parsing_png"].flip(P.png_regions(class_map))
        np.testing.assert_array_equal(flipped, P.png_regions(mirrored(class_map)))


def test_left_and_right_shares_stay_balanced_in_the_training_targets():
    """Over many people, the left and right leg get the same share of target pixels.

    With side-less pants given to both legs, every pants pixel is a tie that the argmax of the
    targets gives to the first part (the left leg): 15.7% vs 2.0% of pixels on SCHP labels.
    """
    rng = np.random.default_rng(0)
    counts = np.zeros(9)
    for _ in range(40):
        class_map = person(width=int(rng.integers(14, 20)), facing=bool(rng.random() < 0.5))
        class_map = np.roll(class_map, int(rng.integers(-2, 3)), axis=1)
        parts = P.parsing_map_to_parts(class_map, "eight")
        labels = P.hard_labels(P.part_targets(parts))
        counts += np.bincount(labels.ravel(), minlength=9)
    left_leg, right_leg = counts[5], counts[6]
    assert left_leg > 0 and abs(left_leg - right_leg) / (left_leg + right_leg) < 0.05
    left_arm, right_arm = counts[2], counts[3]
    assert abs(left_arm - right_arm) / (left_arm + right_arm) < 0.05


def test_the_source_reads_regions_at_the_requested_size(tmp_path):
    path = tmp_path / "label.png"
    Image.fromarray(person().astype(np.uint8)).save(path)
    source = P.label_source_of_file(path)
    assert source.name == "parsing_png"
    full = source.read(path)
    assert full.shape == (len(P.PNG_REGIONS), 32, 16) and full.dtype == np.float32
    small = source.read(path, (8, 4))
    assert small.shape == (len(P.PNG_REGIONS), 8, 4)
    # Area averaging: each small pixel is its 4x4 block's share of the region.
    np.testing.assert_allclose(small, full.reshape(10, 8, 4, 4, 4).mean(axis=(2, 4)), atol=1e-6)
    grouped = source.group(small, "four")
    assert grouped.shape == (4, 8, 4)
    with pytest.raises(Exception, match="five_v|Valid"):
        source.check_grouping("eleven")


# ----------------------------------------------------------------- datasets and training


def class_map_from_fields(fields: np.ndarray) -> np.ndarray:
    """A LIP class map drawn from 36 synthetic fields: the 'eight' parts' winner per pixel."""
    parts = P.group_fields(fields, "eight")
    lip = np.array([0, FACE, L_ARM, R_ARM, UPPER, PANTS, PANTS, L_SHOE, R_SHOE])
    return lip[P.hard_labels(P.part_targets(parts))]


@pytest.fixture(scope="module")
def png_root(tmp_path_factory) -> Path:
    """A Market-1501 tree of tiny synthetic images with parsing PNGs for the training images
    only (query and gallery have none), in the ``<split>_parsing_pgt`` layout."""
    from bpbreid.data.synthetic import generate

    root = tmp_path_factory.mktemp("png")
    synthetic = generate(root / "synthetic", "tiny", 0, progress=False)
    market = root / "Market-1501-v15.09.15"
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        shutil.copytree(synthetic / split, market / split)
    labels = market / "bounding_box_train_parsing_pgt"
    labels.mkdir()
    fields_dir = synthetic / "masks" / DEFAULT_MASKS_DIR / "bounding_box_train"
    for image in sorted((market / "bounding_box_train").iterdir()):
        fields = P.load_parsing_label(fields_dir / f"{image.stem}.npy")
        size = Image.open(image).size  # (w, h): PNGs have the image's size
        class_map = P.resize_maps(
            class_map_from_fields(fields)[None].astype(np.float32), (size[1], size[0]), "nearest"
        )[0]
        Image.fromarray(class_map.astype(np.uint8)).save(labels / f"{image.stem}.png")
    return root


def png_cfg(root: Path, out: Path, *overrides: str):
    return load_config(
        "synthetic_cpu",
        [
            "data.name=market1501",
            "data.extra_query_sets=[]",
            f"data.root={root}",
            "model.bpbreid.masks.source=parsing_png",
            "train.device=cpu",
            "train.batch_size=16",
            "train.loggers=[csv]",
            f"train.output_dir={out}",
            *overrides,
        ],
    )


def test_datasets_find_png_labels_for_training_only(png_root, tmp_path):
    from bpbreid.data.datasets import build_dataset_from_config

    data = build_dataset_from_config(png_cfg(png_root, tmp_path), progress=False)
    assert data.train and all(s.mask_path.endswith(".png") for s in data.train)
    assert all(s.mask_path is None for s in data.query + data.gallery)
    summary = data.summary()
    assert "parsing PNGs in {split}_parsing_pgt/" in summary
    assert f"train {len(data.train)}/{len(data.train)}" in summary


def test_a_missing_png_stops_or_is_dropped_as_configured(png_root, tmp_path):
    from bpbreid.data.datasets import build_dataset_from_config

    root = tmp_path / "root"
    shutil.copytree(png_root / "Market-1501-v15.09.15", root / "Market-1501-v15.09.15")
    labels = root / "Market-1501-v15.09.15" / "bounding_box_train_parsing_pgt"
    victim = sorted(labels.iterdir())[0]
    victim.unlink()
    with pytest.raises(LabelError, match=victim.name + r"|masks.missing=drop"):
        build_dataset_from_config(png_cfg(root, tmp_path), progress=False)
    with pytest.warns(UserWarning, match="1 of .* training images"):
        data = build_dataset_from_config(
            png_cfg(root, tmp_path, "model.bpbreid.masks.missing=drop"), progress=False
        )
    assert victim.stem not in {Path(s.img_path).stem for s in data.train}
    assert len(data.dropped) == 1


@pytest.mark.parametrize("pipeline", ["reference", "tensor"])
def test_both_pipelines_make_the_same_targets_from_pngs(png_root, tmp_path, pipeline):
    """Targets from PNGs: [K+1, H/4, W/4], the person where the PNG has it, both pipelines."""
    from bpbreid.data.datasets import build_dataset_from_config, build_loaders

    cfg = png_cfg(png_root, tmp_path, f"data.pipeline={pipeline}", "data.transforms=[flip]")
    data = build_dataset_from_config(cfg, progress=False)
    loader = build_loaders(cfg, data, progress=False)["train"]
    batch = next(iter(loader))
    targets = batch["target_masks"]
    assert targets.shape == (16, cfg.model.bpbreid.masks.parts_num + 1, 16, 8)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(16, 16, 8))
    person_share = (targets.argmax(dim=1) > 0).float().mean()
    assert 0.05 < float(person_share) < 0.95


def test_train_command_runs_on_png_labels(png_root, tmp_path, capsys):
    from bpbreid.__main__ import main

    code = main(
        [
            "train",
            "--config",
            "synthetic_cpu",
            "--no-progress",
            "--out",
            str(tmp_path / "run"),
            "data.name=market1501",
            "data.extra_query_sets=[]",
            f"data.root={png_root}",
            "model.bpbreid.masks.source=parsing_png",
            "train.device=cpu",
            "train.batch_size=16",
            "train.max_steps=3",
            "train.loggers=[csv]",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "model.pth").is_file()


def test_the_mask_figures_draw_a_png_label(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bpbreid.viz.masks import show_overlay

    path = tmp_path / "label.png"
    Image.fromarray(person().astype(np.uint8)).save(path)
    parts = P.load_label_parts(path, "eight")
    assert parts.shape == (8, 32, 16)
    image = np.full((32, 16, 3), 200, dtype=np.uint8)
    fig, ax = plt.subplots()
    show_overlay(ax, image, parts, title="parsing PNG")
    fig.canvas.draw()
    drawn = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    plt.close(fig)
    # The overlay tints the person: the figure holds colours other than the grey image and white.
    colours = {tuple(c) for c in drawn.reshape(-1, 3)[::97]}
    assert len(colours - {(200, 200, 200), (255, 255, 255)}) > 5
