"""``python -m bpbreid infer``: embed a query and a gallery folder, rank, save figures.

Examples::

    python -m bpbreid infer --checkpoint outputs/synthetic_cpu/model.pth \\
        --query data/mine/query --gallery data/mine/gallery --out outputs/infer
    # an official model (downloaded once, on request, with gdown)
    python -m bpbreid infer --official occluded_duke --query q/ --gallery g/ --out out/

Writes ``ranking.csv`` (top-k matches of every query), ``query.npz`` / ``gallery.npz``
(embeddings, visibility, names) and one ranking figure per query (up to ``--figures``) to
``--out``, and prints the top matches.
"""

from __future__ import annotations

import argparse

from bpbreid.cli import common

# Spelled out (not read from bpbreid.official) so that --help answers without torch.
OFFICIAL_MODELS = ("market1501", "dukemtmc", "occluded_duke", "p_dukemtmc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    common.add_checkpoint(parser, group=source)
    source.add_argument(
        "--official",
        choices=OFFICIAL_MODELS,
        help="download (once, with gdown) and use an official HRNet-W32 checkpoint",
    )
    common.add_config(
        parser, help="config (bundled name or YAML) to use instead of the checkpoint's own"
    )
    parser.add_argument("--query", required=True, help="folder (or file) of query images")
    parser.add_argument("--gallery", required=True, help="folder of gallery images")
    common.add_out(parser, help="folder for ranking.csv, embeddings and figures")
    parser.add_argument("--topk", type=int, default=10, help="matches per query")
    parser.add_argument("--figures", type=int, default=10, help="ranking figures to save (0: none)")
    common.add_device(parser)
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    parser.add_argument("--cache", default=None, help="--official: download folder")
    common.add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    given = common.config_from_args(args)  # before the heavy imports below

    from bpbreid.inference import FeatureExtractor

    if args.official:
        from bpbreid.official import download_official_checkpoint

        args.checkpoint = str(download_official_checkpoint(args.official, args.cache))
    loaded = common.load_checkpoint_from_args(args, given)
    extractor = FeatureExtractor(
        loaded.model,
        config=loaded.cfg,
        device=next(loaded.model.parameters()).device,
        batch_size=args.batch_size,
        progress=common.progress_from_args(args),
    )
    ranking = extractor.rank(args.query, args.gallery, topk=args.topk)
    n_query = len(ranking.query)
    n_entries = len(ranking.query.names)
    shown = min(n_query, 5)
    for qi in range(shown):
        print(f"query {Path(ranking.query.paths[qi]).name}:")
        for row in ranking.matches(qi)[: min(5, args.topk)]:
            same = {True: " (same id)", False: "", None: ""}[row["same_identity"]]
            print(
                f"  #{row['rank']:<3} {Path(row['gallery']).name:<40} d={row['distance']:.4f} "
                f"visible in both={row['shared_visible']}/{n_entries}{same}"
            )
    if n_query > shown:
        print(f"... {n_query - shown} more queries")
    if args.out:
        out = Path(args.out)
        ranking.to_csv(out / "ranking.csv")
        ranking.query.save(out / "query.npz")
        ranking.gallery.save(out / "gallery.npz")
        figures = []
        if args.figures > 0:
            figures = ranking.save_figures(out / "figures", range(min(args.figures, n_query)))
        print(f"wrote {out / 'ranking.csv'}, embeddings and {len(figures)} figures to {out}")
    return 0
