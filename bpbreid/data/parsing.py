"""Parsing labels: 36 PifPaf-style fields, part groupings, background and soft part targets.

A parsing label is one ``float32`` array of 36 confidence fields per image, values in [0, 1]:
17 COCO keypoint fields then 19 limb ("joint") fields, at low resolution (about 30x15 for the
official labels). BPBReID turns them into ``K`` body-part masks by taking, for each part, the
maximum over the fields that belong to it (a *grouping*: ``eight``, ``five_v``, ...), then adds
a background channel and turns the ``K + 1`` maps into per-pixel targets for the part-attention
(pixel) loss.

This module also reads LIP/SCHP human-parsing PNGs (20 classes) into the same parts, renders
the 36 fields from 17 keypoints (how the synthetic dataset and new images get labels) and flips
fields horizontally (mirror + left/right swap) so that flip augmentation keeps every grouping
right.

Reference:
    Somers, Vleeschouwer, Alahi. "Body Part-Based Representation Learning for Occluded Person
    Re-Identification", WACV 2023 (arXiv 2211.03679); official code bpbreid c0db006,
    ``torchreid/data/masks_transforms`` (field order, groupings, background rule).
    Kreiss, Bertoni, Alahi. "PifPaf: Composite Fields for Human Pose Estimation", CVPR 2019.
    Gong et al. "Look into Person" (LIP), CVPR 2017 (the 20 parsing classes).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from bpbreid.errors import ConfigError, LabelError
from bpbreid.parts import (  # noqa: F401  (re-exported: the names lived here first)
    _GROUPING_INDICES,
    FIELD_INDEX,
    FIELD_NAMES,
    KEYPOINT_NAMES,
    LIMB_NAMES,
    LIMBS,
    NUM_FIELDS,
    NUM_KEYPOINTS,
    PART_GROUPINGS,
    check_grouping,
    hard_labels,
    num_parts,
    part_names,
)

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)

# --------------------------------------------------------------------------------------
# Loading label files
# --------------------------------------------------------------------------------------

_VALUE_TOLERANCE = 1e-3  # float error allowed outside [0, 1] before a label is rejected


def _channel_axis(shape: tuple[int, ...]) -> int | None:
    """0 for ``(36, h, w)``, 2 for ``(h, w, 36)``, None when ambiguous or neither."""
    if len(shape) != 3:
        return None
    first, last = shape[0] == NUM_FIELDS, shape[2] == NUM_FIELDS
    if first and not last:
        return 0
    if last and not first:
        return 2
    return None


def _read_npy(path: Path) -> np.ndarray:
    """``np.load`` of one label file, after checking its header against the file size.

    A truncated file, or a header claiming a shape far larger than the data (a label
    "bomb": ``np.load`` would allocate the claimed size first), is refused before any
    allocation with a message that says so.
    """
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version in ((1, 0), (2, 0)):
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(handle)
            if not dtype.hasobject:  # object arrays: np.load refuses them below
                claimed = math.prod(shape) * dtype.itemsize
                held = os.fstat(handle.fileno()).st_size - handle.tell()
                if held < claimed:
                    raise ValueError(
                        f"the header claims shape {tuple(shape)} ({claimed:,} bytes of "
                        f"{dtype}) but the file holds {held:,}: it is truncated or corrupt"
                    )
        handle.seek(0)
        return np.load(handle, allow_pickle=False)


def load_parsing_label(path: str | Path) -> np.ndarray:
    """Read one official parsing-label file (``.npy``) as ``float32 [36, h, w]`` in [0, 1].

    Both axis orders are accepted: ``(36, h, w)`` and ``(h, w, 36)``; the channel axis is the
    first or last axis of length 36 that is not also the height or width. A shape where both
    could be the channel axis (e.g. ``(36, 20, 36)``) is refused rather than guessed.

    Args:
        path: the ``.npy`` file (e.g. ``masks/pifpaf_maskrcnn_filtering/query/0001_c1s1_0.npy``).

    Returns:
        ``float32 [36, h, w]``, values clipped to [0, 1] (tiny float error is tolerated).

    Raises:
        LabelError: the file is missing or unreadable, has another shape, holds NaN/inf or
            values outside [0, 1]; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        what = (
            "is a dangling symbolic link or a link loop"
            if p.is_symlink()
            else ("is a folder" if p.is_dir() else "not found")
        )
        raise LabelError(
            f"Parsing label file {p} {what}. Check the dataset's masks folder "
            f"(model.bpbreid.masks.dir) or generate labels with `python -m bpbreid labels`."
        )
    try:
        array = _read_npy(p)
    except Exception as exc:  # corrupt file, pickled object, not an .npy at all
        raise LabelError(f"Cannot read parsing label {p}: {exc}. Re-create this file.") from exc
    if not isinstance(array, np.ndarray) or not (
        np.issubdtype(array.dtype, np.floating)
        or np.issubdtype(array.dtype, np.integer)
        or array.dtype == np.bool_
    ):
        raise LabelError(f"Parsing label {p} must hold a numeric array, got {type(array)}.")
    axis = _channel_axis(array.shape)
    if axis is None or 0 in array.shape:
        if 0 in array.shape:
            why = "empty"
        elif array.ndim == 3 and array.shape[0] == array.shape[2] == NUM_FIELDS:
            why = "ambiguous: both the first and the last axis have length 36"
        else:
            why = "no first or last axis of length 36"

        raise LabelError(
            f"Parsing label {p} has shape {tuple(array.shape)} ({why}); expected "
            f"(36, h, w) or (h, w, 36): 17 keypoint + 19 limb confidence fields."
        )
    fields = array.astype(np.float32, copy=False)
    if axis == 2:
        fields = np.moveaxis(fields, 2, 0)
    if not np.isfinite(fields).all():
        raise LabelError(f"Parsing label {p} contains NaN or infinite values; re-create it.")
    low, high = float(fields.min(initial=0.0)), float(fields.max(initial=0.0))
    if low < -_VALUE_TOLERANCE or high > 1.0 + _VALUE_TOLERANCE:
        raise LabelError(
            f"Parsing label {p} has values in [{low:.4g}, {high:.4g}]; expected confidences "
            f"in [0, 1] (official PifPaf fields)."
        )
    return np.ascontiguousarray(np.clip(fields, 0.0, 1.0), dtype=np.float32)


