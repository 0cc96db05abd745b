"""The notebook harness: one call in every notebook's setup cell.

``setup()`` detects Colab, prints versions, picks the device, applies the thread policy,
resolves the repository paths whatever the working directory, seeds the RNGs and sets the
run mode:

* ``FAST`` under tests (``BPBREID_MODE=FAST``, set by ``make test``): <= 90 s per notebook;
* ``CPU`` for a reader without a GPU: a few minutes;
* ``CUDA`` with a GPU: the larger configuration.

Example (the first code cell of every notebook)::

    from bpbreid.notebook import setup
    env = setup()
    steps = env.pick(fast=20, cpu=300, cuda=3000)
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bpbreid.paths import (  # noqa: F401  (re-exported for the notebooks)
    COLAB_ROOT,
    REPO_BRANCH,
    REPO_NAME,
    REPO_OWNER,
    REPO_URL,
    ROOT_ENV,
    display_path,
    find_repo_root,
    seed_everything,
    thread_policy,
)

T = TypeVar("T")

# The repository, defined once: Colab badges and the Colab install point here.
MODES = ("FAST", "CPU", "CUDA")
MODE_ENV = "BPBREID_MODE"


def colab_url(notebook: str) -> str:
    """The Colab address of ``notebooks/<notebook>`` on the default branch."""
    name = Path(notebook).name
    return (
        f"https://colab.research.google.com/github/{REPO_OWNER}/{REPO_NAME}"
        f"/blob/{REPO_BRANCH}/notebooks/{name}"
    )


def colab_badge(notebook: str) -> str:
    """Markdown for the 'Open in Colab' badge of a notebook."""
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(notebook)})"
    )


def in_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def detect_mode(cuda_available: bool | None = None) -> str:
    """``$BPBREID_MODE`` if set (FAST/CPU/CUDA), else CUDA with a GPU, else CPU."""
    forced = os.environ.get(MODE_ENV, "").strip().upper()
    if forced:
        if forced not in MODES:
            raise ValueError(f"{MODE_ENV}={forced!r} is not one of {', '.join(MODES)}.")
        return forced
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    return "CUDA" if cuda_available else "CPU"


@dataclass
class NotebookEnv:
    """What the setup cell returns: mode, device and paths."""

    mode: str
    device: str
    root: Path
    data_dir: Path
    output_dir: Path
    checkpoint_dir: Path
    colab: bool
    threads: int
    seed: int
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def fast(self) -> bool:
        return self.mode == "FAST"

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def pick(self, fast: T, cpu: T, cuda: T | None = None) -> T:
        """The value for the current mode (``cuda`` defaults to ``cpu``)."""
        if self.mode == "FAST":
            return fast
        if self.mode == "CUDA" and cuda is not None:
            return cuda
        return cpu

    def summary(self) -> str:
        lines = [f"mode={self.mode} device={self.device} threads={self.threads} seed={self.seed}"]
        folders = ", ".join(display_path(p) for p in (self.data_dir, self.output_dir))
        lines.append(f"folders (from the repository root): {folders}")
        lines.append(" | ".join(f"{k} {v}" for k, v in self.versions.items()))
        return "\n".join(lines)


def package_versions(names: tuple[str, ...] | None = None) -> dict[str, str]:
    names = names or ("python", "bpbreid", "torch", "torchvision", "albumentations", "numpy")
    out: dict[str, str] = {}
    for name in names:
        if name == "python":
            out[name] = platform.python_version()
            continue
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def setup(seed: int = 0, mode: str | None = None, verbose: bool = True) -> NotebookEnv:
    """Prepare a notebook run and return its :class:`NotebookEnv`.

    Args:
        seed: seeds Python, NumPy and PyTorch.
        mode: force FAST/CPU/CUDA (default: ``$BPBREID_MODE``, else by hardware).
        verbose: print the summary (mode, device, versions).
    """
    import torch

    colab = in_colab()
    cuda = torch.cuda.is_available()
    chosen = (mode or detect_mode(cuda)).upper()
    if chosen not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(MODES)}.")
    if chosen == "CUDA" and not cuda:
        print("CUDA mode asked for but no GPU is visible: using CPU mode.")
        chosen = "CPU"
    device = "cuda" if cuda and chosen != "FAST" else "cpu"

    threads = thread_policy() if device == "cpu" else max(1, min(os.cpu_count() or 1, 8))
    torch.set_num_threads(threads)
    if cuda:
        # Stated explicitly: TF32 matmuls on Ampere+ (a large speed-up, ~1e-3 relative error).
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    root = find_repo_root()
    env = NotebookEnv(
        mode=chosen,
        device=device,
        root=root,
        data_dir=root / "data",
        output_dir=root / "outputs",
        checkpoint_dir=root / "outputs" / "checkpoints",
        colab=colab,
        threads=threads,
        seed=seed,
        versions=package_versions(),
    )
    for path in (env.data_dir, env.output_dir, env.checkpoint_dir):
        path.mkdir(parents=True, exist_ok=True)
    if device.startswith("cuda"):
        env.versions["gpu"] = torch.cuda.get_device_name(0)
    seed_everything(seed)
    _style_plots()
    if verbose:
        print(env.summary())
    return env


# The course's one figure style, set by ``setup()``: 100 dpi PNGs (labels at 9-11 pt are 12-15 px
# tall), one sequential colormap for scores and maps, one size scale for text.
FIGURE_STYLE: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.figsize": (7.0, 4.0),
    "figure.max_open_warning": 0,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 12,
    "image.cmap": "viridis",
    "axes.grid": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _style_plots() -> None:
    """Apply :data:`FIGURE_STYLE` so every notebook's figures look alike."""
    try:
        import matplotlib as mpl
    except ImportError:  # pragma: no cover
        return
    mpl.rcParams.update(FIGURE_STYLE)


