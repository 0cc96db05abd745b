"""Read an official checkpoint and load it into our model.

:func:`read_official_checkpoint` opens the file with the restricted unpickler and splits it
into weights, config and the rest; :func:`load_official_checkpoint` builds our model from the
translated config, maps the official names onto it and reports key by key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bpbreid.config import Config, apply_overrides
from bpbreid.errors import CheckpointError
from bpbreid.official.config import OFFICIAL_BACKBONES, OfficialConfig, config_from_official
from bpbreid.official.keys import KeyMappingReport, map_official_state_dict
from bpbreid.official.safe_load import restricted_torch_load

log = logging.getLogger(__name__)

__all__ = [
    "OfficialCheckpoint",
    "load_official_checkpoint",
    "num_classes_of",
    "official_backbone_of",
    "read_official_checkpoint",
]


@dataclass
class OfficialCheckpoint:
    """The parts of an official checkpoint file.

    Attributes:
        state_dict: the model weights (official names).
        config: the training config (:class:`OfficialConfig`), or None when absent.
        extra: the other entries (epoch, rank1, mAP...), optimizer/scheduler left out.
    """

    state_dict: dict[str, torch.Tensor]
    config: OfficialConfig | None
    extra: dict[str, Any]


def read_official_checkpoint(path: str | Path, map_location: Any = "cpu") -> OfficialCheckpoint:
    """Open an official checkpoint with the restricted unpickler.

    Accepts a dict with ``state_dict`` (+ ``config``) as the official engine saves, or a
    bare state dict.

    Raises:
        CheckpointError: unreadable file, a refused global, or no state dict inside.
    """
    data = restricted_torch_load(path, map_location)
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        state = data["state_dict"]
        config = data.get("config")
        extra = {
            k: v
            for k, v in data.items()
            if k not in ("state_dict", "config", "optimizer", "scheduler")
        }
    elif (
        isinstance(data, Mapping)
        and data
        and all(isinstance(v, torch.Tensor) for v in data.values())
    ):
        state, config, extra = data, None, {}
    else:
        found = (
            ", ".join(sorted(map(str, data))[:8])
            if isinstance(data, Mapping)
            else type(data).__name__
        )
        raise CheckpointError(
            f"'{path}' is not an official BPBReID checkpoint: no 'state_dict' (found: {found})."
        )
    if config is not None and not isinstance(config, Mapping):
        config = None
    if isinstance(config, Mapping) and not isinstance(config, OfficialConfig):
        config = OfficialConfig(config)
    return OfficialCheckpoint(
        state_dict={k: v for k, v in state.items() if isinstance(v, torch.Tensor)},
        config=config,  # type: ignore[arg-type]
        extra=extra,
    )


def num_classes_of(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Training identities of an official state dict (rows of the global classifier)."""
    for key, value in state_dict.items():
        if key.removeprefix("module.") == "global_identity_classifier.classifier.weight":
            return int(value.shape[0])
    raise CheckpointError(
        "The checkpoint has no 'global_identity_classifier.classifier.weight': it is not a "
        "BPBReID model."
    )


def official_backbone_of(checkpoint: OfficialCheckpoint, cfg: Config | None = None) -> str | None:
    """The official backbone name (``resnet50``, ``resnet50_ibn_a``, ``hrnet32``) of a checkpoint.

    Read from its config (``model.bpbreid.backbone``), else from ``cfg``'s backbone mapped back
    to the official name; None when neither says (e.g. a bare state dict and no ``cfg``).
    """
    if checkpoint.config is not None:
        model = checkpoint.config.get("model")
        bpbreid = model.get("bpbreid") if isinstance(model, Mapping) else None
        name = bpbreid.get("backbone") if isinstance(bpbreid, Mapping) else None
        if isinstance(name, str):
            return name
    if cfg is not None:
        for official, ours in OFFICIAL_BACKBONES.items():
            if ours == cfg.model.backbone:
                return official
    return None


def load_official_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    cfg: Config | None = None,
    strict: bool = True,
    overrides: Sequence[str] = (),
) -> tuple[torch.nn.Module, Config, KeyMappingReport]:
    """Build our model from an official checkpoint and load its weights.

    Args:
        path: an official ``.pth`` (e.g. ``bpbreid_occluded_duke_hrnet32_10670.pth``).
        device: where the model goes.
        cfg: our configuration to use instead of the one mapped from the checkpoint.
        strict: raise when a model tensor is missing, an official tensor has no
            counterpart, or a shape differs (False: load what matches and report).
        overrides: dotted ``key=value`` overrides applied to the mapped configuration
            before the model is built (ignored when ``cfg`` is given).

    Returns:
        ``(model, cfg, report)``: the model in eval mode, the configuration, the key report
        (also logged: tensors loaded, and the unused official modules that were ignored).

    Raises:
        CheckpointError: unreadable or unsafe file, unsupported settings, or (strict) keys
            that do not match.
    """
    from bpbreid.model import build_model

    checkpoint = read_official_checkpoint(path)
    state = {k.removeprefix("module."): v for k, v in checkpoint.state_dict.items()}
    if cfg is None:
        if checkpoint.config is None:
            raise CheckpointError(
                f"'{path}' stores no config: pass cfg= (our Config with the model settings "
                "the checkpoint was trained with)."
            )
        cfg = config_from_official(checkpoint.config, state)
        if overrides:
            cfg = apply_overrides(cfg, list(overrides))
    model = build_model(cfg, num_classes=num_classes_of(state))
    mapped, report = map_official_state_dict(
        state, model.state_dict(), official_backbone_of(checkpoint, cfg)
    )
    log.info("Official checkpoint '%s': %s", path, report.summary())
    if strict and not report.ok:
        raise CheckpointError(
            f"Checkpoint '{path}' does not match the model built from its config:\n"
            f"{report.summary()}\nPass strict=False to load the matching tensors anyway."
        )
    model.load_state_dict(mapped, strict=False)
    model.to(device).eval()
    return model, cfg, report
