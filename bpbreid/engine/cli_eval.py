"""``python -m bpbreid eval``: evaluate a trained checkpoint on query/gallery sets.

Examples::

    python -m bpbreid eval --checkpoint outputs/synthetic_cpu/model.pth
    python -m bpbreid eval --checkpoint model.pth test.dist_metric=cosine test.flip=true
    python -m bpbreid eval --checkpoint model.pth --config occluded_duke_hrnet_w32 data.root=/data
"""

from __future__ import annotations

import argparse
from typing import Any

EPILOG = """\
Without --config the configuration stored in the checkpoint is used; key=value overrides
(YAML syntax) apply on top, e.g. data.root=/data test.rerank=true
"model.bpbreid.test_embeddings=[bn_foreground,parts]". With --config, its model section
must match the checkpoint's weights. Official BPBReID checkpoints
(bpbreid_market1501_hrnet32_10642.pth ...) are recognised and opened safely.
Ranking figures: python -m bpbreid visualize.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "--checkpoint", "-k", required=True, help="a model.pth or last.pth written by training"
    )
    parser.add_argument(
        "--config",
        "-c",
        default=None,
        help="a YAML file or bundled config name (default: the checkpoint's own config)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    parser.add_argument(
        "--device",
        default=None,
        help="auto (CUDA when present), cpu or cuda (default train.device)",
    )
    parser.add_argument(
        "--json", default=None, metavar="FILE", help="also write the metrics to this JSON file"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _given_config(args: argparse.Namespace) -> Any:
    """The ``--config`` configuration with the overrides, or None (the checkpoint's is used).

    Called before torch and the checkpoint are loaded: a setting that cannot work, or a
    malformed override, is refused at once. Without ``--config`` the overrides are checked
    on their own here and against the checkpoint's configuration once it is read.
    """
    from bpbreid.config import check_overrides, load_config

    if args.config is not None:
        return load_config(args.config, args.overrides)
    check_overrides(args.overrides)
    return None


def _load_model(args: argparse.Namespace, given: Any) -> tuple[Any, Any, Any, str]:
    """``(model, cfg, state, kind)`` from a training checkpoint or an official one.

    ``given``: the ``--config`` configuration (:func:`_given_config`), or None.
    """
    from pathlib import Path

    from bpbreid.config import apply_overrides, config_from_dict
    from bpbreid.engine.checkpoint import load_checkpoint, read_checkpoint
    from bpbreid.engine.distributed import resolve_device
    from bpbreid.errors import CheckpointError

    try:
        stored = read_checkpoint(args.checkpoint)
    except CheckpointError as ours:
        if not Path(args.checkpoint).is_file():
            raise
        try:
            from bpbreid.official import load_official_checkpoint

            device = resolve_device(args.device or (given.train.device if given else "auto"))
            model, cfg, _ = load_official_checkpoint(args.checkpoint, device=device, cfg=given)
        except (ImportError, CheckpointError) as official:
            raise CheckpointError(f"{ours}\nAs an official checkpoint: {official}") from None
        cfg = given or apply_overrides(cfg, args.overrides)
        return model, cfg, None, "official BPBReID checkpoint"
    cfg = given
    if cfg is None:
        if not isinstance(stored.get("config"), dict):
            raise CheckpointError(f"{args.checkpoint} stores no config: pass --config.")
        cfg = apply_overrides(config_from_dict(stored["config"]), args.overrides)
    device = resolve_device(args.device or cfg.train.device)
    model, cfg, state = load_checkpoint(args.checkpoint, device=device, cfg=cfg)
    return model, cfg, state, "checkpoint"


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    from pathlib import Path

    given = _given_config(args)  # before the heavy imports below

    from bpbreid.data.datasets import build_dataset_from_config, build_loaders, testing_needs_masks
    from bpbreid.engine.evaluate import evaluate
    from bpbreid.errors import DatasetError

    model, cfg, state, kind = _load_model(args, given)
    device = next(model.parameters()).device
    data = build_dataset_from_config(cfg, require_masks=testing_needs_masks(cfg))
    test_only = dataclasses.replace(data, train=[])  # no training loader needed
    loaders = build_loaders(cfg, test_only)
    if "query" not in loaders or "gallery" not in loaders:
        raise DatasetError(
            f"Dataset '{cfg.data.name}' at {data.dataset_dir} has no query/gallery images."
        )
    extra = {k: v for k, v in loaders.items() if k not in ("query", "gallery")}
    trained = f", trained {state.epoch} epochs / {state.step} steps" if state else ""
    print(f"Evaluating {kind} {args.checkpoint} ({cfg.model.backbone}{trained}) on {cfg.data.name}")
    result = evaluate(
        model,
        loaders["query"],
        loaders["gallery"],
        cfg,
        extra or None,
        device=device,
        progress=not args.no_progress,
    )
    print(result.summary())
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.flat_metrics(), indent=2))
        print(f"Metrics written to {path}")
    if cfg.test.visrank:
        from bpbreid.viz.ranking import save_rankings

        folder = Path(cfg.train.output_dir) / "rankings"
        saved = save_rankings(
            result, folder, topk=cfg.test.visrank_topk, count=cfg.test.visrank_count
        )
        print(f"{len(list(saved))} ranking figures written to {folder} (test.visrank=true)")
    return 0
