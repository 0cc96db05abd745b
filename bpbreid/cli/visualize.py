"""``python -m bpbreid visualize``: ranking figures of a trained model.

Evaluates a checkpoint (this package's or an official one) on its test split, then writes
one PNG per chosen query (the query, its top-k gallery matches, every part's heatmap,
visibility and distance) plus the CMC curve and the AP histogram.

Examples::

    python -m bpbreid visualize --checkpoint outputs/synthetic_cpu/model.pth
    python -m bpbreid visualize --checkpoint model.pth --queries 0,5,9 --topk 5
    python -m bpbreid visualize --checkpoint model.pth --config market1501_hrnet_w32 \\
        data.root=/datasets --set query --queries best --count 20
"""

from __future__ import annotations

import argparse

from bpbreid.cli import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_checkpoint(parser)
    common.add_config(
        parser,
        help="config (bundled name or YAML) to use instead of the one stored in the checkpoint",
    )
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
    common.add_out(
        parser,
        help="output folder (default: <checkpoint folder>/rankings)",
        aliases=("--output",),
    )
    common.add_device(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed for --queries random")
    parser.add_argument("--dpi", type=int, default=80, help="figure resolution")
    common.add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    given = common.config_from_args(args)  # before the heavy imports below

    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    from bpbreid.config import ConfigError
    from bpbreid.data.datasets import build_dataset_from_config, build_loaders, testing_needs_masks
    from bpbreid.engine.evaluation import evaluate
    from bpbreid.viz.plots import plot_ap_histogram, plot_cmc
    from bpbreid.viz.ranking import save_rankings

    loaded = common.load_checkpoint_from_args(args, given)
    model, cfg = loaded.model, loaded.cfg
    device = next(model.parameters()).device

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
        progress=common.progress_from_args(args),
    )  # fmt: skip
    print(result.summary())

    out_dir = Path(args.out) if args.out else Path(args.checkpoint).parent / "rankings"
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
