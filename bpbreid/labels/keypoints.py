"""COCO-17 keypoints: conversions from other skeletons, person selection, JSON files.

Every pose estimator adapter returns the 17 COCO keypoints of one person as ``[17, 3]``
rows ``(x, y, confidence)`` in pixels of the image (``x = 0`` is the centre of the first
column), in the official order of :data:`bpbreid.data.parsing.KEYPOINT_NAMES`; confidence 0
means "not found". This module holds what the adapters share:

* :data:`MEDIAPIPE_TO_COCO` / :func:`coco_from_mediapipe`: MediaPipe's 33 landmarks -> COCO-17;
* :func:`letterbox` / :class:`Letterbox`: upscale a small re-id crop and pad it to a square
  (single-person pose models expect a person with some context), and map points back;
* :func:`upscale` / :func:`downscale_keypoints`: enlarge a small crop before any estimator
  sees it (``labels`` does it for every estimator), and map the keypoints back;
* :func:`select_person`: the person a re-id crop is about (the largest, most central one);
* :func:`read_keypoints_json` / :func:`write_keypoints_json`: keypoints stored per image.

Reference:
    COCO keypoints: Lin et al., "Microsoft COCO", ECCV 2014 (17 keypoints, visibility flags
    0/1/2). MediaPipe Pose (BlazePose): Bazarevsky et al., "BlazePose: On-device Real-time
    Body Pose tracking", CVPRW 2020 (33 landmarks, normalized coordinates, visibility).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bpbreid.errors import LabelError
from bpbreid.parts import KEYPOINT_NAMES, NUM_KEYPOINTS

# MediaPipe Pose landmark names, in MediaPipe's order (33).
MEDIAPIPE_LANDMARKS: tuple[str, ...] = (
    "nose",
    "left_eye_inner",
    "left_eye",
    "left_eye_outer",
    "right_eye_inner",
    "right_eye",
    "right_eye_outer",
    "left_ear",
    "right_ear",
    "mouth_left",
    "mouth_right",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_pinky",
    "right_pinky",
    "left_index",
    "right_index",
    "left_thumb",
    "right_thumb",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_heel",
    "right_heel",
    "left_foot_index",
    "right_foot_index",
)

# MEDIAPIPE_TO_COCO[j] = MediaPipe landmark index of COCO keypoint j (names agree one to one).
MEDIAPIPE_TO_COCO: tuple[int, ...] = tuple(MEDIAPIPE_LANDMARKS.index(n) for n in KEYPOINT_NAMES)


def empty_keypoints() -> np.ndarray:
    """``float32 [17, 3]`` of zeros: no keypoint found."""
    return np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)


def coco_from_mediapipe(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """MediaPipe's 33 landmarks -> COCO-17 keypoints in pixels.

    Args:
        landmarks: ``[33, C]`` rows ``(x, y, z, visibility[, presence])`` with ``x, y``
            normalized to [0, 1] by the image width and height (MediaPipe's convention:
            0 and 1 are the image borders).
        height, width: the size of the image MediaPipe saw.

    Returns:
        ``float32 [17, 3]`` ``(x, y, confidence)`` in pixels (``x = 0`` is the centre of
        the first column); confidence = visibility (times presence when given).
    """
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.ndim != 2 or lm.shape[0] != len(MEDIAPIPE_LANDMARKS) or lm.shape[1] < 4:
        raise ValueError(
            f"landmarks must be [33, 4+] (x, y, z, visibility[, presence]), got {lm.shape}"
        )
    picked = lm[list(MEDIAPIPE_TO_COCO)]
    out = np.empty((NUM_KEYPOINTS, 3), dtype=np.float32)
    out[:, 0] = picked[:, 0] * width - 0.5
    out[:, 1] = picked[:, 1] * height - 0.5
    confidence = picked[:, 3]
    if lm.shape[1] >= 5:
        confidence = confidence * picked[:, 4]
    out[:, 2] = np.clip(confidence, 0.0, 1.0)
    return out


def drop_outside(
    keypoints: np.ndarray, height: int, width: int, tolerance: float = 0.5
) -> np.ndarray:
    """Zero the confidence of keypoints outside the image (more than ``tolerance`` px out).

    Single-person pose models extrapolate the whole skeleton; a keypoint predicted below
    the bottom of a crop is not in the picture, so it must not draw a field.
    """
    out = np.asarray(keypoints, dtype=np.float32).copy()
    x, y = out[:, 0], out[:, 1]
    outside = (x < -0.5 - tolerance) | (x > width - 0.5 + tolerance)
    outside |= (y < -0.5 - tolerance) | (y > height - 0.5 + tolerance)
    out[outside, 2] = 0.0
    return out


# --------------------------------------------------------------------------------------
# Letterboxing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed on a padded canvas: ``canvas = image * scale + offset``.

    Attributes:
        scale: resize factor of the image.
        offset_x, offset_y: position of the resized image's top-left corner on the canvas.
        canvas_height, canvas_width: canvas size.
    """

    scale: float
    offset_x: int
    offset_y: int
    canvas_height: int
    canvas_width: int

    def to_image(self, keypoints: np.ndarray) -> np.ndarray:
        """Keypoints ``[17, 3]`` in canvas pixels -> pixels of the original image."""
        out = np.asarray(keypoints, dtype=np.float32).copy()
        # Pixel centres: canvas x_c + 0.5 = (x + 0.5) * scale + offset.
        out[:, 0] = (out[:, 0] + 0.5 - self.offset_x) / self.scale - 0.5
        out[:, 1] = (out[:, 1] + 0.5 - self.offset_y) / self.scale - 0.5
        return out


