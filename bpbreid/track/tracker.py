"""A small multi-object tracker: Kalman motion, IoU, and an appearance cost (Hungarian).

Written to be read, in the family of SORT and DeepSORT: each track is a constant-velocity
Kalman filter on the box ``(cx, cy, aspect, height)``; each frame, detections are assigned
to tracks with :func:`scipy.optimize.linear_sum_assignment` in two stages:

1. **appearance** (skipped with ``appearance="none"``): confirmed tracks, lost ones included
   for up to ``max_age`` frames, against the detections; cost = appearance distance, pairs
   outside the Kalman gate (squared Mahalanobis distance above the 95% chi-square quantile,
   which widens while a track is lost) or farther than ``max_appearance_distance`` are
   forbidden;
2. **motion**: the tracks and detections left, by IoU with the predicted box (at least
   ``min_iou``): this alone is SORT, the ``motion only`` tracker.

Unmatched detections start tentative tracks, confirmed after ``n_init`` consecutive hits.

The appearance memory of a track:

* ``global`` / ``flat``: one unit vector, an exponential moving average of its detections'
  embeddings (momentum ``ema``, as BoT-SORT and StrongSORT), compared with a cosine distance;
* ``parts``: one moving average *per part*, updated only from detections where that part is
  visible (a car hiding the legs does not overwrite the legs' memory), with the parts ever seen;
  compared with :func:`bpbreid.metrics.part_based_distance` (cosine), i.e. over the parts
  visible in both the detection and the track's memory.

Reference:
    Bewley et al., "Simple Online and Realtime Tracking", ICIP 2016 (SORT). Wojke et al.,
    "Simple Online and Realtime Tracking with a Deep Association Metric", ICIP 2017 (DeepSORT:
    the Kalman parametrisation, the gate, appearance before IoU). Aharon et al., "BoT-SORT",
    arXiv 2206.14651, and Du et al., "StrongSORT", IEEE TMM 2023 (EMA appearance memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

APPEARANCES = ("none", "global", "flat", "parts")
CHI2_95_4DOF = 9.4877  # gate on (cx, cy, a, h): 95% quantile of chi-square with 4 dof
_INF = 1e6

# --------------------------------------------------------------------------------------
# Kalman filter on (cx, cy, aspect, height) with their velocities
# --------------------------------------------------------------------------------------

_STD_POSITION = 1.0 / 20  # uncertainty relative to the box height (DeepSORT's values)
_STD_VELOCITY = 1.0 / 160
_F = np.eye(8)
_F[:4, 4:] = np.eye(4)  # x_{t+1} = x_t + v_t (one frame)
_H = np.eye(4, 8)


def xyxy_to_xyah(box: np.ndarray) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([box[0] + w / 2, box[1] + h / 2, w / max(h, 1e-6), h], dtype=np.float64)


def xyah_to_xyxy(state: np.ndarray) -> np.ndarray:
    cx, cy, a, h = state[:4]
    w = a * h
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _noise(h: float, position: float, aspect: float) -> np.ndarray:
    return np.array([position * h, position * h, aspect, position * h]) ** 2


class KalmanBox:
    """Constant-velocity Kalman filter of one box; state ``[cx, cy, a, h, vcx, vcy, va, vh]``."""

    def __init__(self, box: np.ndarray) -> None:
        z = xyxy_to_xyah(box)
        self.mean = np.r_[z, np.zeros(4)]
        h = z[3]
        std = [2 * _STD_POSITION * h] * 2 + [1e-2, 2 * _STD_POSITION * h]
        std += [10 * _STD_VELOCITY * h] * 2 + [1e-5, 10 * _STD_VELOCITY * h]
        self.cov = np.diag(np.square(std))

    def predict(self) -> None:
        h = self.mean[3]
        q = np.r_[_noise(h, _STD_POSITION, 1e-2), _noise(h, _STD_VELOCITY, 1e-5)]
        self.mean = _F @ self.mean
        self.cov = _F @ self.cov @ _F.T + np.diag(q)

    def _projected(self) -> tuple[np.ndarray, np.ndarray]:
        r = np.diag(_noise(self.mean[3], _STD_POSITION, 1e-1))
        return _H @ self.mean, _H @ self.cov @ _H.T + r

    def update(self, box: np.ndarray) -> None:
        z = xyxy_to_xyah(box)
        projected, s = self._projected()
        gain = np.linalg.solve(s, _H @ self.cov).T  # K = P H^T S^-1 (S symmetric)
        self.mean = self.mean + gain @ (z - projected)
        self.cov = self.cov - gain @ s @ gain.T

    def gating_distance(self, boxes: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances ``[N]`` of boxes ``[N, 4]`` (xyxy) to the prediction."""
        projected, s = self._projected()
        d = np.stack([xyxy_to_xyah(b) for b in boxes]) - projected
        return np.einsum("ni,ni->n", d, np.linalg.solve(s, d.T).T)

    @property
    def box(self) -> np.ndarray:
        return xyah_to_xyxy(self.mean)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[N, M]`` of boxes ``a [N, 4]`` and ``b [M, 4]`` (xyxy)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


