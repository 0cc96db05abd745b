"""Signs that a training ran away although its loss stayed finite.

A learning rate far too high (``train.lr=1e6``) need not produce a NaN: the loss can climb
to 1e14 and the weights to 1e31 while every number stays finite, and the run would end with
exit code 0 and a useless model. At the end of a run the trainer compares the recent loss
with the loss of the first step and looks at the largest weight; either one far out of
range gives a :class:`TrainingWarning`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import torch

# The recent loss (median of the last steps, so one bad batch does not count) must exceed
# the first step's loss this many times. A re-id loss starts at a few units (log of the
# number of identities, per term) and only goes down in a healthy run.
RUNAWAY_LOSS_FACTOR = 100.0
# Losses below this count as this much when scaled by the factor: a loss that starts near
# zero (a fine-tuned model) may rise tenfold without anything being wrong.
RUNAWAY_LOSS_FLOOR = 1.0
# Weights of a trained network (normalised layers, weight decay) stay within a few units;
# BatchNorm running variances may reach thousands. A million is beyond any of them.
RUNAWAY_WEIGHT_LIMIT = 1e6
# How many recent steps the loss median covers.
RECENT_STEPS = 20


class TrainingWarning(UserWarning):
    """A training ended, but what it produced is probably useless (see the message)."""


def largest_weight(weights: Mapping[str, torch.Tensor]) -> tuple[str, float]:
    """The floating-point tensor with the largest absolute value, and that value."""
    name, largest = "", 0.0
    for key, value in weights.items():
        if (
            not isinstance(value, torch.Tensor)
            or not value.is_floating_point()
            or not value.numel()
        ):
            continue
        peak = float(value.detach().abs().max())
        if peak > largest:
            name, largest = key, peak
    return name, largest


def runaway_findings(
    first_loss: float | None,
    recent_losses: Sequence[float],
    weights: Mapping[str, torch.Tensor],
) -> list[str]:
    """What looks like a run-away training; empty when nothing does.

    Args:
        first_loss: the loss of the run's first step (``None`` when unknown).
        recent_losses: the losses of the last steps (their median is compared).
        weights: the model's ``state_dict``.

    Returns:
        Sentences such as ``"the loss rose from 31.5 (first step) to 1.2e+14 (median of
        the last 20 steps)"``.
    """
    findings = []
    if first_loss is not None and recent_losses:
        recent = statistics.median(recent_losses)
        if recent > RUNAWAY_LOSS_FACTOR * max(first_loss, RUNAWAY_LOSS_FLOOR):
            findings.append(
                f"the loss rose from {first_loss:.4g} (first step) to {recent:.4g} (median of "
                f"the last {len(recent_losses)} steps)"
            )
    name, largest = largest_weight(weights)
    if largest > RUNAWAY_WEIGHT_LIMIT:
        findings.append(
            f"the largest weight is |w| = {largest:.3g} in {name} (a trained network stays "
            f"far below {RUNAWAY_WEIGHT_LIMIT:.0e})"
        )
    return findings
