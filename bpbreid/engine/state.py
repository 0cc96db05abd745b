"""The training state that a checkpoint carries besides the weights.

:class:`EngineState` holds the counters (epoch, step), the metrics history, the best
validation metric and the random-number-generator states of Python, NumPy and PyTorch
(CPU and CUDA). ``to_dict()`` gives plain containers and tensors only, so a checkpoint
holding it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch


def capture_rng_states() -> dict[str, Any]:
    """The RNG states of Python, NumPy, PyTorch CPU and every CUDA device, as tensors/lists.

    Returns:
        ``{"python": {...}, "numpy": {...}, "torch": ByteTensor, "cuda": [ByteTensor, ...]}``;
        every leaf is a tensor, an int, a float or None (``weights_only``-safe).
    """
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()  # noqa: NPY002
    cuda_states: list[torch.Tensor] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda_states = [state.cpu() for state in torch.cuda.get_rng_state_all()]
    return {
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": cuda_states,
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_states` (missing entries are left alone)."""
    if not states:
        return
    if "python" in states:
        py = states["python"]
        state = tuple(int(v) for v in torch.as_tensor(py["state"]).tolist())
        random.setstate((int(py["version"]), state, py["gauss"]))
    if "numpy" in states:
        npy = states["numpy"]
        keys = torch.as_tensor(npy["keys"]).numpy().astype(np.uint32)
        np.random.set_state(  # noqa: NPY002 (the global RNG that libraries use)
            (
                npy["kind"],
                keys,
                int(npy["pos"]),
                int(npy["has_gauss"]),
                float(npy["cached_gaussian"]),
            )
        )
    if "torch" in states and states["torch"] is not None:
        torch.set_rng_state(torch.as_tensor(states["torch"], dtype=torch.uint8).cpu())
    cuda_states = states.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        # A run resumed on fewer GPUs restores the devices it has.
        count = min(len(cuda_states), torch.cuda.device_count())
        for index in range(count):
            torch.cuda.set_rng_state(torch.as_tensor(cuda_states[index]).cpu(), index)


@dataclass
class EngineState:
    """Where a training run stands.

    Attributes:
        epoch: completed epochs.
        step: completed optimizer steps (global, across epochs).
        history: one plain dict per logged epoch (losses, learning rate, metrics).
        best_metric: best validation value so far (``None`` before the first validation).
        best_epoch: the epoch that reached ``best_metric``.
        final_metrics: the end-of-run results (test metrics of the reported model).
        first_loss: the loss of the run's first step, the yardstick for a run-away loss.
        warnings: what the run warned about at its end (e.g. a run-away training).
        rng: RNG states captured with :func:`capture_rng_states` (filled when saving).
    """

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    first_loss: float | None = None
    warnings: list[str] = field(default_factory=list)
    rng: dict[str, Any] = field(default_factory=dict)

    def capture_rng(self) -> None:
        """Store the current RNG states in ``self.rng``."""
        self.rng = capture_rng_states()

    def restore_rng(self) -> None:
        """Set the process RNGs to ``self.rng`` (no-op when empty)."""
        restore_rng_states(self.rng)

    def without_rng(self) -> EngineState:
        """A copy without the RNG states (model-only files, results of other processes)."""
        return replace(self, rng={})

    @property
    def last_metrics(self) -> dict[str, Any]:
        """The most recent history entry ({} before the first epoch)."""
        return dict(self.history[-1]) if self.history else {}

    def to_dict(self) -> dict[str, Any]:
        """Plain containers, numbers and tensors only (``torch.load(weights_only=True)``)."""
        return {
            "epoch": int(self.epoch),
            "step": int(self.step),
            "history": [_plain(entry) for entry in self.history],
            "best_metric": None if self.best_metric is None else float(self.best_metric),
            "best_epoch": None if self.best_epoch is None else int(self.best_epoch),
            "final_metrics": _plain(self.final_metrics),
            "first_loss": None if self.first_loss is None else float(self.first_loss),
            "warnings": [str(text) for text in self.warnings],
            "rng": self.rng,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineState:
        """Rebuild from :meth:`to_dict` output; unknown keys are ignored."""
        return cls(
            epoch=int(data.get("epoch", 0)),
            step=int(data.get("step", 0)),
            history=[dict(entry) for entry in data.get("history", [])],
            best_metric=data.get("best_metric"),
            best_epoch=data.get("best_epoch"),
            final_metrics=dict(data.get("final_metrics") or {}),
            first_loss=data.get("first_loss"),
            warnings=[str(text) for text in data.get("warnings") or []],
            rng=dict(data.get("rng") or {}),
        )


def _plain(value: Any) -> Any:
    """Numbers, strings, lists and dicts; tensors and NumPy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.detach().cpu().tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
