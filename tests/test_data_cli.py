"""``python -m bpbreid data ...``: check, download-labels (offline paths), synth."""

from __future__ import annotations

import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bpbreid.data
from bpbreid.__main__ import main
from bpbreid.data import download
from bpbreid.data.download import download_labels, install_labels_archive
from bpbreid.errors import DownloadError

MASKS = "pifpaf_maskrcnn_filtering"
SPLITS = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg"],
    "query": ["0003_c1s1_000101_00.jpg"],
    "bounding_box_test": ["0003_c3s1_000102_01.jpg", "0000_c2s1_000151_01.jpg"],
}
DUKE_SPLITS = {
    "bounding_box_train": ["0005_c2_f0046985.jpg", "0005_c5_f0051341.jpg"],
    "query": ["0012_c1_f0057703.jpg"],
    "bounding_box_test": ["0012_c8_f0222120.jpg"],
}


def make_dataset(
    dataset_dir: Path, splits: dict[str, list[str]], suffix: str = ".npy", labels: bool = True
) -> Path:
    for split, names in splits.items():
        for name in names:
            path = dataset_dir / split / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 4, 3), 90, np.uint8)).save(path)
            if labels:
                label = dataset_dir / "masks" / MASKS / split / f"{Path(name).stem}{suffix}"
                label.parent.mkdir(parents=True, exist_ok=True)
                np.save(label, np.full((36, 4, 2), 0.5, np.float32))
    return dataset_dir


@pytest.fixture
def good_root(tmp_path: Path) -> Path:
    make_dataset(tmp_path / "Market-1501-v15.09.15", SPLITS)
    make_dataset(tmp_path / "Occluded_Duke", DUKE_SPLITS, suffix=".jpg.confidence_fields.npy")
    return tmp_path


# --------------------------------------------------------------------------------------
# data check
# --------------------------------------------------------------------------------------


def test_check_good_tree_detects_datasets(good_root: Path, capsys):
    assert main(["data", "check", str(good_root)]) == 0
    out = capsys.readouterr().out
    assert "[market1501]" in out and "[occluded_duke]" in out
    assert "market1501: OK" in out and "occluded_duke: OK" in out
    assert "| # images |" in out  # the summary table
    assert "[36, 4, 2]" in out  # shapes of the sampled label arrays


def test_check_one_dataset_explicitly(good_root: Path, capsys):
    assert main(["data", "check", str(good_root), "--dataset", "occluded_duke"]) == 0
    out = capsys.readouterr().out
    assert "[occluded_duke]" in out and "[market1501]" not in out


def test_check_missing_split_fails(good_root: Path, capsys):
    query = good_root / "Market-1501-v15.09.15" / "query"
    for f in query.iterdir():
        f.unlink()
    query.rmdir()
    assert main(["data", "check", str(good_root), "--dataset", "market1501"]) != 0
    out = capsys.readouterr().out
    assert "BROKEN" in out and str(query) in out


def test_check_missing_labels_fails_with_counts_and_examples(good_root: Path, capsys):
    label_dir = good_root / "Occluded_Duke" / "masks" / MASKS / "bounding_box_train"
    removed = sorted(label_dir.iterdir())
    for f in removed:
        f.unlink()
    assert main(["data", "check", str(good_root)]) != 0
    out = capsys.readouterr().out
    assert "train 2/2" in out and "2 parsing-label file(s) missing" in out
    assert str(removed[0]) in out and "download-labels" in out
    assert "market1501: OK" in out and "occluded_duke: BROKEN" in out
    # images only: the same tree passes
    assert main(["data", "check", str(good_root), "--no-labels"]) == 0


def test_check_bad_label_shape_fails(good_root: Path, capsys):
    label = (
        good_root / "Market-1501-v15.09.15" / "masks" / MASKS / "query" / "0003_c1s1_000101_00.npy"
    )
    np.save(label, np.zeros((17, 4, 2), np.float32))
    assert main(["data", "check", str(good_root), "--dataset", "market1501"]) != 0
    out = capsys.readouterr().out
    assert "bad label file" in out and str(label) in out


