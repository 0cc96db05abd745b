"""Metric plots: CMC curves and per-query average-precision histograms (seaborn).

Example::

    from bpbreid.viz.plots import plot_cmc, plot_ap_histogram
    plot_cmc(result)              # an evaluation result, or {"name": cmc array}
    plot_ap_histogram(result)     # per-query AP of every query set
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_ap_histogram", "plot_cmc"]


def _cmc_curves(source: Any) -> dict[str, np.ndarray]:
    """``{name: cmc}`` from a mapping of arrays or an evaluation result (``.metrics``)."""
    metrics = getattr(source, "metrics", None)
    if metrics is not None:
        return {name: np.asarray(m["cmc"]) for name, m in metrics.items()}
    return {name: np.asarray(values) for name, values in source.items()}


def _ap_values(source: Any) -> dict[str, np.ndarray]:
    """``{name: per-query AP}`` (skipped queries dropped) from arrays or a result."""
    details = getattr(source, "details", None)
    if details is not None:
        return {name: d.average_precision[d.valid] for name, d in details.items()}
    return {name: np.asarray(values, dtype=float) for name, values in source.items()}


def _percent(values: np.ndarray) -> np.ndarray:
    """Fractions in [0, 1] become percents; values already in percent stay."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return values * 100.0 if finite.size == 0 or finite.max() <= 1.0 else values


def plot_cmc(
    cmc_by_name: Mapping[str, Any] | Any,
    max_rank: int = 20,
    ax: Axes | None = None,
    title: str = "CMC curve",
) -> Figure:
    """Cumulative matching characteristic: the share of queries matched within rank r.

    Args:
        cmc_by_name: ``{name: cmc array}`` (fractions or percents) or an evaluation result.
        max_rank: last rank drawn.
        ax: draw into this axes (default: a new figure).
        title: axes title.

    Returns:
        The figure.
    """
    import pandas as pd
    import seaborn as sns

    rows = []
    for name, cmc in _cmc_curves(cmc_by_name).items():
        values = _percent(cmc)[:max_rank]
        rows.extend({"rank": r + 1, "matched (%)": v, "set": name} for r, v in enumerate(values))
    frame = pd.DataFrame(rows)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    sns.lineplot(data=frame, x="rank", y="matched (%)", hue="set", marker="o", ax=ax)
    ax.set_xlim(1, max_rank)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return ax.figure


def plot_ap_histogram(
    aps_by_name: Mapping[str, Any] | Any,
    bins: int = 20,
    ax: Axes | None = None,
    title: str = "Average precision per query",
) -> Figure:
    """Histogram of per-query average precision (hard queries sit on the left).

    Args:
        aps_by_name: ``{name: per-query AP}`` (fractions or percents) or an evaluation
            result (skipped queries are left out).
        bins: number of bins over [0, 100] %.
        ax: draw into this axes (default: a new figure).
        title: axes title.

    Returns:
        The figure.
    """
    import pandas as pd
    import seaborn as sns

    rows = []
    for name, values in _ap_values(aps_by_name).items():
        finite = values[np.isfinite(values)]
        rows.extend({"AP (%)": v, "set": name} for v in _percent(finite))
    frame = pd.DataFrame(rows, columns=["AP (%)", "set"])
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    sns.histplot(
        data=frame, x="AP (%)", hue="set", bins=np.linspace(0, 100, bins + 1), ax=ax,
        element="step", stat="count", common_norm=False,
    )  # fmt: skip
    ax.set_xlim(0, 100)
    ax.set_title(title)
    return ax.figure
