"""The official-recipe options do what the official code does, and the paper configs use them.

Each option is checked on cases small enough to work out by hand (docs/fidelity.md cites the
official lines): the erasing box and its fill, nearest-then-bilinear-then-argmax targets on a
tiny label, the per-epoch warm-up rates, and masked-average pooling. The last tests read the
table of docs/fidelity.md and hold every paper config to it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from bpbreid.config import Config, ConfigError, config_to_dict, load_config
from bpbreid.data.parsing import NUM_FIELDS
from bpbreid.data.pipeline import BatchAugment
from bpbreid.data.transforms import OFFICIAL_ERASE_FILL, build_transforms
from bpbreid.engine.optim import build_optimizer, build_schedule, build_scheduler
from bpbreid.losses import part_attention_loss, resize_part_targets
from bpbreid.model import build_model
from bpbreid.model.bpbreid import masked_average_pool, weighted_average_pool

FIDELITY = Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"
PAPER = [
    f"{d}_{b}"
    for d in ("market1501", "dukemtmc", "occluded_duke")
    for b in ("hrnet_w32", "resnet50", "resnet50_ibn_a")
]


def tiny_config(*overrides: str) -> Config:
    """One part ('one' grouping), 16x8 images: targets at 4x2."""
    return load_config(
        None,
        [
            "data.height=16",
            "data.width=8",
            "model.bpbreid.masks.preprocess=one",
            "model.bpbreid.masks.parts_num=1",
            *overrides,
        ],
    )


# --------------------------------------------------------------------------------------
# Defaults stay ours
# --------------------------------------------------------------------------------------


def test_the_dataclass_defaults_keep_our_choices() -> None:
    cfg = Config()
    assert cfg.data.erasing == "area_ratio"
    assert cfg.model.bpbreid.masks.targets == "area"
    assert cfg.model.bpbreid.foreground_pooling == "gwap"
    assert cfg.train.warmup_unit == "step"
    assert cfg.train.amp == "auto"


@pytest.mark.parametrize(
    "override",
    ["data.erasing=coarse", "model.bpbreid.masks.targets=nearest", "train.warmup_unit=iter"],
)
def test_unknown_option_names_are_refused(override: str) -> None:
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config(None, [override])


# --------------------------------------------------------------------------------------
# Erasing
# --------------------------------------------------------------------------------------


def test_official_erasing_box_and_fill() -> None:
    """One box per erased image, sides uniform integers in [int(.15 s), int(.65 s)] (both ends
    drawn), written after normalization with (0.485, 0.456, 0.406); labels 0 under it."""
    height, width = 40, 20
    cfg = load_config(
        None,
        [
            f"data.height={height}",
            f"data.width={width}",
            "data.transforms=[re]",
            "data.erasing=official",
            "model.bpbreid.masks.targets=official",
            "model.bpbreid.masks.preprocess=one",
            "model.bpbreid.masks.parts_num=1",
        ],
    )
    transform = build_transforms(cfg, train=True, seed=0)
    assert transform.steps[-1] == "random erasing (official)"  # after "normalize"
    assert transform.steps[-2] == "normalize"
    image = np.zeros((height, width, 3), np.uint8)  # normalized: -mean / std everywhere
    fields = np.ones((NUM_FIELDS, height, width), np.float32)  # the person fills the image
    fill = torch.tensor(OFFICIAL_ERASE_FILL).view(3, 1, 1)
    assert OFFICIAL_ERASE_FILL == (0.485, 0.456, 0.406)
    heights, widths, erased_count, draws = set(), set(), 0, 400
    for _ in range(draws):
        out, targets = transform(image, fields)
        box = (out == fill).all(dim=0)  # [H, W]
        if not box.any():
            assert torch.allclose(out[0], torch.full((height, width), -0.485 / 0.229))
            continue
        erased_count += 1
        rows, cols = box.any(dim=1).nonzero()[:, 0], box.any(dim=0).nonzero()[:, 0]
        h, w = len(rows), len(cols)
        assert box.sum() == h * w  # one rectangle
        assert rows[-1] - rows[0] + 1 == h and cols[-1] - cols[0] + 1 == w
        heights.add(h)
        widths.add(w)
        # Labels erased too: with official targets, every 4th pixel of the box is background.
        labels = targets.argmax(0)  # [H/4, W/4]
        sampled = box[::4, ::4]
        assert (labels[sampled] == 0).all() and (labels[~sampled] == 1).all()
    assert abs(erased_count / draws - 0.5) < 0.1  # p 0.5
    assert min(heights) == int(0.15 * height) and max(heights) == int(0.65 * height)  # 6, 26
    assert min(widths) == int(0.15 * width) and max(widths) == int(0.65 * width)  # 3, 13


def test_default_erasing_is_unchanged() -> None:
    cfg = load_config(None, ["data.transforms=[re]"])
    steps = build_transforms(cfg, train=True, seed=0).steps
    assert steps[-2:] == ("random erasing", "normalize")  # before normalization, mean fill


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------


def test_official_targets_nearest_then_background_rule() -> None:
    """A 2x2 label on a 16x8 image: nearest to 16x8 (8x4 blocks), one pixel in every 4x4 block
    (rows 0, 4, 8, 12; columns 0, 4), background = max < 0.5, softmax(15 x)."""
    cfg = tiny_config("model.bpbreid.masks.targets=official")
    fields = np.zeros((NUM_FIELDS, 2, 2), np.float32)
    fields[0] = [[0.9, 0.2], [0.6, 0.0]]
    image = np.zeros((16, 8, 3), np.uint8)
    _, targets = build_transforms(cfg, train=False)(image, fields)
    part = torch.tensor([[0.9, 0.2], [0.9, 0.2], [0.6, 0.0], [0.6, 0.0]])
    background = (part < 0.5).float()
    expected = torch.softmax(15 * torch.stack([background, part]), dim=0)
    torch.testing.assert_close(targets, expected)
    # e.g. the top-left pixel: part 0.9 against background 0.
    assert targets[1, 0, 0].item() == pytest.approx(1 / (1 + math.exp(-13.5)), rel=1e-6)
    # Ours ("area") blends the label bilinearly: not the same numbers.
    _, ours = build_transforms(tiny_config(), train=False)(image, fields)
    assert not torch.allclose(ours, expected)


def test_official_target_resize_is_bilinear_with_aligned_corners() -> None:
    """Rows [0.2, 0.9, 0.9, 0.7] of part probability, 4 -> 2 rows: aligned corners read rows 0
    and 3 (labels background, part); area averaging reads (0.55, 0.8) (part, part)."""
    part = torch.tensor([0.2, 0.9, 0.9, 0.7]).view(1, 1, 4, 1)
    targets = torch.cat([1 - part, part], dim=1)  # [1, 2, 4, 1]
    official = resize_part_targets(targets, (2, 1), "official")
    torch.testing.assert_close(official[0, 1, :, 0], torch.tensor([0.2, 0.7]))
    assert official.argmax(1).flatten().tolist() == [0, 1]
    area = resize_part_targets(targets, (2, 1), "area")
    assert area.argmax(1).flatten().tolist() == [1, 1]
    # The loss: cross-entropy (smoothing 0.1) against those argmax labels.
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.25]]).T.reshape(1, 2, 2, 1)
    expected = F.cross_entropy(logits, torch.tensor([[[0], [1]]]), label_smoothing=0.1)
    value = part_attention_loss(logits, targets, 0.1, targets="official")
    torch.testing.assert_close(value, expected)


# --------------------------------------------------------------------------------------
# Warm-up
# --------------------------------------------------------------------------------------


def official_factor(epoch: int) -> float:
    """The official warmup_multi_step factor at an epoch (10 epochs from 0.01, x0.1 at 40, 70)."""
    warmup = 1.0
    if epoch < 10:
        alpha = epoch / 10
        warmup = 0.01 * (1 - alpha) + alpha
    return warmup * 0.1 ** sum(epoch >= m for m in (40, 70))


def test_per_epoch_warmup_matches_the_official_rates() -> None:
    cfg = load_config(None, ["train.warmup_unit=epoch"])
    steps_per_epoch = 7
    schedule = build_schedule(cfg.train, steps_per_epoch)
    by_hand = {0: 0.01, 1: 0.109, 5: 0.505, 9: 0.901, 10: 1.0, 39: 1.0, 40: 0.1, 69: 0.1, 70: 0.01}
    for epoch, factor in by_hand.items():
        assert official_factor(epoch) == pytest.approx(factor)
        for step in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch):
            assert schedule(step) == pytest.approx(factor), (epoch, step)
    # Ours rises within the first epoch; the official rate holds until the epoch ends.
    per_step = build_schedule(load_config(None).train, steps_per_epoch)
    assert per_step(3) > per_step(0) == pytest.approx(0.01)


def test_per_epoch_warmup_through_the_optimizer() -> None:
    cfg = load_config(None, ["train.warmup_unit=epoch", "train.lr=1.0"])
    optimizer = build_optimizer(torch.nn.Linear(2, 2), cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, steps_per_epoch=3)
    rates = []
    for _ in range(12 * 3):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for epoch in range(12):
        assert rates[epoch * 3 : epoch * 3 + 3] == pytest.approx([official_factor(epoch)] * 3)


# --------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------


def test_masked_average_pool_is_the_mean_of_mask_times_feature() -> None:
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    mask = torch.tensor([[1.0, 0.5], [0.0, 0.0]]).view(1, 1, 2, 2)
    # (1 * 1 + 0.5 * 2) / 4 pixels = 0.5; GWAP divides by the mask sum 1.5 instead.
    assert masked_average_pool(features, mask).item() == pytest.approx(0.5)
    assert weighted_average_pool(features, mask).item() == pytest.approx(2.0 / 1.5)


def test_official_pooling_foreground_background_masked_parts_gwap() -> None:
    cfg = load_config("synthetic_cpu", ["model.bpbreid.foreground_pooling=masked_average"])
    model = build_model(cfg, num_classes=3).eval()
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(2, 5, 4, 2, generator=generator)
    masks = torch.rand(2, 2 + 4, 4, 2, generator=generator)  # foreground, background, 4 parts
    masks[1, 3] = 0  # an empty part: 0, as the official 1e-6 floor gives
    pooled = model._pool(features, masks)
    for n in range(2):
        for m in range(6):
            weighted = (masks[n, m, None] * features[n]).sum(dim=(1, 2))  # [C]
            if m < 2:
                expected = weighted / 8  # mean over the 4x2 pixels
            else:
                expected = weighted / masks[n, m].sum().clamp_min(1e-6)
            torch.testing.assert_close(pooled[n, m], expected)
    gwap = build_model(load_config("synthetic_cpu"), num_classes=3).eval()
    torch.testing.assert_close(gwap._pool(features, masks), weighted_average_pool(features, masks))


# --------------------------------------------------------------------------------------
# The tensor pipeline takes the paper configs' recipe
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["market1501_hrnet_w32", "occluded_duke_resnet50"])
def test_paper_configs_run_on_the_tensor_pipeline(name: str) -> None:
    """Official erasing and targets are part of the batch pipeline (tests/test_pipeline.py)."""
    cfg = load_config(name, ["data.pipeline=tensor"])
    assert cfg.data.erasing == "official" and cfg.model.bpbreid.masks.targets == "official"
    augment = BatchAugment(build_transforms(cfg, train=True, seed=0))
    assert augment.erase_mode == "official" and augment.targets_mode == "official"
    assert "erase p0.5 (official)" in repr(augment) and "official targets" in repr(augment)


# --------------------------------------------------------------------------------------
# docs/fidelity.md against the paper configs
# --------------------------------------------------------------------------------------

VALUE = re.compile(r"`([^`]*)`(?:\s*\(([^)]*)\))?")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def fidelity_rows() -> list[dict[str, str]]:
    """The settings table of docs/fidelity.md: ``{setting, official, where, ours, why}``."""
    rows = []
    for line in FIDELITY.read_text(encoding="utf-8").splitlines():
        cells = _cells(line)
        if len(cells) != 5 or not re.fullmatch(r"`[a-z_.0-9]+`", cells[0]):
            continue
        rows.append(dict(zip(("setting", "official", "where", "ours", "why"), cells, strict=True)))
    return rows


def value_for(cell: str, config_name: str) -> Any:
    """The YAML value a cell gives a config: the first `value` whose (names) match, or the
    first without names."""
    for match in VALUE.finditer(cell):
        names = match.group(2)
        if names is None or any(n.strip() in config_name for n in names.split(",")):
            raw = match.group(1)
            loaded = yaml.safe_load(raw)
            # YAML 1.1 reads `off` as false; the table means the name (train.amp: off).
            return raw if isinstance(loaded, bool) and raw not in ("true", "false") else loaded
    raise AssertionError(f"no value for {config_name} in '{cell}'")


def lookup(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def test_the_table_covers_the_recipe() -> None:
    settings = {row["setting"].strip("`") for row in fidelity_rows()}
    expected = {
        "data.erasing",
        "model.bpbreid.masks.targets",
        "model.bpbreid.foreground_pooling",
        "train.warmup_unit",
        "train.amp",
        "train.lr",
        "loss.pixel_weight",
        "data.height",
    }
    assert expected <= settings
    for row in fidelity_rows():  # every citation names a place
        assert re.search(r":\d+|none", row["where"]), row


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_hold_the_table(name: str) -> None:
    tree = config_to_dict(load_config(name))
    for row in fidelity_rows():
        key = row["setting"].strip("`")
        ours, official = value_for(row["ours"], name), value_for(row["official"], name)
        assert lookup(tree, key) == ours, f"{name}: {key} is {lookup(tree, key)!r}, table {ours!r}"
        if row["why"] in ("—", "-", ""):
            assert ours == official, f"{key}: differs from the official value without a reason"


def test_option_names_match_the_implementations() -> None:
    from bpbreid.config import SETTING_CHOICES
    from bpbreid.data.transforms import ERASING_MODES, TARGET_MODES
    from bpbreid.engine.optim import WARMUP_UNITS
    from bpbreid.losses import PIXEL_TARGET_MODES

    assert set(SETTING_CHOICES["data.erasing"].values) == set(ERASING_MODES)
    targets = set(SETTING_CHOICES["model.bpbreid.masks.targets"].values)
    assert targets == set(TARGET_MODES) == set(PIXEL_TARGET_MODES)
    assert set(SETTING_CHOICES["train.warmup_unit"].values) == set(WARMUP_UNITS)