# --------------------------------------------------------------------------------------
# Grouping, background, targets
# --------------------------------------------------------------------------------------


def group_fields(fields: ArrayLike, grouping: str) -> ArrayLike:
    """Group the 36 fields into ``K`` part masks: each part is the max over its fields.

    Args:
        fields: ``[36, h, w]`` or ``[N, 36, h, w]`` (NumPy array or tensor).
        grouping: a key of :data:`PART_GROUPINGS` (``'eight'``, ``'five_v'``, ...).

    Returns:
        ``[K, h, w]`` (or ``[N, K, h, w]``), same type and dtype as ``fields``.
    """
    num_parts(grouping)
    if fields.shape[-3] != NUM_FIELDS:
        raise ValueError(f"fields must be [..., 36, h, w], got shape {tuple(fields.shape)}")
    return _max_over_groups(fields, _GROUPING_INDICES[grouping])


def _max_over_groups(stack: ArrayLike, indices: tuple[np.ndarray, ...]) -> ArrayLike:
    """``[..., C, h, w]`` -> ``[..., K, h, w]``: part ``k`` is the max over channels ``indices[k]``."""
    if isinstance(stack, torch.Tensor):
        parts = [
            stack[..., torch.as_tensor(idx, device=stack.device), :, :].amax(dim=-3)
            for idx in indices
        ]
        return torch.stack(parts, dim=-3)
    return np.stack([stack[..., idx, :, :].max(axis=-3) for idx in indices], axis=-3)


BACKGROUND_STRATEGIES: tuple[str, ...] = ("threshold", "diff_from_max", "sum")


def background_mask(
    parts: ArrayLike, strategy: str = "threshold", threshold: float = 0.5
) -> ArrayLike:
    """The background map ``[h, w]`` (or ``[N, h, w]``) of part masks ``[..., K, h, w]``.

    - ``'threshold'`` (official default): 1 where every part is below ``threshold``
      (``max_k parts < 0.5``), else 0;
    - ``'diff_from_max'``: ``1 - max_k parts``;
    - ``'sum'`` (official, for exclusive masks): ``clip(1 - sum_k parts, 0, 1)``.
    """
    if strategy not in BACKGROUND_STRATEGIES:
        raise ConfigError(
            f"Unknown background strategy '{strategy}' "
            f"(model.bpbreid.masks.background_computation_strategy). "
            f"Valid: {', '.join(BACKGROUND_STRATEGIES)}."
        )
    is_torch = isinstance(parts, torch.Tensor)
    if strategy == "sum":
        total = parts.sum(dim=-3) if is_torch else parts.sum(axis=-3)
        return (1.0 - total).clip(0.0, 1.0)
    peak = parts.amax(dim=-3) if is_torch else parts.max(axis=-3)
    if strategy == "threshold":
        below = peak < threshold
        return below.to(parts.dtype) if is_torch else below.astype(parts.dtype)
    return (1.0 - peak).clip(0.0, 1.0)


