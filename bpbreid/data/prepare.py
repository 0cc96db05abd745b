"""Build a dataset from another one on disk: Occluded-Duke from DukeMTMC-reID.

Occluded-Duke (Miao et al., ICCV 2019) is a re-split of DukeMTMC-reID whose queries are
occluded. It is distributed as three lists of file names (``train.list``, ``query.list``,
``gallery.list``, one name per line, github.com/lightas/Occluded-DukeMTMC-Dataset) and a
script that copies the images out of DukeMTMC-reID. :func:`prepare_occluded_duke` does
what that script (``convert_duke_to_occduke.py``) does:

* each split of the lists goes to one folder: train -> ``bounding_box_train``, query ->
  ``query``, gallery -> ``bounding_box_test``;
* each listed image is taken from the same-named split folder of DukeMTMC-reID when it is
  there, otherwise from DukeMTMC-reID's ``bounding_box_test`` (the re-split moved some
  occluded gallery images to the query);

and in addition:

* files are **hard-linked** when the two folders are on one file system (no extra disk
  space; the images are never modified), copied otherwise;
* the labels the DukeMTMC-reID folder has for the listed images come along, from the same
  source folder as the image: ``masks/<dir>/<split>/<stem>...`` (official PifPaf ``.npy``
  labels, renamed to the suffix Occluded-Duke's loader expects, e.g.
  ``<stem>.jpg.confidence_fields.npy`` for ``pifpaf_maskrcnn_filtering``) and the
  human-parsing PNGs ``<split>_parsing_pgt/<stem>.png``;
* the tree is built in a hidden sibling folder and renamed into place at the end, so an
  interrupted run never leaves a half-built ``Occluded_Duke/``; a complete tree is not
  replaced unless ``force``; entries of an incomplete one that the new tree does not
  produce (labels downloaded before the images, say) are kept;
* every listed image is checked before anything is written: one missing from both places
  is an error naming it (and how many there are).

Reference:
    Miao et al., "Pose-Guided Feature Alignment for Occluded Person Re-Identification",
    ICCV 2019; github.com/lightas/Occluded-DukeMTMC-Dataset (``convert_duke_to_occduke.py``).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bpbreid.errors import DatasetError

OCCLUDED_DUKE_FOLDER = "Occluded_Duke"  # the folder name the dataset registry expects
OCCLUDED_DUKE_SOURCE = "https://github.com/lightas/Occluded-DukeMTMC-Dataset"
# (list name, split folder) in the order the official script writes them.
OCCLUDED_DUKE_SPLITS: tuple[tuple[str, str], ...] = (
    ("train", "bounding_box_train"),
    ("query", "query"),
    ("gallery", "bounding_box_test"),
)
FALLBACK_FOLDER = "bounding_box_test"  # where an image moved out of its split comes from
PARSING_SUFFIX = "_parsing_pgt"  # <split>_parsing_pgt/<stem>.png human-parsing class maps


@dataclass(frozen=True)
class FileJob:
    """One file of the new tree: where it comes from, where it goes (relative), what it is."""

    source: Path
    target: str
    kind: str  # "images", "masks/<dir>" or "<split>_parsing_pgt"
    split: str


@dataclass
class PrepareReport:
    """What :func:`prepare_occluded_duke` built.

    Attributes:
        dataset_dir: the new dataset folder.
        images: split folder -> number of images.
        moved: split folder -> images taken from DukeMTMC-reID's ``bounding_box_test``
            because they were not in the same-named split folder.
        labels: label folder (``masks/<dir>`` or ``<split>_parsing_pgt``) -> files carried.
        linked, copied: files hard-linked and copied.
        kept: entries of an earlier incomplete tree kept in the new one.
    """

    dataset_dir: Path
    images: dict[str, int] = field(default_factory=dict)
    moved: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    linked: int = 0
    copied: int = 0
    kept: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{split} {count:,}"
            + (f" ({self.moved[split]:,} from {FALLBACK_FOLDER})" if self.moved.get(split) else "")
            for split, count in self.images.items()
        ]
        lines = [f"Occluded-Duke in {self.dataset_dir}: images {', '.join(parts)}"]
        if self.labels:
            carried = ", ".join(
                f"{folder} {count:,}" for folder, count in sorted(self.labels.items())
            )
            lines.append(f"  labels carried over: {carried}")
        else:
            lines.append(
                "  labels carried over: none (the DukeMTMC-reID folder has no masks/ or *_parsing_pgt/)"
            )
        lines.append(f"  files: {self.linked:,} hard links, {self.copied:,} copies")
        if self.kept:
            lines.append(f"  kept from the earlier incomplete tree: {', '.join(self.kept)}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Lists
# --------------------------------------------------------------------------------------


def find_lists(folder: str | Path) -> dict[str, Path]:
    """``{"train": .../train.list, "query": ..., "gallery": ...}`` in ``folder``.

    ``folder`` may also be a clone of the official repository (the lists are in its
    ``Occluded_Duke/`` sub-folder).

    Raises:
        DatasetError: the folder or one of the lists is missing (names them).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(
            f"List folder {folder} does not exist. It must hold train.list, query.list and "
            f"gallery.list from {OCCLUDED_DUKE_SOURCE} (folder Occluded_Duke/)."
        )
    for where in (folder, folder / OCCLUDED_DUKE_FOLDER):
        lists = {name: where / f"{name}.list" for name, _ in OCCLUDED_DUKE_SPLITS}
        if all(path.is_file() for path in lists.values()):
            return lists
    missing = [
        f"{name}.list"
        for name, _ in OCCLUDED_DUKE_SPLITS
        if not (folder / f"{name}.list").is_file()
    ]
    raise DatasetError(
        f"{folder} lacks {', '.join(missing)}: pass --lists the folder holding train.list, "
        f"query.list and gallery.list from {OCCLUDED_DUKE_SOURCE} (folder Occluded_Duke/)."
    )


