"""The synthetic occluded-pedestrian dataset: layout, determinism, labels and query sets."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from bpbreid.data import synthetic
from bpbreid.data.parsing import FIELD_NAMES, KEYPOINT_NAMES, load_parsing_label
from bpbreid.data.synthetic import (
    FACING_YAW,
    OCCLUDER_KINDS,
    Pose,
    draw_person,
    generate,
    identity_appearance,
    read_annotations,
    read_meta,
    render_sample,
    synthetic_dir,
)
from bpbreid.data.synthetic.render import _area_downsample, _dilate
from bpbreid.errors import DatasetError

KP = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
SPLITS = ("bounding_box_train", "bounding_box_test", "query", "query_holistic")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    start = time.perf_counter()
    path = generate(root, "tiny", seed=0, progress=False)
    elapsed = time.perf_counter() - start
    count = sum(read_meta(path)["counts"].values())
    print(
        f"\ntiny synthetic set: {count} images in {elapsed:.2f} s ({count / elapsed:.0f} images/s)"
    )
    return path


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def _sample(occluder, seed: int = 5, facing: str | None = None, pid: int = 3, **kwargs):
    return render_sample(
        0,
        pid,
        camera=2,
        rng=np.random.default_rng([seed, 0]),
        occluder=occluder,
        occluder_rng=np.random.default_rng([seed, 1]),
        occluder_pool=range(1, 13),
        facing=facing,
        **kwargs,
    )


# --------------------------------------------------------------------------------------
# Layout, names, cache
# --------------------------------------------------------------------------------------


def test_layout_is_read_by_the_market_style_loader(tiny: Path):
    from bpbreid.data.datasets import build_dataset

    meta = read_meta(tiny)
    assert tiny == synthetic_dir(tiny.parent, "tiny", 0)
    assert tiny.name == "tiny_s0_64x32"
    data = build_dataset("synthetic", tiny)  # labels required: every image has one
    assert len(data.train) == meta["counts"]["bounding_box_train"]
    assert len(data.gallery) == meta["counts"]["bounding_box_test"]
    assert len(data.query) == meta["counts"]["query"]
    assert len(data.extra_queries["query_holistic"]) == meta["counts"]["query_holistic"]
    assert data.num_train_pids == synthetic.PRESETS["tiny"].train_ids
    assert 0 in {s.pid for s in data.gallery}  # distractors
    assert data.num_train_cams > 1 and not data.missing_masks
    # Train and test identities are disjoint.
    test_ids = {s.pid for s in data.gallery if s.pid != 0}
    train_names = {Path(s.img_path).name.split("_")[0] for s in data.train}
    assert not {f"{pid:04d}" for pid in test_ids} & train_names
    for samples in data.subsets().values():
        for s in samples[:3]:
            name = Path(s.img_path).name
            assert name.endswith("_00.jpg") and name[4:6] == "_c"
            label = load_parsing_label(s.mask_path)
            assert label.shape == (36, 32, 16) and label.dtype == np.float32
            assert 0.0 <= label.min() and label.max() <= 1.0 and label.max() > 0.5
    images = [p for p in _files(tiny) if p.suffix == ".jpg"]
    assert len(images) == sum(meta["counts"].values())
    labels = list((tiny / "masks" / "pifpaf_maskrcnn_filtering").rglob("*.npy"))
    assert len(labels) == len(images)


def test_same_seed_same_bytes_any_worker_count(tiny: Path, tmp_path: Path):
    again = generate(tmp_path / "a", "tiny", seed=0, workers=2, progress=False)
    other = generate(tmp_path / "b", "tiny", seed=1, progress=False)
    ours = _files(tiny)
    assert [p.relative_to(tiny) for p in ours] == [p.relative_to(again) for p in _files(again)]
    picked = [p for p in ours if p.suffix in (".jpg", ".npy")][::7] + [tiny / "annotations.csv"]
    for path in picked:
        assert path.read_bytes() == (again / path.relative_to(tiny)).read_bytes(), path
    # Another seed draws other people: no image is the same.
    their_images = {p.read_bytes() for p in _files(other) if p.suffix == ".jpg"}
    assert not any(p.read_bytes() in their_images for p in ours if p.suffix == ".jpg")


def test_cached_set_is_reused_and_outdated_one_regenerated(tmp_path: Path):
    path = generate(tmp_path, "tiny", seed=3, progress=False)
    meta_file = path / "meta.json"
    stamp = meta_file.stat().st_mtime_ns
    assert generate(tmp_path, "tiny", seed=3, progress=False) == path
    assert meta_file.stat().st_mtime_ns == stamp  # reused, not rewritten
    # An older generator version (or a half-written set without meta.json) is replaced.
    meta = json.loads(meta_file.read_text())
    meta["version"] = -1
    meta_file.write_text(json.dumps(meta))
    (path / "query" / "stale.jpg").write_bytes(b"")
    assert generate(tmp_path, "tiny", seed=3, progress=False) == path
    assert read_meta(path)["version"] == synthetic.GENERATOR_VERSION
    assert not (path / "query" / "stale.jpg").exists()
    assert not (tmp_path / ".partial").exists()  # no temporary folder left behind


def test_unknown_preset_and_bad_sizes_are_clear_errors(tmp_path: Path):
    with pytest.raises(DatasetError, match="Valid presets: tiny, small, default"):
        generate(tmp_path, "huge")
    with pytest.raises(DatasetError, match="label_stride"):
        generate(tmp_path, "tiny", height=64, width=32, label_stride=3)


# --------------------------------------------------------------------------------------
# Query sets
# --------------------------------------------------------------------------------------


def test_query_sets_follow_the_occluded_protocol(tiny: Path):
    rows = read_annotations(tiny)
    by_folder = defaultdict(list)
    for row in rows:
        by_folder[row["folder"]].append(row)
    queries, holistic = by_folder["query"], by_folder["query_holistic"]
    assert queries and len(queries) == len(holistic)
    assert all(r["occluder"] in OCCLUDER_KINDS and 0.3 <= r["hidden"] <= 0.7 for r in queries)
    assert all(r["occluder"] == "none" and r["hidden"] == 0 for r in holistic)
    # Holistic queries: the same identities, cameras and file names.
    assert [(r["file"], r["pid"], r["camera"]) for r in queries] == [
        (r["file"], r["pid"], r["camera"]) for r in holistic
    ]
    # Some training and gallery images are occluded, most are not.
    for folder in ("bounding_box_train", "bounding_box_test"):
        hidden = np.array([r["hidden"] for r in by_folder[folder]])
        assert 0 < (hidden > 0).sum() < 0.5 * len(hidden)
    # An occluded query keeps less labelled body than its holistic twin.
    masks = tiny / "masks" / "pifpaf_maskrcnn_filtering"
    for row in queries:
        stem = Path(row["file"]).stem
        occluded = np.load(masks / "query" / f"{stem}.npy").max(axis=0).sum()
        whole = np.load(masks / "query_holistic" / f"{stem}.npy").max(axis=0).sum()
        assert occluded < 0.85 * whole


def test_every_query_identity_is_in_the_gallery_under_another_camera(tiny: Path):
    rows = read_annotations(tiny)
    gallery = defaultdict(set)
    for row in rows:
        if row["folder"] == "bounding_box_test":
            gallery[row["pid"]].add(row["camera"])
    for row in rows:
        if row["folder"].startswith("query"):
            assert gallery[row["pid"]] - {row["camera"]}, row


def test_holistic_and_occluded_renderings_differ_only_at_the_occluder():
    occluded = _sample(occluder="box")
    holistic = _sample(occluder=None)
    assert occluded.occluder == "box" and holistic.occluder == "none"
    # Blur and downsampling spread the occluder edge by a pixel or two.
    near = _dilate(occluded.occluder_mask > 0, 3)
    diff = np.abs(occluded.image.astype(int) - holistic.image.astype(int)).max(axis=-1)
    assert diff[~near].max() == 0
    assert diff[occluded.occluder_mask == 1].mean() > 5
    np.testing.assert_array_equal(occluded.keypoints, holistic.keypoints)


# --------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------


def _label_cells(mask: np.ndarray, label_shape: tuple[int, int]) -> np.ndarray:
    """Fraction of each label cell covered by an output-resolution mask."""
    fh, fw = mask.shape[0] // label_shape[0], mask.shape[1] // label_shape[1]
    return _area_downsample(mask, fh, fw)


@pytest.mark.parametrize("kind", OCCLUDER_KINDS)
def test_no_body_label_under_an_occluder(kind: str):
    # seed 7: a draw where a pedestrian beside the person can hide 30% of it
    sample = _sample(occluder=kind, seed=7 if kind == "pedestrian" else 5, hidden_range=(0.3, 0.7))
    assert sample.occluder == kind and 0.3 <= sample.hidden <= 0.7
    peak = sample.fields.max(axis=0)  # [h, w]
    under = _label_cells(sample.occluder_mask, peak.shape) == 1.0
    assert under.sum() > 5
    assert peak[under].max() < 1e-6
    # Outside the person (allowing the label dilation of one output pixel) nothing is body.
    around = _dilate(sample.visible > 0, 1)
    outside = _label_cells(around.astype(np.float32), peak.shape) == 0
    assert peak[outside].max() < 1e-6
    # The visible body is labelled: fully visible cells are foreground (>= 0.5).
    seen = _label_cells(sample.visible, peak.shape) == 1.0
    assert seen.sum() > 5 and (peak[seen] >= 0.5).mean() > 0.95


def test_occluding_pedestrian_stands_beside_the_person():
    """The box stays centred on the person of interest: a passer-by hides one side of them,
    never stands squarely in front (the question "who is the person?" keeps an answer)."""
    offsets = []
    for seed in range(7, 14):
        sample = _sample(occluder="pedestrian", seed=seed, hidden_range=(0.3, 0.7))
        if sample.occluder != "pedestrian":
            continue
        columns = sample.occluder_mask.sum(axis=0)
        width = columns.shape[0]
        centre = float((columns * np.arange(width)).sum() / columns.sum()) + 0.5
        offsets.append(abs(centre - width / 2) / width)
    assert len(offsets) >= 3
    # The occluder's visible part is clipped by the frame, so its centroid sits a little
    # closer to the centre than the PEDESTRIAN_MIN_OFFSET of its body.
    assert min(offsets) > 0.15


def test_occluding_pedestrian_is_not_labelled_as_the_person():
    sample = _sample(occluder="pedestrian", seed=11)
    assert sample.occluder == "pedestrian"
    holistic = _sample(occluder=None, seed=11)
    # The label keeps only this person's visible part of its holistic label.
    occluded_mass = sample.fields.max(axis=0).sum()
    whole_mass = holistic.fields.max(axis=0).sum()
    assert occluded_mass < (1.0 - 0.5 * sample.hidden) * whole_mass


def _field_centre_x(fields: np.ndarray, names: list[str]) -> float:
    idx = [FIELD_NAMES.index(n) for n in names]
    weights = fields[idx].sum(axis=0)  # [h, w]
    xs = np.arange(weights.shape[1])[None, :]
    return float((weights * xs).sum() / weights.sum())


@pytest.mark.parametrize("facing", ["front", "back"])
def test_left_is_the_persons_left(facing: str):
    """Facing the camera, the person's left side is on the image's right; from behind, on
    the image's left (as when you look at someone's back). Keypoints, fields and the drawing
    must all agree."""
    pose = Pose(facing=facing, yaw=FACING_YAW[facing], phase=0.0)
    drawing = draw_person(identity_appearance(0, 1), pose, height=128, width=64)
    kps = drawing.keypoints
    sign = 1.0 if facing == "front" else -1.0  # + : left side has the larger x
    for joint in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
        dx = kps[KP[f"left_{joint}"], 0] - kps[KP[f"right_{joint}"], 0]
        assert sign * dx > 2, (joint, dx)
    centre = drawing.mask.nonzero()[1].mean()
    assert sign * (kps[KP["left_shoulder"], 0] - centre) > 0
    # Eyes: visible from the front, not from behind.
    eyes = kps[[KP["left_eye"], KP["right_eye"]], 2]
    assert (eyes > 0).all() if facing == "front" else (eyes == 0).all()

    sample = render_sample(0, 1, 1, np.random.default_rng(7), height=128, width=64, facing=facing)
    left = _field_centre_x(sample.fields, ["left_shoulder", "left_elbow", "left_hip", "left_knee"])
    right = _field_centre_x(
        sample.fields, ["right_shoulder", "right_elbow", "right_hip", "right_knee"]
    )
    assert sign * (left - right) > 1.0


@pytest.mark.parametrize("facing", ["front", "back", "left", "right"])
def test_shoulder_bag_is_drawn_on_the_persons_own_side(facing: str):
    """A bag on the person's left: right of the body seen from the front, left of it seen
    from behind; walking to the image's left, the left side faces the camera, so a bag on
    the left shows and a bag on the right mostly hides behind the body (and vice versa)."""
    base = dataclasses.replace(identity_appearance(0, 4), bag="none")
    on_left = dataclasses.replace(base, bag="shoulder_bag", bag_side="left")
    on_right = dataclasses.replace(base, bag="shoulder_bag", bag_side="right")
    pose = Pose(facing=facing, yaw=FACING_YAW[facing], phase=0.0, arm_swing=0.0)
    plain = draw_person(base, pose, height=128, width=64).mask
    body_centre = plain.nonzero()[1].mean()
    if facing in ("front", "back"):
        extra = draw_person(on_left, pose, height=128, width=64).mask & ~plain
        sign = 1.0 if facing == "front" else -1.0
        assert extra.sum() > 20 and sign * (extra.nonzero()[1].mean() - body_centre) > 5
    else:
        left_bag = _changed_pixels(base, on_left, pose)
        right_bag = _changed_pixels(base, on_right, pose)
        near, far = (left_bag, right_bag) if facing == "left" else (right_bag, left_bag)
        assert near > 3 * far, (near, far)


def _changed_pixels(base, with_bag, pose) -> int:
    """Image pixels that change when the bag is added (a bag hidden behind the body: few)."""
    a = draw_person(base, pose, height=128, width=64, seed=1).image.astype(int)
    b = draw_person(with_bag, pose, height=128, width=64, seed=1).image.astype(int)
    return int((np.abs(a - b).max(axis=-1) > 10).sum())


def test_keypoints_follow_the_image_size():
    small = _sample(occluder=None, seed=2)
    large = _sample(occluder=None, seed=2, height=128, width=64)
    assert small.image.shape == (64, 32, 3) and large.image.shape == (128, 64, 3)
    assert small.fields.shape == (36, 32, 16) and large.fields.shape == (36, 32, 16)
    # Same random stream, twice the size: the person is drawn twice as large.
    np.testing.assert_allclose(small.keypoints[:, :2] * 2, large.keypoints[:, :2], atol=0.5)
    assert 0 <= small.keypoints[:, 0].min() and small.keypoints[:, 0].max() < 32


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def test_command_line_generates_and_reports_speed(tmp_path: Path, capsys):
    from bpbreid.__main__ import main

    argv = ["data", "synth", "--root", str(tmp_path), "--preset", "tiny", "--seed", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "images/s" in out and "query_holistic" in out
    assert read_meta(tmp_path / "synthetic" / "tiny_s4_64x32")["seed"] == 4
