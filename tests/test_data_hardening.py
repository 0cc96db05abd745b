"""Unreadable files: one policy for ``data check``, ``train``, ``infer`` and ``labels``.

* listing a folder skips entries it cannot classify (dangling links, link loops) with one
  warning naming them;
* an image that cannot be decoded, a decompression bomb included, is an error naming the
  file, also from a DataLoader worker process;
* ``data check`` opens every image and label by default and says how many it opened;
* a labels archive that needs a path to be both a file and a folder is refused up front.

Every tree here is generated in ``tmp_path`` (flat-colour images, constant labels).
"""

from __future__ import annotations

import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bpbreid.__main__ import main
from bpbreid.data.datasets import (
    ImageDataset,
    ImageReadError,
    LabelReadError,
    Sample,
    _worker_free_message,
    build_dataset,
    read_image,
    read_label,
    scan_images,
)
from bpbreid.data.download import install_labels_archive
from bpbreid.data.parsing import load_parsing_label
from bpbreid.errors import DatasetError, DownloadError, LabelError

MASKS = "pifpaf_maskrcnn_filtering"
MARKET = "Market-1501-v15.09.15"


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A 60-byte PNG whose header claims ``width x height`` RGB pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


def make_market(root: Path, ids: int = 3, per_split: int = 2) -> Path:
    """A Market-1501 tree under ``root`` with labels: ``ids`` identities x ``per_split``."""
    dataset = root / MARKET
    for split, cam in (("bounding_box_train", 1), ("query", 2), ("bounding_box_test", 3)):
        for pid in range(1, ids + 1):
            for k in range(per_split):
                name = f"{pid:04d}_c{cam + k % 2}s1_{k:06d}_00.jpg"
                image = dataset / split / name
                image.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((16, 8, 3), 20 * pid % 256, np.uint8)).save(image)
                label = dataset / "masks" / MASKS / split / f"{Path(name).stem}.npy"
                label.parent.mkdir(parents=True, exist_ok=True)
                np.save(label, np.full((36, 4, 2), 0.5, np.float32))
    return dataset


def link_loops(folder: Path) -> list[Path]:
    """``loop -> loop``, ``a.jpg -> b.jpg -> a.jpg`` and a dangling ``gone.jpg`` in ``folder``."""
    (folder / "loop").symlink_to("loop")
    (folder / "a.jpg").symlink_to("b.jpg")
    (folder / "b.jpg").symlink_to("a.jpg")
    (folder / "gone.jpg").symlink_to("does_not_exist.jpg")
    return [folder / name for name in ("a.jpg", "b.jpg", "gone.jpg", "loop")]


# --------------------------------------------------------------------------------------
# Folder listing: skip unreadable entries, one warning naming them
# --------------------------------------------------------------------------------------


def test_scan_images_skips_link_loops_and_dangling_links(tmp_path: Path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "ok.jpg")
    bad = link_loops(tmp_path)
    scan = scan_images(tmp_path, (".jpg",))
    assert scan.images == [tmp_path / "ok.jpg"]
    assert [path for path, _ in scan.skipped] == bad
    reasons = dict(scan.skipped)
    assert reasons[tmp_path / "loop"] == "symbolic link loop"
    assert reasons[tmp_path / "gone.jpg"] == "dangling symbolic link"
    with pytest.raises(DatasetError, match="Cannot list the image folder"):
        scan_images(tmp_path / "loop", (".jpg",))


def test_build_dataset_skips_unreadable_entries_with_one_warning(tmp_path: Path):
    dataset = make_market(tmp_path)
    bad = link_loops(dataset / "bounding_box_train")
    with pytest.warns(UserWarning) as record:
        data = build_dataset("market1501", tmp_path)
    messages = [str(w.message) for w in record if "unreadable" in str(w.message)]
    assert len(messages) == 1
    assert all(str(path) in messages[0] for path in bad)
    assert len(data.train) == 6 and len(data.skipped) == 4
    assert "skipped: 4 unreadable folder entries" in data.summary()


def test_nested_layout_skips_loops_in_identity_folders(tmp_path: Path):
    dataset = tmp_path / "Occluded_REID"
    for folder in ("occluded_body_images", "whole_body_images"):
        image = dataset / folder / "001" / "001_01.tif"
        image.parent.mkdir(parents=True)
        Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(image)
    (dataset / "whole_body_images" / "002").symlink_to("002")  # a folder-level loop
    (dataset / "whole_body_images" / "001" / "001_02.tif").symlink_to("001_02.tif")
    with pytest.warns(UserWarning, match="001_02.tif"):
        data = build_dataset("occluded_reid", tmp_path, masks_dir=None)
    assert len(data.query) == len(data.gallery) == 1
    assert {Path(p).name for p, _ in data.skipped} == {"002", "001_02.tif"}


def test_infer_listing_skips_loops_with_one_warning(tmp_path: Path):
    from bpbreid.inference import _as_items, list_images

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "sub").mkdir()
    bad = link_loops(tmp_path / "sub")
    (tmp_path / "masks").mkdir()  # label folders are not images to rank
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "masks" / "m.png")
    with pytest.warns(UserWarning) as record:
        assert list_images(tmp_path) == [tmp_path / "ok.png"]
    assert len(record) == 1 and all(str(path) in str(record[0].message) for path in bad)
    with pytest.raises(DatasetError, match="link loop"):
        _as_items(tmp_path / "sub" / "a.jpg")


