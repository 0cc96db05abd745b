"""Backbones: images ``[N, 3, H, W]`` -> a feature map ``[N, C, Hf, Wf]`` and earlier stages.

Every backbone returns ``(feature_map, stages)`` where ``stages`` maps a stage name
(``"layer1"``, ``"layer2"``...) to its feature map, so that a part head can fuse a
high-resolution stage with the semantic last map (the ``3x3_stride4`` head). Each one
exposes:

* ``out_channels``: C of the last map;
* ``stride``: input size / last-map size (e.g. 16 for resnet50 with last stride 1);
* ``stage_info``: ``{stage name: (channels, stride)}`` of the maps in ``stages``.

Registered names (:data:`BACKBONES`):

======================  ==========  ======  =======================================================
name                    C           stride  notes
======================  ==========  ======  =======================================================
``resnet50``            2048        16      torchvision ResNet-50, last stride 1 (256x128 -> 16x8)
``resnet50_ibn_a``      2048        16      IBN-Net-a ResNet-50, last stride 1
``hrnet_w32``           1920        4       timm HRNet-W32, 4 branches upsampled + concatenated
``resnet18``            512         16      torchvision ResNet-18, last stride 1
``resnet18_half``       128         8       CPU backbone: BasicBlocks 16-32-64-128, no max-pool
======================  ==========  ======  =======================================================

ImageNet weights are loaded only on request (``pretrained=True``): from a local file when
``pretrained_path`` is given, else by a download through torchvision/timm; offline, the
download fails with a :class:`~bpbreid.errors.CheckpointError` that says how to get the
file and point at it (``model.pretrained_path=...``). Nothing downloads by default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bpbreid.config import ConfigError
from bpbreid.errors import CheckpointError
from bpbreid.serialization import check_not_torchscript

log = logging.getLogger(__name__)

StageInfo = dict[str, tuple[int, int]]

# Official ImageNet weights per backbone (downloaded only when asked for).
TORCHVISION_RESNET50_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
TORCHVISION_RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
# Reference: IBN-Net (Pan et al., ECCV 2018), github.com/XingangPan/IBN-Net release v1.0.
IBN_A_RESNET50_URL = (
    "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth"
)


class Backbone(nn.Module):
    """Base class: ``forward(images) -> (feature_map [N, C, Hf, Wf], {stage: [N, Cs, Hs, Ws]})``."""

    out_channels: int
    stride: int
    stage_info: StageInfo

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:  # pragma: no cover
        raise NotImplementedError


# --------------------------------------------------------------------------------------
# ResNet family (torchvision layout, so torchvision/IBN-Net state dicts load by name)
# --------------------------------------------------------------------------------------


class ResNetBackbone(Backbone):
    """A torchvision-style ResNet trunk (no classifier) with a configurable last stride.

    The modules keep torchvision's names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``)
    so ImageNet state dicts load without renaming (their ``fc.*`` keys are reported as
    unexpected and ignored).

    Args:
        net: a torchvision ``ResNet`` (or a compatible trunk) whose ``fc`` is dropped.
        last_stride: stride of ``layer4`` (1 keeps 256x128 -> 16x8 for re-id; ImageNet: 2).

    Reference: Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-ID"
    (CVPRW 2019): last stride 1.
    """

    def __init__(self, net: nn.Module, last_stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu
        self.maxpool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        _set_first_block_stride(self.layer4, last_stride)
        channels = [_layer_out_channels(layer) for layer in (self.layer1, self.layer2, self.layer3)]
        self.out_channels = _layer_out_channels(self.layer4)
        self.stride = 16 * last_stride
        self.stage_info = {
            "layer1": (channels[0], 4),
            "layer2": (channels[1], 8),
            "layer3": (channels[2], 16),
        }

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        layer1 = self.layer1(x)
        layer2 = self.layer2(layer1)
        layer3 = self.layer3(layer2)
        return self.layer4(layer3), {"layer1": layer1, "layer2": layer2, "layer3": layer3}


def _set_first_block_stride(layer: nn.Sequential, stride: int) -> None:
    """Set the stride of a ResNet stage (its first block's strided conv and shortcut)."""
    block = layer[0]
    strided = block.conv2 if hasattr(block, "conv3") else block.conv1  # Bottleneck vs Basic
    strided.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


def _layer_out_channels(layer: nn.Sequential) -> int:
    block = layer[-1]
    last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
    return int(last_bn.num_features)


def _torchvision_resnet(depth: int, last_stride: int) -> ResNetBackbone:
    import torchvision

    net = torchvision.models.resnet50() if depth == 50 else torchvision.models.resnet18()
    return ResNetBackbone(net, last_stride)


# --------------------------------------------------------------------------------------
# IBN-Net-a ResNet-50
# --------------------------------------------------------------------------------------


class InstanceBatchNorm(nn.Module):
    """IBN-a normalization: InstanceNorm on the first half of the channels, BatchNorm on the rest.

    Instance normalization removes per-image appearance (colour, contrast) from the
    shallow features, which helps across cameras; batch normalization on the other half
    keeps the discriminative content. Submodules are named ``IN`` and ``BN`` as in the
    official IBN-Net weights so those files load by name.

    Reference: Pan et al., "Two at Once: Enhancing Learning and Generalization Capacities
    via IBN-Net" (ECCV 2018), IBN-a block.
    """

    def __init__(self, channels: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(channels * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: Tensor) -> Tensor:
        first, second = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(first.contiguous()), self.BN(second.contiguous())], dim=1)


