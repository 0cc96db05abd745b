"""Training loggers behind one small interface.

Every logger has ``log_scalars(step, values)`` (per optimizer step), ``log_epoch(epoch,
metrics)`` (per epoch: mean losses, learning rate, evaluation results) and ``close()``;
``start_epoch(epoch, num_steps)`` is an optional hook (the console bar uses it).
``train.loggers`` picks them by name:

* ``console``: a tqdm bar with the loss components and images/s, one line per epoch;
* ``csv``: ``metrics.csv`` (one row per epoch) and ``steps.csv`` (one row per step) in the
  output folder; rewrites are atomic and a resumed run never logs a row twice;
* ``tensorboard``: optional, needs ``pip install tensorboard`` (imported only when chosen);
* ``wandb``: optional Weights & Biases, needs ``pip install wandb`` (imported only when
  chosen; ``WANDB_MODE=offline`` works without an account).
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from bpbreid.config import ConfigError

from .files import atomic_write_text

LOGGERS = ("console", "csv", "tensorboard", "wandb")


class Logger:
    """Base class: every method is a no-op."""

    def start_epoch(self, epoch: int, num_steps: int) -> None:
        """Called before the first step of ``epoch`` (1-based) with its number of steps."""

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        """Per-step numbers (loss components, learning rate, images/s)."""

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Per-epoch numbers (mean losses, evaluation results)."""

    def close(self) -> None:
        """Flush and release files/bars."""


