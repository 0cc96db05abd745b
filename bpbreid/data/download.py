"""The official BPBReID parsing labels: download (Google Drive) and install an archive.

The labels come as one zip archive per dataset in a public Google Drive folder. They
belong under ``<data root>/<dataset folder>/masks/pifpaf_maskrcnn_filtering/<split>/``.
Two steps, separable:

* :func:`download_labels` lists the Drive folder with gdown, downloads the archive of the
  dataset (resumable; a complete archive already on disk is reused) and installs it;
  network or Drive failures become a :class:`~bpbreid.errors.DownloadError` that says
  what to download by hand and where to put it;
* :func:`install_labels_archive` checks a local zip (``zipfile.testzip``) and extracts
  its ``.npy`` files to the official places, whatever folder prefix the archive uses.

Example::

    install_labels_archive("market1501_labels.zip", "market1501", "data")

Reference:
    Official labels: Google Drive folder 1IbCAbjj3XtV3_tFOsCuqBi79ZiDqNc1H (BPBReID README,
    github.com/VlSomers/bpbreid), produced with PifPaf and filtered with Mask R-CNN.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from bpbreid import gdrive
from bpbreid.data.datasets import DATASETS, DEFAULT_MASKS_DIR, DatasetSpec, get_spec
from bpbreid.errors import DownloadError

LABELS_FOLDER_ID = "1IbCAbjj3XtV3_tFOsCuqBi79ZiDqNc1H"
LABELS_FOLDER_URL = gdrive.folder_url(LABELS_FOLDER_ID)
DOWNLOADS_DIR = "_downloads"  # under the data root: archives kept for resuming/reuse

# Words that identify each dataset's archive in the Drive folder (file names are matched
# case-insensitively with '-', '_' and spaces removed), and words that rule one out.
_ARCHIVE_KEYWORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "market1501": (("market",), ()),
    "dukemtmc": (("duke",), ("occluded", "pduke", "partial")),
    "occluded_duke": (("occludedduke",), ()),
    "occluded_reid": (("occludedreid",), ()),
    "p_dukemtmc": (("pduke",), ()),
}


def dataset_folder(spec: DatasetSpec, root: Path) -> Path:
    """The dataset folder under ``root``: an existing one, else the official name."""
    for folder in spec.folders:
        if folder != "." and (root / folder).is_dir():
            return root / folder
    if any(root.name == Path(folder).name for folder in spec.folders):
        return root  # the dataset folder itself was given
    return root / spec.folders[0]


def manual_instructions(dataset: str, root: str | Path, masks_dir: str = DEFAULT_MASKS_DIR) -> str:
    """What to download by hand and where to put it."""
    spec = get_spec(dataset)
    target = dataset_folder(spec, Path(root).expanduser()) / "masks" / masks_dir
    splits = ", ".join(spec.split_folders())
    return (
        f"To install the {spec.title} labels by hand: open {LABELS_FOLDER_URL} in a browser, "
        f"download the {spec.title} archive, then run\n"
        f"  python -m bpbreid data download-labels {spec.name} {root} --archive <the .zip>\n"
        f"or unzip it yourself so that the .npy files land in {target}/<split>/ "
        f"(splits: {splits}). See data/README.md."
    )


def _normalise(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def match_archive(dataset: str, names: list[str]) -> str | None:
    """The archive name in ``names`` that holds ``dataset``'s labels, or None."""
    wanted, excluded = _ARCHIVE_KEYWORDS[get_spec(dataset).name]
    for name in names:
        flat = _normalise(PurePosixPath(name).name)
        if not flat.endswith("zip"):
            continue
        if any(w in flat for w in wanted) and not any(x in flat for x in excluded):
            return name
    return None


