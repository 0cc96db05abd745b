"""Decode once, augment per batch: the tensor training pipeline (``data.pipeline: tensor``).

The reference pipeline (:mod:`bpbreid.data.transforms`, ``data.pipeline: reference``) decodes a
JPEG, reads a label file and runs an albumentations ``Compose`` for every image of every step,
in DataLoader workers. This module does the reading once and the augmentation as tensor
operations on whole batches, on the device that trains:

1. :func:`build_cache` decodes every training image once, resizes it to ``(H, W)`` with the
   reference's own ``A.Resize`` and keeps ``uint8 [N, 3, H, W]``; it reads every parsing label
   once and keeps the grouped part maps ``float32 [N, C, h, w]`` at the labels' own resolution.
2. :class:`BatchAugment` runs the reference training pipeline on a batch: flip with the
   left/right swap, pad + random crop, colour jitter, random erasing (image and labels),
   normalisation, and the soft part targets at 1/4 resolution. Both recipes of
   :mod:`bpbreid.data.transforms` are there: ours (``data.erasing: area_ratio``,
   ``model.bpbreid.masks.targets: area``) and the official one of the paper configs
   (``official``: one box with sides uniform in pixels written into the normalised image;
   labels resized by nearest neighbour and one target pixel kept per 4x4 block).
3. :class:`TensorTrainLoader` takes the identity sampler's indices batch by batch, gathers from
   the cache and augments. Its random parameters come from one ``torch.Generator`` seeded from
   the run's seed and rank (its ``generator``), which the trainer saves in every checkpoint and
   restores on resume, so a resumed run draws exactly what the uninterrupted one would.

Cache layout, and why the labels stay at their own resolution: the reference resizes the
grouped maps bilinearly to ``(H, W)``, crops, erases and then averages 4x4 blocks. Every one of
those steps is linear, so keeping the maps as read (``float32``, a few kB per image: the
official labels are about 30x15) and doing the bilinear resize per batch reproduces the
reference to float rounding, where a ``(H, W)`` copy would cost ``4 K H W`` bytes per image (or
a quantisation error in uint8/float16). Per batch the maps are resized bilinearly (OpenCV's
pixel centres and clamped borders) and go through the image's own flip + crop gather. Label
files of different sizes are padded to the largest (edge values repeated, so the interpolation
at a map's own border is the reference's clamp), each sample keeps its size, and resize, flip
and crop become one ``grid_sample``.

A flip happens in the reference on the 36 fields, before grouping; the grouped equivalent is a
mirror plus, for part ``k``, the maximum over the mirrored field set of ``k``. For symmetric
groupings that set is another part (left arm <-> right arm); for the official ``eight``,
``six`` and ``five_v``, whose lists are not left/right symmetric (the hip limb sits with the
left leg), it is a field set of its own, which the cache stores as an extra channel (``C = K``
plus those).

With official targets the labels are resized by OpenCV's nearest neighbour after the flip, in
the reference's order; a nearest resize does not commute with a mirror, so the flipped column
is taken in the label's own frame, and the whole resize + flip + crop is one gather through
OpenCV's index tables (:func:`_nearest_table`).

Equivalence with the reference, for the same random parameters (``tests/test_pipeline.py``):
image pixels exactly (uint8 crop, flip, colour jitter with the installed OpenCV's grey
conversion, erasing, then the reference's own normalisation numbers); part maps and targets to
the float rounding of the bilinear resize (about 1e-7 and 1e-6; the tests allow 1e-5, 1e-4),
so the hard part labels agree except at exact ties between parts; with official targets part
maps and targets are equal (nearest neighbour copies label values). The random parameters follow
the reference's distributions (albumentations 2: crop offsets uniform over ``0..2 pad``;
erasing with p 0.5, area uniform in ``[0.02, min(0.4, ...)]`` of the image, aspect ratio w/h
uniform within ``[0.3, 3.3]`` as far as the box fits; the official box: sides uniform
integers in ``[int(0.15 s), int(0.65 s)]``, position uniform, p 0.5; flip and jitter with
p 0.5), drawn from another random stream.

Reference:
    Zhong et al. "Random Erasing Data Augmentation", AAAI 2020; albumentations 2
    (``RandomCrop``, ``PadIfNeeded``, ``Erasing``, ``CoarseDropout``, ``ColorJitter``,
    ``Normalize``), whose
    parameters are read from the reference ``Compose`` built by
    :func:`bpbreid.data.transforms.build_transforms`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from bpbreid.errors import ConfigError
from bpbreid.parts import num_parts

if TYPE_CHECKING:
    from bpbreid.config import Config
    from bpbreid.data.datasets import Sample
    from bpbreid.data.samplers import RandomIdentitySampler
    from bpbreid.data.transforms import ReIDTransform

log = logging.getLogger(__name__)

# data.pipeline: how training batches are made.
PIPELINES: tuple[str, ...] = ("reference", "tensor")


# --------------------------------------------------------------------------------------
# The decode-once cache
# --------------------------------------------------------------------------------------


def label_field_sets(
    grouping: str, flip: bool, source: str = "pifpaf"
) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...], tuple[int, ...]]:
    """The field sets the cache stores, and which of them each part reads, plain and flipped.

    Part ``k`` of the grouped maps is the maximum over its field set ``S_k``. After the
    reference's flip (mirror + left/right field swap, before grouping) part ``k`` is the mirror
    of the maximum over ``P(S_k)``, ``P`` the left/right swap. ``P(S_k)`` is another part's set
    for symmetric groupings and a set of its own otherwise.

    Returns:
        ``(sets, plain, flipped)``: the ``C`` field sets (field indices, sorted), and for each of
        the ``K`` parts the channel it reads without and with a flip.
    """
    from bpbreid.data.parsing import label_source

    # The 36 PifPaf fields, or the body regions of parsing PNGs; an unknown grouping names the
    # valid ones.
    labels = label_source(source)
    sets = [tuple(sorted(idx)) for idx in labels.grouping_indices(grouping)]
    plain = tuple(range(len(sets)))
    flipped = plain
    if flip:
        chosen = []
        for part in range(len(plain)):
            mirrored = tuple(sorted(labels.flip_permutation[i] for i in sets[part]))
            if mirrored not in sets:
                sets.append(mirrored)
            chosen.append(sets.index(mirrored))
        flipped = tuple(chosen)
    return tuple(sets), plain, flipped


@dataclass
class DecodedCache:
    """Every training image decoded once, and its grouped part maps.

    Attributes:
        samples: the samples, in the sampler's index order.
        images: ``uint8 [N, 3, H, W]``, resized to the training size as the reference does.
        labels: ``float32 [N, C, h, w]`` part maps at the labels' resolution (C field sets,
            see :func:`label_field_sets`), or None without labels.
        label_sizes: ``int64 [N, 2]`` each label's own ``(h_i, w_i)`` when the files differ
            in size (maps padded to the largest, edge values repeated); None when all are
            ``(h, w)``.
        pids, camids: ``int64 [N]``.
    """

    samples: list[Sample]
    images: torch.Tensor
    labels: torch.Tensor | None
    label_sizes: torch.Tensor | None
    pids: torch.Tensor
    camids: torch.Tensor

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def nbytes(self) -> int:
        """Bytes held by the images and labels."""
        total = self.images.numel() * self.images.element_size()
        if self.labels is not None:
            total += self.labels.numel() * self.labels.element_size()
        return total

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> DecodedCache:
        """The cache with its images and labels on ``device`` (a copy when it moves)."""

        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device)

        return replace(
            self,
            images=move(self.images),  # type: ignore[arg-type]
            labels=move(self.labels),
            label_sizes=move(self.label_sizes),
        )

    def gather(
        self, indices: torch.Tensor, device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(images, labels, label_sizes)`` of ``indices`` (``int64 [B]``), on ``device``."""
        where = indices.to(self.images.device)
        images = self.images.index_select(0, where).to(device, non_blocking=True)
        labels = sizes = None
        if self.labels is not None:
            labels = self.labels.index_select(0, where).to(device, non_blocking=True)
        if self.label_sizes is not None:
            sizes = self.label_sizes.index_select(0, where).to(device, non_blocking=True)
        return images, labels, sizes


