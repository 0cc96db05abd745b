"""Parsing labels: loading, groupings, background and targets, rendering, flip, LIP PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bpbreid.config import ConfigError
from bpbreid.data import parsing as P
from bpbreid.errors import LabelError


def random_fields(h: int = 6, w: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((P.NUM_FIELDS, h, w), dtype=np.float32)


def standing_person(height: int = 64, width: int = 32) -> np.ndarray:
    """Keypoints [17, 3] of an upright person seen from the front (their left = image right)."""
    cx = width / 2
    xy = {
        "nose": (cx, 6),
        "left_eye": (cx + 2, 5),
        "right_eye": (cx - 2, 5),
        "left_ear": (cx + 4, 6),
        "right_ear": (cx - 4, 6),
        "left_shoulder": (cx + 7, 14),
        "right_shoulder": (cx - 7, 14),
        "left_elbow": (cx + 9, 24),
        "right_elbow": (cx - 9, 24),
        "left_wrist": (cx + 10, 32),
        "right_wrist": (cx - 10, 32),
        "left_hip": (cx + 5, 34),
        "right_hip": (cx - 5, 34),
        "left_knee": (cx + 5, 46),
        "right_knee": (cx - 5, 46),
        "left_ankle": (cx + 5, 58),
        "right_ankle": (cx - 5, 58),
    }
    kps = np.array([[*xy[name], 1.0] for name in P.KEYPOINT_NAMES], dtype=np.float32)
    kps[:, 0] *= width / 32
    kps[:, 1] *= height / 64
    return kps


# ------------------------------------------------------------------- tables


def test_field_tables():
    assert P.NUM_FIELDS == 36 == len(P.FIELD_NAMES) == len(set(P.FIELD_NAMES))
    assert len(P.KEYPOINT_NAMES) == 17 and len(P.LIMB_NAMES) == 19 and len(P.LIMBS) == 19
    assert P.FIELD_NAMES[0] == "nose" and P.FIELD_NAMES[16] == "right_ankle"
    assert P.FIELD_NAMES[17] == "left_ankle_to_left_knee"
    assert P.FIELD_NAMES[35] == "right_ear_to_right_shoulder"
    for name, (a, b) in zip(P.LIMB_NAMES, P.LIMBS):
        assert name == f"{P.KEYPOINT_NAMES[a]}_to_{P.KEYPOINT_NAMES[b]}"


@pytest.mark.parametrize("grouping", sorted(P.PART_GROUPINGS))
def test_grouping_fields_are_valid(grouping):
    parts = P.PART_GROUPINGS[grouping]
    assert P.num_parts(grouping) == len(parts) > 0
    for fields in parts.values():
        assert fields and set(fields) <= set(P.FIELD_NAMES)


def test_official_grouping_sizes_and_order():
    expected = {"one": 1, "two": 2, "four": 4, "five": 5, "five_v": 5, "eight": 8}
    for key, k in expected.items():
        assert P.num_parts(key) == k
    assert P.part_names("eight") == (
        "head_mask",
        "left_arm_mask",
        "right_arm_mask",
        "torso_mask",
        "left_leg_mask",
        "right_leg_mask",
        "left_feet_mask",
        "right_feet_mask",
    )
    assert P.part_names("five_v")[1:3] == ("upper_arms_torso_mask", "lower_arms_torso_mask")
    # Asymmetric lists kept as in the official code.
    assert "left_hip_to_right_hip" in P.PART_GROUPINGS["eight"]["left_leg_mask"]
    assert "right_shoulder_to_right_hip" in P.PART_GROUPINGS["five_v"]["lower_arms_torso_mask"]
    assert "left_shoulder_to_left_hip" not in P.PART_GROUPINGS["five_v"]["lower_arms_torso_mask"]
    assert len(P.PART_GROUPINGS["two"]["torso_arms_head"]) == 25


def test_unknown_grouping_and_check_grouping():
    with pytest.raises(ConfigError, match="eight"):
        P.num_parts("nine")
    P.check_grouping("five_v", 5)
    with pytest.raises(ConfigError, match=r"parts_num=5"):
        P.check_grouping("eight", 5)
    with pytest.raises(ConfigError, match="Valid groupings"):
        P.check_grouping("bogus", 5)


# ------------------------------------------------------------------- loading


def test_load_both_axis_orders(tmp_path):
    fields = random_fields(7, 5)
    np.save(tmp_path / "chw.npy", fields)
    np.save(tmp_path / "hwc.npy", fields.transpose(1, 2, 0).astype(np.float64))
    a = P.load_parsing_label(tmp_path / "chw.npy")
    b = P.load_parsing_label(tmp_path / "hwc.npy")
    assert a.dtype == np.float32 and a.shape == (36, 7, 5)
    np.testing.assert_allclose(a, fields)
    np.testing.assert_allclose(b, fields)


def test_load_height_36_is_not_ambiguous(tmp_path):
    fields = random_fields(36, 12)  # (36, 36, 12): only the first axis can be the channel one
    np.save(tmp_path / "tall.npy", fields)
    np.testing.assert_allclose(P.load_parsing_label(tmp_path / "tall.npy"), fields)


@pytest.mark.parametrize(
    "shape", [(36, 36, 36), (36, 20, 36), (30, 15), (30, 15, 17), (2, 36, 4, 5), (36, 0, 15)]
)
def test_load_bad_shapes(tmp_path, shape):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros(shape, dtype=np.float32))
    with pytest.raises(LabelError) as err:
        P.load_parsing_label(path)
    message = str(err.value)
    assert "bad.npy" in message and str(shape) in message and "(36, h, w)" in message
    if shape[0] == shape[-1] == 36 and len(shape) == 3:
        assert "ambiguous" in message


def test_load_bad_values_and_tolerance(tmp_path):
    fields = random_fields()
    fields[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", fields)
    with pytest.raises(LabelError, match="nan.npy"):
        P.load_parsing_label(tmp_path / "nan.npy")
    fields = random_fields()
    fields[3, 1, 1] = 1.5
    np.save(tmp_path / "big.npy", fields)
    with pytest.raises(LabelError, match=r"big.npy.*\[0, 1\]"):
        P.load_parsing_label(tmp_path / "big.npy")
    fields = random_fields()
    fields[3, 1, 1], fields[4, 0, 0] = 1.0 + 1e-5, -1e-5  # float error: clipped, not refused
    np.save(tmp_path / "ok.npy", fields)
    loaded = P.load_parsing_label(tmp_path / "ok.npy")
    assert loaded.max() == 1.0 and loaded.min() == 0.0


def test_load_missing_and_corrupt(tmp_path):
    with pytest.raises(LabelError, match="missing.npy"):
        P.load_parsing_label(tmp_path / "missing.npy")
    (tmp_path / "corrupt.npy").write_bytes(b"not an npy file")
    with pytest.raises(LabelError, match="corrupt.npy"):
        P.load_parsing_label(tmp_path / "corrupt.npy")


# ------------------------------------------------------------------- grouping and targets


@pytest.mark.parametrize("grouping", sorted(P.PART_GROUPINGS))
def test_group_fields_is_max_over_part_fields(grouping):
    fields = random_fields(seed=3)
    parts = P.group_fields(fields, grouping)
    assert parts.shape == (P.num_parts(grouping), 6, 4)
    for k, names in enumerate(P.PART_GROUPINGS[grouping].values()):
        expected = np.max([fields[P.FIELD_INDEX[n]] for n in names], axis=0)
        np.testing.assert_array_equal(parts[k], expected)
    torch_parts = P.group_fields(torch.from_numpy(fields)[None], grouping)
    assert torch_parts.shape == (1, *parts.shape)
    np.testing.assert_array_equal(torch_parts[0].numpy(), parts)


def test_one_is_max_over_all_fields():
    fields = random_fields(seed=4)
    np.testing.assert_array_equal(P.group_fields(fields, "one")[0], fields.max(axis=0))


def test_single_field_lands_in_its_parts_only():
    fields = np.zeros((36, 3, 3), dtype=np.float32)
    fields[P.FIELD_INDEX["left_elbow"], 1, 1] = 0.9
    parts = P.group_fields(fields, "eight")
    assert parts[1, 1, 1] == pytest.approx(0.9)  # left_arm_mask
    assert np.delete(parts, 1, axis=0).max() == 0


def test_background_strategies():
    parts = np.array([[[0.2, 0.6, 0.0]], [[0.4, 0.1, 0.0]]], dtype=np.float32)  # [2, 1, 3]
    np.testing.assert_array_equal(P.background_mask(parts, "threshold", 0.5), [[1, 0, 1]])
    np.testing.assert_allclose(
        P.background_mask(parts, "diff_from_max"), [[0.6, 0.4, 1.0]], atol=1e-6
    )
    np.testing.assert_allclose(P.background_mask(parts, "sum"), [[0.4, 0.3, 1.0]], atol=1e-6)
    with pytest.raises(ConfigError, match="threshold"):
        P.background_mask(parts, "median")


@pytest.mark.parametrize("strategy", ["threshold", "diff_from_max"])
def test_part_targets_sum_to_one_and_hard_labels(strategy):
    parts = np.array([[[0.2, 0.9, 0.0]], [[0.45, 0.6, 0.7]]], dtype=np.float32)  # [2, 1, 3]
    targets = P.part_targets(parts, strategy=strategy, threshold=0.5, softmax_weight=15.0)
    assert targets.shape == (3, 1, 3)
    np.testing.assert_allclose(targets.sum(axis=0), 1.0, atol=1e-6)
    labels = P.hard_labels(targets)
    assert labels.dtype == np.int64
    if strategy == "threshold":
        # pixel 0: every part < 0.5 -> background; pixel 1: part 0 (0.9); pixel 2: part 1.
        np.testing.assert_array_equal(labels, [[0, 1, 2]])
        # Hand-computed softmax at pixel 0: logits 15 * (1, 0.2, 0.45).
        logits = 15 * np.array([1.0, 0.2, 0.45])
        np.testing.assert_allclose(
            targets[:, 0, 0], np.exp(logits) / np.exp(logits).sum(), rtol=1e-5
        )
    else:
        # background = 1 - max: pixel 0 -> 0.55 beats 0.45; pixel 1: 0.9 wins.
        np.testing.assert_array_equal(labels, [[0, 1, 2]])
    torch_targets = P.part_targets(torch.from_numpy(parts)[None], strategy=strategy)
    np.testing.assert_allclose(torch_targets[0].numpy(), targets, atol=1e-6)
    assert torch.equal(P.hard_labels(torch_targets)[0], torch.from_numpy(labels))


def test_part_targets_without_softmax_normalizes():
    parts = np.array([[[0.2, 0.8]], [[0.0, 0.4]]], dtype=np.float32)
    targets = P.part_targets(parts, strategy="diff_from_max", softmax_weight=0)
    np.testing.assert_allclose(targets.sum(axis=0), 1.0, atol=1e-6)
    np.testing.assert_allclose(targets[:, 0, 1], np.array([0.2, 0.8, 0.4]) / 1.4, rtol=1e-5)


def test_hard_labels_background_wins_ties():
    targets = np.full((3, 2, 2), 1 / 3, dtype=np.float32)
    assert (P.hard_labels(targets) == 0).all()


def test_resize_maps_numpy_and_torch_agree():
    fields = random_fields(6, 4, seed=5)
    up = P.resize_maps(fields, (12, 8))
    assert up.shape == (36, 12, 8) and up.dtype == np.float32
    up_torch = P.resize_maps(torch.from_numpy(fields), (12, 8))
    np.testing.assert_allclose(up, up_torch.numpy(), atol=1e-5)
    constant = np.full((2, 5, 5), 0.3, dtype=np.float32)
    np.testing.assert_allclose(P.resize_maps(constant, (3, 7), mode="area"), 0.3, atol=1e-6)


# ------------------------------------------------------------------- rendering


def test_render_keypoint_peak_and_missing_keypoint():
    kps = standing_person()
    kps[P.KEYPOINT_NAMES.index("left_knee"), 2] = 0.7
    kps[P.KEYPOINT_NAMES.index("right_wrist"), 2] = 0.0  # missing
    fields = P.render_fields(kps, 64, 32)
    assert fields.shape == (36, 64, 32) and fields.dtype == np.float32
    knee = P.KEYPOINT_NAMES.index("left_knee")
    x, y = kps[knee, :2].astype(int)
    assert fields[knee, y, x] == pytest.approx(0.7, abs=1e-5)
    assert fields[knee].max() == pytest.approx(0.7, abs=1e-5)
    assert fields[knee, y, x] == fields[knee].max()
    assert fields[P.FIELD_INDEX["right_wrist"]].max() == 0
    assert fields[P.FIELD_INDEX["right_elbow_to_right_wrist"]].max() == 0  # needs both ends
    # Limb confidence is the smaller of its endpoints'.
    assert fields[P.FIELD_INDEX["left_knee_to_left_hip"]].max() == pytest.approx(0.7, abs=1e-3)


def test_render_nan_coordinates_are_missing():
    kps = standing_person()
    kps[P.KEYPOINT_NAMES.index("nose")] = (np.nan, np.nan, 0.9)
    fields = P.render_fields(kps, 64, 32)
    assert np.isfinite(fields).all()
    assert fields[P.FIELD_INDEX["nose"]].max() == 0
    assert fields[P.FIELD_INDEX["nose_to_left_eye"]].max() == 0
    assert fields[P.FIELD_INDEX["left_eye"]].max() > 0.99


def test_render_gaussian_matches_hand_computation():
    kps = np.zeros((17, 3), dtype=np.float32)
    kps[0] = (10, 20, 1.0)  # only the nose
    fields = P.render_fields(kps, 40, 30, sigma=3.0)
    assert fields[0, 20, 13] == pytest.approx(np.exp(-9 / 18), rel=1e-5)
    assert fields[0, 24, 10] == pytest.approx(np.exp(-16 / 18), rel=1e-5)
    assert fields[1:].max() == 0


def test_render_limb_along_segment_and_far_away():
    kps = standing_person()
    fields = P.render_fields(kps, 64, 32, sigma=2.0)
    limb = P.FIELD_INDEX["left_knee_to_left_hip"]
    hip, knee = kps[P.KEYPOINT_NAMES.index("left_hip")], kps[P.KEYPOINT_NAMES.index("left_knee")]
    mx, my = ((hip[:2] + knee[:2]) / 2).round().astype(int)
    assert fields[limb, my, mx] > 0.95
    assert fields[limb, my, mx - 10] < 1e-3  # on the other leg
    assert fields[limb, 5, mx] < 1e-3  # at head height


def test_render_out_size_and_person_scaled_sigma():
    kps = standing_person(128, 64)
    small = P.render_fields(kps, 128, 64, out_size=(32, 16))
    assert small.shape == (36, 32, 16)
    big = P.render_fields(kps, 128, 64)
    # Same person at 4x the resolution: downsampling the big render gives the small one.
    np.testing.assert_allclose(P.resize_maps(big, (32, 16), mode="area"), small, atol=0.08)
    # Sigma follows the person: a person twice as tall gets fields twice as wide.
    assert P.person_sigma(standing_person(128, 64), 128) == pytest.approx(
        2 * P.person_sigma(standing_person(64, 32), 64)
    )


# ------------------------------------------------------------------- flip


def test_flip_permutation_swaps_names():
    perm = P.FLIP_PERMUTATION
    assert sorted(perm) == list(range(36))
    name = P.FIELD_NAMES
    assert name[perm[P.FIELD_INDEX["left_ankle_to_left_knee"]]] == "right_ankle_to_right_knee"
    assert name[perm[P.FIELD_INDEX["nose_to_left_eye"]]] == "nose_to_right_eye"
    assert name[perm[P.FIELD_INDEX["left_hip_to_right_hip"]]] == "left_hip_to_right_hip"
    assert name[perm[P.FIELD_INDEX["nose"]]] == "nose"


def test_flip_twice_is_identity_and_swaps_sides():
    fields = random_fields(5, 7, seed=6)
    np.testing.assert_array_equal(P.flip_fields(P.flip_fields(fields)), fields)
    torch_fields = torch.from_numpy(fields)
    assert torch.equal(P.flip_fields(P.flip_fields(torch_fields)), torch_fields)
    np.testing.assert_array_equal(P.flip_fields(torch_fields).numpy(), P.flip_fields(fields))

    asym = np.zeros((36, 4, 6), dtype=np.float32)
    asym[P.FIELD_INDEX["left_wrist"], 2, 0] = 1.0  # left wrist at the image's left border
    flipped = P.flip_fields(asym)
    assert flipped[P.FIELD_INDEX["right_wrist"], 2, 5] == 1.0
    assert flipped[P.FIELD_INDEX["left_wrist"]].max() == 0
    parts = P.group_fields(flipped, "eight")
    assert parts[2, 2, 5] == 1.0 and parts[1].max() == 0  # now the right arm


def test_flip_matches_rendering_mirrored_keypoints():
    kps = standing_person()
    kps[P.KEYPOINT_NAMES.index("left_elbow"), 0] += 3  # make the pose asymmetric
    flipped = P.flip_fields(P.render_fields(kps, 64, 32, sigma=2.0))
    rendered = P.render_fields(P.flip_keypoints(kps, 32), 64, 32, sigma=2.0)
    np.testing.assert_allclose(flipped, rendered, atol=1e-5)


# ------------------------------------------------------------------- LIP PNGs


def tiny_class_map() -> np.ndarray:
    """8x4 map: hat, face, coat + arms, pants, shoes (left = person's left = image right)."""
    return np.array(
        [
            [0, 1, 1, 0],
            [0, 13, 13, 0],
            [15, 7, 7, 14],
            [15, 7, 7, 14],
            [3, 7, 7, 3],
            [0, 9, 9, 0],
            [0, 17, 16, 0],
            [0, 19, 18, 0],
        ]
    )


def test_parsing_map_to_eight():
    parts = P.parsing_map_to_parts(tiny_class_map(), "eight")
    assert parts.shape == (8, 8, 4) and parts.dtype == np.float32
    head, l_arm, r_arm, torso, l_leg, r_leg, l_foot, r_foot = parts
    assert head[:2, 1:3].all() and head.sum() == 4
    assert l_arm[2:4, 3].all() and r_arm[2:4, 0].all()
    # The person faces us (left arm on the image's right): side-less classes split that way.
    assert l_arm[4, 3] == r_arm[4, 0] == 1 and l_arm[4, 0] == r_arm[4, 3] == 0  # gloves
    assert torso.sum() == 6
    assert l_leg[5, 2] == r_leg[5, 1] == 1 and l_leg[5, 1] == r_leg[5, 2] == 0  # pants
    assert l_leg[6, 2] == 1 and l_leg[6, 1] == 0 and r_leg[6, 1] == 1
    assert l_foot[7, 2] == 1 and l_foot.sum() == 1 and r_foot[7, 1] == 1 and r_foot.sum() == 1
    assert parts[:, 0, 0].max() == 0  # background


@pytest.mark.parametrize("grouping", ["one", "two", "four", "five_v", "eight"])
def test_parsing_map_groupings_cover_the_person(grouping):
    class_map = tiny_class_map()
    parts = P.parsing_map_to_parts(class_map, grouping)
    assert parts.shape[0] == P.num_parts(grouping)
    np.testing.assert_array_equal(parts.max(axis=0), class_map > 0)


def test_parsing_map_five_v_split_and_dress():
    parts = P.parsing_map_to_parts(tiny_class_map(), "five_v")
    upper, lower = parts[1], parts[2]
    assert upper[2:4].sum() == 8 and upper[4:].sum() == 0  # rows 2-3 of the 2..4 trunk
    assert lower[4].sum() == 4 and lower[:4].sum() == 0
    dress = np.zeros((6, 2), dtype=int)
    dress[1:5] = 6  # a dress over rows 1..4: rows 1-2 torso, rows 3-4 legs
    eight = P.parsing_map_to_parts(dress, "eight")
    assert eight[3, 1:3].all() and eight[3, 3:].sum() == 0
    # The lower half split between the legs (no sided class: taken as facing the camera, so
    # the person's left is the image's right column).
    assert eight[4, 3:5, 1].all() and eight[5, 3:5, 0].all() and eight[4, :3].sum() == 0
    assert eight[4, 3:5, 0].sum() == eight[5, 3:5, 1].sum() == 0


def test_parsing_map_unknown_grouping():
    with pytest.raises(ConfigError, match="eight"):
        P.parsing_map_to_parts(tiny_class_map(), "fourteen")


def test_load_parsing_png(tmp_path):
    class_map = tiny_class_map().astype(np.uint8)
    Image.fromarray(class_map).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(P.load_parsing_png(tmp_path / "gray.png"), class_map)

    palette_image = Image.new("P", (4, 8))  # SCHP writes palette PNGs: pixel = class index
    palette_image.putpalette(list(range(256)) * 3)
    palette_image.putdata(class_map.ravel().tolist())
    palette_image.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(P.load_parsing_png(tmp_path / "palette.png"), class_map)

    Image.fromarray(np.zeros((8, 4, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(LabelError, match="rgb.png"):
        P.load_parsing_png(tmp_path / "rgb.png")
    Image.fromarray(np.full((8, 4), 42, dtype=np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(LabelError, match="big.png.*42"):
        P.load_parsing_png(tmp_path / "big.png")
    with pytest.raises(LabelError, match="nope.png"):
        P.load_parsing_png(tmp_path / "nope.png")
