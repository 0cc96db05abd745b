"""Run trackers on the synthetic sequences and score them with standard libraries.

Metrics come from libraries, not from this package:

* **py-motmetrics** (a dependency): IDF1, ID switches, MOTA, fragmentations (CLEAR MOT and
  identity metrics; Milan et al. 2016, Ristani et al. 2016). Its ``distances.iou_matrix``
  calls ``np.asfarray``, removed in NumPy 2, so the IoU distances are computed here
  (:func:`bpbreid.track.tracker.iou_matrix`) and handed to its accumulator, with its
  convention: ``1 - IoU``, no match below IoU 0.5. Its accumulator and metrics run on
  NumPy 2 and pandas 3.
* **TrackEval** (optional, ``pip install trackeval``): HOTA, DetA and AssA (Luiten et al.,
  IJCV 2021). The released py-motmetrics (1.4.0) has no HOTA; without TrackEval the HOTA columns
  are left out.

Ground truth below ``min_visibility`` is not scored (nobody could detect it: the detections
are derived from the same threshold), as the detections never cover it.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bpbreid.data.synthetic.sequences import Sequence as TrackingSequence
from bpbreid.track.tracker import Tracker, TrackerConfig, iou_matrix

MOT_METRICS = ("idf1", "num_switches", "mota", "num_fragmentations", "idp", "idr")
MATCH_IOU = 0.5


@dataclass
class FrameFeatures:
    """The detections of one frame and their re-id features.

    Attributes:
        detections: float32 ``[N, 5]`` (x1, y1, x2, y2, score).
        features: float32 ``[N, P, D]`` test embeddings (P = 1 for a global embedding).
        visibility: float32 ``[N, P]``.
    """

    detections: np.ndarray
    features: torch.Tensor
    visibility: torch.Tensor


def embed_sequence(sequence: TrackingSequence, backend) -> list[FrameFeatures]:
    """Embed every detection of a sequence once (reused by every tracker that needs it)."""
    out = []
    for index in range(sequence.num_frames):
        dets = sequence.detections(index)
        feats, vis = backend.part_features(dets[:, :4], sequence.frame(index))
        out.append(FrameFeatures(dets, feats, vis))
    return out


def run_tracker(
    sequence: TrackingSequence,
    config: TrackerConfig,
    features: list[FrameFeatures] | None = None,
) -> np.ndarray:
    """Track one sequence; returns float64 ``[M, 6]`` rows ``frame (1-based), id, x1, y1, x2, y2``.

    Args:
        sequence: the sequence (its detections are used).
        config: the tracker's settings; ``appearance`` says which features it reads.
        features: from :func:`embed_sequence` (needed unless ``appearance="none"``).
    """
    from bpbreid.metrics import flatten_part_embeddings

    tracker = Tracker(TrackerConfig(**vars(config)))
    rows = []
    for index in range(sequence.num_frames):
        if config.appearance == "none":
            dets, feats = sequence.detections(index), None
        else:
            if features is None:
                raise ValueError(f"appearance='{config.appearance}' needs embed_sequence().")
            frame = features[index]
            dets = frame.detections
            if config.appearance == "parts":
                feats = (frame.features, frame.visibility)
            else:  # global (P = 1) or flat: one unit vector per box
                feats = flatten_part_embeddings(frame.features, frame.visibility).numpy()
        for x1, y1, x2, y2, tid in tracker.update(dets, feats):
            rows.append([index + 1, tid, x1, y1, x2, y2])
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def _frames(
    sequence: TrackingSequence, tracks: np.ndarray, min_visibility: float
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per frame: ground-truth ids, hypothesis ids, IoU ``[n_gt, n_hyp]``."""
    out = []
    for index in range(sequence.num_frames):
        gt_ids, gt_boxes = sequence.ground_truth(index, min_visibility)
        rows = tracks[tracks[:, 0] == index + 1]
        out.append((gt_ids, rows[:, 1].astype(int), iou_matrix(gt_boxes, rows[:, 2:6])))
    return out


def mot_accumulator(sequence: TrackingSequence, tracks: np.ndarray, min_visibility: float):
    """A :class:`motmetrics.MOTAccumulator` of one sequence (IoU distances, match at 0.5)."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    for gt_ids, hyp_ids, iou in _frames(sequence, tracks, min_visibility):
        distance = np.where(iou >= MATCH_IOU, 1.0 - iou, np.nan)
        acc.update(gt_ids.tolist(), hyp_ids.tolist(), distance)
    return acc


def hota_available() -> bool:
    """Whether TrackEval (HOTA) is installed."""
    return importlib.util.find_spec("trackeval") is not None


def _trackeval_data(frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """TrackEval's per-sequence input: 0-based contiguous ids and IoU similarities."""
    gt_all = sorted({int(i) for g, _, _ in frames for i in g})
    hyp_all = sorted({int(i) for _, h, _ in frames for i in h})
    gmap = {v: k for k, v in enumerate(gt_all)}
    hmap = {v: k for k, v in enumerate(hyp_all)}
    return {
        "num_timesteps": len(frames),
        "num_gt_ids": len(gt_all),
        "num_tracker_ids": len(hyp_all),
        "num_gt_dets": int(sum(len(g) for g, _, _ in frames)),
        "num_tracker_dets": int(sum(len(h) for _, h, _ in frames)),
        "gt_ids": [np.array([gmap[int(i)] for i in g], dtype=int) for g, _, _ in frames],
        "tracker_ids": [np.array([hmap[int(i)] for i in h], dtype=int) for _, h, _ in frames],
        "similarity_scores": [s for _, _, s in frames],
    }