# --------------------------------------------------------------------------------------
# Tracks and the tracker
# --------------------------------------------------------------------------------------


@dataclass
class TrackerConfig:
    """Settings of :class:`Tracker` (defaults: DeepSORT/BoT-SORT-like values at 25 fps).

    Attributes:
        appearance: ``none`` (motion only), ``global``, ``flat`` (one vector per box) or
            ``parts`` (part embeddings + visibility, part-based distance).
        max_age: frames a lost track is kept (and can be found again).
        n_init: consecutive hits that confirm a track.
        min_iou: smallest IoU of the motion stage.
        max_appearance_distance: largest appearance (cosine) distance of a match.
        ema: momentum of the appearance memory.
        part_visibility: a detection's part updates the memory from this visibility on.
    """

    appearance: str = "none"
    max_age: int = 50
    n_init: int = 3
    min_iou: float = 0.3
    max_appearance_distance: float = 0.3
    ema: float = 0.9
    part_visibility: float = 0.5


@dataclass
class Track:
    """One tracked person: its Kalman filter, counters and appearance memory."""

    track_id: int
    kalman: KalmanBox
    hits: int = 1
    time_since_update: int = 0
    confirmed: bool = False
    feature: np.ndarray | None = None  # [D] unit vector (global / flat)
    part_features: np.ndarray | None = None  # [P, D] (parts)
    part_seen: np.ndarray | None = None  # [P] 1 where the memory holds a part
    history: list[int] = field(default_factory=list)  # frames where it was matched


