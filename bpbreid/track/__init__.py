"""Re-identification inside a multi-object tracker.

Trackers (BoT-SORT, StrongSORT, Deep OC-SORT) give a person back the same identity after an
occlusion with an appearance embedding, one flat ``[N, D]`` vector per box. This package gives
them this package's models:

* :mod:`~bpbreid.track.backend` - :class:`ReidBackend`: ``get_features(xyxys, image) -> [N, D]``
  (global, or the part-based embedding flattened), or the part embeddings and visibility;
* :mod:`~bpbreid.track.tracker` - :class:`Tracker`: a small Kalman + IoU + appearance tracker
  (Hungarian assignment) whose appearance cost can be the part-based distance;
* :mod:`~bpbreid.track.evaluation` - running trackers on the synthetic sequences
  (:mod:`bpbreid.data.synthetic.sequences`) and scoring them with py-motmetrics (IDF1, ID
  switches) and TrackEval (HOTA, optional);
* :mod:`~bpbreid.track.adapters` - feeding the embeddings to a boxmot tracker (optional
  extra ``track``; boxmot is AGPL-3.0 and is only imported when that adapter is used).

Example::

    from bpbreid.track import ReidBackend, Tracker, TrackerConfig
    backend = ReidBackend.from_checkpoint("outputs/synthetic_cpu/model.pth", "parts")
    tracker = Tracker(TrackerConfig(appearance="parts"))
    for frame, dets in video:
        tracks = tracker.update(dets, backend.part_features(dets[:, :4], frame))
"""

from __future__ import annotations

from bpbreid.track.backend import EMBEDDINGS, ReidBackend
from bpbreid.track.evaluation import (
    Method,
    compare_methods,
    embed_sequence,
    evaluate_tracks,
    hota_available,
    occlusion_events,
    run_tracker,
)
from bpbreid.track.tracker import APPEARANCES, KalmanBox, Track, Tracker, TrackerConfig, iou_matrix

__all__ = [
    "APPEARANCES",
    "EMBEDDINGS",
    "KalmanBox",
    "Method",
    "ReidBackend",
    "Track",
    "Tracker",
    "TrackerConfig",
    "compare_methods",
    "embed_sequence",
    "evaluate_tracks",
    "hota_available",
    "iou_matrix",
    "occlusion_events",
    "run_tracker",
]
