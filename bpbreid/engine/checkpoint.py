"""Checkpoints: atomic writes, safe loads, clear errors.

A checkpoint is a dict of tensors and plain containers only, so it loads with
``torch.load(weights_only=True)`` (no arbitrary code runs when opening a file):

* ``format``: ``"bpbreid-checkpoint"``; ``format_version``: 1;
* ``model``: the model's ``state_dict`` (DDP/compile wrappers removed);
* ``num_classes``: identities the classifiers were built for;
* ``config``: the configuration as a plain dict (:func:`bpbreid.config.config_to_dict`);
* ``state``: :meth:`EngineState.to_dict` (epoch, step, metrics, RNG states);
* ``optimizer``, ``scheduler``, ``scaler``, ``sampler`` (training checkpoints only).

Files are written to a temporary file in the same folder, flushed to disk (fsync) and
renamed over the target with ``os.replace``: a crash mid-write leaves the previous
checkpoint intact, never a half-written one.

Weights holding inf/NaN are never written (the previous, good file stays) and never
loaded: a diverged run's infinite BatchNorm variances would otherwise evaluate to
meaningless numbers with exit code 0.

Reference: the official BPBReID checkpoints (``state_dict`` plus a pickled yacs config)
need a full unpickler; they are not this format. :func:`load_any_checkpoint` opens either
kind (the official one through :mod:`bpbreid.official`'s restricted unpickler): every
command and :func:`bpbreid.inference.load_model` read checkpoints through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from bpbreid.errors import CheckpointError
from bpbreid.serialization import check_not_torchscript

from .files import atomic_write
from .state import EngineState

FORMAT = "bpbreid-checkpoint"
FORMAT_VERSION = 1


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel / ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        else:
            return model


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves a half-written file at ``path``.

    The object is written to a temporary file in the same folder (so the final rename
    stays on one file system), flushed and fsynced, then moved over ``path`` with
    ``os.replace`` (atomic on POSIX and Windows). On any error the temporary file is
    removed and the previous ``path`` is untouched.
    """
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def non_finite_entries(weights: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding inf or NaN, with what they hold.

    A diverged training can keep a finite loss for a while with infinite BatchNorm
    running variances; such weights evaluate to garbage without any error, so they are
    refused on saving and on loading.

    Returns:
        e.g. ``["bn1.running_var (12 inf)", "fc.weight (3 NaN, 1 inf)"]``; empty when all
        values are finite.
    """
    found = []
    for name, value in weights.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        finite = torch.isfinite(value)
        if bool(finite.all()):
            continue
        nan = int(torch.isnan(value).sum())
        inf = int((~finite).sum()) - nan
        counts = ", ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "inf")) if n)
        found.append(f"{name} ({counts})")
    return found


def describe_entries(entries: list[str], limit: int = 5) -> str:
    """The first ``limit`` entries and how many more there are."""
    more = f" (+{len(entries) - limit} more)" if len(entries) > limit else ""
    return ", ".join(entries[:limit]) + more


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    cfg: Any,
    *,
    num_classes: int | None = None,
    state: EngineState | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    sampler_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically.

    Args:
        path: target file (``last.pth``, ``model.pth``...); folders are created.
        model: the model (wrappers are removed before saving).
        cfg: a :class:`bpbreid.config.Config` or an already plain dict.
        num_classes: identities of the classifiers (default: ``model.num_classes`` if any).
        state: the :class:`EngineState` (RNG states included as captured in it).
        optimizer, scheduler, scaler: saved through their ``state_dict()`` when given.
        sampler_state: the identity sampler's position/RNG, for exact resumes.

    Returns:
        The path written.

    Raises:
        CheckpointError: a parameter or buffer of the model holds inf/NaN; nothing is
            written, so the previous file at ``path`` (the last good one) is kept.
    """
    from bpbreid.config import config_to_dict

    plain = unwrap_model(model)
    if num_classes is None:
        num_classes = getattr(plain, "num_classes", None)
    weights = {k: v.detach().cpu() for k, v in plain.state_dict().items()}
    bad = non_finite_entries(weights)
    if bad:
        kept = "the previous file is kept" if Path(path).is_file() else "nothing was written"
        raise CheckpointError(
            f"Not writing '{path}' ({kept}): the model holds non-finite values (inf/NaN) in "
            f"{describe_entries(bad)}. The training diverged: lower train.lr (or set "
            "train.amp=off) and resume from the last good checkpoint."
        )
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": weights,
        "num_classes": None if num_classes is None else int(num_classes),
        "config": cfg if isinstance(cfg, dict) else config_to_dict(cfg),
        "state": state.to_dict() if state is not None else None,
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        payload["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        payload["scaler"] = scaler.state_dict()
    if sampler_state is not None:
        payload["sampler"] = sampler_state
    return atomic_save(payload, path)


def _not_found(path: Path) -> CheckpointError:
    hint = ""
    if path.parent.is_dir():
        found = sorted(p.name for p in path.parent.glob("*.pth"))
        hint = f" Checkpoints in {path.parent}: {', '.join(found) or 'none'}."
    return CheckpointError(
        f"Checkpoint '{path}' not found.{hint} Train one with `python -m bpbreid train`, or "
        "download an official one (`python -m bpbreid infer --official market1501 ...`)."
    )


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``).

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, needs an unsafe
            unpickler, or is not a bpbreid checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise _not_found(path)
    check_not_torchscript(path)  # refused with its own message, before torch opens it
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # every load failure becomes one clear error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"Checkpoint '{path}' could not be read ({type(exc).__name__}: {first}). "
            "The file is corrupt or truncated, or it holds Python objects that a safe load "
            "refuses (official BPBReID checkpoints store a pickled config: open those with "
            "bpbreid.official.load_official_checkpoint). Re-train or copy the file again."
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or "model" not in data:
        keys = ", ".join(sorted(map(str, data))[:8]) if isinstance(data, dict) else type(data)
        raise CheckpointError(
            f"'{path}' is not a bpbreid checkpoint (found: {keys}). "
            "Expected a file written by `python -m bpbreid train` (last.pth or model.pth); "
            "official BPBReID checkpoints open with bpbreid.official.load_official_checkpoint."
        )
    return data


def load_model_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` with a readable error for missing, unexpected or mis-shaped keys.

    Weights holding inf/NaN are refused: they load without complaint and then evaluate to
    garbage (a diverged run's BatchNorm variances), which an exit code 0 would hide.
    """
    target = unwrap_model(model)
    expected = target.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    mis_shaped = [
        f"{k} {tuple(weights[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)
    ]
    bad = non_finite_entries(weights)
    if bad:
        raise CheckpointError(
            f"Checkpoint '{source}' holds non-finite weights (inf/NaN) in "
            f"{describe_entries(bad)}: the training that wrote it diverged, and a model with "
            "these weights gives meaningless results. Use an earlier checkpoint, or train "
            "again with a lower train.lr."
        )
    if missing or unexpected or mis_shaped:
        lines = []
        for title, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", mis_shaped),
        ):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                lines.append(f"{title}: {', '.join(items[:5])}{more}")
        raise CheckpointError(
            f"Checkpoint '{source}' does not match the model: {'; '.join(lines)}. "
            "Use the configuration the checkpoint was trained with (backbone, parts_num, "
            "number of identities)."
        )
    target.load_state_dict(weights, strict=True)


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", cfg: Any = None
) -> tuple[nn.Module, Any, EngineState | None]:
    """Rebuild the trained model from a checkpoint, for evaluation, visualization, inference.

    Args:
        path: a ``last.pth`` or ``model.pth`` written by the trainer.
        device: where the model goes.
        cfg: a :class:`Config` to use instead of the stored one (its model section must
            match the weights).

    Returns:
        ``(model, cfg, state)``: the model in eval mode on ``device``, the configuration
        (stored or given) and the :class:`EngineState` (``None`` when absent).

    Raises:
        CheckpointError: missing/corrupt file, or weights that do not match the model.
    """
    return _from_stored(read_checkpoint(path), path, device, cfg)


def _from_stored(
    data: dict[str, Any],
    path: str | Path,
    device: str | torch.device,
    cfg: Any = None,
    overrides: Sequence[str] = (),
) -> tuple[nn.Module, Any, EngineState | None]:
    """The model, configuration and state of a checkpoint dict read by :func:`read_checkpoint`."""
    from bpbreid.config import ConfigError, apply_overrides, config_from_dict
    from bpbreid.model import build_model

    if cfg is None:
        if not isinstance(data.get("config"), dict):
            raise CheckpointError(
                f"Checkpoint '{path}' stores no config: pass the configuration it was trained "
                "with (cfg=, or --config on the command line)."
            )
        try:
            cfg = config_from_dict(data["config"])
        except ConfigError as exc:
            raise CheckpointError(f"Checkpoint '{path}' holds an invalid config: {exc}") from None
        if overrides:
            cfg = apply_overrides(cfg, list(overrides))
    num_classes = data.get("num_classes")
    if num_classes is None:
        raise CheckpointError(f"Checkpoint '{path}' does not record num_classes; re-save it.")
    model = build_model(cfg, num_classes=int(num_classes))
    load_model_weights(model, data["model"], str(path))
    model.to(device).eval()
    state = EngineState.from_dict(data["state"]) if data.get("state") else None
    return model, cfg, state


# What load_any_checkpoint found: this package's format or an official BPBReID checkpoint.
BPBREID = "bpbreid"
OFFICIAL = "official"


class LoadedCheckpoint(NamedTuple):
    """A model read from a checkpoint of either kind (:func:`load_any_checkpoint`).

    Attributes:
        model: the model in eval mode on the requested device.
        cfg: the configuration (given, stored, or mapped from the official one).
        kind: :data:`BPBREID` (written by this package) or :data:`OFFICIAL`.
        state: the training :class:`EngineState` (this package's checkpoints only).
    """

    model: nn.Module
    cfg: Any
    kind: str
    state: EngineState | None = None

    def describe(self) -> str:
        """``"checkpoint"`` or ``"official BPBReID checkpoint"`` (for messages)."""
        return "official BPBReID checkpoint" if self.kind == OFFICIAL else "checkpoint"


def load_any_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    cfg: Any = None,
    strict: bool = True,
    overrides: Sequence[str] = (),
) -> LoadedCheckpoint:
    """The model of a checkpoint written by this package or of an official BPBReID one.

    The one place a checkpoint becomes a model: :func:`bpbreid.inference.load_model` and
    every command that reads a checkpoint (eval, visualize, infer, export) go through it.
    TorchScript archives are refused before the file is opened; this package's checkpoints
    are read with ``weights_only=True``; anything else is tried as an official checkpoint
    (restricted unpickler, :func:`bpbreid.official.load_official_checkpoint`). Weights
    holding inf/NaN are refused for both kinds.

    Args:
        path: ``last.pth`` / ``model.pth``, or an official ``.pth``.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` or a
            :class:`torch.device`.
        cfg: a :class:`~bpbreid.config.Config` to use instead of the stored (or, for an
            official checkpoint, the mapped) one; its model section must match the weights.
        strict: official checkpoints: refuse keys that do not match (False: load the
            tensors that match).
        overrides: dotted ``key=value`` overrides applied to the stored or mapped
            configuration (ignored when ``cfg`` is given: apply them to it first).

    Returns:
        :class:`LoadedCheckpoint` ``(model, cfg, kind, state)``.

    Raises:
        CheckpointError: missing, corrupt, unsafe or mismatched checkpoint, or weights
            holding inf/NaN; both readings' reasons when neither kind opens the file.
        ConfigError: an override that does not apply.
    """
    from .distributed import resolve_device

    path = Path(path).expanduser()
    if not path.is_file():
        raise _not_found(path)
    check_not_torchscript(path)  # refused once, with its own message, for both kinds
    target = device if isinstance(device, torch.device) else resolve_device(str(device))
    overrides = () if cfg is not None else tuple(overrides)
    try:
        data = read_checkpoint(path)
    except CheckpointError as ours:
        return _load_official(path, target, cfg, strict, overrides, ours)
    model, cfg, state = _from_stored(data, path, target, cfg, overrides)
    return LoadedCheckpoint(model, cfg, BPBREID, state)


def _load_official(
    path: Path,
    device: torch.device,
    cfg: Any,
    strict: bool,
    overrides: Sequence[str],
    ours: CheckpointError,
) -> LoadedCheckpoint:
    """An official checkpoint; ``ours``: why this package's format did not read it."""
    from bpbreid.official import load_official_checkpoint

    try:
        model, cfg, _ = load_official_checkpoint(
            path, device, cfg, strict=strict, overrides=overrides
        )
    except CheckpointError as official:
        raise CheckpointError(f"{ours}\nAs an official BPBReID checkpoint: {official}") from None
    bad = non_finite_entries(model.state_dict())
    if bad:
        raise CheckpointError(
            f"Checkpoint '{path}' holds non-finite weights (inf/NaN) in "
            f"{describe_entries(bad)}: a model with these weights gives meaningless "
            "results. Download the checkpoint again."
        )
    return LoadedCheckpoint(model, cfg, OFFICIAL, None)
