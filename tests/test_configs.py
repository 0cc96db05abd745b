"""The bundled configs: they load, match the paper's settings, and build their models."""

from __future__ import annotations

import re

import pytest
import torch

from bpbreid.config import CONFIGS_DIR, config_diff, load_config
from bpbreid.model import build_model

DATASETS = ("market1501", "dukemtmc", "occluded_duke")
BACKBONES = ("resnet50", "resnet50_ibn_a", "hrnet_w32")
PAPER = [f"{d}_{b}" for d in DATASETS for b in BACKBONES]
SYNTHETIC = ["synthetic_cpu", "synthetic_gpu"]
# The real datasets shrunk to a 2-core CPU (parsing-PNG labels, random initialisation).
REAL_CPU = ["market1501_cpu", "occluded_duke_cpu"]
ALL = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))
# Settings with no counterpart in the paper (where a run writes, the synthetic set itself).
NO_PAPER_VALUE = ("name", "train.output_dir", "data.extra_query_sets", "data.synthetic.")


def test_the_bundled_configs_are_all_there():
    assert sorted(PAPER + SYNTHETIC + REAL_CPU) == ALL


@pytest.mark.parametrize("name", ALL)
def test_config_loads_by_name_and_builds_its_model(name):
    cfg = load_config(name, ["model.pretrained=false"])  # no download in tests
    assert cfg.name == name
    assert cfg.train.batch_size == 64 and cfg.train.num_instances == 4  # 16 x 4, as the paper
    parts = cfg.model.bpbreid.masks.parts_num
    model = build_model(cfg, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) > 0
    if name == "synthetic_cpu":  # small enough to run: check the output shapes
        with torch.no_grad():
            out = model.eval()(torch.randn(2, 3, cfg.data.height, cfg.data.width))
        assert tuple(out.parts_masks.shape[:2]) == (2, parts + 1)
        assert tuple(out.embeddings["parts"].shape[:2]) == (2, parts)


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_follow_the_official_settings(name):
    cfg = load_config(name)
    dataset = next(d for d in DATASETS if name.startswith(d))
    train, masks, weights = cfg.train, cfg.model.bpbreid.masks, cfg.loss.weights
    assert cfg.data.name == dataset
    assert cfg.data.height == (384 if "hrnet" in name else 256) and cfg.data.width == 128
    assert (masks.preprocess, masks.parts_num) == (
        ("eight", 8) if dataset == "occluded_duke" else ("five_v", 5)
    )
    assert cfg.data.transforms == ["rc", "re"]
    assert (train.optim, train.lr, train.weight_decay) == ("adam", 3.5e-4, 5e-4)
    assert (train.max_epoch, train.stepsize, train.gamma) == (120, [40, 70], 0.1)
    assert train.lr_scheduler == "multi_step" and train.warmup_epochs > 0
    assert train.max_steps is None and train.validation_ids == 0
    assert cfg.loss.pixel_weight == 0.35 and not cfg.loss.mask_filtering_training
    assert cfg.model.bpbreid.test_embeddings == ["bn_foreground", "parts"]
    assert cfg.model.bpbreid.dim_reduce_output == 512 and cfg.model.pretrained
    assert {k: (w.id, w.tr) for k, w in weights.items()} == {
        "global": (1.0, 0.0),
        "foreground": (1.0, 0.0 if dataset == "occluded_duke" else 1.0),
        "concat_parts": (1.0, 0.0),
        "parts": (0.0, 1.0),
    }


def _yaml_comments(text: str) -> dict[str, str]:
    """Dotted key -> the comment on its line, from a block-style YAML file."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][\w]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [key])
        comment = rest.split("#", 1)[1] if "#" in rest else ""
        out[dotted] = comment
        if rest.split("#", 1)[0].strip() == "":
            stack.append((indent, key))
    return out


@pytest.mark.parametrize("name", SYNTHETIC + REAL_CPU)
def test_every_change_from_the_paper_carries_the_paper_value(name):
    paper = load_config("occluded_duke_hrnet_w32")
    cfg = load_config(name)
    comments = _yaml_comments((CONFIGS_DIR / f"{name}.yaml").read_text())
    changed = [
        key
        for key in config_diff(cfg, paper)
        if not any(key == p or key.startswith(p) for p in NO_PAPER_VALUE)
    ]
    assert "model.backbone" in changed and "loss.pixel_weight" in changed
    missing = [key for key in changed if "paper" not in comments.get(key, "")]
    assert not missing, f"{name}.yaml: no 'paper: ...' comment beside {missing}"


def test_cpu_config_is_the_documented_shrink():
    cfg = load_config("synthetic_cpu")
    bp = cfg.model.bpbreid
    assert (cfg.data.height, cfg.data.width) == (64, 32)
    assert cfg.model.backbone == "resnet18_half" and bp.last_stride == 1
    assert (bp.masks.preprocess, bp.masks.parts_num, bp.head) == ("four", 4, "3x3_stride4")
    assert cfg.loss.pixel_weight == 20.0 and cfg.loss.triplet_soft_margin
    assert cfg.train.max_steps == 1500  # the budget the README's demo table was measured with
    assert (cfg.train.lr, cfg.train.lr_scheduler) == (1e-3, "cosine")
    assert cfg.data.name == "synthetic" and cfg.data.synthetic.preset == "default"
    assert cfg.data.workers <= 1 and cfg.train.threads is None  # the thread policy decides
