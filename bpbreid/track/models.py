"""The two re-id models the tracking chapter compares: reused from the demo, or trained briefly.

``python -m bpbreid demo`` trains ``bpbreid`` (part-based) and ``global_id`` (one global
embedding, identity loss) with the same budget; when its checkpoints are there they are used.
Otherwise both are trained now with the same short schedule (seconds in FAST mode), cached
under ``<checkpoint_dir>/07_tracking_<preset>_<steps>steps/`` and reused by the next run.
"""

from __future__ import annotations

from pathlib import Path

DEMO_RUNS = {"part-based": "bpbreid_seed0", "global": "global_id_seed0"}


def reid_checkpoints(
    data_dir: str | Path,
    output_dir: str | Path,
    checkpoint_dir: str | Path,
    preset: str = "tiny",
    steps: int = 40,
    device: str = "cpu",
    use_demo: bool = True,
) -> dict[str, Path]:
    """``{"part-based": model.pth, "global": model.pth}``: the demo's, cached, or trained now.

    Args:
        data_dir: the data folder (the synthetic set is generated under ``<data_dir>/synthetic``).
        output_dir: where the demo writes (``<output_dir>/demo/<model>_seed0/model.pth``).
        checkpoint_dir: where briefly trained models are cached.
        preset: synthetic preset to train on when training now.
        steps: training steps per model when training now (the demo trains 1,500).
        device: ``cpu`` or ``cuda``.
        use_demo: take the demo's models when they exist.
    """
    demo = {name: Path(output_dir) / "demo" / run / "model.pth" for name, run in DEMO_RUNS.items()}
    if use_demo and all(p.is_file() for p in demo.values()):
        return demo
    from bpbreid.config import EmbeddingLossWeights, copy_config, load_config
    from bpbreid.engine import Trainer

    base = load_config(
        "synthetic_cpu",
        [
            f"data.root={data_dir}",
            f"data.synthetic.preset={preset}",
            f"train.max_steps={steps}",
            "train.batch_size=16",  # 4 identities x 4 images (paper: 16 x 4)
            "train.warmup_epochs=0",
            "train.loggers=[]",
            f"train.device={device}",
        ],
    )
    run_dir = Path(checkpoint_dir) / f"07_tracking_{preset}_{steps}steps"
    out: dict[str, Path] = {}
    for name in DEMO_RUNS:
        cfg = copy_config(base)
        cfg.name = name
        cfg.train.output_dir = str(run_dir / name.replace("-", "_"))
        if name == "global":  # as the demo's global_id: GAP + BNNeck, identity loss only
            cfg.model.bpbreid.part_mode = "global"
            cfg.model.bpbreid.test_embeddings = ["bn_global"]
            cfg.loss.weights = {"global": EmbeddingLossWeights(id=1.0, tr=0.0)}
            cfg.loss.pixel_weight = 0.0
            cfg.loss.preset = None
        path = Path(cfg.train.output_dir) / "model.pth"
        if not path.is_file():
            Trainer(cfg, progress=False).fit()
        out[name] = path
    return out