def _size(nbytes: float) -> str:
    """``1.52 GiB``, ``12.0 MiB`` or ``512 bytes``."""
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.2f} GiB"
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{int(nbytes)} bytes"


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux ``MemAvailable``); None
    where it is not known."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# The in-memory cache may take at most this share of the available memory: the model, the
# optimizer and the evaluation need the rest.
MEMORY_SHARE = 0.8


# The cache moves to a GPU only if it takes at most this share of the card's free memory.
DEVICE_SHARE = 0.5


def device_free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA ``device`` (``torch.cuda.mem_get_info``); None for others."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.mem_get_info(device)[0])


def _memory_array(shape: tuple[int, ...]) -> np.ndarray:
    """An in-memory ``uint8`` array, refused with a clear error when memory cannot hold it.

    ``np.empty`` only reserves address space; filling a cache larger than memory would end
    in the kernel's out-of-memory kill halfway through decoding, with no message.
    """
    needed = int(np.prod(shape))
    available = available_memory()
    if available is not None and needed > MEMORY_SHARE * available:
        raise ConfigError(
            f"The decoded training images need {_size(needed)} of memory and this machine has "
            f"{_size(available)} available. Set data.cache_dir=<folder> to keep them in a "
            "memory-mapped file on disk, lower data.height/data.width, or use "
            "data.pipeline=reference (images decoded per batch)."
        )
    return np.empty(shape, np.uint8)


