"""Evaluation results as flat ``{name: float}`` scalars, for the loggers and the run state."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def flatten_metrics(result: Any, prefix: str = "") -> dict[str, float]:
    """Scalar metrics of an evaluation result (dataclass, dict or object) as ``{name: float}``.

    Nested sections become ``section/name``; lists (e.g. a full CMC curve) and arrays are
    left out; the object's ``flat_metrics()``/``to_dict()``/``as_dict()`` is used if it has one.
    """
    if result is None:
        return {}
    for name in ("flat_metrics", "to_dict", "as_dict"):
        method = getattr(result, name, None)
        if callable(method):
            result = method()
            break
    else:
        if dataclasses.is_dataclass(result) and not isinstance(result, type):
            result = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    if not isinstance(result, Mapping):
        return {}
    out: dict[str, float] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float | np.integer | np.floating):
            out[name] = float(value)
        elif isinstance(value, torch.Tensor) and value.numel() == 1:
            out[name] = float(value.item())
        elif isinstance(value, Mapping) or (
            dataclasses.is_dataclass(value) and not isinstance(value, type)
        ):
            out.update(flatten_metrics(value, f"{name}/"))
    return out
