"""Augmentation pipelines that keep an image and its parsing label aligned.

One call turns a decoded image and its 36 parsing fields into what the model and the pixel loss
need: a normalized image tensor ``[3, H, W]`` and soft part targets ``[K+1, H/4, W/4]``
(channel 0 background). Image and label go through the same albumentations ``Compose``, so
every geometric change (crop, flip, erasing) hits both.

Order of the training pipeline (official default ``['rc', 're']``)::

    [flip + left/right field swap]          'flip' (36 fields, low resolution)
    group the 36 fields into K parts        model.bpbreid.masks.preprocess
    resize image and parts to (H, W)        bilinear
    pad + random crop back to (H, W)        'rc'  (10 px at width 128, scaled; background)
    [colour jitter]                         'cj'  (image only)
    random erasing                          're'  (erased pixels become background)
    normalize (ImageNet mean/std)
    parts -> (H/4, W/4) (area), + background, softmax targets

Flipping happens before grouping, on the 36 fields, because only there do left and right have
names: swapping ``left_wrist`` with ``right_wrist`` keeps ``eight`` (left/right arms) right,
and every other grouping with it.

Where this differs from the official pipeline, and why: the official code resizes the 36
fields to the image size (nearest), augments all 36 channels, groups them, adds the background
at full size and keeps every 4th pixel (nearest) of the targets. Here the fields are grouped
first (K channels instead of 36 through the augmentations: several times cheaper per image),
resized bilinearly (smooth part borders instead of 8x8 blocks), and shrunk to 1/4 by area
averaging before the background rule, so a target pixel sees its whole 4x4 block rather than
one pixel of it. With ``'threshold'`` the hard labels agree with the official ones away from
part borders.

Random erasing (``data.erasing: area_ratio``, the default) is albumentations' ``Erasing`` with
torchreid's settings, not torchreid's sampler: the area is uniform up to the largest box that
fits at every aspect ratio (for a 2:1 image 15 %, not 40 %), and the aspect ratio is uniform (not
log-uniform) in the range that fits.

The official recipe, as options (the paper configs use them; docs/fidelity.md):

* ``data.erasing: official``: one box whose height and width are integers drawn uniformly in
  ``[int(0.15 H), int(0.65 H)]`` and ``[int(0.15 W), int(0.65 W)]``, placed uniformly, with
  p 0.5, *after* normalization, filled with the values (0.485, 0.456, 0.406) of the normalized
  image (a light grey, not the mean colour); the part maps are 0 there.
* ``model.bpbreid.masks.targets: official``: the part maps are resized to the image size by
  nearest neighbour (blocky borders), the background rule and softmax are taken at full size
  and the targets keep one pixel of every 4x4 block (nearest); the pixel loss then resizes them
  bilinearly with aligned corners to the logits and takes the argmax
  (:func:`bpbreid.losses.part_attention_loss`). Grouping first is exact here: the max over a
  part's fields commutes with nearest resizing, padding and erasing.

The same pipeline exists as batch tensor operations on a decode-once cache
(``data.pipeline: tensor``, :mod:`bpbreid.data.pipeline`); ``tests/test_pipeline.py`` checks
that both give the same pixels for the same random parameters.

Reference:
    bpbreid c0db006, ``torchreid/data/transforms.py`` (pipeline, pad 10 px, colour jitter
    defaults brightness 0.2 / contrast 0.15 / p 0.5, erasing box and fill, masks erased to 0),
    ``torchreid/data/masks_transforms/mask_transform.py`` (background, nearest to 1/4).
    Zhong et al. "Random Erasing Data Augmentation", AAAI 2020 (area 2-40 %, aspect 0.3-3.3,
    p 0.5 as in torchreid).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

# albumentations checks PyPI for a newer version on import, in every data-loading worker
# (seconds each offline); the check is not needed here.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bpbreid.config import Config, ConfigError
from bpbreid.parts import MASK_STRIDE
from bpbreid.data.parsing import (
    check_grouping,
    label_source,
    part_targets,
    resize_maps,
)

PAD_SIZE = 10  # official random-crop padding (pixels on each side) at a width of 128
PAD_REFERENCE_WIDTH = 128
ERASE_SCALE = (0.02, 0.4)  # torchreid RandomErasing: erased area as a fraction of the image
ERASE_RATIO = (0.3, 1 / 0.3)  # aspect ratio range of the erased rectangle
COLOR_JITTER = {"brightness": 0.2, "contrast": 0.15, "saturation": 0.0, "hue": 0.0, "p": 0.5}
# data.erasing=official: box sides as fractions of the image sides (truncated to pixels), and
# the fill written into the normalized image (the same numbers whatever data.norm_mean is).
OFFICIAL_ERASE_SIDES = (0.15, 0.65)
OFFICIAL_ERASE_FILL = (0.485, 0.456, 0.406)
ERASING_MODES = ("area_ratio", "official")  # data.erasing
TARGET_MODES = ("area", "official")  # model.bpbreid.masks.targets

# Names accepted in cfg.data.transforms: short names and the official long aliases.
TRANSFORM_ALIASES: dict[str, str] = {
    "rc": "rc",
    "random_crop": "rc",
    "re": "re",
    "random_erase": "re",
    "flip": "flip",
    "rf": "flip",
    "random_flip": "flip",
    "cj": "cj",
    "color_jitter": "cj",
}


class FlipWithFieldSwap(A.HorizontalFlip):
    """Horizontal flip whose ``masks`` are label channels ``[C, h, w]``: mirror + left/right swap.

    ``source`` names the label kind (:data:`bpbreid.data.parsing.LABEL_SOURCES`): the 36 PifPaf
    fields by default, or the body regions of a parsing PNG.
    """

    def __init__(self, p: float = 0.5, source: str = "pifpaf"):
        super().__init__(p=p)
        self.source = source

    def apply_to_masks(self, masks: np.ndarray, **params: Any) -> np.ndarray:
        return np.ascontiguousarray(label_source(self.source).flip(masks))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("p", "source")


class GroupFields(A.DualTransform):
    """Group label channels ``[C, h, w]`` (36 fields, or PNG regions) into ``[K, h, w]`` parts."""

    def __init__(self, grouping: str, p: float = 1.0, source: str = "pifpaf"):
        super().__init__(p=p)
        self.grouping = grouping
        self.source = source

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return img

    def apply_to_masks(self, masks: np.ndarray, **params: Any) -> np.ndarray:
        return np.ascontiguousarray(label_source(self.source).group(masks, self.grouping))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("grouping", "source")


def canonical_transforms(names: Sequence[str]) -> list[str]:
    """Map ``cfg.data.transforms`` names to ``rc``/``re``/``flip``/``cj``.

    Raises:
        ConfigError: an unknown name; the message lists the valid ones.
    """
    out = []
    for name in names:
        key = TRANSFORM_ALIASES.get(str(name).lower())
        if key is None:
            raise ConfigError(
                f"Unknown augmentation '{name}' in data.transforms. "
                f"Valid: rc (pad + random crop), re (random erasing), flip (random flip with "
                f"left/right swap), cj (colour jitter); official aliases: "
                f"{', '.join(k for k, v in TRANSFORM_ALIASES.items() if k != v)}."
            )
        if key not in out:
            out.append(key)
    return out


class ReIDTransform:
    """Callable ``(image, fields) -> (image [3, H, W], target_masks [K+1, H/4, W/4] | None)``.

    Built by :func:`build_transforms`. Picklable (DataLoader workers get a copy). In a worker
    process the random state is re-seeded from the worker's seed, so workers do not repeat each
    other's augmentations and a seeded run stays reproducible.
    """

    def __init__(
        self,
        compose: A.Compose,
        height: int,
        width: int,
        grouping: str,
        strategy: str,
        threshold: float,
        softmax_weight: float,
        seed: int,
        steps: Sequence[str],
        targets: str = "area",
        source: str = "pifpaf",
    ):
        if targets not in TARGET_MODES:
            raise ConfigError(
                f"Unknown model.bpbreid.masks.targets '{targets}'. Valid: {', '.join(TARGET_MODES)}."
            )
        self.compose = compose
        self.targets = targets
        self.source = source
        self.height, self.width = height, width
        self.grouping = grouping
        self.strategy, self.threshold, self.softmax_weight = strategy, threshold, softmax_weight
        self.seed = seed
        self.steps = tuple(steps)
        self._worker_key: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return (
            f"ReIDTransform({' -> '.join(self.steps)}; image {self.height}x{self.width}, "
            f"targets {self.grouping} + background at 1/{MASK_STRIDE}, seed {self.seed})"
        )

    def set_seed(self, seed: int) -> None:
        """Restart the random state (same seed -> same augmentations)."""
        self.seed = int(seed)
        self.compose.set_random_seed(self.seed)

    def _reseed_in_worker(self) -> None:
        info = torch.utils.data.get_worker_info()
        if info is None:
            return
        key = (os.getpid(), int(info.seed))
        if key != self._worker_key:
            # The worker's seed differs per worker and per epoch and follows torch.manual_seed.
            mixed = np.random.SeedSequence([int(info.seed), self.seed]).generate_state(1)[0]
            self.compose.set_random_seed(int(mixed))
            self._worker_key = key

    def __call__(
        self, image: np.ndarray, fields: np.ndarray | torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment one sample.

        Args:
            image: ``uint8 [H0, W0, 3]`` RGB.
            fields: ``[C, h, w]`` label channels in [0, 1] (any resolution), or None: the 36
                PifPaf fields, or the body regions of a parsing PNG (``source``).

        Returns:
            ``(image, target_masks)``: ``float32 [3, H, W]`` normalized, and ``float32
            [K+1, H // 4, W // 4]`` soft targets (channel 0 background, sum 1), or None
            when ``fields`` is None.
        """
        self._reseed_in_worker()
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be [H, W, 3] RGB, got shape {image.shape}")
        data: dict[str, np.ndarray] = {"image": image}
        if fields is not None:
            if isinstance(fields, torch.Tensor):
                fields = fields.detach().cpu().numpy()
            channels = len(label_source(self.source).channels)
            if fields.ndim != 3 or fields.shape[0] != channels:
                raise ValueError(
                    f"{self.source} labels must be [{channels}, h, w], got shape {fields.shape}"
                )
            # Passed as a stack of 2D masks ("masks"): the channel-first layout of the labels,
            # and OpenCV handles one channel at a time faster than 8+ interleaved ones.
            data["masks"] = np.ascontiguousarray(fields, dtype=np.float32)
        out = self.compose(**data)
        return self.finish(out["image"], out["masks"] if fields is not None else None)

    def finish(
        self, image: np.ndarray, parts: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last step: what the ``Compose`` returns -> ``(image [3, H, W], targets)``.

        Args:
            image: ``float32 [H, W, 3]`` normalized.
            parts: ``[K, H, W]`` augmented part maps, or None.
        """
        image_tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if parts is None:
            return image_tensor, None
        size = (max(self.height // MASK_STRIDE, 1), max(self.width // MASK_STRIDE, 1))
        if self.targets == "official":
            # Keep one pixel per 4x4 block (torch's nearest, as the official code), then the
            # background rule: both are per pixel, so subsampling first gives the same numbers
            # as the official order at a sixteenth of the cost.
            maps = torch.from_numpy(np.ascontiguousarray(parts, dtype=np.float32))
            small_maps = F.interpolate(maps[None], size=size, mode="nearest")[0]
            official = part_targets(
                small_maps,
                strategy=self.strategy,
                threshold=self.threshold,
                softmax_weight=self.softmax_weight,
            )
            return image_tensor, official.contiguous()
        # Area averaging: a target pixel whose 4x4 block was fully erased or padded is 0 in
        # every part, hence background.
        small = resize_maps(np.asarray(parts), size, mode="area")
        targets = part_targets(
            small,
            strategy=self.strategy,
            threshold=self.threshold,
            softmax_weight=self.softmax_weight,
        )
        return image_tensor, torch.from_numpy(targets)


def crop_padding(width: int) -> int:
    """Random-crop padding in pixels for images ``width`` wide.

    The official 10 px are meant for 128-pixel-wide images; a 32-pixel-wide image padded by
    10 px would shift by up to a third of its width, so the padding scales with the width.
    """
    return max(1, round(PAD_SIZE * width / PAD_REFERENCE_WIDTH))


def build_transforms(cfg: Config, train: bool, seed: int | None = None) -> ReIDTransform:
    """The training or test pipeline of a configuration.

    Training: the names in ``cfg.data.transforms`` (``rc``, ``re``, ``flip``, ``cj``; the
    official long names ``random_crop``, ``random_erase``, ``random_flip``, ``color_jitter``
    are accepted), erasing as ``cfg.data.erasing``. Test: resize + normalize only. Targets
    follow ``cfg.model.bpbreid.masks`` (``preprocess``, ``targets``,
    ``background_computation_strategy``, ``mask_filtering_threshold``, ``softmax_weight``).

    Args:
        cfg: the configuration.
        train: training pipeline (augmentations) or test pipeline.
        seed: seed of the augmentation random state; default ``torch.initial_seed()``, so a
            run seeded with ``torch.manual_seed`` is reproducible. DataLoader workers mix in
            their own seed.

    Returns:
        A :class:`ReIDTransform`: ``(image uint8 [H0, W0, 3], fields [36, h, w] | None) ->
        (image float [3, H, W], target_masks float [K+1, H // 4, W // 4] | None)``.

    Raises:
        ConfigError: unknown augmentation name, erasing or target mode, or grouping;
            ``parts_num`` not matching the grouping.
    """
    masks = cfg.model.bpbreid.masks
    if cfg.data.erasing not in ERASING_MODES:
        raise ConfigError(
            f"Unknown data.erasing '{cfg.data.erasing}'. Valid: {', '.join(ERASING_MODES)}."
        )
    check_grouping(masks.preprocess, masks.parts_num)
    label_source(masks.source).check_grouping(masks.preprocess)
    height, width = int(cfg.data.height), int(cfg.data.width)
    mean, std = tuple(cfg.data.norm_mean), tuple(cfg.data.norm_std)
    names = canonical_transforms(cfg.data.transforms) if train else []

    steps: list[A.BasicTransform] = []
    labels: list[str] = []
    if "flip" in names:
        steps.append(FlipWithFieldSwap(p=0.5, source=masks.source))
        labels.append("flip+swap")
    steps.append(GroupFields(masks.preprocess, source=masks.source))
    labels.append(f"group({masks.preprocess})")
    # Official targets: labels resized by nearest neighbour (albumentations' mask default).
    label_interpolation = cv2.INTER_NEAREST if masks.targets == "official" else cv2.INTER_LINEAR
    steps.append(
        A.Resize(
            height, width, interpolation=cv2.INTER_LINEAR, mask_interpolation=label_interpolation
        )
    )
    labels.append(
        f"resize {height}x{width}" + (" (labels nearest)" if masks.targets == "official" else "")
    )
    if "rc" in names:
        pad = crop_padding(width)
        steps += [
            A.PadIfNeeded(
                min_height=height + 2 * pad,
                min_width=width + 2 * pad,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,  # padding is background
            ),
            A.RandomCrop(height, width),
        ]
        labels.append(f"pad {pad} + random crop")
    if "cj" in names:
        steps.append(A.ColorJitter(**COLOR_JITTER))
        labels.append("colour jitter")
    official_erasing = "re" in names and cfg.data.erasing == "official"
    if "re" in names and not official_erasing:
        # Filled with the mean colour (0 after normalization); the parts are zeroed there,
        # so the erased area is background in the targets.
        steps.append(
            A.Erasing(
                scale=ERASE_SCALE,
                ratio=ERASE_RATIO,
                fill=tuple(round(255 * m) for m in mean),
                fill_mask=0,
                p=0.5,
            )
        )
        labels.append("random erasing")
    steps.append(A.Normalize(mean=mean, std=std, max_pixel_value=255.0))
    labels.append("normalize")
    if official_erasing:
        # After normalization, as the official pipeline: the fill values are written into the
        # normalized image. Integer side ranges make albumentations draw sides in pixels,
        # both ends included, and the position uniformly over the boxes that fit.
        low, high = OFFICIAL_ERASE_SIDES
        steps.append(
            A.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=(int(height * low), int(height * high)),
                hole_width_range=(int(width * low), int(width * high)),
                fill=OFFICIAL_ERASE_FILL,
                fill_mask=0,
                p=0.5,
            )
        )
        labels.append("random erasing (official)")

    if seed is None:
        seed = torch.initial_seed()
    seed = int(seed) % 2**63
    # Image and fields differ in size before the resize: shape checks off.
    compose = A.Compose(steps, is_check_shapes=False, seed=seed)
    return ReIDTransform(
        compose,
        height=height,
        width=width,
        grouping=masks.preprocess,
        strategy=masks.background_computation_strategy,
        threshold=masks.mask_filtering_threshold,
        softmax_weight=masks.softmax_weight,
        seed=seed,
        steps=labels,
        targets=masks.targets,
        source=masks.source,
    )
