"""Official checkpoints: restricted unpickler, key and config mapping, offline downloads."""

from __future__ import annotations

import os
import pickle
import sys
import types
from collections import Counter, OrderedDict

import numpy as np
import pytest
import torch

from bpbreid.config import load_config
from bpbreid.errors import CheckpointError, DownloadError
from bpbreid.model import build_model
from bpbreid.official import (
    OFFICIAL_CHECKPOINTS,
    OFFICIAL_MODELS_FOLDER_ID,
    UNUSED_OFFICIAL_HEADS,
    OfficialConfig,
    RestrictedUnpickler,
    UnsafeGlobalError,
    config_from_official,
    download_official_checkpoint,
    load_official_checkpoint,
    map_official_state_dict,
    read_official_checkpoint,
    restricted_pickle,
    restricted_torch_load,
    state_dict_to_official,
    unused_official_head,
)

NUM_CLASSES = 6


def tiny_config():
    # The CPU backbone with the paper's 1x1 part head, so every key has an official name.
    return load_config(
        "synthetic_cpu",
        [
            "model.bpbreid.head=1x1",
            "model.bpbreid.dim_reduce_output=16",
            "data.height=32",
            "data.width=16",
        ],
    )


class _FakeCfgNode(dict):
    """Pickles like yacs' CfgNode: a dict subclass with bookkeeping in __dict__."""

    def __init__(self, init=None):
        super().__init__()
        for key, value in (init or {}).items():
            self[key] = _FakeCfgNode(value) if isinstance(value, dict) else value
        self.__dict__["__immutable__"] = False
        self.__dict__["__deprecated_keys__"] = set()
        self.__dict__["__renamed_keys__"] = {}
        self.__dict__["__new_allowed__"] = False


@pytest.fixture
def fake_yacs(monkeypatch):
    """A 'yacs.config' module so that torch.save can pickle the stand-in CfgNode by name."""
    _FakeCfgNode.__module__ = "yacs.config"
    _FakeCfgNode.__qualname__ = _FakeCfgNode.__name__ = "CfgNode"
    yacs = types.ModuleType("yacs")
    config = types.ModuleType("yacs.config")
    config.CfgNode = _FakeCfgNode
    yacs.config = config
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", config)
    return _FakeCfgNode


def official_config_tree(**bpbreid):
    tree = {
        "model": {
            "name": "bpbreid",
            "bpbreid": {
                "backbone": "hrnet32",
                "pooling": "gwap",
                "normalization": "identity",
                "dim_reduce": "after_pooling",
                "dim_reduce_output": 512,
                "last_stride": 1,
                "learnable_attention_enabled": True,
                "test_embeddings": ["bn_foreg", "parts"],
                "test_use_target_segmentation": "none",
                "shared_parts_id_classifier": False,
                "masks": {
                    "type": "disk",
                    "dir": "pifpaf_maskrcnn_filtering",
                    "preprocess": "eight",
                    "parts_num": 8,
                },
            },
        },
        "data": {
            "sources": ["occluded_duke"],
            "height": 384,
            "width": 128,
            "norm_mean": [0.485, 0.456, 0.406],
        },
        "loss": {
            "part_based": {
                "weights": {
                    "globl": {"id": 1.0, "tr": 0.0},
                    "foreg": {"id": 1.0, "tr": 0.0},
                    "conct": {"id": 1.0, "tr": 0.0},
                    "parts": {"id": 0.0, "tr": 1.0},
                    "pixls": {"ce": 0.35},
                }
            }
        },
        "test": {"dist_metric": "euclidean", "normalize_feature": True},
        "project": {"job_id": 10670, "tags": []},
    }
    tree["model"]["bpbreid"].update(bpbreid)
    return tree


