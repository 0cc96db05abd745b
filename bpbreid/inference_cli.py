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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="this package's checkpoint or an official .pth")
    source.add_argument(
        "--official",
        choices=("market1501", "dukemtmc", "occluded_duke", "p_dukemtmc"),
        help="download (once, with gdown) and use an official HRNet-W32 checkpoint",
    )
    parser.add_argument("--query", required=True, help="folder (or file) of query images")
    parser.add_argument("--gallery", required=True, help="folder of gallery images")
    parser.add_argument("--out", default=None, help="folder for ranking.csv, embeddings, figures")
    parser.add_argument("--topk", type=int, default=10, help="matches per query")
    parser.add_argument("--figures", type=int, default=10, help="ranking figures to save (0: none)")
    parser.add_argument("--config", default=None, help="override the stored config (YAML or name)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1")
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    parser.add_argument("--cache", default=None, help="--official: download folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bpbreid.inference import FeatureExtractor

    checkpoint = args.checkpoint
    if args.official:
        from bpbreid.official import download_official_checkpoint

        checkpoint = download_official_checkpoint(args.official, args.cache)
    extractor = FeatureExtractor(
        checkpoint,
        config=args.config,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
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