def _archive_ok(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False


def _destination(
    member: str, spec: DatasetSpec, masks_dir: str, other_folders: set[str]
) -> PurePosixPath | None:
    """Where a ``.npy`` member goes, relative to ``<dataset>/masks/<masks_dir>``, or None.

    Archives may start at the dataset folder, at ``masks/``, at the label folder or at
    the split folders: the path is cut after the label folder name, else after
    ``masks``, else before the first split folder; what remains must start with one of
    the dataset's split folders (other label variants and stray files are skipped).
    """
    parts = PurePosixPath(member).parts
    if not parts or not parts[-1].endswith(".npy"):
        return None
    if member.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise DownloadError(f"Refusing the archive member '{member}': unsafe path.")
    folders = parts[:-1]
    split_roots = {PurePosixPath(folder).parts[0] for folder in spec.split_folders()}
    if masks_dir in folders:
        cut = len(folders) - 1 - folders[::-1].index(masks_dir)
        prefix, tail = parts[:cut], parts[cut + 1 :]
    elif "masks" in folders:
        cut = folders.index("masks")
        prefix, tail = parts[:cut], parts[cut + 1 :]
    else:
        first = next((i for i, part in enumerate(folders) if part in split_roots), None)
        if first is None:
            return None
        prefix, tail = parts[:first], parts[first:]
    if len(tail) < 2 or tail[0] not in split_roots:
        return None
    if any(part in other_folders for part in prefix):
        return None  # another dataset's labels in a combined archive
    return PurePosixPath(*tail)


def _refuse_conflicts(
    archive: Path, target: Path, members: list[tuple[str, PurePosixPath]]
) -> None:
    """Refuse an extraction plan that needs a path to be both a file and a folder.

    Checked before anything is written, so that a bad archive leaves no half-installed
    label folder behind: extraction would otherwise stop midway on ``FileExistsError`` or
    ``NotADirectoryError``.

    Args:
        archive: the zip (for the message).
        target: ``<dataset>/masks/<masks_dir>``, where the members go.
        members: ``(member name, destination relative to target)`` of each file to extract.

    Raises:
        DownloadError: names both members (or the member and the path on disk).
    """
    files: dict[PurePosixPath, str] = {}
    for name, relative in members:
        files.setdefault(relative, name)
    redo = "The archive is damaged or not an official labels archive: download it again."
    folders: dict[PurePosixPath, str] = {}
    for relative, name in files.items():
        for parent in relative.parents:
            if parent == PurePosixPath("."):
                continue
            if parent in files:
                raise DownloadError(
                    f"{archive} holds both '{files[parent]}' and '{name}': the first is a "
                    f"file at {target / parent}, the second needs a folder there. Refusing "
                    f"to extract anything. {redo}"
                )
            folders.setdefault(parent, name)
    for parent, name in sorted(folders.items()):
        on_disk = target.joinpath(*parent.parts)
        if (on_disk.exists() or on_disk.is_symlink()) and not on_disk.is_dir():
            raise DownloadError(
                f"Cannot extract '{name}' from {archive}: {on_disk} is a file (or a broken "
                "link), not a folder. Move it away (or delete it) and run the command again."
            )
    for relative, name in files.items():
        on_disk = target.joinpath(*relative.parts)
        if on_disk.is_dir():
            raise DownloadError(
                f"Cannot extract '{name}' from {archive}: {on_disk} is a folder. Move it "
                "away (or delete it) and run the command again."
            )


def install_labels_archive(
    archive: str | Path,
    dataset: str,
    root: str | Path,
    masks_dir: str = DEFAULT_MASKS_DIR,
) -> Path:
    """Check a labels zip and extract its ``.npy`` files to the official places.

    Args:
        archive: the zip downloaded from the official Drive folder.
        dataset: registry name (market1501, dukemtmc, occluded_duke, occluded_reid,
            p_dukemtmc).
        root: the data root holding the dataset folders.
        masks_dir: label folder name under ``<dataset>/masks/``.

    Returns:
        ``<root>/<dataset folder>/masks/<masks_dir>``.

    Nothing is extracted unless every member can be: members with unsafe paths, and
    members that would need one path to be both a file and a folder (``query/a.npy`` and
    ``query/a.npy/b.npy``, or a path that is already a folder or a file on disk), are refused
    first, naming them.

    Raises:
        DownloadError: the archive is missing, corrupt, unsafe, self-conflicting or holds no
            label file.
    """
    spec = get_spec(dataset)
    archive = Path(archive).expanduser()
    root = Path(root).expanduser()
    if not archive.is_file():
        raise DownloadError(
            f"Labels archive {archive} does not exist. "
            + manual_instructions(spec.name, root, masks_dir)
        )
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(
            f"{archive} is not a valid zip archive ({exc}): the download is corrupt or "
            "incomplete. Delete it and download it again."
        ) from exc
    target = dataset_folder(spec, root) / "masks" / masks_dir
    others = {
        Path(folder).name
        for other in DATASETS.values()
        if other.name != spec.name
        for folder in other.folders
        if folder != "."
    } - {Path(folder).name for folder in spec.folders}
    with zf:
        try:
            bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            bad = f"({exc})"
        if bad is not None:
            raise DownloadError(
                f"{archive} is corrupt (first bad member: {bad}). Delete it and download it again."
            )
        members: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        for info in zf.infolist():
            if info.is_dir():
                continue
            relative = _destination(info.filename, spec, masks_dir, others)
            if relative is not None:
                members.append((info, relative))
        _refuse_conflicts(archive, target, [(i.filename, rel) for i, rel in members])
        plan = [(info, target.joinpath(*relative.parts)) for info, relative in members]
        if not plan:
            raise DownloadError(
                f"{archive} holds no {spec.title} label files (.npy under "
                f"{', '.join(spec.split_folders())}). Is it the archive of another dataset? "
                + manual_instructions(spec.name, root, masks_dir)
            )
        for info, destination in plan:
            destination.parent.mkdir(parents=True, exist_ok=True)
            partial = destination.with_name(destination.name + ".part")
            with zf.open(info) as source, open(partial, "wb") as sink:
                shutil.copyfileobj(source, sink)
            os.replace(partial, destination)  # never a half-written label file
    print(f"Installed {len(plan)} label files into {target}")
    return target


def download_labels(
    dataset: str,
    root: str | Path,
    masks_dir: str = DEFAULT_MASKS_DIR,
    quiet: bool = False,
    keep_archive: bool = True,
) -> Path:
    """Download the official labels of ``dataset`` from Google Drive and install them.

    The archive is kept in ``<root>/_downloads/`` (a complete one is reused; a partial
    one is resumed).

    Returns:
        ``<root>/<dataset folder>/masks/<masks_dir>``.

    Raises:
        DownloadError: gdown missing, offline, Drive refusing or the archive not found; the
            message says what to download by hand and where to put it.
    """
    spec = get_spec(dataset)
    if spec.name not in _ARCHIVE_KEYWORDS:
        raise DownloadError(f"There are no official parsing labels for {spec.title}.")
    root = Path(root).expanduser()
    manual = manual_instructions(spec.name, root, masks_dir)
    files = gdrive.list_folder(LABELS_FOLDER_ID, what="the labels folder", manual=manual)
    name = match_archive(spec.name, list(files))
    if name is None:
        raise DownloadError(
            f"No {spec.title} archive in {LABELS_FOLDER_URL} (found: "
            f"{', '.join(sorted(files)) or 'nothing'}).\n{manual}"
        )
    archive = gdrive.download_file(
        files[name], root / DOWNLOADS_DIR / name, quiet=quiet, manual=manual, check=_archive_ok
    )
    target = install_labels_archive(archive, spec.name, root, masks_dir)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return target