def test_check_corrupt_image_fails(good_root: Path, capsys):
    image = good_root / "Market-1501-v15.09.15" / "query" / "0003_c1s1_000101_00.jpg"
    image.write_bytes(b"garbage")
    assert main(["data", "check", str(good_root), "--dataset", "market1501"]) != 0
    assert str(image) in capsys.readouterr().out


def test_check_no_dataset_or_no_root(tmp_path: Path, capsys):
    (tmp_path / "holiday_photos").mkdir()
    assert main(["data", "check", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "holiday_photos" in err and "Market-1501-v15.09.15" in err and "Traceback" not in err
    assert main(["data", "check", str(tmp_path / "nope")]) != 0
    assert str(tmp_path / "nope") in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# download-labels
# --------------------------------------------------------------------------------------


def labels_zip(path: Path, members: dict[str, np.ndarray | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, value in members.items():
            if isinstance(value, np.ndarray):
                with zf.open(name, "w") as f:
                    np.save(f, value)
            else:
                zf.writestr(name, value)
    return path


def test_install_archive_places_files_like_the_official_layout(tmp_path: Path):
    root = tmp_path / "data"
    make_dataset(root / "Market-1501-v15.09.15", SPLITS, labels=False)
    label = np.full((36, 4, 2), 0.25, np.float32)
    archive = labels_zip(
        tmp_path / "market.zip",
        {
            f"Market-1501-v15.09.15/masks/{MASKS}/query/0003_c1s1_000101_00.npy": label,
            f"Market-1501-v15.09.15/masks/{MASKS}/bounding_box_train/0002_c1s1_000451_03.npy": label,
            "Market-1501-v15.09.15/masks/pifpaf/query/ignored.npy": label,  # another variant
            "README.txt": b"not a label",
        },
    )
    target = install_labels_archive(archive, "market1501", root)
    assert target == root / "Market-1501-v15.09.15" / "masks" / MASKS
    installed = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert installed == [
        "bounding_box_train/0002_c1s1_000451_03.npy",
        "query/0003_c1s1_000101_00.npy",
    ]
    assert np.array_equal(np.load(target / "query" / "0003_c1s1_000101_00.npy"), label)


def test_install_archive_without_prefix_keeps_occluded_duke_suffix(tmp_path: Path):
    root = tmp_path / "data"
    name = "0005_c2_f0046985.jpg.confidence_fields.npy"
    archive = labels_zip(
        tmp_path / "occluded_duke.zip",
        {
            f"bounding_box_train/{name}": np.zeros((36, 4, 2), np.float32),
            f"{MASKS}/query/0012_c1_f0057703.jpg.confidence_fields.npy": np.zeros((36, 4, 2)),
        },
    )
    target = install_labels_archive(archive, "occluded_duke", root)
    assert target == root / "Occluded_Duke" / "masks" / MASKS  # official folder name
    assert (target / "bounding_box_train" / name).is_file()
    assert (target / "query" / "0012_c1_f0057703.jpg.confidence_fields.npy").is_file()


def test_install_archive_corrupt_or_unrelated(tmp_path: Path):
    not_zip = tmp_path / "labels.zip"
    not_zip.write_bytes(b"PK\x03\x04 truncated download")
    with pytest.raises(DownloadError, match="not a valid zip"):
        install_labels_archive(not_zip, "market1501", tmp_path)

    # a valid zip whose stored data was damaged afterwards: the CRC check catches it
    damaged = labels_zip(tmp_path / "damaged.zip", {"query/0001_c1s1_000001_00.npy": b"A" * 500})
    raw = bytearray(damaged.read_bytes())
    start = raw.index(b"A" * 500)
    raw[start + 100 : start + 110] = b"B" * 10
    damaged.write_bytes(bytes(raw))
    with pytest.raises(DownloadError, match="corrupt") as err:
        install_labels_archive(damaged, "market1501", tmp_path)
    assert "download it again" in str(err.value)
    assert not list(tmp_path.rglob("*.npy"))  # nothing installed from a bad archive

    other = labels_zip(tmp_path / "other.zip", {"images/readme.npy": np.zeros(3)})
    with pytest.raises(DownloadError, match="no Market-1501 label files"):
        install_labels_archive(other, "market1501", tmp_path)
    with pytest.raises(DownloadError, match="does not exist"):
        install_labels_archive(tmp_path / "missing.zip", "market1501", tmp_path)


def test_install_archive_refuses_unsafe_paths(tmp_path: Path):
    evil = labels_zip(tmp_path / "evil.zip", {"../../query/0001_x.npy": np.zeros(3)})
    with pytest.raises(DownloadError, match="unsafe"):
        install_labels_archive(evil, "market1501", tmp_path / "data")


def fake_gdown(monkeypatch, listing=None, payload: Path | None = None, fail=None):
    module = types.ModuleType("gdown")
    calls = []

    def download_folder(**kwargs):
        calls.append(("list", kwargs))
        if fail is not None:
            raise fail
        return listing

    def download_file(id, output, quiet=False, resume=False, **kwargs):
        calls.append(("get", {"id": id, "output": output, "resume": resume}))
        Path(output).write_bytes(payload.read_bytes())
        return output

    module.download_folder = download_folder
    module.download = download_file
    monkeypatch.setitem(sys.modules, "gdown", module)
    return calls


def test_download_offline_gives_manual_instructions(tmp_path: Path, monkeypatch, capsys):
    fake_gdown(monkeypatch, fail=ConnectionError("Failed to resolve drive.google.com"))
    with pytest.raises(DownloadError) as err:
        download_labels("market1501", tmp_path)
    message = str(err.value)
    assert "ConnectionError" in message and download.LABELS_FOLDER_URL in message
    assert "--archive" in message
    assert str(tmp_path / "Market-1501-v15.09.15" / "masks" / MASKS) in message
    # the CLI prints it as a message, not a traceback
    assert main(["data", "download-labels", "market1501", str(tmp_path)]) == 2
    err_text = capsys.readouterr().err
    assert "drive.google.com" in err_text and "Traceback" not in err_text


def test_download_without_gdown_says_what_to_install(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown -> ImportError
    with pytest.raises(DownloadError, match=r"pip install bpbreid\[download\]"):
        download_labels("occluded_duke", tmp_path)


def test_download_flow_with_a_stand_in_drive(tmp_path: Path, monkeypatch):
    payload = labels_zip(
        tmp_path / "payload.zip",
        {f"masks/{MASKS}/query/0012_c1_f0057703.npy": np.zeros((36, 4, 2), np.float32)},
    )
    listing = [
        types.SimpleNamespace(id="id-occ", path="labels/occluded_duke.zip"),
        types.SimpleNamespace(id="id-duke", path="labels/dukemtmc_reid.zip"),
    ]
    calls = fake_gdown(monkeypatch, listing=listing, payload=payload)
    root = tmp_path / "data"
    target = download_labels("dukemtmc", root, quiet=True)
    assert (target / "query" / "0012_c1_f0057703.npy").is_file()
    assert target == root / "DukeMTMC-reID" / "masks" / MASKS
    gets = [kwargs for kind, kwargs in calls if kind == "get"]
    assert [g["id"] for g in gets] == ["id-duke"] and gets[0]["resume"] is True
    # a complete archive already on disk is reused, not downloaded again
    download_labels("dukemtmc", root, quiet=True)
    assert len([kind for kind, _ in calls if kind == "get"]) == 1


def test_match_archive_names():
    names = [
        "Market-1501.zip",
        "DukeMTMC-reID.zip",
        "Occluded_Duke.zip",
        "P-DukeMTMC-reID.zip",
        "Occluded_REID.zip",
    ]
    assert download.match_archive("market1501", names) == "Market-1501.zip"
    assert download.match_archive("dukemtmc", names) == "DukeMTMC-reID.zip"
    assert download.match_archive("occluded_duke", names) == "Occluded_Duke.zip"
    assert download.match_archive("p_dukemtmc", names) == "P-DukeMTMC-reID.zip"
    assert download.match_archive("occluded_reid", names) == "Occluded_REID.zip"
    assert download.match_archive("market1501", ["notes.txt"]) is None


def test_cli_installs_a_local_archive(tmp_path: Path, capsys):
    archive = labels_zip(
        tmp_path / "m.zip", {"query/0003_c1s1_000101_00.npy": np.zeros((36, 4, 2), np.float32)}
    )
    root = tmp_path / "data"
    code = main(["data", "download-labels", "market1501", str(root), "--archive", str(archive)])
    assert code == 0
    assert (
        root / "Market-1501-v15.09.15" / "masks" / MASKS / "query" / "0003_c1s1_000101_00.npy"
    ).is_file()
    assert "Installed 1 label files" in capsys.readouterr().out


# --------------------------------------------------------------------------------------
# synth
# --------------------------------------------------------------------------------------


def test_synth_delegates_to_the_generator(tmp_path: Path, monkeypatch, capsys):
    calls = []

    def generate(root, preset="small", seed=0, height=None, width=None, **kwargs):
        calls.append((Path(root), preset, seed, height, width, kwargs))
        splits = dict(SPLITS, query_holistic=["0003_c2s1_000103_00.jpg"])
        return make_dataset(Path(root) / f"{preset}_{seed}", splits)

    fake = types.ModuleType("bpbreid.data.synthetic")
    fake.generate = generate
    monkeypatch.setitem(sys.modules, "bpbreid.data.synthetic", fake)
    monkeypatch.setattr(bpbreid.data, "synthetic", fake, raising=False)
    argv = ["data", "synth", "--preset", "tiny", "--seed", "2", "--height", "32", "--width", "16"]
    assert main([*argv, "--root", str(tmp_path)]) == 0
    assert calls == [(tmp_path / "synthetic", "tiny", 2, 32, 16, {})]
    out = capsys.readouterr().out
    assert "query_holistic" in out and str(tmp_path / "synthetic" / "tiny_2") in out


def test_data_without_action_prints_help(capsys):
    assert main(["data"]) == 0
    out = capsys.readouterr().out
    assert "check" in out and "download-labels" in out and "synth" in out


def test_cli_dataset_choices_match_the_registry():
    from bpbreid.cli import data as cli
    from bpbreid.data.datasets import DATASETS

    assert cli.DATASET_NAMES == tuple(DATASETS)
    assert set(cli.LABELLED_DATASETS) == set(DATASETS) - {"synthetic"}


# --------------------------------------------------------------------------------------
# Recognising datasets by their contents; the same root for every command
# --------------------------------------------------------------------------------------


def test_check_recognises_renamed_folders_by_their_file_names(tmp_path: Path, capsys):
    market = make_dataset(tmp_path / "my_market_copy", SPLITS)
    make_dataset(tmp_path / "reid_b", DUKE_SPLITS, suffix=".jpg.confidence_fields.npy")
    # The data root: Market-1501 is recognised; the Duke-style copy of unknown sizes is not.
    assert main(["data", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "market1501: OK" in out and "reid_b" in out and "cannot tell" in out
    assert "--dataset occluded_duke" in out
    # The dataset folder itself, under its other name.
    assert main(["data", "check", str(market)]) == 0
    assert "market1501: OK" in capsys.readouterr().out
    # Undecidable alone: an error that says what to pass, no traceback.
    assert main(["data", "check", str(tmp_path / "reid_b")]) == 2
    err = capsys.readouterr().err
    assert "Cannot tell which dataset" in err and "--dataset dukemtmc" in err
    assert "Traceback" not in err
    args = ["data", "check", str(tmp_path / "reid_b"), "--dataset", "occluded_duke"]
    assert main(args) == 0


def test_duke_and_occluded_duke_told_apart_by_split_sizes_or_name(
    tmp_path: Path, monkeypatch, capsys
):
    from bpbreid.data import datasets

    # The real sizes (16,522 / 2,228 / 17,661 ...) scaled down to this tree's.
    monkeypatch.setitem(datasets.DUKE_FAMILY_SIZES, "occluded_duke", (2, 1, 1))
    monkeypatch.setitem(datasets.DUKE_FAMILY_SIZES, "dukemtmc", (3, 1, 1))
    make_dataset(tmp_path / "copy_1", DUKE_SPLITS, suffix=".jpg.confidence_fields.npy")
    assert datasets.detect_datasets(tmp_path) == [("occluded_duke", tmp_path / "copy_1")]
    splits = {k: list(v) for k, v in DUKE_SPLITS.items()}
    splits["bounding_box_train"].append("0007_c3_f0000001.jpg")
    make_dataset(tmp_path / "copy_2", splits)
    named = make_dataset(
        tmp_path / "my_occluded_set", DUKE_SPLITS, suffix=".jpg.confidence_fields.npy"
    )
    named_train = named / "bounding_box_train" / DUKE_SPLITS["bounding_box_train"][0]
    named_train.unlink()  # sizes match neither: the name decides
    found = dict((path.name, name) for name, path in datasets.detect_datasets(tmp_path))
    assert found == {
        "copy_1": "occluded_duke",
        "copy_2": "dukemtmc",
        "my_occluded_set": "occluded_duke",
    }
    # An explicit name under the data root finds the renamed copy by its contents.
    assert datasets.find_dataset_dir("dukemtmc", tmp_path) == tmp_path / "copy_2"
    assert main(["data", "check", str(tmp_path), "--dataset", "dukemtmc"]) == 0
    assert "copy_2" in capsys.readouterr().out


def test_a_dataset_folder_given_as_another_dataset_is_refused(tmp_path: Path, capsys):
    duke = make_dataset(tmp_path / "DukeMTMC-reID", DUKE_SPLITS)
    assert main(["data", "check", str(duke), "--dataset", "occluded_duke"]) == 1
    out = capsys.readouterr().out
    assert "holds DukeMTMC-reID" in out and "data prepare occluded_duke" in out
    market = make_dataset(tmp_path / "elsewhere", SPLITS)
    assert main(["data", "check", str(market), "--dataset", "dukemtmc"]) == 1
    assert "holds Market-1501" in capsys.readouterr().out


@pytest.mark.parametrize("given", ["root", "dataset"])
def test_every_command_takes_the_data_root_or_the_dataset_folder(
    tmp_path: Path, given: str, capsys
):
    from bpbreid.config import Config
    from bpbreid.data.datasets import build_dataset_from_config
    from bpbreid.labels.keypoints import write_keypoints_json

    dataset = make_dataset(tmp_path / "Occluded_Duke", DUKE_SPLITS, labels=False)
    root = tmp_path if given == "root" else dataset
    # data check
    assert main(["data", "check", str(root), "--no-labels"]) == 0
    assert "occluded_duke: OK" in capsys.readouterr().out
    # train reads data.root the same way
    cfg = Config()
    cfg.data.name, cfg.data.root = "occluded_duke", str(root)
    assert build_dataset_from_config(cfg, require_masks=False).dataset_dir == dataset
    # labels: recognised as Occluded-Duke, so the labels get its official paths and suffix
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[:, 0], keypoints[:, 1], keypoints[:, 2] = 2, np.linspace(0, 7, 17), 1
    for split, names in DUKE_SPLITS.items():
        for name in names:
            write_keypoints_json((dataset / split / name).with_suffix(".json"), keypoints, (8, 4))
    for extra in ([], ["--dataset", "occluded_duke"]):
        argv = ["labels", str(root), "--estimator", "json", "--no-progress", *extra]
        assert main(argv) == 0
        assert "no person found in 0 of" in capsys.readouterr().out
    label = dataset / "masks" / MASKS / "query" / "0012_c1_f0057703.jpg.confidence_fields.npy"
    assert label.is_file()
    assert main(["data", "check", str(root)]) == 0


def test_labels_on_a_root_with_several_datasets_asks_which(tmp_path: Path, capsys):
    make_dataset(tmp_path / "Market-1501-v15.09.15", SPLITS, labels=False)
    make_dataset(tmp_path / "Occluded_Duke", DUKE_SPLITS, labels=False)
    assert main(["labels", str(tmp_path), "--estimator", "json"]) == 2
    err = capsys.readouterr().err
    assert "several datasets" in err and "Market-1501-v15.09.15" in err and "Traceback" not in err
    assert main(["labels", str(tmp_path), "--dataset", "p_dukemtmc", "--estimator", "json"]) == 2
    assert "P-DukeMTMC-reID not found" in capsys.readouterr().err
