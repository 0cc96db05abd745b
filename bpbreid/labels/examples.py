"""A folder of example person crops with their keypoints, for trying the labelling tools offline.

:func:`write_example_crops` draws pedestrians with the synthetic generator
(:func:`bpbreid.data.synthetic.render_sample`) into the layout a user's own data would have:
``<folder>/query/`` (occluded crops) and ``<folder>/gallery/`` (other cameras, plus
distractors), with Market-1501-style file names (identity and camera in the name) and, beside
every image, a ``<stem>.json`` with the drawn skeleton: the ground-truth keypoints that a pose
estimator would return for a photo (:class:`bpbreid.labels.JsonKeypoints` reads them).

Drawing the identities of the synthetic *test* split gives crops of people a model trained on
the synthetic training split has never seen, at a size of your choice (Market-1501's 128x64
by default): the situation of someone bringing their own images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bpbreid.labels.keypoints import write_keypoints_json


def write_example_crops(
    folder: str | Path,
    identities: Sequence[int],
    seed: int = 0,
    gallery_per_identity: int = 3,
    distractors: Sequence[int] = (),
    height: int = 128,
    width: int = 64,
) -> Path:
    """Draw query and gallery crops of ``identities`` (and distractors) with keypoint files.

    Each identity gets one occluded query (camera 1) and ``gallery_per_identity`` gallery
    crops from cameras 2, 3, ... (the first one occluded, the others not); each distractor
    one gallery crop. Existing files are kept (the drawing is deterministic).

    Args:
        folder: output folder (``query/`` and ``gallery/`` are created in it).
        identities: identity numbers (with the synthetic ``seed``, the same number draws
            the same person as in the generated dataset).
        seed: the synthetic dataset seed (appearances and camera styles).
        gallery_per_identity: gallery crops per identity.
        distractors: identities that appear in the gallery only.
        height, width: crop size.

    Returns:
        ``folder``.
    """
    from PIL import Image

    from bpbreid.data.synthetic import render_sample

    root = Path(folder)
    pool = tuple(identities) + tuple(distractors)
    plan: list[tuple[str, int, int, bool]] = []  # split, pid, camera, occluded
    for pid in identities:
        plan.append(("query", pid, 1, True))
        plan += [("gallery", pid, 2 + g, g == 0) for g in range(gallery_per_identity)]
    plan += [("gallery", pid, 2 + i % 5, False) for i, pid in enumerate(distractors)]
    for index, (split, pid, camera, occluded) in enumerate(plan):
        stem = f"{pid:04d}_c{camera}s1_{index:06d}_00"
        image_path = root / split / f"{stem}.jpg"
        if image_path.is_file() and image_path.with_suffix(".json").is_file():
            continue
        sample = render_sample(
            seed,
            pid,
            camera,
            np.random.default_rng([seed, 6, index]),
            height=height,
            width=width,
            occluder=occluded,
            occluder_rng=np.random.default_rng([seed, 7, index]),
            hidden_range=(0.3, 0.6),
            occluder_pool=[p for p in pool if p != pid],
        )
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.image).save(image_path, quality=95)
        write_keypoints_json(image_path.with_suffix(".json"), sample.keypoints, (height, width))
    return root
