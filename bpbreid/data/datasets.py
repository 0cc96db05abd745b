"""Re-id dataset layouts -> lists of samples, the image dataset and the data loaders.

Each supported dataset is described once by a :class:`DatasetSpec` (where its folders are,
how its file names encode the identity and the camera, which suffix its parsing labels
use). :func:`build_dataset` reads a layout into a :class:`ReIDData` with torchreid's
conventions:

* file names give the person id (pid) and the camera (``0002_c1s1_000451_03.jpg`` ->
  pid 2, camera 1); junk images (pid -1) are dropped, distractors (pid 0) stay in the
  gallery, camera ids become 0-based, and training pids are relabelled ``0..N-1``;
* the parsing label of ``<dataset>/<split>/<stem>.jpg`` is
  ``<dataset>/masks/<masks_dir>/<split>/<stem><suffix>`` (suffix ``.npy``, except
  ``.jpg.confidence_fields.npy`` for Occluded-Duke, as in the official code).

Unreadable files follow one policy everywhere (``data check``, ``train``, ``eval``, ``infer``,
``labels``):

* listing a folder (:func:`scan_images`) skips the entries it cannot even classify, such
  as dangling symbolic links, symbolic-link loops and sub-folders it may not open, and
  names them all in ONE warning: a stray link must not stop a 12,000-image dataset, but
  it must not vanish silently either (``data check`` prints them);
* reading an image (:func:`read_image`) that cannot be opened or decoded, be it missing,
  truncated, not an image, or a decompression bomb (a header claiming more pixels than
  Pillow's ``Image.MAX_IMAGE_PIXELS`` limit allows), is an :class:`ImageReadError` naming
  the file and saying what to do, also when raised inside a DataLoader worker process.

Example::

    data = build_dataset("market1501", "data")
    print(data.summary())
    loaders = build_loaders(cfg, data)  # {"train", "query", "gallery", ...}

Reference:
    Official dataset classes of BPBReID (github.com/VlSomers/bpbreid,
    ``torchreid/data/datasets/image/``) and torchreid (github.com/KaiyangZhou/deep-person-reid).
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bpbreid.errors import ConfigError, DatasetError, LabelError
from bpbreid.parts import DEFAULT_MASKS_DIR, DEFAULT_PNG_FOLDER  # noqa: F401  (re-exported)
from bpbreid.paths import REPO_BRANCH, REPO_URL, display_path, find_repo_root

if TYPE_CHECKING:
    from bpbreid.config import Config

# Image files this package reads, lower case with the dot (every folder listing uses it).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
README_HINT = (
    "data/README.md explains where each dataset goes and how to get it "
    f"({REPO_URL}/blob/{REPO_BRANCH}/data/README.md)."
)
LABELS_HINT = "python -m bpbreid data download-labels {name} <data root>"
ROLES = ("train", "query", "gallery")


class Sample(NamedTuple):
    """One image of a re-id dataset.

    Attributes:
        img_path: path of the image file.
        pid: person id (relabelled ``0..N-1`` in the training set; 0 = distractor).
        camid: 0-based camera id.
        mask_path: path of its parsing label (``.npy``), or None when labels are not used.
    """

    img_path: str
    pid: int
    camid: int
    mask_path: str | None


@dataclass(frozen=True)
class SplitFolder:
    """A folder of images that belongs to one subset (train, query, gallery, ...).

    Attributes:
        path: folder relative to the dataset folder (POSIX separators), e.g. ``"query"``.
        nested: images sit in per-identity sub-folders (``<path>/<pid>/<file>``).
        camid: 0-based camera for datasets whose file names carry none (Occluded-ReID).
    """

    path: str
    nested: bool = False
    camid: int | None = None


@dataclass(frozen=True, eq=False)
class DatasetSpec:
    """How one dataset is laid out on disk.

    Attributes:
        name: registry name (``market1501``).
        title: human name (``Market-1501``).
        folders: candidate folders under the data root, the official name first.
        splits: subset -> the folders it is read from.
        name_pattern: regex on the file name with groups ``pid`` and (optionally) ``cam``
            (1-based camera).
        name_example: an example file name, shown when a name does not parse.
        image_exts: image file extensions (lower case).
        mask_suffixes: label suffix per ``masks_dir``; others default to ``.npy``.
        default_extra_queries: extra query folders always read when present.
        source: where to obtain the images.
    """

    name: str
    title: str
    folders: tuple[str, ...]
    splits: dict[str, tuple[SplitFolder, ...]]
    name_pattern: re.Pattern[str]
    name_example: str
    image_exts: tuple[str, ...] = (".jpg",)
    mask_suffixes: dict[str, str] = field(default_factory=dict)
    default_extra_queries: tuple[str, ...] = ()
    source: str = ""

    def mask_suffix(self, masks_dir: str) -> str:
        """The label-file suffix for ``masks_dir`` (official table, ``.npy`` by default)."""
        return self.mask_suffixes.get(masks_dir, ".npy")

    def split_folders(self) -> list[str]:
        return [folder.path for folders in self.splits.values() for folder in folders]


# File names. Market-1501: "0002_c1s1_000451_03.jpg" (pid, camera c1..c6, sequence s1..,
# frame, box); junk images have pid -1. DukeMTMC-reID: "0005_c2_f0046985.jpg" (pid, camera
# c1..c8, frame). Occluded-ReID / P-DukeMTMC: "<pid>_<index>.<ext>" in per-id folders.
MARKET_PATTERN = re.compile(r"^(?P<pid>-?\d+)_c(?P<cam>\d)s\d+_\d+_\d+")
DUKE_PATTERN = re.compile(r"^(?P<pid>-?\d+)_c(?P<cam>\d+)_f\d+")
LOOSE_CAMERA_PATTERN = re.compile(r"^(?P<pid>-?\d+)_c(?P<cam>\d+)")
PID_ONLY_PATTERN = re.compile(r"^(?P<pid>\d+)_")

_STANDARD_SPLITS = {
    "train": (SplitFolder("bounding_box_train"),),
    "query": (SplitFolder("query"),),
    "gallery": (SplitFolder("bounding_box_test"),),
}

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="market1501",
            title="Market-1501",
            folders=("Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501"),
            splits=_STANDARD_SPLITS,
            name_pattern=MARKET_PATTERN,
            name_example="0002_c1s1_000451_03.jpg",
            mask_suffixes={"pifpaf": ".jpg.confidence_fields.npy"},
            source="http://www.liangzheng.org/Project/project_reid.html",
        ),
        DatasetSpec(
            name="dukemtmc",
            title="DukeMTMC-reID",
            folders=("DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID", "dukemtmc-reid"),
            splits=_STANDARD_SPLITS,
            name_pattern=DUKE_PATTERN,
            name_example="0005_c2_f0046985.jpg",
            mask_suffixes={"pifpaf": ".jpg.confidence_fields.npy"},
            source="https://github.com/layumi/DukeMTMC-reID_evaluation (withdrawn in 2019)",
        ),
        DatasetSpec(
            name="occluded_duke",
            title="Occluded-Duke",
            folders=("Occluded_Duke", "occluded_duke"),
            splits=_STANDARD_SPLITS,
            name_pattern=DUKE_PATTERN,
            name_example="0005_c2_f0046985.jpg",
            # The official labels of Occluded-Duke keep the image extension in the name.
            mask_suffixes={
                "pifpaf": ".jpg.confidence_fields.npy",
                "pifpaf_maskrcnn_filtering": ".jpg.confidence_fields.npy",
            },
            source="https://github.com/lightas/Occluded-DukeMTMC-Dataset",
        ),
        DatasetSpec(
            name="occluded_reid",
            title="Occluded-ReID",
            folders=("Occluded_REID", "occluded_reid", "OccludedREID"),
            # Test-only: models are trained on Market-1501. Occluded images are the
            # queries (camera 0), whole-body images the gallery (camera 1), as officially.
            splits={
                "query": (SplitFolder("occluded_body_images", nested=True, camid=0),),
                "gallery": (SplitFolder("whole_body_images", nested=True, camid=1),),
            },
            name_pattern=PID_ONLY_PATTERN,
            name_example="001/001_01.tif",
            image_exts=(".tif", ".tiff", ".jpg", ".png"),
            mask_suffixes={"pifpaf": ".tif.confidence_fields.npy"},
            source="https://github.com/kevinbro96/ICME2018_Occluded-Person-Reidentification_datasets",
        ),
        DatasetSpec(
            name="p_dukemtmc",
            title="P-DukeMTMC-reID",
            folders=("P-DukeMTMC-reID", "P-DukeMTMC-reid", "p_dukemtmc"),
            splits={
                "train": (
                    SplitFolder("train/whole_body_images", nested=True, camid=1),
                    SplitFolder("train/occluded_body_images", nested=True, camid=0),
                ),
                "query": (SplitFolder("test/occluded_body_images", nested=True, camid=0),),
                "gallery": (SplitFolder("test/whole_body_images", nested=True, camid=1),),
            },
            name_pattern=PID_ONLY_PATTERN,
            name_example="0005/0005_c2_f0046985.jpg",
            mask_suffixes={"pifpaf": ".jpg.confidence_fields.npy"},
            source="https://github.com/kevinbro96/ICME2018_Occluded-Person-Reidentification_datasets",
        ),
        DatasetSpec(
            name="synthetic",
            title="Synthetic occluded pedestrians",
            # The generator returns the dataset folder itself; under a data root it lives
            # in synthetic/<variant>/ (see bpbreid.data.synthetic).
            folders=(".",),
            splits=_STANDARD_SPLITS,
            name_pattern=LOOSE_CAMERA_PATTERN,
            name_example="0001_c1s1_000001_00.jpg",
            image_exts=(".jpg", ".png"),
            default_extra_queries=("query_holistic",),
            source="generated: python -m bpbreid data synth",
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name``; an unknown name lists the valid ones."""
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DatasetError(f"Unknown dataset '{name}'. Valid names: {', '.join(DATASETS)}.")
    return DATASETS[key]