def part_targets(
    parts: ArrayLike,
    strategy: str = "threshold",
    threshold: float = 0.5,
    softmax_weight: float = 15.0,
) -> ArrayLike:
    """Soft per-pixel targets ``[K+1, h, w]`` (channel 0 = background) that sum to 1.

    The official rule (``AddBackgroundMask`` after the grouping): prepend the background map
    of :func:`background_mask` to the ``K`` part masks, then take
    ``softmax(masks * softmax_weight)`` over the ``K + 1`` channels (weight 15 in every
    official config). With the ``'threshold'`` strategy a pixel where some part reaches 0.5
    goes to its strongest part; elsewhere the background (value 1 against parts < 0.5) wins.
    With ``softmax_weight <= 0`` the maps are divided by their sum instead (also official).

    Args:
        parts: ``[K, h, w]`` or ``[N, K, h, w]`` part masks in [0, 1] (NumPy or torch).
        strategy: ``'threshold'`` | ``'diff_from_max'`` | ``'sum'``.
        threshold: background threshold of the ``'threshold'`` strategy (official 0.5).
        softmax_weight: sharpness of the softmax (official 15).

    Returns:
        ``[K+1, h, w]`` (or ``[N, K+1, h, w]``) float targets summing to 1 over channels.

    Reference:
        bpbreid c0db006, ``masks_transforms/mask_transform.py`` (``AddBackgroundMask``) and
        ``data/transforms.py`` (applied after ``masks_preprocess``).
    """
    is_torch = isinstance(parts, torch.Tensor)
    if not is_torch:
        parts = np.asarray(parts, dtype=np.float32)
    elif not parts.is_floating_point():
        parts = parts.float()
    background = background_mask(parts, strategy, threshold)
    if is_torch:
        masks = torch.cat([background.unsqueeze(-3), parts], dim=-3)
        if softmax_weight > 0:
            return torch.softmax(masks * softmax_weight, dim=-3)
        return masks / masks.sum(dim=-3, keepdim=True).clamp_min(1e-12)
    masks = np.concatenate([background[..., None, :, :], parts], axis=-3)
    if softmax_weight > 0:
        logits = masks * softmax_weight
        logits = logits - logits.max(axis=-3, keepdims=True)  # numerically stable softmax
        exp = np.exp(logits)
        return (exp / exp.sum(axis=-3, keepdims=True)).astype(np.float32)
    return (masks / np.maximum(masks.sum(axis=-3, keepdims=True), 1e-12)).astype(np.float32)


def resize_maps(maps: ArrayLike, size: tuple[int, int], mode: str = "bilinear") -> ArrayLike:
    """Resize fields or soft masks ``[C, h, w]`` / ``[N, C, h, w]`` to ``size = (H, W)``.

    Bilinear by default (half-pixel centres, like OpenCV and ``align_corners=False``); use
    ``mode='area'`` to shrink with averaging, ``'nearest'`` for label maps.
    """
    height, width = int(size[0]), int(size[1])
    if tuple(maps.shape[-2:]) == (height, width):
        return maps
    if isinstance(maps, torch.Tensor):
        batched = maps.dim() == 4
        x = maps if batched else maps.unsqueeze(0)
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        out = F.interpolate(x.float(), size=(height, width), mode=mode, **kwargs).to(maps.dtype)
        return out if batched else out.squeeze(0)
    import cv2  # OpenCV comes with albumentations; imported here to keep import light

    flags = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST}
    if mode not in flags:
        raise ValueError(f"mode must be one of {', '.join(flags)}, got '{mode}'")
    array = np.asarray(maps)
    leading_dims = array.shape[:-3]
    flat = array.reshape(-1, *array.shape[-2:])  # [C', h, w]
    out = np.empty((flat.shape[0], height, width), dtype=array.dtype)
    # OpenCV resizes at most 512 channels at once, and its area resize at a non-integer scale
    # at most 4: chunk to stay within that.
    step = 4 if mode == "area" else 512
    for start in range(0, flat.shape[0], step):
        chunk = np.ascontiguousarray(flat[start : start + step].transpose(1, 2, 0))
        resized = cv2.resize(chunk, (width, height), interpolation=flags[mode])
        out[start : start + step] = resized.reshape(height, width, -1).transpose(2, 0, 1)
    return out.reshape(*leading_dims, array.shape[-3], height, width)


# --------------------------------------------------------------------------------------
# Rendering fields from keypoints
# --------------------------------------------------------------------------------------


def person_sigma(
    keypoints: np.ndarray, height: int, sigma_scale: float = 0.04, min_height_fraction: float = 0.5
) -> float:
    """Field width (Gaussian sigma, input pixels) scaled to the person's size.

    The person's height is the vertical extent of the confident keypoints, but at least
    ``min_height_fraction * height`` (a re-id crop is about one person tall, and a person
    with only the head visible is still a whole person behind an occluder).
    """
    visible = keypoints[:, 2] > 0
    extent = float(np.ptp(keypoints[visible, 1])) if visible.sum() >= 2 else 0.0
    return sigma_scale * max(extent, min_height_fraction * height)


