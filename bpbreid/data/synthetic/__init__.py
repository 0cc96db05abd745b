"""A procedural occluded-pedestrian dataset with ground-truth parsing labels.

Real re-id datasets cannot be shipped with a course (licences, size, the withdrawal of
DukeMTMC), so the course draws its own: pedestrians whose identity is spread over every
body part (hair or hat, upper clothing colour/pattern/sleeves, lower clothing, shoes, bag,
body width), seen by six cameras with their own scene and colour response, and hidden
behind boxes, walls, poles, vehicles, bushes and *other pedestrians* of the dataset, the
occluder that fools a global embedding most. Because the skeleton is drawn, the parsing
labels are exact.

One module per job, each importing only the ones above it:

* :mod:`~bpbreid.data.synthetic.appearance`: identity appearances, poses, camera styles;
* :mod:`~bpbreid.data.synthetic.drawing`: a person's body, shapes and silhouette;
* :mod:`~bpbreid.data.synthetic.occluders`: occluder shapes and their fitted extent;
* :mod:`~bpbreid.data.synthetic.render`: one image and its ``float32 [36, h, w]`` label
  restricted to the visible silhouette (how the labels match the drawing is explained there);
* :mod:`~bpbreid.data.synthetic.dataset`: presets, the whole set in Market-1501 layout (plus
  ``query_holistic/``: the same queries without their occluder), deterministic and cached.

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

from bpbreid.data.synthetic.appearance import (
    FACING_YAW,
    FACINGS,
    SCENES,
    Appearance,
    CameraStyle,
    Pose,
    camera_style,
    identity_appearance,
    sample_appearance,
    sample_pose,
)
from bpbreid.data.synthetic.dataset import (
    GENERATOR_VERSION,
    NUM_CAMERAS,
    PRESETS,
    SPLIT_FOLDERS,
    Preset,
    generate,
    read_annotations,
    read_meta,
    synthetic_dir,
)
from bpbreid.data.synthetic.drawing import PersonDrawing, draw_person
from bpbreid.data.synthetic.occluders import OCCLUDER_KINDS, OCCLUDER_WEIGHTS
from bpbreid.data.synthetic.render import (
    SyntheticSample,
    default_label_stride,
    render_background,
    render_sample,
)

__all__ = [
    "FACINGS",
    "FACING_YAW",
    "GENERATOR_VERSION",
    "NUM_CAMERAS",
    "OCCLUDER_KINDS",
    "OCCLUDER_WEIGHTS",
    "PRESETS",
    "SCENES",
    "SPLIT_FOLDERS",
    "Appearance",
    "CameraStyle",
    "PersonDrawing",
    "Pose",
    "Preset",
    "SyntheticSample",
    "camera_style",
    "default_label_stride",
    "draw_person",
    "generate",
    "identity_appearance",
    "read_annotations",
    "read_meta",
    "render_background",
    "render_sample",
    "sample_appearance",
    "sample_pose",
    "synthetic_dir",
]
