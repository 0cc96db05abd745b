"""Optimizer and learning-rate schedule.

The schedule is computed per optimizer step, whatever the config counts in: epochs
(``warmup_epochs``, ``stepsize``) are converted with the number of steps per epoch, and
when ``train.max_steps`` is set the run (and a cosine schedule) ends at that step.

``train.warmup_unit`` says how often the rate moves. ``step`` (default): the warmup rises a
little at every step. ``epoch`` (the official code): the rate is the one of the epoch's first
step for the whole epoch, so epoch ``e < warmup_epochs`` trains at
``lr * (0.01 + 0.99 * e / warmup_epochs)`` and a milestone ``m`` applies from epoch ``m`` on.

Reference: BPBReID official configs (Adam, lr 3.5e-4, weight decay 5e-4, 120 epochs, decay
x0.1 at epochs 40 and 70, linear warmup); the warmup follows the re-id "bag of tricks"
(Luo et al., CVPRW 2019: linear from 1% of the learning rate over 10 epochs). Official code
(bpbreid c0db006): ``torchreid/optim/lr_scheduler.py`` (warmup factor 0.01 over 10 scheduler
steps, milestones by ``bisect_right``), stepped once per epoch (``torchreid/engine/engine.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from bpbreid.config import ConfigError, TrainConfig

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("multi_step", "cosine", "constant")
WARMUP_UNITS = ("step", "epoch")  # train.warmup_unit: the rate moves every step / every epoch
# The train.* keys that shape the optimizer and the learning-rate schedule: a resumed run
# follows their current values, not the ones stored with the checkpoint.
OPTIMIZER_KEYS = ("optim", "lr", "weight_decay")
SCHEDULE_KEYS = (
    "lr_scheduler",
    "stepsize",
    "gamma",
    "warmup_epochs",
    "warmup_unit",
    "max_epoch",
    "max_steps",
)
WARMUP_START_FACTOR = 0.01  # warmup starts at 1% of the learning rate
COSINE_FINAL_FACTOR = 0.01  # cosine ends at 1% of the learning rate


def build_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``train.optim`` over the model's trainable parameters.

    Weight decay applies to every parameter, as in the official configs.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    name = train.optim.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=train.lr, momentum=0.9, weight_decay=train.weight_decay, nesterov=True
        )
    raise ConfigError(f"Unknown train.optim '{train.optim}'. Valid: {', '.join(OPTIMIZERS)}.")


class StepSchedule:
    """Learning-rate factor as a function of the optimizer step (used by ``LambdaLR``).

    Linear warmup from :data:`WARMUP_START_FACTOR` to 1 over ``warmup_steps``, then
    ``multi_step`` (x ``gamma`` at each milestone), ``cosine`` (to
    :data:`COSINE_FINAL_FACTOR` at ``total_steps``) or ``constant``.

    With ``hold > 1`` the step is first rounded down to a multiple of ``hold`` (the steps per
    epoch for ``warmup_unit: epoch``): the factor then changes only at epoch boundaries.

    Only plain attributes: ``LambdaLR.state_dict()`` stores them, and a checkpoint that
    holds them still loads with ``weights_only=True``.
    """

    def __init__(
        self,
        kind: str,
        total_steps: int,
        warmup_steps: int = 0,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        hold: int = 1,
    ) -> None:
        if kind not in SCHEDULERS:
            raise ConfigError(
                f"Unknown train.lr_scheduler '{kind}'. Valid: {', '.join(SCHEDULERS)}."
            )
        self.kind = kind
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.milestones = sorted(int(m) for m in (milestones or []))
        self.gamma = float(gamma)
        self.hold = max(1, int(hold))

    def __call__(self, step: int) -> float:
        # Schedules saved before `hold` existed have no such attribute: every step then.
        hold = getattr(self, "hold", 1)
        step = (int(step) // hold) * hold
        warmup = 1.0
        if self.warmup_steps and step < self.warmup_steps:
            alpha = step / self.warmup_steps
            warmup = WARMUP_START_FACTOR + (1.0 - WARMUP_START_FACTOR) * alpha
        if self.kind == "multi_step":
            passed = sum(1 for m in self.milestones if step >= m)
            return warmup * self.gamma**passed
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
            return warmup * (COSINE_FINAL_FACTOR + (1.0 - COSINE_FINAL_FACTOR) * cosine)
        return warmup


def total_steps(train: TrainConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of the whole run: ``max_steps`` if set, else epochs x steps/epoch."""
    if train.max_steps is not None:
        return int(train.max_steps)
    return int(train.max_epoch) * max(1, int(steps_per_epoch))