def render_fields(
    keypoints: np.ndarray,
    height: int,
    width: int,
    out_size: tuple[int, int] | None = None,
    sigma: float | None = None,
    limb_sigma: float | None = None,
    sigma_scale: float = 0.04,
) -> np.ndarray:
    """Render the 36 fields of one person from its 17 keypoints.

    Keypoint field ``j``: ``c_j * exp(-d^2 / (2 sigma^2))`` with ``d`` the distance to the
    keypoint (peak = its confidence ``c_j``). Limb field ``(a, b)``:
    ``min(c_a, c_b) * exp(-d^2 / (2 limb_sigma^2))`` with ``d`` the distance to the segment
    ``a-b``; a limb needs both endpoints. A keypoint with confidence 0 is missing: its field
    and the fields of its limbs are zero. Distances are measured in input-image pixels, so the
    fields look the same at any ``out_size``.

    Args:
        keypoints: ``[17, 3]`` rows ``(x, y, confidence)`` in pixel coordinates of an image of
            size ``(height, width)`` (``x = 0`` is the centre of the first column), COCO order.
        height: the image height the keypoints refer to.
        width: the image width.
        out_size: ``(h, w)`` of the output; default ``(height, width)``. Output pixel centres
            are mapped onto the image with half-pixel alignment (like a bilinear resize).
        sigma: keypoint Gaussian sigma in image pixels; default :func:`person_sigma`.
        limb_sigma: limb sigma in image pixels; default ``sigma``.
        sigma_scale: sigma as a fraction of the person's height when ``sigma`` is None.

    Returns:
        ``float32 [36, h, w]`` in [0, 1] (17 keypoint fields, then 19 limb fields).
    """
    kps = np.asarray(keypoints, dtype=np.float32)
    if kps.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must be [17, 3] (x, y, confidence), got {kps.shape}")
    # A keypoint without finite coordinates is missing, whatever its confidence says.
    missing = ~np.isfinite(kps).all(axis=1)
    kps = np.where(missing[:, None], 0.0, kps).astype(np.float32)
    out_h, out_w = out_size if out_size is not None else (height, width)
    if sigma is None:
        sigma = person_sigma(kps, height, sigma_scale)
    if limb_sigma is None:
        limb_sigma = sigma
    sigma, limb_sigma = max(float(sigma), 1e-3), max(float(limb_sigma), 1e-3)

    # Output pixel centres in image coordinates: [h] rows, [w] columns.
    ys = ((np.arange(out_h, dtype=np.float32) + 0.5) * (height / out_h) - 0.5)[:, None]
    xs = ((np.arange(out_w, dtype=np.float32) + 0.5) * (width / out_w) - 0.5)[None, :]
    conf = np.clip(kps[:, 2], 0.0, 1.0)

    # Keypoint fields [17, h, w].
    dx2 = (xs[None] - kps[:, 0, None, None]) ** 2  # [17, 1, w]
    dy2 = (ys[None] - kps[:, 1, None, None]) ** 2  # [17, h, 1]
    keypoint_fields = conf[:, None, None] * np.exp(-(dx2 + dy2) / (2 * sigma**2))

    # Limb fields [19, h, w]: squared distance to the segment a-b.
    ends = np.array(LIMBS)
    a, b = kps[ends[:, 0], :2], kps[ends[:, 1], :2]  # [19, 2]
    seg = b - a
    seg_len2 = np.maximum((seg**2).sum(axis=1), 1e-6)  # [19]
    px = xs[None] - a[:, 0, None, None]  # [19, 1, w]
    py = ys[None] - a[:, 1, None, None]  # [19, h, 1]
    t = (px * seg[:, 0, None, None] + py * seg[:, 1, None, None]) / seg_len2[:, None, None]
    t = np.clip(t, 0.0, 1.0)  # [19, h, w]
    dist2 = (px - t * seg[:, 0, None, None]) ** 2 + (py - t * seg[:, 1, None, None]) ** 2
    limb_conf = np.minimum(conf[ends[:, 0]], conf[ends[:, 1]])
    limb_fields = limb_conf[:, None, None] * np.exp(-dist2 / (2 * limb_sigma**2))

    fields = np.concatenate([keypoint_fields, limb_fields], axis=0)
    return np.clip(fields, 0.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------
# Horizontal flip
# --------------------------------------------------------------------------------------


def _mirror_name(name: str) -> str:
    swapped = name.replace("left", "\0").replace("right", "left").replace("\0", "right")
    if swapped in FIELD_INDEX:
        return swapped
    # 'left_hip_to_right_hip' mirrors to 'right_hip_to_left_hip': the same segment.
    start, sep, end = swapped.partition("_to_")
    reversed_name = f"{end}_to_{start}"
    if sep and reversed_name in FIELD_INDEX:
        return reversed_name
    raise AssertionError(f"no mirror field for '{name}'")  # the tables above are inconsistent


# FLIP_PERMUTATION[i] = index of the field that field i becomes after a horizontal flip.
FLIP_PERMUTATION: tuple[int, ...] = tuple(FIELD_INDEX[_mirror_name(n)] for n in FIELD_NAMES)
KEYPOINT_FLIP_PERMUTATION: tuple[int, ...] = FLIP_PERMUTATION[:NUM_KEYPOINTS]


def flip_fields(fields: ArrayLike) -> ArrayLike:
    """Mirror fields ``[..., 36, h, w]`` along the width and swap left/right fields.

    After a horizontal flip the person's left arm appears where the right arm was drawn,
    so ``left_*`` and ``right_*`` fields (limbs included) trade places; symmetric fields
    (``nose``, ``left_hip_to_right_hip``, ...) stay in place. Applying it twice is the
    identity.
    """
    return LABEL_SOURCES["pifpaf"].flip(fields)


def flip_keypoints(keypoints: np.ndarray, width: int) -> np.ndarray:
    """Keypoints ``[17, 3]`` of the mirrored image: ``x -> width - 1 - x`` and left/right swap."""
    out = np.asarray(keypoints, dtype=np.float32)[list(KEYPOINT_FLIP_PERMUTATION)].copy()
    out[:, 0] = width - 1 - out[:, 0]
    return out


# --------------------------------------------------------------------------------------
# LIP / SCHP human-parsing class maps
# --------------------------------------------------------------------------------------

LIP_CLASSES: tuple[str, ...] = (
    "background",
    "hat",
    "hair",
    "glove",
    "sunglasses",
    "upper_clothes",
    "dress",
    "coat",
    "socks",
    "pants",
    "jumpsuits",
    "scarf",
    "skirt",
    "face",
    "left_arm",
    "right_arm",
    "left_leg",
    "right_leg",
    "left_shoe",
    "right_shoe",
)

# Each LIP class covers one or more body regions. Left/right are the person's own sides
# (as in COCO keypoints; in SCHP labels of Market-1501 the "left arm" is on the image's right in
# 85% of the images that show a face). Classes that do not say which side (gloves, pants, skirt,
# socks, the lower half of a dress) cover a left/right pair of regions and are split between
# them by the person's own sides (see :func:`png_regions`). The classes in LIP_SPLIT_CLASSES span
# the torso and the legs: the upper half of their rows counts as torso, the lower half as legs.
LIP_CLASS_REGIONS: dict[str, tuple[str, ...]] = {
    "background": (),
    "hat": ("head",),
    "hair": ("head",),
    "glove": ("left_arm", "right_arm"),
    "sunglasses": ("head",),
    "upper_clothes": ("torso",),
    "dress": ("torso", "left_leg", "right_leg"),
    "coat": ("torso",),
    "socks": ("left_foot", "right_foot"),
    "pants": ("left_leg", "right_leg"),
    "jumpsuits": ("torso", "left_leg", "right_leg"),
    "scarf": ("torso",),
    "skirt": ("left_leg", "right_leg"),
    "face": ("head",),
    "left_arm": ("left_arm",),
    "right_arm": ("right_arm",),
    "left_leg": ("left_leg",),
    "right_leg": ("right_leg",),
    "left_shoe": ("left_foot",),
    "right_shoe": ("right_foot",),
}
LIP_SPLIT_CLASSES: frozenset[str] = frozenset({"dress", "jumpsuits"})
# Classes that name a side, as (left class, right class): they tell which way the person faces.
LIP_SIDED_PAIRS: tuple[tuple[int, int], ...] = ((14, 15), (16, 17), (18, 19))

# The body regions a class map is turned into (the channels of a parsing-PNG label). 'torso_upper'
# and 'torso_lower' split the torso-and-arms area at the middle row of its extent (the vertical
# split of 'five_v' has no parsing class).
PNG_REGIONS: tuple[str, ...] = (
    "head",
    "left_arm",
    "right_arm",
    "torso",
    "left_leg",
    "right_leg",
    "left_foot",
    "right_foot",
    "torso_upper",
    "torso_lower",
)
_REGION_INDEX = {name: i for i, name in enumerate(PNG_REGIONS)}

_ARMS = ("left_arm", "right_arm")
_LEGS = ("left_leg", "right_leg")
_FEET_REGIONS = ("left_foot", "right_foot")

# Grouping -> {part: regions}, merged as the keypoint groupings merge fields.
PNG_GROUPINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "one": {"full": ("head", *_ARMS, "torso", *_LEGS, *_FEET_REGIONS)},
    "two": {
        "torso_arms_head": ("head", *_ARMS, "torso"),
        "legs": (*_LEGS, *_FEET_REGIONS),
    },
    "three_v": {
        "head_mask": ("head",),
        "torso_arms_mask": (*_ARMS, "torso"),
        "legs_mask": (*_LEGS, *_FEET_REGIONS),
    },
    "four": {
        "head_mask": ("head",),
        "arms_mask": _ARMS,
        "torso_mask": ("torso",),
        "legs_mask": (*_LEGS, *_FEET_REGIONS),
    },
    "four_v": {
        "head_mask": ("head",),
        "arms_torso_mask": (*_ARMS, "torso"),
        "legs_mask": _LEGS,
        "feet_mask": _FEET_REGIONS,
    },
    "five": {
        "head_mask": ("head",),
        "arms_mask": _ARMS,
        "torso_mask": ("torso",),
        "legs_mask": _LEGS,
        "feet_mask": _FEET_REGIONS,
    },
    "five_v": {
        "head_mask": ("head",),
        "upper_arms_torso_mask": ("torso_upper",),
        "lower_arms_torso_mask": ("torso_lower",),
        "legs_mask": _LEGS,
        "feet_mask": _FEET_REGIONS,
    },
    "six": {
        "head_mask": ("head",),
        "left_arm_mask": ("left_arm",),
        "right_arm_mask": ("right_arm",),
        "torso_mask": ("torso",),
        "left_leg_mask": ("left_leg", "left_foot"),
        "right_leg_mask": ("right_leg", "right_foot"),
    },
    "eight": {
        "head_mask": ("head",),
        "left_arm_mask": ("left_arm",),
        "right_arm_mask": ("right_arm",),
        "torso_mask": ("torso",),
        "left_leg_mask": ("left_leg",),
        "right_leg_mask": ("right_leg",),
        "left_feet_mask": ("left_foot",),
        "right_feet_mask": ("right_foot",),
    },
}
PNG_GROUPINGS["two_v"] = PNG_GROUPINGS["two"]
_PNG_GROUPING_INDICES: dict[str, tuple[np.ndarray, ...]] = {
    key: tuple(np.array([_REGION_INDEX[r] for r in regions]) for regions in parts.values())
    for key, parts in PNG_GROUPINGS.items()
}
# REGION_FLIP_PERMUTATION[i] = the region that region i becomes after a horizontal flip.
REGION_FLIP_PERMUTATION: tuple[int, ...] = tuple(
    _REGION_INDEX[n.replace("left", "\0").replace("right", "left").replace("\0", "right")]
    for n in PNG_REGIONS
)


