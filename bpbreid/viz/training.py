"""Training curves from a run's CSV logs: loss components, learning rate, rank-1/mAP (seaborn).

The ``csv`` logger of the training engine writes two tables into ``train.output_dir``:
``steps.csv`` (one row per optimizer step: every loss component, ``total``, ``lr``,
``img/s``) and ``metrics.csv`` (one row per epoch: the epoch means, and after an evaluation
``test/<query set>/rank1``, ``test/<query set>/mAP``... or ``val/...`` on a validation
split). These functions read them back and draw them.

Example::

    from bpbreid.viz.training import plot_training_curves
    plot_training_curves("outputs/synthetic_cpu")   # losses per step, lr, rank-1/mAP per epoch
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TrainingLogs",
    "evaluation_table",
    "loss_components",
    "loss_table",
    "plot_evaluation",
    "plot_learning_rate",
    "plot_loss_components",
    "plot_resume",
    "plot_training_curves",
    "read_training_logs",
]

METRICS_FILE = "metrics.csv"
STEPS_FILE = "steps.csv"
# Logged columns that are not loss terms: counters, speed, schedule.
NOT_LOSSES = frozenset(
    {"epoch", "step", "total", "lr", "img/s", "data_wait", "time_s", "selected_epoch"}
)
# Statistics of the triplet mining (shares in [0, 1]), logged beside the losses.
MINING_SUFFIXES = ("_valid", "_trivial")
EVALUATION_PREFIXES = ("test/", "val/")


class TrainingLogs(NamedTuple):
    """The two tables of a run (``pandas.DataFrame``; empty when a file has no rows)."""

    metrics: pd.DataFrame  # one row per epoch
    steps: pd.DataFrame  # one row per optimizer step


def read_training_logs(run_dir: str | Path) -> TrainingLogs:
    """Read ``metrics.csv`` and ``steps.csv`` of a training run.

    Args:
        run_dir: the run's ``train.output_dir``.

    Returns:
        :class:`TrainingLogs` (``steps`` is empty when the run has no ``steps.csv``).

    Raises:
        FileNotFoundError: no ``metrics.csv`` in ``run_dir`` (names the path and what to do).
    """
    import pandas as pd

    folder = Path(run_dir)
    metrics_path = folder / METRICS_FILE
    if not metrics_path.is_file():
        raise FileNotFoundError(
            f"{metrics_path} not found: train a run first (python -m bpbreid train ...) with "
            "'csv' in train.loggers; it writes metrics.csv and steps.csv to train.output_dir."
        )
    metrics = _read_csv(metrics_path)
    steps_path = folder / STEPS_FILE
    steps = _read_csv(steps_path) if steps_path.is_file() else pd.DataFrame()
    return TrainingLogs(metrics=metrics, steps=steps)


def _read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:  # a run stopped before its first row
        return pd.DataFrame()


def loss_components(frame: pd.DataFrame) -> list[str]:
    """The loss-term columns of a steps or metrics table, in logged order.

    Everything except the counters, ``total``, the learning rate, the speed figures, the
    triplet-mining shares (``*_valid``, ``*_trivial``) and the evaluation results.
    """
    return [
        str(name)
        for name in frame.columns
        if name not in NOT_LOSSES
        and not str(name).endswith(MINING_SUFFIXES)
        and not str(name).startswith(EVALUATION_PREFIXES)
    ]


def loss_table(
    frame: pd.DataFrame,
    x: str = "step",
    smooth: int = 1,
    components: list[str] | None = None,
) -> pd.DataFrame:
    """Loss components in long format, for seaborn: columns ``[x, "component", "loss"]``.

    Args:
        frame: ``steps.csv`` (``x="step"``) or ``metrics.csv`` (``x="epoch"``).
        x: the column used as time axis.
        smooth: rolling-mean window in rows (1: the raw values).
        components: which columns (default: :func:`loss_components`).
    """
    names = components if components is not None else loss_components(frame)
    values = frame[names].rolling(max(1, int(smooth)), min_periods=1).mean()
    values.insert(0, x, frame[x].to_numpy())
    return values.melt(id_vars=x, var_name="component", value_name="loss")


def evaluation_table(
    metrics: pd.DataFrame, names: tuple[str, ...] = ("rank1", "mAP")
) -> pd.DataFrame:
    """Evaluation results per epoch in long format: ``epoch, split, query_set, metric, value``.

    Reads the ``test/<query set>/<metric>`` and ``val/<query set>/<metric>`` columns of
    ``metrics.csv``; epochs without an evaluation are left out.
    """
    import pandas as pd

    rows = []
    for column in metrics.columns:
        parts = str(column).split("/")
        if len(parts) != 3 or f"{parts[0]}/" not in EVALUATION_PREFIXES or parts[2] not in names:
            continue
        split, query_set, metric = parts
        evaluated = metrics[["epoch", column]].dropna()
        rows.extend(
            {"epoch": int(e), "split": split, "query_set": query_set, "metric": metric, "value": v}
            for e, v in zip(evaluated["epoch"], evaluated[column])
        )
    return pd.DataFrame(rows, columns=["epoch", "split", "query_set", "metric", "value"])


def _auto_smooth(rows: int) -> int:
    """A window that keeps about 40 independent points on the curve."""
    return max(1, rows // 40)


def plot_loss_components(
    frame: pd.DataFrame,
    ax: Axes | None = None,
    x: str = "step",
    smooth: int | None = None,
    title: str = "loss components (unweighted)",
) -> Axes:
    """One line per loss component (identity, triplet, pixel...) against steps or epochs.

    Args:
        frame: ``steps.csv`` or ``metrics.csv`` as a DataFrame.
        ax: draw into this axes (default: a new figure).
        x: ``"step"`` or ``"epoch"``.
        smooth: rolling-mean window in rows (default: about 40 points over the run).
        title: axes title.
    """
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4), layout="constrained")
    window = _auto_smooth(len(frame)) if smooth is None else smooth
    long = loss_table(frame, x=x, smooth=window)
    sns.lineplot(data=long, x=x, y="loss", hue="component", ax=ax)
    suffix = f", mean of {window} {x}s" if window > 1 else ""
    ax.set_title(title + suffix)
    ax.grid(alpha=0.3)
    return ax


def plot_learning_rate(frame: pd.DataFrame, ax: Axes | None = None, x: str = "step") -> Axes:
    """The learning rate against steps (warmup then decay)."""
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.4), layout="constrained")
    sns.lineplot(data=frame, x=x, y="lr", ax=ax, color="tab:gray")
    ax.set_title("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.grid(alpha=0.3)
    return ax


def plot_evaluation(
    metrics: pd.DataFrame,
    ax: Axes | None = None,
    names: tuple[str, ...] = ("rank1", "mAP"),
    title: str = "evaluation",
) -> Axes:
    """Rank-1 and mAP (%) of every evaluated query set against epochs.

    Colour = query set (``val`` sets prefixed), line style and marker = metric.
    """
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4), layout="constrained")
    table = evaluation_table(metrics, names)
    if table.empty:
        ax.text(0.5, 0.5, "no evaluation logged", ha="center", va="center")
        ax.set_axis_off()
        return ax
    table["query set"] = [
        q if s == "test" else f"{s} {q}" for s, q in zip(table["split"], table["query_set"])
    ]
    sns.lineplot(
        data=table, x="epoch", y="value", hue="query set", style="metric", markers=True, ax=ax
    )
    ax.set(ylabel="%", title=title, ylim=(0, 100))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return ax


def plot_training_curves(
    run: str | Path | TrainingLogs,
    smooth: int | None = None,
    figsize: tuple[float, float] = (14, 3.6),
) -> Figure:
    """Three panels: loss components per step, learning rate, rank-1/mAP per epoch.

    Args:
        run: a run folder (``train.output_dir``) or :class:`TrainingLogs`.
        smooth: rolling-mean window of the loss curves (default: automatic).
        figsize: figure size in inches.

    Returns:
        The figure.
    """
    logs = run if isinstance(run, TrainingLogs) else read_training_logs(run)
    # Per-step losses when the steps table exists, else the per-epoch means.
    per_step = not logs.steps.empty
    frame, x = (logs.steps, "step") if per_step else (logs.metrics, "epoch")
    fig, axes = plt.subplots(
        1, 3, figsize=figsize, gridspec_kw={"width_ratios": [3, 1.6, 2.4]}, layout="constrained"
    )
    plot_loss_components(frame, ax=axes[0], x=x, smooth=smooth)
    _legend_outside(axes[0])
    if "lr" in frame.columns:
        plot_learning_rate(frame, ax=axes[1], x=x)
    else:
        axes[1].set_axis_off()
    plot_evaluation(logs.metrics, ax=axes[2])
    if axes[2].get_legend() is not None:
        _legend_outside(axes[2])
    return fig


def _legend_outside(ax: Axes) -> None:
    """Move the legend to the right of the axes (curves stay readable)."""
    import seaborn as sns

    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)


def plot_resume(
    reference: pd.DataFrame,
    resumed: pd.DataFrame,
    checkpoint_step: int,
    interrupted_step: int | None = None,
    column: str = "total",
    ax: Axes | None = None,
) -> Axes:
    """An interrupted-and-resumed run drawn over an uninterrupted one (``steps.csv`` tables).

    Args:
        reference: steps of the run trained in one go.
        resumed: steps of the run that was stopped and continued with ``fit(resume=True)``
            (its CSV logger keeps the rows up to the checkpoint and appends the rest).
        checkpoint_step: the step stored in ``last.pth`` (where the run continued from).
        interrupted_step: where the first process stopped (steps after the checkpoint were
            lost and trained again).
        column: the logged value to draw.
        ax: draw into this axes (default: a new figure).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.4), layout="constrained")
    ax.plot(reference["step"], reference[column], color="0.8", lw=5, label="uninterrupted run")
    before = resumed[resumed["step"] <= checkpoint_step]
    after = resumed[resumed["step"] > checkpoint_step]
    ax.plot(before["step"], before[column], "o", ms=4, color="tab:blue", label="first process")
    ax.plot(after["step"], after[column], "o", ms=4, color="tab:orange", label="after resume")
    ax.axvline(
        checkpoint_step, color="k", ls="--", lw=1, label=f"last.pth (step {checkpoint_step})"
    )
    if interrupted_step is not None:
        ax.axvline(
            interrupted_step,
            color="tab:red",
            ls=":",
            lw=1.5,
            label=f"stopped (step {interrupted_step})",
        )
    ax.set(xlabel="step", ylabel=column, title=f"{column} loss per step: stopped, then resumed")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax
