"""The training loop: identity-balanced batches, GiLt loss, AMP, DDP, checkpoints, resume.

``Trainer(cfg).fit()`` builds what it is not given (dataset and loaders, model, loss),
trains for ``train.max_epoch`` epochs (or ``train.max_steps`` steps), evaluates every
``train.eval_freq`` epochs and at the end, saves ``last.pth`` every ``train.save_every``
epochs and ``model.pth`` at the end, and returns the :class:`EngineState`.

Speed: on CUDA it uses mixed precision (bf16, or fp16 with a GradScaler), channels_last,
TF32 (stated explicitly), pinned memory, non-blocking copies and optionally
``torch.compile``. On CPU it trains in fp32 with the thread policy of
:func:`bpbreid.paths.thread_policy` (one thread per process on small machines) and
:func:`bpbreid.engine.pool.run_parallel` trains several configurations as separate processes.

A run locks its output folder (``<output_dir>/.lock``; a second run on it is refused, a
killed run's lock is taken over), never saves weights holding inf/NaN, and warns at the end
when the loss or the weights ran away.

Model selection is never made on the test set: the reported model is the last epoch's,
or, with ``train.validation_ids > 0``, the best on a validation split carved from the
training identities (:mod:`bpbreid.engine.validation`).

Example::

    from bpbreid.config import load_config
    from bpbreid.engine import Trainer

    state = Trainer(load_config("synthetic_cpu")).fit()
    print(state.final_metrics)
"""

from __future__ import annotations

import math
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bpbreid.config import Config, ConfigError, config_from_dict, config_to_dict, save_config
from bpbreid.errors import BPBReIDError, CheckpointError, TrainingError
from bpbreid.paths import display_path, resolve_path, seed_everything, thread_policy

