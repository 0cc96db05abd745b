"""What is drawn at random: identity appearances, walking poses and camera styles.

An identity's appearance is spread over every body part (hair or hat, upper clothing
colour/pattern/sleeves, lower clothing, shoes, bag, body width), drawn from small palettes so
that no single part identifies a person. Appearances and camera styles derive from the dataset
seed alone (:func:`identity_appearance`, :func:`camera_style`); a pose is drawn per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FACINGS: tuple[str, ...] = ("front", "back", "left", "right")
# Facing -> yaw in degrees: 0 faces the camera, 90 faces the image's right, 180 turns its
# back to the camera, 270 faces the image's left.
FACING_YAW: dict[str, float] = {"front": 0.0, "right": 90.0, "back": 180.0, "left": 270.0}

RGB = tuple[int, int, int]

# --------------------------------------------------------------------------------------
# Palettes: small on purpose, so that two identities often share the colour of some part
# and no single part identifies a person.
# --------------------------------------------------------------------------------------

SKIN: tuple[RGB, ...] = (
    (241, 194, 160),
    (224, 172, 128),
    (198, 134, 96),
    (160, 100, 70),
    (110, 70, 50),
)
HAIR: tuple[RGB, ...] = (
    (20, 18, 18),
    (70, 45, 25),
    (125, 82, 40),
    (195, 165, 105),
    (150, 150, 150),
)
UPPER: tuple[RGB, ...] = (
    (200, 40, 40), (40, 70, 190), (40, 150, 60), (230, 200, 40), (235, 235, 235), (30, 30, 30),
    (128, 128, 128), (235, 130, 30), (120, 50, 150), (120, 180, 230), (230, 140, 170), (30, 80, 40),
)  # fmt: skip
LOWER: tuple[RGB, ...] = (
    (25, 25, 30), (30, 40, 90), (60, 90, 150), (180, 160, 110), (110, 110, 115), (100, 70, 45),
    (225, 225, 220), (170, 40, 40),
)  # fmt: skip
SHOES: tuple[RGB, ...] = ((20, 20, 20), (235, 235, 235), (110, 70, 40), (200, 40, 40))
BAGS: tuple[RGB, ...] = ((25, 25, 25), (120, 75, 40), (40, 60, 140), (170, 30, 30), (60, 120, 60))
PATTERNS: tuple[str, ...] = ("plain", "stripes", "two_tone")
LOWER_STYLES: tuple[str, ...] = ("pants", "shorts", "skirt")
HAIR_STYLES: tuple[str, ...] = ("short", "long", "bald")
BAG_STYLES: tuple[str, ...] = ("none", "backpack", "shoulder_bag")


# --------------------------------------------------------------------------------------
# Identities, poses and cameras
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Appearance:
    """What a person looks like, constant over all images of one identity.

    Colours are RGB 0..255. ``bag_side`` is the person's own side (``left`` = the side of
    the ``left_*`` keypoints), so a shoulder bag is a left/right cue that flips correctly.
    """

    skin: RGB
    hair: RGB
    hair_style: str  # short | long | bald
    hat: RGB | None
    upper: RGB
    upper_secondary: RGB
    pattern: str  # plain | stripes | two_tone
    sleeves: str  # short | long
    lower: RGB
    lower_style: str  # pants | shorts | skirt
    shoes: RGB
    bag: str  # none | backpack | shoulder_bag
    bag_color: RGB
    bag_side: str  # left | right
    body_width: float  # lateral scale of the body, ~0.85..1.2
    height_factor: float  # person height relative to the average, ~0.92..1.05


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """A random identity appearance drawn from the palettes."""
    upper = _pick(rng, UPPER)
    secondary = _pick(rng, [c for c in UPPER if c != upper])
    return Appearance(
        skin=_pick(rng, SKIN),
        hair=_pick(rng, HAIR),
        hair_style=_pick(rng, HAIR_STYLES) if rng.random() < 0.85 else "short",
        hat=_pick(rng, UPPER) if rng.random() < 0.15 else None,
        upper=upper,
        upper_secondary=secondary,
        pattern=_pick(rng, PATTERNS),
        sleeves="long" if rng.random() < 0.5 else "short",
        lower=_pick(rng, LOWER),
        lower_style=_pick(rng, LOWER_STYLES) if rng.random() < 0.7 else "pants",
        shoes=_pick(rng, SHOES),
        bag=_pick(rng, BAG_STYLES),
        bag_color=_pick(rng, BAGS),
        bag_side="left" if rng.random() < 0.5 else "right",
        body_width=float(rng.uniform(0.85, 1.2)),
        height_factor=float(rng.uniform(0.92, 1.05)),
    )


def identity_appearance(seed: int, pid: int) -> Appearance:
    """The appearance of identity ``pid`` in the dataset generated with ``seed``."""
    return sample_appearance(np.random.default_rng([seed, 100, pid]))


@dataclass(frozen=True)
class Pose:
    """One walking pose.

    Attributes:
        facing: front | back | left | right (``left`` = walking towards the image's left).
        yaw: the facing angle in degrees (see :data:`FACING_YAW`) including jitter.
        phase: walking phase in radians; the left leg swings forward as ``sin(phase)``.
        arm_swing, leg_swing: swing amplitudes (radians).
        elbow_bend, knee_bend: how much forearms and shins bend (radians).
    """

    facing: str = "front"
    yaw: float = 0.0
    phase: float = 0.0
    arm_swing: float = 0.35
    leg_swing: float = 0.3
    elbow_bend: float = 0.25
    knee_bend: float = 0.3


def sample_pose(rng: np.random.Generator, facing: str | None = None) -> Pose:
    """A random walking pose; ``facing`` forces the view."""
    facing = facing or _pick(rng, FACINGS)
    if facing not in FACING_YAW:
        raise ValueError(f"facing must be one of {', '.join(FACINGS)}, got '{facing}'")
    return Pose(
        facing=facing,
        yaw=FACING_YAW[facing] + float(rng.uniform(-20, 20)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        arm_swing=float(rng.uniform(0.1, 0.5)),
        leg_swing=float(rng.uniform(0.05, 0.45)),
        elbow_bend=float(rng.uniform(0.05, 0.6)),
        knee_bend=float(rng.uniform(0.0, 0.6)),
    )


@dataclass(frozen=True)
class CameraStyle:
    """How one camera sees the world: its scene and its colour response."""

    index: int  # 1..6, as in the file names
    scene: str  # gradient | facade | tiles | texture
    colors: tuple[RGB, RGB, RGB]  # scene colours (sky/wall, ground, accent)
    horizon: float  # ground line, as a fraction of the image height
    cast: tuple[float, float, float]  # per-channel gain
    brightness: float
    contrast: float
    blur: float  # Gaussian blur radius at the drawing resolution
    noise: float  # sensor noise, standard deviation in 0..255 units


SCENES: tuple[str, ...] = ("gradient", "facade", "tiles", "texture")


def camera_style(seed: int, camera: int) -> CameraStyle:
    """The style of camera ``camera`` (1-based) in the dataset generated with ``seed``."""
    rng = np.random.default_rng([seed, 200, camera])
    scene = (
        SCENES[(camera - 1 + seed) % len(SCENES)] if camera <= len(SCENES) else _pick(rng, SCENES)
    )
    # Muted scene colours (mixed with grey): the person, not the scene, should stand out.
    colors = tuple(
        tuple(int(0.6 * v + 0.4 * 128) for v in rng.integers(30, 230, size=3)) for _ in range(3)
    )
    return CameraStyle(
        index=camera,
        scene=scene,
        colors=colors,  # type: ignore[arg-type]
        horizon=float(rng.uniform(0.55, 0.8)),
        cast=tuple(float(v) for v in rng.uniform(0.9, 1.1, size=3)),  # type: ignore[arg-type]
        brightness=float(rng.uniform(0.85, 1.15)),
        contrast=float(rng.uniform(0.9, 1.05)),
        blur=float(rng.uniform(0.0, 0.6)),
        noise=float(rng.uniform(1.0, 4.0)),
    )