def read_list(path: str | Path) -> list[str]:
    """The image file names of one list (one per line; blank lines and duplicates left out).

    Raises:
        DatasetError: unreadable file, or a line that is not a plain file name (a path
            would write outside the dataset folder).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"Cannot read the list {path}: {exc}") from exc
    names: dict[str, None] = {}
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        if name != Path(name).name or name.startswith(".") or "\\" in name:
            raise DatasetError(
                f"{path}, line {number}: '{name}' is not a plain image file name (one name "
                "per line, such as 0005_c2_f0046985.jpg)."
            )
        names[name] = None
    if not names:
        raise DatasetError(f"The list {path} is empty: it should name one image per line.")
    return list(names)


# --------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------


def _names_in(folder: Path) -> set[str]:
    """File names of ``folder`` (empty when it does not exist): one listing, then set look-ups."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries}
    except OSError:
        return set()


def _by_stem(folder: Path) -> dict[str, list[str]]:
    """File names of ``folder`` grouped by stem (the part before the first dot)."""
    grouped: dict[str, list[str]] = {}
    for name in sorted(_names_in(folder)):
        if not name.startswith("."):
            grouped.setdefault(name.split(".", 1)[0], []).append(name)
    return grouped


def _label_name(name: str, stem: str, masks_dir: str) -> str:
    """A DukeMTMC-reID label's name under Occluded-Duke: its loader's suffix for ``masks_dir``."""
    from bpbreid.data.datasets import get_spec

    source, target = (
        get_spec("dukemtmc").mask_suffix(masks_dir),
        get_spec("occluded_duke").mask_suffix(masks_dir),
    )
    return stem + target if name == stem + source else name


