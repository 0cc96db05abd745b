"""Parsing labels for new images: a pose estimator's COCO-17 keypoints -> the 36 fields.

Example::

    from bpbreid.labels import build_estimator, generate_labels, plan_labels
    jobs = plan_labels("data/mine/query")             # labels at the official paths
    report = generate_labels(jobs, build_estimator("mediapipe"))
    print(report.summary())

Command line: ``python -m bpbreid labels <folder> [--estimator mediapipe|keypointrcnn|json]``.
"""

from bpbreid.labels.estimators import (
    ESTIMATORS,
    JsonKeypoints,
    KeypointRCNNPose,
    MediaPipePose,
    PoseEstimator,
    build_estimator,
)
from bpbreid.labels.generate import (
    LabelJob,
    LabelReport,
    generate_labels,
    keypoints_to_label,
    label_size,
    plan_labels,
)
from bpbreid.labels.keypoints import (
    MEDIAPIPE_TO_COCO,
    coco_from_mediapipe,
    letterbox,
    read_keypoints_json,
    select_person,
    write_keypoints_json,
)

__all__ = [
    "ESTIMATORS",
    "MEDIAPIPE_TO_COCO",
    "JsonKeypoints",
    "KeypointRCNNPose",
    "LabelJob",
    "LabelReport",
    "MediaPipePose",
    "PoseEstimator",
    "build_estimator",
    "coco_from_mediapipe",
    "generate_labels",
    "keypoints_to_label",
    "label_size",
    "letterbox",
    "plan_labels",
    "read_keypoints_json",
    "select_person",
    "write_keypoints_json",
]