def build_schedule(train: TrainConfig, steps_per_epoch: int) -> StepSchedule:
    """The :class:`StepSchedule` of a config (epoch settings converted to steps).

    Raises:
        ConfigError: an unknown ``train.warmup_unit``.
    """
    steps_per_epoch = max(1, int(steps_per_epoch))
    if train.warmup_unit not in WARMUP_UNITS:
        raise ConfigError(
            f"Unknown train.warmup_unit '{train.warmup_unit}'. Valid: {', '.join(WARMUP_UNITS)}."
        )
    return StepSchedule(
        kind=train.lr_scheduler,
        total_steps=total_steps(train, steps_per_epoch),
        warmup_steps=train.warmup_epochs * steps_per_epoch,
        milestones=[epoch * steps_per_epoch for epoch in train.stepsize],
        gamma=train.gamma,
        hold=steps_per_epoch if train.warmup_unit == "epoch" else 1,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, build_schedule(train, steps_per_epoch))


def load_scheduler_state(scheduler: Any, state: dict[str, Any]) -> None:
    """Restore the scheduler's position; the schedule's shape comes from the current config.

    ``LambdaLR`` would also overwrite its schedule with the stored one; dropping that entry
    lets a resumed run extend ``max_epoch`` (with an unchanged config the result is equal).
    """
    state = dict(state)
    state["lr_lambdas"] = [None] * len(state.get("lr_lambdas") or [None])
    scheduler.load_state_dict(state)


def changed_settings(
    stored_train: Mapping[str, Any] | None, train: TrainConfig
) -> dict[str, tuple[Any, Any]]:
    """The optimizer/schedule keys whose value differs from the checkpoint's config.

    Args:
        stored_train: the ``train`` section of the checkpoint's config (a plain dict);
            ``None`` when the checkpoint has none (nothing is reported then).
        train: the current settings.

    Returns:
        ``{"train.lr": (stored, current), ...}`` in :data:`OPTIMIZER_KEYS` +
        :data:`SCHEDULE_KEYS` order.
    """
    if not isinstance(stored_train, Mapping):
        return {}
    changes: dict[str, tuple[Any, Any]] = {}
    for key in OPTIMIZER_KEYS + SCHEDULE_KEYS:
        if key not in stored_train:
            continue
        before, now = stored_train[key], getattr(train, key)
        if not _same(before, now):
            changes[f"train.{key}"] = (before, now)
    return changes


def apply_current_settings(optimizer: torch.optim.Optimizer, scheduler: Any) -> list[str]:
    """After restoring stored states, make the current configuration's settings rule.

    ``Optimizer.load_state_dict`` brings back the stored hyperparameters of every group
    (learning rate, weight decay, betas...) and ``LambdaLR`` the stored base learning
    rates, so a run resumed with a lower ``train.lr`` would keep stepping at the old rate
    and diverge again. The optimizer's ``defaults`` still hold the values the current
    config built it with: they are copied into every group, the scheduler's base rates
    follow, and the learning rate of the current step is recomputed from the current
    schedule. Values that already agree are left untouched, so an unchanged config resumes
    bit for bit.

    Returns:
        The hyperparameters that were changed (e.g. ``["lr", "weight_decay"]``).
    """
    changed: list[str] = []
    defaults = optimizer.defaults
    for group in optimizer.param_groups:
        for key, value in defaults.items():
            if key in ("lr", "params"):
                continue
            if key not in group or not _same(group[key], value):
                group[key] = value
                changed.append(key)
        if group.get("initial_lr") != defaults["lr"]:
            group["initial_lr"] = defaults["lr"]
            changed.append("lr")
    scheduler.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
    step = scheduler.last_epoch
    rates = [
        base * schedule(step)
        for base, schedule in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
    ]
    for group, rate in zip(optimizer.param_groups, rates, strict=True):
        if group["lr"] != rate:
            group["lr"] = rate
            changed.append("scheduled lr")
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return sorted(set(changed))


def _same(a: Any, b: Any) -> bool:
    """Equal values, a list and a tuple of the same items included (a checkpoint loads
    tuples such as Adam's ``betas`` back as they were saved, YAML gives lists)."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return bool(torch.equal(torch.as_tensor(a), torch.as_tensor(b)))
    return bool(a == b)