def letterbox(
    image: np.ndarray, min_height: int = 256, margin: float = 0.15, fill: int = 0
) -> tuple[np.ndarray, Letterbox]:
    """Upscale a crop to at least ``min_height`` rows and pad it to a square with a margin.

    Re-id crops are small (128x64) and cut tight around the person; single-person pose
    models find people better when the person is large and has some room around it.

    Args:
        image: ``uint8 [H, W, 3]``.
        min_height: upscale (never downscale) so the crop has at least this many rows.
        margin: padding above and below the crop, as a fraction of its height; the width
            is padded to a square.
        fill: padding value.

    Returns:
        ``(canvas uint8 [S, S, 3], Letterbox)``.
    """
    from PIL import Image

    h, w = image.shape[:2]
    scale = max(1.0, min_height / max(h, 1))
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = image
    if (new_h, new_w) != (h, w):
        resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    side = max(round(new_h * (1 + 2 * margin)), round(new_w * (1 + 2 * margin)))
    canvas = np.full((side, side, 3), fill, dtype=np.uint8)
    oy, ox = (side - new_h) // 2, (side - new_w) // 2
    canvas[oy : oy + new_h, ox : ox + new_w] = resized
    # The effective scale per axis may differ by rounding; use the vertical one (the
    # larger dimension of a person crop, so the smaller relative rounding error).
    return canvas, Letterbox(new_h / h, ox, oy, side, side)


def upscale(image: np.ndarray, min_height: int) -> tuple[np.ndarray, float, float]:
    """Enlarge ``image`` (never shrink it) to at least ``min_height`` rows, aspect kept.

    Pose estimators are trained on people hundreds of pixels tall and miss many in a
    128x64 re-id crop; enlarging the crop first finds more of them.

    Returns:
        ``(image, scale_x, scale_y)``: the (possibly same) image and the factors that map
        its pixels back (:func:`downscale_keypoints`); ``(image, 1, 1)`` when tall enough.
    """
    from PIL import Image

    h, w = image.shape[:2]
    if min_height <= 0 or h >= min_height:
        return image, 1.0, 1.0
    new_h, new_w = min_height, max(1, round(w * min_height / max(h, 1)))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    return resized, new_w / w, new_h / h