def _scratch_array(cache_dir: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """A writable memory-mapped ``uint8`` array in a scratch file of ``cache_dir``.

    The file is unlinked as soon as it is mapped (POSIX keeps the mapping), so nothing is left
    behind, even by a killed run; where unlinking an open file fails, the file stays.
    """
    folder = Path(cache_dir).expanduser()
    needed = int(np.prod(shape))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise ConfigError(
            f"data.cache_dir={cache_dir}: not a folder the decoded images can be written to "
            f"({exc.strerror or exc}). Give a writable folder, or data.cache_dir=null to keep "
            "them in memory."
        ) from exc
    # A memory-mapped file is written lazily: on a full disk the process would die of SIGBUS
    # in the middle of decoding, with no message. Check the space first.
    if free < needed:
        raise ConfigError(
            f"data.cache_dir={cache_dir}: the decoded images need {_size(needed)} and the disk "
            f"there has {_size(free)} free. Free some space, choose another "
            "folder, or data.cache_dir=null to keep them in memory."
        )
    try:
        handle, name = tempfile.mkstemp(prefix="bpbreid-decoded-", suffix=".npy", dir=folder)
    except OSError as exc:
        raise ConfigError(
            f"data.cache_dir={cache_dir}: cannot create a file there ({exc.strerror or exc})."
        ) from exc
    os.close(handle)
    array = np.lib.format.open_memmap(name, mode="w+", dtype=np.uint8, shape=shape)
    try:
        os.unlink(name)
    except OSError:
        log.info("The decoded images stay in %s (it could not be removed while mapped).", name)
    return array


def build_cache(
    samples: Sequence[Sample],
    height: int,
    width: int,
    *,
    grouping: str | None = None,
    flip: bool = False,
    load_masks: bool = True,
    threads: int = 1,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    source: str = "pifpaf",
    label_size: tuple[int, int] | None = None,
) -> DecodedCache:
    """Decode every image and read every label of ``samples`` once.

    Images are read with :func:`bpbreid.data.datasets.read_image` and labels with
    :func:`~bpbreid.data.datasets.read_label`, so an unreadable file stops with the same
    message as in the reference pipeline, naming the file.

    Args:
        samples: the training samples.
        height, width: the training image size ``(H, W)``.
        grouping: the part grouping (``model.bpbreid.masks.preprocess``); needed with labels.
        flip: store the field sets a flip needs (:func:`label_field_sets`).
        load_masks: read the labels (only when every sample has one, as the reference).
        threads: decoding threads (Pillow and OpenCV release the GIL while decoding).
        cache_dir: keep the images in a memory-mapped scratch file there (sets larger than
            memory); None: in memory.
        progress: show a progress bar.
        source: the label kind (``model.bpbreid.masks.source``).
        label_size: ``(h, w)`` parsing PNGs are read at (see ``read_label``).

    Returns:
        A :class:`DecodedCache` in host memory.
    """
    import albumentations as A
    import cv2
    from tqdm.auto import tqdm

    from bpbreid.data.datasets import read_image, read_label

    samples = list(samples)
    count = len(samples)
    load_masks = load_masks and bool(samples) and all(s.mask_path for s in samples)
    if load_masks and grouping is None:
        raise ValueError("build_cache needs the part grouping to read labels.")
    sets = label_field_sets(grouping, flip, source)[0] if load_masks and grouping else ()
    # The reference's resize (image part): same call, same pixels.
    resize = A.Resize(height, width, interpolation=cv2.INTER_LINEAR)
    shape = (count, 3, height, width)
    images = _memory_array(shape) if cache_dir is None else _scratch_array(cache_dir, shape)
    maps: list[np.ndarray] = []

    def decode(index: int) -> np.ndarray | None:
        sample = samples[index]
        image = resize(image=read_image(sample.img_path))["image"]
        images[index] = image.transpose(2, 0, 1)
        if not load_masks:
            return None
        fields = read_label(sample, label_size)
        return np.stack([fields[list(s)].max(axis=0) for s in sets]).astype(np.float32)

    bar = tqdm(total=count, desc="decoding", unit="img", leave=False, disable=not progress)
    with bar, ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        for grouped in pool.map(decode, range(count)):
            if grouped is not None:
                maps.append(grouped)
            bar.update()

    labels = sizes = None
    if maps:
        shapes = np.array([m.shape[1:] for m in maps], dtype=np.int64)
        top = shapes.max(axis=0)
        if (shapes == top).all():
            labels = torch.from_numpy(np.stack(maps))
        else:
            # Edge values repeated: bilinear sampling near a map's own border clamps as OpenCV.
            labels = torch.from_numpy(
                np.stack(
                    [
                        np.pad(
                            m, ((0, 0), (0, top[0] - m.shape[1]), (0, top[1] - m.shape[2])), "edge"
                        )
                        for m in maps
                    ]
                )
            )
            sizes = torch.from_numpy(shapes)
    return DecodedCache(
        samples=samples,
        images=torch.from_numpy(images),
        labels=labels,
        label_sizes=sizes,
        pids=torch.tensor([s.pid for s in samples], dtype=torch.int64),
        camids=torch.tensor([s.camid for s in samples], dtype=torch.int64),
    )


# --------------------------------------------------------------------------------------
# Batch augmentation
# --------------------------------------------------------------------------------------


@dataclass
class AugmentParams:
    """The random parameters of one batch (CPU or device tensors, ``B`` samples).

    Attributes:
        flip: ``bool [B]`` mirror the sample (with the left/right part swap).
        offset: ``int64 [B, 2]`` ``(y, x)`` of the crop in the padded image, ``0..2 pad``.
        jitter: ``bool [B]`` apply the colour jitter.
        brightness, contrast: ``float64 [B]`` jitter factors.
        contrast_first: ``bool [B]`` contrast before brightness (else after).
        erase: ``bool [B]`` erase a box.
        box: ``int64 [B, 4]`` the erased box ``(top, left, height, width)``.
    """

    flip: torch.Tensor
    offset: torch.Tensor
    jitter: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    contrast_first: torch.Tensor
    erase: torch.Tensor
    box: torch.Tensor

    @classmethod
    def none(cls, batch_size: int, pad: int = 0) -> AugmentParams:
        """No flip, centred crop (the padding cut off again), no jitter, no erasing."""
        false = torch.zeros(batch_size, dtype=torch.bool)
        return cls(
            flip=false,
            offset=torch.full((batch_size, 2), pad, dtype=torch.int64),
            jitter=false.clone(),
            brightness=torch.ones(batch_size, dtype=torch.float64),
            contrast=torch.ones(batch_size, dtype=torch.float64),
            contrast_first=false.clone(),
            erase=false.clone(),
            box=torch.zeros(batch_size, 4, dtype=torch.int64),
        )

    def to(self, device: torch.device | str) -> AugmentParams:
        device = torch.device(device)
        floats = torch.float32 if device.type == "mps" else torch.float64
        moved = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value.is_floating_point():
                value = value.to(floats)
            moved[item.name] = value.to(device, non_blocking=True)
        return AugmentParams(**moved)


def _gray_weights() -> tuple[tuple[int, int, int], int]:
    """OpenCV's fixed-point RGB -> grey weights and shift (they differ between versions).

    The colour jitter's contrast blends with the mean grey level of ``cv2.cvtColor``; probing
    it once makes the tensor version exact for the installed OpenCV.
    """
    import cv2

    probe = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    gray = cv2.cvtColor(probe, cv2.COLOR_RGB2GRAY).astype(np.int64)
    wide = probe.astype(np.int64)
    candidates = (((9798, 19235, 3735), 15), ((4899, 9617, 1868), 14), ((19595, 38470, 7471), 16))
    for weights, shift in candidates:
        mixed = wide[..., 0] * weights[0] + wide[..., 1] * weights[1] + wide[..., 2] * weights[2]
        if np.array_equal((mixed + (1 << (shift - 1))) >> shift, gray):
            return weights, shift
    log.warning("Unknown OpenCV grey conversion: the colour jitter may differ by one grey level.")
    return candidates[0]


def _apply_lut(image: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """``uint8 [B, C, H, W]`` through per-sample tables ``uint8 [B, 256]``."""
    batch = image.shape[0]
    return lut.gather(1, image.reshape(batch, -1).long()).view_as(image)


def _label_sizes(
    labels: torch.Tensor, sizes: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each label's own height and width, ``int64 [B, 1]`` each: ``sizes [B, 2]`` when the
    maps are padded to the largest, else the maps' size."""
    if sizes is None:
        batch, _, height, width = labels.shape
        full = torch.ones(batch, 1, dtype=torch.int64, device=labels.device)
        return full * height, full * width
    return sizes[:, :1].long(), sizes[:, 1:].long()


def _gather_pixels(source: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``source [B, C, h, w]`` read at flat pixel indices ``flat [B, H, W]``: ``[B, C, H, W]``."""
    batch, channels = source.shape[:2]
    gathered = source.reshape(batch, channels, -1).gather(
        2, flat.reshape(batch, 1, -1).expand(-1, channels, -1)
    )
    return gathered.view(batch, channels, *flat.shape[1:])


def _nearest_table(size_in_max: int, size_out: int) -> torch.Tensor:
    """OpenCV's ``INTER_NEAREST`` source indices: ``int64 [size_in_max + 1, size_out]``.

    Row ``s`` holds, for each output position ``x``, the index a resize from ``s`` to
    ``size_out`` reads: ``min(floor(x * (1 / (size_out / s))), s - 1)``, OpenCV's own float64
    arithmetic (``resizeNN``) evaluated by NumPy as OpenCV does it. (``floor(x s / size_out)``
    in integers differs where the float product rounds below an integer, as does torch's
    division on some shapes.)
    """
    sizes = np.arange(1, size_in_max + 1, dtype=np.float64)[:, None]
    index = np.floor(np.arange(size_out, dtype=np.float64)[None] * (1.0 / (size_out / sizes)))
    index = np.minimum(index, sizes - 1).astype(np.int64)
    # Row 0 (an empty label) is never read; it keeps row s at index s.
    return torch.from_numpy(np.concatenate([np.zeros((1, size_out), np.int64), index]))


def _area_matrix(size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
    """``[size_out, size_in]`` weights of OpenCV's INTER_AREA shrink (fractional coverage)."""
    scale = size_in / size_out
    starts = torch.arange(size_out, dtype=torch.float64) * scale
    left = torch.arange(size_in, dtype=torch.float64)
    overlap = (torch.minimum(left[None] + 1, starts[:, None] + scale)) - torch.maximum(
        left[None], starts[:, None]
    )
    return (overlap.clamp_min(0) / scale).to(device=device, dtype=torch.float32)


class BatchAugment:
    """The reference training pipeline, for a whole batch as tensor operations.

    Built from the reference :class:`~bpbreid.data.transforms.ReIDTransform`: every constant
    (padding, erasing area/aspect/probability/fill, jitter ranges, normalisation table, target
    rule) is read from its albumentations ``Compose``, so the two cannot drift apart.
    ``__call__`` applies it with given random parameters, :meth:`sample` draws them.

    Args:
        reference: the training transform (``build_transforms(cfg, train=True)``).
        flipped_channels: for each part, the label channel it reads when flipped; default:
            :func:`label_field_sets` of the reference's grouping (the cache's layout).

    Raises:
        ConfigError: the reference holds a step this class does not reproduce.
    """

    # The steps in the reference's order; each is optional except group, resize, normalize.
    # "erase" is data.erasing=area_ratio (uint8, before normalisation), "dropout" the official
    # box (after it).
    ORDER = ("flip", "group", "resize", "pad", "crop", "jitter", "erase", "normalize", "dropout")

    def __init__(
        self, reference: ReIDTransform, flipped_channels: Sequence[int] | None = None
    ) -> None:
        import albumentations as A

        from bpbreid.data.transforms import MASK_STRIDE, FlipWithFieldSwap, GroupFields

        self.height, self.width = reference.height, reference.width
        # "area": bilinear labels, 4x4 block means; "official": nearest labels, one pixel in 16.
        self.targets_mode = getattr(reference, "targets", "area")
        if self.targets_mode not in ("area", "official"):
            raise ConfigError(self._unsupported(f"targets={self.targets_mode}"))
        self.strategy = reference.strategy
        self.threshold = reference.threshold
        self.softmax_weight = reference.softmax_weight
        self.mask_stride = MASK_STRIDE
        self.flip_p = self.jitter_p = self.erase_p = 0.0
        self.pad = 0
        self.brightness = self.contrast = (1.0, 1.0)
        # Erasing: "area_ratio" (albumentations' Erasing on uint8, before normalisation) or
        # "official" (one CoarseDropout box on the normalised image, sides drawn in pixels).
        self.erase_mode = "area_ratio"
        self.erase_scale, self.erase_ratio = (0.0, 0.0), (1.0, 1.0)
        self.erase_sides: tuple[tuple[float, float], tuple[float, float]] = ((0, 0), (0, 0))
        self.fill = (0, 0, 0)
        self.official_fill = (0.0, 0.0, 0.0)
        self.normalize_lut = torch.zeros(3, 256)
        self.normalize_affine: tuple[torch.Tensor, torch.Tensor] | None = None
        seen: list[str] = []
        for step in reference.compose.transforms:
            if isinstance(step, FlipWithFieldSwap):
                seen.append("flip")
                self.flip_p = float(step.p)
            elif isinstance(step, GroupFields):
                seen.append("group")
            elif isinstance(step, A.Resize):
                seen.append("resize")
                if (step.height, step.width) != (self.height, self.width):
                    raise ConfigError(
                        f"Resize to {step.height}x{step.width} is not the image size."
                    )
            elif isinstance(step, A.PadIfNeeded):
                seen.append("pad")
                self.pad = (int(step.min_height) - self.height) // 2
                symmetric = (
                    int(step.min_height) == self.height + 2 * self.pad
                    and int(step.min_width) == self.width + 2 * self.pad
                    and step.position == "center"
                )
                if not symmetric or float(step.fill) != 0 or float(step.fill_mask) != 0:
                    raise ConfigError(self._unsupported("a padding other than symmetric zeros"))
            elif isinstance(step, A.RandomCrop):
                seen.append("crop")
            elif isinstance(step, A.ColorJitter):
                seen.append("jitter")
                if tuple(step.saturation) != (1.0, 1.0) or tuple(step.hue) != (0.0, 0.0):
                    raise ConfigError(self._unsupported("a colour jitter of saturation or hue"))
                self.jitter_p = float(step.p)
                self.brightness = (float(step.brightness[0]), float(step.brightness[1]))
                self.contrast = (float(step.contrast[0]), float(step.contrast[1]))
            elif isinstance(step, A.Erasing):
                seen.append("erase")
                fill = step.fill if isinstance(step.fill, tuple | list) else (step.fill,) * 3
                if isinstance(step.fill, str) or step.fill_mask is None or step.fill_mask != 0:
                    raise ConfigError(self._unsupported("erasing with a random fill"))
                self.erase_p = float(step.p)
                self.erase_scale = (float(step.scale[0]), float(step.scale[1]))
                self.erase_ratio = (float(step.ratio[0]), float(step.ratio[1]))
                self.fill = (int(fill[0]), int(fill[1]), int(fill[2]))
            elif isinstance(step, A.CoarseDropout):
                # data.erasing=official: one box written into the normalised image.
                seen.append("dropout")
                fill = step.fill
                if isinstance(fill, str) or step.fill_mask is None or step.fill_mask != 0:
                    raise ConfigError(self._unsupported("erasing with a random fill"))
                if tuple(step.num_holes_range) != (1, 1):
                    raise ConfigError(self._unsupported("erasing with several boxes"))
                fill = tuple(fill) if isinstance(fill, tuple | list) else (fill,) * 3
                self.erase_mode = "official"
                self.erase_p = float(step.p)
                self.erase_sides = (
                    (step.hole_height_range[0], step.hole_height_range[1]),
                    (step.hole_width_range[0], step.hole_width_range[1]),
                )
                self.official_fill = (float(fill[0]), float(fill[1]), float(fill[2]))
            elif isinstance(step, A.Normalize):
                seen.append("normalize")
                # The reference's own table: uint8 images are normalised through a lookup.
                ramp = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)
                table = step(image=ramp)["image"]  # [256, 1, 3]
                self.normalize_lut = torch.from_numpy(
                    np.ascontiguousarray(table[:, 0, :].T, dtype=np.float32)
                )
                # The same numbers by arithmetic (faster than a lookup), when it gives them.
                mean = torch.as_tensor(np.asarray(step.mean_np, np.float32).reshape(-1))
                scale = torch.as_tensor(np.asarray(step.denominator, np.float32).reshape(-1))
                levels = torch.arange(256, dtype=torch.float32)
                if torch.equal((levels[None] - mean[:, None]) * scale[:, None], self.normalize_lut):
                    self.normalize_affine = (mean.view(1, -1, 1, 1), scale.view(1, -1, 1, 1))
            else:
                raise ConfigError(self._unsupported(f"the step {type(step).__name__}"))
        order = [name for name in self.ORDER if name in seen]
        if seen != order or not {"group", "resize", "normalize"} <= set(seen):
            raise ConfigError(self._unsupported(f"the step order {' -> '.join(seen)}"))
        if {"erase", "dropout"} <= set(seen):  # one box per sample in the parameters
            raise ConfigError(self._unsupported(f"the step order {' -> '.join(seen)}"))
        if ("pad" in seen) != ("crop" in seen):
            raise ConfigError(self._unsupported("a crop without its padding"))
        if flipped_channels is None:
            flipped_channels = label_field_sets(
                reference.grouping, self.flip_p > 0, reference.source
            )[2]
        self.plain = torch.arange(num_parts(reference.grouping))
        self.flipped = torch.as_tensor(list(flipped_channels))
        self.gray_weights, self.gray_shift = _gray_weights() if self.jitter_p else ((0, 0, 0), 0)
        self._tables: dict[torch.device, dict[str, torch.Tensor]] = {}

    @staticmethod
    def _unsupported(what: str) -> str:
        return (
            f"data.pipeline=tensor cannot reproduce {what} of the reference pipeline; "
            "use data.pipeline=reference."
        )

    @classmethod
    def from_config(cls, cfg: Config) -> BatchAugment:
        """The batch version of ``build_transforms(cfg, train=True)``."""
        from bpbreid.data.transforms import build_transforms

        return cls(build_transforms(cfg, train=True, seed=0))

    def __repr__(self) -> str:
        steps = []
        if self.flip_p:
            steps.append(f"flip p{self.flip_p:g}")
        if self.pad:
            steps.append(f"pad {self.pad} + crop")
        if self.jitter_p:
            steps.append(f"jitter p{self.jitter_p:g}")
        if self.erase_p:
            official = " (official)" if self.erase_mode == "official" else ""
            steps.append(f"erase p{self.erase_p:g}{official}")
        if self.targets_mode == "official":
            steps.append("official targets")
        return f"BatchAugment({', '.join(steps) or 'none'}; {self.height}x{self.width})"

    # ---- random parameters -----------------------------------------------------------

    def sample(self, batch_size: int, generator: torch.Generator) -> AugmentParams:
        """Draw the random parameters of a batch, as the reference draws them per image.

        Flip, jitter and erasing each with their probability; crop offsets uniform over
        ``0..2 pad``; jitter factors uniform in their ranges, either order with p 1/2; erasing
        as albumentations' ``Erasing``: area uniform in ``[scale_0 A, A_max]`` with ``A_max``
        the largest area whose box fits at every aspect ratio, aspect ratio w/h uniform in the
        range that fits that area, sides rounded, position uniform.
        """
        n, g = batch_size, generator
        params = AugmentParams.none(n)

        def uniform(low: float = 0.0, high: float = 1.0) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)

        if self.flip_p:
            params.flip = uniform() < self.flip_p
        if self.pad:
            params.offset = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g)
        if self.jitter_p:
            params.jitter = uniform() < self.jitter_p
            params.brightness = uniform(*self.brightness)
            params.contrast = uniform(*self.contrast)
            params.contrast_first = uniform() < 0.5
        if self.erase_p:
            if self.erase_mode == "official":
                params.erase, params.box = self._sample_official_boxes(n, uniform, g)
            else:
                params.erase, params.box = self._sample_boxes(uniform)
        return params

    def _sample_official_boxes(
        self, n: int, uniform: Any, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One box per sample as albumentations' ``CoarseDropout`` with one hole draws it.

        Integer side ranges: sides uniform integers, both ends included; fractions: the side
        is ``int(size * uniform(low, high))``. Position uniform over the boxes that fit.
        """
        erase = uniform() < self.erase_p
        sides = []
        for (low, high), size in zip(self.erase_sides, (self.height, self.width)):
            if isinstance(low, int) and isinstance(high, int):
                side = torch.randint(int(low), int(high) + 1, (n,), generator=generator)
            else:
                side = torch.floor(size * uniform(float(low), float(high))).long()
            sides.append(side.clamp(0, size))
        box_h, box_w = sides
        top = torch.floor(uniform() * (self.height - box_h + 1)).long()
        left = torch.floor(uniform() * (self.width - box_w + 1)).long()
        return erase, torch.stack([top, left, box_h, box_w], dim=1)

    def _sample_boxes(self, uniform: Any) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = self.height, self.width
        erase = uniform() < self.erase_p
        total = height * width
        min_area, max_area = total * self.erase_scale[0], total * self.erase_scale[1]
        r_min, r_max = self.erase_ratio
        max_valid = min(
            max_area,
            min(r_min, r_max) * height * height,
            min(width * width / r_min, width * width / r_max),
        )
        area = uniform(min_area, max_valid)
        max_r = torch.clamp(width * width / area, max=r_max)
        min_r = torch.clamp(area / (height * height), min=r_min)
        ratio = min_r + (max_r - min_r) * uniform()
        box_h = torch.round(torch.sqrt(area / ratio)).long().clamp(0, height)
        box_w = torch.round(torch.sqrt(area * ratio)).long().clamp(0, width)
        top = torch.floor(uniform() * (height - box_h + 1)).long()
        left = torch.floor(uniform() * (width - box_w + 1)).long()
        erase &= (min_r <= max_r) & (max_valid >= min_area)
        return erase, torch.stack([top, left, box_h, box_w], dim=1)

    # ---- the augmentation ----------------------------------------------------------------

    def _device_tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._tables:
            affine = self.normalize_affine or (torch.zeros(1), torch.ones(1))
            self._tables[device] = {
                "normalize": self.normalize_lut.to(device),
                "mean": affine[0].to(device),
                "scale": affine[1].to(device),
                "fill": torch.tensor(self.fill, dtype=torch.uint8, device=device).view(1, 3, 1, 1),
                "official_fill": torch.tensor(
                    self.official_fill, dtype=torch.float32, device=device
                ).view(1, 3, 1, 1),
                "plain": self.plain.to(device),
                "flipped": self.flipped.to(device),
                "levels": torch.arange(256, dtype=torch.float32, device=device),
            }
            if self.targets_mode == "official":
                rows, cols = self._target_pixels()
                self._tables[device].update(
                    target_rows=rows.to(device), target_cols=cols.to(device)
                )
        return self._tables[device]

    def __call__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        params: AugmentParams | None = None,
        label_sizes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment a batch: :meth:`apply`, then the part targets (:meth:`targets`).

        With official targets the part maps are made only at the pixels the targets keep
        (``apply(..., target_pixels=True)``): the same targets at a sixteenth of the work.

        Args:
            images: ``uint8 [B, 3, H, W]`` decoded and resized (:class:`DecodedCache`).
            labels: ``float [B, C, h, w]`` part maps (C field sets), or None.
            params: the random parameters (:meth:`sample`); None: no augmentation.
            label_sizes: ``int64 [B, 2]`` each map's own size when padded, or None.

        Returns:
            ``(images, targets)``: ``float32 [B, 3, H, W]`` normalised, and ``float32
            [B, K+1, H/4, W/4]`` soft targets (channel 0 background), or None without labels.
        """
        if labels is not None and self.targets_mode == "official":
            # Official targets keep one pixel per 4x4 block: only those are made.
            image, small = self.apply(images, labels, params, label_sizes, target_pixels=True)
            return image, self._part_targets(small)
        image, parts = self.apply(images, labels, params, label_sizes)
        return image, None if parts is None else self.targets(parts)

    def apply(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        params: AugmentParams | None = None,
        label_sizes: torch.Tensor | None = None,
        *,
        target_pixels: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The augmented images and part maps at full size (arguments as :meth:`__call__`).

        With ``target_pixels`` (official targets only) the part maps are made at the pixels
        the targets keep (``[B, K, H/4, W/4]``, the nearest subsampling of the full maps), a
        sixteenth of the work; :meth:`targets` of the full maps gives the same numbers.

        Returns:
            ``(images, parts)``: ``float32 [B, 3, H, W]`` normalised, and ``float32
            [B, K, H, W]`` part maps (0 where padded or erased), or None without labels.
        """
        batch, _, height, width = images.shape
        if (height, width) != (self.height, self.width) or images.dtype != torch.uint8:
            raise ValueError(
                f"images must be uint8 [B, 3, {self.height}, {self.width}], got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        device = images.device
        tables = self._device_tables(device)
        p = (params or AugmentParams.none(batch, self.pad)).to(device)

        # Where each output pixel comes from in the resized, unflipped frame.
        rows = p.offset[:, :1] - self.pad + torch.arange(height, device=device)  # [B, H]
        cols = p.offset[:, 1:] - self.pad + torch.arange(width, device=device)  # [B, W]
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[
            :, None, :
        ]  # [B, H, W]; outside: the padding
        from_cols = torch.where(p.flip[:, None], width - 1 - cols, cols)
        flat = (
            rows.clamp(0, height - 1)[:, :, None] * width
            + from_cols.clamp(0, width - 1)[:, None, :]
        )
        image = _gather_pixels(images, flat) * inside[:, None]

        if self.jitter_p:
            image = self._jitter(image, p, tables)
        erased = None
        if self.erase_p:
            top, left, box_h, box_w = p.box.unbind(1)
            ys = torch.arange(height, device=device)[None]
            xs = torch.arange(width, device=device)[None]
            in_rows = (ys >= top[:, None]) & (ys < (top + box_h)[:, None])
            in_cols = (xs >= left[:, None]) & (xs < (left + box_w)[:, None])
            erased = (in_rows[:, :, None] & in_cols[:, None, :] & p.erase[:, None, None])[:, None]
            if self.erase_mode == "area_ratio":
                image = torch.where(erased, tables["fill"], image)
        if self.normalize_affine is not None:
            out = (image.float() - tables["mean"]) * tables["scale"]
        else:
            offsets = torch.arange(3, device=device).view(1, 3, 1, 1) * 256
            out = tables["normalize"].view(-1).take(image.long() + offsets)
        if erased is not None and self.erase_mode == "official":
            out = torch.where(erased, tables["official_fill"], out)

        if labels is None:
            return out, None
        keep = inside[:, None] if erased is None else inside[:, None] & ~erased
        if target_pixels:
            if self.targets_mode != "official":
                raise ValueError("target_pixels needs the official targets (nearest labels).")
            pick_rows, pick_cols = tables["target_rows"], tables["target_cols"]
            rows, cols = rows[:, pick_rows], cols[:, pick_cols]
            keep = keep[:, :, pick_rows][:, :, :, pick_cols]
        if self.targets_mode == "official":
            parts = self._parts_nearest(labels, label_sizes, p, rows, cols, tables)
        elif label_sizes is None:
            parts = self._parts_uniform(labels, p, flat, tables)
        else:
            parts = self._parts(labels, label_sizes, p, rows, cols, tables)
        return out, parts * keep

    def _jitter(
        self, image: torch.Tensor, p: AugmentParams, tables: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Brightness and contrast as albumentations' ``ColorJitter`` on uint8 (lookup tables)."""
        levels = tables["levels"]
        identity = levels.to(torch.uint8)[None]
        on = p.jitter[:, None]
        bright = (levels[None] * p.brightness.float()[:, None]).clamp(0, 255).to(torch.uint8)
        bright = torch.where(on, bright, identity)
        image = _apply_lut(image, torch.where(p.contrast_first[:, None], identity, bright))
        # Contrast: blend with the mean grey level (OpenCV's fixed-point conversion).
        (wr, wg, wb), shift = self.gray_weights, self.gray_shift
        wide = image.int()
        gray = (wide[:, 0] * wr + wide[:, 1] * wg + wide[:, 2] * wb + (1 << (shift - 1))) >> shift
        mean = gray.sum(dim=(1, 2)).to(p.contrast.dtype) / (gray.shape[1] * gray.shape[2])
        shift_value = (mean * (1 - p.contrast)).float()
        contrast = levels[None] * p.contrast.float()[:, None] + shift_value[:, None]
        contrast = torch.where(on, contrast.clamp(0, 255).to(torch.uint8), identity)
        image = _apply_lut(image, contrast)
        return _apply_lut(image, torch.where(p.contrast_first[:, None], bright, identity))

    def _select_channels(
        self, labels: torch.Tensor, p: AugmentParams, tables: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """``[B, C, h, w]`` -> ``[B, K, h, w]``: each part's plain or flipped field set."""
        labels = labels.float()
        if self.flip_p == 0 and labels.shape[1] == len(self.plain):
            return labels
        batch, _, height, width = labels.shape
        channels = torch.where(p.flip[:, None], tables["flipped"][None], tables["plain"][None])
        return labels.gather(1, channels[:, :, None, None].expand(-1, -1, height, width))

    def _parts_uniform(
        self,
        labels: torch.Tensor,
        p: AugmentParams,
        flat: torch.Tensor,
        tables: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Part maps ``[B, K, H, W]`` when every label has the same size (the usual case).

        Bilinear resize as OpenCV's (half-pixel centres, clamped borders), then the image's
        own flip + crop gather (a mirror commutes with the resize).
        """
        source = self._select_channels(labels, p, tables)
        resized = F.interpolate(
            source, size=(self.height, self.width), mode="bilinear", align_corners=False
        )
        return _gather_pixels(resized, flat)

    def _parts(
        self,
        labels: torch.Tensor,
        sizes: torch.Tensor | None,
        p: AugmentParams,
        rows: torch.Tensor,
        cols: torch.Tensor,
        tables: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Part maps ``[B, K, H, W]`` of labels of different sizes (padded to the largest).

        Resize, flip and crop in one bilinear sampling (``grid_sample``).

        Output pixel ``(i, j)`` reads the resized map at ``(rows[i], cols[j])``, i.e. the label
        at ``((r + 0.5) h / H - 0.5, (c + 0.5) w / W - 0.5)`` (OpenCV's pixel centres), its
        column mirrored within the label's own width when flipped.
        """
        _, _, top_h, top_w = labels.shape
        height, width = self.height, self.width
        source = self._select_channels(labels, p, tables)
        dtype = torch.float32 if labels.device.type == "mps" else torch.float64
        size_h, size_w = (size.to(dtype) for size in _label_sizes(labels, sizes))
        src_y = (rows.to(dtype) + 0.5) * (size_h / height) - 0.5  # [B, H]
        src_x = (cols.to(dtype) + 0.5) * (size_w / width) - 0.5  # [B, W]
        src_x = torch.where(p.flip[:, None], size_w - 1 - src_x, src_x)
        grid_y = (2 * src_y + 1) / top_h - 1
        grid_x = (2 * src_x + 1) / top_w - 1
        grid = torch.stack(
            [grid_x[:, None, :].expand(-1, height, -1), grid_y[:, :, None].expand(-1, -1, width)],
            dim=-1,
        ).to(torch.float32)
        return F.grid_sample(
            source, grid, mode="bilinear", padding_mode="border", align_corners=False
        )

    def _parts_nearest(
        self,
        labels: torch.Tensor,
        sizes: torch.Tensor | None,
        p: AugmentParams,
        rows: torch.Tensor,
        cols: torch.Tensor,
        tables: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Part maps ``[B, K, H, W]`` resized by nearest neighbour (``targets=official``).

        The reference flips the label, then resizes it with OpenCV's ``INTER_NEAREST``
        (source index ``min(floor(x / (W / w)), w - 1)``), then pads and crops. Nearest
        resizing does not commute with a mirror, so the flip is taken in the label's own
        columns: output pixel ``(i, j)`` reads label row ``ny(rows[i])`` and column
        ``nx(cols[j])``, or ``w - 1 - nx(cols[j])`` when flipped. One gather, exact.
        """
        _, _, top_h, top_w = labels.shape
        source = self._select_channels(labels, p, tables)
        device = labels.device
        size_h, size_w = _label_sizes(labels, sizes)
        # Index tables up to the padded (largest) size, made once per device and size.
        row_key, col_key = f"nearest_rows_{top_h}", f"nearest_cols_{top_w}"
        if row_key not in tables:
            tables[row_key] = _nearest_table(top_h, self.height).to(device)
        if col_key not in tables:
            tables[col_key] = _nearest_table(top_w, self.width).to(device)
        row_table, col_table = tables[row_key], tables[col_key]
        rows, cols = rows.clamp(0, self.height - 1), cols.clamp(0, self.width - 1)
        label_rows = row_table[size_h.expand_as(rows), rows]  # [B, H]
        label_cols = col_table[size_w.expand_as(cols), cols]  # [B, W]
        label_cols = torch.where(p.flip[:, None], size_w - 1 - label_cols, label_cols)
        flat = label_rows[:, :, None] * top_w + label_cols[:, None, :]  # [B, H, W]
        return _gather_pixels(source, flat)

    def _target_pixels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``[H/4]`` and columns ``[W/4]`` the official targets keep (torch's nearest).

        Read off ``F.interpolate`` itself (on an index ramp), so they are its choice exactly.
        """
        picked = []
        for size, small in zip(
            (self.height, self.width), self._target_size(self.height, self.width)
        ):
            ramp = torch.arange(size, dtype=torch.float32).view(1, 1, size, 1)
            picked.append(F.interpolate(ramp, size=(small, 1), mode="nearest").view(-1).long())
        return picked[0], picked[1]

    def _target_size(self, height: int, width: int) -> tuple[int, int]:
        return max(height // self.mask_stride, 1), max(width // self.mask_stride, 1)

    def _part_targets(self, small: torch.Tensor) -> torch.Tensor:
        """Part maps at 1/4 ``[B, K, h, w]`` -> targets ``[B, K+1, h, w]`` (background rule)."""
        from bpbreid.data.parsing import part_targets

        return part_targets(
            small,
            strategy=self.strategy,
            threshold=self.threshold,
            softmax_weight=self.softmax_weight,
        )

    def targets(self, parts: torch.Tensor) -> torch.Tensor:
        """Part maps ``[B, K, H, W]`` -> soft targets ``[B, K+1, H/4, W/4]``.

        ``targets=area``: shrunk to 1/4 by area averaging (OpenCV's INTER_AREA, fractional
        coverage when the size is not a multiple of 4); ``official``: one pixel of every 4x4
        block (torch's nearest, as the reference). Then the background rule and softmax of
        the reference (:func:`bpbreid.data.parsing.part_targets`).
        """
        height, width = parts.shape[-2:]
        small_h, small_w = self._target_size(height, width)
        if self.targets_mode == "official":
            small = F.interpolate(parts, size=(small_h, small_w), mode="nearest")
        elif height % small_h == 0 and width % small_w == 0:
            small = F.avg_pool2d(parts, (height // small_h, width // small_w))
        else:
            weights_h = _area_matrix(height, small_h, parts.device)
            weights_w = _area_matrix(width, small_w, parts.device)
            small = torch.einsum("bkyx,hy,wx->bkhw", parts, weights_h, weights_w)
        return self._part_targets(small)


# --------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------


def augment_seed(seed: int, rank: int = 0) -> int:
    """The seed of the augmentation generator of ``rank`` in a run seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(rank), 0x7E2]).generate_state(1)[0])


class TensorTrainLoader:
    """Identity-balanced training batches from a decode-once cache, augmented as tensors.

    Stands in for the training ``DataLoader``: ``len()`` is the number of batches of an epoch,
    iterating yields ``{"image": float [B, 3, H, W], "target_masks": float [B, K+1, H/4, W/4]
    (with labels), "pid": int64 [B], "camid": int64 [B], "img_path": list}`` on ``device``,
    ``sampler`` is the identity sampler (``set_epoch`` as usual) and ``generator`` the one
    source of augmentation randomness (saved with the sampler state in checkpoints).

    The cache is built on the first iteration (or by :meth:`prepare`): building the loaders
    of a run that only evaluates decodes nothing.

    Args:
        samples: the training samples, in the sampler's index order.
        sampler: the P x K identity sampler over ``samples``.
        augment: the batch augmentation.
        device: where batches are made (the training device).
        seed: seed of the augmentation generator (:func:`augment_seed`).
        grouping, flip, load_masks: what the cache holds (:func:`build_cache`).
        threads: decoding threads for the cache.
        cache_dir: memory-map the decoded images there (None: in memory).
        device_cache_mb: the cache moves to a non-CPU ``device`` when it holds at most this
            many MiB and is not memory-mapped; else it stays in host memory and each batch is
            copied over.
        progress: progress bar while decoding.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        sampler: RandomIdentitySampler,
        augment: BatchAugment,
        *,
        device: torch.device | str = "cpu",
        seed: int = 0,
        grouping: str | None = None,
        flip: bool = False,
        load_masks: bool = True,
        threads: int = 1,
        cache_dir: str | Path | None = None,
        device_cache_mb: float = 4096,
        progress: bool = True,
        source: str = "pifpaf",
        label_size: tuple[int, int] | None = None,
    ) -> None:
        self.samples = list(samples)
        self.source, self.label_size = source, label_size
        self.sampler = sampler
        self.augment = augment
        self.device = torch.device(device)
        self.batch_size = sampler.batch_size
        self.drop_last = True
        self.generator = torch.Generator().manual_seed(int(seed))
        self.grouping, self.flip, self.load_masks = grouping, flip, load_masks
        self.threads, self.cache_dir = threads, cache_dir
        self.device_cache_mb = float(device_cache_mb)
        self.progress = progress
        self.cache: DecodedCache | None = None
        self.summary = ""  # what prepare() decoded, in how long, and where it is kept
        # The DataLoader attributes code that inspects a training loader reads: batches are
        # made in the training process, on the training device; nothing is pinned.
        self.num_workers = 0
        self.pin_memory = False
        self.persistent_workers = False

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        samples: Sequence[Sample],
        sampler: RandomIdentitySampler,
        *,
        load_masks: bool,
        rank: int = 0,
        device: torch.device | str | None = None,
        progress: bool = True,
    ) -> TensorTrainLoader:
        """The tensor pipeline of ``cfg`` (``data.*`` and ``model.bpbreid.masks``)."""
        from bpbreid.data.datasets import label_size
        from bpbreid.data.transforms import canonical_transforms

        data = cfg.data
        return cls(
            samples,
            sampler,
            BatchAugment.from_config(cfg),
            device=device or "cpu",
            seed=augment_seed(cfg.train.seed, rank),
            grouping=cfg.model.bpbreid.masks.preprocess,
            flip="flip" in canonical_transforms(data.transforms),
            load_masks=load_masks,
            threads=max(1, int(data.workers)),
            cache_dir=data.cache_dir,
            device_cache_mb=data.device_cache_mb,
            progress=progress,
            source=cfg.model.bpbreid.masks.source,
            label_size=label_size(cfg),
        )

    def __repr__(self) -> str:
        return f"TensorTrainLoader({len(self.samples)} images, {self.augment!r}, on {self.device})"

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def prepare(self) -> DecodedCache:
        """Build the cache now (decode every image once) and place it; returns it."""
        if self.cache is None:
            start = time.perf_counter()
            cache = build_cache(
                self.samples,
                self.augment.height,
                self.augment.width,
                grouping=self.grouping,
                flip=self.flip,
                load_masks=self.load_masks,
                threads=self.threads,
                cache_dir=self.cache_dir,
                progress=self.progress,
                source=self.source,
                label_size=self.label_size,
            )
            fits = cache.nbytes <= self.device_cache_mb * 2**20
            free = device_free_memory(self.device)
            if fits and free is not None and cache.nbytes > DEVICE_SHARE * free:
                # The setting allows it, but this card has not the room beside the training.
                log.warning(
                    "The decoded images (%s) stay in host memory: %s has %s free. Each batch "
                    "is copied over instead.",
                    _size(cache.nbytes),
                    self.device,
                    _size(free),
                )
                fits = False
            if self.device.type != "cpu" and fits and self.cache_dir is None:
                cache = cache.to(self.device)
            self.cache = cache
            where = "in host memory" if cache.device.type == "cpu" else f"on {cache.device}"
            self.summary = (
                f"Decoded the {len(cache):,} training images once in "
                f"{time.perf_counter() - start:.1f} s ({_size(cache.nbytes)}, {where})."
            )
            log.info(self.summary)
        return self.cache

    def batch(self, indices: Sequence[int] | torch.Tensor) -> dict[str, Any]:
        """The augmented batch of sample ``indices`` (draws from :attr:`generator`)."""
        cache = self.prepare()
        index = torch.as_tensor(indices, dtype=torch.int64)
        params = self.augment.sample(len(index), self.generator)
        images, labels, sizes = cache.gather(index, self.device)
        image, targets = self.augment(images, labels, params, sizes)
        batch: dict[str, Any] = {
            "image": image,
            "pid": cache.pids[index],
            "camid": cache.camids[index],
            "img_path": [cache.samples[i].img_path for i in index.tolist()],
        }
        if targets is not None:
            batch["target_masks"] = targets
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.prepare()
        order = list(self.sampler)
        size = self.batch_size
        for start in range(0, len(order) - size + 1, size):
            yield self.batch(order[start : start + size])


__all__ = [
    "PIPELINES",
    "AugmentParams",
    "BatchAugment",
    "DecodedCache",
    "TensorTrainLoader",
    "augment_seed",
    "build_cache",
    "label_field_sets",
]
