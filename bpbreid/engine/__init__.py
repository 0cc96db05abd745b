"""Training and evaluation engine: trainer, checkpoints, loggers, evaluation loop.

Example::

    from bpbreid.config import load_config
    from bpbreid.engine import Trainer, load_checkpoint

    state = Trainer(load_config("synthetic_cpu")).fit()
    model, cfg, state = load_checkpoint("outputs/synthetic_cpu/model.pth")

Importing this package loads PyTorch; the commands (:mod:`bpbreid.cli`) import it inside
``run`` only, so that ``python -m bpbreid --help`` does not.
"""

from bpbreid.engine.checkpoint import (
    LoadedCheckpoint,
    atomic_save,
    load_any_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from bpbreid.engine.distributed import resolve_amp, resolve_device
from bpbreid.engine.evaluation import EvalResult, evaluate
from bpbreid.engine.health import TrainingWarning
from bpbreid.engine.lock import RunLock
from bpbreid.engine.loggers import Logger, build_loggers
from bpbreid.engine.metrics_log import flatten_metrics
from bpbreid.engine.optim import build_optimizer, build_scheduler
from bpbreid.engine.pool import run_parallel
from bpbreid.engine.state import EngineState
from bpbreid.engine.trainer import Trainer
from bpbreid.engine.validation import split_validation

__all__ = [
    "EngineState",
    "EvalResult",
    "LoadedCheckpoint",
    "Logger",
    "RunLock",
    "Trainer",
    "TrainingWarning",
    "atomic_save",
    "build_loggers",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "flatten_metrics",
    "load_any_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "resolve_amp",
    "resolve_device",
    "run_parallel",
    "save_checkpoint",
    "split_validation",
]
