"""Rendering one sample: scene, person, occluder and camera, with its parsing label.

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

Labels are rendered at a reduced resolution: the image size divided by ``label_stride``
(default ``clamp(height // 32, 1, 8)``: 32x16 labels for 64x32 images, so the stride-4 targets
16x8 of the CPU model stay sharp; 32x16 for 256x128 images, about the 1/8 of the official
labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from bpbreid.data.parsing import render_fields
from bpbreid.data.synthetic.appearance import (
    Appearance,
    CameraStyle,
    camera_style,
    identity_appearance,
    sample_pose,
)
from bpbreid.data.synthetic.drawing import _draw_person_on, _Painter
from bpbreid.data.synthetic.occluders import OCCLUDER_KINDS, _draw_occluder, _fit_occluder

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
