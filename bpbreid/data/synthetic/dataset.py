"""A whole synthetic dataset: presets, the image plan, writing in Market-1501 layout, caching.

The layout is Market-1501's (``bounding_box_train/``, ``bounding_box_test/``, ``query/``)
plus ``query_holistic/``: the very same query images (identity, camera, pose, scene) without
their occluder, so occluded and holistic results compare like for like. Every query is
occluded and hides 30-70% of the body (as in Occluded-Duke, where every query is occluded and
only a minority of training and gallery images are); about 20% of training and gallery images
are occluded; the gallery holds distractors (pid 0); every
query identity appears in the gallery under another camera. Labels are stored at
``<dataset>/masks/pifpaf_maskrcnn_filtering/<split>/<stem>.npy``. ``annotations.csv`` records,
for every image, its facing, occluder and hidden fraction; ``meta.json`` (written last) records
the parameters, so a complete set is reused and an incomplete one is never read.

Generation is deterministic: each image's random generator is seeded from
``(seed, split, index)``, so the number of worker processes does not change a byte.

Reference:
    Occluded-Duke protocol: Miao et al. "Pose-Guided Feature Alignment for Occluded Person
    Re-Identification", ICCV 2019. Market-1501 layout: Zheng et al., ICCV 2015.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from bpbreid.data.datasets import DEFAULT_MASKS_DIR as MASKS_DIR
from bpbreid.data.synthetic.render import default_label_stride, render_sample
from bpbreid.errors import DatasetError

GENERATOR_VERSION = 5  # bump whenever the drawing changes: cached sets are then regenerated
SPLIT_FOLDERS: tuple[str, ...] = (
    "bounding_box_train",
    "bounding_box_test",
    "query",
    "query_holistic",
)
NUM_CAMERAS = 6
_SPLIT_CODE = {"bounding_box_train": 1, "bounding_box_test": 2, "query": 3, "query_holistic": 3}

# --------------------------------------------------------------------------------------
# Presets and the dataset plan
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """Sizes of one synthetic dataset.

    Attributes:
        train_ids, train_images: training identities and images per identity.
        test_ids, gallery_images, queries: test identities, gallery images and (occluded)
            queries per test identity.
        distractors: gallery images of identities never queried (pid 0).
        height, width: default image size.
        occluded_fraction: share of training and gallery images with an occluder.
        query_hidden: hidden fraction of occluded queries (Occluded-Duke-like).
        other_hidden: hidden fraction of occluded training/gallery images.
    """

    train_ids: int
    train_images: int
    test_ids: int
    gallery_images: int
    queries: int
    distractors: int
    height: int = 64
    width: int = 32
    occluded_fraction: float = 0.2
    query_hidden: tuple[float, float] = (0.3, 0.7)
    other_hidden: tuple[float, float] = (0.1, 0.6)


PRESETS: dict[str, Preset] = {
    # tests: ~100 images, generated in about a second
    "tiny": Preset(
        train_ids=12, train_images=4, test_ids=8, gallery_images=4, queries=1, distractors=4
    ),
    # notebooks: ~1,000 images in a few seconds
    "small": Preset(
        train_ids=60, train_images=10, test_ids=40, gallery_images=5, queries=1, distractors=40
    ),
    # the demo: 2,400 train, 1,000 gallery, 200 + 200 queries
    "default": Preset(
        train_ids=150, train_images=16, test_ids=100, gallery_images=9, queries=2, distractors=100
    ),
}


@dataclass(frozen=True)
class _Task:
    folder: str
    index: int  # position in its folder (seeds the image)
    pid: int  # written in the file name (0 = distractor)
    appearance_id: int  # whose appearance is drawn
    camera: int
    frame: int
    occluded: bool
    hidden_range: tuple[float, float]
    pool: tuple[int, ...]

    @property
    def stem(self) -> str:
        return f"{self.pid:04d}_c{self.camera}s1_{self.frame:06d}_00"


def _spread_cameras(rng: np.random.Generator, count: int, cameras: Sequence[int]) -> list[int]:
    """``count`` cameras cycling over ``cameras`` in a random order (each used when possible)."""
    order = list(rng.permutation(cameras))
    return [int(order[i % len(order)]) for i in range(count)]


def _plan(preset: Preset, seed: int) -> list[_Task]:
    """Every image of the dataset: identity, camera, occlusion (deterministic from ``seed``)."""
    rng = np.random.default_rng([seed, 0])
    cams = list(range(1, NUM_CAMERAS + 1))
    train_pids = tuple(range(1, preset.train_ids + 1))
    test_pids = tuple(range(preset.train_ids + 1, preset.train_ids + preset.test_ids + 1))
    tasks: list[_Task] = []
    per_folder: dict[str, int] = {}
    frame = 0

    def add(
        folder: str, pid: int, appearance_id: int, camera: int, occluded: bool, hidden, pool
    ) -> None:
        nonlocal frame
        frame += 1
        index = per_folder.get(folder, 0)
        per_folder[folder] = index + 1
        tasks.append(
            _Task(folder, index, pid, appearance_id, camera, frame, occluded, hidden, pool)
        )

    if preset.gallery_images < 2:
        # Cameras cycle over each identity's cameras: two gallery images span two cameras,
        # so every query camera has a gallery match under another camera.
        raise DatasetError("A synthetic preset needs at least 2 gallery images per identity.")

    for pid in train_pids:
        id_cams = sorted(rng.choice(cams, size=int(rng.integers(2, 5)), replace=False).tolist())
        for cam in _spread_cameras(rng, preset.train_images, id_cams):
            occ = bool(rng.random() < preset.occluded_fraction)
            add("bounding_box_train", pid, pid, cam, occ, preset.other_hidden, train_pids)

    queries: list[tuple[int, int]] = []
    for pid in test_pids:
        n_cams = int(rng.integers(2, 5))
        id_cams = rng.choice(cams, size=n_cams, replace=False).tolist()
        query_cams = _spread_cameras(rng, preset.queries, id_cams)
        gallery_cams = _spread_cameras(rng, max(preset.gallery_images, n_cams), id_cams)
        for cam in gallery_cams[: preset.gallery_images]:
            occ = bool(rng.random() < preset.occluded_fraction)
            add("bounding_box_test", pid, pid, cam, occ, preset.other_hidden, test_pids)
        queries += [(pid, cam) for cam in query_cams]
    for k in range(preset.distractors):
        cam = int(rng.choice(cams))
        occ = bool(rng.random() < preset.occluded_fraction)
        # Distractors have identities of their own, never queried: pid 0 in the file name.
        appearance_id = preset.train_ids + preset.test_ids + 1 + k
        add("bounding_box_test", 0, appearance_id, cam, occ, preset.other_hidden, test_pids)
    for pid, cam in queries:
        add("query", pid, pid, cam, True, preset.query_hidden, test_pids)
    for query in [t for t in tasks if t.folder == "query"]:
        # The same image without its occluder: same index (hence the same random stream
        # for person, pose and scene), same file name in its own folder.
        tasks.append(replace(query, folder="query_holistic", occluded=False))
    return tasks


# --------------------------------------------------------------------------------------
# Writing the dataset
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    seed: int
    height: int
    width: int
    label_stride: int
    out_dir: str


_WORKER_SETTINGS: _Settings | None = None


def _init_worker(settings: _Settings) -> None:
    global _WORKER_SETTINGS
    _WORKER_SETTINGS = settings


def _render_task(task: _Task, settings: _Settings | None = None) -> dict:
    """Render and write one image and its label; return its annotation row."""
    s = settings or _WORKER_SETTINGS
    assert s is not None
    # Queries and holistic queries share the code 3: the same person, pose and scene.
    base = [s.seed, _SPLIT_CODE[task.folder], task.index]
    sample = render_sample(
        s.seed,
        task.appearance_id,
        task.camera,
        np.random.default_rng([*base, 0]),
        height=s.height,
        width=s.width,
        occluder=task.occluded,
        occluder_rng=np.random.default_rng([*base, 1]),
        hidden_range=task.hidden_range,
        occluder_pool=task.pool,
        label_stride=s.label_stride,
    )
    out = Path(s.out_dir)
    Image.fromarray(sample.image).save(
        out / task.folder / f"{task.stem}.jpg", quality=95, subsampling=0
    )
    np.save(out / "masks" / MASKS_DIR / task.folder / f"{task.stem}.npy", sample.fields)
    return {
        "folder": task.folder,
        "file": f"{task.stem}.jpg",
        "pid": task.pid,
        "camera": task.camera,
        "facing": sample.facing,
        "occluder": sample.occluder,
        "hidden": round(sample.hidden, 4),
    }


def synthetic_dir(
    root: str | Path,
    preset: str = "small",
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
) -> Path:
    """Where :func:`generate` writes a dataset: ``<root>/<preset>_s<seed>_<H>x<W>``."""
    p = _get_preset(preset)
    return Path(root) / f"{preset}_s{seed}_{height or p.height}x{width or p.width}"


def _get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise DatasetError(
            f"Unknown synthetic preset '{name}'. Valid presets: {', '.join(PRESETS)}."
        )
    return PRESETS[name]


def _expected_meta(preset: str, seed: int, height: int, width: int, label_stride: int) -> dict:
    return {
        "generator": "bpbreid.data.synthetic",
        "version": GENERATOR_VERSION,
        "preset": preset,
        "seed": seed,
        "height": height,
        "width": width,
        "label_height": height // label_stride,
        "label_width": width // label_stride,
        "masks_dir": MASKS_DIR,
        "sizes": asdict(_get_preset(preset)),
    }


def read_meta(dataset_dir: str | Path) -> dict | None:
    """The ``meta.json`` of a generated dataset, or None when absent or unreadable."""
    path = Path(dataset_dir) / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_complete(dataset_dir: Path, expected: dict) -> bool:
    meta = read_meta(dataset_dir)
    if meta is None:
        return False
    return all(meta.get(k) == json.loads(json.dumps(v)) for k, v in expected.items())


def generate(
    root: str | Path,
    preset: str = "small",
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    label_stride: int | None = None,
) -> Path:
    """Generate (or reuse) a synthetic dataset and return its folder.

    The folder (:func:`synthetic_dir`) holds ``bounding_box_train/``, ``bounding_box_test/``,
    ``query/`` (occluded), ``query_holistic/``, the labels under
    ``masks/pifpaf_maskrcnn_filtering/<split>/``, ``annotations.csv`` and ``meta.json``. A
    complete folder with the same parameters is returned at once; otherwise the set is
    written to a temporary folder and renamed into place, so a half-written set is never read.

    Args:
        root: folder holding the synthetic datasets (e.g. ``data/synthetic``).
        preset: ``tiny`` (tests), ``small`` (notebooks) or ``default`` (demo); see :data:`PRESETS`.
        seed: dataset seed: the same seed gives the same bytes.
        height, width: image size (default: the preset's, 64x32); e.g. 256x128 on a GPU.
        workers: processes (default: the number of CPU cores; sets under 300 images are
            drawn in this process). The bytes written do not depend on it.
        progress: show a progress bar and print the generation speed.
        label_stride: label size = image size / stride (default :func:`default_label_stride`).

    Returns:
        The dataset folder.

    Raises:
        DatasetError: unknown preset or invalid size.
    """
    p = _get_preset(preset)
    height, width = int(height or p.height), int(width or p.width)
    if height < 16 or width < 8:
        raise DatasetError(f"Synthetic image size {height}x{width} is too small (at least 16x8).")
    stride = int(label_stride or default_label_stride(height))
    if height % stride or width % stride:
        raise DatasetError(
            f"label_stride={stride} must divide the image size {height}x{width}; choose another."
        )
    target = synthetic_dir(root, preset, seed, height, width)
    expected = _expected_meta(preset, seed, height, width, stride)
    if _is_complete(target, expected):
        return target

    tasks = _plan(p, seed)
    partial = Path(root) / ".partial" / f"{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for folder in SPLIT_FOLDERS:
        (partial / folder).mkdir(parents=True, exist_ok=True)
        (partial / "masks" / MASKS_DIR / folder).mkdir(parents=True, exist_ok=True)
    settings = _Settings(seed, height, width, stride, str(partial))
    start = time.perf_counter()
    try:
        rows = _run_tasks(tasks, settings, workers, progress, preset)
        _write_annotations(partial / "annotations.csv", rows)
        counts = {folder: sum(1 for t in tasks if t.folder == folder) for folder in SPLIT_FOLDERS}
        meta = {
            **expected,
            "counts": counts,
            "identities": {"train": p.train_ids, "test": p.test_ids},
        }
        (partial / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # written last
        _move_into_place(partial, target, expected)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.parent.rmdir()  # only when empty (another generation may be running)
        except OSError:
            pass
    elapsed = time.perf_counter() - start
    if progress:
        print(
            f"synthetic '{preset}' (seed {seed}, {height}x{width}): {len(tasks)} images in "
            f"{elapsed:.1f} s ({len(tasks) / max(elapsed, 1e-9):.0f} images/s) -> {target}"
        )
    return target


def _run_tasks(
    tasks: list[_Task], settings: _Settings, workers: int | None, progress: bool, preset: str
) -> list[dict]:
    from tqdm.auto import tqdm

    if workers is None:
        # Starting processes costs more than drawing a small set in this process.
        workers = 1 if len(tasks) < 300 else (os.cpu_count() or 1)
    bar = tqdm(
        total=len(tasks), desc=f"synthetic {preset}", disable=not progress, leave=False, unit="img"
    )
    rows: list[dict] = []
    try:
        if workers <= 1:
            for task in tasks:
                rows.append(_render_task(task, settings))
                bar.update()
        else:
            import multiprocessing as mp

            method = "fork" if "fork" in mp.get_all_start_methods() else None
            ctx = mp.get_context(method)
            chunk = max(1, min(64, len(tasks) // (workers * 8)))
            with ctx.Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:
                for row in pool.imap(_render_task, tasks, chunksize=chunk):
                    rows.append(row)
                    bar.update()
    finally:
        bar.close()
    return rows


def _write_annotations(path: Path, rows: list[dict]) -> None:
    fieldnames = ["folder", "file", "pid", "camera", "facing", "occluder", "hidden"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def _move_into_place(partial: Path, target: Path, expected: dict) -> None:
    """Rename the finished set onto ``target`` (replacing an outdated or incomplete one)."""
    if target.exists():
        if _is_complete(target, expected):
            return  # another process finished the same set first
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(partial, target)
    except OSError:
        if not _is_complete(target, expected):  # lost a race to a complete set: fine
            raise


def read_annotations(dataset_dir: str | Path) -> list[dict]:
    """The rows of ``annotations.csv``: folder, file, pid, camera, facing, occluder, hidden."""
    path = Path(dataset_dir) / "annotations.csv"
    if not path.is_file():
        raise DatasetError(f"{path} not found: is {dataset_dir} a generated synthetic dataset?")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["pid"], row["camera"], row["hidden"] = (
            int(row["pid"]),
            int(row["camera"]),
            float(row["hidden"]),
        )
    return rows
