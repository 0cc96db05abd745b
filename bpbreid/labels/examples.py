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

# The list of the crops a call wrote, so that the next call can remove those it does not draw.
MANIFEST = ".example_crops"


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
    one gallery crop. Existing files are kept (the drawing is deterministic); crops that an
    earlier call wrote into ``folder`` and this one does not are removed (they are listed in
    ``<folder>/.example_crops``), so the folder holds exactly this set. Files of your own in
    ``folder`` are never touched.

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
    stems = [
        f"{split}/{pid:04d}_c{camera}s1_{index:06d}_00"
        for index, (split, pid, camera, _) in enumerate(plan)
    ]
    written = {f"{stem}{suffix}" for stem in stems for suffix in (".jpg", ".json")}
    drawing = f"# seed={seed} height={height} width={width}"
    manifest = root / MANIFEST
    if manifest.is_file():
        lines = manifest.read_text().split("\n")
        # Crops drawn with another seed or size are all redrawn.
        keep = written if lines[0] == drawing else set()
        for name in set(lines[1:]) - keep:
            # Only names this function writes ("<split>/<stem>.jpg|json") are removed.
            if name.count("/") == 1 and name.split("/")[0] in ("query", "gallery"):
                (root / name).unlink(missing_ok=True)
    for index, ((_, pid, camera, occluded), stem) in enumerate(zip(plan, stems)):
        image_path = root / f"{stem}.jpg"
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
    root.mkdir(parents=True, exist_ok=True)
    partial = manifest.with_name(manifest.name + ".partial")
    partial.write_text("\n".join([drawing, *sorted(written)]) + "\n")
    partial.replace(manifest)
    return root