def save_official(path, model, config_node, prefix=""):
    """Write a checkpoint laid out like the official engine's (numpy scores, optimizer...)."""
    state = OrderedDict(
        (prefix + k, v) for k, v in state_dict_to_official(model.state_dict()).items()
    )
    state[prefix + "backbone_appearance_feature_extractor.cls_head.0.weight"] = torch.zeros(
        4, 4, 1, 1
    )
    torch.save(
        {
            "state_dict": state,
            "epoch": 120,
            "rank1": np.float64(0.751),
            "mAP": np.float64(0.625),
            "ssmd": np.array([1.5, 2.5]),
            "config": config_node,
            "optimizer": {"state": {}, "param_groups": [{"lr": 3.5e-4, "params": [0, 1]}]},
            "scheduler": {"milestones": Counter({40: 1, 70: 1}), "last_epoch": 120},
        },
        path,
    )


# --------------------------------------------------------------------------------------
# Restricted unpickler
# --------------------------------------------------------------------------------------


class _RunsACommand:
    def __reduce__(self):
        return (os.system, ("true",))


class _TouchesAFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_restricted_unpickler_refuses_unexpected_globals(tmp_path):
    payload = pickle.dumps({"config": _RunsACommand()}, protocol=2)
    with pytest.raises(UnsafeGlobalError, match="system"):
        restricted_pickle.loads(payload)
    marker = tmp_path / "created_by_pickle"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "x": _TouchesAFile(marker)}, path)
    with pytest.raises(CheckpointError, match=r"builtins\.open|io\.open") as info:
        restricted_torch_load(path)
    assert str(path) in str(info.value)
    assert not marker.exists()  # nothing ran
    with pytest.raises(CheckpointError, match="system"):
        torch.save(_RunsACommand(), tmp_path / "evil2.pth")
        restricted_torch_load(tmp_path / "evil2.pth")


