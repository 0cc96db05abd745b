"""Training and evaluation engine: trainer, checkpoints, loggers, evaluation loop.

Names are imported on first use (the table below says from which module), so that the
command modules that live in this package (``python -m bpbreid train --help``) answer
without loading PyTorch.

Example::

    from bpbreid.config import load_config
    from bpbreid.engine import Trainer, load_checkpoint

    state = Trainer(load_config("synthetic_cpu")).fit()
    model, cfg, state = load_checkpoint("outputs/synthetic_cpu/model.pth")
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS: dict[str, str] = {
    "EngineState": "bpbreid.engine.state",
    "Trainer": "bpbreid.engine.trainer",
    "run_parallel": "bpbreid.engine.pool",
    "split_validation": "bpbreid.engine.validation",
    "flatten_metrics": "bpbreid.engine.metrics_log",
    "save_checkpoint": "bpbreid.engine.checkpoint",
    "load_checkpoint": "bpbreid.engine.checkpoint",
    "read_checkpoint": "bpbreid.engine.checkpoint",
    "atomic_save": "bpbreid.engine.checkpoint",
    "RunLock": "bpbreid.engine.lock",
    "TrainingWarning": "bpbreid.engine.health",
    "build_optimizer": "bpbreid.engine.optim",
    "build_scheduler": "bpbreid.engine.optim",
    "build_loggers": "bpbreid.engine.loggers",
    "Logger": "bpbreid.engine.loggers",
    "resolve_amp": "bpbreid.engine.distributed",
    "resolve_device": "bpbreid.engine.distributed",
    "evaluate": "bpbreid.engine.evaluation",
    "EvalResult": "bpbreid.engine.evaluation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bpbreid.engine' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _EngineModule(types.ModuleType):
    """Keeps ``bpbreid.engine.evaluate`` the function.

    ``bpbreid.engine.evaluate`` is also the former module path of
    :mod:`bpbreid.engine.evaluation` (an alias, still importable). Importing it would
    otherwise replace the package attribute with the module, and
    ``from bpbreid.engine import evaluate`` would then return a module, not the function.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _EngineModule