def test_labels_plan_skips_loops_and_reports_a_bomb(tmp_path: Path):
    from bpbreid.labels.generate import generate_labels, plan_labels

    folder = tmp_path / "crops"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 16, 3), np.uint8)).save(folder / "ok.jpg")
    bomb = bomb_png(folder / "bomb.png")
    link_loops(folder)
    with pytest.warns(UserWarning, match="symbolic link loop"):
        jobs = plan_labels(folder)
    assert sorted(job.image.name for job in jobs) == ["bomb.png", "ok.jpg"]
    report = generate_labels(jobs, lambda image, path: None, progress=False)
    assert [image for image, _ in report.failed] == [bomb]
    assert str(bomb) in report.summary()


# --------------------------------------------------------------------------------------
# Image reading: an error naming the file, in workers too
# --------------------------------------------------------------------------------------


def test_read_image_refuses_a_decompression_bomb(tmp_path: Path):
    bomb = bomb_png(tmp_path / "0001_c1s1_000001_00.jpg")
    with pytest.raises(ImageReadError) as err:
        read_image(bomb)
    message = str(err.value)
    assert str(bomb) in message and "MAX_IMAGE_PIXELS" in message
    assert isinstance(err.value, DatasetError)


def test_parsing_png_bomb_is_a_label_error(tmp_path: Path):
    from bpbreid.data.parsing import load_parsing_png

    bomb = bomb_png(tmp_path / "parsing.png")
    with pytest.raises(LabelError, match=r"parsing\.png"):
        load_parsing_png(bomb)


def test_read_image_names_loops_dangling_links_and_folders(tmp_path: Path):
    bad = link_loops(tmp_path)
    with pytest.raises(ImageReadError, match=r"a\.jpg is a symbolic link loop"):
        read_image(bad[0])
    with pytest.raises(ImageReadError, match=r"gone\.jpg is a dangling symbolic link"):
        read_image(bad[2])
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageReadError, match=r"folder\.jpg is a folder"):
        read_image(tmp_path / "folder.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageReadError, match=r"text\.jpg"):
        read_image(tmp_path / "text.jpg")


def test_worker_free_message_recovers_the_original_message():
    from torch._utils import ExceptionWrapper

    try:
        raise ImageReadError("Cannot read the image /x/1.jpg (broken).\nSecond line.")
    except ImageReadError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 3")
    with pytest.raises(ImageReadError) as err:
        wrapper.reraise()  # what the main process does with a worker's exception
    assert str(err.value) == "Cannot read the image /x/1.jpg (broken).\nSecond line."
    untouched = "Caught something else entirely"
    assert _worker_free_message(untouched, ImageReadError) == untouched


def test_bad_image_and_label_in_a_dataloader_worker_name_the_file(tmp_path: Path):
    bomb = bomb_png(tmp_path / "0001_c1s1_000001_00.jpg")
    loader = torch.utils.data.DataLoader(
        ImageDataset([Sample(str(bomb), 0, 0, None)], load_masks=False), num_workers=1
    )
    with pytest.raises(ImageReadError) as err:
        next(iter(loader))
    assert str(bomb) in str(err.value)
    assert "Traceback" not in str(err.value) and "worker" not in str(err.value)

    image = tmp_path / "0002_c1s1_000001_00.jpg"
    Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(image)
    label = tmp_path / "0002.npy"
    np.save(label, np.full((36, 4, 2), 3.0, np.float32))  # out of [0, 1]
    loader = torch.utils.data.DataLoader(
        ImageDataset([Sample(str(image), 0, 0, str(label))], load_masks=True), num_workers=1
    )
    with pytest.raises(LabelReadError) as err:
        next(iter(loader))
    assert str(label) in str(err.value) and "Traceback" not in str(err.value)
    assert isinstance(err.value, LabelError)


def test_read_label_and_truncated_label_headers(tmp_path: Path):
    with pytest.raises(LabelReadError, match="no_label.jpg"):
        read_label(Sample(str(tmp_path / "no_label.jpg"), 0, 0, None))
    full = tmp_path / "full.npy"
    np.save(full, np.full((36, 4, 2), 0.5, np.float32))
    cut = tmp_path / "cut.npy"
    cut.write_bytes(full.read_bytes()[:-8])
    with pytest.raises(LabelError, match=r"cut\.npy.*truncated"):
        load_parsing_label(cut)
    # A header claiming a huge array is refused before anything is allocated.
    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f4", "fortran_order": False, "shape": (36, 100000, 100000)}
        )
    with pytest.raises(LabelError, match=r"huge\.npy.*truncated"):
        load_parsing_label(huge)
    loop = tmp_path / "loop.npy"
    loop.symlink_to("loop.npy")
    with pytest.raises(LabelError, match="link loop"):
        load_parsing_label(loop)