def test_restricted_unpickler_reads_tensors_containers_and_numpy(tmp_path):
    data = {
        "w": torch.arange(6, dtype=torch.float32).view(2, 3),
        "h": torch.ones(2, dtype=torch.float16),
        "od": OrderedDict(a=1),
        "s": {1, 2},
        "np": np.float64(0.5),
        "arr": np.arange(3),
        "b": b"\x00\xff",
    }
    path = tmp_path / "ok.pth"
    torch.save(data, path)
    loaded = restricted_torch_load(path)
    assert torch.equal(loaded["w"], data["w"]) and loaded["h"].dtype == torch.float16
    assert loaded["od"] == data["od"] and loaded["s"] == {1, 2} and loaded["b"] == b"\x00\xff"
    assert float(loaded["np"]) == 0.5 and loaded["arr"].tolist() == [0, 1, 2]
    legacy = tmp_path / "legacy.pth"
    torch.save(data, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(restricted_torch_load(legacy)["w"], data["w"])
    assert issubclass(RestrictedUnpickler, pickle.Unpickler)
    with pytest.raises(CheckpointError, match="not found"):
        restricted_torch_load(tmp_path / "missing.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        restricted_torch_load(tmp_path / "broken.pth")


# --------------------------------------------------------------------------------------
# Key mapping
# --------------------------------------------------------------------------------------


def test_hrnet_key_mapping_round_trip_uses_the_official_names_and_shapes():
    cfg = load_config(
        None,
        [
            "model.backbone=hrnet_w32",
            "model.bpbreid.masks.preprocess=five_v",
            "model.bpbreid.masks.parts_num=5",
        ],
    )
    with torch.device("meta"):  # names and shapes only: no memory, no init time
        model = build_model(cfg, num_classes=702)
    ours = model.state_dict()
    official = state_dict_to_official(ours)
    expected = {
        # backbone (official torchreid/models/hrnet.py names, kept by timm's hrnet_w32)
        "backbone_appearance_feature_extractor.conv1.weight": (64, 3, 3, 3),
        "backbone_appearance_feature_extractor.layer1.0.conv3.weight": (256, 64, 1, 1),
        "backbone_appearance_feature_extractor.transition1.1.0.0.weight": (64, 256, 3, 3),
        "backbone_appearance_feature_extractor.stage4.2.fuse_layers.0.3.0.weight": (32, 256, 1, 1),
        "backbone_appearance_feature_extractor.incre_modules.3.0.conv3.weight": (1024, 256, 1, 1),
        # head (official torchreid/models/bpbreid.py names)
        "global_after_pooling_dim_reduce.layers.0.weight": (512, 1920),
        "parts_after_pooling_dim_reduce.layers.1.running_var": (512,),
        "pixel_classifier.bn.weight": (1920,),
        "pixel_classifier.classifier.weight": (6, 1920, 1, 1),
        "global_identity_classifier.classifier.weight": (702, 512),
        "concat_parts_identity_classifier.bn.weight": (2560,),
        "parts_identity_classifier.4.classifier.weight": (702, 512),
    }
    for key, shape in expected.items():
        assert tuple(official[key].shape) == shape, key
    assert len(official) == len(ours)
    official["backbone_appearance_feature_extractor.cls_head.0.weight"] = torch.empty(
        512, 1920, 1, 1, device="meta"
    )
    mapped, report = map_official_state_dict(official, ours)
    assert report.ok and set(mapped) == set(ours)
    assert report.ignored == ["backbone_appearance_feature_extractor.cls_head.0.weight"]
    assert all(mapped[k].shape == ours[k].shape for k in ours)


def test_key_mapping_reports_missing_unexpected_and_mismatched():
    model = build_model(tiny_config(), NUM_CLASSES)
    official = state_dict_to_official(model.state_dict())
    del official["pixel_classifier.bn.weight"]
    official["before_pooling_dim_reduce.layers.0.weight"] = torch.zeros(1)
    official["global_identity_classifier.classifier.weight"] = torch.zeros(99, 16)
    _, report = map_official_state_dict(official, model.state_dict())
    assert report.missing == ["global_classifier.classifier.weight", "part_head.bn.weight"]
    assert report.unexpected == ["before_pooling_dim_reduce.layers.0.weight"]
    assert len(report.mismatched) == 1 and "(99, 16)" in report.mismatched[0]
    assert not report.ok and "missing" in report.summary()
    shared = state_dict_to_official(model.state_dict(), shared_parts_classifier=True)
    assert "parts_identity_classifier.bn.weight" in shared


# --------------------------------------------------------------------------------------
# Loading a whole official checkpoint
# --------------------------------------------------------------------------------------


def test_official_checkpoint_loads_into_our_model(tmp_path, fake_yacs, monkeypatch):
    cfg = tiny_config()
    torch.manual_seed(0)
    original = build_model(cfg, NUM_CLASSES).eval()
    path = tmp_path / "bpbreid_official.pth"
    save_official(path, original, fake_yacs(official_config_tree()), prefix="module.")
    # yacs is not needed to read it back
    monkeypatch.delitem(sys.modules, "yacs.config")
    monkeypatch.delitem(sys.modules, "yacs")

    checkpoint = read_official_checkpoint(path)
    assert isinstance(checkpoint.config, OfficialConfig)
    assert checkpoint.config.model.bpbreid.backbone == "hrnet32"
    assert checkpoint.extra["epoch"] == 120 and float(checkpoint.extra["rank1"]) == pytest.approx(
        0.751
    )

    model, used_cfg, report = load_official_checkpoint(path, cfg=cfg)
    assert report.ok and report.ignored and used_cfg is cfg
    images = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        a, b = original(images), model(images)
    for name in ("bn_foreground", "parts", "global"):
        torch.testing.assert_close(a.embeddings[name], b.embeddings[name])
    torch.testing.assert_close(a.visibility, b.visibility)


def test_strict_loading_refuses_a_mismatched_checkpoint(tmp_path, fake_yacs):
    cfg = tiny_config()
    model = build_model(cfg, NUM_CLASSES)
    path = tmp_path / "partial.pth"
    state = state_dict_to_official(model.state_dict())
    del state["pixel_classifier.bn.weight"]
    torch.save({"state_dict": state, "config": fake_yacs(official_config_tree())}, path)
    with pytest.raises(CheckpointError, match="part_head.bn.weight"):
        load_official_checkpoint(path, cfg=cfg)
    _, _, report = load_official_checkpoint(path, cfg=cfg, strict=False)
    assert report.missing == ["part_head.bn.weight"]


def test_official_config_maps_to_our_config():
    cfg = config_from_official(OfficialConfig(official_config_tree()))
    assert cfg.model.backbone == "hrnet_w32"
    assert cfg.model.bpbreid.masks.preprocess == "eight" and cfg.model.bpbreid.masks.parts_num == 8
    assert cfg.model.bpbreid.test_embeddings == ["bn_foreground", "parts"]
    assert cfg.model.bpbreid.dim_reduce_output == 512 and cfg.model.bpbreid.head == "1x1"
    assert (cfg.data.height, cfg.data.width, cfg.data.name) == (384, 128, "occluded_duke")
    assert cfg.loss.pixel_weight == pytest.approx(0.35)
    assert set(cfg.loss.weights) == {"global", "foreground", "concat_parts", "parts"}
    # Training from an official config follows the official recipe (docs/fidelity.md).
    assert cfg.model.bpbreid.foreground_pooling == "masked_average"
    assert (cfg.model.bpbreid.masks.targets, cfg.data.erasing) == ("official", "official")
    assert (cfg.train.amp, cfg.train.warmup_unit, cfg.data.pipeline) == (
        "off",
        "epoch",
        "reference",
    )
    five_v = config_from_official(official_config_tree(masks={"preprocess": "five_v"}))
    assert five_v.model.bpbreid.masks.parts_num == 5
    with pytest.raises(CheckpointError, match="dim_reduce"):
        config_from_official(official_config_tree(dim_reduce="before_pooling"))
    with pytest.raises(CheckpointError, match="backbone"):
        config_from_official(official_config_tree(backbone="osnet"))


# --------------------------------------------------------------------------------------
# Every official backbone: resnet50, resnet50_ibn_a, hrnet32
# --------------------------------------------------------------------------------------

BACKBONE = "backbone_appearance_feature_extractor."
# The official model's state dict (bpbreid c0db006, `model.bpbreid.masks.preprocess=five_v`,
# 5 parts, 751 identities, dim_reduce_output 512): total key count and a few tensors, read
# from the official torchreid/models/{resnet,resnet_ibn_a,hrnet,bpbreid}.py. The ResNets keep
# an identity classifier that BPBReID never calls (resnet.py:243, resnet_ibn_a.py:170), HRNet
# a 1x1 channel reduction used only with dim_reduce='before_pooling' (hrnet.py:362-371).
OFFICIAL_LAYOUTS = {
    "resnet50": (
        409,
        {
            f"{BACKBONE}conv1.weight": (64, 3, 7, 7),
            f"{BACKBONE}layer1.0.downsample.0.weight": (256, 64, 1, 1),
            f"{BACKBONE}layer1.0.bn1.weight": (64,),
            f"{BACKBONE}layer4.0.conv2.weight": (512, 512, 3, 3),
            f"{BACKBONE}layer4.2.bn3.running_var": (2048,),
            f"{BACKBONE}classifier.weight": (751, 2048),
            f"{BACKBONE}classifier.bias": (751,),
            "global_after_pooling_dim_reduce.layers.0.weight": (512, 2048),
            "pixel_classifier.classifier.weight": (6, 2048, 1, 1),
            "parts_identity_classifier.4.classifier.weight": (751, 512),
        },
    ),
    "resnet50_ibn_a": (
        435,
        {
            f"{BACKBONE}conv1.weight": (64, 3, 7, 7),
            f"{BACKBONE}layer1.0.bn1.IN.weight": (32,),
            f"{BACKBONE}layer1.0.bn1.BN.running_mean": (32,),
            f"{BACKBONE}layer3.5.bn1.IN.weight": (128,),
            f"{BACKBONE}layer4.0.bn1.weight": (512,),  # layer4 keeps plain BatchNorm
            f"{BACKBONE}layer4.2.bn3.running_var": (2048,),
            f"{BACKBONE}classifier.weight": (751, 2048),
            f"{BACKBONE}classifier.bias": (751,),
            "concat_parts_identity_classifier.bn.weight": (2560,),
        },
    ),
    "hrnet32": (
        2022,
        {
            f"{BACKBONE}conv1.weight": (64, 3, 3, 3),
            f"{BACKBONE}incre_modules.3.0.conv3.weight": (1024, 256, 1, 1),
            f"{BACKBONE}cls_head.0.weight": (512, 1920, 1, 1),
            f"{BACKBONE}cls_head.1.running_var": (512,),
            "pixel_classifier.classifier.weight": (6, 1920, 1, 1),
        },
    ),
}
UNUSED_HEADS = {  # official backbone -> (prefix, shapes of the tensors under it)
    "resnet50": (f"{BACKBONE}classifier.", {"weight": (751, 2048), "bias": (751,)}),
    "resnet50_ibn_a": (f"{BACKBONE}classifier.", {"weight": (751, 2048), "bias": (751,)}),
    "hrnet32": (
        f"{BACKBONE}cls_head.",
        {
            "0.weight": (512, 1920, 1, 1),
            "0.bias": (512,),
            "1.weight": (512,),
            "1.bias": (512,),
            "1.running_mean": (512,),
            "1.running_var": (512,),
            "1.num_batches_tracked": (),
        },
    ),
}
OUR_BACKBONES = {"resnet50": "resnet50", "resnet50_ibn_a": "resnet50_ibn_a", "hrnet32": "hrnet_w32"}


def official_layout(state, official_backbone, dtype=None):
    """Our state dict renamed to the official names, plus the official-only unused head."""
    official = state_dict_to_official(state)
    device = next(iter(state.values())).device
    prefix, shapes = UNUSED_HEADS[official_backbone]
    for name, shape in shapes.items():
        official[prefix + name] = torch.zeros(shape, device=device, dtype=dtype)
    return official


@pytest.mark.parametrize("official_backbone", list(OFFICIAL_LAYOUTS))
def test_official_layout_of_every_backbone_maps_onto_ours(official_backbone):
    cfg = load_config(
        None,
        [
            f"model.backbone={OUR_BACKBONES[official_backbone]}",
            "model.bpbreid.masks.preprocess=five_v",
            "model.bpbreid.masks.parts_num=5",
            "model.bpbreid.head=1x1",
        ],
    )
    with torch.device("meta"):  # names and shapes only
        ours = build_model(cfg, num_classes=751).state_dict()
    official = official_layout(ours, official_backbone)
    total, facts = OFFICIAL_LAYOUTS[official_backbone]
    assert len(official) == total
    for key, shape in facts.items():
        assert tuple(official[key].shape) == shape, key

    mapped, report = map_official_state_dict(official, ours, official_backbone)
    prefix, shapes = UNUSED_HEADS[official_backbone]
    assert report.ok and set(mapped) == set(ours)
    assert sorted(report.ignored) == sorted(prefix + name for name in shapes)
    assert report.ignored_heads == {prefix: len(shapes)}
    assert f"{prefix}* ({len(shapes)})" in report.summary()
    # Ignored by name and by backbone: another backbone's unused head is not official.
    other = "hrnet32" if official_backbone != "hrnet32" else "resnet50"
    _, wrong = map_official_state_dict(official, ours, other)
    assert not wrong.ok and sorted(wrong.unexpected) == sorted(report.ignored)


@pytest.mark.parametrize("official_backbone", ["resnet50", "resnet50_ibn_a"])
def test_official_resnet_checkpoint_loads_strictly(tmp_path, fake_yacs, official_backbone):
    tree = official_config_tree(
        backbone=official_backbone,
        masks={"dir": "pifpaf_maskrcnn_filtering", "preprocess": "five_v", "parts_num": 5},
    )
    cfg = config_from_official(tree)
    # The official IBN-a ResNet builds layer4 with stride 2 whatever last_stride says
    # (resnet_ibn_a.py:140-165 takes no last_stride); the official ResNet-50 honours it.
    assert cfg.model.bpbreid.last_stride == (2 if official_backbone == "resnet50_ibn_a" else 1)
    torch.manual_seed(0)
    original = build_model(cfg, NUM_CLASSES).eval()
    state = official_layout(original.state_dict(), official_backbone)
    state[f"{BACKBONE}classifier.weight"] = torch.randn(NUM_CLASSES, 2048)
    state[f"{BACKBONE}classifier.bias"] = torch.randn(NUM_CLASSES)
    path = tmp_path / f"official_{official_backbone}.pth.tar"
    torch.save({"state_dict": state, "epoch": 120, "config": fake_yacs(tree)}, path)

    model, _, report = load_official_checkpoint(path)  # strict by default
    assert report.ok and report.ignored == [
        f"{BACKBONE}classifier.weight",
        f"{BACKBONE}classifier.bias",
    ]
    assert "classifier.* (2)" in report.summary()
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        a, b = original(images), model(images)
    for name in ("bn_foreground", "parts", "global"):
        torch.testing.assert_close(a.embeddings[name], b.embeddings[name])
    torch.testing.assert_close(a.visibility, b.visibility)

    # Any other key without a counterpart still stops a strict load, and says why.
    state[f"{BACKBONE}fc.weight"] = torch.zeros(512, 2048)
    torch.save({"state_dict": state, "config": fake_yacs(tree)}, path)
    with pytest.raises(CheckpointError) as info:
        load_official_checkpoint(path)
    message = str(info.value)
    assert f"{BACKBONE}fc.weight" in message and "not a known unused official module" in message
    _, _, loose = load_official_checkpoint(path, strict=False)
    assert loose.unexpected == [f"{BACKBONE}fc.weight"] and len(loose.ignored) == 2


def test_unused_heads_are_listed_by_name_with_their_backbones():
    assert [(h.prefix, h.backbones) for h in UNUSED_OFFICIAL_HEADS] == [
        (f"{BACKBONE}classifier.", ("resnet50", "resnet50_ibn_a")),
        (f"{BACKBONE}cls_head.", ("hrnet32",)),
    ]
    assert unused_official_head(f"module.{BACKBONE}classifier.weight", "resnet50") is not None
    assert unused_official_head(f"{BACKBONE}classifier.weight", "hrnet32") is None
    assert unused_official_head(f"{BACKBONE}layer1.0.conv1.weight") is None
    assert unused_official_head("classifier.weight") is None  # only under the backbone


# --------------------------------------------------------------------------------------
# Downloads (never touch the network in tests)
# --------------------------------------------------------------------------------------


def test_download_offline_gives_a_clear_error(tmp_path, monkeypatch):
    import gdown

    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(gdown, "download_folder", offline)
    monkeypatch.setattr(gdown, "download", offline)
    with pytest.raises(DownloadError) as info:
        download_official_checkpoint("occluded_duke", tmp_path)
    message = str(info.value)
    assert OFFICIAL_MODELS_FOLDER_ID in message and OFFICIAL_CHECKPOINTS["occluded_duke"] in message
    assert "by hand" in message
    with pytest.raises(DownloadError, match="Available"):
        download_official_checkpoint("cuhk03", tmp_path)


def test_download_reuses_a_file_and_explains_missing_gdown(tmp_path, monkeypatch):
    existing = tmp_path / OFFICIAL_CHECKPOINTS["market1501"]
    existing.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "gdown", None)  # any import of gdown now fails
    assert download_official_checkpoint("market1501", tmp_path) == existing
    with pytest.raises(DownloadError, match="gdown"):
        download_official_checkpoint("dukemtmc", tmp_path)


def test_download_lists_the_folder_and_renames_when_complete(tmp_path, monkeypatch):
    import gdown

    name = OFFICIAL_CHECKPOINTS["p_dukemtmc"]
    listing = [types.SimpleNamespace(path=f"models/{name}", id="file-id")]
    monkeypatch.setattr(gdown, "download_folder", lambda **kwargs: listing)

    def fake_download(id, output, quiet, resume):
        assert id == "file-id" and output.endswith(".part")
        with open(output, "wb") as handle:
            handle.write(b"weights")
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    path = download_official_checkpoint("p_dukemtmc", tmp_path)
    assert path == tmp_path / name and path.read_bytes() == b"weights"
    assert not list(tmp_path.glob("*.part"))


# --------------------------------------------------------------------------------------
# Through the one checkpoint loader: library and commands
# --------------------------------------------------------------------------------------

# What turns the configuration mapped from official_config_tree() into tiny_config()'s model.
TINY_MODEL_OVERRIDES = [
    "model.backbone=resnet18_half",
    "model.bpbreid.dim_reduce_output=16",
    "model.bpbreid.foreground_pooling=gwap",
    "model.bpbreid.masks.preprocess=four",
    "model.bpbreid.masks.parts_num=4",
]


def test_any_checkpoint_loader_applies_overrides_before_building(tmp_path, fake_yacs):
    from bpbreid.engine.checkpoint import OFFICIAL, load_any_checkpoint

    torch.manual_seed(0)
    original = build_model(tiny_config(), NUM_CLASSES).eval()
    path = tmp_path / "official.pth"
    save_official(path, original, fake_yacs(official_config_tree()), prefix="module.")
    model, cfg, kind, state = load_any_checkpoint(path, "cpu", overrides=TINY_MODEL_OVERRIDES)
    assert kind == OFFICIAL and state is None
    assert cfg.model.backbone == "resnet18_half" and cfg.data.name == "occluded_duke"
    images = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(original(images).visibility, model(images).visibility)


def test_any_checkpoint_loader_refuses_non_finite_official_weights(tmp_path, fake_yacs):
    from bpbreid.engine.checkpoint import load_any_checkpoint

    model = build_model(tiny_config(), NUM_CLASSES).eval()
    name = next(k for k, v in model.state_dict().items() if k.endswith("running_var"))
    with torch.no_grad():
        model.state_dict()[name][0] = float("inf")
    path = tmp_path / "diverged.pth"
    save_official(path, model, fake_yacs(official_config_tree()))
    with pytest.raises(CheckpointError, match=r"non-finite weights.*\(1 inf\)"):
        load_any_checkpoint(path, "cpu", cfg=tiny_config())


def test_visualize_opens_an_official_checkpoint(tmp_path, fake_yacs, capsys):
    from bpbreid.__main__ import main

    torch.manual_seed(0)
    model = build_model(tiny_config(), NUM_CLASSES).eval()
    path = tmp_path / "run" / "bpbreid_official.pth"
    path.parent.mkdir()
    save_official(path, model, fake_yacs(official_config_tree()), prefix="module.")
    data = [
        f"data.root={tmp_path / 'data'}",
        "data.synthetic.preset=tiny",
        "data.extra_query_sets=[]",
        "data.height=32",
        "data.width=16",
        "train.batch_size=16",
    ]
    argv = ["visualize", "--checkpoint", str(path), "--config", "synthetic_cpu"]
    argv += ["model.bpbreid.head=1x1", "model.bpbreid.dim_reduce_output=16", *data]
    argv += ["--count", "2", "--topk", "3", "--device", "cpu", "--no-progress"]
    status = main(argv)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "rank-1" in out
    pngs = sorted((path.parent / "rankings").glob("*.png"))
    assert {p.name for p in pngs} >= {"cmc.png", "ap_histogram.png"} and len(pngs) == 4