def downscale_keypoints(keypoints: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """Keypoints ``[17, 3]`` found on an image enlarged by :func:`upscale` -> original pixels."""
    out = np.asarray(keypoints, dtype=np.float32).copy()
    # Pixel centres: enlarged x_e + 0.5 = (x + 0.5) * scale.
    out[:, 0] = (out[:, 0] + 0.5) / scale_x - 0.5
    out[:, 1] = (out[:, 1] + 0.5) / scale_y - 0.5
    return out


# --------------------------------------------------------------------------------------
# Choosing the person of a crop
# --------------------------------------------------------------------------------------


def keypoint_box(keypoints: np.ndarray, min_confidence: float = 0.0) -> np.ndarray | None:
    """``[x0, y0, x1, y1]`` around the keypoints with confidence above ``min_confidence``."""
    kps = np.asarray(keypoints, dtype=np.float32)
    found = kps[:, 2] > min_confidence
    if not found.any():
        return None
    xs, ys = kps[found, 0], kps[found, 1]
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


def person_priority(box: np.ndarray, height: int, width: int) -> float:
    """How likely a box is *the* person of a re-id crop: its area share times centrality.

    ``area share`` = area of the box inside the image / image area; ``centrality`` = 1 at
    the image centre, 0 at a corner (distance of the box centre, normalized).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    cx0, cy0 = max(x0, -0.5), max(y0, -0.5)
    cx1, cy1 = min(x1, width - 0.5), min(y1, height - 0.5)
    area = max(cx1 - cx0, 0.0) * max(cy1 - cy0, 0.0) / float(height * width)
    dx = ((x0 + x1) / 2 - (width - 1) / 2) / (width / 2)
    dy = ((y0 + y1) / 2 - (height - 1) / 2) / (height / 2)
    centrality = max(0.0, 1.0 - math.hypot(dx, dy) / math.sqrt(2))
    # A box reduced to a point (one keypoint) still counts a little, so that a lone head
    # above an occluder is kept when nobody else is there.
    return (area + 1e-4) * centrality


def select_person(
    people: list[np.ndarray],
    height: int,
    width: int,
    boxes: list[np.ndarray | None] | None = None,
) -> int | None:
    """Index of the person a re-id crop shows: the largest and most central one.

    Args:
        people: keypoints ``[17, 3]`` of each detected person.
        height, width: image size.
        boxes: detection boxes ``[x0, y0, x1, y1]`` (default: the box of the keypoints).

    Returns:
        The index into ``people``, or None when nobody has a found keypoint.
    """
    best, best_priority = None, -1.0
    for i, kps in enumerate(people):
        box = boxes[i] if boxes is not None and boxes[i] is not None else keypoint_box(kps)
        if box is None or not (np.asarray(kps)[:, 2] > 0).any():
            continue
        priority = person_priority(box, height, width)
        if priority > best_priority:
            best, best_priority = i, priority
    return best


# --------------------------------------------------------------------------------------
# JSON keypoint files
# --------------------------------------------------------------------------------------


def _as_keypoints(raw: Any, source: str) -> np.ndarray:
    """17 ``(x, y, c)`` rows from nested ``[[x, y, c], ...]`` or flat ``[x, y, c, ...]`` lists.

    A third column of COCO visibility flags (integers 0/1/2 with at least one 2) becomes
    confidence 1 for "visible" (2) and 0 otherwise (0 = not labelled, 1 = labelled but
    hidden: an occluded keypoint must not draw a field); other values are confidences
    clipped to [0, 1].
    """
    try:
        arr = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError):
        raise LabelError(f"{source}: keypoints must be numbers, got {raw!r:.80}") from None
    if arr.ndim == 1 and arr.size == NUM_KEYPOINTS * 3:
        arr = arr.reshape(NUM_KEYPOINTS, 3)
    if arr.shape == (NUM_KEYPOINTS, 2):
        arr = np.concatenate([arr, np.ones((NUM_KEYPOINTS, 1), np.float32)], axis=1)
    if arr.shape != (NUM_KEYPOINTS, 3):
        raise LabelError(
            f"{source}: expected 17 COCO keypoints as [[x, y, confidence], ...] (or a flat "
            f"list of 51 numbers), got shape {arr.shape}."
        )
    if not np.isfinite(arr).all():
        raise LabelError(f"{source}: keypoints contain NaN or infinity.")
    flags = arr[:, 2]
    if np.all(np.isin(flags, (0.0, 1.0, 2.0))) and (flags == 2.0).any():
        arr[:, 2] = (flags == 2.0).astype(np.float32)
    else:
        arr[:, 2] = np.clip(flags, 0.0, 1.0)
    return arr


def read_keypoints_json(
    path: str | Path, height: int, width: int
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Read the people of one image from a JSON file.

    Accepted layouts (keypoints in COCO-17 order, pixels of the image):

    * ``[[x, y, c], ... 17 rows]`` or a flat list of 51 numbers;
    * ``{"keypoints": ..., "box": [x0, y0, x1, y1]}`` (``box`` optional);
    * ``{"people": [{"keypoints": ..., "box": ...}, ...]}`` (several people: the crop's
      person is chosen with :func:`select_person`);
    * any of the dicts with ``"image_size": [height, width]``: the size the coordinates
      refer to, rescaled to the actual image (keypoints drawn at another resolution).

    Returns:
        ``(people, boxes)``: keypoints ``[17, 3]`` per person and their boxes (or None).

    Raises:
        LabelError: unreadable JSON or a wrong layout (names the file).
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise LabelError(f"Keypoint file {p} does not exist.") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise LabelError(f"Keypoint file {p} is not valid JSON ({exc}).") from exc
    size = data.get("image_size") if isinstance(data, dict) else None
    entries = data.get("people") if isinstance(data, dict) and "people" in data else [data]
    if not isinstance(entries, list):
        raise LabelError(f"{p}: 'people' must be a list of {{'keypoints': ...}} entries.")
    people: list[np.ndarray] = []
    boxes: list[np.ndarray | None] = []
    for i, entry in enumerate(entries):
        raw = entry.get("keypoints") if isinstance(entry, dict) else entry
        if raw is None:
            raise LabelError(f"{p}: entry {i} has no 'keypoints'.")
        kps = _as_keypoints(raw, f"{p} (entry {i})")
        box = None
        if isinstance(entry, dict) and entry.get("box") is not None:
            box = np.asarray(entry["box"], dtype=np.float32).reshape(4)
        if size is not None:
            sh, sw = (float(v) for v in size)
            fy, fx = height / sh, width / sw
            kps[:, 0] = (kps[:, 0] + 0.5) * fx - 0.5
            kps[:, 1] = (kps[:, 1] + 0.5) * fy - 0.5
            if box is not None:
                box = box * np.array([fx, fy, fx, fy], dtype=np.float32)
        people.append(kps)
        boxes.append(box)
    return people, boxes


def write_keypoints_json(
    path: str | Path,
    keypoints: np.ndarray,
    image_size: tuple[int, int] | None = None,
    box: np.ndarray | None = None,
) -> Path:
    """Write one person's keypoints ``[17, 3]`` in the layout :func:`read_keypoints_json` reads.

    Args:
        path: the ``.json`` file (folders are created).
        keypoints: ``[17, 3]`` ``(x, y, confidence)`` in pixels, COCO order.
        image_size: ``(height, width)`` the coordinates refer to (recommended).
        box: optional person box ``[x0, y0, x1, y1]``.
    """
    kps = np.asarray(keypoints, dtype=np.float32)
    if kps.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must be [17, 3], got {kps.shape}")
    data: dict[str, Any] = {
        "format": "coco17",
        "keypoint_names": list(KEYPOINT_NAMES),
        "keypoints": [[round(float(v), 3) for v in row] for row in kps],
    }
    if image_size is not None:
        data["image_size"] = [int(image_size[0]), int(image_size[1])]
    if box is not None:
        data["box"] = [round(float(v), 3) for v in np.asarray(box).reshape(4)]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data))
    return p