# --------------------------------------------------------------------------------------
# data check: every file by default, a sample on request, and what was checked
# --------------------------------------------------------------------------------------


def test_data_check_opens_every_file_and_says_so(tmp_path: Path, capsys):
    dataset = make_market(tmp_path, ids=10)  # 60 images: more than any default sample
    train = sorted((dataset / "bounding_box_train").iterdir())
    corrupt = train[::5]  # spread over the set
    for image in corrupt:
        image.write_bytes(b"garbage")
    bad_label = dataset / "masks" / MASKS / "query" / "0007_c2s1_000000_00.npy"
    np.save(bad_label, np.full((36, 4, 2), 2.0, np.float32))
    assert main(["data", "check", str(tmp_path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert all(str(image) in out for image in corrupt)
    assert "bad label file" in out and str(bad_label) in out
    assert f"BROKEN ({len(corrupt) + 1} problem(s); checked 60/60 images and 60/60 labels)" in out


def test_data_check_good_tree_counts_every_file(tmp_path: Path, capsys):
    make_market(tmp_path, ids=10)
    assert main(["data", "check", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "market1501: OK (checked 60/60 images and 60/60 labels)" in out
    assert "[36, 4, 2] x60" in out
    assert main(["data", "check", str(tmp_path), "--no-labels", "--no-progress"]) == 0
    assert "checked 60/60 images; labels not checked (--no-labels)" in capsys.readouterr().out


def test_data_check_sample_states_what_was_not_checked(tmp_path: Path, capsys):
    make_market(tmp_path, ids=10)
    for flag in ("--sample", "--samples"):
        assert main(["data", "check", str(tmp_path), flag, "5", "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert "opened and decoded 5/60 images (random sample)" in out
        assert "checked 5/60 images and 5/60 labels" in out and "NOT opened" in out
    with pytest.raises(SystemExit):
        main(["data", "check", str(tmp_path), "--sample", "0"])


def test_data_check_bomb_and_loops_through_the_cli(tmp_path: Path, capsys):
    dataset = make_market(tmp_path)
    bomb = bomb_png(dataset / "query" / "0001_c2s1_000000_00.jpg")  # replaces a good image
    bad = link_loops(dataset / "bounding_box_train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the skipped entries are printed, not warned
        assert main(["data", "check", str(tmp_path), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert "PROBLEM: Refusing the image " + str(bomb) in captured.out
    assert "WARNING: Skipped 4 unreadable folder entries" in captured.out
    assert all(str(path) in captured.out for path in bad)


# --------------------------------------------------------------------------------------
# Label archives: refuse members that conflict, before extracting anything
# --------------------------------------------------------------------------------------


def npy_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.full((36, 4, 2), 0.5, np.float32))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "members",
    [
        ["query/0001_c1s1_000001_00.npy", "query/0001_c1s1_000001_00.npy/b.npy"],
        ["query/0001_c1s1_000001_00.npy/b.npy", "query/0001_c1s1_000001_00.npy"],
    ],
)
def test_archive_with_a_file_and_a_folder_of_one_name_is_refused(tmp_path: Path, members, capsys):
    make_market(tmp_path / "data", ids=1)
    target = tmp_path / "data" / MARKET / "masks" / MASKS
    before = sorted(target.rglob("*"))
    archive = tmp_path / "labels.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("bounding_box_train/0001_c1s1_000000_00.npy", npy_bytes())
        for name in members:
            zf.writestr(name, npy_bytes())
    with pytest.raises(DownloadError) as err:
        install_labels_archive(archive, "market1501", tmp_path / "data")
    assert all(f"'{name}'" in str(err.value) for name in members)
    assert sorted(target.rglob("*")) == before  # nothing extracted
    argv = ["data", "download-labels", "market1501", str(tmp_path / "data")]
    assert main([*argv, "--archive", str(archive)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert all(f"'{name}'" in err for name in members)


def test_archive_conflicting_with_the_disk_is_refused(tmp_path: Path):
    target = tmp_path / "data" / MARKET / "masks" / MASKS
    (target / "query" / "0001_c1s1_000001_00.npy").mkdir(parents=True)  # a folder in the way
    archive = tmp_path / "labels.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("query/0001_c1s1_000001_00.npy", npy_bytes())
    with pytest.raises(DownloadError, match=r"0001_c1s1_000001_00\.npy is a folder"):
        install_labels_archive(archive, "market1501", tmp_path / "data")
    (target / "query" / "0001_c1s1_000001_00.npy").rmdir()
    (target / "query").rmdir()
    (target / "query").write_text("a file where a folder belongs")
    with pytest.raises(DownloadError, match="is a file"):
        install_labels_archive(archive, "market1501", tmp_path / "data")


def test_ranking_figures_draw_a_bomb_as_a_grey_box(tmp_path: Path):
    from bpbreid.viz.ranking import _load_image

    bomb = bomb_png(tmp_path / "bomb.png")
    with pytest.warns(UserWarning, match="DecompressionBombError"):
        image = _load_image(str(bomb), size=(8, 4))
    assert image.shape == (8, 4, 3) and (image == 160).all()