def plan_occluded_duke(duke_dir: Path, lists: dict[str, Path]) -> list[FileJob]:
    """Every file of the new tree, images first; checks that every listed image exists.

    Raises:
        DatasetError: listed images found neither in their split folder nor in
            ``bounding_box_test`` (names the first ones and says how many).
    """
    listings = {folder: _names_in(duke_dir / folder) for _, folder in OCCLUDED_DUKE_SPLITS}
    masks_root = duke_dir / "masks"
    masks_dirs = (
        sorted(p.name for p in masks_root.iterdir() if p.is_dir()) if masks_root.is_dir() else []
    )
    labels: dict[tuple[str, str], dict[str, list[str]]] = {}  # (masks dir, split) -> stem -> names
    pngs = {
        folder: _names_in(duke_dir / f"{folder}{PARSING_SUFFIX}")
        for _, folder in OCCLUDED_DUKE_SPLITS
    }
    images: list[FileJob] = []
    extras: list[FileJob] = []
    missing: list[str] = []
    for list_name, split in OCCLUDED_DUKE_SPLITS:
        for name in read_list(lists[list_name]):
            source = split if name in listings[split] else FALLBACK_FOLDER
            if name not in listings[source]:
                missing.append(f"{name} ({list_name}.list)")
                continue
            images.append(FileJob(duke_dir / source / name, f"{split}/{name}", "images", split))
            stem = os.path.splitext(name)[0]
            for masks_dir in masks_dirs:
                key = (masks_dir, source)
                if key not in labels:
                    labels[key] = _by_stem(masks_root / masks_dir / source)
                for label in labels[key].get(stem, []):
                    target = f"masks/{masks_dir}/{split}/{_label_name(label, stem, masks_dir)}"
                    extras.append(
                        FileJob(
                            masks_root / masks_dir / source / label,
                            target,
                            f"masks/{masks_dir}",
                            split,
                        )
                    )
            png = f"{stem}.png"
            if png in pngs[source]:
                folder = f"{split}{PARSING_SUFFIX}"
                extras.append(
                    FileJob(
                        duke_dir / f"{source}{PARSING_SUFFIX}" / png,
                        f"{folder}/{png}",
                        folder,
                        split,
                    )
                )
    if missing:
        shown = ", ".join(missing[:10]) + (
            f", ... ({len(missing) - 10} more)" if len(missing) > 10 else ""
        )
        raise DatasetError(
            f"{len(missing):,} listed image(s) are in neither their split folder of {duke_dir} nor "
            f"its {FALLBACK_FOLDER}/: {shown}. --duke must be the complete DukeMTMC-reID folder "
            f"and --lists the Occluded-Duke lists of {OCCLUDED_DUKE_SOURCE}."
        )
    return images + extras


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------


class _Linker:
    """Hard-link when possible, else copy (and stop trying links across file systems)."""

    def __init__(self, link: bool = True) -> None:
        self.link = link
        self.linked = 0
        self.copied = 0

    def __call__(self, source: Path, target: Path) -> None:
        if self.link:
            try:
                os.link(source, target)
                self.linked += 1
                return
            except OSError as exc:
                # Another file system, or one without hard links: copies from now on.
                if exc.errno not in (
                    errno.EXDEV,
                    errno.EPERM,
                    errno.EMLINK,
                    errno.ENOTSUP,
                    errno.EACCES,
                ):
                    raise DatasetError(f"Cannot link {source} to {target}: {exc}") from exc
                self.link = False
        try:
            shutil.copy2(source, target)
        except OSError as exc:
            raise DatasetError(f"Cannot copy {source} to {target}: {exc}") from exc
        self.copied += 1


def is_complete(dataset_dir: Path, jobs: Sequence[FileJob]) -> bool:
    """Whether ``dataset_dir`` holds every image of the plan."""
    listings: dict[str, set[str]] = {}
    for job in jobs:
        if job.kind != "images":
            continue
        if job.split not in listings:
            listings[job.split] = _names_in(dataset_dir / job.split)
        if Path(job.target).name not in listings[job.split]:
            return False
    return True


