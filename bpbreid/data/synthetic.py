"""A procedural occluded-pedestrian dataset with ground-truth parsing labels.

Real re-id datasets cannot be shipped with a course (licences, size, the withdrawal of
DukeMTMC), so the course draws its own: pedestrians whose identity is spread over every
body part (hair or hat, upper clothing colour/pattern/sleeves, lower clothing, shoes, bag,
body width), seen by six cameras with their own scene and colour response, and hidden
behind boxes, walls, poles, vehicles, bushes and *other pedestrians* of the dataset, the
occluder that fools a global embedding most. Because the skeleton is drawn, the parsing
labels are exact.

What one image is made of (drawn at twice the output size, then downsampled with a box
filter):

1. the camera's background scene (gradient, facade, tiles or texture) with per-image jitter;
2. the person: a walking pose (phase, arm and leg swing), a facing (front/back/left/right
   with a few degrees of jitter), a scale and position jitter, small colour jitter;
3. optionally an occluder in front of the person, sized so that a chosen fraction of the
   person's silhouette is hidden;
4. the camera's colour cast, brightness, blur and sensor noise.

The label of an image is the official BPBReID format: ``float32 [36, h, w]`` PifPaf-style
fields (17 keypoints then 19 limbs, :func:`bpbreid.data.parsing.render_fields`) restricted to
the *visible* silhouette of this person: pixels under an occluder (another pedestrian
included) or outside the person are 0. Three choices make the labels match the drawing:

* every visible body pixel gets a foreground label: the fields are divided, per pixel, by
  their maximum (so the strongest field is 1) before being multiplied by the silhouette.
  Gaussians around the skeleton alone leave the middle of a wide torso below the official
  0.5 background threshold; the drawn silhouette is the exact body extent, and the ratios
  between fields (which part a pixel belongs to) are unchanged;
* keypoint fields are a little wider than limb fields, so that the shoe below the ankle
  belongs to the feet and not to the shin (equal widths would tie there);
* the silhouette is dilated by ``label_dilation`` drawing pixels into the background (never
  under an occluder) so that thin limbs survive the downsampling to the label size.

Labels are stored at ``<dataset>/masks/pifpaf_maskrcnn_filtering/<split>/<stem>.npy`` at a
reduced resolution: the image size divided by ``label_stride`` (default
``clamp(height // 32, 1, 8)``: 32x16 labels for 64x32 images, so the stride-4 targets 16x8 of
the CPU model stay sharp; 32x16 for 256x128 images, about the 1/8 of the official labels).

The layout is Market-1501's (``bounding_box_train/``, ``bounding_box_test/``, ``query/``)
plus ``query_holistic/``: the very same query images (identity, camera, pose, scene) without
their occluder, so occluded and holistic results compare like for like. Every query is
occluded and hides 30-70% of the body (as in Occluded-Duke, where every query is occluded and
only a minority of training and gallery images are); about 20% of training and gallery images
are occluded; the gallery holds distractors (pid 0); every
query identity appears in the gallery under another camera. ``annotations.csv`` records, for
every image, its facing, occluder and hidden fraction; ``meta.json`` (written last) records the
parameters, so a complete set is reused and an incomplete one is never read.

Generation is deterministic: each image's random generator is seeded from
``(seed, split, index)``, so the number of worker processes does not change a byte.

Example::

    from bpbreid.data.synthetic import generate
    dataset_dir = generate("data/synthetic", preset="small")  # ~1,000 images, a few seconds

Reference:
    Occluded-Duke protocol: Miao et al. "Pose-Guided Feature Alignment for Occluded Person
    Re-Identification", ICCV 2019. Market-1501 layout: Zheng et al., ICCV 2015. Label format:
    Somers et al. "Body Part-Based Representation Learning for Occluded Person
    Re-Identification", WACV 2023 (official code bpbreid c0db006).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bpbreid.data.parsing import KEYPOINT_NAMES, NUM_FIELDS, render_fields
from bpbreid.errors import DatasetError

GENERATOR_VERSION = 5  # bump whenever the drawing changes: cached sets are then regenerated
MASKS_DIR = "pifpaf_maskrcnn_filtering"  # the official label folder name
SPLIT_FOLDERS: tuple[str, ...] = (
    "bounding_box_train",
    "bounding_box_test",
    "query",
    "query_holistic",
)
NUM_CAMERAS = 6
FACINGS: tuple[str, ...] = ("front", "back", "left", "right")
# Facing -> yaw in degrees: 0 faces the camera, 90 faces the image's right, 180 turns its
# back to the camera, 270 faces the image's left.
FACING_YAW: dict[str, float] = {"front": 0.0, "right": 90.0, "back": 180.0, "left": 270.0}
OCCLUDER_KINDS: tuple[str, ...] = ("pedestrian", "box", "wall", "pole", "vehicle", "bush")
# Occluder mix. Other pedestrians are the most frequent and the most harmful for a global
# embedding (their clothes are those of real identities), as in crowded street scenes.
OCCLUDER_WEIGHTS: tuple[float, ...] = (0.35, 0.15, 0.15, 0.1, 0.15, 0.1)
# An occluding pedestrian stands at least this far (fraction of the image width) to the side
# of the person, as in the re-id benchmarks, where the box is centred on the person of
# interest: a passer-by squarely in front would make "who is the person?" unanswerable.
PEDESTRIAN_MIN_OFFSET = 0.3
PEDESTRIAN_GROWTH = 0.35  # scale increase at full extent

RGB = tuple[int, int, int]
_SPLIT_CODE = {"bounding_box_train": 1, "bounding_box_test": 2, "query": 3, "query_holistic": 3}

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


# --------------------------------------------------------------------------------------
# Drawing a person
# --------------------------------------------------------------------------------------

# Body proportions as fractions of the person's height (top of the head = 0, soles = 1).
# Points are (lateral l, vertical v, forward f); l > 0 is the person's LEFT side.
_HEAD_V, _HEAD_RY, _HEAD_RL, _HEAD_RF = 0.068, 0.062, 0.047, 0.055
_SHOULDER_V, _SHOULDER_L = 0.19, 0.105
_HIP_V, _HIP_L = 0.52, 0.07
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.165, 0.15, 0.235, 0.215
_ARM_W, _FOREARM_W, _THIGH_W, _SHIN_W = 0.052, 0.045, 0.075, 0.06
_TORSO_DEPTH_SHOULDER, _TORSO_DEPTH_HIP = 0.065, 0.06


def _jitter(color: RGB, rng: np.random.Generator | None, amount: float = 0.06) -> RGB:
    if rng is None:
        return color
    gain = 1.0 + rng.normal(0.0, amount, size=3)
    return tuple(int(np.clip(c * g, 0, 255)) for c, g in zip(color, gain))  # type: ignore[return-value]


class _Painter:
    """Draws shapes on an RGB image (optional) and, always, on a binary silhouette mask."""

    def __init__(self, size: tuple[int, int], image: Image.Image | None) -> None:
        self.image = image
        self.draw = ImageDraw.Draw(image) if image is not None else None
        self.mask = Image.new("L", size, 0)
        self.mask_draw = ImageDraw.Draw(self.mask)

    def polygon(self, points: Sequence[tuple[float, float]], fill: RGB) -> None:
        pts = [(float(x), float(y)) for x, y in points]
        if self.draw is not None:
            self.draw.polygon(pts, fill=fill)
        self.mask_draw.polygon(pts, fill=255)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: RGB) -> None:
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        if self.draw is not None:
            self.draw.ellipse(box, fill=fill)
        self.mask_draw.ellipse(box, fill=255)

    def capsule(
        self, p0: tuple[float, float], p1: tuple[float, float], width: float, fill: RGB
    ) -> None:
        """A thick segment with round ends (a limb)."""
        w = max(1, int(round(width)))
        if self.draw is not None:
            self.draw.line([p0, p1], fill=fill, width=w)
        self.mask_draw.line([p0, p1], fill=255, width=w)
        r = width / 2
        for x, y in (p0, p1):
            self.ellipse(x, y, r, r, fill)

    def paste(self, pattern: Image.Image, shape: Image.Image) -> None:
        """Paint ``pattern`` through the binary ``shape`` (e.g. a striped torso)."""
        if self.image is not None:
            self.image.paste(pattern, (0, 0), shape)
        self.mask.paste(255, (0, 0), shape)


@dataclass
class PersonDrawing:
    """A drawn person.

    Attributes:
        image: uint8 ``[H, W, 3]`` (the person over the given background), or None when
            only the silhouette was drawn.
        keypoints: float32 ``[17, 3]`` (x, y, confidence) in pixels of the image (x = 0 is
            the centre of the first column), COCO order; ``left_*`` are the person's left.
        mask: bool ``[H, W]``, the person's silhouette (before any occluder).
        height: the person's height in pixels (head top to soles).
    """

    image: np.ndarray | None
    keypoints: np.ndarray
    mask: np.ndarray
    height: float


class _Body:
    """Projects the 3-D body points of one pose to the image (a weak-perspective camera)."""

    def __init__(self, appearance: Appearance, pose: Pose, cx: float, top: float, ph: float):
        self.cx, self.top, self.ph = cx, top, ph
        yaw = math.radians(pose.yaw)
        # Image x of a point = cx + ph * (l cos(yaw) + f sin(yaw)); depth (away from the
        # camera) = l sin(yaw) - f cos(yaw). yaw=0: the person's left is on the image's right.
        self.cos, self.sin = math.cos(yaw), math.sin(yaw)
        self.bw = appearance.body_width
        p = pose.phase
        self.points: dict[str, tuple[float, float, float]] = {}
        bw = self.bw
        self.points["nose"] = (0.0, 0.078, 0.05)
        for side, s in (("left", 1.0), ("right", -1.0)):
            self.points[f"{side}_eye"] = (s * 0.02, 0.06, 0.043)
            self.points[f"{side}_ear"] = (s * _HEAD_RL, 0.068, 0.0)
            shoulder = (s * _SHOULDER_L * bw, _SHOULDER_V, 0.0)
            hip = (s * _HIP_L * bw, _HIP_V, 0.0)
            # Arms swing opposite to the legs of the same side.
            arm = -s * pose.arm_swing * math.sin(p)
            elbow = (
                shoulder[0] + s * 0.03,
                shoulder[1] + _UPPER_ARM * math.cos(arm),
                _UPPER_ARM * math.sin(arm),
            )
            fore = arm + pose.elbow_bend
            wrist = (
                elbow[0] + s * 0.015,
                elbow[1] + _FOREARM * math.cos(fore),
                elbow[2] + _FOREARM * math.sin(fore),
            )
            leg = s * pose.leg_swing * math.sin(p)
            bend = pose.knee_bend * (0.5 + 0.5 * s * math.cos(p))
            knee = (hip[0], hip[1] + _THIGH * math.cos(leg), _THIGH * math.sin(leg))
            shin = leg - bend
            ankle = (knee[0], knee[1] + _SHIN * math.cos(shin), knee[2] + _SHIN * math.sin(shin))
            for name, point in (
                ("shoulder", shoulder),
                ("elbow", elbow),
                ("wrist", wrist),
                ("hip", hip),
                ("knee", knee),
                ("ankle", ankle),
            ):
                self.points[f"{side}_{name}"] = point

    def xy(self, point: tuple[float, float, float]) -> tuple[float, float]:
        lateral, vertical, forward = point
        x = self.cx + self.ph * (lateral * self.cos + forward * self.sin)
        return x, self.top + self.ph * vertical

    def depth(self, point: tuple[float, float, float]) -> float:
        lateral, _, forward = point
        return lateral * self.sin - forward * self.cos

    def half_width(self, lateral: float, forward: float) -> float:
        """Projected half width (pixels) of an elliptic cross-section."""
        return self.ph * math.hypot(lateral * self.cos, forward * self.sin)

    def far_side(self) -> str | None:
        """The side turned away from the camera in a side view (None in front/back views)."""
        if abs(self.sin) < 0.7:
            return None
        return "left" if self.sin > 0 else "right"

    def keypoints(self) -> np.ndarray:
        """``[17, 3]`` (x, y, confidence); self-occluded points get a lower confidence."""
        out = np.zeros((len(KEYPOINT_NAMES), 3), dtype=np.float32)
        far = self.far_side()
        back = self.cos < -0.5
        for i, name in enumerate(KEYPOINT_NAMES):
            x, y = self.xy(self.points[name])
            conf = 1.0
            if back and name in ("nose", "left_eye", "right_eye"):
                conf = 0.0  # the face is not visible from behind
            elif far is not None and name.startswith(far):
                # Behind the body in a side view: the far eye/ear are hidden by the head,
                # the far arm mostly by the torso (a pose estimator is less confident).
                conf = 0.0 if name.endswith(("eye", "ear")) else 0.5
            out[i] = (x, y, conf)  # PIL coordinates are pixel centres already
        return out


def _draw_person_on(
    painter: _Painter,
    appearance: Appearance,
    pose: Pose,
    cx: float,
    top: float,
    ph: float,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Draw one person (far parts first) and return its keypoints ``[17, 3]``."""
    a = appearance
    body = _Body(a, pose, cx, top, ph)
    P = body.points
    shade = float(rng.uniform(0.9, 1.08)) if rng is not None else 1.0  # illumination

    def col(c: RGB) -> RGB:
        j = _jitter(c, rng, 0.04)
        return tuple(int(min(255, v * shade)) for v in j)  # type: ignore[return-value]

    skin, hair, upper, lower = col(a.skin), col(a.hair), col(a.upper), col(a.lower)
    secondary, shoes, bag_col = col(a.upper_secondary), col(a.shoes), col(a.bag_color)
    items: list[tuple[float, int, Callable[[], None]]] = []  # (depth, order, draw)

    def add(depth: float, fn: Callable[[], None]) -> None:
        items.append((depth, len(items), fn))

    # Legs: thigh, shin (skin below the hem for shorts/skirts), shoe.
    for side in ("left", "right"):
        hip, knee, ankle = P[f"{side}_hip"], P[f"{side}_knee"], P[f"{side}_ankle"]
        depth = body.depth(((hip[0] + ankle[0]) / 2, 0, (knee[2] + ankle[2]) / 2))

        def draw_leg(hip=hip, knee=knee, ankle=ankle) -> None:
            h, k, an = body.xy(hip), body.xy(knee), body.xy(ankle)
            thigh_col = skin if a.lower_style == "skirt" else lower
            shin_col = lower if a.lower_style == "pants" else skin
            painter.capsule(h, k, _THIGH_W * ph * a.body_width**0.5, thigh_col)
            if a.lower_style == "shorts":
                mid = ((k[0] + an[0]) / 2, (k[1] + an[1]) / 2)
                painter.capsule(k, an, _SHIN_W * ph, skin)
                painter.capsule(
                    k, ((k[0] + mid[0]) / 2, (k[1] + mid[1]) / 2), _SHIN_W * ph * 1.15, lower
                )
            else:
                painter.capsule(k, an, _SHIN_W * ph, shin_col)
            toe = body.xy((ankle[0], ankle[1] + 0.025, ankle[2] + 0.05))
            heel = body.xy((ankle[0], ankle[1] + 0.025, ankle[2] - 0.01))
            painter.capsule(heel, toe, 0.04 * ph, shoes)

        add(depth, draw_leg)

    # Torso (an elliptic cylinder seen from the yaw angle), with the clothing pattern.
    ws = body.half_width(_SHOULDER_L * a.body_width + 0.02, _TORSO_DEPTH_SHOULDER)
    wh = body.half_width(_HIP_L * a.body_width + 0.018, _TORSO_DEPTH_HIP)
    y_s, y_h = top + ph * (_SHOULDER_V - 0.015), top + ph * (_HIP_V + 0.03)
    torso_poly = [(cx - ws, y_s), (cx + ws, y_s), (cx + wh, y_h), (cx - wh, y_h)]

    def draw_torso() -> None:
        r = 0.035 * ph
        if a.pattern == "plain":
            painter.polygon(torso_poly, upper)
        else:
            shape = Image.new("L", painter.mask.size, 0)
            ImageDraw.Draw(shape).polygon(torso_poly, fill=255)
            rows = np.arange(painter.mask.size[1], dtype=np.float32)[:, None]
            if a.pattern == "stripes":
                period = max(2.0, 0.05 * ph)
                second = ((rows - y_s) // period) % 2 == 1
            else:  # two_tone: the lower half of the torso in the second colour
                second = rows > (y_s + y_h) / 2
            colors = np.where(second[..., None], np.array(secondary), np.array(upper))
            pattern = np.broadcast_to(
                colors.astype(np.uint8), (*second.shape[:1], painter.mask.size[0], 3)
            )
            painter.paste(Image.fromarray(np.ascontiguousarray(pattern)), shape)
        # Rounded shoulders.
        for s in (-1, 1):
            painter.ellipse(cx + s * (ws - r * 0.6), y_s + r * 0.8, r, r, upper)

    add(0.0, draw_torso)

    # Pelvis (lower clothing over the top of the thighs) or skirt.
    def draw_pelvis() -> None:
        yp0, yp1 = top + ph * (_HIP_V - 0.01), top + ph * (_HIP_V + 0.07)
        if a.lower_style == "skirt":
            flare = 1.5 + 0.6 * pose.leg_swing
            yb = top + ph * (_HIP_V + 0.2)
            painter.polygon(
                [(cx - wh, yp0), (cx + wh, yp0), (cx + wh * flare, yb), (cx - wh * flare, yb)],
                lower,
            )
        else:
            painter.polygon(
                [(cx - wh, yp0), (cx + wh, yp0), (cx + wh * 0.9, yp1), (cx - wh * 0.9, yp1)], lower
            )

    add(-0.0005 if a.lower_style != "skirt" else -0.09, draw_pelvis)

    # Arms: upper arm in the clothing colour, forearm in it too with long sleeves, hand.
    for side in ("left", "right"):
        sh, el, wr = P[f"{side}_shoulder"], P[f"{side}_elbow"], P[f"{side}_wrist"]
        depth = body.depth(((sh[0] + wr[0]) / 2, 0, (el[2] + wr[2]) / 2)) - 0.012

        def draw_arm(sh=sh, el=el, wr=wr) -> None:
            s, e, w = body.xy(sh), body.xy(el), body.xy(wr)
            painter.capsule(s, e, _ARM_W * ph * a.body_width**0.5, upper)
            painter.capsule(e, w, _FOREARM_W * ph, upper if a.sleeves == "long" else skin)
            painter.ellipse(w[0], w[1] + 0.01 * ph, 0.022 * ph, 0.024 * ph, skin)

        add(depth, draw_arm)

    # Bags.
    if a.bag == "backpack":
        center = (0.0, 0.33, -(_TORSO_DEPTH_SHOULDER + 0.035))

        def draw_backpack() -> None:
            x, _ = body.xy(center)
            hw = body.half_width(0.08 * a.body_width, 0.04)
            y0, y1 = top + ph * 0.22, top + ph * 0.46
            painter.polygon([(x - hw, y0), (x + hw, y0), (x + hw, y1), (x - hw, y1)], bag_col)

        add(body.depth(center), draw_backpack)
        if body.cos > 0.3:  # straps seen from the front

            def draw_straps() -> None:
                for s in (-1, 1):
                    x = cx + s * ws * 0.55
                    painter.capsule((x, y_s), (x, top + ph * 0.4), 0.018 * ph, bag_col)

            add(-0.07, draw_straps)
    elif a.bag == "shoulder_bag":
        s = 1.0 if a.bag_side == "left" else -1.0
        bag_point = (s * (_SHOULDER_L * a.body_width + 0.05), 0.5, 0.0)

        def draw_bag() -> None:
            x, y = body.xy(bag_point)
            hw, hh = body.half_width(0.035, 0.06) + 0.01 * ph, 0.05 * ph
            strap_top = body.xy((-s * _SHOULDER_L * a.body_width * 0.6, _SHOULDER_V, 0.0))
            painter.capsule(strap_top, (x, y - hh), 0.015 * ph, bag_col)
            painter.polygon(
                [(x - hw, y - hh), (x + hw, y - hh), (x + hw, y + hh), (x - hw, y + hh)], bag_col
            )

        add(body.depth(bag_point) - 0.03, draw_bag)

    # Head: neck, long hair behind, head, hair, face, hat.
    hx, hy = body.xy((0.0, _HEAD_V, 0.0))
    rx, ry = body.half_width(_HEAD_RL, _HEAD_RF), _HEAD_RY * ph
    face_dx = rx * 0.45 * body.sin  # the face turns towards the walking direction

    if a.hair_style == "long":

        def draw_long_hair() -> None:
            y1 = top + ph * 0.28
            hw = rx * 0.95
            x = hx - face_dx * 0.6
            painter.polygon(
                [(x - hw, hy), (x + hw, hy), (x + hw * 0.9, y1), (x - hw * 0.9, y1)], hair
            )

        add(0.05 if body.cos > -0.3 else -0.08, draw_long_hair)

    def draw_head() -> None:
        painter.capsule((hx, hy), (cx, top + ph * _SHOULDER_V), 0.045 * ph, skin)
        if a.hair_style == "bald" and a.hat is None:
            painter.ellipse(hx, hy, rx, ry, skin)
        else:
            painter.ellipse(hx, hy, rx, ry, hair)
            if body.cos > -0.4:  # the face shows unless seen from behind
                fx = hx + face_dx
                painter.ellipse(fx, hy + ry * 0.22, rx * 0.78, ry * 0.74, skin)
        if body.cos > 0.3 and painter.draw is not None:  # eyes, seen from the front
            for side in ("left_eye", "right_eye"):
                ex, ey = body.xy(P[side])
                painter.draw.point((ex, ey), fill=(25, 20, 20))
        if a.hat is not None:
            hat = col(a.hat)
            painter.ellipse(hx, hy - ry * 0.45, rx * 1.05, ry * 0.6, hat)
            brim = hx + 0.6 * face_dx
            painter.polygon(
                [(brim - rx * 1.25, hy - ry * 0.2), (brim + rx * 1.25, hy - ry * 0.2),
                 (brim + rx * 1.25, hy - ry * 0.05), (brim - rx * 1.25, hy - ry * 0.05)],
                hat,
            )  # fmt: skip

    add(-0.04, draw_head)

    for _, _, fn in sorted(items, key=lambda item: (-item[0], item[1])):
        fn()
    return body.keypoints()


def draw_person(
    appearance: Appearance | None = None,
    pose: Pose | None = None,
    height: int = 128,
    width: int = 64,
    background: np.ndarray | None = None,
    person_height: float | None = None,
    center_x: float | None = None,
    top: float | None = None,
    seed: int = 0,
) -> PersonDrawing:
    """Draw one pedestrian, e.g. to look at the generator in a notebook.

    Args:
        appearance: the identity (default: a random one from ``seed``).
        pose: the pose (default: a random one from ``seed``).
        height, width: image size in pixels.
        background: uint8 ``[height, width, 3]`` to draw on (default: light grey).
        person_height: the person's height in pixels (default: 90% of the image).
        center_x, top: where the body axis and the top of the head are (default: centred).
        seed: seeds the defaults and the colour jitter.

    Returns:
        A :class:`PersonDrawing` with the image, the keypoints ``[17, 3]`` and the
        silhouette ``[height, width]``.
    """
    rng = np.random.default_rng([seed, 300])
    appearance = appearance or sample_appearance(rng)
    pose = pose or sample_pose(rng)
    ph = person_height or 0.9 * height
    if background is None:
        background = np.full((height, width, 3), 200, dtype=np.uint8)
    image = Image.fromarray(np.ascontiguousarray(background[..., :3], dtype=np.uint8))
    painter = _Painter(image.size, image)
    cx = width / 2 if center_x is None else center_x
    y0 = (height - ph) / 2 if top is None else top
    keypoints = _draw_person_on(painter, appearance, pose, cx, y0, ph, rng)
    return PersonDrawing(np.asarray(image), keypoints, np.asarray(painter.mask) > 127, ph)


# --------------------------------------------------------------------------------------
# Backgrounds and camera effects
# --------------------------------------------------------------------------------------


def _smooth_noise(
    rng: np.random.Generator, height: int, width: int, cells: int, amount: float
) -> np.ndarray:
    """Low-frequency noise ``[H, W, 1]`` in about [-amount, amount]."""
    small = rng.uniform(-amount, amount, size=(cells * 2, cells)).astype(np.float32)
    img = Image.fromarray(small, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img)[..., None]


def render_background(
    camera: CameraStyle, height: int, width: int, rng: np.random.Generator
) -> np.ndarray:
    """The camera's scene with per-image jitter: float32 ``[H, W, 3]`` in 0..255."""
    c0, c1, c2 = (np.array(c, dtype=np.float32) for c in camera.colors)
    rows = np.arange(height, dtype=np.float32)[:, None, None] / height
    cols = np.arange(width, dtype=np.float32)[None, :, None] / width
    horizon = camera.horizon + rng.uniform(-0.06, 0.06)
    ground = rows > horizon
    if camera.scene == "gradient":
        sky = c0 * (1 - rows) + c2 * rows
        img = np.where(ground, c1 * (0.8 + 0.4 * (rows - horizon)), sky)
    elif camera.scene == "facade":
        period = rng.uniform(0.18, 0.35)
        phase = rng.uniform(0, 1)
        panels = ((cols / period + phase) % 1.0) < 0.5
        img = np.where(panels, c0, c0 * 0.75 + c2 * 0.25)
        windows = (((rows * 6 + phase) % 1.0) < 0.35) & (((cols / period + phase) % 1.0) < 0.3)
        img = np.where(windows, c2 * 0.6, img)
        img = np.where(ground, c1, img)
    elif camera.scene == "tiles":
        size = rng.uniform(0.08, 0.16)
        shift = rng.uniform(0, 1, size=2)
        checker = (
            (np.floor(rows / size + shift[0]) + np.floor(cols / (size * 0.5) + shift[1])) % 2
        ) == 0
        floor = np.where(checker, c1, c1 * 0.8 + c2 * 0.2)
        img = np.where(ground, floor, c0 * (0.9 + 0.2 * rows))
    else:  # texture: foliage / crowd-like blotches
        blotch = _smooth_noise(rng, height, width, 6, 1.0)
        img = c0 * (0.5 + 0.5 * (blotch > 0)) + c2 * 0.5 * (blotch <= 0)
        img = np.where(ground, c1 * 0.9, img)
    img = np.broadcast_to(img, (height, width, 3)).astype(np.float32)
    img = img * (1.0 + _smooth_noise(rng, height, width, 4, 0.12))
    return np.clip(img, 0, 255)


def _camera_effects(
    image: Image.Image, camera: CameraStyle, rng: np.random.Generator, out_size: tuple[int, int]
) -> np.ndarray:
    """Blur, colour cast, brightness/contrast, downsample (box filter), sensor noise."""
    blur = camera.blur + rng.uniform(0.0, 0.3)
    if blur > 0.15:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    img = np.asarray(image, dtype=np.float32)
    cast = np.array(camera.cast, dtype=np.float32) * (1.0 + rng.normal(0, 0.02, size=3))
    brightness = camera.brightness * rng.uniform(0.93, 1.07)
    # Contrast around mid-grey, not the image mean: the camera response must not depend on
    # the content (an occluder would otherwise shift every pixel of the image).
    img = (img - 128.0) * camera.contrast + 128.0
    img = np.clip(img * cast * brightness, 0, 255).astype(np.uint8)
    small = Image.fromarray(img).resize((out_size[1], out_size[0]), Image.Resampling.BOX)
    out = np.asarray(small, dtype=np.float32)
    out = out + rng.normal(0, camera.noise, size=out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# Occluders
# --------------------------------------------------------------------------------------

_OCCLUDER_COLORS: tuple[RGB, ...] = (
    (150, 110, 70), (90, 90, 95), (170, 170, 160), (60, 60, 65), (180, 60, 40), (40, 70, 120),
    (200, 190, 150), (110, 130, 90),
)  # fmt: skip
_GREENS: tuple[RGB, ...] = ((40, 100, 40), (60, 130, 50), (30, 80, 35), (80, 120, 40))


@dataclass
class _OccluderPlan:
    """The random parameters of one occluder; ``extent`` in [0, 1] scales how much it hides."""

    kind: str
    params: dict = field(default_factory=dict)


def _plan_occluder(
    kind: str, rng: np.random.Generator, pool: Sequence[int], seed: int, exclude: int
) -> _OccluderPlan:
    p: dict = {"color": _pick(rng, _OCCLUDER_COLORS)}
    if kind == "pedestrian":
        candidates = [pid for pid in pool if pid != exclude] or [exclude + 1]
        other = int(_pick(rng, candidates))
        p.update(
            pid=other,
            appearance=identity_appearance(seed, other),
            pose=sample_pose(rng),
            side=1.0 if rng.random() < 0.5 else -1.0,
            scale=float(rng.uniform(0.95, 1.2)),
            drop=float(rng.uniform(0.0, 0.08)),
        )
    elif kind == "wall":
        p["side"] = _pick(rng, ("bottom", "bottom", "left", "right"))
    elif kind == "box":
        p["anchor"] = float(rng.uniform(-0.35, 0.35))
        p["aspect"] = float(rng.uniform(0.6, 1.6))
    elif kind == "pole":
        p["x"] = float(rng.uniform(0.3, 0.7))
    elif kind == "bush":
        p["color"] = _pick(rng, _GREENS)
        p["blobs"] = rng.uniform(-1, 1, size=(7, 3)).astype(np.float32)
        p["x"] = float(rng.uniform(0.3, 0.7))
    return _OccluderPlan(kind, p)


def _draw_occluder(
    painter: _Painter,
    plan: _OccluderPlan,
    extent: float,
    height: int,
    width: int,
    person_height: float,
    seed: int,
) -> None:
    """Draw one occluder at ``extent`` (0: hides little, 1: hides most) with ``painter``."""
    p, H, W = plan.params, height, width
    color = p["color"]
    e = float(np.clip(extent, 0.0, 1.0))
    if plan.kind == "pedestrian":
        # Closer to the camera (larger) as it hides more: beside the person it can then
        # still hide up to about half of the body.
        ph = person_height * p["scale"] * (1.0 + PEDESTRIAN_GROWTH * e)
        span = 0.95 - PEDESTRIAN_MIN_OFFSET
        offset = p["side"] * (PEDESTRIAN_MIN_OFFSET + (1.0 - e) * span) * W
        top = H - ph * 0.98 + p["drop"] * H
        rng = np.random.default_rng([seed, 400, p["pid"]])
        _draw_person_on(
            painter,
            p["appearance"],
            p["pose"],
            W / 2 + offset,
            top,
            ph,
            rng if painter.draw is not None else None,
        )
    elif plan.kind == "wall":
        darker = tuple(int(c * 0.8) for c in color)
        if p["side"] == "bottom":
            y = H * (1.0 - (0.12 + 0.78 * e))
            painter.polygon([(-1, y), (W + 1, y), (W + 1, H + 1), (-1, H + 1)], color)
            if painter.draw is not None:  # brick courses
                step = max(3.0, H * 0.06)
                for k in range(1, int((H - y) / step) + 1):
                    painter.draw.line([(0, y + k * step), (W, y + k * step)], fill=darker, width=1)
        else:
            x = W * (0.12 + 0.78 * e)
            x0, x1 = (-1, x) if p["side"] == "left" else (W - x, W + 1)
            painter.polygon([(x0, -1), (x1, -1), (x1, H + 1), (x0, H + 1)], color)
            if painter.draw is not None:
                edge = x1 if p["side"] == "left" else x0
                painter.draw.line([(edge, 0), (edge, H)], fill=darker, width=max(1, W // 32))
    elif plan.kind == "box":
        w = W * (0.35 + 0.75 * e) * p["aspect"] ** 0.5
        h = H * (0.15 + 0.6 * e) / p["aspect"] ** 0.5
        x = W / 2 + p["anchor"] * W
        y1 = H + 1
        painter.polygon(
            [(x - w / 2, y1 - h), (x + w / 2, y1 - h), (x + w / 2, y1), (x - w / 2, y1)], color
        )
        if painter.draw is not None:  # lid edge and tape
            lid = tuple(int(c * 0.75) for c in color)
            painter.draw.line(
                [(x - w / 2, y1 - h), (x + w / 2, y1 - h)], fill=lid, width=max(1, H // 40)
            )
            painter.draw.line([(x, y1 - h), (x, y1)], fill=lid, width=max(1, W // 32))
    elif plan.kind == "pole":
        w = W * (0.08 + 0.5 * e)
        x = W * p["x"]
        painter.polygon(
            [(x - w / 2, -1), (x + w / 2, -1), (x + w / 2, H + 1), (x - w / 2, H + 1)], color
        )
        if painter.draw is not None:  # a highlight stripe reads as a cylinder
            light = tuple(min(255, int(c * 1.3) + 20) for c in color)
            painter.draw.line(
                [(x - w / 4, 0), (x - w / 4, H)], fill=light, width=max(1, int(w / 6))
            )
    elif plan.kind == "vehicle":
        y = H * (1.0 - (0.2 + 0.62 * e))
        rounding = W * 0.25
        painter.polygon(
            [(-1, y + rounding * 0.6), (rounding * 0.5, y), (W - rounding * 0.5, y),
             (W + 1, y + rounding * 0.6), (W + 1, H + 1), (-1, H + 1)],
            color,
        )  # fmt: skip
        if painter.draw is not None:
            glass = (60, 75, 90)
            gy = y + (H - y) * 0.12
            painter.draw.polygon(
                [
                    (W * 0.1, gy),
                    (W * 0.9, gy),
                    (W * 0.95, gy + (H - y) * 0.25),
                    (W * 0.05, gy + (H - y) * 0.25),
                ],
                fill=glass,
            )
            r = W * 0.14
            for wx in (W * 0.15, W * 0.85):
                painter.draw.ellipse((wx - r, H - r, wx + r, H + r), fill=(20, 20, 20))
    elif plan.kind == "bush":
        cx, base = W * p["x"], H * 1.02
        size = H * (0.18 + 0.55 * e)
        dark = tuple(int(c * 0.7) for c in color)
        for k, (dx, dy, dr) in enumerate(p["blobs"]):
            r = size * (0.45 + 0.12 * dr)
            bx = cx + dx * size * 0.6
            by = base - size * 0.55 - (dy + 1) * size * 0.25
            painter.ellipse(bx, by, r * 0.9, r, dark if k % 3 == 0 else color)
        painter.ellipse(cx, base, size * 0.9, size * 0.7, color)
    else:  # pragma: no cover - kinds come from OCCLUDER_KINDS
        raise ValueError(f"unknown occluder kind '{plan.kind}'")


def _occluder_mask(
    plan: _OccluderPlan, extent: float, height: int, width: int, person_height: float, seed: int
) -> np.ndarray:
    painter = _Painter((width, height), None)
    _draw_occluder(painter, plan, extent, height, width, person_height, seed)
    return np.asarray(painter.mask) > 127


def _fit_occluder(
    rng: np.random.Generator,
    person_mask: np.ndarray,
    person_height: float,
    hidden_range: tuple[float, float],
    pool: Sequence[int],
    seed: int,
    exclude: int,
    kind: str | None,
) -> tuple[_OccluderPlan, float, float]:
    """Choose an occluder and its extent so that the hidden fraction falls in ``hidden_range``.

    Bisection on the extent (the hidden fraction grows with it); a kind that cannot hide
    enough of this person (a thin pole in front of a side view) is replaced by another.

    Returns:
        ``(plan, extent, hidden fraction)``.
    """
    height, width = person_mask.shape
    area = max(1, int(person_mask.sum()))
    lo, hi = hidden_range
    target = float(rng.uniform(lo, hi))

    def hidden(plan: _OccluderPlan, extent: float) -> float:
        mask = _occluder_mask(plan, extent, height, width, person_height, seed)
        return float((mask & person_mask).sum()) / area

    kinds = [kind] if kind else []
    kinds += [str(k) for k in rng.choice(OCCLUDER_KINDS, size=4, p=OCCLUDER_WEIGHTS)]
    kinds += ["wall"]  # a bottom or side wall can always reach the target
    best: tuple[_OccluderPlan, float, float] | None = None
    for attempt, k in enumerate(kinds):
        plan = _plan_occluder(k, rng, pool, seed, exclude)
        if attempt == len(kinds) - 1:
            plan.params["side"] = "bottom"
        low_e, high_e = 0.0, 1.0
        h_low, h_high = hidden(plan, low_e), hidden(plan, high_e)
        if h_high < lo or h_low > hi:
            continue
        extent, frac = (low_e, h_low) if h_low >= lo else (high_e, h_high)
        for _ in range(9):
            mid = (low_e + high_e) / 2
            frac_mid = hidden(plan, mid)
            if lo <= frac_mid <= hi:
                extent, frac = mid, frac_mid
                if abs(frac_mid - target) < 0.04:
                    break
            if frac_mid < target:
                low_e = mid
            else:
                high_e = mid
        if lo <= frac <= hi:
            return plan, extent, frac
        best = best or (plan, extent, frac)
    if best is None:  # pragma: no cover - the bottom wall covers any fraction up to ~90%
        raise RuntimeError("could not place an occluder")
    return best


# --------------------------------------------------------------------------------------
# One sample: image + parsing label
# --------------------------------------------------------------------------------------


@dataclass
class SyntheticSample:
    """One rendered image with its ground truth.

    Attributes:
        image: uint8 ``[H, W, 3]`` at the output size.
        fields: float32 ``[36, h, w]`` parsing label at the label size (0 where the person
            is not visible).
        keypoints: float32 ``[17, 3]`` (x, y, confidence) in output-image pixels.
        visible: float32 ``[H, W]``, the fraction of each output pixel covered by the
            visible part of the person.
        occluder_mask: float32 ``[H, W]``, the fraction of each output pixel covered by the
            occluder (0 everywhere without one).
        facing: front | back | left | right.
        occluder: the occluder kind, or ``"none"``.
        hidden: fraction of the person's silhouette hidden by the occluder.
    """

    image: np.ndarray
    fields: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    occluder_mask: np.ndarray
    facing: str
    occluder: str
    hidden: float


def default_label_stride(height: int) -> int:
    """Label downscale factor: ``clamp(height // 32, 1, 8)`` (64 px -> 2, 256 px -> 8)."""
    return int(min(8, max(1, height // 32)))


def _area_downsample(mask: np.ndarray, factor_h: int, factor_w: int) -> np.ndarray:
    h, w = mask.shape
    m = mask[: h - h % factor_h, : w - w % factor_w].astype(np.float32)
    return m.reshape(h // factor_h, factor_h, w // factor_w, factor_w).mean(axis=(1, 3))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation with a (2r+1) square, by shifted maxima (no SciPy needed)."""
    if radius <= 0:
        return mask
    out = mask.copy()
    padded = np.pad(mask, radius)
    h, w = mask.shape
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def render_sample(
    seed: int,
    pid: int,
    camera: int,
    rng: np.random.Generator,
    height: int = 64,
    width: int = 32,
    occluder: str | bool | None = None,
    occluder_rng: np.random.Generator | None = None,
    hidden_range: tuple[float, float] = (0.3, 0.7),
    occluder_pool: Sequence[int] = (),
    appearance: Appearance | None = None,
    facing: str | None = None,
    label_stride: int | None = None,
    label_dilation: int = 2,
    keypoint_sigma: float = 0.04,
    limb_sigma: float = 0.035,
) -> SyntheticSample:
    """Render one image of identity ``pid`` seen by ``camera``, with its parsing label.

    Everything about the person, the scene and the camera comes from ``rng``; everything
    about the occluder from ``occluder_rng``, so the same ``rng`` state with and without an
    occluder gives the same picture but for the occluder (occluded vs holistic queries).

    Args:
        seed: the dataset seed (identity appearances and camera styles derive from it).
        pid: identity (its appearance is :func:`identity_appearance` unless given).
        camera: 1-based camera index.
        rng: per-image generator.
        height, width: output image size; the drawing is made at twice this size.
        occluder: None/False: none; True: a random kind; or a kind of :data:`OCCLUDER_KINDS`.
        occluder_rng: generator for the occluder (default: ``rng``).
        hidden_range: fraction of the silhouette the occluder must hide.
        occluder_pool: identities that may appear as occluding pedestrians.
        appearance: override the identity's appearance (distractors, notebooks).
        facing: force the view (front/back/left/right).
        label_stride: label size = image size / stride (default :func:`default_label_stride`).
        label_dilation: silhouette dilation (drawing pixels) into the background.
        keypoint_sigma, limb_sigma: field widths as fractions of the person's height.

    Returns:
        A :class:`SyntheticSample`.
    """
    dh, dw = 2 * height, 2 * width  # drawing resolution
    style = camera_style(seed, camera)
    appearance = appearance or identity_appearance(seed, pid)
    pose = sample_pose(rng, facing)

    background = render_background(style, dh, dw, rng)
    image = Image.fromarray(background.astype(np.uint8))
    ph = dh * float(rng.uniform(0.8, 0.94)) * appearance.height_factor
    cx = dw / 2 + float(rng.normal(0, 0.05)) * dw
    top = (dh - ph) * float(rng.uniform(0.25, 0.75))
    painter = _Painter(image.size, image)
    keypoints = _draw_person_on(painter, appearance, pose, cx, top, ph, rng)
    person_mask = np.asarray(painter.mask) > 127

    occluded = np.zeros_like(person_mask)
    kind, hidden = "none", 0.0
    if occluder:
        orng = occluder_rng or rng
        forced = occluder if isinstance(occluder, str) else None
        if forced is not None and forced not in OCCLUDER_KINDS:
            raise ValueError(f"occluder must be one of {', '.join(OCCLUDER_KINDS)}, got '{forced}'")
        plan, extent, hidden = _fit_occluder(
            orng, person_mask, ph, hidden_range, occluder_pool, seed, pid, forced
        )
        occ_painter = _Painter(image.size, image)
        _draw_occluder(occ_painter, plan, extent, dh, dw, ph, seed)
        occluded = np.asarray(occ_painter.mask) > 127
        kind = plan.kind

    pixels = _camera_effects(image, style, rng, (height, width))

    # Label: fields of this skeleton, normalised per pixel, restricted to the visible body.
    stride = label_stride or default_label_stride(height)
    lh, lw = max(1, height // stride), max(1, width // stride)
    sigma_kp, sigma_limb = keypoint_sigma * ph, limb_sigma * ph
    fields = render_fields(
        keypoints, dh, dw, out_size=(lh, lw), sigma=sigma_kp, limb_sigma=sigma_limb
    )
    peak = fields.max(axis=0, keepdims=True)
    fields = fields / np.maximum(peak, 1e-4)
    # Dilate the visible body only (a hidden limb must not leak out at the occluder's edge).
    visible_draw = _dilate(person_mask & ~occluded, label_dilation) & ~occluded
    coverage = _area_downsample(visible_draw, dh // lh, dw // lw)
    labels = np.clip(fields * coverage[None], 0.0, 1.0).astype(np.float32)

    out_kps = keypoints.copy()
    out_kps[:, :2] = (out_kps[:, :2] + 0.5) / 2 - 0.5  # pixel centres at half resolution
    return SyntheticSample(
        image=pixels,
        fields=labels,
        keypoints=out_kps,
        visible=_area_downsample(person_mask & ~occluded, 2, 2),
        occluder_mask=_area_downsample(occluded, 2, 2),
        facing=pose.facing,
        occluder=kind,
        hidden=float(hidden),
    )


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


# --------------------------------------------------------------------------------------
# Command line: python -m bpbreid data synth
# --------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m bpbreid data synth``."""
    parser.add_argument(
        "--root", default="data/synthetic", help="folder holding the synthetic sets"
    )
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS), help="dataset size")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (same seed, same bytes)")
    parser.add_argument("--height", type=int, default=None, help="image height (default 64)")
    parser.add_argument("--width", type=int, default=None, help="image width (default 32)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU cores)")


def run(args: argparse.Namespace) -> int:
    """Generate the set (or report the cached one) and print where it is."""
    target = synthetic_dir(args.root, args.preset, args.seed, args.height, args.width)
    cached = read_meta(target) is not None
    start = time.perf_counter()
    path = generate(
        args.root, args.preset, args.seed, args.height, args.width, workers=args.workers
    )
    meta = read_meta(path) or {}
    counts = ", ".join(f"{k} {v}" for k, v in meta.get("counts", {}).items())
    if cached and time.perf_counter() - start < 1.0:
        print(f"synthetic '{args.preset}' already generated at {path}")
    print(
        f"{counts}\nlabels: {path / 'masks' / MASKS_DIR} ({NUM_FIELDS} fields, {meta.get('label_height')}x{meta.get('label_width')})"
    )
    return 0


__all__ = [
    "FACINGS",
    "OCCLUDER_KINDS",
    "PRESETS",
    "Appearance",
    "CameraStyle",
    "PersonDrawing",
    "Pose",
    "Preset",
    "SyntheticSample",
    "add_arguments",
    "camera_style",
    "default_label_stride",
    "draw_person",
    "generate",
    "identity_appearance",
    "read_annotations",
    "read_meta",
    "render_background",
    "render_sample",
    "run",
    "sample_appearance",
    "sample_pose",
    "synthetic_dir",
]
