"""Embed and rank your own images with a trained or an official checkpoint.

:class:`FeatureExtractor` loads a checkpoint (one written by ``python -m bpbreid train``, or
an official BPBReID ``.pth`` through :mod:`bpbreid.official`), resizes and normalizes images
exactly as the evaluation does (:func:`bpbreid.data.transforms.build_transforms`, test
pipeline), and returns the configured test embeddings with their visibility scores and the
part attention maps. :meth:`FeatureExtractor.rank` compares a query folder with a gallery
folder with the visibility-aware part-based distance (:func:`bpbreid.metrics.part_based_distance`)
and gives a ranked table and, when :mod:`bpbreid.viz.ranking` is available, the ranking figure.

No labels are needed: the part masks are predicted by the model (labels matter only for the
``external`` part mode or ``test_use_target_segmentation``, which this class does not use).

Example::

    from bpbreid.inference import FeatureExtractor
    extractor = FeatureExtractor("outputs/synthetic_cpu/model.pth")   # device="auto"
    emb = extractor.embed("my_crops/")          # features [N, P, D], visibility [N, P], masks
    ranking = extractor.rank("my_crops/query", "my_crops/gallery", topk=5)
    for row in ranking.table[:5]:
        print(row)
    ranking.figure(0)                            # the official-style ranking figure

Command line: ``python -m bpbreid infer --checkpoint ... --query ... --gallery ...``.

Reference:
    Somers et al., "Body Part-Based Representation Learning for Occluded Person
    Re-Identification", WACV 2023: test embeddings foreground (BN) + parts, compared over
    the parts visible in both images.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bpbreid.config import Config
from bpbreid.data.datasets import IMAGE_EXTENSIONS
from bpbreid.errors import CheckpointError, DatasetError

# "<pid>_c<camera>..." (Market-1501 and DukeMTMC file names): identity and camera when known.
_ID_CAMERA = re.compile(r"^(?P<pid>-?\d+)_c(?P<cam>\d+)")

ImageInput = str | Path | np.ndarray


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.

    Raises:
        ConfigError: CUDA asked for but not available, or an unknown device name.
    """
    if isinstance(device, torch.device):
        return device
    from bpbreid.engine.distributed import resolve_device as resolve

    return resolve(device)


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted); ``masks/`` and hidden names skipped.

    Entries that cannot be read while listing (dangling symbolic links, link loops) are
    skipped with one warning naming them, as ``train`` and ``data check`` do; an image that
    is listed but cannot be decoded is an error when it is read
    (:func:`bpbreid.data.datasets.read_image`). Links to folders are not followed.

    Raises:
        DatasetError: the folder does not exist or holds no image.
    """
    from bpbreid.data.datasets import scan_images, warn_skipped

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetError(f"Image folder {root} does not exist.")
    scan = scan_images(
        root, IMAGE_EXTENSIONS, recursive=True, skip_hidden=True, skip_dirs=("masks",)
    )
    warn_skipped(scan.skipped)
    if not scan.images:
        raise DatasetError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {root}.")
    return scan.images


def identity_and_camera(name: str) -> tuple[int, int]:
    """``(pid, camid)`` from a Market/Duke-style file name (``0002_c1s1_...`` -> (2, 0)).

    Names without that pattern give ``(-1, -1)`` (unknown).
    """
    match = _ID_CAMERA.match(Path(name).name)
    if match is None:
        return -1, -1
    return int(match.group("pid")), int(match.group("cam")) - 1


# --------------------------------------------------------------------------------------
# Loading a model
# --------------------------------------------------------------------------------------


def _as_config(config: Config | str | Path | None) -> Config | None:
    if config is None or isinstance(config, Config):
        return config
    from bpbreid.config import load_config

    return load_config(config)


def load_model(
    checkpoint: str | Path | nn.Module,
    config: Config | str | Path | None = None,
    device: str | torch.device = "auto",
    strict: bool = True,
) -> tuple[nn.Module, Config]:
    """A model in eval mode and its configuration, from any supported checkpoint.

    Args:
        checkpoint: a checkpoint written by this package (``last.pth``/``model.pth``, read
            with ``weights_only=True``), an official BPBReID ``.pth`` (restricted
            unpickler, :mod:`bpbreid.official`), or a model instance (then ``config`` is
            required).
        config: a :class:`Config`, a YAML path or a bundled config name; default: the one
            stored in the checkpoint.
        device: ``auto``, ``cpu``, ``cuda``...
        strict: official checkpoints: refuse keys that do not match (see
            :func:`bpbreid.official.load_official_checkpoint`).

    Raises:
        CheckpointError: missing, corrupt, unsafe or mismatched checkpoint (read by
            :func:`bpbreid.engine.checkpoint.load_any_checkpoint`, as by every command).
    """
    target = resolve_device(device)
    cfg = _as_config(config)
    if isinstance(checkpoint, nn.Module):
        if cfg is None:
            raise CheckpointError(
                "A model instance needs its configuration: FeatureExtractor(model, config=cfg)."
            )
        return checkpoint.to(target).eval(), cfg
    from bpbreid.engine.checkpoint import load_any_checkpoint

    loaded = load_any_checkpoint(checkpoint, target, cfg, strict=strict)
    return loaded.model, loaded.cfg


# --------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------


@dataclass
class Embeddings:
    """Test embeddings of a set of images.

    Attributes:
        features: ``[N, P, D]`` float32 (P = test embeddings, parts expanded).
        visibility: ``[N, P]`` float32 in [0, 1].
        parts_masks: ``[N, K+1, h, w]`` float16 attention maps (channel 0 = background,
            at most 32x16), or None for a global-only model.
        paths: image paths (``"<array i>"`` for arrays given directly).
        names: the P embedding names (``bn_foreground``, ``head``, ...).
        pids, camids: ``[N]`` int64 from Market/Duke-style file names, -1 when unknown.
        arrays: the images given as arrays (by index), kept for the figures.
    """

    features: torch.Tensor
    visibility: torch.Tensor
    parts_masks: torch.Tensor | None
    paths: list[str]
    names: list[str]
    pids: np.ndarray
    camids: np.ndarray
    arrays: dict[int, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def as_dict(self) -> dict[str, Any]:
        """The layout of :func:`bpbreid.engine.evaluation.extract_features` (for figures)."""
        return {
            "features": self.features,
            "visibility": self.visibility,
            "pids": self.pids,
            "camids": self.camids,
            "img_paths": self.paths,
            "parts_masks": self.parts_masks,
            "names": self.names,
        }

    def image(self, index: int) -> np.ndarray:
        """The RGB image ``uint8 [H, W, 3]`` of entry ``index`` (read again from its file)."""
        if index in self.arrays:
            return self.arrays[index]
        from bpbreid.data.datasets import read_image

        return read_image(self.paths[index])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Embeddings:
        return cls(
            features=data["features"],
            visibility=data["visibility"],
            parts_masks=data.get("parts_masks"),
            paths=list(data["img_paths"]),
            names=list(data["names"]),
            pids=np.asarray(data["pids"], dtype=np.int64),
            camids=np.asarray(data["camids"], dtype=np.int64),
        )

    def save(self, path: str | Path) -> Path:
        """Write features, visibility, names and paths to an ``.npz`` file."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            p,
            features=self.features.numpy(),
            visibility=self.visibility.numpy(),
            names=np.array(self.names),
            paths=np.array(self.paths),
            pids=self.pids,
            camids=self.camids,
        )
        return p


