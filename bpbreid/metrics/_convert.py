"""Input conversion shared by the metrics: arrays and tensors in, one type out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_tensor(x: Any, dtype: torch.dtype | None = None, device: Any = None) -> torch.Tensor:
    """``x`` as a tensor (a tensor stays on its device unless ``device`` is given)."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device if device is not None else t.device, dtype=dtype or t.dtype)


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a NumPy array (tensors are detached and moved to the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
