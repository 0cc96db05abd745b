"""Dataset layouts -> samples, errors for people, ImageDataset and the loaders."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bpbreid.data
from bpbreid.config import Config
from bpbreid.data.datasets import (
    DATASETS,
    ImageDataset,
    Sample,
    build_dataset,
    build_dataset_from_config,
    build_loaders,
    detect_datasets,
    find_dataset_dir,
    read_image,
)
from bpbreid.errors import DatasetError, LabelError

MASKS = "pifpaf_maskrcnn_filtering"


def write_jpg(path: Path, value: int = 128, size: tuple[int, int] = (8, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)


def write_label(path: Path, shape: tuple[int, ...] = (36, 4, 2), value: float = 0.7) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.full(shape, value, np.float32))


def make_layout(
    dataset_dir: Path,
    splits: dict[str, list[str]],
    suffix: str = ".npy",
    labels: bool = True,
) -> Path:
    """Images ``<dataset_dir>/<split>/<name>`` and labels under masks/<MASKS>/<split>/."""
    for split, names in splits.items():
        for i, name in enumerate(names):
            write_jpg(dataset_dir / split / name, value=10 * i)
            if labels:
                stem = Path(name).stem
                write_label(dataset_dir / "masks" / MASKS / Path(split) / f"{stem}{suffix}")
    return dataset_dir


MARKET = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000301_01.jpg",
        "0007_c3s1_000551_01.jpg",
        "0011_c6s2_000776_02.jpg",
    ],
    "query": ["0003_c1s1_000101_00.jpg", "0005_c4s1_000201_00.jpg"],
    "bounding_box_test": [
        "-1_c1s1_000401_03.jpg",  # junk
        "0000_c2s1_000151_01.jpg",  # distractor
        "0003_c3s1_000102_01.jpg",
        "0005_c5s1_000202_02.jpg",
    ],
}

DUKE = {
    "bounding_box_train": ["0005_c2_f0046985.jpg", "0005_c5_f0051341.jpg", "0008_c1_f0047145.jpg"],
    "query": ["0012_c1_f0057703.jpg"],
    "bounding_box_test": ["0012_c8_f0222120.jpg", "0013_c7_f0123456.jpg"],
}


@pytest.fixture
def market_root(tmp_path: Path) -> Path:
    make_layout(tmp_path / "Market-1501-v15.09.15", MARKET)
    return tmp_path


def test_market_names_junk_distractors_relabelling(market_root: Path):
    data = build_dataset("market1501", market_root)
    assert data.dataset_dir == market_root / "Market-1501-v15.09.15"
    # train pids 2, 7, 11 relabelled to 0..2 in increasing order; cameras 0-based
    assert sorted((Path(s.img_path).name, s.pid, s.camid) for s in data.train) == [
        ("0002_c1s1_000451_03.jpg", 0, 0),
        ("0002_c2s1_000301_01.jpg", 0, 1),
        ("0007_c3s1_000551_01.jpg", 1, 2),
        ("0011_c6s2_000776_02.jpg", 2, 5),
    ]
    assert data.num_train_pids == 3 and data.num_train_cams == 4
    gallery = {Path(s.img_path).name: (s.pid, s.camid) for s in data.gallery}
    assert "-1_c1s1_000401_03.jpg" not in gallery  # junk dropped
    assert gallery["0000_c2s1_000151_01.jpg"] == (0, 1)  # distractor kept
    assert gallery["0005_c5s1_000202_02.jpg"] == (5, 4)  # test pids keep their value
    assert {s.pid for s in data.query} == {3, 5}
    for sample in data.train + data.query + data.gallery:
        assert isinstance(sample, Sample)
        assert Path(sample.mask_path).is_file()


def test_duke_names_and_market_suffix(tmp_path: Path):
    make_layout(tmp_path / "DukeMTMC-reID", DUKE)
    data = build_dataset("dukemtmc", tmp_path)
    assert {(s.pid, s.camid) for s in data.gallery} == {(12, 7), (13, 6)}
    sample = data.query[0]
    expected = tmp_path / "DukeMTMC-reID" / "masks" / MASKS / "query" / "0012_c1_f0057703.npy"
    assert sample.mask_path == str(expected)


def test_occluded_duke_label_suffix(tmp_path: Path):
    suffix = ".jpg.confidence_fields.npy"
    make_layout(tmp_path / "Occluded_Duke", DUKE, suffix=suffix)
    data = build_dataset("occluded_duke", tmp_path)
    labels = [Path(s.mask_path).name for s in data.train]
    assert all(name.endswith(".jpg.confidence_fields.npy") for name in labels)
    assert "0005_c2_f0046985.jpg.confidence_fields.npy" in labels
    # a Market-style suffix is not what Occluded-Duke expects
    (tmp_path / "Occluded_Duke" / "masks").rename(tmp_path / "elsewhere")
    make_layout(tmp_path / "Occluded_Duke", DUKE, suffix=".npy")
    with pytest.raises(LabelError, match=r"confidence_fields\.npy"):
        build_dataset("occluded_duke", tmp_path)


def test_unparseable_file_name_names_file_and_pattern(tmp_path: Path):
    splits = {k: list(v) for k, v in MARKET.items()}
    splits["query"].append("0005_c2_f0046985.jpg")  # a Duke name in Market
    make_layout(tmp_path / "Market-1501-v15.09.15", splits)
    with pytest.raises(DatasetError) as err:
        build_dataset("market1501", tmp_path)
    message = str(err.value)
    assert "0005_c2_f0046985.jpg" in message and "0002_c1s1_000451_03.jpg" in message


def test_missing_root_dataset_and_split_messages(tmp_path: Path):
    with pytest.raises(DatasetError, match="does not exist") as err:
        build_dataset("market1501", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value) and "data/README.md" in str(err.value)

    make_layout(tmp_path / "Occluded_Duke", DUKE, labels=False)
    with pytest.raises(DatasetError) as err:
        build_dataset("market1501", tmp_path)
    message = str(err.value)
    assert "Market-1501-v15.09.15" in message  # where it looked
    assert "Occluded_Duke/" in message and "occluded_duke" in message  # what is there
    assert "data/README.md" in message

    make_layout(tmp_path / "DukeMTMC-reID", {"bounding_box_train": DUKE["bounding_box_train"]})
    with pytest.raises(DatasetError) as err:
        build_dataset("dukemtmc", tmp_path)
    assert str(tmp_path / "DukeMTMC-reID" / "query") in str(err.value)


def test_missing_labels_required_or_not(market_root: Path):
    label = (
        market_root
        / "Market-1501-v15.09.15"
        / "masks"
        / MASKS
        / "query"
        / "0003_c1s1_000101_00.npy"
    )
    label.unlink()
    with pytest.raises(LabelError) as err:
        build_dataset("market1501", market_root)
    message = str(err.value)
    assert str(label) in message and "0003_c1s1_000101_00.jpg" in message
    assert "python -m bpbreid data download-labels" in message
    data = build_dataset("market1501", market_root, require_masks=False)
    assert [s.mask_path for s in data.query if "0003_" in s.img_path] == [None]
    assert len(data.missing_masks) == 1 and data.missing_masks[0][1] == str(label)
    no_labels = build_dataset("market1501", market_root, masks_dir=None)
    assert all(s.mask_path is None for s in no_labels.train) and not no_labels.missing_masks


def test_torchreid_nested_folder_and_dataset_folder_as_root(tmp_path: Path):
    make_layout(tmp_path / "market1501" / "Market-1501-v15.09.15", MARKET)
    assert find_dataset_dir("market1501", tmp_path) == (
        tmp_path / "market1501" / "Market-1501-v15.09.15"
    )
    direct = build_dataset("market1501", tmp_path / "market1501" / "Market-1501-v15.09.15")
    assert len(direct.train) == 4


def test_synthetic_extra_query_set_and_summary(tmp_path: Path):
    splits = {k: list(v) for k, v in MARKET.items()}
    splits["query_holistic"] = ["0003_c2s1_000103_00.jpg", "0005_c3s1_000203_00.jpg"]
    dataset_dir = make_layout(tmp_path / "synthetic" / "small_seed0", splits)
    data = build_dataset("synthetic", dataset_dir)
    assert set(data.extra_queries) == {"query_holistic"}
    assert [s.pid for s in data.extra_queries["query_holistic"]] == [3, 5]
    assert [s.camid for s in data.extra_queries["query_holistic"]] == [1, 2]
    table = data.summary()
    for row in ("train", "query", "gallery", "query_holistic"):
        assert f"  {row} " in table
    train_row = next(line for line in table.splitlines() if line.startswith("  train "))
    assert [cell.strip() for cell in train_row.split("|")][1:] == ["3", "4", "4"]
    # found from the data root too, and detected as synthetic (not Market-1501)
    assert build_dataset("synthetic", tmp_path).dataset_dir == dataset_dir
    assert detect_datasets(tmp_path) == [("synthetic", dataset_dir)]


def test_extra_query_set_requested_but_missing(market_root: Path):
    with pytest.raises(DatasetError, match="query_holistic"):
        build_dataset("market1501", market_root, extra_query_sets=["query_holistic"])


def test_occluded_reid_layout(tmp_path: Path):
    root = tmp_path / "Occluded_REID"
    for split in ("occluded_body_images", "whole_body_images"):
        for pid in ("001", "002"):
            for k in ("01", "02"):
                name = f"{pid}_{k}.tif"
                write_jpg(root / split / pid / name)
                write_label(root / "masks" / MASKS / split / f"{pid}_{k}.npy")
    data = build_dataset("occluded_reid", tmp_path)
    assert data.train == [] and data.num_train_pids == 0
    assert {(s.pid, s.camid) for s in data.query} == {(1, 0), (2, 0)}
    assert {(s.pid, s.camid) for s in data.gallery} == {(1, 1), (2, 1)}
    assert data.query[0].mask_path == str(
        root / "masks" / MASKS / "occluded_body_images" / "001_01.npy"
    )


def test_p_dukemtmc_layout(tmp_path: Path):
    root = tmp_path / "P-DukeMTMC-reID"
    folders = {
        "train/whole_body_images": ("0005", "0009"),
        "train/occluded_body_images": ("0005", "0009"),
        "test/occluded_body_images": ("0100",),
        "test/whole_body_images": ("0100", "0200"),
    }
    for folder, pids in folders.items():
        for pid in pids:
            name = f"{pid}_c1_f00{pid}.jpg"
            write_jpg(root / folder / pid / name)
            write_label(root / "masks" / MASKS / folder / f"{Path(name).stem}.npy")
    data = build_dataset("p_dukemtmc", tmp_path)
    assert sorted((s.pid, s.camid) for s in data.train) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {(s.pid, s.camid) for s in data.query} == {(100, 0)}
    assert {s.pid for s in data.gallery} == {100, 200}
    expected = root / "masks" / MASKS / "train" / "occluded_body_images" / "0005_c1_f000005.npy"
    assert str(expected) in {s.mask_path for s in data.train}


def test_unknown_dataset_lists_valid_names(tmp_path: Path):
    with pytest.raises(DatasetError) as err:
        build_dataset("cuhk03", tmp_path)
    for name in DATASETS:
        assert name in str(err.value)


# --------------------------------------------------------------------------------------
# ImageDataset and loaders
# --------------------------------------------------------------------------------------


def stand_in_transform(image: np.ndarray, fields: np.ndarray | None):
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    if fields is None:
        return tensor, None
    parts = torch.from_numpy(fields[:4]).amax(0, keepdim=True)
    return tensor, torch.cat([1 - parts, parts])  # [K+1=2, h, w]


def test_image_dataset_items(market_root: Path):
    data = build_dataset("market1501", market_root)
    dataset = ImageDataset(data.train, stand_in_transform)
    item = dataset[0]
    assert set(item) == {"image", "target_masks", "pid", "camid", "img_path"}
    assert item["image"].shape == (3, 8, 4) and item["image"].dtype == torch.float32
    assert item["target_masks"].shape == (2, 4, 2)
    assert item["pid"] == data.train[0].pid and item["img_path"] == data.train[0].img_path
    no_masks = ImageDataset(data.train, stand_in_transform, load_masks=False)[0]
    assert "target_masks" not in no_masks
    plain = ImageDataset(data.query)[1]  # no transform: [3, H, W] in [0, 1]
    assert plain["image"].shape == (3, 8, 4) and float(plain["image"].max()) <= 1.0


def test_corrupt_image_and_missing_label_name_the_file(market_root: Path, tmp_path: Path):
    data = build_dataset("market1501", market_root)
    bad = Path(data.query[0].img_path)
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetError) as err:
        ImageDataset(data.query, stand_in_transform)[0]
    assert str(bad) in str(err.value)
    with pytest.raises(DatasetError, match="does not exist"):
        read_image(tmp_path / "missing.jpg")

    label = Path(data.gallery[0].mask_path)
    label.unlink()
    with pytest.raises(LabelError) as err:
        ImageDataset(data.gallery, stand_in_transform)[0]
    assert str(label) in str(err.value) and data.gallery[0].img_path in str(err.value)
    assert "download-labels" in str(err.value)


@pytest.fixture
def transforms_module(monkeypatch):
    """The real build_transforms when present, else a stand-in with the same contract."""
    try:
        from bpbreid.data.transforms import build_transforms  # noqa: F401
    except ImportError:
        fake = types.ModuleType("bpbreid.data.transforms")
        fake.build_transforms = lambda cfg, train: stand_in_transform
        monkeypatch.setitem(sys.modules, "bpbreid.data.transforms", fake)
        monkeypatch.setattr(bpbreid.data, "transforms", fake, raising=False)


def small_config(**train) -> Config:
    cfg = Config()
    cfg.data.height, cfg.data.width, cfg.data.workers = 16, 8, 0
    cfg.model.bpbreid.masks.preprocess, cfg.model.bpbreid.masks.parts_num = "four", 4
    cfg.train.batch_size, cfg.train.num_instances = train.get("batch_size", 4), 2
    cfg.test.batch_size = 3
    return cfg


def test_build_loaders(tmp_path: Path, transforms_module):
    names = [f"{pid:04d}_c{cam}s1_00{pid}{cam}_01.jpg" for pid in (1, 2, 3) for cam in (1, 2, 3)]
    splits = {"bounding_box_train": names, "query": MARKET["query"]}
    splits["bounding_box_test"] = MARKET["bounding_box_test"]
    make_layout(tmp_path / "Market-1501-v15.09.15", splits)
    data = build_dataset("market1501", tmp_path)
    loaders = build_loaders(small_config(), data)
    assert set(loaders) == {"train", "query", "gallery"}
    train = loaders["train"]
    batches = list(train)
    assert len(batches) == len(train) > 0
    for batch in batches:
        assert batch["image"].shape[0] == 4
        pids = batch["pid"].tolist()
        assert len(set(pids)) == 2 and all(pids.count(p) == 2 for p in pids)
        assert batch["target_masks"].shape[:2] in {(4, 2), (4, 5)}  # stand-in or K+1 = 5
    query = list(loaders["query"])
    assert [p for b in query for p in b["img_path"]] == [s.img_path for s in data.query]
    gallery = loaders["gallery"]
    assert gallery.batch_size == 3 and "target_masks" not in next(iter(gallery))


def test_build_loaders_refuses_too_few_identities(market_root: Path, transforms_module):
    data = build_dataset("market1501", market_root)
    with pytest.raises(DatasetError, match="identities"):
        build_loaders(small_config(batch_size=8), data)  # 4 ids needed, 3 in the train set


def test_build_dataset_from_config_generates_synthetic(tmp_path: Path, monkeypatch):
    calls = []

    def generate(root, preset="small", seed=0, height=None, width=None, **kwargs):
        calls.append((Path(root), preset, seed, height, width))
        splits = {k: list(v) for k, v in MARKET.items()}
        splits["query_holistic"] = ["0003_c2s1_000103_00.jpg"]
        return make_layout(Path(root) / f"{preset}_{seed}", splits)

    fake = types.ModuleType("bpbreid.data.synthetic")
    fake.generate = generate
    monkeypatch.setitem(sys.modules, "bpbreid.data.synthetic", fake)
    monkeypatch.setattr(bpbreid.data, "synthetic", fake, raising=False)
    monkeypatch.setenv("BPBREID_ROOT", str(tmp_path))  # relative data.root -> this root
    cfg = Config()
    cfg.data.name, cfg.data.root = "synthetic", "mydata"
    cfg.data.synthetic.preset, cfg.data.synthetic.seed = "tiny", 3
    data = build_dataset_from_config(cfg)
    assert calls == [(tmp_path / "mydata" / "synthetic", "tiny", 3, None, None)]
    assert data.name == "synthetic" and "query_holistic" in data.extra_queries
    assert data.dataset_dir == tmp_path / "mydata" / "synthetic" / "tiny_3"


def test_build_dataset_from_config_real_dataset(market_root: Path):
    cfg = Config()
    cfg.data.name, cfg.data.root = "market1501", str(market_root)
    data = build_dataset_from_config(cfg)
    assert data.name == "market1501" and len(data.gallery) == 3


def test_dataset_folder_with_another_name_and_several_synthetic_sets(tmp_path: Path):
    own = make_layout(tmp_path / "my_copy_of_market", MARKET)
    assert build_dataset("market1501", own).dataset_dir == own  # explicit name: any folder
    # recognised by its contents (Market-1501 file names), whatever the folder's name
    assert detect_datasets(tmp_path) == [("market1501", own)]

    splits = {k: list(v) for k, v in MARKET.items()}
    splits["query_holistic"] = ["0003_c2s1_000103_00.jpg"]
    first = make_layout(tmp_path / "synthetic" / "tiny_s0_64x32", splits)
    make_layout(tmp_path / "synthetic" / "small_s0_64x32", splits)
    (tmp_path / "synthetic" / ".partial" / "bounding_box_train").mkdir(parents=True)
    names = [name for name, _ in detect_datasets(tmp_path)]
    assert names == ["synthetic", "synthetic", "market1501"]
    with pytest.raises(DatasetError, match="Several synthetic datasets") as err:
        build_dataset("synthetic", tmp_path)
    assert "tiny_s0_64x32" in str(err.value) and ".partial" not in str(err.value)
    assert build_dataset("synthetic", first).dataset_dir == first
