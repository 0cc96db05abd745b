"""An interactive ranking browser for notebooks (ipywidgets).

Example (in JupyterLab or Colab)::

    from bpbreid.viz.browser import ranking_browser
    ranking_browser(result)       # pick a query, a part, the number of matches

Importing this module needs no display; widgets are built when the function is called.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from bpbreid.viz.ranking import plot_ranking, ranking_items, select_queries

__all__ = ["RankingBrowser", "ranking_browser"]

ALL_PARTS = "all parts"


class RankingBrowser:
    """Widgets that redraw a ranking figure: query, part and top-k selectors.

    Attributes:
        query, part, topk: the selector widgets.
        output: the ``Output`` widget holding the figure.
        widget: the whole browser (display it).
        figure: the last figure drawn.

    ``dpi`` defaults to the active style's ``figure.dpi``, as every other figure of a notebook.
    """

    def __init__(
        self,
        result: Any,
        set_name: str = "query",
        topk: int = 5,
        order: str = "worst",
        max_queries: int = 200,
        dpi: float | None = None,
    ) -> None:
        import ipywidgets as widgets

        self.result = result
        self.set_name = set_name
        self.dpi = dpi
        self.figure = None
        details = result.details[set_name]
        n_queries = len(result.queries[set_name]["pids"])
        if order in ("worst", "best", "random"):
            indices = select_queries(result, order, min(max_queries, n_queries), set_name)
        else:
            indices = list(range(min(max_queries, n_queries)))
        pids = result.queries[set_name]["pids"]
        options = []
        for i in indices:
            ap = details.average_precision[i]
            ap_text = "no match" if np.isnan(ap) else f"AP {100 * ap:.0f}%"
            options.append((f"#{i} | id {int(pids[i])} | {ap_text}", i))
        names = list(result.embedding_names)
        part_options = [(ALL_PARTS, -1)] + [
            (name.removeprefix("bn_").removesuffix("_mask"), i) for i, name in enumerate(names)
        ]
        self.query = widgets.Dropdown(options=options, description="query")
        self.part = widgets.Dropdown(options=part_options, value=-1, description="part")
        self.topk = widgets.IntSlider(value=topk, min=1, max=20, description="top-k")
        self.output = widgets.Output()
        for control in (self.query, self.part, self.topk):
            control.observe(self._changed, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.query, self.part, self.topk]), self.output])
        self.redraw()

    def _changed(self, _change: Any) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Draw the figure for the current selection into the output widget."""
        if self.query.value is None:
            return
        query, items = ranking_items(self.result, self.query.value, self.topk.value, self.set_name)
        columns = None if self.part.value == -1 else [self.part.value]
        if self.figure is not None:
            plt.close(self.figure)
        self.figure = plot_ranking(
            query, items, self.result.embedding_names, columns=columns, dpi=self.dpi
        )
        self.output.clear_output(wait=True)
        with self.output:
            from IPython.display import display

            display(self.figure)
        # The figure is shown through the widget only, not again by the notebook's backend.
        plt.close(self.figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def ranking_browser(
    result: Any, set_name: str = "query", topk: int = 5, order: str = "worst"
) -> RankingBrowser:
    """A browser over the rankings of an evaluation (worst queries first by default).

    Args:
        result: an evaluation result (:class:`bpbreid.engine.evaluation.EvalResult`).
        set_name: query set.
        topk: gallery matches shown at first.
        order: ``"worst"``, ``"best"``, ``"random"`` or ``"index"`` (query order).

    Returns:
        A :class:`RankingBrowser` (it displays itself as the last value of a cell).
    """
    return RankingBrowser(result, set_name=set_name, topk=topk, order=order)
