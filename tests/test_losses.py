"""Tests of bpbreid.losses: hand-computed values, a loop reference, gradients, NaN safety, GiLt."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bpbreid.config import (
    Config,
    ConfigError,
    EmbeddingLossWeights,
    LossConfig,
    load_config,
    save_config,
)
from bpbreid.losses import (
    LOSS_PRESETS,
    GiLtLoss,
    MissingTrainingLabelsError,
    PartAveragedTripletLoss,
    batch_hard_triplet_loss,
    identity_loss,
    loss_weights_table,
    mine_part_triplets,
    pairwise_euclidean,
    part_attention_loss,
    resize_part_targets,
    resolve_loss_weights,
)
from bpbreid.model.bpbreid import BPBReIDOutput

# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def reference_part_triplet(x, labels, visibility=None, margin=0.3, mode="average", soft=False):
    """Loop-by-loop part triplet loss, written independently of the vectorized one."""
    n, k, _ = x.shape
    vis = torch.ones(n, k) if visibility is None else visibility.double()

    def dist(i, j):
        values, weights = [], []
        for p in range(k):
            w = math.sqrt(float(vis[i, p]) * float(vis[j, p]))
            if w > 0:
                values.append(float(torch.linalg.vector_norm(x[i, p] - x[j, p])))
                weights.append(w)
        if not values:
            return None
        if mode == "average":
            return sum(w * v for w, v in zip(weights, values)) / sum(weights)
        return max(values) if mode == "max" else min(values)

    losses, trivial = [], 0
    for a in range(n):
        pos = [dist(a, j) for j in range(n) if j != a and labels[j] == labels[a]]
        neg = [dist(a, j) for j in range(n) if labels[j] != labels[a]]
        pos = [d for d in pos if d is not None]
        neg = [d for d in neg if d is not None]
        if not pos or not neg:
            continue
        d_ap, d_an = max(pos), min(neg)
        losses.append(math.log1p(math.exp(d_ap - d_an)) if soft else max(0.0, d_ap - d_an + margin))
        trivial += d_an - d_ap >= margin
    loss = sum(losses) / len(losses) if losses else 0.0
    return loss, len(losses) / n, (trivial / len(losses) if losses else 0.0)


def make_output(n=8, k=3, d=6, c=5, h=4, w=2, visibility=None, seed=0, parts=True):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    if not parts:
        return BPBReIDOutput(
            embeddings={"global": rand(n, d), "bn_global": rand(n, d)},
            visibility=None,
            parts_masks=None,
            pixel_logits=None,
            id_logits={"global": rand(n, c)},
            feature_map=rand(n, 4, h, w),
        )
    names = ("global", "foreground", "background", "concat_parts")
    embeddings = {name: rand(n, d if name != "concat_parts" else k * d) for name in names}
    embeddings["parts"] = rand(n, k, d)
    embeddings.update({f"bn_{name}": rand(*v.shape) for name, v in list(embeddings.items())})
    id_logits = {name: rand(n, c) for name in names}
    id_logits["parts"] = rand(n, k, c)
    pixel_logits = rand(n, k + 1, h, w)
    if visibility is None:
        visibility = torch.ones(n, k, dtype=torch.bool)
    return BPBReIDOutput(
        embeddings=embeddings,
        visibility=visibility,
        parts_masks=pixel_logits.softmax(1),
        pixel_logits=pixel_logits,
        id_logits=id_logits,
        feature_map=rand(n, 4, h, w),
    )


def random_targets(n, k, h, w, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, k + 1, h, w, generator=g, dtype=torch.float64).softmax(1)


LABELS8 = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


# --------------------------------------------------------------------------------------
# Identity loss
# --------------------------------------------------------------------------------------


def test_identity_loss_hand_computed_with_label_smoothing():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    log_z = math.log(math.exp(2.0) + math.exp(0.0) + math.exp(-1.0))
    log_p = [2.0 - log_z, 0.0 - log_z, -1.0 - log_z]
    eps = 0.1
    target = [1 - eps + eps / 3, eps / 3, eps / 3]
    expected = -sum(t * lp for t, lp in zip(target, log_p))
    assert identity_loss(logits, torch.tensor([0]), 0.1).item() == pytest.approx(expected, rel=1e-6)
    no_smoothing = identity_loss(logits, torch.tensor([0]), 0.0).item()
    assert no_smoothing == pytest.approx(-log_p[0], rel=1e-6)


def test_identity_loss_weights_and_parts():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 6, generator=g)
    labels = torch.tensor([0, 1, 2, 3])
    per_part = [identity_loss(logits[:, p], labels) for p in range(3)]
    assert identity_loss(logits, labels).item() == pytest.approx(float(sum(per_part) / 3), rel=1e-6)
    weights = torch.zeros(4, 3)
    weights[1, 2] = 1.0
    only = identity_loss(logits[1:2, 2], labels[1:2])
    assert identity_loss(logits, labels, weights=weights).item() == pytest.approx(only.item())


def test_identity_loss_all_zero_weights_is_zero_with_zero_gradient():
    logits = torch.randn(3, 5, requires_grad=True)
    loss = identity_loss(logits, torch.tensor([0, 1, 2]), weights=torch.zeros(3))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# --------------------------------------------------------------------------------------
# Distances and the batch-hard triplet
# --------------------------------------------------------------------------------------


def test_pairwise_euclidean_matches_cdist_and_is_safe_at_zero():
    x = torch.randn(5, 7, dtype=torch.float64)
    assert torch.allclose(pairwise_euclidean(x), torch.cdist(x, x), atol=1e-6)
    same = torch.ones(2, 3, requires_grad=True)
    pairwise_euclidean(same).sum().backward()
    assert torch.isfinite(same.grad).all()


def test_batch_hard_hand_computed():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: ap 1, an 3 -> 0; anchor 1: ap 1, an 2 -> 0; anchor 2: ap 3, an 2 -> 1.3;
    # anchor 3: ap 3, an 5 -> 0.
    loss, stats = batch_hard_triplet_loss(x, labels, margin=0.3)
    assert loss.item() == pytest.approx(1.3 / 4)
    assert stats["trivial"].item() == pytest.approx(3 / 4)
    assert stats["valid"].item() == 1.0
    soft, _ = batch_hard_triplet_loss(x, labels, soft_margin=True)
    expected = sum(math.log1p(math.exp(d)) for d in (1 - 3, 1 - 2, 3 - 2, 3 - 5)) / 4
    assert soft.item() == pytest.approx(expected)


def test_part_triplet_with_k1_equals_batch_hard_exactly():
    x = torch.randn(8, 5, requires_grad=True)
    loss_bh, stats_bh = batch_hard_triplet_loss(x, LABELS8)
    (grad_bh,) = torch.autograd.grad(loss_bh, x)
    for soft in (False, True):
        loss_fn = PartAveragedTripletLoss(margin=0.3, soft_margin=soft)
        loss_pa, stats_pa = loss_fn(x.unsqueeze(1), LABELS8)
        expected, expected_stats = batch_hard_triplet_loss(x, LABELS8, soft_margin=soft)
        assert torch.equal(loss_pa, expected)
        assert stats_pa == {k: float(v) for k, v in expected_stats.items()}
    loss_pa, _ = PartAveragedTripletLoss()(x.unsqueeze(1), LABELS8)
    (grad_pa,) = torch.autograd.grad(loss_pa, x)
    assert torch.equal(grad_pa, grad_bh)
    # An all-visible visibility tensor changes nothing either.
    visible = torch.ones(8, 1, dtype=torch.bool)
    loss_vis, _ = PartAveragedTripletLoss()(x.unsqueeze(1), LABELS8, visible)
    assert torch.equal(loss_vis, loss_bh)
    assert stats_bh["valid"].item() == 1.0


# --------------------------------------------------------------------------------------
# Part-averaged triplet
# --------------------------------------------------------------------------------------


def visibility_pattern_inputs():
    """Four samples, two parts, 1-D features; 100.0 marks a part that is not visible."""
    part0 = [0.0, -5.0, 100.0, 0.5]
    part1 = [0.0, 100.0, 1.0, 3.0]
    x = torch.tensor([[[a], [b]] for a, b in zip(part0, part1)], dtype=torch.float64)
    visibility = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    return x, torch.tensor([0, 0, 1, 1]), visibility


@pytest.mark.parametrize(
    ("mode", "expected", "trivial"),
    [
        # Pair distances: (0,1)=5, (0,2)=1, (0,3)=avg 1.75 | max 3 | min 0.5, (1,2) invalid,
        # (1,3)=5.5, (2,3)=2. Per anchor (margin 0.3):
        # average: 4.3, 0, 1.3, 0.55; max: 4.3, 0, 1.3, 0; min: 4.8, 0, 1.3, 1.8.
        ("average", (4.3 + 0 + 1.3 + 0.55) / 4, 1 / 4),
        ("max", (4.3 + 0 + 1.3 + 0) / 4, 2 / 4),
        ("min", (4.8 + 0 + 1.3 + 1.8) / 4, 1 / 4),
    ],
)
def test_part_triplet_hand_computed_visibility_pattern(mode, expected, trivial):
    x, labels, visibility = visibility_pattern_inputs()
    loss, stats = PartAveragedTripletLoss(margin=0.3, mode=mode)(x, labels, visibility)
    assert loss.item() == pytest.approx(expected)
    assert stats == pytest.approx({"valid": 1.0, "trivial": trivial})


def test_mined_indices_follow_visibility():
    x, labels, visibility = visibility_pattern_inputs()
    mining = mine_part_triplets(x, labels, visibility)
    assert mining.positive_index.tolist() == [1, 0, 3, 2]
    assert mining.negative_index.tolist() == [2, 3, 0, 0]
    assert not mining.valid_pairs[1, 2] and not mining.valid_pairs[2, 1]
    assert mining.valid_pairs.sum().item() == 16 - 2
    # Without visibility the 100.0 placeholders count, and anchor 1 picks another negative.
    blind = mine_part_triplets(x, labels, None)
    assert blind.valid_pairs.all()
    assert blind.negative_index[1].item() == 3 and blind.distances[1, 2] > 50


@pytest.mark.parametrize("mode", ["average", "max", "min"])
@pytest.mark.parametrize("soft_visibility", [False, True])
def test_part_triplet_matches_loop_reference(mode, soft_visibility):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 4, 3, generator=g, dtype=torch.float64)
    if soft_visibility:
        visibility = torch.rand(8, 4, generator=g, dtype=torch.float64)
        visibility[visibility < 0.3] = 0.0
    else:
        visibility = torch.rand(8, 4, generator=g) > 0.4
    for soft in (False, True):
        loss, stats = PartAveragedTripletLoss(0.3, mode, soft)(x, LABELS8, visibility)
        ref_loss, ref_valid, ref_trivial = reference_part_triplet(
            x, LABELS8, visibility, 0.3, mode, soft
        )
        assert loss.item() == pytest.approx(ref_loss, rel=1e-9, abs=1e-12)
        assert stats["valid"] == pytest.approx(ref_valid)
        assert stats["trivial"] == pytest.approx(ref_trivial)


@pytest.mark.parametrize("mode", ["average", "max", "min"])
def test_invisible_part_values_change_nothing(mode):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 3, 4, generator=g, dtype=torch.float64)
    visibility = torch.rand(8, 3, generator=g) > 0.35
    visibility[:, 0] = True  # every sample shares part 0 with every other one
    loss_fn = PartAveragedTripletLoss(mode=mode)

    def loss_and_grad(features):
        features = features.clone().requires_grad_()
        loss, stats = loss_fn(features, LABELS8, visibility)
        (grad,) = torch.autograd.grad(loss, features)
        return loss, grad, stats

    loss_a, grad_a, stats_a = loss_and_grad(x)
    changed = x.clone()
    changed[~visibility] = 50.0 * torch.randn(int((~visibility).sum()), 4, generator=g).double()
    loss_b, grad_b, stats_b = loss_and_grad(changed)
    assert (~visibility).any()
    assert loss_a.item() > 0
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(grad_a[visibility], grad_b[visibility])
    assert torch.equal(grad_b[~visibility], torch.zeros_like(grad_b[~visibility]))
    assert stats_a == stats_b
    # Without visibility the same change does change the loss (the test can fail).
    plain_a, _ = loss_fn(x, LABELS8)
    plain_b, _ = loss_fn(changed, LABELS8)
    assert not torch.equal(plain_a, plain_b)


# --------------------------------------------------------------------------------------
# Gradients against finite differences
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["average", "max", "min"])
def test_part_triplet_gradcheck(mode):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    visibility = torch.tensor(
        [[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [1, 0, 0], [1, 1, 1]], dtype=torch.bool
    )
    # Margin 5: every triplet is active, so the hinge is differentiable everywhere here.
    loss_fn = PartAveragedTripletLoss(margin=5.0, mode=mode)
    assert torch.autograd.gradcheck(lambda t: loss_fn(t, labels, visibility)[0], (x,))
    soft_vis = torch.rand(6, 3, generator=g, dtype=torch.float64) + 0.1
    assert torch.autograd.gradcheck(lambda t: loss_fn(t, labels, soft_vis)[0], (x,))


def test_other_losses_gradcheck():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda t: batch_hard_triplet_loss(t, labels, 5.0)[0], (x,))
    assert torch.autograd.gradcheck(
        lambda t: batch_hard_triplet_loss(t, labels, soft_margin=True)[0], (x,)
    )
    logits = torch.randn(6, 2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(6, 2, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: identity_loss(t, labels, 0.1, weights), (logits,))
    pixel_logits = torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    targets = random_targets(2, 2, 4, 4)
    for soft in (False, True):
        assert torch.autograd.gradcheck(
            lambda t, soft=soft: part_attention_loss(t, targets, soft_targets=soft).double(),
            (pixel_logits,),
        )


# --------------------------------------------------------------------------------------
# NaN safety
# --------------------------------------------------------------------------------------


def finite_loss_and_grad(x, labels, visibility, **kwargs):
    x = x.clone().requires_grad_()
    loss, stats = PartAveragedTripletLoss(**kwargs)(x, labels, visibility)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(x.grad).all()
    return loss, x.grad, stats


@pytest.mark.parametrize("mode", ["average", "max", "min"])
def test_sample_without_visible_part_is_skipped(mode):
    x = torch.randn(8, 3, 4)
    visibility = torch.ones(8, 3, dtype=torch.bool)
    visibility[2] = False
    loss, grad, stats = finite_loss_and_grad(x, LABELS8, visibility, mode=mode)
    assert stats["valid"] == pytest.approx(6 / 8)  # sample 2 and its only positive, sample 3
    assert torch.equal(grad[2], torch.zeros_like(grad[2]))


def test_identity_with_one_sample_is_skipped():
    labels = torch.tensor([0, 1, 1, 2, 2])
    loss, _, stats = finite_loss_and_grad(torch.randn(5, 2, 3), labels, None)
    assert stats["valid"] == pytest.approx(4 / 5)
    bh_loss, bh_stats = batch_hard_triplet_loss(torch.randn(5, 3), labels)
    assert torch.isfinite(bh_loss) and bh_stats["valid"].item() == pytest.approx(4 / 5)


@pytest.mark.parametrize("mode", ["average", "max", "min"])
def test_every_pair_invalid_gives_exact_zero(mode):
    # Each sample shows a different part: no pair shares a visible part.
    visibility = torch.eye(4, dtype=torch.bool)
    loss, grad, stats = finite_loss_and_grad(
        torch.randn(4, 4, 3), torch.tensor([0, 0, 1, 1]), visibility, mode=mode
    )
    assert loss.item() == 0.0 and loss.requires_grad
    assert torch.equal(grad, torch.zeros_like(grad))
    assert stats == {"valid": 0.0, "trivial": 0.0}


def test_no_negative_or_identical_embeddings_stay_finite():
    loss, grad, stats = finite_loss_and_grad(torch.randn(4, 2, 3), torch.zeros(4).long(), None)
    assert loss.item() == 0.0 and stats["valid"] == 0.0
    identical = torch.ones(8, 2, 3)
    loss, grad, stats = finite_loss_and_grad(identical, LABELS8, None)
    assert loss.item() == pytest.approx(0.3, abs=1e-5)  # d_ap = d_an = 0: loss = margin
    assert stats["valid"] == 1.0


def test_pixel_targets_without_mass_become_background():
    targets = torch.zeros(1, 3, 2, 2)
    resized = resize_part_targets(targets, (2, 2))
    assert torch.equal(resized[:, 0], torch.ones(1, 2, 2))
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = part_attention_loss(logits, targets)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


# --------------------------------------------------------------------------------------
# Pixel loss
# --------------------------------------------------------------------------------------


def test_pixel_loss_hand_computed():
    # One sample, K+1 = 2 channels, a 1 x 2 map.
    logits = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])
    targets = torch.tensor([[[[0.8, 0.3]], [[0.2, 0.7]]]])
    eps = 0.1

    def log_softmax(a, b):
        z = math.log(math.exp(a) + math.exp(b))
        return a - z, b - z

    p0 = log_softmax(1.0, 0.0)  # pixel 0, label 0
    p1 = log_softmax(0.0, 2.0)  # pixel 1, label 1
    hard = (
        -((1 - eps / 2) * p0[0] + eps / 2 * p0[1]) - (eps / 2 * p1[0] + (1 - eps / 2) * p1[1])
    ) / 2
    assert part_attention_loss(logits, targets, 0.1).item() == pytest.approx(hard, rel=1e-6)

    def smooth(t):
        return (1 - eps) * t + eps / 2

    soft = (
        -(smooth(0.8) * p0[0] + smooth(0.2) * p0[1]) - (smooth(0.3) * p1[0] + smooth(0.7) * p1[1])
    ) / 2
    value = part_attention_loss(logits, targets, 0.1, soft_targets=True).item()
    assert value == pytest.approx(soft, rel=1e-6)


def test_pixel_loss_resizes_targets_to_the_logits():
    targets = random_targets(2, 3, 3, 2).float()
    # Each label pixel repeated over a 2 x 2 block: average pooling gives the targets back.
    big = targets.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.allclose(resize_part_targets(big, (3, 2)), targets, atol=1e-6)
    enlarged = resize_part_targets(targets, (6, 4))
    assert enlarged.shape == (2, 4, 6, 4)
    assert torch.allclose(enlarged.sum(1), torch.ones(2, 6, 4), atol=1e-6)
    logits = torch.randn(2, 4, 3, 2)
    assert part_attention_loss(logits, big).item() == pytest.approx(
        part_attention_loss(logits, targets).item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="parts_num"):
        part_attention_loss(torch.randn(2, 5, 3, 2), targets)


# --------------------------------------------------------------------------------------
# GiLt
# --------------------------------------------------------------------------------------


def test_gilt_default_total_is_the_weighted_sum():
    output = make_output()
    pids, targets = LABELS8, random_targets(8, 3, 8, 4)
    criterion = GiLtLoss(LossConfig())
    total, components = criterion(output, pids, targets)
    assert list(components) == [
        "global_id",
        "foreground_id",
        "concat_parts_id",
        "parts_tr",
        "pixel",
        "total",
        "parts_tr_valid",
        "parts_tr_trivial",
    ]
    assert all(isinstance(v, float) for v in components.values())
    expected = {
        "global_id": identity_loss(output.id_logits["global"], pids),
        "foreground_id": identity_loss(output.id_logits["foreground"], pids),
        "concat_parts_id": identity_loss(output.id_logits["concat_parts"], pids),
        "parts_tr": PartAveragedTripletLoss()(output.embeddings["parts"], pids)[0],
        "pixel": part_attention_loss(output.pixel_logits, targets),
    }
    for name, value in expected.items():
        assert components[name] == pytest.approx(value.item(), rel=1e-6)
    weighted = sum(v for k, v in expected.items() if k != "pixel") + 0.35 * expected["pixel"]
    assert total.item() == pytest.approx(weighted.item(), rel=1e-6)
    assert components["total"] == pytest.approx(total.item())
    total.backward()
    assert output.embeddings["parts"].grad is not None
    assert output.embeddings["bn_parts"].grad is None  # triplet before the BNNeck
    assert output.embeddings["global"].grad is None  # no triplet on global in GiLt


def test_gilt_mask_filtering_uses_visibility():
    visibility = torch.rand(8, 3, generator=torch.Generator().manual_seed(2)) > 0.4
    output = make_output(visibility=visibility)
    pids, targets = LABELS8, random_targets(8, 3, 4, 2)
    cfg = LossConfig(
        weights={"parts": EmbeddingLossWeights(id=1.0, tr=1.0)}, mask_filtering_training=True
    )
    _, components = GiLtLoss(cfg)(output, pids, targets)
    expected_id = identity_loss(output.id_logits["parts"], pids, weights=visibility.float())
    expected_tr, stats = PartAveragedTripletLoss()(output.embeddings["parts"], pids, visibility)
    assert components["parts_id"] == pytest.approx(expected_id.item(), rel=1e-6)
    assert components["parts_tr"] == pytest.approx(expected_tr.item(), rel=1e-6)
    assert components["parts_tr_valid"] == pytest.approx(stats["valid"])
    cfg.mask_filtering_training = False
    _, plain = GiLtLoss(cfg)(output, pids, targets)
    assert plain["parts_id"] != pytest.approx(components["parts_id"], rel=1e-6)


def test_gilt_no_visible_part_anywhere_is_finite():
    output = make_output(visibility=torch.zeros(8, 3, dtype=torch.bool))
    cfg = LossConfig(preset="parts_only", mask_filtering_training=True)
    total, components = GiLtLoss(cfg)(output, LABELS8, random_targets(8, 3, 4, 2))
    total.backward()
    assert math.isfinite(components["total"])
    assert components["parts_id"] == 0.0 and components["parts_tr"] == 0.0
    assert components["parts_tr_valid"] == 0.0
    assert torch.isfinite(output.embeddings["parts"].grad).all()


def test_gilt_global_only_model_skips_part_terms():
    output = make_output(parts=False)
    total, components = GiLtLoss(LossConfig())(output, LABELS8, None)
    assert list(components) == ["global_id", "total"]
    total.backward()
    _, both = GiLtLoss(LossConfig(preset="global_only"))(output, LABELS8)
    assert list(both) == ["global_id", "global_tr", "total", "global_tr_valid", "global_tr_trivial"]
    with pytest.raises(ConfigError, match="global_only"):
        GiLtLoss(LossConfig(preset="parts_only"))(output, LABELS8)


def test_gilt_requires_training_labels_for_the_pixel_loss():
    with pytest.raises(ValueError, match="training labels are required"):
        GiLtLoss(LossConfig())(make_output(), LABELS8, None)
    assert issubclass(MissingTrainingLabelsError, ValueError)
    _, components = GiLtLoss(LossConfig(pixel_weight=0.0))(make_output(), LABELS8, None)
    assert "pixel" not in components


def test_gilt_soft_targets_and_background():
    output = make_output()
    targets = random_targets(8, 3, 4, 2)
    cfg = LossConfig(weights={"backg": EmbeddingLossWeights(id=1.0, tr=0.5)}, pixel_weight=1.0)
    hard_total, hard = GiLtLoss(cfg)(output, LABELS8, targets)
    soft_total, soft = GiLtLoss(cfg, soft_targets=True)(output, LABELS8, targets)
    assert list(hard)[:3] == ["background_id", "background_tr", "pixel"]
    assert soft["pixel"] == pytest.approx(
        part_attention_loss(output.pixel_logits, targets, soft_targets=True).item(), rel=1e-6
    )
    assert soft["pixel"] != pytest.approx(hard["pixel"])
    expected = hard["background_id"] + 0.5 * hard["background_tr"] + hard["pixel"]
    assert hard_total.item() == pytest.approx(expected, rel=1e-6)


def test_gilt_missing_output_entry_is_explained():
    output = make_output()
    del output.id_logits["foreground"]
    with pytest.raises(ValueError, match="id_logits\\['foreground'\\]"):
        GiLtLoss(LossConfig())(output, LABELS8, random_targets(8, 3, 4, 2))


# --------------------------------------------------------------------------------------
# Presets and configuration
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(LOSS_PRESETS))
def test_presets_select_their_terms(preset):
    output = make_output()
    cfg = LossConfig(preset=preset, weights={"global": EmbeddingLossWeights(id=7.0)})
    total, components = GiLtLoss(cfg)(output, LABELS8, random_targets(8, 3, 4, 2))
    expected = [
        f"{name}_{kind}"
        for name, (id_w, tr_w) in LOSS_PRESETS[preset].items()
        for kind, w in (("id", id_w), ("tr", tr_w))
        if w
    ]
    assert [k for k in components if k.endswith(("_id", "_tr"))] == expected
    assert torch.isfinite(total)
    table = loss_weights_table(cfg)
    assert table["pixel"] == {"ce": 0.35}
    assert set(table) - {"pixel"} == set(LOSS_PRESETS[preset])


def test_gilt_preset_is_the_paper_default():
    assert resolve_loss_weights(LossConfig(preset="gilt")) == resolve_loss_weights(LossConfig())


def test_unknown_preset_and_bad_settings_raise_config_errors():
    with pytest.raises(ConfigError, match="gilt.*global_only.*parts_only"):
        GiLtLoss(LossConfig(preset="nope"))
    with pytest.raises(ConfigError, match="loss.part_triplet"):
        GiLtLoss(LossConfig(part_triplet="median"))
    with pytest.raises(ConfigError, match="Unknown embedding 'head'"):
        GiLtLoss(LossConfig(weights={"head": EmbeddingLossWeights(id=1.0)}))
    with pytest.raises(ConfigError, match="nothing would be trained"):
        GiLtLoss(LossConfig(weights={"global": EmbeddingLossWeights()}, pixel_weight=0.0))


def test_official_aliases_direct_and_through_config_round_trip(tmp_path: Path):
    direct = LossConfig(
        weights={
            "globl": EmbeddingLossWeights(id=1.0),
            "foreg": EmbeddingLossWeights(id=1.0, tr=1.0),
            "conct": EmbeddingLossWeights(id=0.5),
            "parts": EmbeddingLossWeights(tr=1.0),
        },
        pixel_weight=2.0,
    )
    expected = {
        "global": {"id": 1.0, "tr": 0.0},
        "foreground": {"id": 1.0, "tr": 1.0},
        "concat_parts": {"id": 0.5, "tr": 0.0},
        "parts": {"id": 0.0, "tr": 1.0},
        "pixel": {"ce": 2.0},
    }
    assert loss_weights_table(direct) == expected
    _, components = GiLtLoss(direct)(make_output(), LABELS8, random_targets(8, 3, 4, 2))
    assert {"global_id", "foreground_tr", "concat_parts_id", "parts_tr"} <= set(components)

    cfg = Config()
    cfg.loss = direct
    again = load_config(save_config(cfg, tmp_path / "cfg.yaml"))
    assert loss_weights_table(again.loss) == expected

    yaml_path = tmp_path / "official.yaml"
    yaml_path.write_text(
        "loss:\n"
        "  pixel_weight: 2.0\n"
        "  weights:\n"
        "    globl: {id: 1.0, tr: 0.0}\n"
        "    foreg: {id: 1.0, tr: 1.0}\n"
        "    conct: {id: 0.5, tr: 0.0}\n"
        "    parts: {id: 0.0, tr: 1.0}\n"
    )
    from_yaml = load_config(yaml_path)
    assert loss_weights_table(from_yaml.loss) == expected
    second = load_config(save_config(from_yaml, tmp_path / "again.yaml"))
    assert loss_weights_table(second.loss) == expected
    overridden = load_config(yaml_path, ["loss.preset=parts_only"])
    assert loss_weights_table(overridden.loss) == {
        "parts": {"id": 1.0, "tr": 1.0},
        "pixel": {"ce": 2.0},
    }


def test_half_precision_inputs_give_float32_losses():
    x = torch.randn(8, 3, 4).half()
    loss, _ = PartAveragedTripletLoss()(x, LABELS8)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    logits = torch.randn(8, 5).bfloat16()
    assert identity_loss(logits, LABELS8 % 5).dtype == torch.float32


def test_loss_gradient_reaches_embeddings_after_f_normalize():
    # The loss is used on normalized features too (e.g. in notebooks): still differentiable.
    x = torch.randn(8, 2, 4, requires_grad=True)
    loss, _ = PartAveragedTripletLoss(margin=1.0)(F.normalize(x, dim=-1), LABELS8)
    loss.backward()
    assert x.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------
# With the real model
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("part_mode", ["attention", "global"])
def test_gilt_trains_the_real_model_output(part_mode):
    model_module = pytest.importorskip("bpbreid.model")
    overrides = [f"model.bpbreid.part_mode={part_mode}"]
    if part_mode == "global":
        overrides.append("model.bpbreid.test_embeddings=[bn_global]")
    cfg = load_config("synthetic_cpu", overrides)
    torch.manual_seed(0)
    model = model_module.build_model(cfg, num_classes=4)
    k = cfg.model.bpbreid.masks.parts_num
    images = torch.randn(8, 3, cfg.data.height, cfg.data.width)
    targets = torch.rand(8, k + 1, cfg.data.height // 4, cfg.data.width // 4).softmax(1)
    output = model(images)
    total, components = GiLtLoss(cfg.loss)(output, LABELS8 % 4, targets)
    total.backward()
    assert math.isfinite(components["total"])
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if part_mode == "attention":
        assert {"parts_tr", "pixel", "parts_tr_valid"} <= set(components)
    else:
        assert list(components) == ["global_id", "total"]
