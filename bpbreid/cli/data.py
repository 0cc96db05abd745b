"""``python -m bpbreid data check|download-labels|prepare|synth``: check, label, build datasets.

Examples::

    python -m bpbreid data check data                      # every dataset found under data/
    python -m bpbreid data check data --dataset occluded_duke
    python -m bpbreid data check data --sample 500          # a random sample of a huge set
    python -m bpbreid data download-labels market1501 data
    python -m bpbreid data download-labels market1501 data --archive ~/Downloads/market.zip
    python -m bpbreid data synth --preset small --seed 0
    python -m bpbreid data prepare occluded_duke --duke data/DukeMTMC-reID --lists lists/
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bpbreid.cli import common
from bpbreid.parts import DEFAULT_MASKS_DIR, DEFAULT_PNG_FOLDER

if TYPE_CHECKING:
    from bpbreid.data.datasets import ReIDData

T = TypeVar("T")

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
PREPARABLE_DATASETS = ("occluded_duke",)  # built from another dataset (data prepare)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of files, got {value}")
    return value


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
    check.add_argument(
        "--masks-dir",
        default=DEFAULT_MASKS_DIR,
        help=f"label folder under masks/ (default: {DEFAULT_MASKS_DIR})",
    )
    check.add_argument(
        "--sample",
        "--samples",
        dest="sample",
        type=_positive_int,
        default=None,
        metavar="N",
        help="open a random sample of N images and N label files per dataset (huge sets); "
        "default: every file",
    )
    check.add_argument(
        "--labels",
        choices=("auto", "pifpaf", "parsing_png"),
        default="auto",
        help="label source: official PifPaf .npy files under masks/<masks-dir>/, or human-parsing "
        "PNGs in <split>_parsing_pgt/ (default auto: PNGs when such a folder exists and no "
        "masks/<masks-dir>/ does)",
    )
    check.add_argument(
        "--png-folder",
        default=DEFAULT_PNG_FOLDER,
        help=f"parsing-PNG folder of a split, {{split}} = its image folder (default: "
        f"{DEFAULT_PNG_FOLDER})",
    )
    check.add_argument("--no-labels", action="store_true", help="check the images only")
    check.add_argument("--extra-query", action="append", default=[], help="extra query folder")
    common.add_no_progress(check)

    download = sub.add_parser(
        "download-labels",
        help="get the official parsing labels (Google Drive, or a local archive)",
        description="Download the official BPBReID parsing labels of a dataset (needs gdown) "
        "and extract them to <root>/<dataset folder>/masks/<masks dir>/.",
    )
    download.add_argument("dataset", choices=LABELLED_DATASETS)
    download.add_argument("root", help="data root holding the dataset folders")
    download.add_argument("--archive", help="install this zip (downloaded by hand) instead")
    download.add_argument(
        "--masks-dir",
        default=DEFAULT_MASKS_DIR,
        help=f"label folder name (default: {DEFAULT_MASKS_DIR})",
    )
    common.add_no_progress(download, aliases=("--quiet",))

    prepare = sub.add_parser(
        "prepare",
        help="build a dataset from another: Occluded-Duke from DukeMTMC-reID",
        description="Build Occluded-Duke from DukeMTMC-reID and the official lists "
        "(github.com/lightas/Occluded-DukeMTMC-Dataset), as its convert_duke_to_occduke.py "
        "does, into <out>/Occluded_Duke/: hard links when possible (else copies), labels "
        "(masks/, *_parsing_pgt/) carried over, built aside and renamed into place.",
    )
    prepare.add_argument("dataset", choices=PREPARABLE_DATASETS, help="the dataset to build")
    prepare.add_argument(
        "--duke", required=True, help="the DukeMTMC-reID folder (or the data root holding it)"
    )
    prepare.add_argument(
        "--lists",
        required=True,
        help="folder with train.list, query.list and gallery.list (one image name per line)",
    )
    common.add_out(
        prepare,
        help="data root to write Occluded_Duke/ into (default: the one holding DukeMTMC-reID)",
    )
    prepare.add_argument(
        "--force", action="store_true", help="rebuild an Occluded_Duke/ that is already complete"
    )
    common.add_no_progress(prepare)

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
    if command == "prepare":
        return run_prepare(args)
    if command == "synth":
        return run_synth(args)
    args._data_parser.print_help()
    return 0


# --------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------


CHECK_THREADS = 8  # image decoding and np.load release the GIL
MOST_COMMON = 8  # image sizes / label shapes listed by data check


def _pick(items: Sequence[T], sample: int | None, seed: int) -> list[T]:
    """All of ``items``, or a seeded random ``sample`` of them in their original order."""
    if sample is None or sample >= len(items):
        return list(items)
    import numpy as np

    picked = np.random.default_rng(seed).choice(len(items), size=sample, replace=False)
    return [items[i] for i in sorted(picked.tolist())]


def _open_each(
    paths: Sequence[str], read: Callable[[str], tuple[int, ...]], desc: str, progress: bool
) -> tuple[dict[tuple[int, ...], int], list[str]]:
    """Read every path (threads, in order): ``(count per shape, problem messages)``.

    ``read`` returns the array shape or raises a :class:`~bpbreid.errors.BPBReIDError`
    whose message names the file.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from bpbreid.errors import BPBReIDError

    def attempt(path: str) -> tuple[int, ...] | str:
        try:
            return read(path)
        except BPBReIDError as exc:
            return str(exc)

    shapes: dict[tuple[int, ...], int] = {}
    problems: list[str] = []
    workers = max(1, min(CHECK_THREADS, os.cpu_count() or 1, len(paths)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(attempt, paths)
        # disable=None: a bar on a terminal only, never in logs or captured output
        bar = tqdm(
            results,
            total=len(paths),
            desc=desc,
            unit="file",
            leave=False,
            disable=None if progress else True,
        )
        for result in bar:
            if isinstance(result, str):
                problems.append(result)
            else:
                shapes[result] = shapes.get(result, 0) + 1
    return shapes, problems


def _most_common(
    counts: dict[tuple[int, ...], int], show: Callable[[tuple[int, ...]], str], noun: str
) -> str:
    """``"128x64 x12,000, 256x128 x30 (+3 other sizes)"``: the most frequent shapes first.

    DukeMTMC crops come in over a thousand sizes; one line of all of them helps nobody.
    """
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    shown = ", ".join(f"{show(shape)} x{count:,}" for shape, count in ranked[:MOST_COMMON])
    rest = len(ranked) - MOST_COMMON
    if rest > 0:
        others = sum(count for _, count in ranked[MOST_COMMON:])
        shown += f" (+{rest:,} other {noun}, {others:,} files)"
    return shown


def _coverage(checked: int, total: int, noun: str) -> str:
    """``"12,936/12,936 images"`` (what was opened out of what there is)."""
    return f"{checked:,}/{total:,} {noun}"


def _check_images(data: ReIDData, sample: int | None, progress: bool) -> tuple[list[str], int, int]:
    """Open and decode every image (or a sample): ``(problems, checked, total)``."""
    from bpbreid.data.datasets import read_image

    every = [s.img_path for subset in data.subsets().values() for s in subset]
    picked = _pick(every, sample, seed=1)
    sizes, problems = _open_each(
        picked, lambda path: read_image(path).shape, f"{data.name} images", progress
    )
    how = "all" if len(picked) == len(every) else "random sample"
    print(f"  images: opened and decoded {_coverage(len(picked), len(every), 'images')} ({how})")
    if sizes:
        described = _most_common(sizes, lambda size: f"{size[0]}x{size[1]}", "sizes")
        print(f"  image sizes: {described}")
    return problems, len(picked), len(every)


def _check_labels(data: ReIDData, sample: int | None, progress: bool) -> tuple[list[str], int, int]:
    """Missing label files, then load every present one (or a sample) and check it.

    Each label goes through :func:`~bpbreid.data.parsing.load_parsing_label`, as in
    training: a numeric array of shape ``(36, h, w)`` or ``(h, w, 36)``, finite, values in
    [0, 1]. Returns ``(problems, checked, present)``.
    """
    from bpbreid.data.datasets import missing_labels_message
    from bpbreid.data.parsing import label_source_of_file

    problems: list[str] = []
    if data.label_source == "parsing_png":
        # Only training reads parsing PNGs: query and gallery images need none.
        train_images = {s.img_path for s in data.train}
        missing = [m for m in data.missing_masks if m[0] in train_images]
        if missing:
            print(
                f"  WARNING: {len(missing):,} of {len(data.train):,} training images have no "
                f"parsing PNG (e.g. {missing[0][1]}); train without them with "
                "model.bpbreid.masks.missing=drop"
            )
    elif data.missing_masks:
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
    present = [s.mask_path for subset in data.subsets().values() for s in subset if s.mask_path]
    picked = _pick(present, sample, seed=0)
    shapes, bad = _open_each(
        picked,
        lambda path: tuple(label_source_of_file(path).read(path).shape),
        f"{data.name} labels",
        progress,
    )
    problems += [f"bad label file: {message}" for message in bad]
    how = "all" if len(picked) == len(present) else "random sample"
    print(
        f"  labels: loaded {_coverage(len(picked), len(present), 'label files')} present "
        + (
            f"({how}; single-channel class maps, values 0..19, read as body regions)"
            if data.label_source == "parsing_png"
            else f"({how}; shape, dtype, values in [0, 1])"
        )
    )
    if shapes:
        described = _most_common(shapes, lambda shape: str(list(shape)), "shapes")
        print(f"  label arrays: {described}")
    return problems, len(picked), len(present)


def _guess_label_source(name: str, where: Path, masks_dir: str, png_folder: str) -> str:
    """``parsing_png`` when the training split has a PNG folder and no ``masks/<masks_dir>``."""
    from bpbreid.data.datasets import find_dataset_dir, get_spec

    try:
        dataset_dir = find_dataset_dir(name, where)
    except Exception:  # the layout error is reported by build_dataset with its full message
        return "pifpaf"
    train = get_spec(name).splits.get("train", ())
    has_png = any(
        (dataset_dir / png_folder.replace("{split}", folder.path)).is_dir() for folder in train
    )
    return (
        "parsing_png" if has_png and not (dataset_dir / "masks" / masks_dir).is_dir() else "pifpaf"
    )


def run_check(args: argparse.Namespace) -> int:
    """Check every dataset under ``args.root``: layout, then every image and label file.

    By default each image is opened and decoded and each label array loaded and checked,
    because a corrupt file outside a sample would otherwise pass as OK; ``--sample N``
    opens a seeded random sample instead, and the output says exactly how many files were
    opened out of how many. Unreadable folder entries (dangling links, link loops) are
    skipped with a warning, as ``train`` and ``infer`` skip them; unreadable images and
    labels make the dataset BROKEN (exit status 1), as they stop training.
    """
    import warnings

    from bpbreid.data.datasets import README_HINT, build_dataset, skipped_message, survey_datasets
    from bpbreid.errors import DatasetError

    root = Path(args.root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root.resolve()} does not exist or is not a folder. {README_HINT}")
    broken = 0
    if args.dataset:
        targets = [(args.dataset, root)]
    else:
        # The root may be a data root or one dataset folder, recognised by its folder name
        # or, under any other name, by its contents.
        survey = survey_datasets(root)
        targets = [(ident.name, ident.path) for ident in survey if ident.name is not None]
        undecided = [ident for ident in survey if ident.name is None]
        if undecided and not targets:
            ident = undecided[0]
            raise DatasetError(
                f"Cannot tell which dataset {ident.path.resolve()} is: {ident.reason}."
            )
        for ident in undecided:
            print(f"[?] {ident.path}: cannot tell which dataset it is: {ident.reason}.")
            broken += 1
        if not targets:
            names = ", ".join(sorted(p.name for p in root.iterdir())) or "(empty)"
            raise DatasetError(
                f"No known dataset layout under {root.resolve()} (found: {names}). Expected "
                "folders such as Market-1501-v15.09.15, DukeMTMC-reID, Occluded_Duke, "
                "Occluded_REID, P-DukeMTMC-reID or synthetic/, or a dataset folder of any "
                "name holding bounding_box_train/, query/, bounding_box_test/. Pass --dataset "
                f"NAME to check one explicitly. {README_HINT}"
            )
    masks_dir = None if args.no_labels else args.masks_dir
    sample = getattr(args, "sample", None)
    labels_choice = getattr(args, "labels", "auto")
    png_folder = getattr(args, "png_folder", DEFAULT_PNG_FOLDER)
    progress = common.progress_from_args(args)
    for name, where in dict.fromkeys(targets):
        print(f"[{name}]")
        try:
            source = labels_choice
            if source == "auto":
                source = _guess_label_source(name, where, args.masks_dir, png_folder)
            with warnings.catch_warnings():  # skipped entries are printed below instead
                warnings.simplefilter("ignore", UserWarning)
                data = build_dataset(
                    name,
                    where,
                    masks_dir=masks_dir,
                    require_masks=False,
                    extra_query_sets=args.extra_query,
                    label_source=source,
                    png_folder=png_folder,
                )
        except DatasetError as exc:
            print(f"  BROKEN: {exc}")
            broken += 1
            continue
        print(data.summary())
        if data.skipped:
            print("  WARNING: " + skipped_message(data.skipped))
        problems, images_checked, images_total = _check_images(data, sample, progress)
        checked = f"checked {_coverage(images_checked, images_total, 'images')}"
        if masks_dir is not None:
            label_problems, labels_checked, labels_present = _check_labels(data, sample, progress)
            problems += label_problems
            checked += f" and {_coverage(labels_checked, labels_present, 'labels')}"
            if data.label_source == "parsing_png":
                train_images = {s.img_path for s in data.train}
                unlabelled = sum(img in train_images for img, _ in data.missing_masks)
                if unlabelled:
                    checked += f" ({unlabelled:,} training images have no label file)"
            elif data.missing_masks:
                checked += f" ({len(data.missing_masks):,} images have no label file)"
        else:
            checked += "; labels not checked (--no-labels)"
        if images_checked < images_total or (
            masks_dir is not None and labels_checked < labels_present
        ):
            checked += "; the other files were NOT opened (run without --sample to check all)"
        if problems:
            broken += 1
            for problem in problems:
                print("  PROBLEM: " + problem.replace("\n", "\n    "))
            print(f"  {name}: BROKEN ({len(problems)} problem(s); {checked})")
        else:
            warned = f"; {len(data.skipped)} folder entries skipped" if data.skipped else ""
            print(f"  {name}: OK ({checked}{warned})")
    return 1 if broken else 0


# --------------------------------------------------------------------------------------
# download-labels, synth
# --------------------------------------------------------------------------------------


def run_download(args: argparse.Namespace) -> int:
    from bpbreid.data.download import download_labels, install_labels_archive

    if args.archive:
        target = install_labels_archive(args.archive, args.dataset, args.root, args.masks_dir)
    else:
        target = download_labels(
            args.dataset, args.root, args.masks_dir, quiet=not common.progress_from_args(args)
        )
    print(
        f"Labels are in {target}. Check the layout with: python -m bpbreid data check {args.root}"
    )
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    """Build Occluded-Duke (:func:`bpbreid.data.prepare.prepare_occluded_duke`)."""
    from bpbreid.data.prepare import prepare_occluded_duke

    report = prepare_occluded_duke(
        args.duke,
        args.lists,
        out=args.out,
        force=args.force,
        progress=common.progress_from_args(args),
    )
    print(report.summary())
    print(
        f"Check it with: python -m bpbreid data check {report.dataset_dir} --dataset {args.dataset}"
    )
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from bpbreid.data.datasets import build_dataset
    from bpbreid.data.synthetic import generate
    from bpbreid.paths import find_repo_root

    root = Path(args.root).expanduser() if args.root else find_repo_root() / "data"
    kwargs = {} if args.workers is None else {"workers": args.workers}
    dataset_dir = generate(
        root / "synthetic", args.preset, args.seed, args.height, args.width, **kwargs
    )
    print(f"Synthetic dataset in {dataset_dir}")
    print(build_dataset("synthetic", dataset_dir, require_masks=False).summary())
    return 0
