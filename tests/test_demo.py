"""The demo pipeline end to end on the tiny synthetic preset (FAST)."""

import json
import math

import pytest

from bpbreid.demo import CONTROL_MAX_PIXEL_WEIGHT, MODELS, model_configs, run_demo


def test_demo_configs_differ_only_in_model_and_losses(tmp_path):
    from bpbreid.config import config_diff, load_config

    base = load_config("synthetic_cpu")
    configs = model_configs(base, tmp_path, seed=3)
    assert list(configs) == list(MODELS)
    assert configs["global"].model.bpbreid.part_mode == "global"
    assert configs["global"].loss.pixel_weight == 0.0
    assert configs["global"].loss.weights["global"].tr == 1.0
    assert configs["global_id"].loss.weights["global"].tr == 0.0
    assert configs["global_id"].model.bpbreid.part_mode == "global"
    assert configs["global_pixel"].model.bpbreid.part_mode == "attention"
    assert configs["global_pixel"].loss.pixel_weight == min(
        base.loss.pixel_weight, CONTROL_MAX_PIXEL_WEIGHT
    )
    assert 0 < configs["global_pixel"].loss.pixel_weight <= configs["bpbreid"].loss.pixel_weight
    assert configs["global_pixel"].model.bpbreid.test_embeddings == ["bn_global"]
    # Same budget, data and optimizer for all three.
    for cfg in configs.values():
        assert cfg.train.max_steps == base.train.max_steps
        assert not cfg.train.test_at_end  # the demo evaluates each model once, itself
        assert cfg.train.seed == 3 and cfg.data.synthetic.seed == 3
        diff = config_diff(cfg, configs["bpbreid"])
        assert not any(k.startswith(("data.", "train.optim", "train.lr")) for k in diff)


def test_label_visibility_tells_hidden_parts_from_small_ones(tmp_path):
    """A part with no label pixel is hidden; one that only loses the argmax at the model's
    resolution is neither visible nor hidden; a large one is visible."""
    import numpy as np

    from bpbreid.config import load_config
    from bpbreid.data.parsing import _GROUPING_INDICES, NUM_FIELDS
    from bpbreid.demo import label_visibility

    cfg = load_config("synthetic_cpu")  # 64x32 images, part maps at 16x8, labels at 32x16
    head, arms, torso, legs = (set(map(int, idx)) for idx in _GROUPING_INDICES["four"])
    # one field that belongs to that part only (groups share the shoulder and hip fields)
    head, arms, torso = min(head - arms - torso), min(arms - torso), min(torso - arms - legs)
    fields = np.zeros((NUM_FIELDS, 32, 16), dtype=np.float32)
    fields[torso, 8:20, 4:12] = 1.0  # a large torso
    fields[head, 2, 8] = 1.0  # one label pixel: a quarter of a part-map cell
    fields[arms, 10:14, 2:4] = 1.0  # arms beside the torso
    path = tmp_path / "label.npy"
    np.save(path, fields)  # the legs stay empty: hidden
    visible, hidden = label_visibility(str(path), cfg)
    assert visible == [False, True, True, False]
    assert hidden == [False, False, False, True]

    # With the 'sum' background, two weak overlapping parts (0.4 each, below the 0.5 mask
    # threshold) beat the background (1 - 0.8): visible, so not hidden.
    weak = np.zeros_like(fields)
    weak[arms, 10:14, 2:6] = 0.4
    weak[torso, 10:14, 2:6] = 0.4
    np.save(path, weak)
    cfg.model.bpbreid.masks.background_computation_strategy = "sum"
    visible, hidden = label_visibility(str(path), cfg)
    assert visible[1] or visible[2]
    assert not any(v and h for v, h in zip(visible, hidden))


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_results(tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(
        seed=0,
        preset="tiny",
        steps=4,
        output_dir=out,
        processes=2,
        device="cpu",
        overrides=[f"data.root={tmp_path / 'data'}", "train.batch_size=16", "test.batch_size=32"],
        progress=False,
    )
    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(summary))
    for key in ("device", "train_seconds", "seed", "models", "visibility"):
        assert key in results
    assert results["seed"] == 0 and results["train_seconds"] > 0
    assert set(results["models"]) == set(MODELS)
    for name in MODELS:
        for query_set in ("occluded", "holistic"):
            metrics = results["models"][name][query_set]
            assert set(metrics) == {"rank1", "mAP"}
            assert all(0.0 <= v <= 100.0 and not math.isnan(v) for v in metrics.values())
    vis = results["visibility"]
    assert len(vis["parts"]) == 4  # synthetic_cpu uses K = 4 parts
    for query_set in ("occluded", "holistic"):
        assert len(vis[query_set]) == 4 and all(0.0 <= r <= 1.0 for r in vis[query_set])
        assert len(vis["labels"][query_set]) == 4
        assert 0.0 <= vis["labels"][f"{query_set}_visible_seen_as_visible"] <= 1.0
    assert vis["labels"]["holistic_hidden_parts"] == 0  # no occluder, nothing hidden
    assert (out / "training_curves.png").stat().st_size > 0
    assert list((out / "rankings_bpbreid_seed0").glob("*.png"))
    assert list((out / "rankings_global_id_seed0").glob("*.png"))
    assert list((out / "rankings_global_seed0").glob("*.png"))
