"""``python -m bpbreid data check|download-labels|synth``: check, label and generate datasets.

Examples::

    python -m bpbreid data check data                      # every dataset found under data/
    python -m bpbreid data check data --dataset occluded_duke
    python -m bpbreid data download-labels market1501 data
    python -m bpbreid data download-labels market1501 data --archive ~/Downloads/market.zip
    python -m bpbreid data synth --preset small --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Spelled out (not read from the registry) so that --help answers without importing torch.
DATASET_NAMES = (
    "market1501",
    "dukemtmc",
    "occluded_duke",
    "occluded_reid",
    "p_dukemtmc",
    "synthetic",
)
LABELLED_DATASETS = ("market1501", "dukemtmc", "occluded_duke", "occluded_reid", "p_dukemtmc")
DEFAULT_MASKS_DIR = "pifpaf_maskrcnn_filtering"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="<action>")

    check = sub.add_parser(
        "check",
        help="validate a dataset layout and its parsing labels",
        description="Validate a dataset layout and its parsing labels; exit 1 when broken.",
    )
    check.add_argument("root", help="data root holding the dataset folders (or one dataset folder)")
    check.add_argument(
        "--dataset", choices=DATASET_NAMES, help="dataset to check (default: detect from folders)"
    )
    check.add_argument("--masks-dir", default=DEFAULT_MASKS_DIR, help="label folder under masks/")
    check.add_argument(
        "--samples", type=int, default=16, help="label files and images to open and check"
    )
    check.add_argument("--no-labels", action="store_true", help="check the images only")
    check.add_argument("--extra-query", action="append", default=[], help="extra query folder")

    download = sub.add_parser(
        "download-labels",
        help="get the official parsing labels (Google Drive, or a local archive)",
        description="Download the official BPBReID parsing labels of a dataset (needs gdown) "
        "and extract them to <root>/<dataset folder>/masks/<masks dir>/.",
    )
    download.add_argument("dataset", choices=LABELLED_DATASETS)
    download.add_argument("root", help="data root holding the dataset folders")
    download.add_argument("--archive", help="install this zip (downloaded by hand) instead")
    download.add_argument("--masks-dir", default=DEFAULT_MASKS_DIR, help="label folder name")
    download.add_argument("--quiet", action="store_true", help="no progress bar")

    synth = sub.add_parser(
        "synth",
        help="generate the synthetic occluded-pedestrian dataset",
        description="Generate (or reuse) the synthetic dataset under <root>/synthetic/.",
    )
    synth.add_argument("--preset", default="small", help="tiny | small | default")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--height", type=int, default=None, help="image height (preset's default)")
    synth.add_argument("--width", type=int, default=None, help="image width (preset's default)")
    synth.add_argument("--root", default=None, help="data root (default: <repository>/data)")
    synth.add_argument("--workers", type=int, default=None, help="generator processes")

    parser.set_defaults(_data_parser=parser)


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "data_command", None)
    if command == "check":
        return run_check(args)
    if command == "download-labels":
        return run_download(args)
    if command == "synth":
        return run_synth(args)
    args._data_parser.print_help()
    return 0


# --------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------


def _check_labels(data, samples: int) -> list[str]:
    """Problems with the label files: missing ones, and a sample that fails to load."""
    import numpy as np

    from bpbreid.data.datasets import missing_labels_message
    from bpbreid.data.parsing import load_parsing_label
    from bpbreid.errors import LabelError

    problems: list[str] = []
    if data.missing_masks:
        per_subset = []
        missing_images = {img for img, _ in data.missing_masks}
        for name, subset in data.subsets().items():
            count = sum(s.img_path in missing_images for s in subset)
            if count:
                per_subset.append(f"{name} {count}/{len(subset)}")
        problems.append(
            f"missing labels ({', '.join(per_subset)}). "
            + missing_labels_message(data.name, data.missing_masks)
        )
    present = [s for subset in data.subsets().values() for s in subset if s.mask_path]
    if not present:
        return problems
    rng = np.random.default_rng(0)
    picked = rng.choice(len(present), size=min(samples, len(present)), replace=False)
    shapes: dict[tuple[int, ...], int] = {}
    for index in sorted(picked.tolist()):
        path = present[index].mask_path
        try:
            fields = load_parsing_label(path)
        except LabelError as exc:
            problems.append(f"bad label file: {exc}")
            continue
        shapes[tuple(fields.shape)] = shapes.get(tuple(fields.shape), 0) + 1
    if shapes:
        described = ", ".join(f"{list(shape)} x{count}" for shape, count in shapes.items())
        print(f"  label arrays (sample of {len(picked)}): {described}")
    return problems


def _check_images(data, samples: int) -> list[str]:
    import numpy as np

    from bpbreid.data.datasets import read_image
    from bpbreid.errors import DatasetError

    every = [s for subset in data.subsets().values() for s in subset]
    if not every:
        return []
    rng = np.random.default_rng(1)
    picked = rng.choice(len(every), size=min(samples, len(every)), replace=False)
    problems = []
    sizes: dict[tuple[int, ...], int] = {}
    for index in sorted(picked.tolist()):
        try:
            image = read_image(every[index].img_path)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        sizes[image.shape] = sizes.get(image.shape, 0) + 1
    if sizes:
        described = ", ".join(f"{h}x{w}" for (h, w, _), _count in sizes.items())
        print(f"  image sizes (sample of {len(picked)}): {described}")
    return problems


def run_check(args: argparse.Namespace) -> int:
    from bpbreid.data.datasets import README_HINT, build_dataset, detect_datasets
    from bpbreid.errors import DatasetError

    root = Path(args.root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root.resolve()} does not exist or is not a folder. {README_HINT}")
    if args.dataset:
        targets = [args.dataset]
    else:
        targets = [name for name, _ in detect_datasets(root)]
        if not targets:
            names = ", ".join(sorted(p.name for p in root.iterdir())) or "(empty)"
            raise DatasetError(
                f"No known dataset layout under {root.resolve()} (found: {names}). Expected "
                "folders such as Market-1501-v15.09.15, DukeMTMC-reID, Occluded_Duke, "
                "Occluded_REID, P-DukeMTMC-reID or synthetic/. Pass --dataset NAME to check "
                f"one explicitly. {README_HINT}"
            )
    masks_dir = None if args.no_labels else args.masks_dir
    broken = 0
    for name in dict.fromkeys(targets):
        print(f"[{name}]")
        try:
            data = build_dataset(
                name,
                root,
                masks_dir=masks_dir,
                require_masks=False,
                extra_query_sets=args.extra_query,
            )
        except DatasetError as exc:
            print(f"  BROKEN: {exc}")
            broken += 1
            continue
        print(data.summary())
        problems = _check_images(data, args.samples)
        if masks_dir is not None:
            problems += _check_labels(data, args.samples)
        if problems:
            broken += 1
            for problem in problems:
                print("  PROBLEM: " + problem.replace("\n", "\n    "))
            print(f"  {name}: BROKEN ({len(problems)} problem(s))")
        else:
            print(f"  {name}: OK")
    return 1 if broken else 0


# --------------------------------------------------------------------------------------
# download-labels, synth
# --------------------------------------------------------------------------------------


def run_download(args: argparse.Namespace) -> int:
    from bpbreid.data.download import download_labels, install_labels_archive

    if args.archive:
        target = install_labels_archive(args.archive, args.dataset, args.root, args.masks_dir)
    else:
        target = download_labels(args.dataset, args.root, args.masks_dir, quiet=args.quiet)
    print(
        f"Labels are in {target}. Check the layout with: python -m bpbreid data check {args.root}"
    )
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from bpbreid.data.datasets import build_dataset
    from bpbreid.errors import DatasetError
    from bpbreid.notebook import find_repo_root

    try:
        from bpbreid.data import synthetic
    except ImportError as exc:
        raise DatasetError(f"The synthetic dataset generator is not available: {exc}.") from None
    generate = getattr(synthetic, "generate", None)
    if generate is None:
        raise DatasetError("bpbreid.data.synthetic has no generate() in this installation.")
    root = Path(args.root).expanduser() if args.root else find_repo_root() / "data"
    kwargs = {} if args.workers is None else {"workers": args.workers}
    dataset_dir = generate(
        root / "synthetic", args.preset, args.seed, args.height, args.width, **kwargs
    )
    print(f"Synthetic dataset in {dataset_dir}")
    print(build_dataset("synthetic", dataset_dir, require_masks=False).summary())
    return 0