class Tracker:
    """Online multi-object tracker; call :meth:`update` once per frame.

    Example::

        tracker = Tracker(TrackerConfig(appearance="parts"))
        for frame, dets in video:                       # dets [N, 5]: x1, y1, x2, y2, score
            feats, vis = backend.part_features(dets[:, :4], frame)
            tracks = tracker.update(dets, (feats, vis))  # [M, 5]: x1, y1, x2, y2, id
    """

    def __init__(self, config: TrackerConfig | None = None, **overrides: object) -> None:
        cfg = config or TrackerConfig()
        for key, value in overrides.items():
            if not hasattr(cfg, key):
                raise ValueError(f"Unknown tracker setting '{key}'.")
            setattr(cfg, key, value)
        if cfg.appearance not in APPEARANCES:
            raise ValueError(
                f"Unknown appearance '{cfg.appearance}'. Valid: {', '.join(APPEARANCES)}."
            )
        self.cfg = cfg
        self.tracks: list[Track] = []
        self.frame = 0
        self._next_id = 1

    # ----------------------------------------------------------------------------------

    def update(self, detections: np.ndarray, features: object = None) -> np.ndarray:
        """Advance one frame.

        Args:
            detections: ``[N, 5]`` (x1, y1, x2, y2, score) or ``[N, 4]``.
            features: ``global``/``flat``: ``[N, D]`` unit vectors; ``parts``: a pair
                ``(features [N, P, D], visibility [N, P])``; ``none``: ignored.

        Returns:
            float64 ``[M, 5]``: x1, y1, x2, y2, track id of the confirmed tracks matched in
            this frame.
        """
        self.frame += 1
        dets = np.asarray(detections, dtype=np.float64).reshape(-1, detections.shape[-1])[:, :4]
        feats = self._check_features(features, len(dets))
        for track in self.tracks:
            track.kalman.predict()
            track.time_since_update += 1

        unmatched_dets = list(range(len(dets)))
        unmatched_tracks = list(range(len(self.tracks)))
        matches: list[tuple[int, int]] = []
        if self.cfg.appearance != "none":
            confirmed = [i for i in unmatched_tracks if self.tracks[i].confirmed]
            cost = self._appearance_cost(confirmed, dets, feats)
            found = _assign(cost, self.cfg.max_appearance_distance)
            matches += [(confirmed[t], d) for t, d in found]
        matched_t = {t for t, _ in matches}
        matched_d = {d for _, d in matches}
        unmatched_tracks = [t for t in unmatched_tracks if t not in matched_t]
        unmatched_dets = [d for d in unmatched_dets if d not in matched_d]
        if unmatched_tracks and unmatched_dets:
            predicted = np.stack([self.tracks[t].kalman.box for t in unmatched_tracks])
            cost = 1.0 - iou_matrix(predicted, dets[unmatched_dets])
            found = _assign(cost, 1.0 - self.cfg.min_iou)
            matches += [(unmatched_tracks[t], unmatched_dets[d]) for t, d in found]
            matched_t = {t for t, _ in matches}
            matched_d = {d for _, d in matches}
            unmatched_dets = [d for d in unmatched_dets if d not in matched_d]

        for t, d in matches:
            self._update_track(self.tracks[t], dets[d], feats, d)
        for d in unmatched_dets:
            self._start_track(dets[d], feats, d)
        self.tracks = [
            t
            for t in self.tracks
            if (t.confirmed and t.time_since_update <= self.cfg.max_age)
            or (not t.confirmed and t.time_since_update == 0)
        ]
        out = [
            np.r_[t.kalman.box, t.track_id]
            for t in self.tracks
            if t.confirmed and t.time_since_update == 0
        ]
        return np.array(out, dtype=np.float64).reshape(-1, 5)

    # ----------------------------------------------------------------------------------

    def _check_features(self, features: object, n: int) -> object:
        mode = self.cfg.appearance
        if mode == "none":
            return None
        if features is None:
            raise ValueError(f"appearance='{mode}' needs the detections' features.")
        if mode == "parts":
            f, v = features  # type: ignore[misc]
            f = torch.as_tensor(f, dtype=torch.float32)
            v = torch.as_tensor(v, dtype=torch.float32)
            if f.dim() != 3 or f.shape[0] != n or tuple(v.shape) != tuple(f.shape[:2]):
                raise ValueError("parts features must be ([N, P, D], [N, P]) for N detections.")
            f = torch.nn.functional.normalize(f, dim=-1)
            return f.numpy(), v.numpy()
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or len(f) != n:
            raise ValueError(f"{mode} features must be [N, D] for N={n} detections.")
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    def _appearance_cost(self, track_ids: list[int], dets: np.ndarray, feats: object) -> np.ndarray:
        """``[T, N]`` appearance distances, ``_INF`` outside the Kalman gate."""
        cost = np.full((len(track_ids), len(dets)), _INF)
        if not track_ids or not len(dets):
            return cost
        tracks = [self.tracks[i] for i in track_ids]
        if self.cfg.appearance == "parts":
            from bpbreid.metrics import part_based_distance

            f, v = feats  # type: ignore[misc]
            memory = np.stack([t.part_features for t in tracks])
            seen = np.stack([t.part_seen for t in tracks])
            app = part_based_distance(memory, f, seen, v, metric="cosine").numpy()
        else:
            memory = np.stack([t.feature for t in tracks])
            app = 1.0 - memory @ np.asarray(feats).T
        for row, track in enumerate(tracks):
            inside = track.kalman.gating_distance(dets) <= CHI2_95_4DOF
            cost[row, inside] = app[row, inside]
        return cost

    def _remember(self, track: Track, feats: object, d: int) -> None:
        mode, ema = self.cfg.appearance, self.cfg.ema
        if mode == "none":
            return
        if mode == "parts":
            f, v = feats  # type: ignore[misc]
            visible = v[d] >= self.cfg.part_visibility
            if track.part_features is None:
                track.part_features = f[d].copy()
                track.part_seen = visible.astype(np.float32)
                return
            old = track.part_seen > 0
            both = visible & old
            track.part_features[both] = ema * track.part_features[both] + (1 - ema) * f[d][both]
            new = visible & ~old  # first sight of a part: take it as it is
            track.part_features[new] = f[d][new]
            norms = np.linalg.norm(track.part_features, axis=1, keepdims=True)
            track.part_features /= np.maximum(norms, 1e-12)
            track.part_seen = np.maximum(track.part_seen, visible.astype(np.float32))
            return
        x = feats[d]  # type: ignore[index]
        if track.feature is None:
            track.feature = x.copy()
            return
        mixed = ema * track.feature + (1 - ema) * x
        track.feature = mixed / max(float(np.linalg.norm(mixed)), 1e-12)

    def _update_track(self, track: Track, box: np.ndarray, feats: object, d: int) -> None:
        track.kalman.update(box)
        track.hits += 1
        track.time_since_update = 0
        track.history.append(self.frame)
        if not track.confirmed and track.hits >= self.cfg.n_init:
            track.confirmed = True
        self._remember(track, feats, d)

    def _start_track(self, box: np.ndarray, feats: object, d: int) -> None:
        track = Track(self._next_id, KalmanBox(box), confirmed=self.cfg.n_init <= 1)
        track.history.append(self.frame)
        self._next_id += 1
        self._remember(track, feats, d)
        self.tracks.append(track)


def _assign(cost: np.ndarray, max_cost: float) -> list[tuple[int, int]]:
    """Hungarian assignment; pairs costing more than ``max_cost`` are left unmatched."""
    if cost.size == 0:
        return []
    rows, cols = linear_sum_assignment(np.minimum(cost, _INF))
    return [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] <= max_cost]