# What JupyterLab writes when it saves a notebook: committed notebooks carry exactly this, so that
# opening and saving one leaves no diff.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# Cell metadata that changes on every run (nbclient's and the ExecuteTime extension's timestamps).
VOLATILE_CELL_METADATA = ("execution", "ExecuteTime")
# Notebook metadata that changes on every run: widget state (model ids, a copy of every output).
VOLATILE_NOTEBOOK_METADATA = ("widgets",)


def clean_notebook(nb: Any) -> Any:
    """Strip volatile metadata from an ``nbformat`` notebook, in place; returns it.

    Removes execution timestamps from cell metadata and saved widget state, and sets the kernelspec
    JupyterLab writes. Outputs and execution counts stay as executed.
    """
    for key in VOLATILE_NOTEBOOK_METADATA:
        nb.metadata.pop(key, None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
    return nb


def clean_notebook_file(path: str | Path) -> bool:
    """Clean ``path`` in place, written as JupyterLab writes it; returns True if it changed."""
    import nbformat

    path = Path(path)
    before = path.read_text(encoding="utf-8")
    nb = clean_notebook(nbformat.reads(before, as_version=4))
    after = nbformat.writes(nb)
    after = after if after.endswith("\n") else after + "\n"
    if after == before:
        return False
    path.write_text(after, encoding="utf-8")
    return True


def describe(value: Any) -> str:
    """A one-line description of a tensor/array (shape, dtype, range) for notebook prints."""
    shape = tuple(getattr(value, "shape", ()))
    dtype = getattr(value, "dtype", type(value).__name__)
    try:
        lo, hi = float(value.min()), float(value.max())
        return f"shape={list(shape)} dtype={dtype} range=[{lo:.3g}, {hi:.3g}]"
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return f"shape={list(shape)} dtype={dtype}"


def main(argv: list[str] | None = None) -> int:
    """``python -m bpbreid.notebook clean [NOTEBOOK ...]``: strip volatile metadata in place."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bpbreid.notebook")
    sub = parser.add_subparsers(dest="command", required=True)
    clean = sub.add_parser("clean", help="strip timestamps, widget state; set the kernelspec")
    clean.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/**/*.ipynb")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((find_repo_root() / "notebooks").rglob("*.ipynb"))
    paths = [p for p in paths if ".ipynb_checkpoints" not in p.parts]
    changed = [p for p in paths if clean_notebook_file(p)]
    for path in changed:
        print(f"cleaned {display_path(path)}")
    print(f"{len(changed)} of {len(paths)} notebooks changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