def hota(
    sequences: Sequence[TrackingSequence], tracks: dict[str, np.ndarray], min_visibility: float
) -> dict[str, float] | None:
    """HOTA, DetA and AssA over all sequences (TrackEval), or None without TrackEval."""
    if not hota_available():
        return None
    from trackeval.metrics import HOTA

    metric = HOTA({"PRINT_CONFIG": False})
    per_seq = {
        s.name: metric.eval_sequence(_trackeval_data(_frames(s, tracks[s.name], min_visibility)))
        for s in sequences
    }
    combined = metric.combine_sequences(per_seq)
    # Averaged over the localisation thresholds alpha = 0.05 ... 0.95, as TrackEval reports.
    return {k: float(np.mean(combined[k])) for k in ("HOTA", "DetA", "AssA")}


def evaluate_tracks(
    sequences: Sequence[TrackingSequence],
    tracks: dict[str, np.ndarray],
    min_visibility: float = 0.3,
) -> dict[str, float]:
    """IDF1, ID switches, MOTA... (py-motmetrics) and HOTA (TrackEval, when installed).

    Args:
        sequences: the sequences.
        tracks: sequence name -> ``[M, 6]`` rows from :func:`run_tracker`.
        min_visibility: ground truth less visible than this is not scored.

    Returns:
        ``{"IDF1": %, "IDsw": n, "MOTA": %, "Frag": n, "HOTA": %, "DetA": %, "AssA": %}``
        over all sequences (the HOTA entries only with TrackEval).
    """
    import motmetrics as mm

    accs = [mot_accumulator(s, tracks[s.name], min_visibility) for s in sequences]
    summary = mm.metrics.create().compute_many(
        accs, metrics=list(MOT_METRICS), names=[s.name for s in sequences], generate_overall=True
    )
    overall = summary.loc["OVERALL"]
    out = {
        "IDF1": 100 * float(overall["idf1"]),
        "IDsw": int(overall["num_switches"]),
        "MOTA": 100 * float(overall["mota"]),
        "Frag": int(overall["num_fragmentations"]),
    }
    found = hota(sequences, tracks, min_visibility)
    if found:
        out.update({k: 100 * v for k, v in found.items()})
    return out


@dataclass
class Method:
    """One way of tracking: a name, the tracker's settings, and where features come from.

    Attributes:
        name: e.g. ``motion only``, ``global re-id``, ``part-based (flat)``.
        config: the tracker's settings.
        features: a key of the feature caches given to :func:`compare_methods` (None for
            motion only).
    """

    name: str
    config: TrackerConfig
    features: str | None = None


def compare_methods(
    sequences: Sequence[TrackingSequence],
    methods: Sequence[Method],
    backends: dict[str, object],
    min_visibility: float = 0.3,
    log: Callable[[str], None] | None = None,
) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """Track every sequence with every method and score them.

    Args:
        sequences: the sequences.
        methods: the trackers to compare.
        backends: feature key -> :class:`bpbreid.track.ReidBackend`; each embeds every
            detection once, whatever number of methods reads it.
        min_visibility: see :func:`evaluate_tracks`.
        log: called with a line per finished method (e.g. ``print``).

    Returns:
        ``(rows, tracks)``: one metrics dict per method (with ``method`` and ``seconds``), and
        method name -> sequence name -> ``[M, 6]`` tracks.
    """
    caches: dict[str, dict[str, list[FrameFeatures]]] = {}
    for key in {m.features for m in methods if m.features}:
        caches[key] = {s.name: embed_sequence(s, backends[key]) for s in sequences}
    rows, all_tracks = [], {}
    for method in methods:
        start = time.perf_counter()
        cache = caches.get(method.features or "", {})
        tracks = {s.name: run_tracker(s, method.config, cache.get(s.name)) for s in sequences}
        row = {"method": method.name, **evaluate_tracks(sequences, tracks, min_visibility)}
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        all_tracks[method.name] = tracks
        if log:
            log(f"{method.name:<24} IDF1 {row['IDF1']:5.1f}  IDsw {row['IDsw']:3d}")
    return rows, all_tracks


def occlusion_events(
    sequence: TrackingSequence, below: float = 0.3, min_frames: int = 5
) -> list[tuple[int, int, int]]:
    """Occlusions of a sequence: ``(id, first hidden frame, first visible frame again)``.

    Frames are 0-based; an occlusion is at least ``min_frames`` consecutive frames with the
    person annotated below visibility ``below``, visible before and after.
    """
    events = []
    for pid in np.unique(sequence.gt[:, 1]).astype(int):
        rows = sequence.gt[sequence.gt[:, 1] == pid]
        frames, vis = rows[:, 0].astype(int) - 1, rows[:, 8]
        hidden = vis < below
        start = None
        for k in range(1, len(frames)):
            if hidden[k] and not hidden[k - 1]:
                start = frames[k]
            if not hidden[k] and hidden[k - 1] and start is not None:
                if frames[k] - start >= min_frames:
                    events.append((int(pid), int(start), int(frames[k])))
                start = None
    return events