def _keep_old_entries(old: Path, new: Path) -> list[str]:
    """Move into ``new`` what ``old`` has and ``new`` lacks (top level, and ``masks/<dir>``).

    An earlier incomplete tree may hold labels downloaded before the images: they are
    worth keeping, and nothing in the new tree conflicts with them.
    """
    kept = []
    for entry in sorted(old.iterdir()):
        target = new / entry.name
        if entry.name == "masks" and entry.is_dir() and target.is_dir():
            for sub in sorted(entry.iterdir()):
                if not (target / sub.name).exists():
                    os.replace(sub, target / sub.name)
                    kept.append(f"masks/{sub.name}")
        elif not target.exists():
            if entry.name == "masks" and entry.is_dir():  # say which label folders
                kept += [f"masks/{sub.name}" for sub in sorted(entry.iterdir())]
            else:
                kept.append(entry.name)
            os.replace(entry, target)
    return kept


def prepare_occluded_duke(
    duke: str | Path,
    lists: str | Path,
    out: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    link: bool = True,
) -> PrepareReport:
    """Build ``<out>/Occluded_Duke/`` from DukeMTMC-reID and the official lists.

    Args:
        duke: the DukeMTMC-reID folder, or a data root holding it.
        lists: folder with ``train.list``, ``query.list``, ``gallery.list``.
        out: the data root to write into (default: the one holding DukeMTMC-reID).
        force: replace a complete ``Occluded_Duke/``.
        progress: a progress bar.
        link: hard-link when possible (False: always copy).

    Returns:
        The :class:`PrepareReport`.

    Raises:
        DatasetError: missing folders or lists, listed images not found, a complete tree
            in the way without ``force``; nothing is written in these cases.
    """
    from tqdm.auto import tqdm

    from bpbreid.data.datasets import find_dataset_dir

    given = Path(duke).expanduser()
    duke_dir = find_dataset_dir("dukemtmc", given)
    root = (
        Path(out).expanduser()
        if out is not None
        else (duke_dir.parent if duke_dir == given else given)
    )
    jobs = plan_occluded_duke(duke_dir, find_lists(lists))
    target = root / OCCLUDED_DUKE_FOLDER
    if target.exists() and not target.is_dir():
        raise DatasetError(f"{target} exists and is not a folder: move it away first.")
    if target.is_dir() and not force and is_complete(target, jobs):
        raise DatasetError(
            f"{target} already holds a complete Occluded-Duke: nothing to do. Pass --force to "
            "build it again (its files are replaced)."
        )
    root.mkdir(parents=True, exist_ok=True)
    # A hidden sibling: same file system (rename is atomic, links work), and the dataset
    # detection skips hidden folders, so a half-built tree is never taken for a dataset.
    work = Path(tempfile.mkdtemp(prefix=f".{OCCLUDED_DUKE_FOLDER}.", suffix=".partial", dir=root))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # mkdtemp's folder is private; the dataset is not
    linker = _Linker(link)
    report = PrepareReport(dataset_dir=target)
    try:
        made: set[Path] = set()
        for job in tqdm(
            jobs, desc="Occluded-Duke", unit="file", disable=None if progress else True, leave=False
        ):
            destination = work / job.target
            if destination.parent not in made:
                destination.parent.mkdir(parents=True, exist_ok=True)
                made.add(destination.parent)
            linker(job.source, destination)
            if job.kind == "images":
                report.images[job.split] = report.images.get(job.split, 0) + 1
                if job.source.parent.name != job.split:
                    report.moved[job.split] = report.moved.get(job.split, 0) + 1
            else:
                label_folder = (
                    job.kind if job.kind.endswith(PARSING_SUFFIX) else f"{job.kind}/{job.split}"
                )
                report.labels[label_folder] = report.labels.get(label_folder, 0) + 1
        if target.is_dir():
            report.kept = _keep_old_entries(target, work)
            trash = Path(
                tempfile.mkdtemp(prefix=f".{OCCLUDED_DUKE_FOLDER}.", suffix=".old", dir=root)
            )
            os.replace(target, trash / OCCLUDED_DUKE_FOLDER)
            os.replace(work, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    report.linked, report.copied = linker.linked, linker.copied
    return report
