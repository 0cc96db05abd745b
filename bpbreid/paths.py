"""Where the repository is, how many threads a process uses, and how runs are seeded.

Library code (datasets, the trainer) needs these as much as the notebooks do; they live
here so that no library module imports the notebook harness (:mod:`bpbreid.notebook`
re-exports them for the notebooks).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

REPO_OWNER = "bpbreid-course"
REPO_NAME = "bpbreid"
REPO_BRANCH = "main"
REPO_URL = f"https://github.com/{REPO_OWNER}/{REPO_NAME}"
COLAB_ROOT = Path("/content") / REPO_NAME
ROOT_ENV = "BPBREID_ROOT"


def find_repo_root(start: str | Path | None = None) -> Path:
    """The repository root: ``$BPBREID_ROOT``, else the folder above the package when it is a
    checkout (editable install), else the first parent of ``start`` (default: the working
    directory) holding ``pyproject.toml`` and ``bpbreid/``, else Colab's clone, else ``start``.
    """
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser().resolve()
    package_parent = Path(__file__).resolve().parent.parent
    if _is_repo(package_parent):
        return package_parent
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if _is_repo(candidate):
            return candidate
    if COLAB_ROOT.exists():
        return COLAB_ROOT
    return here


def _is_repo(path: Path) -> bool:
    return (path / "pyproject.toml").is_file() and (path / "bpbreid").is_dir()


def resolve_path(path: str | Path) -> Path:
    """``path`` as given when absolute, else relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else find_repo_root() / p


def display_path(path: str | Path) -> str:
    """``path`` as printed for people: relative to the repository root when inside it.

    Printed paths then read the same on every machine (``data/synthetic/small_s0_64x32``,
    not a home folder), and executed notebooks carry no absolute paths of the machine
    that ran them. Paths outside the repository are printed as given.
    """
    p = Path(path).expanduser()
    try:
        relative = p.resolve().relative_to(find_repo_root().resolve())
    except ValueError:
        return str(p)
    return relative.as_posix() or "."


def thread_policy(cpu_count: int | None = None) -> int:
    """Intra-op threads for one training process.

    On small CPUs one thread per process is fastest (two threads on two cores measured
    ~16x slower per step, from oversubscription with the data loader); larger machines
    get up to 8.
    """
    cores = cpu_count or os.cpu_count() or 1
    return 1 if cores <= 2 else min(cores, 8)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's global generator and PyTorch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (the global RNG that libraries use)
    torch.manual_seed(seed)
