"""``python -m bpbreid eval``: evaluate a checkpoint on query/gallery sets.

Examples::

    python -m bpbreid eval --checkpoint outputs/synthetic_cpu/model.pth
    python -m bpbreid eval --checkpoint model.pth test.dist_metric=cosine test.flip=true
    python -m bpbreid eval --checkpoint model.pth --config occluded_duke_hrnet_w32 data.root=/data
"""

from __future__ import annotations

import argparse

from bpbreid.cli import common

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
    common.add_checkpoint(parser)
    common.add_config(
        parser, help="a YAML file or bundled config name (default: the checkpoint's own config)"
    )
    common.add_device(parser)
    parser.add_argument(
        "--json", default=None, metavar="FILE", help="also write the metrics to this JSON file"
    )
    common.add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    from pathlib import Path

    given = common.config_from_args(args)  # before the heavy imports below

    from bpbreid.data.datasets import build_dataset_from_config, build_loaders, testing_needs_masks
    from bpbreid.engine.evaluation import evaluate
    from bpbreid.errors import DatasetError

    loaded = common.load_checkpoint_from_args(args, given)
    model, cfg, state = loaded.model, loaded.cfg, loaded.state
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
    print(
        f"Evaluating {loaded.describe()} {args.checkpoint} ({cfg.model.backbone}{trained}) "
        f"on {cfg.data.name}"
    )
    result = evaluate(
        model,
        loaders["query"],
        loaders["gallery"],
        cfg,
        extra or None,
        device=device,
        progress=common.progress_from_args(args),
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