def _numeric(values: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[key] = float(value)
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            return f"{value:.2e}"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _bar_fields(values: dict[str, float]) -> dict[str, str]:
    """What the progress bar shows: the total loss first, the loss terms, img/s.

    Triplet statistics (``*_valid``, ``*_trivial``) and the learning rate stay in the
    epoch line and the CSV files.
    """
    shown = {}
    if "total" in values:
        shown["loss"] = _fmt(values["total"])
    for key, value in values.items():
        if key in ("total", "step", "lr") or key.endswith(("_valid", "_trivial")):
            continue
        shown[key] = _fmt(value)
    return shown


def _line_fields(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the epoch line shows: losses, lr, speed, and rank-1/mAP of each evaluated set.

    Everything else (triplet statistics, rank-5/10/20, query counts) is in ``metrics.csv``.
    """
    shown = {}
    for key, value in metrics.items():
        if key in ("epoch", "time_s") or key.endswith(("_valid", "_trivial")):
            continue
        evaluated = key.startswith(("val/", "test/"))
        if evaluated and key.rsplit("/", 1)[-1] not in ("rank1", "mAP"):
            continue
        shown[key] = value
    return shown


class ConsoleLogger(Logger):
    """A tqdm progress bar per epoch and a one-line summary after it.

    Args:
        progress: show the bar (off for parallel runs and logs written to files).
        prefix: text before every line (the run name when several runs share a console).
        stream: where to write (default ``sys.stdout``).
        max_epoch: printed as ``epoch 3/120`` when known.
    """

    def __init__(
        self,
        progress: bool = True,
        prefix: str = "",
        stream: TextIO | None = None,
        max_epoch: int | None = None,
    ) -> None:
        self.progress = progress
        self.prefix = f"[{prefix}] " if prefix else ""
        self.stream = stream or sys.stdout
        self.max_epoch = max_epoch
        self._bar: Any = None

    def start_epoch(self, epoch: int, num_steps: int) -> None:
        self._close_bar()
        if not self.progress:
            return
        from tqdm.auto import tqdm

        total = f"/{self.max_epoch}" if self.max_epoch else ""
        self._bar = tqdm(
            total=num_steps,
            desc=f"{self.prefix}epoch {epoch}{total}",
            leave=False,
            file=self.stream,
            dynamic_ncols=True,
        )

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        self._bar.set_postfix(_bar_fields(values), refresh=False)

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        self._close_bar()
        total = f"/{self.max_epoch}" if self.max_epoch else ""
        parts = [f"{k} {_fmt(v)}" for k, v in _line_fields(metrics).items()]
        # The console logger's own output (its stream, stdout by default), not a diagnostic.
        print(f"{self.prefix}epoch {epoch}{total} | " + " | ".join(parts), file=self.stream)
        self.stream.flush()

    def close(self) -> None:
        self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _CsvTable:
    """A CSV file with one row per ``key`` value (step or epoch), safe against kills.

    The header grows when new keys appear; the file is then rewritten (files are small).
    Every rewrite is atomic (temporary file, fsync, rename): a process killed while the
    history is rewritten leaves the previous file, never an empty one. Plain rows are
    appended and flushed one by one.

    Rows are idempotent: logging a ``key`` value that is already in the table (a resumed
    run repeating its last epoch) replaces that row and drops any after it, so no row is
    ever there twice.

    Args:
        path: the CSV file.
        key: the column that orders the rows (``"step"`` or ``"epoch"``).
        keep_up_to: when resuming, keep the existing rows with ``key <= keep_up_to`` (the
            ones the checkpoint has seen); ``None`` starts a new, empty table.
    """

    def __init__(self, path: Path, key: str, keep_up_to: int | float | None) -> None:
        self.path = path
        self.key = key
        self.fieldnames: list[str] = []
        self.rows: list[dict[str, Any]] = []
        if path.is_file() and keep_up_to is not None:
            # A resumed run continues the table: rows logged after its checkpoint are dropped.
            self.fieldnames, rows = _read_rows(path)
            for row in rows:
                value = self._value(row)
                if value is not None and value <= keep_up_to:
                    self._add(row, value)
        self._rewrite()

    def _value(self, row: dict[str, Any]) -> float | None:
        try:
            value = float(row.get(self.key))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return None if math.isnan(value) else value

    def _before(self, row: dict[str, Any], value: float) -> bool:
        own = self._value(row)
        return own is None or own < value

    def _add(self, row: dict[str, Any], value: float) -> bool:
        """Add ``row`` in memory; True when rows at or after its ``key`` were replaced."""
        last = self._value(self.rows[-1]) if self.rows else None
        replaced = last is not None and value <= last
        if replaced:
            self.rows = [r for r in self.rows if self._before(r, value)]
        self.rows.append(row)
        return replaced

    def append(self, row: dict[str, Any]) -> None:
        new = [k for k in row if k not in self.fieldnames]
        value = self._value(row)
        if value is None:
            self.rows.append(row)
            replaced = False
        else:
            replaced = self._add(row, value)
        if new or replaced:
            self.fieldnames.extend(new)
            self._rewrite()
            return
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.fieldnames).writerow(row)
            handle.flush()

    def _rewrite(self) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=self.fieldnames)
        if self.fieldnames:
            writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and complete rows of a CSV file.

    A row with fewer fields than the header is the last line of a run killed mid-append
    (every rewrite gives each row every column): it is left out.
    """
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fieldnames = list(reader.fieldnames or [])
        rows = [row for row in reader if None not in row.values() and None not in row]
    return fieldnames, rows


class CSVLogger(Logger):
    """``metrics.csv`` (per epoch) and ``steps.csv`` (per step) in ``output_dir``.

    Args:
        output_dir: the run's folder.
        resume_step: when resuming, keep the existing rows up to this step (and the epoch
            rows up to the matching epoch) instead of starting new files.
        resume_epoch: epoch of the resumed checkpoint.
        step_every: write one step row every this many steps.
    """

    def __init__(
        self,
        output_dir: str | Path,
        resume_step: int | None = None,
        resume_epoch: int | None = None,
        step_every: int = 1,
    ) -> None:
        folder = Path(output_dir)
        self.metrics = _CsvTable(folder / "metrics.csv", "epoch", resume_epoch)
        self.steps = _CsvTable(folder / "steps.csv", "step", resume_step)
        self.step_every = max(1, step_every)

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        if step % self.step_every == 0:
            self.steps.append({"step": step, **_numeric(values)})

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.metrics.append({"epoch": epoch, **{k: v for k, v in metrics.items() if k != "epoch"}})


class TensorBoardLogger(Logger):
    """TensorBoard event files in ``<output_dir>/tensorboard`` (optional dependency)."""

    def __init__(self, output_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(
                "train.loggers includes 'tensorboard' but the tensorboard package is not "
                "installed: `pip install tensorboard` (or `pip install bpbreid[tensorboard]`), "
                "or remove 'tensorboard' from train.loggers."
            ) from exc  # a broken install shows why
        self.writer = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in _numeric(values).items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        for key, value in _numeric(metrics).items():
            self.writer.add_scalar(f"epoch/{key}", value, epoch)

    def close(self) -> None:
        self.writer.close()


class WandbLogger(Logger):
    """A Weights & Biases run (optional dependency).

    Without an account or network, set ``WANDB_MODE=offline`` (logs stay on disk and can be
    synced later with ``wandb sync``).
    """

    def __init__(self, output_dir: str | Path, name: str, config: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise ConfigError(
                "train.loggers includes 'wandb' but the wandb package is not installed: "
                "`pip install wandb` (or `pip install bpbreid[wandb]`), or remove 'wandb' "
                "from train.loggers."
            ) from exc  # a broken install shows why
        self._wandb = wandb
        self.run = wandb.init(project="bpbreid", name=name, config=config, dir=str(output_dir))

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log({f"train/{k}": v for k, v in _numeric(values).items()}, step=step)

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        step = int(metrics.get("step", 0))
        self.run.log({f"epoch/{k}": v for k, v in _numeric(metrics).items()}, step=step)

    def close(self) -> None:
        self.run.finish()


class MultiLogger(Logger):
    """Forwards every call to several loggers."""

    def __init__(self, loggers: Iterable[Logger]) -> None:
        self.loggers = list(loggers)

    def start_epoch(self, epoch: int, num_steps: int) -> None:
        for logger in self.loggers:
            logger.start_epoch(epoch, num_steps)

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log_scalars(step, values)

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_epoch(epoch, metrics)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def build_loggers(
    names: Iterable[str],
    output_dir: str | Path,
    *,
    run_name: str = "bpbreid",
    config: dict[str, Any] | None = None,
    progress: bool = True,
    prefix: str = "",
    max_epoch: int | None = None,
    resume_step: int | None = None,
    resume_epoch: int | None = None,
) -> MultiLogger:
    """The loggers named in ``train.loggers``.

    Raises:
        ConfigError: an unknown name, or an optional logger whose package is missing.
    """
    loggers: list[Logger] = []
    for name in names:
        key = name.lower()
        if key == "console":
            loggers.append(ConsoleLogger(progress=progress, prefix=prefix, max_epoch=max_epoch))
        elif key == "csv":
            loggers.append(
                CSVLogger(output_dir, resume_step=resume_step, resume_epoch=resume_epoch)
            )
        elif key == "tensorboard":
            loggers.append(TensorBoardLogger(output_dir))
        elif key == "wandb":
            loggers.append(WandbLogger(output_dir, run_name, config or {}))
        else:
            raise ConfigError(
                f"Unknown logger '{name}' in train.loggers. Valid: {', '.join(LOGGERS)}."
            )
    return MultiLogger(loggers)
