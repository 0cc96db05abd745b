"""``python -m bpbreid labels <images>``: parsing labels for new images from keypoints.

Examples::

    # a folder of person crops: labels in my_crops/../masks/pifpaf_maskrcnn_filtering/my_crops/
    python -m bpbreid labels data/mine/my_crops
    # a dataset folder (every split), with Keypoint R-CNN on the GPU; the data root holding
    # it works too, as for data check and train
    python -m bpbreid labels data/mine --estimator keypointrcnn --download-weights
    python -m bpbreid labels data --dataset occluded_duke
    # keypoints you already have, one JSON per image
    python -m bpbreid labels data/mine/query --estimator json --keypoints data/mine/keypoints/query

Labels that exist are skipped, so the command can be run again after an interruption.
Crops shorter than 256 rows are enlarged before pose estimation (``--min-height``). The last
line gives the share of images where no person was found. Exit code 0 unless no image got a
label from a detected person.
"""

from __future__ import annotations

import argparse

from bpbreid.cli import common
from bpbreid.parts import DEFAULT_MASKS_DIR

UPSCALE_HEIGHT = 256  # bpbreid.labels.generate.UPSCALE_HEIGHT (not imported: --help stays instant)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images",
        help="a folder of person crops, a dataset folder holding split folders, or the data "
        "root holding the dataset folder (as data check and train take it)",
    )
    parser.add_argument(
        "--estimator",
        default="mediapipe",
        choices=("mediapipe", "keypointrcnn", "json"),
        help="pose estimator (mediapipe: pip install 'bpbreid[pose]'; keypointrcnn: "
        "torchvision, weights on request; json: one keypoint file per image)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="registered dataset name: use its split folders and suffix (default: recognised "
        "from the folder's name or contents)",
    )
    common.add_out(
        parser, help="write labels here instead of <dataset>/masks/<masks dir>/ (mirrors the input)"
    )
    parser.add_argument(
        "--masks-dir",
        default=DEFAULT_MASKS_DIR,
        help=f"label folder name (default: {DEFAULT_MASKS_DIR})",
    )
    parser.add_argument(
        "--suffix", default=None, help="label suffix (default .npy or the dataset's)"
    )
    parser.add_argument(
        "--label-stride",
        type=int,
        default=None,
        help="image-to-label downscale (default clamp(height // 32, 1, 8))",
    )
    parser.add_argument(
        "--min-height",
        type=int,
        default=UPSCALE_HEIGHT,
        metavar="PX",
        help=f"enlarge shorter crops to this height before pose estimation, keypoints mapped "
        f"back (default: {UPSCALE_HEIGHT}; 0: never)",
    )
    parser.add_argument("--keypoints", default=None, help="json: folder of <stem>.json files")
    parser.add_argument("--weights", default=None, help="keypointrcnn: local COCO weights file")
    parser.add_argument(
        "--download-weights",
        action="store_true",
        help="keypointrcnn: allow downloading the COCO weights (~170 MB, once)",
    )
    common.add_device(parser, help=f"keypointrcnn: {common.DEVICE_HELP}")
    parser.add_argument(
        "--min-score", type=float, default=None, help="keypointrcnn: detection score threshold"
    )
    parser.add_argument(
        "--min-confidence", type=float, default=None, help="mediapipe: keypoint visibility cut"
    )
    parser.add_argument("--overwrite", action="store_true", help="redo labels that already exist")
    parser.add_argument(
        "--zeros-for-missing",
        action="store_true",
        help="give images without a detected person an all-background label",
    )
    common.add_no_progress(parser)


def run(args: argparse.Namespace) -> int:

    from bpbreid.labels.estimators import build_estimator
    from bpbreid.labels.generate import generate_labels, plan_labels, resolve_label_input

    # The same root as data check and train: a data root, a dataset folder, or images.
    target = resolve_label_input(args.images, args.dataset, args.masks_dir)
    jobs = plan_labels(
        target.folder,
        out=args.out,
        masks_dir=args.masks_dir,
        suffix=args.suffix or target.suffix,
        dataset=target.dataset,
    )
    image_root = target.folder
    estimator = build_estimator(
        args.estimator,
        keypoints_dir=args.keypoints,
        image_root=image_root if args.keypoints else None,
        weights=args.weights,
        download=args.download_weights,
        device=common.device_from_args(args),
        min_score=args.min_score,
        min_confidence=args.min_confidence,
    )
    where = sorted({str(job.label.parent) for job in jobs})
    print(
        f"{len(jobs)} images; labels in {where[0]}"
        + (f" (+{len(where) - 1} folders)" if len(where) > 1 else "")
    )
    report = generate_labels(
        jobs,
        estimator,
        overwrite=args.overwrite,
        zeros_for_missing=args.zeros_for_missing,
        stride=args.label_stride,
        progress=common.progress_from_args(args),
        min_height=args.min_height,
    )
    close = getattr(estimator, "close", None)
    if close is not None:
        close()
    print(report.summary())
    print(report.no_person_line())
    return 1 if report.everything_failed else 0