def _split_rows(pixels: np.ndarray) -> np.ndarray:
    """Boolean ``[h, w]``: the pixels in the upper half of the rows that ``pixels`` covers."""
    covered = np.flatnonzero(pixels.any(axis=1))
    if covered.size == 0:
        return pixels
    middle = (covered[0] + covered[-1] + 1) / 2
    return pixels & (np.arange(pixels.shape[0])[:, None] < middle)


def facing_camera(class_map: np.ndarray) -> bool:
    """Whether the person's own left appears on the image's right (the person faces us).

    Every pixel of a class that names a side votes: a left-arm/leg/shoe pixel to the right of
    the person's centre column (the mean column of all person pixels) says "facing", one to the
    left says "back turned"; right-side classes vote the other way. With no vote either way
    (no sided class, or a tie) the person is taken as facing the camera.
    """
    person = class_map > 0
    if not person.any():
        return True
    columns = np.nonzero(person)[1]
    centre = columns.mean()
    votes = 0.0
    for left_class, right_class in LIP_SIDED_PAIRS:
        votes += np.sign(np.nonzero(class_map == left_class)[1] - centre).sum()
        votes -= np.sign(np.nonzero(class_map == right_class)[1] - centre).sum()
    return bool(votes >= 0)


def _split_sides(
    pixels: np.ndarray, facing: bool, centre: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(left, right)``: the pixels of a side-less class on the person's left and right sides.

    The dividing column is, per row, the middle of the class's own extent in that row (pants
    and skirts follow the legs as they part), or the fixed column ``centre`` (gloves: the two
    hands are far apart, a row may hold one). A pixel on the dividing column belongs to both.
    """
    columns = np.arange(pixels.shape[1], dtype=np.float64)[None, :]
    if centre is None:
        rows = pixels.any(axis=1)
        first = np.where(rows, pixels.argmax(axis=1), 0)
        last = np.where(rows, pixels.shape[1] - 1 - pixels[:, ::-1].argmax(axis=1), 0)
        middle = ((first + last) / 2.0)[:, None]
    else:
        middle = np.full((pixels.shape[0], 1), centre)
    image_left = pixels & (columns <= middle)
    image_right = pixels & (columns >= middle)
    return (image_right, image_left) if facing else (image_left, image_right)


def png_regions(class_map: np.ndarray) -> np.ndarray:
    """The body regions of a LIP/SCHP class map: boolean ``[R, h, w]`` (``R`` = :data:`PNG_REGIONS`).

    Sided classes (left arm, right shoe, ...) go to their region. Side-less ones (glove, pants,
    skirt, socks, the lower half of a dress or jumpsuit) are split between the left and the right
    region by the person's own sides: :func:`facing_camera` says which image side is the
    person's left, and :func:`_split_sides` divides the class at its middle. Giving them to both
    sides instead would make every such pixel a tie between the left and the right part, and the
    argmax of the training targets gives ties to the first (left) part: on SCHP labels of
    Market-1501, 15.7% of the pixels would go to the left leg and 2.0% to the right one.
    """
    class_map = np.asarray(class_map)
    if class_map.ndim != 2:
        raise ValueError(f"class_map must be [h, w], got shape {class_map.shape}")
    regions = np.zeros((len(PNG_REGIONS), *class_map.shape), dtype=bool)
    if not (class_map > 0).any():
        return regions
    facing = facing_camera(class_map)
    centre = float(np.nonzero(class_map > 0)[1].mean())
    for class_id, name in enumerate(LIP_CLASSES):
        covered = LIP_CLASS_REGIONS[name]
        if not covered:
            continue
        pixels = class_map == class_id
        if not pixels.any():
            continue
        if name in LIP_SPLIT_CLASSES:
            upper = _split_rows(pixels)
            regions[_REGION_INDEX["torso"]] |= upper
            pixels = pixels & ~upper
            covered = tuple(r for r in covered if r != "torso")
        if len(covered) == 1:
            regions[_REGION_INDEX[covered[0]]] |= pixels
            continue
        left_region, right_region = covered  # a left/right pair
        left, right = _split_sides(pixels, facing, centre if name == "glove" else None)
        regions[_REGION_INDEX[left_region]] |= left
        regions[_REGION_INDEX[right_region]] |= right
    # The torso-and-arms area split at the middle of its rows (the two trunk parts of 'five_v').
    trunk = regions[[_REGION_INDEX[r] for r in ("torso", *_ARMS)]].any(axis=0)
    regions[_REGION_INDEX["torso_upper"]] = _split_rows(trunk)
    regions[_REGION_INDEX["torso_lower"]] = trunk & ~regions[_REGION_INDEX["torso_upper"]]
    return regions


def parsing_map_to_parts(class_map: np.ndarray, grouping: str) -> np.ndarray:
    """Turn a LIP/SCHP class map (20 classes) into ``K`` binary part masks.

    Classes go to body regions (:func:`png_regions`), regions to parts (:data:`PNG_GROUPINGS`).
    For ``eight``::

        part             LIP classes
        head_mask        1 hat, 2 hair, 4 sunglasses, 13 face
        left_arm_mask    14 left-arm, 3 glove (its half on the person's left)
        right_arm_mask   15 right-arm, 3 glove (the other half)
        torso_mask       5 upper-clothes, 7 coat, 11 scarf, upper half of 6 dress / 10 jumpsuits
        left_leg_mask    16 left-leg, the left half of 9 pants, 12 skirt, lower 6 dress / 10 jumpsuits
        right_leg_mask   17 right-leg, the right half of the same
        left_feet_mask   18 left-shoe, the left half of 8 socks
        right_feet_mask  19 right-shoe, the right half of 8 socks
        (none)           0 background

    The other groupings merge these regions as their keypoint versions merge fields (``four``:
    arms together, legs with feet; ``five``: feet apart; ``six``: each foot with its leg; ``two``:
    everything above the legs vs legs and feet; ``one``: the whole person). ``five_v`` splits the
    torso-and-arms area at the middle of its rows into its upper and lower trunk parts. Left and
    right are the person's own sides, as in COCO keypoints.

    Args:
        class_map: int ``[h, w]`` with values in 0..19 (LIP order, see :data:`LIP_CLASSES`).
        grouping: the part grouping.

    Returns:
        ``float32 [K, h, w]`` with values 0 or 1.
    """
    if grouping not in PNG_GROUPINGS:
        raise ConfigError(
            f"Part grouping '{grouping}' is not available for parsing PNGs. "
            f"Valid groupings: {', '.join(PNG_GROUPINGS)}."
        )
    return group_regions(png_regions(class_map).astype(np.float32), grouping)


def group_regions(regions: ArrayLike, grouping: str) -> ArrayLike:
    """Group parsing-PNG regions ``[..., R, h, w]`` into ``K`` part masks (max over regions)."""
    if grouping not in PNG_GROUPINGS:
        raise ConfigError(
            f"Part grouping '{grouping}' is not available for parsing PNGs. "
            f"Valid groupings: {', '.join(PNG_GROUPINGS)}."
        )
    if regions.shape[-3] != len(PNG_REGIONS):
        raise ValueError(
            f"regions must be [..., {len(PNG_REGIONS)}, h, w], got shape {tuple(regions.shape)}"
        )
    return _max_over_groups(regions, _PNG_GROUPING_INDICES[grouping])


def load_parsing_png(path: str | Path) -> np.ndarray:
    """Read a LIP/SCHP human-parsing PNG as an ``int64 [h, w]`` class map (values 0..19).

    Expects a single-channel image whose pixel values are class indices: a palette (``P``)
    PNG as SCHP writes, or a grayscale (``L``/``I``) one.

    Raises:
        LabelError: missing or unreadable file, colour image, or a class index above 19.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise LabelError(f"Parsing PNG not found: {p}. Check the masks folder of the dataset.")
    try:
        with Image.open(p) as image:
            mode = image.mode
            if mode not in ("P", "L", "I", "I;16"):
                raise LabelError(
                    f"Parsing PNG {p} is a '{mode}' image; expected a single-channel class map "
                    f"(palette or grayscale PNG with values 0..19, LIP classes)."
                )
            class_map = np.array(image, dtype=np.int64)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        # a header claiming a huge image is refused like a corrupt one (names the file)
        raise LabelError(f"Cannot read parsing PNG {p}: {exc}. Re-create this file.") from exc
    if class_map.size and (class_map.min() < 0 or class_map.max() >= len(LIP_CLASSES)):
        raise LabelError(
            f"Parsing PNG {p} has class index {int(class_map.max())}; expected 0..19 "
            f"(LIP classes: {', '.join(LIP_CLASSES)})."
        )
    return class_map


# --------------------------------------------------------------------------------------
# Label sources: what a label file holds and how its channels become parts
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSource:
    """One kind of label file: its channels, how they group into parts and mirror.

    Both kinds become a ``float32 [C, h, w]`` stack of maps in [0, 1] whose part ``k`` is the
    maximum over the channels of its group, so one augmentation pipeline serves both:

    - ``pifpaf``: the official ``.npy`` files, ``C = 36`` PifPaf fields (:data:`FIELD_NAMES`);
    - ``parsing_png``: LIP/SCHP class-map PNGs, ``C = 10`` binary body regions
      (:data:`PNG_REGIONS`, from :func:`png_regions`).

    Attributes:
        name: ``pifpaf`` | ``parsing_png`` (``model.bpbreid.masks.source``).
        channels: the channel names.
        flip_permutation: ``[C]`` the channel each channel becomes after a horizontal flip.
        suffix: file suffix of the labels of this source.
    """

    name: str
    channels: tuple[str, ...]
    flip_permutation: tuple[int, ...]
    suffix: str

    @property
    def groupings(self) -> dict[str, tuple[np.ndarray, ...]]:
        return _GROUPING_INDICES if self.name == "pifpaf" else _PNG_GROUPING_INDICES

    def check_grouping(self, grouping: str) -> None:
        """Refuse a grouping this source cannot form (ConfigError naming the valid ones)."""
        num_parts(grouping)
        if grouping not in self.groupings:
            raise ConfigError(
                f"Part grouping '{grouping}' (model.bpbreid.masks.preprocess) is not available "
                f"for {self.name} labels. Valid: {', '.join(self.groupings)}."
            )

    def grouping_indices(self, grouping: str) -> tuple[tuple[int, ...], ...]:
        """For each of the ``K`` parts, the channels whose maximum it is."""
        self.check_grouping(grouping)
        return tuple(tuple(int(i) for i in idx) for idx in self.groupings[grouping])

    def group(self, stack: ArrayLike, grouping: str) -> ArrayLike:
        """``[..., C, h, w]`` -> ``[..., K, h, w]`` part masks."""
        return (group_fields if self.name == "pifpaf" else group_regions)(stack, grouping)

    def flip(self, stack: ArrayLike) -> ArrayLike:
        """Mirror ``[..., C, h, w]`` along the width and swap left/right channels."""
        if stack.shape[-3] != len(self.channels):
            raise ValueError(
                f"{self.name} labels are [..., {len(self.channels)}, h, w], "
                f"got shape {tuple(stack.shape)}"
            )
        if isinstance(stack, torch.Tensor):
            perm = torch.as_tensor(self.flip_permutation, device=stack.device)
            return stack.index_select(-3, perm).flip(-1)
        return np.ascontiguousarray(stack[..., list(self.flip_permutation), :, ::-1])

    def read(self, path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
        """One label file as ``float32 [C, h, w]``.

        Args:
            path: the label file.
            size: ``(h, w)`` to shrink a parsing PNG to (area averaging: a region's share of
                each block); the PifPaf fields keep their own (low) resolution.
        """
        if self.name == "pifpaf":
            return load_parsing_label(path)
        regions = png_regions(load_parsing_png(path)).astype(np.float32)
        if size is not None:
            regions = np.clip(resize_maps(regions, size, mode="area"), 0.0, 1.0)
        return regions


LABEL_SOURCES: dict[str, LabelSource] = {
    "pifpaf": LabelSource("pifpaf", FIELD_NAMES, FLIP_PERMUTATION, ".npy"),
    "parsing_png": LabelSource("parsing_png", PNG_REGIONS, REGION_FLIP_PERMUTATION, ".png"),
}


def label_source(name: str) -> LabelSource:
    """The :class:`LabelSource` called ``name`` (``pifpaf`` | ``parsing_png``)."""
    if name not in LABEL_SOURCES:
        raise ConfigError(
            f"Unknown label source '{name}' (model.bpbreid.masks.source). "
            f"Valid: {', '.join(LABEL_SOURCES)}."
        )
    return LABEL_SOURCES[name]


def label_source_of_file(path: str | Path) -> LabelSource:
    """The source of a label file from its name: ``.png`` -> parsing_png, else pifpaf."""
    return LABEL_SOURCES["parsing_png" if str(path).lower().endswith(".png") else "pifpaf"]


def load_label_parts(
    path: str | Path, grouping: str, size: tuple[int, int] | None = None
) -> np.ndarray:
    """The ``K`` part masks ``float32 [K, h, w]`` of any label file (``.npy`` fields or ``.png``).

    What the mask figures draw (e.g. :func:`bpbreid.viz.masks.show_overlay`) for a labelled
    image, whichever source its label comes from.
    """
    source = label_source_of_file(path)
    return source.group(source.read(path, size), grouping)
