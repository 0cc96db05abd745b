"""Model selection without the test set: a validation split held out of the training identities.

With ``train.validation_ids > 0`` the trainer trains on the other identities, evaluates on
this split and keeps the best epoch by :func:`selection_value` (mAP, else rank-1); the
test set is only ever reported on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from bpbreid.config import ConfigError

# Metric names that pick the best validation epoch, by preference (the last path component).
SELECTION_METRICS = ("mAP", "map", "rank1", "rank-1", "r1")


def split_validation(data: Any, num_ids: int, seed: int = 0) -> tuple[Any, Any]:
    """Carve ``num_ids`` training identities into a validation query/gallery split.

    For every chosen identity, up to one random image per camera becomes a query, as long as
    every query keeps a gallery image of its identity from another camera (the Market-1501
    protocol ignores same-camera matches); the other images form the gallery.
    The remaining training identities are relabelled ``0..N-1``.

    Args:
        data: a :class:`bpbreid.data.datasets.ReIDData`.
        num_ids: identities to hold out (``train.validation_ids``).
        seed: which identities and queries are drawn.

    Returns:
        ``(train_data, val_data)``: two ``ReIDData``; ``val_data`` has no training samples.

    Raises:
        ConfigError: too few identities would be left to train on.
    """
    from bpbreid.data.datasets import relabel

    pids = sorted({s.pid for s in data.train})
    if num_ids >= len(pids) - 1:
        raise ConfigError(
            f"train.validation_ids={num_ids} leaves too few of the {len(pids)} training "
            "identities to train on. Lower train.validation_ids."
        )
    rng = np.random.default_rng([seed, 7919])
    val_pids = {int(p) for p in rng.choice(pids, size=num_ids, replace=False)}
    train = [s for s in data.train if s.pid not in val_pids]
    query, gallery = [], []
    for pid in sorted(val_pids):
        samples = [s for s in data.train if s.pid == pid]
        picked: set[int] = set()
        for cam in rng.permutation(sorted({s.camid for s in samples})):
            candidate = int(rng.choice([i for i, s in enumerate(samples) if s.camid == cam]))
            trial = picked | {candidate}
            # Keep a query only if it and every earlier one still have a gallery match
            # from another camera (the protocol ignores same-camera matches).
            gallery_cams = {s.camid for i, s in enumerate(samples) if i not in trial}
            if all(gallery_cams - {samples[q].camid} for q in trial):
                picked = trial
        query.extend(s for i, s in enumerate(samples) if i in picked)
        gallery.extend(s for i, s in enumerate(samples) if i not in picked)
    train_data = dataclasses.replace(data, train=relabel(train))
    val_data = dataclasses.replace(data, train=[], query=query, gallery=gallery, extra_queries={})
    return train_data, val_data


def selection_value(metrics: Mapping[str, float]) -> tuple[str, float] | None:
    """The metric used to pick the best validation epoch (mAP, else rank-1), as ``(key, value)``;
    ``None`` when ``metrics`` holds neither."""
    for wanted in SELECTION_METRICS:
        for key, value in metrics.items():
            if key.split("/")[-1] == wanted:
                return key, value
    return None
