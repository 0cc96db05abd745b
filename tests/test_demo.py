"""The demo pipeline end to end on the tiny synthetic preset (FAST)."""

import json
import math

import pytest

from bpbreid.demo import MODELS, model_configs, run_demo


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
    assert configs["global_pixel"].loss.pixel_weight == base.loss.pixel_weight
    assert configs["global_pixel"].model.bpbreid.test_embeddings == ["bn_global"]
    # Same budget, data and optimizer for all three.
    for cfg in configs.values():
        assert cfg.train.max_steps == base.train.max_steps
        assert cfg.train.seed == 3 and cfg.data.synthetic.seed == 3
        diff = config_diff(cfg, configs["bpbreid"])
        assert not any(k.startswith(("data.", "train.optim", "train.lr")) for k in diff)


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
    assert (out / "training_curves.png").stat().st_size > 0
    assert list((out / "rankings_bpbreid_seed0").glob("*.png"))
    assert list((out / "rankings_global_id_seed0").glob("*.png"))
