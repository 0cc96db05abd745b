"""Several trainings at once on a CPU: one single-threaded process per configuration.

On a small CPU, separate single-threaded processes use the cores far better than one
multi-threaded run after another (two threads on two cores measured ~16x slower per step,
from oversubscription with the data loader).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from bpbreid.config import Config, ConfigError, config_from_dict, config_to_dict
from bpbreid.errors import BPBReIDError, TrainingError
from bpbreid.paths import resolve_path

from .state import EngineState


def _exit_with_parent(parent: int, interval: float = 2.0) -> None:
    """Stop this process once the process that started it is gone.

    A parent killed by a signal it does not handle (``kill <pid>``, an out-of-memory kill)
    takes no children with it: without this, the trainings would run on, unseen, for many
    minutes and keep writing into the run folders. Checkpoints are written atomically, so
    stopping at any moment loses nothing saved.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _train_in_process(
    cfg_dict: dict[str, Any], threads: int, resume: bool, parent: int | None = None
) -> dict[str, Any]:
    """One training in a spawned process; returns its state (without RNG) as a dict."""
    # Imported here, in the worker: bpbreid.engine.trainer re-exports run_parallel.
    from .trainer import Trainer

    if parent is not None:
        _exit_with_parent(parent)

    cfg = config_from_dict(cfg_dict)
    cfg.train.threads = threads
    torch.set_num_threads(threads)
    state = Trainer(cfg, progress=False, log_prefix=cfg.name).fit(resume=resume)
    return state.without_rng().to_dict()


def _prepare_datasets(configs: Sequence[Config]) -> None:
    """Generate each synthetic dataset once, before the processes start.

    Several processes generating the same (cached) dataset at once would race on its files.
    """
    from bpbreid.data.datasets import build_dataset_from_config

    seen: set[str] = set()
    for cfg in configs:
        key = repr(config_to_dict(cfg)["data"])
        if cfg.data.name == "synthetic" and key not in seen:
            seen.add(key)
            build_dataset_from_config(cfg)


def run_parallel(
    configs: Sequence[Config],
    processes: int | None = None,
    threads: int = 1,
    resume: bool = False,
) -> list[EngineState]:
    """Train several configurations at once, one single-threaded process each.

    Processes are started with ``spawn`` (safe in notebooks and on every OS).

    Args:
        configs: the runs; give each its own ``train.output_dir``.
        processes: how many run at once (default: one per config, at most the CPU count).
        threads: intra-op threads per process.
        resume: continue each run from its ``last.pth``.

    Returns:
        The final :class:`EngineState` of each run, in the order of ``configs``.

    Raises:
        TrainingError: a run failed (names the run and the reason).
    """
    dirs = [str(resolve_path(c.train.output_dir)) for c in configs]
    if len(set(dirs)) != len(dirs):
        raise ConfigError(
            "run_parallel: the configurations share a train.output_dir; give each run its own."
        )
    _prepare_datasets(configs)
    workers = processes or max(1, min(len(configs), os.cpu_count() or 1))
    context = multiprocessing.get_context("spawn")
    states: list[EngineState] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [
            pool.submit(_train_in_process, config_to_dict(cfg), threads, resume, os.getpid())
            for cfg in configs
        ]
        for cfg, future in zip(configs, futures):
            try:
                states.append(EngineState.from_dict(future.result()))
            except (BPBReIDError, ConfigError) as exc:
                pool.shutdown(wait=False, cancel_futures=True)  # runs not started yet
                # The child's message is complete; its stack would only repeat the trainer's.
                raise TrainingError(f"Run '{cfg.name}' failed: {exc}") from None
    return states
