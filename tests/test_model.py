"""BPBReID model: output contract, pooling, visibility, part modes, serialization, compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bpbreid.config import Config, ConfigError
from bpbreid.model import (
    BACKBONES,
    BPBReID,
    BPBReIDOutput,
    DimReduce,
    build_model,
    horizontal_stripes,
    measure_cost,
    part_visibility,
    select_test_embeddings,
    weighted_average_pool,
)

NUM_CLASSES = 7
K = 4
EMBEDDING_NAMES = ("global", "foreground", "background", "concat_parts", "parts")


def small_config(**bpbreid) -> Config:
    """resnet18_half, K=4 ('four'), a small embedding so the tests stay fast."""
    cfg = Config()
    cfg.model.backbone = "resnet18_half"
    cfg.model.bpbreid.masks.preprocess = "four"
    cfg.model.bpbreid.masks.parts_num = K
    cfg.model.bpbreid.dim_reduce_output = 32
    for key, value in bpbreid.items():
        setattr(cfg.model.bpbreid, key, value)
    if cfg.model.bpbreid.part_mode == "global":
        cfg.model.bpbreid.test_embeddings = ["bn_global"]
    return cfg


def images(n: int = 2, height: int = 64, width: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def random_targets(n: int = 2, height: int = 16, width: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, K + 1, height, width, generator=g).mul(3).softmax(dim=1)


# --------------------------------------------------------------------------------------
# Output contract for every backbone x part mode
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["attention", "stripes", "global", "external"])
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_output_shapes_for_every_backbone_and_part_mode(backbone: str, mode: str) -> None:
    cfg = small_config(part_mode=mode)
    cfg.model.backbone = backbone
    model = build_model(cfg, NUM_CLASSES)
    n, height, width = 2, 64, 32
    external = random_targets(n, height // 4, width // 4)
    out = model(images(n, height, width), external_masks=external)
    assert isinstance(out, BPBReIDOutput)

    c, stride = model.backbone.out_channels, model.backbone.stride
    hf, wf = height // stride, width // stride
    d = cfg.model.bpbreid.dim_reduce_output
    assert out.feature_map.shape == (n, c, hf, wf)
    assert out.embeddings["global"].shape == (n, d)
    assert out.id_logits["global"].shape == (n, NUM_CLASSES)
    if mode == "global":
        assert set(out.embeddings) == {"global", "bn_global"}
        assert set(out.id_logits) == {"global"}
        assert out.visibility is None and out.parts_masks is None and out.pixel_logits is None
        return

    expected = {"global": (n, d), "foreground": (n, d), "background": (n, d)}
    expected |= {"concat_parts": (n, K * d), "parts": (n, K, d)}
    for name, shape in expected.items():
        assert out.embeddings[name].shape == shape, name
        assert out.embeddings[f"bn_{name}"].shape == shape, name
    for name in ("global", "foreground", "background", "concat_parts"):
        assert out.id_logits[name].shape == (n, NUM_CLASSES)
    assert out.id_logits["parts"].shape == (n, K, NUM_CLASSES)
    assert out.visibility.shape == (n, K)
    assert out.parts_masks.shape[:2] == (n, K + 1)
    assert out.parts_masks.shape[-2:] == (hf, wf)  # 1x1 head / stripes / external
    if mode == "attention":
        assert out.pixel_logits.shape == out.parts_masks.shape
    else:
        assert out.pixel_logits is None


@pytest.mark.parametrize("backbone", ["resnet18_half", "resnet50", "hrnet_w32"])
def test_stride4_head_puts_masks_at_a_quarter_of_the_image(backbone: str) -> None:
    cfg = small_config(head="3x3_stride4")
    cfg.model.backbone = backbone
    model = build_model(cfg, NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(images(2, 64, 32))
    assert out.parts_masks.shape == (2, K + 1, 16, 8)
    assert out.pixel_logits.shape == (2, K + 1, 16, 8)
    assert out.embeddings["parts"].shape == (2, K, 32)


@pytest.mark.parametrize("pool_at_mask_resolution", [True, False])
def test_stride4_pooling_matches_a_hand_computation(pool_at_mask_resolution: bool) -> None:
    torch.manual_seed(0)
    model = BPBReID(
        small_config(head="3x3_stride4"),
        NUM_CLASSES,
        pool_at_mask_resolution=pool_at_mask_resolution,
    ).eval()
    with torch.no_grad():
        out = model(images())
        fmap, masks = out.feature_map, out.parts_masks
        if pool_at_mask_resolution:
            fmap = F.interpolate(fmap, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        else:
            masks = F.avg_pool2d(masks, kernel_size=2)  # 16x8 masks -> the 8x4 feature map
        manual_parts = torch.stack(
            [
                (fmap * masks[:, k + 1 : k + 2]).sum((2, 3)) / masks[:, k + 1].sum((1, 2))[:, None]
                for k in range(K)
            ],
            dim=1,
        )
        expected = model.parts_reduce(manual_parts)
    assert torch.allclose(out.embeddings["parts"], expected, atol=1e-5)


# --------------------------------------------------------------------------------------
# Masks, foreground, GWAP, visibility
# --------------------------------------------------------------------------------------


def test_masks_sum_to_one_and_foreground_is_max_of_parts() -> None:
    torch.manual_seed(0)
    model = build_model(small_config(), NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(images())
    assert torch.allclose(out.parts_masks.sum(dim=1), torch.ones(2, 8, 4), atol=1e-5)
    assert torch.allclose(out.parts_masks, out.pixel_logits.softmax(dim=1))
    foreground = out.foreground_masks
    for k in range(K):
        assert (foreground >= out.parts_masks[:, k + 1] - 1e-7).all()
    # The foreground embedding pools the feature map under exactly that max.
    with torch.no_grad():
        pooled = weighted_average_pool(out.feature_map, foreground.unsqueeze(1))[:, 0]
        expected = model.foreground_reduce(pooled)
        background = model.background_reduce(
            weighted_average_pool(out.feature_map, out.parts_masks[:, :1])[:, 0]
        )
        global_ = model.global_reduce(out.feature_map.mean(dim=(2, 3)))
    assert torch.allclose(out.embeddings["foreground"], expected, atol=1e-5)
    assert torch.allclose(out.embeddings["background"], background, atol=1e-5)
    assert torch.allclose(out.embeddings["global"], global_, atol=1e-5)


def test_gwap_equals_a_loop_over_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 4, 5, generator=g)
    masks = torch.rand(2, 2, 4, 5, generator=g)
    masks[1, 1] = 0.0  # an empty mask pools to zeros, not NaN
    pooled = weighted_average_pool(features, masks)
    assert pooled.shape == (2, 2, 3)
    for n in range(2):
        for m in range(2):
            weight_sum = 0.0
            acc = torch.zeros(3)
            for y in range(4):
                for x in range(5):
                    acc += masks[n, m, y, x] * features[n, :, y, x]
                    weight_sum += float(masks[n, m, y, x])
            expected = acc / max(weight_sum, 1e-6)
            assert torch.allclose(pooled[n, m], expected, atol=1e-5)
    assert torch.equal(pooled[1, 1], torch.zeros(3))


def test_binary_visibility_follows_the_argmax_rule() -> None:
    masks = torch.zeros(1, K + 1, 2, 2)
    masks[0, 0] = 0.4  # background: wins where no part beats it
    masks[0, 1, 0, 0] = 0.9  # part 1 wins one pixel -> visible
    masks[0, 2] = 0.3  # part 2 never beats the background -> invisible
    masks[0, 3, 1, 1] = 0.5  # part 3 wins one pixel -> visible
    masks[0, 4, 0, 0] = 0.6  # part 4 is high but part 1 wins that pixel -> invisible
    binary = part_visibility(masks, binary=True)
    assert binary.tolist() == [[1.0, 0.0, 1.0, 0.0]]
    assert binary.dtype == torch.float32
    soft = part_visibility(masks, binary=False)
    assert torch.allclose(soft, torch.tensor([[0.9, 0.3, 0.5, 0.6]]))


def test_model_visibility_uses_train_and_test_settings() -> None:
    cfg = small_config(training_binary_visibility_score=False, testing_binary_visibility_score=True)
    torch.manual_seed(0)
    model = build_model(cfg, NUM_CLASSES)
    x = images()
    out_train = model.train()(x)
    assert torch.allclose(out_train.visibility, out_train.parts_masks[:, 1:].amax(dim=(2, 3)))
    with torch.no_grad():
        out_test = model.eval()(x)
    assert torch.equal(out_test.visibility, part_visibility(out_test.parts_masks, binary=True))
    assert set(out_test.visibility.unique().tolist()) <= {0.0, 1.0}


# --------------------------------------------------------------------------------------
# Reductions and classifiers
# --------------------------------------------------------------------------------------


def test_one_reduction_is_shared_by_all_parts() -> None:
    model = build_model(small_config(), NUM_CLASSES)
    reducers = [m for m in model.modules() if isinstance(m, DimReduce)]
    assert len(reducers) == 4  # global, foreground, background, parts
    model.eval()
    with torch.no_grad():
        out = model(images())
        pooled = weighted_average_pool(out.feature_map, out.parts_masks[:, 1:])
        for k in range(K):
            assert torch.allclose(
                out.embeddings["parts"][:, k], model.parts_reduce(pooled[:, k]), atol=1e-5
            )
    assert torch.equal(out.embeddings["concat_parts"], out.embeddings["parts"].flatten(1))


def test_bnneck_classifier_per_part_with_frozen_bias() -> None:
    model = build_model(small_config(), NUM_CLASSES)
    assert len(model.parts_classifiers) == K
    weights = [clf.classifier.weight for clf in model.parts_classifiers]
    assert len({w.data_ptr() for w in weights}) == K
    for clf in [model.global_classifier, model.foreground_classifier, *model.parts_classifiers]:
        assert not clf.bn.bias.requires_grad
        assert clf.classifier.bias is None
    model.eval()
    with torch.no_grad():
        out = model(images())
        bn_part_2, logits_2 = model.parts_classifiers[2](out.embeddings["parts"][:, 2])
    assert torch.allclose(out.embeddings["bn_parts"][:, 2], bn_part_2, atol=1e-6)
    assert torch.allclose(out.id_logits["parts"][:, 2], logits_2, atol=1e-6)

    shared = build_model(small_config(shared_parts_id_classifier=True), NUM_CLASSES)
    assert len(shared.parts_classifiers) == 1
    assert shared(images()).id_logits["parts"].shape == (2, K, NUM_CLASSES)


def test_gradients_reach_backbone_and_part_head() -> None:
    model = build_model(small_config(head="3x3_stride4"), NUM_CLASSES)
    out = model(images())
    loss = out.id_logits["parts"].logsumexp(-1).mean() + out.pixel_logits.square().mean()
    loss.backward()
    assert model.part_head.classifier.weight.grad.abs().sum() > 0
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------
# Part modes
# --------------------------------------------------------------------------------------


def test_stripes_mode_uses_fixed_horizontal_stripes_all_visible() -> None:
    model = build_model(small_config(part_mode="stripes"), NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(images())
    assert torch.equal(out.visibility, torch.ones(2, K))
    stripes = out.parts_masks[0]
    assert torch.equal(stripes[0], torch.zeros(8, 4))  # no background
    assert torch.equal(stripes.sum(0), torch.ones(8, 4))
    for k in range(K):  # 8 rows / 4 stripes: rows 2k and 2k+1
        assert stripes[k + 1, 2 * k : 2 * k + 2].eq(1).all()
    assert model.part_head is None
    uneven = horizontal_stripes(3, 7, 2)
    assert torch.equal(uneven[1:].sum(dim=(1, 2)), torch.tensor([6.0, 4.0, 4.0]))  # rows 3, 2, 2


def test_external_mode_pools_under_the_given_masks() -> None:
    model = build_model(small_config(part_mode="external"), NUM_CLASSES).eval()
    targets = random_targets(2, 8, 4)  # already at the feature-map size
    with torch.no_grad():
        out = model(images(), external_masks=targets)
    assert torch.allclose(out.parts_masks, targets)
    assert torch.equal(out.visibility, part_visibility(targets))
    with pytest.raises(ValueError, match="external_masks"):
        model(images())


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_test_time_target_segmentation_merges_labels(mode: str) -> None:
    torch.manual_seed(0)
    model = build_model(small_config(test_use_target_segmentation=mode), NUM_CLASSES)
    targets = random_targets(2, 8, 4, seed=3)
    with torch.no_grad():
        learned = model.eval()(images()).parts_masks
        merged = model(images(), external_masks=targets).parts_masks
        train_out = model.train()(images(), external_masks=targets).parts_masks
    assert not torch.allclose(train_out, merged)  # merging happens at test time only
    if mode == "soft":
        assert torch.allclose(merged[:, 1:], learned[:, 1:] * targets[:, 1:])
        assert torch.allclose(merged[:, 0], learned[:, 0])
    else:
        person = targets[:, 1:].amax(dim=1) > targets[:, 0]
        assert torch.allclose(merged[:, 0], (~person).float())
        assert (
            merged[:, 1:].masked_select(~person.unsqueeze(1).expand(-1, K, -1, -1)) <= 1e-12
        ).all()
        assert torch.allclose(
            merged[:, 1:].masked_select(person.unsqueeze(1).expand(-1, K, -1, -1)),
            learned[:, 1:].masked_select(person.unsqueeze(1).expand(-1, K, -1, -1)),
        )


# --------------------------------------------------------------------------------------
# Test embeddings
# --------------------------------------------------------------------------------------


def test_select_test_embeddings_expands_parts_with_visibility() -> None:
    model = build_model(small_config(), NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(images())
    out.visibility = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    features, visibility = select_test_embeddings(out, ["bn_foreg", "parts"])  # official alias
    assert features.shape == (2, 1 + K, 32)
    assert torch.equal(features[:, 0], out.embeddings["bn_foreground"])
    assert torch.equal(features[:, 1:], out.embeddings["parts"])
    assert torch.equal(visibility[:, 0], torch.ones(2))
    assert torch.equal(visibility[:, 1:], out.visibility)

    with pytest.raises(ConfigError, match="different sizes"):
        select_test_embeddings(out, ["foreground", "concat_parts"])
    with pytest.raises(ConfigError, match="bn_nothing"):
        select_test_embeddings(out, ["bn_nothing"])


def test_global_mode_selects_global_and_rejects_part_test_embeddings() -> None:
    model = build_model(small_config(part_mode="global"), NUM_CLASSES).eval()
    with torch.no_grad():
        out = model(images())
    features, visibility = select_test_embeddings(out, ["bn_global"])
    assert features.shape == (2, 1, 32) and torch.equal(visibility, torch.ones(2, 1))
    with pytest.raises(ConfigError, match="bn_global"):
        select_test_embeddings(out, ["parts"])
    cfg = small_config(part_mode="global")
    cfg.model.bpbreid.test_embeddings = ["bn_foreground", "parts"]
    with pytest.raises(ConfigError, match="test_embeddings"):
        build_model(cfg, NUM_CLASSES)


# --------------------------------------------------------------------------------------
# Config validation, serialization, channels_last/autocast, compile
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [("part_mode", "pcb"), ("head", "5x5"), ("test_use_target_segmentation", "maybe")],
)
def test_invalid_mode_names_raise_config_error(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_model(small_config(**{key: value}), NUM_CLASSES)


def test_parts_num_must_match_the_grouping() -> None:
    pytest.importorskip("bpbreid.data.parsing")
    cfg = small_config()
    cfg.model.bpbreid.masks.preprocess = "eight"  # 8 parts, but parts_num = 4
    with pytest.raises(ConfigError, match="parts_num"):
        build_model(cfg, NUM_CLASSES)


def test_state_dict_round_trip_gives_identical_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(small_config(head="3x3_stride4"), NUM_CLASSES)
    model(images(4))  # move the batch-norm running statistics away from their init
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    torch.manual_seed(1)
    restored = build_model(small_config(head="3x3_stride4"), NUM_CLASSES)
    restored.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    restored.eval()
    with torch.no_grad():
        a, b = model(images()), restored(images())
    for name in a.embeddings:
        assert torch.equal(a.embeddings[name], b.embeddings[name]), name
    assert torch.equal(a.parts_masks, b.parts_masks)


def test_channels_last_and_bf16_autocast_on_cpu() -> None:
    torch.manual_seed(0)
    model = build_model(small_config(head="3x3_stride4"), NUM_CLASSES).eval()
    x = images()
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x.to(memory_format=torch.channels_last))
    assert out.embeddings["bn_parts"].dtype == torch.bfloat16
    assert out.visibility.dtype == torch.float32
    for name in ("bn_foreground", "bn_parts"):
        assert torch.isfinite(out.embeddings[name].float()).all()
        cosine = F.cosine_similarity(
            out.embeddings[name].float().flatten(), reference.embeddings[name].flatten(), dim=0
        )
        assert cosine > 0.99, name


def test_compiles_with_fullgraph_and_matches_eager() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(small_config(head="3x3_stride4"), NUM_CLASSES).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = images()
    with torch.no_grad():
        eager_out, compiled_out = model(x), compiled(x)
    assert isinstance(compiled_out, BPBReIDOutput)
    for name in ("bn_foreground", "parts"):
        assert torch.allclose(eager_out.embeddings[name], compiled_out.embeddings[name], atol=1e-5)
    assert torch.equal(eager_out.visibility, compiled_out.visibility)


def test_describe_lists_every_output_tensor() -> None:
    out = build_model(small_config(), NUM_CLASSES)(images())
    table = out.describe()
    for name in EMBEDDING_NAMES:
        assert f"embeddings['{name}']" in table and f"embeddings['bn_{name}']" in table
    assert "visibility" in table and "[2, 4]" in table
    assert out.shapes()["parts_masks"] == (2, K + 1, 8, 4)


def test_torch_export_returns_the_output_object() -> None:
    torch.manual_seed(0)
    model = build_model(small_config(), NUM_CLASSES).eval()
    x = images()
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        eager, replayed = model(x), exported.module()(x)
    assert isinstance(replayed, BPBReIDOutput)
    assert torch.allclose(eager.embeddings["bn_parts"], replayed.embeddings["bn_parts"], atol=1e-5)
    assert torch.equal(eager.visibility, replayed.visibility)


def test_measure_cost_counts_parameters_and_flops() -> None:
    conv = torch.nn.Conv2d(3, 8, kernel_size=1, bias=False)
    cost = measure_cost(conv, input_size=(4, 2), batch_size=2, iterations=1)
    assert cost["params_m"] == pytest.approx(24 / 1e6)
    # 2 FLOPs per multiply-add: 8 outputs x 3 inputs x 4*2 pixels, per image.
    assert cost["gflops"] == pytest.approx(2 * 8 * 3 * 8 / 1e9)
    assert cost["latency_ms"] > 0


def test_official_masked_average_foreground_pooling() -> None:
    torch.manual_seed(0)
    model = BPBReID(small_config(), NUM_CLASSES, foreground_pooling="masked_average").eval()
    with torch.no_grad():
        out = model(images())
        foreground = out.foreground_masks.unsqueeze(1)  # [N, 1, Hf, Wf]
        official = (foreground * out.feature_map).mean(dim=(2, 3))  # no division by the mask sum
        background = (out.parts_masks[:, :1] * out.feature_map).mean(dim=(2, 3))
    assert torch.allclose(
        out.embeddings["foreground"], model.foreground_reduce(official), atol=1e-5
    )
    assert torch.allclose(
        out.embeddings["background"], model.background_reduce(background), atol=1e-5
    )
    with pytest.raises(ConfigError, match="foreground_pooling"):
        BPBReID(small_config(), NUM_CLASSES, foreground_pooling="max")


def test_external_masks_with_the_wrong_part_count_are_rejected() -> None:
    model = build_model(small_config(part_mode="external"), NUM_CLASSES)
    wrong = torch.rand(2, K + 3, 16, 8).softmax(dim=1)  # labels grouped for 6 parts
    with pytest.raises(ValueError, match="parts_num"):
        model(images(), external_masks=wrong)
