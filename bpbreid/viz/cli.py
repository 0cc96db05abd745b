"""``python -m bpbreid visualize``: ranking figures of a trained model.

Evaluates a checkpoint on its test split, then writes one PNG per chosen query (the
query, its top-k gallery matches, every part's heatmap, visibility and distance) plus the
CMC curve and the AP histogram.

Examples::

    python -m bpbreid visualize --checkpoint outputs/synthetic_cpu/model.pth
    python -m bpbreid visualize --checkpoint model.pth --queries 0,5,9 --topk 5
    python -m bpbreid visualize --checkpoint model.pth --config market1501_hrnet_w32 \\
        data.root=/datasets --set query --queries best --count 20
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a model.pth/last.pth from training")
    parser.add_argument(
        "--config",
        default=None,
        help="config (bundled name or YAML) to use instead of the one stored in the checkpoint",
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.root=/data")
    parser.add_argument(
        "--queries",
        default="worst",
        help="worst | best (by average precision) | random | indices like 0,5,9 (default: worst)",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        help="queries for worst/best/random (default: test.visrank_count of the config)",
    )
    parser.add_argument(
        "--topk",
        type=int,
        default=None,
        help="gallery matches per figure (default: test.visrank_topk of the config)",
    )
    parser.add_argument(
        "--set", dest="set_name", default="query", help="query set (query, query_holistic...)"
    )
    parser.add_argument(
        "--output", default=None, help="output folder (default: <checkpoint folder>/rankings)"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --queries random")
    parser.add_argument("--dpi", type=int, default=80, help="figure resolution")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    from bpbreid.config import ConfigError, apply_overrides, config_from_dict, load_config
    from bpbreid.data.datasets import build_dataset_from_config, build_loaders, testing_needs_masks
    from bpbreid.engine import load_checkpoint, read_checkpoint
    from bpbreid.engine.distributed import resolve_device
    from bpbreid.engine.evaluation import evaluate
    from bpbreid.errors import CheckpointError
    from bpbreid.viz.plots import plot_ap_histogram, plot_cmc
    from bpbreid.viz.ranking import save_rankings

    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(
            f"Checkpoint '{checkpoint}' not found. Train one first "
            "(python -m bpbreid train --config synthetic_cpu) or give the path to a model.pth."
        )
    if args.config is not None:
        cfg = load_config(args.config, args.overrides)
    else:
        stored = read_checkpoint(checkpoint).get("config")
        if not isinstance(stored, dict):
            raise CheckpointError(f"{checkpoint} stores no config: pass --config.")
        cfg = apply_overrides(config_from_dict(stored), args.overrides)
    device = resolve_device(args.device)
    model, cfg, _ = load_checkpoint(checkpoint, device=device, cfg=cfg)

    data = build_dataset_from_config(cfg, require_masks=testing_needs_masks(cfg))
    loaders = build_loaders(cfg, dataclasses.replace(data, train=[]))  # no training loader
    query_sets = [name for name in loaders if name not in ("train", "gallery")]
    if args.set_name not in query_sets:
        raise ConfigError(
            f"Query set '{args.set_name}' is not in this dataset; available: "
            f"{', '.join(query_sets)} (extra sets come from data.extra_query_sets)."
        )
    extra = {name: loaders[name] for name in query_sets if name != "query"}
    result = evaluate(
        model, loaders["query"], loaders["gallery"], cfg, extra, device=device,
        progress=not args.no_progress,
    )  # fmt: skip
    print(result.summary())

    out_dir = Path(args.output) if args.output else checkpoint.parent / "rankings"
    try:
        paths = save_rankings(
            result, out_dir, which=args.queries,
            topk=args.topk or cfg.test.visrank_topk, count=args.count or cfg.test.visrank_count,
            set_name=args.set_name, seed=args.seed, dpi=args.dpi,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"--queries {args.queries}: {exc}") from None
    for name, plot in (("cmc.png", plot_cmc), ("ap_histogram.png", plot_ap_histogram)):
        fig = plot(result)
        fig.savefig(out_dir / name, dpi=args.dpi, bbox_inches="tight")
        plt.close(fig)
    print(f"\nWrote {len(paths)} ranking figure(s), cmc.png and ap_histogram.png to {out_dir}")
    for path in paths:
        print(f"  {path}")
    return 0