from .checkpoint import (
    describe_entries,
    load_model_weights,
    non_finite_entries,
    read_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from .distributed import (
    AmpPolicy,
    DistInfo,
    all_true,
    barrier,
    configure_backends,
    env_dist_info,
    init_distributed,
    resolve_amp,
    resolve_device,
)
from .evaluation import evaluate
from .files import remove_stale_temporaries
from .health import RECENT_STEPS, TrainingWarning, runaway_findings
from .loaders import count_classes, tune_train_loader
from .loaders import seed_worker as seed_worker
from .lock import RunLock
from .loggers import Logger, MultiLogger, build_loggers
from .metrics_log import flatten_metrics
from .optim import (
    apply_current_settings,
    build_optimizer,
    build_scheduler,
    changed_settings,
    load_scheduler_state,
)
from .pool import run_parallel as run_parallel
from .state import EngineState
from .validation import SELECTION_METRICS as SELECTION_METRICS
from .validation import selection_value, split_validation

# ``seed_worker``, ``run_parallel``, ``SELECTION_METRICS`` (``X as X`` above) and
# ``resolve_output_dir`` live elsewhere and stay importable from here for older imports.
resolve_output_dir = resolve_path

StepHook = Callable[["Trainer", int, dict[str, float]], None]

LAST_CHECKPOINT = "last.pth"
BEST_CHECKPOINT = "best.pth"
MODEL_FILE = "model.pth"


class Trainer:
    """Trains one model from a configuration.

    Args:
        cfg: the configuration.
        model: a model to train (default: :func:`bpbreid.model.build_model`).
        data: a ``ReIDData`` (loaders are built from it) or a mapping of DataLoaders with
            ``"train"``, ``"query"``, ``"gallery"`` and optionally extra query sets and
            ``"val_query"``/``"val_gallery"`` (default: the dataset ``cfg.data`` names).
        loggers: loggers to use (default: ``cfg.train.loggers``; only rank 0 logs).
        criterion: the training loss (default: :class:`bpbreid.losses.GiLtLoss`).
        num_classes: training identities (default: from the data).
        progress: show progress bars on the console.
        log_prefix: text before console lines (the run name when runs share a console).
        step_hooks: called after every optimizer step as ``hook(trainer, step, components)``.
    """

    def __init__(
        self,
        cfg: Config,
        model: nn.Module | None = None,
        data: Any = None,
        loggers: Logger | Sequence[Logger] | None = None,
        *,
        criterion: nn.Module | None = None,
        num_classes: int | None = None,
        progress: bool = True,
        log_prefix: str = "",
        step_hooks: Iterable[StepHook] = (),
    ) -> None:
        self.cfg = cfg
        train = cfg.train
        self.dist: DistInfo = env_dist_info()
        self.device = resolve_device(train.device, self.dist.local_rank)
        init_distributed(self.device, self.dist)
        self._set_threads()
        configure_backends(self.device, deterministic=train.deterministic)
        seed_everything(train.seed)

        self.output_dir = resolve_path(train.output_dir)
        self.progress = progress
        self.log_prefix = log_prefix
        self.step_hooks = list(step_hooks)
        self._given_loggers = loggers
        self.loggers: Logger = Logger()

        self.loaders, self.num_classes = self._prepare_data(data, num_classes)
        self.train_loader = self.loaders["train"]
        self.val_loaders = self._validation_loaders()
        self.extra_query_loaders = {
            name: loader
            for name, loader in self.loaders.items()
            if name not in ("train", "query", "gallery", "val_query", "val_gallery")
        }

        self.amp: AmpPolicy = resolve_amp(train.amp, self.device)
        self.channels_last = (
            self.device.type == "cuda" if train.channels_last is None else bool(train.channels_last)
        )
        if model is None:
            from bpbreid.model import build_model

            seed_everything(train.seed)  # same on every rank: identical initial weights
            model = build_model(cfg, num_classes=self.num_classes)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if criterion is None:
            from bpbreid.losses import GiLtLoss

            masks = cfg.model.bpbreid.masks
            criterion = GiLtLoss(cfg.loss, soft_targets=masks.soft_targets, targets=masks.targets)
        self.criterion = criterion.to(self.device)

        self.optimizer = build_optimizer(self.model, train)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                "The training loader yields no batch: too few images per identity for "
                f"train.batch_size={train.batch_size} x train.num_instances={train.num_instances}."
            )
        self.scheduler = build_scheduler(self.optimizer, train, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp.use_scaler)

        # What runs a step: model and loss in one module, so that DDP finds the loss
        # tensor it returns (it cannot look inside the model's dataclass output) and
        # spots the parameters that a GiLt recipe leaves without a loss term.
        forward_model: nn.Module = self.model
        if train.compile:
            # The model only: the loss reads its components back, a graph break.
            forward_model = torch.compile(self.model)  # type: ignore[assignment]
        self.train_model: nn.Module = ModelWithLoss(
            forward_model, self.criterion, external_masks=cfg.model.bpbreid.part_mode == "external"
        )
        if self.dist.enabled:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.train_model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )

        self.state = EngineState()
        self.test_result: Any = None  # the final test EvalResult (rank 0)
        # Losses of the last steps: the run-away check at the end compares their median.
        self._recent_losses: deque[float] = deque(maxlen=RECENT_STEPS)
        # (epoch, step) of the checkpoint this run wrote or resumed from: the one that a
        # divergence leaves in place.
        self._good_checkpoint: tuple[int, int] | None = None
        # Rank-specific randomness (augmentation) after the shared initialisation.
        seed_everything(train.seed + self.dist.rank)

    # ----------------------------------------------------------------------------------
    # Setup helpers
    # ----------------------------------------------------------------------------------

    def _set_threads(self) -> None:
        if self.device.type != "cpu":
            return
        threads = self.cfg.train.threads or thread_policy()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def _prepare_data(self, data: Any, num_classes: int | None) -> tuple[dict[str, Any], int]:
        cfg = self.cfg
        if isinstance(data, Mapping):
            loaders = dict(data)
            if "train" not in loaders:
                raise ConfigError("The loaders given to Trainer need a 'train' loader.")
        else:
            from bpbreid.data.datasets import build_dataset_from_config, build_loaders

            if data is None:
                data = build_dataset_from_config(cfg)
            val_data = None
            if cfg.train.validation_ids > 0:
                data, val_data = split_validation(data, cfg.train.validation_ids, cfg.train.seed)
            loaders = build_loaders(
                cfg,
                data,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
                device=self.device,
                progress=self.progress,
            )
            if "train" not in loaders:
                raise ConfigError(
                    f"Dataset '{cfg.data.name}' has no training split (it is test-only); "
                    "train on another dataset and evaluate this one with `bpbreid eval`."
                )
            if val_data is not None:
                val = build_loaders(cfg, val_data)
                loaders["val_query"], loaders["val_gallery"] = val["query"], val["gallery"]
            if num_classes is None:
                num_classes = data.num_train_pids
        loaders["train"] = tune_train_loader(loaders["train"], cfg.train.deterministic)
        if num_classes is None:
            num_classes = count_classes(loaders["train"])
        return loaders, int(num_classes)

    def _validation_loaders(self) -> tuple[Any, Any] | None:
        if "val_query" in self.loaders and "val_gallery" in self.loaders:
            return self.loaders["val_query"], self.loaders["val_gallery"]
        return None

    def _build_loggers(self, resumed: bool) -> Logger:
        if not self.dist.is_main:
            return Logger()
        given = self._given_loggers
        if given is not None:
            return given if isinstance(given, Logger) else MultiLogger(given)
        return build_loggers(
            self.cfg.train.loggers,
            self.output_dir,
            run_name=self.cfg.name,
            config=config_to_dict(self.cfg),
            progress=self.progress,
            prefix=self.log_prefix,
            max_epoch=None if self.cfg.train.max_steps else self.cfg.train.max_epoch,
            resume_step=self.state.step if resumed else None,
            resume_epoch=self.state.epoch if resumed else None,
        )

    # ----------------------------------------------------------------------------------
    # Checkpoints
    # ----------------------------------------------------------------------------------

    @property
    def last_checkpoint(self) -> Path:
        return self.output_dir / LAST_CHECKPOINT

    def _sampler_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"epoch": int(self.state.epoch)}
        # The loader's generator: a DataLoader's (worker seeds), or the tensor pipeline's
        # (every augmentation of its batches); restored on resume.
        generator = getattr(self.train_loader, "generator", None)
        if isinstance(generator, torch.Generator):
            state["loader_generator"] = generator.get_state()
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "state_dict"):
            state["sampler"] = sampler.state_dict()
        return state

    def _restore_sampler(self, state: Mapping[str, Any] | None) -> None:
        if not state:
            return
        generator = getattr(self.train_loader, "generator", None)
        if isinstance(generator, torch.Generator) and "loader_generator" in state:
            generator.set_state(state["loader_generator"])
        sampler = getattr(self.train_loader, "sampler", None)
        if "sampler" in state and hasattr(sampler, "load_state_dict"):
            sampler.load_state_dict(state["sampler"])

    def save(self, path: str | Path | None = None) -> Path:
        """Write a full training checkpoint (default ``<output_dir>/last.pth``), atomically."""
        self.state.capture_rng()
        return save_checkpoint(
            path or self.last_checkpoint,
            self.model,
            self.cfg,
            num_classes=self.num_classes,
            state=self.state,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            sampler_state=self._sampler_state(),
        )

    def _save_model_only(self, path: Path) -> Path:
        return save_checkpoint(
            path, self.model, self.cfg, num_classes=self.num_classes, state=self.state.without_rng()
        )

    def resume(self, path: str | Path | None = None) -> EngineState:
        """Restore a training checkpoint (default ``<output_dir>/last.pth``).

        Restores the weights, optimizer, scheduler, GradScaler, counters, metrics history,
        RNG states and the loader's generator, so that the continued run equals an
        uninterrupted one (same config; ``train.deterministic`` for bit-exactness).

        Optimizer and schedule settings (``train.lr``, ``weight_decay``, ``warmup_epochs``,
        ``lr_scheduler``, ``stepsize``, ``gamma``, ``max_epoch``/``max_steps``) follow the
        current config, not the stored one: resuming a diverged run with a lower
        ``train.lr`` must train at the lower rate. A changed ``train.optim`` starts the new
        optimizer's moments afresh. Each change is printed.
        """
        path = Path(path) if path is not None else self.last_checkpoint
        if not path.is_file():
            raise CheckpointError(
                f"Cannot resume: no checkpoint at {path}. Start without --resume, or point "
                "train.output_dir at the folder of the interrupted run."
            )
        data = read_checkpoint(path, map_location="cpu")
        if data.get("optimizer") is None or data.get("state") is None:
            raise CheckpointError(
                f"{path} is a model-only file (no optimizer state): resume from last.pth."
            )
        if int(data.get("num_classes") or -1) != self.num_classes:
            raise CheckpointError(
                f"{path} was trained with {data.get('num_classes')} identities, this run has "
                f"{self.num_classes}: resume with the same dataset and train.validation_ids."
            )
        load_model_weights(self.model, data["model"], str(path))
        stored = data.get("config")
        settings = changed_settings(
            stored.get("train") if isinstance(stored, dict) else None, self.cfg.train
        )
        if "train.optim" not in settings:
            try:
                self.optimizer.load_state_dict(data["optimizer"])
            except (ValueError, KeyError) as exc:
                raise CheckpointError(
                    f"{path}: the optimizer state does not match ({exc})."
                ) from None
        if data.get("scheduler"):
            load_scheduler_state(self.scheduler, data["scheduler"])
        apply_current_settings(self.optimizer, self.scheduler)
        if data.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(data["scaler"])
        self.state = EngineState.from_dict(data["state"])
        self.state.restore_rng()
        self._restore_sampler(data.get("sampler"))
        self._good_checkpoint = (self.state.epoch, self.state.step)
        if self.dist.is_main:
            if settings:
                self._say(_describe_setting_changes(settings))
            changed = [
                change
                for change in _config_changes(stored, self.cfg)
                if change.split(":")[0] not in settings
            ]
            if changed:
                self._say(
                    f"Resuming {display_path(path)} with a changed config: {', '.join(changed)}"
                )
        return self.state

    def _say(self, text: str) -> None:
        """A line on the console from the writing process (the run name first, if any).

        A print, not a log record: these notes (a resume with changed settings, a lock taken
        over, leftovers removed) are meant for the person running the training and must show
        in a notebook's cell output, where an unconfigured ``logging`` shows nothing.
        """
        if self.dist.is_main:
            prefix = f"[{self.log_prefix}] " if self.log_prefix else ""
            print(f"{prefix}{text}", flush=True)

    # ----------------------------------------------------------------------------------
    # Training
    # ----------------------------------------------------------------------------------

    def fit(self, resume: bool | str | Path = False) -> EngineState:
        """Train to the end of the schedule and evaluate; returns the :class:`EngineState`.

        The output folder is locked for the whole run (``<output_dir>/.lock``): a second
        run on the same folder is refused instead of mixing its files with this one's.

        Args:
            resume: ``True`` continues from ``<output_dir>/last.pth``; a path continues
                from that checkpoint.

        Raises:
            TrainingError: the loss or the weights became NaN/inf (names the step and the
                components or tensors; the last good checkpoint stays on disk), or another
                run holds the output folder.
        """
        train = self.cfg.train
        resumed = bool(resume)
        lock = self._lock_output_dir()
        try:
            if resumed:
                self.resume(None if resume is True else resume)
            if self.dist.is_main:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                save_config(self.cfg, self.output_dir / "config.yaml")
            self.loggers = self._build_loggers(resumed)
            self._prepare_train_data()
            saved_at = self.state.step if resumed else -1
            while not self._finished():
                self._train_epoch()
                self._check_finite_weights()
                epoch = self.state.epoch
                metrics = self.state.history[-1]
                is_last = self._finished()
                due = train.eval_freq > 0 and epoch % train.eval_freq == 0
                if self.val_loaders is not None and (due or is_last):
                    metrics.update(self._validate(epoch))
                elif due and not is_last and self._has_test_sets():
                    # Monitoring only: no decision is taken on these numbers.
                    metrics.update(flatten_metrics(self.evaluate(), "test/"))
                if is_last:
                    break  # logged with the final results by _finish()
                self.loggers.log_epoch(epoch, metrics)
                if epoch % max(1, train.save_every) == 0:
                    self._save_last()
                    saved_at = self.state.step
            if saved_at != self.state.step:
                self._save_last()
            self._finish()
        finally:
            self.loggers.close()
            if lock is not None:
                lock.release()
        return self.state

    def _lock_output_dir(self) -> RunLock | None:
        """Lock the output folder (the writing process only) and clear what kills left.

        Every process learns whether the lock was taken, so that all of them stop together
        when another run holds the folder. Temporary files of interrupted atomic writes are
        removed only under the lock: another run's write in progress would lose them.
        """
        lock: RunLock | None = None
        failure: BaseException | None = None
        if self.dist.is_main:
            lock = RunLock(self.output_dir)
            try:
                lock.acquire()
            except (BPBReIDError, OSError) as exc:
                failure = exc
        if not all_true(failure is None, self.device):
            if failure is not None:
                raise failure
            raise TrainingError(
                f"Output folder {self.output_dir} could not be locked by the first process "
                "(its error says why)."
            )
        if lock is not None:
            if lock.takeover_note:
                self._say(lock.takeover_note)
            removed = remove_stale_temporaries(self.output_dir)
            if removed:
                self._say(
                    f"Removed {len(removed)} temporary file(s) left by an interrupted run in "
                    f"{self.output_dir}: {', '.join(p.name for p in removed)}"
                )
        return lock

    def _finished(self) -> bool:
        train = self.cfg.train
        if train.max_steps is not None and self.state.step >= train.max_steps:
            return True
        return self.state.epoch >= train.max_epoch

    def _save_last(self) -> None:
        self._check_finite_weights()
        if self.dist.is_main:
            self.save()
        self._good_checkpoint = (self.state.epoch, self.state.step)
        barrier()

    def _kept_checkpoint_note(self) -> str:
        """Which checkpoint a stopped run leaves to resume from."""
        if self._good_checkpoint is None:
            return "No checkpoint of this run was written before this step"
        epoch, step = self._good_checkpoint
        return (
            f"The last good checkpoint is kept: {self.last_checkpoint} (epoch {epoch}, step {step})"
        )

    def _check_finite_weights(self) -> None:
        """Stop every rank together when a parameter or buffer holds inf/NaN.

        A diverging run can keep a finite loss while its BatchNorm running variances are
        already infinite; saved, such weights would evaluate to garbage. Checked after
        every epoch and before every checkpoint, so the last good checkpoint is never
        overwritten with them.
        """
        bad = non_finite_entries(unwrap_model(self.model).state_dict())
        if all_true(not bad, self.device):
            return
        which = describe_entries(bad) if bad else "(on another process)"
        raise TrainingError(
            f"Training stopped after step {self.state.step} (epoch {self.state.epoch}): the "
            f"model's weights are no longer finite: {which}. {self._kept_checkpoint_note()}. "
            f"Lower train.lr (now {self.cfg.train.lr:g}) or set train.amp=off, then resume "
            "with --resume (a changed train.lr takes effect on resume) or start again."
        )

    def _prepare_train_data(self) -> None:
        """Decode the tensor pipeline's cache before the first step (a DataLoader: nothing).

        Its time is then said once, on its own, instead of counting as the first epoch's wait
        for data: the img/s and data_wait of a short run would otherwise measure the decoding.
        """
        prepare = getattr(self.train_loader, "prepare", None)
        if not callable(prepare) or getattr(self.train_loader, "cache", None) is not None:
            return
        if self._finished():
            return
        prepare()
        if self.progress:
            self._say(self.train_loader.summary)

    def _train_epoch(self) -> None:
        train = self.cfg.train
        epoch = self.state.epoch + 1
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.state.epoch)
        transform = getattr(getattr(self.train_loader, "dataset", None), "transform", None)
        if hasattr(transform, "set_seed"):
            # Augmentations drawn from (seed, rank, epoch): a resumed run repeats them exactly
            # (DataLoader workers mix in their own seed on top).
            seed = np.random.SeedSequence([train.seed, self.dist.rank, self.state.epoch])
            transform.set_seed(int(seed.generate_state(1)[0]))
        self.train_model.train()
        num_steps = self.steps_per_epoch
        if train.max_steps is not None:
            num_steps = min(num_steps, train.max_steps - self.state.step)
        self.loggers.start_epoch(epoch, num_steps)

        sums: dict[str, float] = {}
        images_seen = 0
        data_wait = 0.0
        epoch_start = time.perf_counter()
        tick = epoch_start
        steps_done = 0
        iterator = iter(self.train_loader)
        for _ in range(num_steps):
            try:
                batch = next(iterator)
            except StopIteration:
                break
            got_batch = time.perf_counter()
            data_wait += got_batch - tick
            components = self.train_step(batch, epoch)
            self.state.step += 1
            if self.state.first_loss is None:
                self.state.first_loss = components["total"]
            self._recent_losses.append(components["total"])
            steps_done += 1
            batch_size = int(batch["image"].shape[0]) * self.dist.world_size
            images_seen += batch_size
            now = time.perf_counter()
            for key, value in components.items():
                sums[key] = sums.get(key, 0.0) + value
            scalars = dict(components)
            scalars["lr"] = self.optimizer.param_groups[0]["lr"]
            scalars["img/s"] = batch_size / max(now - tick, 1e-9)
            self.loggers.log_scalars(self.state.step, scalars)
            for hook in self.step_hooks:
                hook(self, self.state.step, components)
            tick = time.perf_counter()
        del iterator
        elapsed = time.perf_counter() - epoch_start
        metrics: dict[str, Any] = {"epoch": epoch, "step": self.state.step}
        metrics.update({key: value / max(1, steps_done) for key, value in sums.items()})
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        metrics["img/s"] = images_seen / max(elapsed, 1e-9)
        metrics["data_wait"] = data_wait / max(elapsed, 1e-9)
        metrics["time_s"] = elapsed
        self.state.epoch = epoch
        self.state.history.append(metrics)

    def train_step(
        self,
        batch: Mapping[str, Any],
        epoch: int = 0,
        phase_seconds: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """One optimizer step on a batch dict (``image`` ``[N, 3, H, W]``, ``pid`` ``[N]``,
        optional ``target_masks`` ``[N, K+1, h, w]``); returns the loss components.

        Does not advance ``state.step`` (``fit`` does); ``epoch`` only labels errors. With
        ``phase_seconds``, the seconds of each phase (``transfer``, ``forward`` with the loss,
        ``backward``, ``optimizer``) are added to it, the device synchronized at each boundary
        (what ``bench train --demo`` reports; slower on a GPU, so off in training).
        """
        clock = _PhaseClock(phase_seconds, self.device)
        images = batch["image"].to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        pids = torch.as_tensor(batch["pid"]).to(self.device, non_blocking=True)
        targets = batch.get("target_masks")
        if targets is not None:
            targets = targets.to(self.device, non_blocking=True)
        autocast = torch.autocast(
            device_type=self.device.type, dtype=self.amp.dtype, enabled=self.amp.enabled
        )
        clock.mark("transfer")
        with autocast:
            loss, components = self.train_model(images, pids, targets)
        components = {k: float(v) for k, v in components.items()}
        total = components.get("total", float(loss.detach()))
        components.setdefault("total", total)
        self._check_finite(loss, components, epoch)
        clock.mark("forward")

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        clock.mark("backward")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        clock.mark("optimizer")
        return components

    def _check_finite(self, loss: torch.Tensor, components: dict[str, float], epoch: int) -> None:
        """Stop every rank together on a NaN/inf loss, naming the step and components."""
        finite = math.isfinite(components["total"]) and bool(torch.isfinite(loss.detach()))
        if all_true(finite, self.device):
            return
        bad = [k for k, v in components.items() if k != "total" and not math.isfinite(v)]
        step = self.state.step + 1
        which = ", ".join(bad) if bad else "total (on another process)" if finite else "total"
        raise TrainingError(
            f"Training stopped: the loss became {components['total']} at step {step} "
            f"(epoch {epoch}); non-finite loss component(s): {which}. "
            f"{self._kept_checkpoint_note()}. Lower train.lr (now {self.cfg.train.lr:g}), set "
            "train.amp=off, or check the labels of this batch, then resume with --resume (a "
            "changed train.lr takes effect on resume)."
        )

    # ----------------------------------------------------------------------------------
    # Evaluation and the end of a run
    # ----------------------------------------------------------------------------------

    def evaluate(
        self, query_loader: Any = None, gallery_loader: Any = None, extra: Any = None
    ) -> Any:
        """Evaluate the model (rank 0; others wait). Default: the test query/gallery sets."""
        result = None
        if self.dist.is_main:
            if query_loader is None:
                query_loader, gallery_loader = self.loaders["query"], self.loaders["gallery"]
                extra = self.extra_query_loaders or None
            self.model.eval()
            with torch.no_grad():
                result = evaluate(
                    self.model,
                    query_loader,
                    gallery_loader,
                    self.cfg,
                    extra,
                    progress=self.progress,
                )
            self.model.train()
        barrier()
        return result

    def _has_test_sets(self) -> bool:
        return "query" in self.loaders and "gallery" in self.loaders

    def _validate(self, epoch: int) -> dict[str, float]:
        """Evaluate on the validation split and keep the best model (``best.pth``)."""
        assert self.val_loaders is not None
        metrics = flatten_metrics(self.evaluate(*self.val_loaders), "val/")
        self._track_best(metrics, epoch)
        return metrics

    def _track_best(self, metrics: Mapping[str, float], epoch: int) -> None:
        chosen = selection_value(metrics)
        if chosen is None:
            return
        _, value = chosen
        if self.state.best_metric is None or value > self.state.best_metric:
            self.state.best_metric = float(value)
            self.state.best_epoch = epoch
            if self.dist.is_main:
                self._save_model_only(self.output_dir / BEST_CHECKPOINT)
            barrier()

    def _finish(self) -> None:
        """Model selection, final test evaluation, the last epoch's log line, ``model.pth``."""
        metrics = self.state.history[-1] if self.state.history else {}
        final: dict[str, float] = {}
        best = self.output_dir / BEST_CHECKPOINT
        if self.val_loaders is not None and self.state.best_epoch is not None and best.is_file():
            # Model selection on the validation split, never on the test set.
            load_model_weights(self.model, read_checkpoint(best)["model"], str(best))
            final["selected_epoch"] = float(self.state.best_epoch)
        if self.cfg.train.test_at_end and self._has_test_sets():
            self.test_result = self.evaluate()
            final.update(flatten_metrics(self.test_result, "test/"))
        self.state.final_metrics = final
        if metrics:
            metrics.update(final)
            self.loggers.log_epoch(self.state.epoch, metrics)
        self._check_finite_weights()
        if self.dist.is_main:
            self._warn_if_runaway()
            self._save_model_only(self.output_dir / MODEL_FILE)
        barrier()

    def _warn_if_runaway(self) -> None:
        """Warn when the run ended with an exploded loss or absurd weights.

        Such a run exits normally with finite numbers, and nothing else would tell that its
        model is useless. The warning is also kept in ``state.warnings`` (saved in
        ``model.pth``).
        """
        recent = list(self._recent_losses)
        if not recent and self.state.history:
            recent = [float(self.state.history[-1].get("total", math.nan))]
        recent = [loss for loss in recent if math.isfinite(loss)]
        findings = runaway_findings(
            self.state.first_loss, recent, unwrap_model(self.model).state_dict()
        )
        if not findings:
            return
        message = (
            f"Training in {self.output_dir} ran away: {'; '.join(findings)}. The saved model "
            f"is almost certainly useless. Lower train.lr (now {self.cfg.train.lr:g}) and "
            "train again."
        )
        self.state.warnings.append(message)
        warnings.warn(message, TrainingWarning, stacklevel=4)


class _PhaseClock:
    """Adds the seconds since the previous mark to ``seconds[phase]`` (no-op without a dict)."""

    def __init__(self, seconds: dict[str, float] | None, device: torch.device) -> None:
        self.seconds = seconds
        self.device = device
        self.last = time.perf_counter() if seconds is not None else 0.0

    def mark(self, phase: str) -> None:
        if self.seconds is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.last
        self.last = now


class ModelWithLoss(nn.Module):
    """The model followed by the training loss: ``(images, pids, targets) -> (loss, parts)``.

    Args:
        model: the re-id model (possibly compiled).
        criterion: ``criterion(output, pids, target_masks) -> (loss, components)``.
        external_masks: feed the target masks to the model (``part_mode=external``).
    """

    def __init__(self, model: nn.Module, criterion: nn.Module, external_masks: bool = False):
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.external_masks = external_masks

    def forward(
        self, images: torch.Tensor, pids: torch.Tensor, target_masks: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if self.external_masks:
            output = self.model(images, external_masks=target_masks)
        else:
            output = self.model(images)
        return self.criterion(output, pids, target_masks)


def _describe_setting_changes(settings: Mapping[str, tuple[Any, Any]]) -> str:
    """``resume: train.lr changed 1e+09 -> 0.001; ...`` for the optimizer/schedule keys."""
    changes = "; ".join(
        f"{key} changed {_show(before)} -> {_show(now)}" for key, (before, now) in settings.items()
    )
    return f"resume: {changes}; the optimizer and schedule use the new values."


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _config_changes(stored: Any, cfg: Config) -> list[str]:
    if not isinstance(stored, dict):
        return []
    from bpbreid.config import config_diff

    try:
        before = config_from_dict(stored)
    except ConfigError:
        return ["(stored config unreadable)"]
    return [f"{k}: {a!r} -> {b!r}" for k, (a, b) in config_diff(cfg, before).items()]