class IBNBottleneck(nn.Module):
    """ResNet bottleneck (1x1 -> 3x3 -> 1x1, expansion 4) with optional IBN-a after the first conv."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        ibn: bool = False,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1: nn.Module = InstanceBatchNorm(planes) if ibn else nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class _IBNResNetTrunk(nn.Module):
    """ResNet-50 trunk with IBN-a in the bottlenecks of layer1-3 (layer4 keeps plain BN)."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self._in = 64
        self.layer1 = self._make_layer(64, layers[0], stride=1, ibn=True)
        self.layer2 = self._make_layer(128, layers[1], stride=2, ibn=True)
        self.layer3 = self._make_layer(256, layers[2], stride=2, ibn=True)
        # IBN-a leaves the last stage plain: deep features must stay discriminative.
        self.layer4 = self._make_layer(512, layers[3], stride=2, ibn=False)
        _init_conv_bn(self)

    def _make_layer(self, planes: int, blocks: int, stride: int, ibn: bool) -> nn.Sequential:
        out_channels = planes * IBNBottleneck.expansion
        downsample = None
        if stride != 1 or self._in != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self._in, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        modules = [IBNBottleneck(self._in, planes, stride, ibn, downsample)]
        self._in = out_channels
        modules += [IBNBottleneck(self._in, planes, 1, ibn) for _ in range(1, blocks)]
        return nn.Sequential(*modules)


