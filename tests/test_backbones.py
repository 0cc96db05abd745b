"""Backbones: shapes, strides, IBN-a, registry errors and pretrained weights (never downloaded)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from bpbreid.config import ConfigError
from bpbreid.errors import CheckpointError
from bpbreid.model import backbones
from bpbreid.model.backbones import (
    BACKBONES,
    InstanceBatchNorm,
    SmallResNet,
    build_backbone,
)

EXPECTED_CHANNELS = {
    "resnet50": 2048,
    "resnet50_ibn_a": 2048,
    "hrnet_w32": 1920,
    "resnet18": 512,
    "resnet18_half": 128,
}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_shapes_match_declared_channels_and_strides(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    height, width = 64, 32
    with torch.no_grad():
        feature_map, stages = backbone(torch.randn(2, 3, height, width))
    assert backbone.out_channels == EXPECTED_CHANNELS[name]
    assert feature_map.shape == (
        2,
        backbone.out_channels,
        height // backbone.stride,
        width // backbone.stride,
    )
    assert set(stages) == set(backbone.stage_info)
    for stage, (channels, stride) in backbone.stage_info.items():
        assert stages[stage].shape == (2, channels, height // stride, width // stride)


def test_last_stride_one_keeps_resnet50_at_stride_16() -> None:
    backbone = build_backbone("resnet50", last_stride=1)
    assert backbone.stride == 16
    backbone2 = build_backbone("resnet50", last_stride=2)
    with torch.no_grad():
        feature_map, _ = backbone2.eval()(torch.randn(1, 3, 64, 32))
    assert feature_map.shape[-2:] == (2, 1)  # stride 32 with the ImageNet last stride


def test_ibn_a_normalizes_half_the_channels_per_instance_in_layers_1_to_3() -> None:
    backbone = build_backbone("resnet50_ibn_a")
    for name in ("layer1", "layer2", "layer3"):
        for block in getattr(backbone, name):
            assert isinstance(block.bn1, InstanceBatchNorm)
    for block in backbone.layer4:
        assert isinstance(block.bn1, torch.nn.BatchNorm2d)

    ibn = InstanceBatchNorm(8).train()
    x = torch.randn(3, 8, 5, 4) * 4 + torch.arange(3.0).view(3, 1, 1, 1) * 10
    y = ibn(x)
    per_instance_mean = y.mean(dim=(2, 3))  # [N, C]
    # InstanceNorm half: every image and channel is centred on its own.
    assert torch.allclose(per_instance_mean[:, :4], torch.zeros(3, 4), atol=1e-5)
    # BatchNorm half: centred over the batch only, so images keep their offsets.
    assert per_instance_mean[:, 4:].abs().max() > 1.0
    assert torch.allclose(per_instance_mean[:, 4:].mean(dim=0), torch.zeros(4), atol=1e-5)


def test_small_resnet_has_no_max_pool_and_stride_4_layer2() -> None:
    backbone = SmallResNet()
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in backbone.modules())
    assert backbone.stage_info["layer2"][1] == 4
    assert sum(p.numel() for p in backbone.parameters()) < 1_000_000


def test_unknown_backbone_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        build_backbone("resnet51")
    message = str(err.value)
    assert "resnet51" in message
    for name in BACKBONES:
        assert name in message


def _offline(*args, **kwargs):
    raise urllib.error.URLError("no network")


@pytest.mark.parametrize("name", ["resnet50", "resnet50_ibn_a", "resnet18"])
def test_pretrained_offline_raises_checkpoint_error(monkeypatch, name: str) -> None:
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    with pytest.raises(CheckpointError) as err:
        build_backbone(name, pretrained=True)
    assert "model.pretrained_path" in str(err.value)


def test_hrnet_pretrained_offline_raises_checkpoint_error(monkeypatch) -> None:
    def fake_timm_hrnet(pretrained: bool):
        if pretrained:
            raise OSError("cannot reach the hub")
        raise AssertionError("the backbone itself is built by build_backbone")

    monkeypatch.setattr(backbones, "_timm_hrnet", fake_timm_hrnet)
    with pytest.raises(CheckpointError, match="model.pretrained_path"):
        backbones.download_imagenet_weights("hrnet_w32")


def test_backbone_without_public_weights_says_so() -> None:
    with pytest.raises(CheckpointError, match="no public ImageNet weights"):
        build_backbone("resnet18_half", pretrained=True)


def test_pretrained_path_loads_wrapped_and_prefixed_state_dict(tmp_path) -> None:
    torch.manual_seed(1)
    source = build_backbone("resnet18_half")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    path = tmp_path / "weights.pth"
    torch.save(wrapped, path)
    torch.manual_seed(2)
    loaded = build_backbone("resnet18_half", pretrained=True, pretrained_path=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_torchvision_file_loads_and_reports_the_classifier(tmp_path) -> None:
    torch.manual_seed(3)
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet18")
    report = backbones.load_matching_weights(
        backbone, backbones.read_state_dict(path), source=str(path)
    )
    assert report["unexpected"] == ["fc.bias", "fc.weight"]
    assert report["missing"] == []
    assert torch.equal(backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_bad_pretrained_files_raise_checkpoint_error(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        build_backbone("resnet18_half", pretrained=True, pretrained_path=tmp_path / "missing.pth")
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"something.else": torch.zeros(3)}, unrelated)
    with pytest.raises(CheckpointError, match="match"):
        build_backbone("resnet18_half", pretrained=True, pretrained_path=unrelated)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        build_backbone("resnet18_half", pretrained=True, pretrained_path=corrupt)
