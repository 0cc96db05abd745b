"""Tests of the training-curve plots (bpbreid.viz.training) on logs written by the CSV logger."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from bpbreid.engine.loggers import CSVLogger  # noqa: E402
from bpbreid.viz.training import (  # noqa: E402
    evaluation_table,
    loss_components,
    loss_table,
    plot_evaluation,
    plot_resume,
    plot_training_curves,
    read_training_logs,
)

COMPONENTS = ["global_id", "foreground_id", "parts_tr", "pixel"]


def write_run(folder, epochs: int = 4, steps_per_epoch: int = 3, eval_every: int = 2) -> None:
    """A run's logs as the engine writes them: random losses, evaluations every few epochs."""
    rng = np.random.default_rng(0)
    logger = CSVLogger(folder)
    step = 0
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            step += 1
            values = {name: float(rng.uniform(1, 5)) for name in COMPONENTS}
            values["total"] = sum(values.values())
            values.update(
                parts_tr_valid=1.0, parts_tr_trivial=0.2, lr=1e-3 / step, **{"img/s": 9.0}
            )
            logger.log_scalars(step, values)
        row = {"epoch": epoch, "step": step, "pixel": 1.0, "total": 4.0, "lr": 1e-4, "time_s": 1.0}
        if epoch % eval_every == 0:
            row.update(
                {
                    "test/query/rank1": 10.0 * epoch,
                    "test/query/mAP": 5.0 * epoch,
                    "test/query/num_queries": 8.0,
                    "val/query/rank1": 1.0 * epoch,
                }
            )
        logger.log_epoch(epoch, row)
    logger.close()


def test_reads_the_engine_logs_and_finds_the_loss_components(tmp_path):
    write_run(tmp_path, epochs=4, steps_per_epoch=3)
    logs = read_training_logs(tmp_path)
    assert len(logs.steps) == 12 and len(logs.metrics) == 4
    # Counters, total, lr, speed and the mining shares are not loss terms.
    assert loss_components(logs.steps) == COMPONENTS
    assert loss_components(logs.metrics) == ["pixel"]


def test_missing_logs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        read_training_logs(tmp_path / "nowhere")


def test_evaluation_table_keeps_evaluated_epochs_and_chosen_metrics(tmp_path):
    write_run(tmp_path, epochs=6, eval_every=3)
    table = evaluation_table(read_training_logs(tmp_path).metrics)
    test_rank1 = table[(table.split == "test") & (table.metric == "rank1")]
    assert test_rank1.epoch.tolist() == [3, 6]
    assert test_rank1.value.tolist() == [30.0, 60.0]
    assert set(table.metric) == {"rank1", "mAP"}  # num_queries left out
    assert set(table.split) == {"test", "val"}
    only_map = evaluation_table(read_training_logs(tmp_path).metrics, names=("mAP",))
    assert set(only_map.metric) == {"mAP"} and len(only_map) == 2


def test_loss_table_smooths_with_a_rolling_mean(tmp_path):
    write_run(tmp_path)
    steps = read_training_logs(tmp_path).steps
    raw = loss_table(steps, smooth=1)
    assert len(raw) == len(steps) * len(COMPONENTS)
    pixel = raw[raw.component == "pixel"].loss.to_numpy()
    np.testing.assert_allclose(pixel, steps.pixel.to_numpy())
    smooth = loss_table(steps, smooth=3)
    smooth_pixel = smooth[smooth.component == "pixel"].loss.to_numpy()
    expected = steps.pixel.rolling(3, min_periods=1).mean().to_numpy()
    np.testing.assert_allclose(smooth_pixel, expected)
    assert smooth_pixel.std() < pixel.std()


def test_training_curves_draw_every_component_and_query_set(tmp_path):
    write_run(tmp_path)
    fig = plot_training_curves(tmp_path, smooth=1)
    loss_ax, lr_ax, eval_ax = fig.axes[:3]
    legend = [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert all(name in legend for name in COMPONENTS)
    assert "total" not in legend and "lr" not in legend
    assert lr_ax.get_ylabel() == "lr"
    eval_legend = [t.get_text() for t in eval_ax.get_legend().get_texts()]
    assert "query" in eval_legend and "val query" in eval_legend
    plt.close(fig)


def test_evaluation_panel_says_when_nothing_was_evaluated():
    metrics = pd.DataFrame({"epoch": [1, 2], "total": [3.0, 2.0]})
    ax = plot_evaluation(metrics)
    assert any("no evaluation" in t.get_text() for t in ax.texts)
    plt.close(ax.figure)


def test_resume_plot_splits_the_run_at_the_checkpoint():
    reference = pd.DataFrame({"step": range(1, 11), "total": np.linspace(5, 1, 10)})
    ax = plot_resume(reference, reference.copy(), checkpoint_step=6, interrupted_step=8)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["first process"].get_xdata()) == [1, 2, 3, 4, 5, 6]
    assert list(lines["after resume"].get_xdata()) == [7, 8, 9, 10]
    assert list(lines["last.pth (step 6)"].get_xdata()) == [6, 6]
    assert "stopped (step 8)" in lines
    plt.close(ax.figure)