class _ImageList(torch.utils.data.Dataset):
    """Images (paths or arrays) -> the loader dicts that the evaluation loop reads."""

    def __init__(self, items: Sequence[ImageInput], transform: Any) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from bpbreid.data.datasets import read_image

        item = self.items[index]
        if isinstance(item, np.ndarray):
            image, name = _rgb_uint8(item, index), f"<array {index}>"
        else:
            image, name = read_image(item), str(item)
        tensor, _ = self.transform(image, None)
        pid, camid = identity_and_camera(name)
        return {"image": tensor, "pid": pid, "camid": camid, "img_path": name}


def _rgb_uint8(array: np.ndarray, index: int) -> np.ndarray:
    if array.ndim != 3 or array.shape[2] != 3:
        raise DatasetError(f"Image {index}: expected an RGB array [H, W, 3], got {array.shape}.")
    if array.dtype != np.uint8:
        scale = 255.0 if float(array.max(initial=0)) <= 1.0 else 1.0
        array = np.clip(array.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def _as_items(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, np.ndarray):
        return [images] if images.ndim == 3 else list(images)
    if isinstance(images, str | Path):
        p = Path(images).expanduser()
        if p.is_dir():
            return list(list_images(p))
        if not p.is_file():
            if p.is_symlink():
                raise DatasetError(
                    f"Image {p} is a dangling symbolic link or a link loop. Repair or remove it."
                )
            raise DatasetError(f"Image {p} does not exist.")
        return [p]
    items = list(images)
    if not items:
        raise DatasetError("No images to embed (empty list).")
    return items


class FeatureExtractor:
    """Embed images with a checkpoint; rank a query set against a gallery.

    Args:
        checkpoint: see :func:`load_model` (this package's checkpoint, an official one, or
            a model instance with ``config``).
        config: override the stored configuration (image size, test embeddings...).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``...
        batch_size: images per forward pass (default ``cfg.test.batch_size``; 32 on CPU).
        workers: DataLoader worker processes (0: load in this process).
        progress: show tqdm progress bars.
        strict: official checkpoints: refuse mismatched keys.
    """

    def __init__(
        self,
        checkpoint: str | Path | nn.Module,
        config: Config | str | Path | None = None,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        workers: int = 0,
        progress: bool = True,
        strict: bool = True,
    ) -> None:
        from bpbreid.data.transforms import build_transforms

        self.device = resolve_device(device)
        self.model, self.cfg = load_model(checkpoint, config, self.device, strict=strict)
        self.transform = build_transforms(self.cfg, train=False, seed=0)
        default_batch = self.cfg.test.batch_size if self.device.type == "cuda" else 32
        self.batch_size = int(batch_size or default_batch)
        self.workers = workers
        self.progress = progress

    @property
    def test_embeddings(self) -> list[str]:
        return list(self.cfg.model.bpbreid.test_embeddings)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` the images are resized to."""
        return int(self.cfg.data.height), int(self.cfg.data.width)

    def embed(self, images: ImageInput | Sequence[ImageInput], desc: str = "embed") -> Embeddings:
        """Test embeddings of images.

        Args:
            images: a folder (every image under it), one image path, a list of paths, or
                RGB arrays ``uint8 [H, W, 3]`` (a list, or one ``[N, H, W, 3]`` array).
            desc: progress-bar label.

        Returns:
            :class:`Embeddings` (tensors on the CPU).
        """
        from bpbreid.engine.evaluation import extract_features

        items = _as_items(images)
        loader = torch.utils.data.DataLoader(
            _ImageList(items, self.transform),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )
        data = extract_features(
            self.model,
            loader,
            self.test_embeddings,
            device=self.device,
            flip=self.cfg.test.flip,
            progress=self.progress,
            cfg=self.cfg,
            desc=desc,
        )
        embeddings = Embeddings.from_dict(data)
        embeddings.arrays = {
            i: _rgb_uint8(x, i) for i, x in enumerate(items) if isinstance(x, np.ndarray)
        }
        return embeddings

    __call__ = embed

    def distance(self, query: Embeddings, gallery: Embeddings) -> torch.Tensor:
        """``[Nq, Ng]`` visibility-aware part-based distances (``cfg.test`` metric)."""
        from bpbreid.metrics import part_based_distance

        return part_based_distance(
            query.features.to(self.device),
            gallery.features.to(self.device),
            query.visibility.to(self.device),
            gallery.visibility.to(self.device),
            metric=self.cfg.test.dist_metric,
            normalize=self.cfg.test.normalize_feature,
        ).cpu()

    def rank(
        self,
        query: ImageInput | Sequence[ImageInput] | Embeddings,
        gallery: ImageInput | Sequence[ImageInput] | Embeddings,
        topk: int = 10,
    ) -> Ranking:
        """Rank the gallery for every query image.

        Args:
            query, gallery: images (as :meth:`embed` takes them) or ready :class:`Embeddings`.
            topk: matches kept per query in the table.

        Returns:
            A :class:`Ranking` (table, distances, figures).
        """
        q = query if isinstance(query, Embeddings) else self.embed(query, desc="query")
        g = gallery if isinstance(gallery, Embeddings) else self.embed(gallery, desc="gallery")
        distances = self.distance(q, g).numpy()
        return Ranking.build(q, g, distances, topk, self.cfg)


# --------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------


@dataclass
class Ranking:
    """Gallery matches of every query.

    Attributes:
        query, gallery: the embeddings compared.
        distances: ``[Nq, Ng]`` float32.
        order: ``[Nq, k]`` gallery indices of the ``k = min(topk, Ng)`` nearest, closest first.
        table: one dict per (query, rank): ``query``, ``rank`` (1-based), ``gallery``,
            ``distance``, ``shared_visible`` (test embeddings visible in both images, out of P),
            ``same_identity`` (True/False when both file names carry an id, else None).
        cfg: the configuration used (distance metric, part names).
    """

    query: Embeddings
    gallery: Embeddings
    distances: np.ndarray
    order: np.ndarray
    table: list[dict[str, Any]]
    cfg: Config

    @classmethod
    def build(
        cls, query: Embeddings, gallery: Embeddings, distances: np.ndarray, topk: int, cfg: Config
    ) -> Ranking:
        k = max(1, min(int(topk), distances.shape[1]))
        order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        qv = (query.visibility > 0).float()
        gv = (gallery.visibility > 0).float()
        table: list[dict[str, Any]] = []
        for qi in range(distances.shape[0]):
            shared = (qv[qi : qi + 1] * gv[order[qi]]).sum(dim=1).long().tolist()
            for rank, gi in enumerate(order[qi]):
                known = query.pids[qi] >= 0 and gallery.pids[gi] >= 0
                table.append(
                    {
                        "query": query.paths[qi],
                        "rank": rank + 1,
                        "gallery": gallery.paths[gi],
                        "distance": float(distances[qi, gi]),
                        "shared_visible": int(shared[rank]),
                        "same_identity": bool(query.pids[qi] == gallery.pids[gi])
                        if known
                        else None,
                    }
                )
        return cls(query, gallery, distances.astype(np.float32), order, table, cfg)

    def matches(self, query_index: int) -> list[dict[str, Any]]:
        """The table rows of one query."""
        k = self.order.shape[1]
        return self.table[query_index * k : (query_index + 1) * k]

    def to_csv(self, path: str | Path) -> Path:
        """Write the table as CSV."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.table[0]))
            writer.writeheader()
            writer.writerows(self.table)
        return p

    def part_distances(self, query_index: int) -> np.ndarray:
        """``[P, Ng]`` distance of every test embedding of one query to the gallery."""
        from bpbreid.metrics import part_based_distance

        _, parts = part_based_distance(
            self.query.features[query_index : query_index + 1],
            self.gallery.features,
            self.query.visibility[query_index : query_index + 1],
            self.gallery.visibility,
            metric=self.cfg.test.dist_metric,
            normalize=self.cfg.test.normalize_feature,
            return_parts_for=[0],
        )
        return parts[:, 0].cpu().numpy()

    def figure(
        self, query_index: int = 0, topk: int | None = None, dpi: float | None = None
    ) -> Any:
        """The ranking figure of one query (:func:`bpbreid.viz.ranking.plot_ranking`).

        Rows are green when both file names carry the same identity, red otherwise; images
        whose names carry no identity show ``id -1``. ``dpi`` defaults to the active style's
        ``figure.dpi``.

        Returns:
            A matplotlib figure.
        """
        from bpbreid.viz.ranking import RankedImage, plot_ranking

        k = min(topk or self.order.shape[1], self.order.shape[1])
        parts = self.part_distances(query_index)

        def item(emb: Embeddings, i: int, **extra: Any) -> Any:
            masks = None if emb.parts_masks is None else emb.parts_masks[i].float().numpy()
            return RankedImage(
                image=emb.image(i),
                pid=int(emb.pids[i]),
                camid=int(emb.camids[i]),
                path=emb.paths[i],
                masks=masks,
                visibility=emb.visibility[i].numpy(),
                **extra,
            )

        query = item(self.query, query_index)
        gallery = [
            item(
                self.gallery,
                int(g),
                part_distances=parts[:, g],
                distance=float(self.distances[query_index, g]),
            )
            for g in self.order[query_index, :k]
        ]
        title = f"query #{query_index}: {Path(self.query.paths[query_index]).name}"
        return plot_ranking(query, gallery, self.gallery.names, title=title, dpi=dpi)

    def save_figures(
        self,
        out_dir: str | Path,
        query_indices: Sequence[int] | None = None,
        dpi: float | None = None,
    ) -> list[Path]:
        """One ranking PNG per query (default: every query) in ``out_dir``.

        ``dpi`` defaults to the active style's ``figure.dpi`` to draw and ``savefig.dpi`` to save.
        """
        import matplotlib.pyplot as plt

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        indices = range(len(self.query)) if query_indices is None else query_indices
        for index in indices:
            fig = self.figure(int(index), dpi=dpi)
            if fig is None:
                break
            path = out / f"ranking_q{int(index):04d}_{Path(self.query.paths[index]).stem}.png"
            fig.savefig(path, dpi=dpi)  # None: savefig.dpi of the active style
            plt.close(fig)
            written.append(path)
        return written
