"""``python -m bpbreid data prepare occluded_duke``: Occluded-Duke from DukeMTMC-reID + lists."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bpbreid.__main__ import main
from bpbreid.data import prepare
from bpbreid.data.datasets import build_dataset
from bpbreid.data.prepare import prepare_occluded_duke
from bpbreid.errors import DatasetError

MASKS = "pifpaf_maskrcnn_filtering"
# DukeMTMC-reID as the test writes it: split folder -> file names (made-up frames).
DUKE = {
    "bounding_box_train": ["0005_c2_f0000011.jpg", "0005_c5_f0000012.jpg", "0007_c1_f0000013.jpg"],
    "query": ["0012_c1_f0000021.jpg", "0014_c3_f0000022.jpg"],
    "bounding_box_test": [
        "0012_c8_f0000031.jpg",
        "0014_c4_f0000032.jpg",
        "0012_c2_f0000033.jpg",  # listed in query.list: the re-split moved it to the query
        "0000_c6_f0000034.jpg",
    ],
}
# The Occluded-Duke lists: train drops one image, the query takes one from the gallery.
LISTS = {
    "train": ["0005_c2_f0000011.jpg", "0005_c5_f0000012.jpg"],
    "query": ["0012_c1_f0000021.jpg", "0012_c2_f0000033.jpg"],
    "gallery": ["0012_c8_f0000031.jpg", "0014_c4_f0000032.jpg", "0000_c6_f0000034.jpg"],
}
MOVED = "0012_c2_f0000033"


def write_jpg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 4, 3), value, np.uint8)).save(path)


def make_duke(root: Path, labels: bool = True) -> Path:
    """A tiny DukeMTMC-reID tree: images, official .npy labels, parsing PNGs."""
    duke = root / "DukeMTMC-reID"
    for split, names in DUKE.items():
        for i, name in enumerate(names):
            write_jpg(duke / split / name, 10 + 20 * i)
            if not labels:
                continue
            stem = Path(name).stem
            label = duke / "masks" / MASKS / split / f"{stem}.npy"
            label.parent.mkdir(parents=True, exist_ok=True)
            np.save(label, np.full((36, 4, 2), 0.1 * (i + 1), np.float32))
            png = duke / f"{split}_parsing_pgt" / f"{stem}.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 4), i, np.uint8)).save(png)
    return duke


def write_lists(folder: Path, lists: dict[str, list[str]] = LISTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, names in lists.items():
        # Windows line ends and a blank line, as hand-edited lists have.
        (folder / f"{split}.list").write_text("\r\n".join(names) + "\r\n\r\n")
    return folder


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_prepare_builds_the_official_split_with_links_and_labels(tmp_path: Path, capsys):
    duke = make_duke(tmp_path / "data")
    lists = write_lists(tmp_path / "lists")
    out = tmp_path / "out"
    argv = ["data", "prepare", "occluded_duke", "--duke", str(duke), "--lists", str(lists)]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    occ = out / "Occluded_Duke"
    for split, folder in (("train", "bounding_box_train"), ("query", "query")):
        assert sorted(p.name for p in (occ / folder).iterdir()) == sorted(LISTS[split])
    gallery = sorted(p.name for p in (occ / "bounding_box_test").iterdir())
    assert gallery == sorted(LISTS["gallery"])
    # The moved query image comes from DukeMTMC-reID's gallery, as a hard link.
    assert os.path.samefile(
        occ / "query" / f"{MOVED}.jpg", duke / "bounding_box_test" / f"{MOVED}.jpg"
    )
    assert "query 2 (1 from bounding_box_test)" in printed and "7 hard links" not in printed
    # Labels follow their image: renamed to Occluded-Duke's suffix, from the same source folder.
    label = occ / "masks" / MASKS / "query" / f"{MOVED}.jpg.confidence_fields.npy"
    assert os.path.samefile(label, duke / "masks" / MASKS / "bounding_box_test" / f"{MOVED}.npy")
    assert os.path.samefile(
        occ / "query_parsing_pgt" / f"{MOVED}.png",
        duke / "bounding_box_test_parsing_pgt" / f"{MOVED}.png",
    )
    train_pngs = sorted(p.stem for p in (occ / "bounding_box_train_parsing_pgt").iterdir())
    assert train_pngs == sorted(Path(n).stem for n in LISTS["train"])
    assert not (occ / "bounding_box_train" / "0007_c1_f0000013.jpg").exists()  # not listed
    assert leftovers(out) == []  # the temporary folder was renamed into place
    # The registry reads the result, labels included.
    data = build_dataset("occluded_duke", out)
    assert (len(data.train), len(data.query), len(data.gallery)) == (2, 2, 3)
    assert not data.missing_masks
    assert "bounding_box_train_parsing_pgt 2" in printed and "masks/" in printed


def test_missing_listed_images_are_named_and_counted(tmp_path: Path, capsys):
    duke = make_duke(tmp_path, labels=False)
    lists = {k: list(v) for k, v in LISTS.items()}
    lists["query"] += ["0099_c1_f0000099.jpg"]
    lists["train"] += ["0098_c1_f0000098.jpg"]
    folder = write_lists(tmp_path / "lists", lists)
    argv = ["data", "prepare", "occluded_duke", "--duke", str(duke), "--lists", str(folder)]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "2 listed image(s)" in err and "0099_c1_f0000099.jpg (query.list)" in err
    assert "0098_c1_f0000098.jpg" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_complete_tree_needs_force_and_an_incomplete_one_keeps_its_labels(tmp_path: Path, capsys):
    duke = make_duke(tmp_path / "data", labels=False)
    lists = write_lists(tmp_path / "lists")
    occ = tmp_path / "data" / "Occluded_Duke"
    downloaded = occ / "masks" / "downloaded" / "query" / f"{MOVED}.npy"
    downloaded.parent.mkdir(parents=True)
    downloaded.write_bytes(b"labels fetched before the images")
    # --duke given as the data root; the default --out is that root.
    argv = ["data", "prepare", "occluded_duke", "--duke", str(tmp_path / "data")]
    argv += ["--lists", str(lists), "--no-progress"]
    assert main(argv) == 0
    assert "kept from the earlier incomplete tree: masks/downloaded" in capsys.readouterr().out
    assert downloaded.read_bytes() == b"labels fetched before the images"
    assert (occ / "query" / f"{MOVED}.jpg").is_file()
    before = (occ / "query" / f"{MOVED}.jpg").stat().st_ino

    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    (duke / "bounding_box_test" / f"{MOVED}.jpg").unlink()
    write_jpg(duke / "bounding_box_test" / f"{MOVED}.jpg", 200)
    assert main([*argv, "--force"]) == 0
    assert (occ / "query" / f"{MOVED}.jpg").stat().st_ino != before  # rebuilt
    assert leftovers(tmp_path / "data") == []


def test_copies_when_hard_links_fail(tmp_path: Path, monkeypatch):
    duke = make_duke(tmp_path, labels=False)
    lists = write_lists(tmp_path / "lists")

    def cross_device(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(prepare.os, "link", cross_device)
    report = prepare_occluded_duke(duke, lists, out=tmp_path / "out", progress=False)
    assert report.linked == 0 and report.copied == sum(len(v) for v in LISTS.values())
    copied = tmp_path / "out" / "Occluded_Duke" / "query" / f"{MOVED}.jpg"
    assert copied.is_file()
    assert not os.path.samefile(copied, duke / "bounding_box_test" / f"{MOVED}.jpg")


def test_an_interrupted_build_leaves_nothing_behind(tmp_path: Path, monkeypatch):
    duke = make_duke(tmp_path, labels=False)
    lists = write_lists(tmp_path / "lists")
    calls = []

    def failing(self, source, target):
        calls.append(source)
        if len(calls) == 3:
            raise DatasetError(f"Cannot copy {source}: disk full")
        target.write_bytes(source.read_bytes())

    monkeypatch.setattr(prepare._Linker, "__call__", failing)
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="disk full"):
        prepare_occluded_duke(duke, lists, out=out, progress=False)
    assert not (out / "Occluded_Duke").exists() and leftovers(out) == []


def test_list_problems_are_clear_errors(tmp_path: Path, capsys):
    duke = make_duke(tmp_path, labels=False)
    (tmp_path / "lists").mkdir()
    base = ["data", "prepare", "occluded_duke", "--duke", str(duke)]
    assert main([*base, "--lists", str(tmp_path / "lists")]) == 2
    err = capsys.readouterr().err
    assert "train.list" in err and "lightas/Occluded-DukeMTMC-Dataset" in err
    bad = {k: list(v) for k, v in LISTS.items()}
    bad["gallery"].append("../escape.jpg")
    folder = write_lists(tmp_path / "bad", bad)
    assert main([*base, "--lists", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "gallery.list, line 4" in err and "../escape.jpg" in err
    # The official repository's layout: lists in its Occluded_Duke/ sub-folder.
    write_lists(tmp_path / "clone" / "Occluded_Duke")
    assert prepare.find_lists(tmp_path / "clone")["query"].parent.name == "Occluded_Duke"
