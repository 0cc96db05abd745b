"""The vocabulary of body parts: fields, keypoints, groupings, part and embedding names.

One neutral module that the model, the losses, the metrics, the official-checkpoint loader
and the data code all read, so that none of them imports another's layer for a name.

* the 36 PifPaf fields of the official labels (17 COCO keypoints, then 19 limbs), in the
  official order, and the limbs' keypoint endpoints;
* the part groupings (``eight``, ``five_v``, ...): each part is the maximum over a list of
  fields, with the official part order and field lists (some lists are asymmetric in the
  original: kept as they are, so that official labels and checkpoints mean the same here);
* the part label convention (label 0 = background, ties go to the background);
* the embedding names (readable ones, and the official short names accepted as aliases).

Reference:
    Somers, Vleeschouwer, Alahi. "Body Part-Based Representation Learning for Occluded Person
    Re-Identification", WACV 2023 (arXiv 2211.03679); official code bpbreid c0db006,
    ``torchreid/data/masks_transforms`` (field order, groupings) and ``utils/constants.py``
    (embedding names).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from bpbreid.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where tensors are met: reading a config stays fast
    import torch

# --------------------------------------------------------------------------------------
# The 36 fields (official order: 17 COCO keypoints, then 19 limbs)
# --------------------------------------------------------------------------------------

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

LIMB_NAMES: tuple[str, ...] = (
    "left_ankle_to_left_knee",
    "left_knee_to_left_hip",
    "right_ankle_to_right_knee",
    "right_knee_to_right_hip",
    "left_hip_to_right_hip",
    "left_shoulder_to_left_hip",
    "right_shoulder_to_right_hip",
    "left_shoulder_to_right_shoulder",
    "left_shoulder_to_left_elbow",
    "right_shoulder_to_right_elbow",
    "left_elbow_to_left_wrist",
    "right_elbow_to_right_wrist",
    "left_eye_to_right_eye",
    "nose_to_left_eye",
    "nose_to_right_eye",
    "left_eye_to_left_ear",
    "right_eye_to_right_ear",
    "left_ear_to_left_shoulder",
    "right_ear_to_right_shoulder",
)

FIELD_NAMES: tuple[str, ...] = KEYPOINT_NAMES + LIMB_NAMES
NUM_KEYPOINTS = len(KEYPOINT_NAMES)  # 17
NUM_FIELDS = len(FIELD_NAMES)  # 36
FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(FIELD_NAMES)}


def _limb_endpoints(limb: str) -> tuple[int, int]:
    start, end = limb.split("_to_")
    return KEYPOINT_NAMES.index(start), KEYPOINT_NAMES.index(end)


# Keypoint index pairs of the 19 limbs, derived from their names ("a_to_b" -> (a, b)).
LIMBS: tuple[tuple[int, int], ...] = tuple(_limb_endpoints(name) for name in LIMB_NAMES)

# --------------------------------------------------------------------------------------
# Part groupings (official keys, part order and field lists; some lists are asymmetric in
# the official code and are kept as they are so that official labels and checkpoints agree)
# --------------------------------------------------------------------------------------

_HEAD: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_eye_to_right_eye",
    "nose_to_left_eye",
    "nose_to_right_eye",
    "left_eye_to_left_ear",
    "right_eye_to_right_ear",
    "left_ear_to_left_shoulder",
    "right_ear_to_right_shoulder",
)
_LEFT_ARM = (
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "left_shoulder_to_left_elbow",
    "left_elbow_to_left_wrist",
)
_RIGHT_ARM = (
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "right_shoulder_to_right_elbow",
    "right_elbow_to_right_wrist",
)
_TORSO_LIMBS = (
    "left_hip_to_right_hip",
    "left_shoulder_to_left_hip",
    "right_shoulder_to_right_hip",
    "left_shoulder_to_right_shoulder",
)
_LEG_LIMBS = (
    "left_ankle_to_left_knee",
    "left_knee_to_left_hip",
    "right_ankle_to_right_knee",
    "right_knee_to_right_hip",
)
_ARMS_4 = (
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_shoulder_to_left_elbow",
    "right_shoulder_to_right_elbow",
    "left_elbow_to_left_wrist",
    "right_elbow_to_right_wrist",
)
_LEGS_ALL = (
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    *_LEG_LIMBS,
    "left_hip_to_right_hip",
)
_LEGS_NO_ANKLES = ("left_hip", "right_hip", "left_knee", "right_knee", *_LEG_LIMBS)
_FEET = ("left_ankle", "right_ankle")

PART_GROUPINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "one": {"full": FIELD_NAMES},
    "two": {
        "torso_arms_head": (
            *_HEAD,
            "left_shoulder",
            "right_shoulder",
            "left_shoulder_to_left_hip",
            "right_shoulder_to_right_hip",
            "left_shoulder_to_right_shoulder",
            "left_elbow",
            "right_elbow",
            "left_wrist",
            "right_wrist",
            "left_shoulder_to_left_elbow",
            "right_shoulder_to_right_elbow",
            "left_elbow_to_left_wrist",
            "right_elbow_to_right_wrist",
        ),
        "legs": _LEGS_ALL,
    },
    # Official 'three_v': head, torso with arms, legs (with feet).
    "three_v": {
        "head_mask": _HEAD,
        "torso_arms_mask": (
            "left_shoulder",
            "right_shoulder",
            "left_shoulder_to_left_hip",
            "right_shoulder_to_right_hip",
            "left_shoulder_to_right_shoulder",
            "left_elbow",
            "right_elbow",
            "left_wrist",
            "right_wrist",
            "left_shoulder_to_left_elbow",
            "right_shoulder_to_right_elbow",
            "left_elbow_to_left_wrist",
            "right_elbow_to_right_wrist",
        ),
        "legs_mask": _LEGS_ALL,
    },
    "four": {
        "head_mask": _HEAD,
        "arms_mask": _ARMS_4,
        "torso_mask": (
            "left_shoulder",
            "right_shoulder",
            "left_hip",
            "right_hip",
            "left_hip_to_right_hip",
            "left_shoulder_to_left_hip",
            "right_shoulder_to_right_hip",
            "left_shoulder_to_right_shoulder",
        ),
        "legs_mask": _LEGS_ALL,
    },
    # Official 'four_v': head, upper body (torso + arms), legs, feet.
    "four_v": {
        "head_mask": _HEAD,
        "arms_torso_mask": (
            "left_elbow",
            "right_elbow",
            "left_wrist",
            "right_wrist",
            "left_shoulder_to_left_elbow",
            "right_shoulder_to_right_elbow",
            "left_elbow_to_left_wrist",
            "right_elbow_to_right_wrist",
            "left_shoulder",
            "right_shoulder",
            "left_hip",
            "right_hip",
            *_TORSO_LIMBS,
        ),
        "legs_mask": _LEGS_NO_ANKLES,
        "feet_mask": _FEET,
    },
    "five": {
        "head_mask": _HEAD,
        "arms_mask": (*_LEFT_ARM, *_RIGHT_ARM),
        "torso_mask": ("left_hip", "right_hip", *_TORSO_LIMBS),
        "legs_mask": (
            "left_hip_to_right_hip",
            "left_hip",
            "right_hip",
            "left_knee",
            "right_knee",
            *_LEG_LIMBS,
        ),
        "feet_mask": _FEET,
    },
    "five_v": {
        "head_mask": _HEAD,
        "upper_arms_torso_mask": (
            "left_elbow",
            "right_elbow",
            "left_shoulder_to_left_elbow",
            "right_shoulder_to_right_elbow",
            "left_shoulder",
            "right_shoulder",
            "left_shoulder_to_right_shoulder",
        ),
        "lower_arms_torso_mask": (
            "left_wrist",
            "right_wrist",
            "left_elbow_to_left_wrist",
            "right_elbow_to_right_wrist",
            "left_hip",
            "right_hip",
            "right_shoulder_to_right_hip",  # official list: the left one is not there
        ),
        "legs_mask": _LEGS_NO_ANKLES,
        "feet_mask": _FEET,
    },
    # Official 'six': 'eight' with each foot merged into its leg.
    "six": {
        "head_mask": _HEAD,
        "left_arm_mask": _LEFT_ARM,
        "right_arm_mask": _RIGHT_ARM,
        "torso_mask": ("left_hip", "right_hip", *_TORSO_LIMBS),
        "left_leg_mask": (
            "left_knee",
            "left_ankle",
            "left_ankle_to_left_knee",
            "left_knee_to_left_hip",
            "left_hip_to_right_hip",
        ),
        "right_leg_mask": (
            "right_knee",
            "right_ankle",
            "right_ankle_to_right_knee",
            "right_knee_to_right_hip",
        ),
    },
    "eight": {
        "head_mask": _HEAD,
        "left_arm_mask": _LEFT_ARM,
        "right_arm_mask": _RIGHT_ARM,
        "torso_mask": ("left_hip", "right_hip", *_TORSO_LIMBS),
        "left_leg_mask": (
            "left_knee",
            "left_ankle_to_left_knee",
            "left_knee_to_left_hip",
            "left_hip_to_right_hip",  # official list: the hip limb sits with the left leg
        ),
        "right_leg_mask": ("right_knee", "right_ankle_to_right_knee", "right_knee_to_right_hip"),
        "left_feet_mask": ("left_ankle",),
        "right_feet_mask": ("right_ankle",),
    },
}
# The official code names the two-part grouping 'two_v' and the three-part one 'three_v'.
PART_GROUPINGS["two_v"] = PART_GROUPINGS["two"]

_GROUPING_INDICES: dict[str, tuple[np.ndarray, ...]] = {
    key: tuple(np.array([FIELD_INDEX[f] for f in fields]) for fields in parts.values())
    for key, parts in PART_GROUPINGS.items()
}


def _unknown_grouping(grouping: str, valid: Mapping[str, object]) -> ConfigError:
    return ConfigError(
        f"Unknown part grouping '{grouping}' (model.bpbreid.masks.preprocess). "
        f"Valid groupings: {', '.join(f'{k} ({num_parts(k)} parts)' for k in valid)}."
    )


def num_parts(grouping: str) -> int:
    """Number of body parts ``K`` of a grouping (``'eight'`` -> 8).

    Raises:
        ConfigError: ``grouping`` is not a known grouping; the message lists the valid ones.
    """
    if grouping not in PART_GROUPINGS:
        raise _unknown_grouping(grouping, PART_GROUPINGS)
    return len(PART_GROUPINGS[grouping])


def part_names(grouping: str) -> tuple[str, ...]:
    """The ``K`` part names of a grouping, in channel order (``'head_mask'``, ...)."""
    num_parts(grouping)  # validates
    return tuple(PART_GROUPINGS[grouping])


def check_grouping(preprocess: str, parts_num: int) -> None:
    """Check that ``model.bpbreid.masks.parts_num`` matches the grouping ``preprocess``.

    Raises:
        ConfigError: unknown grouping, or ``parts_num`` differs from its number of parts.
    """
    k = num_parts(preprocess)
    if k != parts_num:
        same_k = [g for g in PART_GROUPINGS if len(PART_GROUPINGS[g]) == parts_num]
        hint = f" or a grouping with {parts_num} parts: {', '.join(same_k)}" if same_k else ""
        raise ConfigError(
            f"model.bpbreid.masks.parts_num={parts_num} does not match "
            f"model.bpbreid.masks.preprocess='{preprocess}', which has {k} parts. "
            f"Set model.bpbreid.masks.parts_num={k}{hint}."
        )


# --------------------------------------------------------------------------------------
# Part labels
# --------------------------------------------------------------------------------------


def hard_labels(targets: np.ndarray | torch.Tensor) -> Any:
    """Per-pixel part label: argmax over the ``K + 1`` channels (0 = background).

    Ties go to the lowest channel index, so background wins a tie with any part.

    Args:
        targets: ``[K+1, h, w]`` or ``[N, K+1, h, w]``.

    Returns:
        int64 ``[h, w]`` or ``[N, h, w]`` (tensor in, tensor out).
    """
    if not isinstance(targets, np.ndarray) and hasattr(targets, "argmax"):  # a tensor
        import torch

        return targets.argmax(dim=-3).to(torch.int64)
    return np.asarray(targets).argmax(axis=-3).astype(np.int64)


# --------------------------------------------------------------------------------------
# Label files
# --------------------------------------------------------------------------------------

# The official label folder: <dataset>/masks/<DEFAULT_MASKS_DIR>/<split>/<stem><suffix>.
# Training targets are at 1/4 of the image size; the pixel loss resizes them to the logits.
MASK_STRIDE = 4
DEFAULT_MASKS_DIR = "pifpaf_maskrcnn_filtering"
# Human-parsing PNGs beside the images: <dataset>/<split folder>_parsing_pgt/<stem>.png (the
# layout of the SCHP pseudo-labels shipped by public re-id repositories).
DEFAULT_PNG_FOLDER = "{split}_parsing_pgt"

# --------------------------------------------------------------------------------------
# Embedding names
# --------------------------------------------------------------------------------------

# Readable embedding names, and the official BPBReID names accepted as aliases.
EMBEDDINGS: tuple[str, ...] = ("global", "foreground", "background", "concat_parts", "parts")
LOSS_EMBEDDINGS: tuple[str, ...] = ("global", "foreground", "background", "concat_parts", "parts")
EMBEDDING_ALIASES: dict[str, str] = {
    "globl": "global",
    "foreg": "foreground",
    "backg": "background",
    "conct": "concat_parts",
}
# The test embeddings that stand for K per-part embeddings (expanded to one per part).
PART_EMBEDDINGS: tuple[str, ...] = ("parts", "bn_parts")


def canonical_embedding(name: str) -> str:
    """``'bn_foreg'`` -> ``'bn_foreground'``; readable names pass through unchanged."""
    prefix = "bn_" if name.startswith("bn_") else ""
    base = name.removeprefix("bn_")
    return prefix + EMBEDDING_ALIASES.get(base, base)
