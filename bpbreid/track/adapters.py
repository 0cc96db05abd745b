"""Feeding this package's embeddings to a boxmot tracker (optional extra ``track``).

boxmot (https://github.com/mikel-brostrom/boxmot, AGPL-3.0) packages BoT-SORT, StrongSORT,
Deep OC-SORT and others behind one call: ``tracker.update(dets, image, embs=None)`` with
``dets`` float ``[N, 6]`` (x1, y1, x2, y2, score, class) and, optionally, the detections'
embeddings ``embs [N, D]``; it returns ``[M, 8]`` rows (x1, y1, x2, y2, id, score, class,
detection index). When ``embs`` is given, the tracker's own re-id model is not run, so any
:class:`~bpbreid.track.ReidBackend` can stand in for it.

boxmot is imported only inside :func:`make_boxmot_tracker`: nothing in this package imports it
at module level, and ``pip install "bpbreid[track]"`` is needed only for this adapter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bpbreid.errors import BPBReIDError

INSTALL_HINT = 'pip install "bpbreid[track]" (boxmot, AGPL-3.0)'


def make_boxmot_tracker(name: str = "BotSort", **kwargs: Any) -> Any:
    """A boxmot tracker class by name (``BotSort``, ``StrongSort``, ``DeepOcSort``...).

    ``kwargs`` go to its constructor as boxmot documents them (e.g. ``reid_weights``,
    ``device``, ``half``); when the embeddings are always passed to ``update`` the tracker's
    own re-id weights are never used.

    Raises:
        BPBReIDError: boxmot is not installed, or has no tracker of that name.
    """
    try:
        import boxmot
    except ImportError:
        raise BPBReIDError(f"The boxmot adapter needs boxmot: {INSTALL_HINT}.") from None
    cls = getattr(boxmot, name, None)
    if cls is None:
        trackers = sorted(n for n in dir(boxmot) if n.endswith(("Sort", "Track", "SORT")))
        raise BPBReIDError(f"boxmot has no tracker '{name}'. It has: {', '.join(trackers)}.")
    return cls(**kwargs)


class BoxmotAdapter:
    """Run a boxmot tracker with embeddings from a :class:`~bpbreid.track.ReidBackend`.

    Args:
        tracker: a boxmot tracker (:func:`make_boxmot_tracker`) or anything with
            ``update(dets [N, 6], image, embs [N, D]) -> [M, >=5]``.
        backend: gives ``get_features(xyxys, image) -> [N, D]``.
    """

    def __init__(self, tracker: Any, backend: Any) -> None:
        self.tracker = tracker
        self.backend = backend

    def update(self, detections: np.ndarray, image: np.ndarray) -> np.ndarray:
        """One frame: detections ``[N, 5]`` (x1, y1, x2, y2, score) -> ``[M, 5]`` (box, id)."""
        dets = np.asarray(detections, dtype=np.float32).reshape(-1, detections.shape[-1])
        if dets.shape[1] == 5:  # boxmot wants a class column: 0 = person
            dets = np.concatenate([dets, np.zeros((len(dets), 1), np.float32)], axis=1)
        embs = self.backend.get_features(dets[:, :4], image)
        out = np.asarray(self.tracker.update(dets, image, embs))
        return out[:, :5].astype(np.float64) if out.size else np.zeros((0, 5))