@dataclass
class ReIDData:
    """One dataset read from disk: train / query / gallery samples and extra query sets.

    Attributes:
        name: registry name.
        dataset_dir: the dataset folder.
        train, query, gallery: the samples of each subset.
        extra_queries: further query sets, e.g. ``{"query_holistic": [...]}``.
        masks_dir: the label folder name under ``masks/`` (None: labels not used).
        label_source: ``pifpaf`` (``masks/<masks_dir>/<split>/*.npy``) or ``parsing_png``
            (``<png_folder>/<stem>.png``, ``{split}`` replaced by the split's folder).
        png_folder: the parsing-PNG folder pattern (``{split}_parsing_pgt``).
        missing_masks: ``(image, expected label)`` for every image without a label file.
        dropped: training images left out because they have no label file
            (``model.bpbreid.masks.missing: drop``).
        skipped: ``(path, reason)`` of the folder entries left out because they could not
            be read (dangling symbolic links, link loops...), see :func:`scan_images`.
    """

    name: str
    dataset_dir: Path
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    extra_queries: dict[str, list[Sample]] = field(default_factory=dict)
    masks_dir: str | None = DEFAULT_MASKS_DIR
    missing_masks: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    label_source: str = "pifpaf"
    png_folder: str = DEFAULT_PNG_FOLDER
    dropped: list[Sample] = field(default_factory=list)

    @property
    def num_train_pids(self) -> int:
        return len({s.pid for s in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({s.camid for s in self.train})

    def subsets(self) -> dict[str, list[Sample]]:
        """Every subset by name: train, query, gallery, then the extra query sets."""
        out = {"train": self.train, "query": self.query, "gallery": self.gallery}
        out.update(self.extra_queries)
        return out

    def summary(self) -> str:
        """A table of the subsets (subset | ids | images | cameras), as torchreid prints it."""
        title = DATASETS[self.name].title if self.name in DATASETS else self.name
        rows = [
            (name, len({s.pid for s in samples}), len(samples), len({s.camid for s in samples}))
            for name, samples in self.subsets().items()
        ]
        width = max(8, *(len(name) for name, *_ in rows))
        rule = "  " + "-" * (width + 32)
        lines = [f"=> {title} ({display_path(self.dataset_dir)})", rule]
        lines.append(f"  {'subset':<{width}} | {'# ids':>6} | {'# images':>8} | {'# cameras':>9}")
        lines.append(rule)
        for name, ids, images, cams in rows:
            lines.append(f"  {name:<{width}} | {ids:>6} | {images:>8} | {cams:>9}")
        lines.append(rule)
        if self.masks_dir is not None and self.label_source == "parsing_png":
            counts = ", ".join(
                f"{name} {sum(s.mask_path is not None for s in samples)}/{len(samples)}"
                for name, samples in self.subsets().items()
            )
            lines.append(f"  labels: parsing PNGs in {self.png_folder}/ ({counts} present)")
        elif self.masks_dir is not None:
            total = sum(len(s) for s in self.subsets().values())
            found = total - len(self.missing_masks)
            lines.append(f"  labels: masks/{self.masks_dir} ({found}/{total} files present)")
        if self.dropped:
            lines.append(f"  dropped: {len(self.dropped)} training images without a label file")
        if self.skipped:
            lines.append(f"  skipped: {len(self.skipped)} unreadable folder entries")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Finding dataset folders
# --------------------------------------------------------------------------------------


def _listing(path: Path, limit: int = 12) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    except OSError:
        return "(unreadable)"
    if not names:
        return "(empty)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _has_splits(spec: DatasetSpec, path: Path) -> bool:
    return any((path / folder).is_dir() for folder in spec.split_folders())


# Split sizes (train, query, gallery) of the two datasets whose images share DukeMTMC's file
# names: Occluded-Duke is a re-split of DukeMTMC-reID, so a renamed copy is told apart by
# its counts (or by a folder name that says which it is).
DUKE_FAMILY_SIZES: dict[str, tuple[int, int, int]] = {
    "dukemtmc": (16_522, 2_228, 17_661),
    "occluded_duke": (15_618, 2_210, 17_661),
}
_NAME_SAMPLE = 50  # file names read per split folder to recognise the naming scheme
_NAME_SHARE = 0.9  # share of those that must follow one scheme (a stray file is tolerated)


@dataclass(frozen=True)
class Identification:
    """What a folder holds, judged by its name or its contents.

    Attributes:
        path: the folder.
        name: the registry name of the dataset, or None when it cannot be decided.
        reason: how it was decided (``"folder name"``, ``"file names"``, ...), or why it
            could not be.
        family: ``"market"`` or ``"duke"`` for the standard layout (split folders
            ``bounding_box_train``, ``query``, ``bounding_box_test``) with those file
            names; empty otherwise.
    """

    path: Path
    name: str | None
    reason: str
    family: str = ""


def _image_names(folder: Path, limit: int | None) -> list[str]:
    """Up to ``limit`` image file names of ``folder`` (directory order; hidden ones left out)."""
    names: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                hidden = name.startswith(".")
                if hidden or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                names.append(name)
                if limit is not None and len(names) >= limit:
                    break
    except OSError:
        return []
    return names


def _duke_member(path: Path, sizes: tuple[int, int, int]) -> tuple[str | None, str]:
    """DukeMTMC-reID or Occluded-Duke, for a folder of DukeMTMC-named images."""
    for name, expected in DUKE_FAMILY_SIZES.items():
        if sizes == expected:
            shown = "/".join(f"{n:,}" for n in sizes)
            return name, f"split sizes {shown} (train/query/gallery) are {DATASETS[name].title}'s"
    # The folder name, when it says which (an official name was handled before).
    key = re.sub(r"[^a-z]", "", path.name.lower())
    if "occluded" in key or key.startswith("occ"):
        return "occluded_duke", "DukeMTMC file names and 'occluded' in the folder name"
    if "dukemtmcreid" in key:
        return "dukemtmc", "DukeMTMC file names and 'DukeMTMC-reID' in the folder name"
    expected = "; ".join(
        f"{DATASETS[n].title} {'/'.join(f'{c:,}' for c in s)}" for n, s in DUKE_FAMILY_SIZES.items()
    )
    shown = "/".join(f"{n:,}" for n in sizes)
    return None, (
        f"DukeMTMC file names, but its split sizes {shown} (train/query/gallery) match neither "
        f"({expected}) and its name does not say which: pass --dataset dukemtmc or "
        "--dataset occluded_duke"
    )


def identify_dataset_dir(path: str | Path) -> Identification | None:
    """Which dataset the folder ``path`` is, by its name or else by its contents.

    * an official folder name (``Market-1501-v15.09.15``, ``Occluded_Duke``, ...) with its
      split folders decides, as it always did;
    * otherwise the layout: ``occluded_body_images/`` + ``whole_body_images/`` is
      Occluded-ReID, ``train/`` + ``test/`` holding them is P-DukeMTMC-reID, and the standard
      split folders (``bounding_box_train``, ``query``, ``bounding_box_test``) are
      recognised by their file names: ``0002_c1s1_000451_03.jpg`` is Market-1501 (the
      synthetic set when ``query_holistic/`` is there too), ``0005_c2_f0046985.jpg``
      DukeMTMC-reID or Occluded-Duke, which share their file names and are told apart by
      their split sizes (:data:`DUKE_FAMILY_SIZES`) or a folder name that says which.

    Returns:
        None when ``path`` holds no split folder of any dataset; an
        :class:`Identification` whose ``name`` is None when it looks like a dataset but
        which one cannot be decided (``reason`` says why and what to pass).
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        return None
    synthetic = (path / "query_holistic").is_dir()
    for spec in DATASETS.values():
        if spec.name == "synthetic" or not _has_splits(spec, path):
            continue
        if any(path.name == Path(folder).name for folder in spec.folders):
            if spec.splits is _STANDARD_SPLITS and synthetic:
                return Identification(path, "synthetic", "Market-style folders + query_holistic/")
            return Identification(path, spec.name, "folder name")
    for name in ("occluded_reid", "p_dukemtmc"):
        spec = DATASETS[name]
        if all((path / folder).is_dir() for folder in spec.split_folders()):
            return Identification(path, name, "split folders")
    present = [
        folder.path for (folder,) in _STANDARD_SPLITS.values() if (path / folder.path).is_dir()
    ]
    if not present:
        return None
    sample = [name for split in present for name in _image_names(path / split, _NAME_SAMPLE)]
    if not sample:
        return Identification(path, None, f"its split folders ({', '.join(present)}) hold no image")
    family = next(
        (
            family
            for family, pattern in (("market", MARKET_PATTERN), ("duke", DUKE_PATTERN))
            if sum(bool(pattern.match(n)) for n in sample) >= _NAME_SHARE * len(sample)
        ),
        None,
    )
    if family is None:
        return Identification(
            path,
            None,
            f"file names such as {sample[0]} are neither Market-1501's "
            f"({DATASETS['market1501'].name_example}) nor DukeMTMC's "
            f"({DATASETS['dukemtmc'].name_example}): pass --dataset NAME",
        )
    if family == "market":
        if synthetic:
            return Identification(path, "synthetic", "Market-style file names + query_holistic/")
        return Identification(path, "market1501", "Market-1501 file names", family)
    sizes = tuple(
        len(_image_names(path / folder.path, None)) for (folder,) in _STANDARD_SPLITS.values()
    )
    name, reason = _duke_member(path, sizes)  # type: ignore[arg-type]
    return Identification(path, name, reason, family)


def _survey_children(root: Path) -> list[Identification]:
    """:func:`identify_dataset_dir` of each visible sub-folder of ``root`` that is a dataset."""
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    found = []
    for child in children:
        if child.name.startswith((".", "_")) or child.name in ("masks", "synthetic"):
            continue  # hidden / unfinished sets, downloads, labels, the generator's folder
        ident = identify_dataset_dir(child)
        if ident is not None:
            found.append(ident)
    return found


def _candidate_dirs(spec: DatasetSpec, root: Path, any_root: bool = False) -> list[Path]:
    """Folders where ``spec`` may live under ``root``, official first.

    ``root`` itself is a candidate when its name is one of the dataset's folder names, or
    whatever its name with ``any_root`` (an explicit dataset name was given).
    """
    candidates = [root / folder for folder in spec.folders if folder != "."]
    if spec.name == "synthetic":
        candidates.append(root)  # the generator's folder itself, usually
        base = root / "synthetic"
        if base.is_dir():  # skip hidden folders (the generator's unfinished sets)
            candidates += sorted(
                p for p in base.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
            )
    elif any_root or any(root.name == Path(folder).name for folder in spec.folders):
        candidates.append(root)  # the dataset folder itself was given
    return candidates


def _refuse_other_dataset(spec: DatasetSpec, folder: Path) -> None:
    """Stop when ``folder``, given as the ``spec`` dataset itself, is clearly another one.

    Reading DukeMTMC-reID as Occluded-Duke (or Market-1501 as DukeMTMC-reID) would train
    and evaluate on the wrong split, or fail later on a file name; say it now instead.
    """
    ident = identify_dataset_dir(folder)
    if ident is None or ident.name is None or ident.name == spec.name:
        return
    if {ident.name, spec.name} == {"market1501", "synthetic"}:
        return  # the synthetic set uses Market-1501's layout and names by design
    if ident.name == "dukemtmc" and spec.name == "occluded_duke":
        todo = (
            "Build Occluded-Duke from it with: python -m bpbreid data prepare occluded_duke "
            f"--duke {folder} --lists <folder with train.list, query.list, gallery.list>."
        )
    else:
        todo = f"Pass --dataset {ident.name} (config: data.name={ident.name}) or the {spec.title} folder."
    raise DatasetError(
        f"{folder.resolve()} holds {DATASETS[ident.name].title} ({ident.reason}), not "
        f"{spec.title}. {todo} {README_HINT}"
    )


def find_dataset_dir(name: str, root: str | Path) -> Path:
    """The folder of dataset ``name`` under the data ``root``, or ``root`` itself.

    Every command takes the same ``root``: the data root holding dataset folders, or one
    dataset folder. Under a data root the official folder names are looked for first, then
    any sub-folder whose contents are that dataset (:func:`identify_dataset_dir`: a copy
    kept under another name). A folder given as the dataset itself that is clearly another
    dataset (DukeMTMC-reID given as Occluded-Duke, ...) is refused.

    Raises:
        DatasetError: the root or the dataset folder is missing, or it is another dataset;
            the message says where it looked, what is there and how to get the data.
    """
    spec = get_spec(name)
    root = Path(root).expanduser()
    if not root.is_dir():
        todo = (
            "Generate the synthetic set with: python -m bpbreid data synth."
            if spec.name == "synthetic"
            else f"Create it and put the {spec.title} folder ({spec.folders[0]}) inside."
        )
        raise DatasetError(f"Data root {root.resolve()} does not exist. {todo} {README_HINT}")
    candidates = _candidate_dirs(spec, root, any_root=True)
    complete = [path for path in candidates if path.is_dir() and _has_splits(spec, path)]
    if spec.name == "synthetic" and len(complete) > 1 and complete[0] != root:
        raise DatasetError(
            f"Several synthetic datasets under {root / 'synthetic'}: "
            f"{', '.join(p.name for p in complete)}. Pass the folder of the one to use."
        )
    if complete:
        if complete[0] == root:
            _refuse_other_dataset(spec, root)
        return complete[0]
    for path in candidates:  # exists but lacks its split folders: report those
        if path.is_dir() and path != root:
            return path
    # A copy under another folder name, recognised by its contents. A DukeMTMC-style copy
    # whose sizes do not say which of the two it is serves either name it is asked for.
    duke = spec.name in DUKE_FAMILY_SIZES
    by_contents = [
        ident.path
        for ident in _survey_children(root)
        if ident.name == spec.name or (duke and ident.name is None and ident.family == "duke")
    ]
    if len(by_contents) == 1:
        return by_contents[0]
    if len(by_contents) > 1:
        raise DatasetError(
            f"Several {spec.title} folders under {root.resolve()}: "
            f"{', '.join(p.name for p in by_contents)}. Pass the folder of the one to use."
        )
    looked = ", ".join(str(p) for p in candidates) or str(root)
    present = detect_datasets(root)
    known = f" Recognised datasets there: {', '.join(n for n, _ in present)}." if present else ""
    hint = (
        "Generate it with: python -m bpbreid data synth."
        if spec.name == "synthetic"
        else f"Get {spec.title} from {spec.source}."
    )
    raise DatasetError(
        f"{spec.title} not found under {root.resolve()}: looked for {looked}. "
        f"Folders there: {_listing(root)}.{known} {hint} {README_HINT}"
    )


def survey_datasets(root: str | Path) -> list[Identification]:
    """Every dataset folder under the data ``root``, or ``root`` itself when it is one.

    ``root`` is first judged on its own (:func:`identify_dataset_dir`): a dataset folder,
    whatever its name, is the one answer. Otherwise the official folder names are looked
    for (``Market-1501-v15.09.15``, ``Occluded_Duke``, ``synthetic/<set>``, ...), then every
    other sub-folder is judged by its contents. Folders that look like a dataset but cannot
    be told apart (a renamed DukeMTMC-style copy of unknown split sizes) are returned with
    ``name`` None and the reason.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    itself = identify_dataset_dir(root)
    if itself is not None:
        return [itself]
    found: list[Identification] = []
    seen: set[Path] = set()
    for spec in DATASETS.values():
        for path in _candidate_dirs(spec, root):
            if path.resolve() in seen or not path.is_dir() or not _has_splits(spec, path):
                continue
            is_synthetic = (path / "query_holistic").is_dir()
            if (spec.name == "synthetic") != is_synthetic:
                continue
            seen.add(path.resolve())
            found.append(Identification(path, spec.name, "folder name"))
            if spec.name != "synthetic":
                break
    for ident in _survey_children(root):
        if ident.path.resolve() not in seen:
            seen.add(ident.path.resolve())
            found.append(ident)
    return found


def detect_datasets(root: str | Path) -> list[tuple[str, Path]]:
    """``(name, folder)`` of the datasets under ``root`` (or that ``root`` itself is).

    Official folder names first, then folders recognised by their contents; folders that
    cannot be decided are left out (see :func:`survey_datasets`, which reports them).
    """
    return [(i.name, i.path) for i in survey_datasets(root) if i.name is not None]


# --------------------------------------------------------------------------------------
# Reading a layout
# --------------------------------------------------------------------------------------


class ImageScan(NamedTuple):
    """What :func:`scan_images` found in a folder.

    Attributes:
        images: image files, sorted.
        skipped: ``(path, reason)`` of the entries that could not be read.
        folders: the sub-folders of the top folder (links to folders included), sorted.
    """

    images: list[Path]
    skipped: list[tuple[Path, str]]
    folders: list[Path]


def _entry_problem(exc: OSError) -> str:
    """Why a folder entry could not be classified, in words."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or type(exc).__name__


def scan_images(
    folder: str | Path,
    exts: Collection[str],
    recursive: bool = False,
    skip_hidden: bool = False,
    skip_dirs: Collection[str] = (),
) -> ImageScan:
    """The image files of ``folder`` and the entries that could not be read.

    The folder-listing half of the unreadable-file policy (module docstring): an entry
    whose type cannot be determined, i.e. a dangling symbolic link, a symbolic-link loop
    (``ln -s loop loop``), or a sub-folder that cannot be opened, is skipped and reported
    in ``skipped`` rather than raised, so that one stray link does not stop a whole
    dataset; callers warn about them once (:func:`warn_skipped`). Symbolic links to
    folders are not followed when recursing (no cycles); links to files are listed.

    Args:
        folder: the folder to list; it must be readable.
        exts: image extensions, lower case with the dot (``.jpg``).
        recursive: also list every sub-folder.
        skip_hidden: leave out names starting with ``.``.
        skip_dirs: sub-folder names not to enter when recursing (e.g. ``masks``).

    Raises:
        DatasetError: ``folder`` itself cannot be listed (names it).
    """
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    folders: list[Path] = []
    pending = [Path(folder)]
    top = True
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError as exc:
            if top:
                raise DatasetError(
                    f"Cannot list the image folder {directory} ({_entry_problem(exc)}). "
                    "Check that it is a readable folder."
                ) from exc
            skipped.append((directory, f"folder cannot be listed: {_entry_problem(exc)}"))
            continue
        for entry in entries:
            if skip_hidden and entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:  # DirEntry.is_file/is_dir follow links; a loop raises ELOOP
                is_file = entry.is_file()
                is_dir = not is_file and entry.is_dir()
            except OSError as exc:
                skipped.append((path, _entry_problem(exc)))
                continue
            if is_file:
                if os.path.splitext(entry.name)[1].lower() in exts:
                    images.append(path)
            elif is_dir:
                if top:
                    folders.append(path)
                if recursive and entry.name not in skip_dirs and not entry.is_symlink():
                    pending.append(path)
            elif entry.is_symlink() and not os.path.exists(entry.path):
                skipped.append((path, "dangling symbolic link"))
        top = False
    return ImageScan(sorted(images), sorted(skipped), sorted(folders))


def skipped_message(skipped: Sequence[tuple[Path | str, str]], limit: int = 10) -> str:
    """One message naming the skipped entries (the first ``limit``) and what to do."""
    shown = "; ".join(f"{path} ({reason})" for path, reason in skipped[:limit])
    more = f"; ... (+{len(skipped) - limit} more)" if len(skipped) > limit else ""
    noun = "entry" if len(skipped) == 1 else "entries"
    return (
        f"Skipped {len(skipped)} unreadable folder {noun}: {shown}{more}. Remove or repair "
        "them (a link must point to an existing file)."
    )


def warn_skipped(skipped: Sequence[tuple[Path | str, str]], stacklevel: int = 3) -> None:
    """One warning for all the entries a folder listing skipped (nothing when none)."""
    if skipped:
        warnings.warn(skipped_message(skipped), UserWarning, stacklevel=stacklevel)


def _list_images(
    folder: Path, spec: DatasetSpec, nested: bool, skipped: list[tuple[str, str]]
) -> list[Path]:
    """Image files of a split folder (one level of per-id folders when ``nested``), sorted.

    Unreadable entries are appended to ``skipped`` (see :func:`scan_images`).
    """
    if not nested:
        scan = scan_images(folder, spec.image_exts)
        skipped += [(str(path), reason) for path, reason in scan.skipped]
        return scan.images
    top = scan_images(folder, ())  # its per-identity folders (and unreadable entries)
    skipped += [(str(path), reason) for path, reason in top.skipped]
    images: list[Path] = []
    for directory in top.folders:
        try:
            scan = scan_images(directory, spec.image_exts)
        except DatasetError as exc:
            skipped.append((str(directory), str(exc)))
            continue
        skipped += [(str(path), reason) for path, reason in scan.skipped]
        images += scan.images
    return sorted(images)


def parse_file_name(spec: DatasetSpec, img_path: Path, folder: SplitFolder) -> tuple[int, int]:
    """``(pid, 0-based camid)`` from an image file name (pid -1 = junk).

    Raises:
        DatasetError: the name does not follow the dataset's pattern.
    """
    match = spec.name_pattern.match(img_path.name)
    if match is None:
        raise DatasetError(
            f"Cannot read the identity from the file name {img_path}: {spec.title} names look "
            f"like '{spec.name_example}' (pattern {spec.name_pattern.pattern}). Move other "
            f"files out of {img_path.parent} or check that this is a {spec.title} folder."
        )
    pid = int(match["pid"])
    cam = match.groupdict().get("cam")
    if cam is not None:
        camid = int(cam) - 1  # file names count cameras from 1
        if camid < 0:
            raise DatasetError(
                f"Camera 0 in the file name {img_path}: {spec.title} counts cameras from 1 "
                f"('{spec.name_example}')."
            )
    elif folder.camid is not None:
        camid = folder.camid
    else:  # pragma: no cover - every spec without a camera group sets SplitFolder.camid
        raise DatasetError(f"No camera for {img_path} in {spec.title}.")
    return pid, camid


class _MaskIndex:
    """Which label files exist, one directory listing per label folder (fast on big sets)."""

    def __init__(self) -> None:
        self._cache: dict[Path, set[str]] = {}

    def exists(self, path: Path) -> bool:
        parent = path.parent
        if parent not in self._cache:
            try:
                with os.scandir(parent) as entries:
                    self._cache[parent] = {e.name for e in entries}
            except OSError:
                self._cache[parent] = set()
        return path.name in self._cache[parent]


def label_path(dataset_dir: Path, masks_dir: str, folder: str, img_path: Path, suffix: str) -> Path:
    """``<dataset>/masks/<masks_dir>/<split folder>/<image stem><suffix>`` (official rule)."""
    stem = os.path.splitext(img_path.name)[0]
    return dataset_dir / "masks" / masks_dir / folder / f"{stem}{suffix}"


def png_label_path(dataset_dir: Path, png_folder: str, folder: str, img_path: Path) -> Path:
    """``<dataset>/<png_folder with {split}=folder>/<image stem>.png`` (human-parsing PNGs).

    The convention of the SCHP pseudo-labels that public re-id repositories ship:
    ``bounding_box_train_parsing_pgt/0002_c1s1_000451_03.png`` beside ``bounding_box_train/``.
    """
    stem = os.path.splitext(img_path.name)[0]
    try:
        relative = png_folder.format(split=folder)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"model.bpbreid.masks.png_folder='{png_folder}' is not a valid folder pattern "
            f"({exc}); use {{split}} for the split's image folder, e.g. '{DEFAULT_PNG_FOLDER}'."
        ) from None
    return dataset_dir / relative / f"{stem}.png"


def _read_subset(
    spec: DatasetSpec,
    dataset_dir: Path,
    role: str,
    folders: Sequence[SplitFolder],
    masks_dir: str | None,
    mask_index: _MaskIndex,
    missing: list[tuple[str, str]],
    skipped: list[tuple[str, str]],
    label_source: str = "pifpaf",
    png_folder: str = "",
) -> list[Sample]:
    samples: list[Sample] = []
    for folder in folders:
        path = dataset_dir / folder.path
        if not path.is_dir():
            raise DatasetError(
                f"{spec.title}: the {role} folder {path} does not exist. Folders in "
                f"{dataset_dir}: {_listing(dataset_dir)}. Expected "
                f"{', '.join(spec.split_folders())}. {README_HINT}"
            )
        images = _list_images(path, spec, folder.nested, skipped)
        if not images:
            where = f"{path}/<id>/" if folder.nested else f"{path}/"
            raise DatasetError(
                f"{spec.title}: no images ({', '.join(spec.image_exts)}) in {where}. "
                f"Re-extract the dataset archive. {README_HINT}"
            )
        suffix = spec.mask_suffix(masks_dir) if masks_dir else ""
        for img in images:
            pid, camid = parse_file_name(spec, img, folder)
            if pid == -1:
                continue  # junk images are ignored (Market-1501 protocol)
            mask = None
            if masks_dir is not None:
                if label_source == "parsing_png":
                    expected = png_label_path(dataset_dir, png_folder, folder.path, img)
                else:
                    expected = label_path(dataset_dir, masks_dir, folder.path, img, suffix)
                if mask_index.exists(expected):
                    mask = str(expected)
                else:
                    missing.append((str(img), str(expected)))
            samples.append(Sample(str(img), pid, camid, mask))
    return samples


def relabel(samples: Iterable[Sample]) -> list[Sample]:
    """Training pids mapped to ``0..N-1`` in increasing order of the original pid."""
    samples = list(samples)
    mapping = {pid: label for label, pid in enumerate(sorted({s.pid for s in samples}))}
    return [s._replace(pid=mapping[s.pid]) for s in samples]


def missing_labels_message(
    name: str,
    missing: Sequence[tuple[str, str]],
    label_source: str = "pifpaf",
    examples: int = 3,
) -> str:
    """How many label files are missing, a few examples, and how to get them."""
    lines = [f"{len(missing)} parsing-label file(s) missing for {get_spec(name).title}, e.g.:"]
    for img, expected in missing[:examples]:
        lines.append(f"  image {img}\n    expects label {expected}")
    if label_source == "parsing_png":
        lines.append(
            "Human-parsing PNGs (model.bpbreid.masks.source=parsing_png) sit beside the "
            "images, one per image with the same stem (model.bpbreid.masks.png_folder). To "
            "train without the unlabelled images: model.bpbreid.masks.missing=drop."
        )
        return "\n".join(lines)
    lines.append(
        f"Get the official labels with: {LABELS_HINT.format(name=name)} "
        f"(or generate them: python -m bpbreid labels --help). {README_HINT}"
    )
    return "\n".join(lines)


def build_dataset(
    name: str,
    root: str | Path,
    masks_dir: str | None = DEFAULT_MASKS_DIR,
    require_masks: bool | Collection[str] = True,
    extra_query_sets: Sequence[str] | None = None,
    label_source: str = "pifpaf",
    png_folder: str = DEFAULT_PNG_FOLDER,
    drop_unlabelled: bool = False,
) -> ReIDData:
    """Read dataset ``name`` from the data ``root`` (the folder that holds dataset folders).

    Args:
        name: a key of :data:`DATASETS` (market1501, dukemtmc, occluded_duke,
            occluded_reid, p_dukemtmc, synthetic).
        root: the data root, or the dataset folder itself.
        masks_dir: label folder under ``<dataset>/masks/``; None: do not use labels.
        require_masks: stop when an image has no label file (training with part
            supervision needs them all): True for every subset, or the subsets that need
            them (e.g. ``("train",)``: query and gallery images need no labels at test
            time). Elsewhere missing labels give ``mask_path=None`` and are listed in
            :attr:`ReIDData.missing_masks`.
        extra_query_sets: further query folders to read (e.g. ``["query_holistic"]``);
            the dataset's default extra sets are read when present.
        label_source: ``pifpaf`` (official ``.npy`` under ``masks/<masks_dir>/``) or
            ``parsing_png`` (``<png_folder>/<stem>.png``, see :func:`png_label_path`).
        png_folder: the parsing-PNG folder pattern, ``{split}`` = the split's folder.
        drop_unlabelled: leave training images without a label file out (with a warning
            saying how many) instead of stopping.

    Folder entries that cannot be read (dangling symbolic links, link loops) are left out
    with one warning naming them, and listed in :attr:`ReIDData.skipped`; the images
    themselves are opened later, by :func:`read_image` (see the module docstring).

    Raises:
        DatasetError: a folder is missing or a file name does not parse.
        LabelError: ``require_masks`` and some label files are missing.
    """
    spec = get_spec(name)
    dataset_dir = find_dataset_dir(spec.name, root)
    index = _MaskIndex()
    missing: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    if label_source not in ("pifpaf", "parsing_png"):
        raise ConfigError(
            f"Unknown label source '{label_source}' (model.bpbreid.masks.source). "
            "Valid: pifpaf, parsing_png."
        )
    labels = {"label_source": label_source, "png_folder": png_folder}
    missing_by_role: dict[str, list[tuple[str, str]]] = {}
    subsets: dict[str, list[Sample]] = {}
    for role in ROLES:
        missing_by_role[role] = []
        subsets[role] = (
            _read_subset(
                spec,
                dataset_dir,
                role,
                spec.splits[role],
                masks_dir,
                index,
                missing_by_role[role],
                skipped,
                **labels,
            )
            if role in spec.splits
            else []
        )
    extras: dict[str, list[Sample]] = {}
    wanted = list(extra_query_sets or [])
    for extra in (*spec.default_extra_queries, *wanted):
        if extra in extras or extra in spec.split_folders():
            continue
        if extra not in wanted and not (dataset_dir / extra).is_dir():
            continue  # a default extra set is optional
        missing_by_role[extra] = []
        extras[extra] = _read_subset(
            spec,
            dataset_dir,
            extra,
            (SplitFolder(extra),),
            masks_dir,
            index,
            missing_by_role[extra],
            skipped,
            **labels,
        )
    warn_skipped(skipped)
    dropped: list[Sample] = []
    if masks_dir is not None and drop_unlabelled and missing_by_role["train"]:
        dropped = [s for s in subsets["train"] if s.mask_path is None]
        subsets["train"] = [s for s in subsets["train"] if s.mask_path is not None]
        warnings.warn(
            f"{len(dropped)} of {len(dropped) + len(subsets['train'])} training images of "
            f"{spec.title} have no label file and are left out of training "
            f"(model.bpbreid.masks.missing=drop), e.g. {dropped[0].img_path}.",
            stacklevel=2,
        )
        missing_by_role["train"] = []
    for role_missing in missing_by_role.values():
        missing.extend(role_missing)
    needed = set(missing_by_role) if require_masks is True else set(require_masks or ())
    required_missing = [m for role in needed for m in missing_by_role.get(role, [])]
    if masks_dir is not None and required_missing:
        raise LabelError(missing_labels_message(spec.name, required_missing, label_source))
    return ReIDData(
        name=spec.name,
        dataset_dir=dataset_dir,
        train=relabel(subsets["train"]),
        query=subsets["query"],
        gallery=subsets["gallery"],
        extra_queries=extras,
        masks_dir=masks_dir,
        missing_masks=missing,
        skipped=skipped,
        label_source=label_source,
        png_folder=png_folder,
        dropped=dropped,
    )


def resolve_data_root(root: str | Path) -> Path:
    """``cfg.data.root``: relative paths are taken from the repository root."""
    path = Path(root).expanduser()
    return path if path.is_absolute() else find_repo_root() / path


def training_needs_masks(cfg: Config) -> bool:
    """Whether training reads parsing labels (part attention supervision or external masks)."""
    bp = cfg.model.bpbreid
    return bp.masks.type == "disk" and bp.part_mode in ("attention", "external")


def testing_needs_masks(cfg: Config) -> bool:
    """Whether evaluation reads parsing labels (external masks at test time)."""
    bp = cfg.model.bpbreid
    return bp.part_mode == "external" or bp.test_use_target_segmentation != "none"


def build_dataset_from_config(
    cfg: Config, require_masks: bool | None = None, progress: bool = True
) -> ReIDData:
    """The dataset ``cfg.data`` names; the synthetic one is generated first (cached).

    Args:
        cfg: the configuration (``data.name``, ``data.root``, ``model.bpbreid.masks.dir``).
        require_masks: default: when training or testing needs labels.
        progress: a progress bar while the synthetic set is generated.
    """
    root = resolve_data_root(cfg.data.root)
    roles: bool | tuple[str, ...]
    if require_masks is None:
        # Training needs the training labels; query and gallery need labels only when the test
        # itself uses them (external masks).
        roles = (
            True if testing_needs_masks(cfg) else ("train",) if training_needs_masks(cfg) else ()
        )
    else:
        roles = require_masks
    name = get_spec(cfg.data.name).name
    if name == "synthetic":
        from bpbreid.data.synthetic import generate

        syn = cfg.data.synthetic
        root = generate(
            root / "synthetic", syn.preset, syn.seed, syn.height, syn.width, progress=progress
        )
    return build_dataset(
        name,
        root,
        masks_dir=cfg.model.bpbreid.masks.dir,
        require_masks=roles,
        extra_query_sets=cfg.data.extra_query_sets,
        label_source=cfg.model.bpbreid.masks.source,
        png_folder=cfg.model.bpbreid.masks.png_folder,
        drop_unlabelled=cfg.model.bpbreid.masks.missing == "drop" and training_needs_masks(cfg),
    )


# --------------------------------------------------------------------------------------
# Images and loaders
# --------------------------------------------------------------------------------------


def _worker_free_message(message: str, cls: type[BaseException]) -> str:
    """The original message of an exception re-raised by a DataLoader worker.

    A worker process sends the exception's class and its formatted traceback to the main
    process, which rebuilds it as ``cls("Caught <name> in DataLoader worker process N.\n
    Original Traceback ... <module>.<name>: <message>")``. The command line prints an error's
    message, so that would print a traceback; this recovers ``<message>``, which names the
    file. Any other text is returned unchanged.
    """
    if not message.startswith(f"Caught {cls.__name__} ") or "DataLoader worker" not in message:
        return message
    marker = f"\n{cls.__module__}.{cls.__qualname__}: "
    at = message.find(marker)
    if at < 0:
        return message
    return message[at + len(marker) :].rstrip("\n")


class ImageReadError(DatasetError):
    """An image file that cannot be opened or decoded; the message names the file.

    Raised by :func:`read_image`. It keeps its one-line message when it comes from a
    DataLoader worker process (:func:`_worker_free_message`), so ``train``, ``eval`` and
    ``infer`` report a broken image the same way with and without workers.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(_worker_free_message(str(message), type(self)))


class LabelReadError(LabelError):
    """A parsing label that cannot be read (see :class:`ImageReadError`); names the file."""

    def __init__(self, message: str = "") -> None:
        super().__init__(_worker_free_message(str(message), type(self)))


_REEXTRACT = (
    "Replace it (for a dataset: re-extract it from the archive) or remove it; "
    "python -m bpbreid data check lists every such file."
)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as RGB ``uint8 [H, W, 3]``.

    The image-reading half of the unreadable-file policy (module docstring): a file that
    cannot be opened or decoded is an error naming it, never a silent skip, because a
    training set or a gallery that quietly loses images gives wrong numbers. That includes
    a decompression bomb: a header claiming more pixels than Pillow's
    ``PIL.Image.MAX_IMAGE_PIXELS`` safety limit (twice the limit raises in Pillow; between
    one and two times it only warns and the image is read).

    Raises:
        ImageReadError: the file is missing, a broken link, a folder, unreadable, corrupt,
            truncated or a decompression bomb (a :class:`DatasetError`; names the file).
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"), dtype=np.uint8)  # writable copy
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageReadError(
                f"Image file {path} is a dangling symbolic link (its target "
                f"{os.readlink(path)} does not exist). Repair or remove the link."
            ) from None
        raise ImageReadError(f"Image file {path} does not exist. {README_HINT}") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"Refusing the image {path}: its header claims more pixels than Pillow's safety "
            f"limit allows ({exc}), far more than a person crop has: the file is corrupt or "
            f"not a dataset image. {_REEXTRACT} (A genuine huge image needs a higher "
            "PIL.Image.MAX_IMAGE_PIXELS in your own code.)"
        ) from exc
    except OSError as exc:
        problem = {
            errno.ELOOP: "is a symbolic link loop",
            errno.EISDIR: "is a folder, not an image",
            errno.EACCES: "cannot be read (permission denied)",
        }.get(exc.errno or 0)
        if problem is not None:
            raise ImageReadError(f"Image file {path} {problem}. Repair or remove it.") from exc
        raise ImageReadError(
            f"Cannot read the image {path} ({exc}): the file is corrupt or truncated. " + _REEXTRACT
        ) from exc
    except Exception as exc:  # Pillow decoders raise many types on hostile files
        raise ImageReadError(
            f"Cannot decode the image {path} ({type(exc).__name__}: {exc}): the file is "
            "corrupt. " + _REEXTRACT
        ) from exc


def read_label(sample: Sample, size: tuple[int, int] | None = None) -> np.ndarray:
    """The parsing label of ``sample`` as ``float32 [C, h, w]``.

    ``C = 36`` PifPaf fields for an official ``.npy`` label; ``C = 10`` body regions for a
    human-parsing ``.png`` (:data:`bpbreid.data.parsing.PNG_REGIONS`), shrunk to ``size`` by
    area averaging when given (a PNG has the image's full resolution; the targets need 1/4).

    Raises:
        LabelReadError: no label path, a missing file (names image and label) or a bad
            array (a :class:`LabelError`, also from a DataLoader worker: names the file).
    """
    if sample.mask_path is None or not os.path.exists(sample.mask_path):
        raise LabelReadError(
            f"No parsing label for the image {sample.img_path}"
            + (f": expected {sample.mask_path}" if sample.mask_path else "")
            + ". Get the official labels with: python -m bpbreid data download-labels "
            "<dataset> <data root>. " + README_HINT
        )
    from bpbreid.data.parsing import label_source_of_file

    try:
        return label_source_of_file(sample.mask_path).read(sample.mask_path, size)
    except LabelReadError:
        raise
    except LabelError as exc:
        raise LabelReadError(str(exc)) from None


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


Transform = Callable[[np.ndarray, "np.ndarray | None"], tuple[Any, Any]]


class ImageDataset(Dataset):
    """Samples -> dicts of tensors for a DataLoader.

    Each item: ``"image"`` float ``[3, H, W]``, ``"target_masks"`` float ``[K+1, h, w]``
    (only when labels are loaded), ``"pid"`` int, ``"camid"`` int, ``"img_path"`` str.

    Args:
        samples: the samples to serve.
        transform: ``(image uint8 [H0, W0, 3], fields [36, h, w] | None) -> (image tensor,
            target_masks | None)``, e.g. :func:`bpbreid.data.transforms.build_transforms`.
            None: the image as a ``[3, H0, W0]`` tensor in [0, 1], no targets.
        load_masks: read the parsing labels (when every sample has one).
        label_size: ``(h, w)`` parsing PNGs are shrunk to when read (see :func:`read_label`).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Transform | None = None,
        load_masks: bool = True,
        label_size: tuple[int, int] | None = None,
    ) -> None:
        self.samples = list(samples)
        self.label_size = label_size
        self.transform = transform
        # All or none: a batch mixing items with and without targets cannot be collated.
        self.load_masks = (
            load_masks and bool(self.samples) and all(s.mask_path for s in self.samples)
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        image = read_image(sample.img_path)
        fields = read_label(sample, self.label_size) if self.load_masks else None
        if self.transform is not None:
            image_tensor, target_masks = self.transform(image, fields)
        else:
            image_tensor, target_masks = _to_tensor(image), None
        item: dict[str, Any] = {
            "image": image_tensor,
            "pid": sample.pid,
            "camid": sample.camid,
            "img_path": sample.img_path,
        }
        if target_masks is not None:
            item["target_masks"] = target_masks
        return item


def label_size(cfg: Config) -> tuple[int, int]:
    """The resolution parsing PNGs are read at: that of the training targets (1/4 of the image).

    The official PifPaf fields are coarser still (about 1/8); a full-resolution PNG would cost
    ``C H W`` floats per image in memory and per augmentation for no gain in the targets.
    """
    from bpbreid.parts import MASK_STRIDE

    return (max(1, cfg.data.height // MASK_STRIDE), max(1, cfg.data.width // MASK_STRIDE))


def build_loaders(
    cfg: Config,
    data: ReIDData,
    rank: int = 0,
    world_size: int = 1,
    train_masks: bool | None = None,
    test_masks: bool | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """DataLoaders for every subset of ``data``.

    The train loader draws identity-balanced batches (``cfg.train.batch_size`` images =
    P identities x ``cfg.train.num_instances``, the last incomplete batch dropped); with
    ``world_size > 1`` each rank gets a disjoint share of every epoch's batches. Test
    loaders (query, gallery, extra query sets) read in order with ``cfg.test.batch_size``.

    With ``cfg.data.pipeline == "tensor"`` the train loader is a
    :class:`bpbreid.data.pipeline.TensorTrainLoader` (same sampler, batches made from a
    decode-once cache on ``device``); the test loaders are the same either way.

    Args:
        cfg: the configuration.
        data: the dataset.
        rank, world_size: distributed training (one P x K batch per process and step).
        train_masks, test_masks: load parsing labels; default from the config
            (:func:`training_needs_masks`, :func:`testing_needs_masks`).
        device: the training device (tensor pipeline: where batches are made).
        progress: progress bar while the tensor pipeline decodes its cache.

    Returns:
        ``{"train", "query", "gallery", <extra query sets>}`` (no ``"train"`` for test-only
        datasets such as Occluded-ReID).
    """
    from bpbreid.data.samplers import RandomIdentitySampler
    from bpbreid.data.transforms import build_transforms

    workers = max(0, int(cfg.data.workers))
    common: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": workers > 0,
    }
    if train_masks is None:
        train_masks = training_needs_masks(cfg)
    if test_masks is None:
        test_masks = testing_needs_masks(cfg)
    loaders: dict[str, Any] = {}
    if data.train:
        num_pids = data.num_train_pids
        p_ids = cfg.train.batch_size // cfg.train.num_instances
        if num_pids < p_ids:
            raise DatasetError(
                f"{data.dataset_dir}: the training set has {num_pids} identities, fewer than "
                f"the {p_ids} a batch needs (train.batch_size={cfg.train.batch_size} / "
                f"train.num_instances={cfg.train.num_instances}). Lower train.batch_size."
            )
        sampler = RandomIdentitySampler(
            data.train,
            batch_size=cfg.train.batch_size,
            num_instances=cfg.train.num_instances,
            rank=rank,
            world_size=world_size,
            seed=cfg.train.seed,
        )
        if cfg.data.pipeline == "tensor":
            from bpbreid.data.pipeline import TensorTrainLoader

            loaders["train"] = TensorTrainLoader.from_config(
                cfg,
                data.train,
                sampler,
                load_masks=train_masks,
                rank=rank,
                device=device,
                progress=progress,
            )
        else:
            generator = torch.Generator().manual_seed(cfg.train.seed + rank)
            loaders["train"] = DataLoader(
                ImageDataset(
                    data.train,
                    build_transforms(cfg, train=True),
                    load_masks=train_masks,
                    label_size=label_size(cfg),
                ),
                batch_size=cfg.train.batch_size,
                sampler=sampler,
                drop_last=True,
                generator=generator,
                **common,
            )
    test_transform = build_transforms(cfg, train=False)
    for name, samples in data.subsets().items():
        if name == "train" or not samples:
            continue
        loaders[name] = DataLoader(
            ImageDataset(
                samples, test_transform, load_masks=test_masks, label_size=label_size(cfg)
            ),
            batch_size=cfg.test.batch_size,
            shuffle=False,
            drop_last=False,
            **common,
        )
    return loaders
