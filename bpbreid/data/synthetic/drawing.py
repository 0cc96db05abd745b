"""Drawing one person: body geometry, shapes on an image and its silhouette, keypoints.

The body is a set of 3-D points (lateral, vertical, forward; as fractions of the person's
height) projected by a weak-perspective camera at the pose's yaw; limbs, torso, bags and head
are drawn far parts first, each shape both on the RGB image and on a binary silhouette mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from bpbreid.data.parsing import KEYPOINT_NAMES
from bpbreid.data.synthetic.appearance import RGB, Appearance, Pose, sample_appearance, sample_pose

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
