"""The demo's schedule and its time estimate (pure functions: no training)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bpbreid.demo import RELATIVE_STEP_COST, TimeEstimate, longest_first, schedule_seconds


def _configs(steps: dict[str, int]) -> dict[str, SimpleNamespace]:
    return {n: SimpleNamespace(train=SimpleNamespace(max_steps=s)) for n, s in steps.items()}


def test_the_longest_training_starts_first():
    configs = _configs({"global": 1500, "global_id": 1500, "bpbreid": 1500, "global_pixel": 1500})
    order = longest_first(configs)
    assert order[0] == "bpbreid"
    costs = [RELATIVE_STEP_COST[n] for n in order]
    assert costs == sorted(costs, reverse=True)


def test_longest_first_shortens_the_two_process_schedule():
    # Seconds of each training alone (bpbreid the slowest): in the old order bpbreid and
    # global start, and global_pixel starts last on the core bpbreid frees.
    seconds = {"bpbreid": 457.0, "global": 331.0, "global_id": 291.0, "global_pixel": 356.0}
    in_order = schedule_seconds(dict(seconds), [], processes=2)
    lpt = schedule_seconds(
        {n: seconds[n] for n in longest_first(_configs(dict.fromkeys(seconds, 1)))}, [], 2
    )
    assert in_order == pytest.approx(457 + 356)
    assert lpt == pytest.approx(457 + 291)  # bpbreid + global_id | global_pixel + global
    assert lpt < in_order


def test_schedule_counts_running_trainings_first():
    # Two running (10 s and 30 s left), one queued (15 s): it starts when the first frees.
    assert schedule_seconds({"a": 10.0, "b": 30.0, "c": 15.0}, ["a", "b"], 2) == 30.0
    assert schedule_seconds({"a": 10.0, "b": 30.0, "c": 25.0}, ["a", "b"], 2) == 35.0
    assert schedule_seconds({"a": 10.0}, [], 2) == 10.0


def test_estimate_comes_from_the_measured_speed():
    configs = _configs({"bpbreid": 100, "global": 100})
    estimate = TimeEstimate(configs, ["bpbreid", "global"], processes=2)
    assert not estimate.measured
    estimate.update(0.0, {"bpbreid": 10, "global": 10})  # first sighting after warm-up
    estimate.update(20.0, {"bpbreid": 30, "global": 40})  # 1.0 and 0.667 s per step
    assert estimate.measured
    assert estimate.seconds_per_step["bpbreid"] == pytest.approx(1.0)
    assert estimate.seconds_per_step["global"] == pytest.approx(20 / 30)
    left = estimate.remaining_seconds({"bpbreid": 30, "global": 40})
    training = max(70 * 1.0, 60 * 20 / 30)
    assert left == pytest.approx(training + estimate.after_training())


def test_a_queued_training_is_priced_from_the_running_ones():
    configs = _configs({"bpbreid": 100, "global_id": 100})
    estimate = TimeEstimate(configs, ["bpbreid", "global_id"], processes=1)
    estimate.update(0.0, {"bpbreid": 10, "global_id": 0})
    estimate.update(30.0, {"bpbreid": 40, "global_id": 0})  # 1 s per bpbreid step
    left = estimate.remaining_seconds({"bpbreid": 40, "global_id": 0})
    expected = 60 * 1.0 + 100 * RELATIVE_STEP_COST["global_id"] + estimate.after_training()
    assert left == pytest.approx(expected)
