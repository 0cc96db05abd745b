"""Parsing labels for new images: keypoints -> 36 fields -> ``.npy`` at the official paths.

Where labels go (the official rule, so :mod:`bpbreid.data.datasets` finds them):

* a **dataset folder** (holding split folders such as ``bounding_box_train/``, ``query/``):
  ``<dataset>/masks/pifpaf_maskrcnn_filtering/<split>/<stem>.npy`` for every image of every
  split (images in per-identity sub-folders are flattened, as the official labels are);
* a **folder of images** ``<root>/<name>/``: it is treated as the split ``<name>`` of the
  dataset ``<root>``: ``<root>/masks/pifpaf_maskrcnn_filtering/<name>/<stem>.npy`` (images in
  its sub-folders keep their sub-folder);
* ``out=DIR`` instead: ``DIR/<split>/<stem>.npy`` (dataset folder) or ``DIR/<stem>.npy``
  (folder of images).

The label size is the image size divided by the stride of the synthetic set's rule
(``clamp(height // 32, 1, 8)``): 32x16 for 64x32, 128x64 (Market-1501) and 256x128 crops,
64x32 for 512x256 crops; that is at least the ~30x15 of the official labels and about 1/8 of
large images. Labels are resized with the image when loaded, so any size works; small ones
keep files light.

Generation is idempotent: a label file that exists is skipped (its image is not even read),
so an interrupted run continues where it stopped. Images where no person is found get no
file (or an all-background one with ``zeros_for_missing``) and are listed in the report.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bpbreid.data.datasets import IMAGE_EXTENSIONS
from bpbreid.data.parsing import NUM_FIELDS, render_fields
from bpbreid.errors import DatasetError, LabelError
from bpbreid.parts import DEFAULT_MASKS_DIR

# Crops shorter than this are enlarged before pose estimation (the size MediaPipe's letterbox
# already used; Market-1501 and DukeMTMC crops are 128 and ~250 rows).
UPSCALE_HEIGHT = 256


def label_stride(height: int) -> int:
    """Image-to-label downscale factor: ``clamp(height // 32, 1, 8)`` (the synthetic set's rule)."""
    from bpbreid.data.synthetic import default_label_stride

    return default_label_stride(height)


def label_size(height: int, width: int, stride: int | None = None) -> tuple[int, int]:
    """``(h, w)`` of the label of a ``height x width`` image (see the module docstring)."""
    s = stride or label_stride(height)
    return max(1, height // s), max(1, width // s)


def keypoints_to_label(
    keypoints: np.ndarray | None, height: int, width: int, size: tuple[int, int] | None = None
) -> np.ndarray:
    """The official-format label ``float32 [36, h, w]`` of one person's keypoints.

    Args:
        keypoints: ``[17, 3]`` ``(x, y, confidence)`` in pixels of the image, or None
            (no person: an all-zero label, i.e. background everywhere).
        height, width: image size.
        size: label ``(h, w)`` (default :func:`label_size`).
    """
    size = size or label_size(height, width)
    if keypoints is None:
        return np.zeros((NUM_FIELDS, *size), dtype=np.float32)
    return render_fields(np.asarray(keypoints, dtype=np.float32), height, width, out_size=size)


# --------------------------------------------------------------------------------------
# Planning: which image gets which label file
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelJob:
    """One image and the label file it gets."""

    image: Path
    label: Path


def _images_in(folder: Path, recursive: bool, skipped: list[tuple[Path, str]]) -> list[Path]:
    """Image files of ``folder`` (hidden names left out), sorted.

    Unreadable entries (dangling links, link loops) are added to ``skipped``: the caller
    warns once for all of them, as dataset loading does (``bpbreid.data.datasets``).
    """
    from bpbreid.data.datasets import scan_images

    scan = scan_images(folder, IMAGE_EXTENSIONS, recursive=recursive, skip_hidden=True)
    skipped += [entry for entry in scan.skipped if entry not in skipped]
    return scan.images


def _split_jobs(
    images: Iterable[Path], label_dir: Path, suffix: str, flatten: bool, split_root: Path
) -> list[LabelJob]:
    jobs = []
    for image in images:
        stem = os.path.splitext(image.name)[0]
        if flatten:
            target = label_dir / f"{stem}{suffix}"
        else:
            target = label_dir / image.relative_to(split_root).parent / f"{stem}{suffix}"
        jobs.append(LabelJob(image, target))
    return jobs


@dataclass(frozen=True)
class LabelInput:
    """What ``labels`` was pointed at, resolved.

    Attributes:
        folder: the folder to label (a dataset folder, or a folder of images).
        dataset: the dataset's registry name (its split folders and label suffix are
            used), or None for a folder of images.
        suffix: label suffix; set for one split folder of a recognised dataset.
    """

    folder: Path
    dataset: str | None = None
    suffix: str | None = None


def resolve_label_input(
    path: str | Path, dataset: str | None = None, masks_dir: str = DEFAULT_MASKS_DIR
) -> LabelInput:
    """The folder ``labels`` works on, by the rule ``data check`` and ``train`` follow.

    ``path`` may be the data root holding one dataset folder, a dataset folder (recognised
    by its name or its contents, see :func:`bpbreid.data.datasets.survey_datasets`), one
    split folder of a dataset, or any folder of images. With ``dataset`` the dataset
    folder is looked for in ``path`` or is ``path`` itself
    (:func:`bpbreid.data.datasets.find_dataset_dir`). A recognised dataset gets the label
    paths and suffix its loader reads.

    Raises:
        DatasetError: missing folder; a data root with several datasets; a dataset that
            cannot be told apart (says which ``--dataset`` to pass).
    """
    from bpbreid.data.datasets import (
        find_dataset_dir,
        get_spec,
        identify_dataset_dir,
        survey_datasets,
    )

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"Image folder {root} does not exist. Pass a folder of person crops, a dataset "
            "folder, or the data root holding it."
        )
    if dataset is not None:
        spec = get_spec(dataset)
        return LabelInput(find_dataset_dir(spec.name, root), spec.name)
    survey = survey_datasets(root)
    if len(survey) == 1:
        ident = survey[0]
        if ident.name is None:
            raise DatasetError(f"Cannot tell which dataset {ident.path} is: {ident.reason}.")
        return LabelInput(ident.path, ident.name)
    if len(survey) > 1:
        found = ", ".join(f"{i.path.name} ({i.name or 'undecided'})" for i in survey)
        raise DatasetError(
            f"{root} holds several datasets: {found}. Pass the folder of the one to label "
            "(or --dataset NAME)."
        )
    parent = identify_dataset_dir(root.parent)
    if parent is not None and parent.name is not None:
        spec = get_spec(parent.name)
        if root.name in spec.split_folders():  # one split of a dataset: its label suffix
            return LabelInput(root, None, spec.mask_suffix(masks_dir))
    return LabelInput(root)


def plan_labels(
    input_dir: str | Path,
    out: str | Path | None = None,
    masks_dir: str = DEFAULT_MASKS_DIR,
    suffix: str | None = None,
    dataset: str | None = None,
) -> list[LabelJob]:
    """Decide the label path of every image under ``input_dir`` (see the module docstring).

    Args:
        input_dir: a dataset folder (split sub-folders) or a folder of images.
        out: write under this folder instead of ``<dataset>/masks/<masks_dir>``.
        masks_dir: label folder name under ``masks/``.
        suffix: label file suffix (default: the dataset's official one, else ``.npy``).
        dataset: a registered dataset name: its split folders and suffix are used.

    Folder entries that cannot be read (dangling symbolic links, link loops) are skipped with
    one warning naming them; an image that cannot be decoded is reported by
    :func:`generate_labels` (``unreadable:``), naming the file.

    Raises:
        DatasetError: the folder does not exist or holds no image.
        LabelError: two images would write the same label file.
    """
    from bpbreid.data.datasets import warn_skipped

    root = Path(input_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(f"Image folder {root} does not exist.")
    jobs: list[LabelJob] = []
    skipped: list[tuple[Path, str]] = []
    try:
        if dataset is not None:
            from bpbreid.data.datasets import get_spec

            spec = get_spec(dataset)
            suffix = suffix or spec.mask_suffix(masks_dir)
            base = Path(out).expanduser() if out else root / "masks" / masks_dir
            for folders in spec.splits.values():
                for folder in folders:
                    split = root / folder.path
                    if split.is_dir():
                        images = _images_in(split, folder.nested, skipped)
                        jobs += _split_jobs(images, base / folder.path, suffix, True, split)
            if not jobs:
                raise DatasetError(
                    f"No images in the {spec.title} split folders of {root} "
                    f"(expected {', '.join(spec.split_folders())})."
                )
        else:
            suffix = suffix or ".npy"
            direct = _images_in(root, False, skipped)
            if direct:
                # A folder of images = one split of the dataset above it.
                target = (
                    Path(out).expanduser() if out else root.parent / "masks" / masks_dir / root.name
                )
                jobs = _split_jobs(_images_in(root, True, skipped), target, suffix, False, root)
            else:
                base = Path(out).expanduser() if out else root / "masks" / masks_dir
                for split in sorted(p for p in root.iterdir() if p.is_dir()):
                    if split.name == "masks" or split.name.startswith((".", "_")):
                        continue
                    images = _images_in(split, True, skipped)
                    jobs += _split_jobs(images, base / split.name, suffix, True, split)
            if not jobs:
                raise DatasetError(
                    f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {root} or its sub-folders."
                )
        seen: dict[Path, Path] = {}
        for job in jobs:
            if job.label in seen:
                raise LabelError(
                    f"Images {seen[job.label]} and {job.image} would both write {job.label} "
                    "(same file name in two sub-folders of one split, which the official layout "
                    "flattens). Rename one of them."
                )
            seen[job.label] = job.image
    finally:  # also when no image is found: say which entries were unreadable
        warn_skipped(skipped)
    return jobs


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


@dataclass
class LabelReport:
    """What a labelling run did.

    Attributes:
        written: label files written.
        skipped: images whose label already existed.
        no_person: images where the estimator found nobody.
        failed: ``(image, reason)`` for unreadable images.
        zeros_written: no-person images that got an all-background label.
    """

    written: list[Path] = field(default_factory=list)
    skipped: int = 0
    no_person: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    zeros_written: int = 0

    @property
    def attempted(self) -> int:
        """Images that needed a label this run."""
        return len(self.written) - self.zeros_written + len(self.no_person) + len(self.failed)

    @property
    def examined(self) -> int:
        """Images the estimator looked at this run (neither already done nor unreadable)."""
        return len(self.written) - self.zeros_written + len(self.no_person)

    def no_person_line(self) -> str:
        """``no person found in N of M images (x%)``: the estimator's miss rate this run."""
        if not self.examined:
            return "no person found in 0 of 0 images (no image needed a label this run)"
        share = 100.0 * len(self.no_person) / self.examined
        return f"no person found in {len(self.no_person)} of {self.examined} images ({share:.1f}%)"

    @property
    def everything_failed(self) -> bool:
        """No image has a label from a person: none existed and none was found this run."""
        return self.attempted > 0 and self.skipped == 0 and len(self.written) == self.zeros_written

    def summary(self, limit: int = 10) -> str:
        lines = [
            f"labels written: {len(self.written)} (all-background: {self.zeros_written}); "
            f"already done: {self.skipped}; no person: {len(self.no_person)}; "
            f"unreadable: {len(self.failed)}"
        ]
        if self.no_person:
            names = ", ".join(p.name for p in self.no_person[:limit])
            more = f" (+{len(self.no_person) - limit} more)" if len(self.no_person) > limit else ""
            lines.append(f"no person found in: {names}{more}")
            if self.zeros_written < len(self.no_person):
                lines.append(
                    "  these images have no label file: training with labels will report them "
                    "missing; rerun with --zeros-for-missing to give them all-background "
                    "labels, or try another --estimator."
                )
        for image, reason in self.failed[:limit]:
            lines.append(f"unreadable: {image}: {reason}")
        return "\n".join(lines)


def save_label(path: Path, fields: np.ndarray) -> None:
    """``np.save`` to a temporary file then rename: never a half-written label."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(fields, dtype=np.float32))
    os.replace(tmp, path)


def generate_labels(
    jobs: Sequence[LabelJob],
    estimator: object,
    overwrite: bool = False,
    zeros_for_missing: bool = False,
    stride: int | None = None,
    progress: bool = True,
    min_height: int = UPSCALE_HEIGHT,
) -> LabelReport:
    """Estimate keypoints and write one label per job.

    A crop shorter than ``min_height`` rows is enlarged before the estimator sees it
    (:func:`~bpbreid.labels.keypoints.upscale`; pose models miss many people in 128x64
    crops) and the keypoints are mapped back to its pixels; the label keeps the size of
    the original image. Estimators whose ``upscale`` attribute is False get the image as is.

    Args:
        jobs: from :func:`plan_labels`.
        estimator: a pose estimator (``(image, path) -> [17, 3] | None``), see
            :mod:`bpbreid.labels.estimators`.
        overwrite: redo labels that exist (default: skip them).
        zeros_for_missing: give no-person images an all-background label (default: none).
        stride: label stride (default :func:`label_stride` of each image).
        progress: show a tqdm bar.
        min_height: enlarge crops to at least this many rows for the estimator (0: never).

    Returns:
        The :class:`LabelReport`.
    """
    from tqdm.auto import tqdm

    from bpbreid.data.datasets import read_image
    from bpbreid.labels.keypoints import downscale_keypoints, upscale

    if not getattr(estimator, "upscale", True):
        min_height = 0
    report = LabelReport()
    todo = []
    for job in jobs:
        if not overwrite and job.label.is_file() and job.label.stat().st_size > 0:
            report.skipped += 1
        else:
            todo.append(job)
    for job in tqdm(todo, desc="labels", unit="img", disable=not progress, leave=False):
        try:
            image = read_image(job.image)
        except DatasetError as exc:
            report.failed.append((job.image, str(exc)))
            continue
        height, width = image.shape[:2]
        size = label_size(height, width, stride)
        seen, scale_x, scale_y = upscale(image, min_height)
        keypoints = estimator(seen, job.image)  # type: ignore[operator]
        if keypoints is not None and seen is not image:
            keypoints = downscale_keypoints(keypoints, scale_x, scale_y)
        if keypoints is None or not (np.asarray(keypoints)[:, 2] > 0).any():
            report.no_person.append(job.image)
            if not zeros_for_missing:
                continue
            fields = keypoints_to_label(None, height, width, size)
            report.zeros_written += 1
        else:
            fields = keypoints_to_label(keypoints, height, width, size)
        save_label(job.label, fields)
        report.written.append(job.label)
    return report