# --------------------------------------------------------------------------------------
# Small CPU backbone
# --------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a residual shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class SmallResNet(Backbone):
    """A narrow ResNet-18 for CPUs and tiny images: 3x3 stem at stride 2, no max-pool.

    With ``widths=(16, 32, 64, 128)`` and ``last_stride=1`` (the ``resnet18_half``
    default) a 64x32 image gives an 8x4 last map (stride 8) and a 16x8 ``layer2`` map
    (stride 4) for the stride-4 part head; about 0.7M parameters. Dropping the max-pool
    keeps enough resolution on 64x32 inputs for thin parts (feet, head) to exist on the
    part maps. The widths are those of the CPU configuration the course was calibrated
    with (a quarter of torchvision's 64-128-256-512): on one core of a 2-core CPU, a training
    step of 64 images at 64x32 takes about 0.16 s (1,500 steps in about 5 minutes with data
    loading).

    Args:
        widths: channels of layer1..layer4.
        blocks: basic blocks per layer (ResNet-18: 2, 2, 2, 2).
        last_stride: stride of layer4 (1 keeps the 8x4 map at 64x32).
    """

    def __init__(
        self,
        widths: tuple[int, int, int, int] = (16, 32, 64, 128),
        blocks: tuple[int, int, int, int] = (2, 2, 2, 2),
        last_stride: int = 1,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        strides = (1, 2, 2, last_stride)
        layers = []
        in_channels = widths[0]
        for width, count, stride in zip(widths, blocks, strides):
            stage = [BasicBlock(in_channels, width, stride)]
            stage += [BasicBlock(width, width) for _ in range(1, count)]
            layers.append(nn.Sequential(*stage))
            in_channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.out_channels = widths[3]
        self.stride = 8 * last_stride
        self.stage_info = {
            "layer1": (widths[0], 2),
            "layer2": (widths[1], 4),
            "layer3": (widths[2], 8),
        }
        _init_conv_bn(self)

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        layer1 = self.layer1(self.stem(images))
        layer2 = self.layer2(layer1)
        layer3 = self.layer3(layer2)
        return self.layer4(layer3), {"layer1": layer1, "layer2": layer2, "layer3": layer3}


def _init_conv_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------
# HRNet-W32 (timm)
# --------------------------------------------------------------------------------------


class HRNetBackbone(Backbone):
    """HRNet-W32 from timm: its 4 branch outputs upsampled to stride 4 and concatenated.

    timm's ``hrnet_w32`` with ``features_only=True`` (default ``feature_location='incre'``)
    returns 5 maps: index 0 is the stem (64 ch, stride 2) and indices 1-4 are the
    incre-module outputs of the 4 branches (128, 256, 512, 1024 ch at strides 4, 8, 16,
    32). We take indices 1-4, upsample them bilinearly to the stride-4 size and
    concatenate: 1920 channels at stride 4 (384x128 -> 96x32), as the official BPBReID
    HRNet-W32. The stem map is exposed as stage ``"stem"``.

    Reference: Sun et al., "Deep High-Resolution Representation Learning" (CVPR 2019);
    BPBReID (Somers et al., WACV 2023) official ``hrnet32`` backbone.
    """

    def __init__(self, timm_model: nn.Module | None = None) -> None:
        super().__init__()
        if timm_model is None:
            timm_model = _timm_hrnet(pretrained=False)
        self.body = timm_model
        channels = list(self.body.feature_info.channels())
        self.out_channels = int(sum(channels[1:]))
        self.stride = 4
        self.stage_info = {"stem": (channels[0], 2)}

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        stem, *branches = self.body(images)
        size = branches[0].shape[-2:]
        # align_corners=True as the official HRNet-W32 model, so its checkpoints match.
        upsampled = [branches[0]] + [
            F.interpolate(b, size=size, mode="bilinear", align_corners=True) for b in branches[1:]
        ]
        return torch.cat(upsampled, dim=1), {"stem": stem}


def _timm_hrnet(pretrained: bool) -> nn.Module:
    import timm

    return timm.create_model(
        "hrnet_w32", pretrained=pretrained, features_only=True, out_indices=(0, 1, 2, 3, 4)
    )


# --------------------------------------------------------------------------------------
# Registry and pretrained weights
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a backbone and where its ImageNet weights come from."""

    build: Callable[[int], Backbone]  # last_stride -> backbone
    weights_url: str | None  # None: no public ImageNet weights (or timm handles them)
    description: str


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(
        lambda s: _torchvision_resnet(50, s),
        TORCHVISION_RESNET50_URL,
        "torchvision ResNet-50, last stride 1 (2048 ch, stride 16)",
    ),
    "resnet50_ibn_a": BackboneSpec(
        lambda s: ResNetBackbone(_IBNResNetTrunk(), s),
        IBN_A_RESNET50_URL,
        "ResNet-50 with IBN-a blocks in layer1-3 (2048 ch, stride 16)",
    ),
    "hrnet_w32": BackboneSpec(
        lambda s: HRNetBackbone(),
        None,
        "timm HRNet-W32, 4 branches concatenated at stride 4 (1920 ch)",
    ),
    "resnet18": BackboneSpec(
        lambda s: _torchvision_resnet(18, s),
        TORCHVISION_RESNET18_URL,
        "torchvision ResNet-18, last stride 1 (512 ch, stride 16)",
    ),
    "resnet18_half": BackboneSpec(
        lambda s: SmallResNet(last_stride=s),
        None,
        "CPU backbone: ResNet-18 blocks at 16-32-64-128, no max-pool (128 ch, stride 8)",
    ),
}


def build_backbone(
    name: str,
    pretrained: bool = False,
    pretrained_path: str | Path | None = None,
    last_stride: int = 1,
) -> Backbone:
    """Build a registered backbone, randomly initialized unless ``pretrained``.

    Args:
        name: a key of :data:`BACKBONES`.
        pretrained: load ImageNet weights (from ``pretrained_path`` or a download).
        pretrained_path: a local weights file (a state dict, or a dict with ``state_dict``).
        last_stride: stride of the last ResNet stage (ignored by HRNet).

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
        CheckpointError: weights asked for but the file is missing/unusable or the
            download failed.
    """
    if name not in BACKBONES:
        raise ConfigError(
            f"Unknown backbone '{name}' (config key model.backbone). "
            f"Valid backbones: {', '.join(BACKBONES)}."
        )
    if last_stride not in (1, 2):
        raise ConfigError(f"model.bpbreid.last_stride must be 1 or 2, got {last_stride}.")
    backbone = BACKBONES[name].build(last_stride)
    if pretrained:
        if pretrained_path:
            state_dict = read_state_dict(pretrained_path)
            source = str(pretrained_path)
        else:
            state_dict = download_imagenet_weights(name)
            source = f"ImageNet weights of {name}"
        target = backbone.body if isinstance(backbone, HRNetBackbone) else backbone
        load_matching_weights(target, state_dict, source)
    return backbone


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a weights file safely (``weights_only=True``) and return its state dict.

    Accepts a plain state dict or a dict holding one under ``state_dict``/``model``;
    strips a ``module.`` prefix (DataParallel/DDP checkpoints).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(
            f"Pretrained weights file '{p}' (model.pretrained_path) does not exist. "
            "Point model.pretrained_path at a downloaded .pth file, or set "
            "model.pretrained=false to start from random weights."
        )
    check_not_torchscript(p)
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or pickled objects beyond plain tensors
        raise CheckpointError(
            f"Could not read weights from '{p}': {exc}. The file must be a PyTorch state dict "
            "(saved with torch.save(model.state_dict(), path))."
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict):
        raise CheckpointError(f"'{p}' does not hold a state dict (found {type(data).__name__}).")
    return {k.removeprefix("module."): v for k, v in data.items() if isinstance(v, Tensor)}


def download_imagenet_weights(name: str) -> dict[str, Tensor]:
    """Download (or read from the torch/timm cache) the ImageNet weights of a backbone.

    Raises:
        CheckpointError: no public weights for ``name``, or the download failed (offline).
    """
    spec = BACKBONES[name]
    if name == "hrnet_w32":
        where = "timm's 'hrnet_w32' weights from the Hugging Face hub"
        fetch: Callable[[], dict[str, Tensor]] = lambda: _timm_hrnet(pretrained=True).state_dict()  # noqa: E731
    elif spec.weights_url is not None:
        url = spec.weights_url
        where = url
        fetch = lambda: torch.hub.load_state_dict_from_url(url, map_location="cpu")  # noqa: E731
    else:
        raise CheckpointError(
            f"Backbone '{name}' has no public ImageNet weights: set model.pretrained=false "
            "(it is meant to be trained from scratch) or give your own file with "
            "model.pretrained_path=/path/to/weights.pth."
        )
    try:
        return fetch()
    except Exception as exc:  # offline, moved file, proxy: all end the same way for the user
        raise CheckpointError(
            f"Could not download the ImageNet weights of backbone '{name}' ({where}): "
            f"{type(exc).__name__}: {exc}. Either run once with internet access (the file is "
            "cached), or download it yourself and point at it with "
            "model.pretrained_path=/path/to/weights.pth, or set model.pretrained=false to "
            "start from random weights."
        ) from exc


def load_matching_weights(
    module: nn.Module, state_dict: dict[str, Tensor], source: str
) -> dict[str, list[str]]:
    """Load the entries of ``state_dict`` whose name and shape match ``module``'s.

    Missing, unexpected and shape-mismatched keys are logged (a classifier head in an
    ImageNet file is expected to be unexpected) and returned.

    Raises:
        CheckpointError: not a single tensor matched (the file is for another network).
    """
    own = module.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    report = {
        "missing": sorted(k for k in own if k not in matched),
        "unexpected": sorted(k for k in state_dict if k not in own),
        "mismatched": sorted(
            k for k, v in state_dict.items() if k in own and own[k].shape != v.shape
        ),
    }
    if not matched:
        raise CheckpointError(
            f"None of the {len(state_dict)} tensors in {source} match the backbone "
            f"({type(module).__name__}); is it the right file for this model.backbone?"
        )
    module.load_state_dict(matched, strict=False)
    log.info(
        "Loaded %d/%d backbone tensors from %s (missing %d, unexpected %d, shape-mismatched %d)",
        len(matched),
        len(own),
        source,
        len(report["missing"]),
        len(report["unexpected"]),
        len(report["mismatched"]),
    )
    for kind, keys in report.items():
        if keys:
            log.info("  %s: %s%s", kind, ", ".join(keys[:8]), " ..." if len(keys) > 8 else "")
    return report
