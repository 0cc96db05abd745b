"""The training loader as the trainer needs it: seeded workers, resumable randomness.

Building the loaders is :func:`bpbreid.data.datasets.build_loaders`'s job; this module
adjusts a given training loader so that resumed and repeated runs draw the same batches and
augmentations, and counts its identities.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from bpbreid.config import ConfigError


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: NumPy/Python seeds from the worker's torch seed.

    PyTorch seeds each worker's torch RNG from the loader's generator; NumPy and Python
    (used by the augmentations) follow it, so resumed and repeated runs draw the same.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002
    random.seed(seed)


def tune_train_loader(loader: Any, deterministic: bool) -> Any:
    """Seeded workers; in deterministic mode, fresh workers each epoch.

    Persistent workers keep their augmentation RNG across epochs, which a resumed run
    cannot restore; deterministic runs restart them (a little slower) so that resuming
    gives exactly the uninterrupted run. A loader without workers, or one already set up
    this way, is returned as it is.
    """
    if not isinstance(loader, DataLoader) or loader.num_workers == 0:
        return loader
    persistent = loader.persistent_workers and not deterministic
    if loader.worker_init_fn is not None and persistent == loader.persistent_workers:
        return loader
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=loader.sampler,
        drop_last=loader.drop_last,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        persistent_workers=persistent,
        worker_init_fn=loader.worker_init_fn or seed_worker,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
    )


def count_classes(loader: Any) -> int:
    """Training identities of a loader whose dataset lists its ``samples``.

    Raises:
        ConfigError: the dataset does not tell (pass ``num_classes=`` to the trainer).
    """
    # A DataLoader's dataset lists them; the tensor pipeline's loader lists them itself.
    dataset = getattr(loader, "dataset", None)
    samples = getattr(dataset, "samples", None) or getattr(loader, "samples", None)
    if samples:
        return len({int(getattr(s, "pid", s[1] if isinstance(s, tuple) else s)) for s in samples})
    raise ConfigError("Cannot tell the number of training identities: pass num_classes=.")
