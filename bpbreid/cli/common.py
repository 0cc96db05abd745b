"""What every command shares: its flags, the checks before anything heavy, the checkpoint loader.

Each flag has one spelling and one default, added by one function here:

* ``--config`` + positional ``key=value`` overrides (:func:`add_config`);
* ``--checkpoint`` and ``--no-strict`` (:func:`add_checkpoint`);
* ``--device``: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N``
  (:func:`add_device`);
* ``--out``: the output file or folder (:func:`add_out`);
* ``--no-progress`` (:func:`add_no_progress`).

Spellings that earlier versions accepted (``--output-dir``, ``-o``, ``--output``, ``-c``,
``-k``, ``--quiet``) still parse, hidden from ``--help``, so existing scripts keep working.

A command loads its configuration with :func:`config_from_args` before it imports torch,
so a typo in a key or a value outside its range fails at once, and opens a checkpoint with
:func:`load_checkpoint_from_args` (one loader for this package's and the official
checkpoints: :func:`bpbreid.engine.checkpoint.load_any_checkpoint`).

Nothing here imports torch at module level: ``python -m bpbreid <command> --help`` stays
instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bpbreid.config import Config
    from bpbreid.engine.checkpoint import LoadedCheckpoint

DEVICE_HELP = "auto (default: CUDA when available, else CPU), cpu, cuda or cuda:N"


def hidden_alias(parser: Any, *flags: str, dest: str, **kwargs: Any) -> None:
    """Accept ``flags`` as another spelling of ``dest``, without listing them in ``--help``."""
    parser.add_argument(
        *flags, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs
    )


def add_config(
    parser: argparse.ArgumentParser,
    *,
    required: bool = False,
    help: str | None = None,
) -> None:
    """``--config NAME|YAML`` and the positional dotted overrides (``args.overrides``).

    Args:
        required: the command cannot run without a configuration (``train``); otherwise a
            command without ``--config`` uses the checkpoint's (or the default) one and the
            overrides apply to it.
        help: what ``--config`` means for this command.
    """
    text = help or "a YAML file or the name of a bundled config (python -m bpbreid config --list)"
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--config", default=None, metavar="NAME|YAML", help=text)
    hidden_alias(group, "-c", dest="config")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted config overrides in YAML syntax, e.g. train.lr=1e-3 data.root=/data",
    )


def add_checkpoint(
    parser: argparse.ArgumentParser,
    *,
    required: bool = True,
    group: Any = None,
    help: str | None = None,
) -> None:
    """``--checkpoint PATH`` (this package's ``.pth`` or an official one) and ``--no-strict``.

    Args:
        required: the command needs a checkpoint.
        group: a mutually exclusive group to put ``--checkpoint`` in (``infer``:
            ``--checkpoint`` or ``--official``); it then decides whether one is required.
        help: what ``--checkpoint`` means for this command.
    """
    text = help or "a model.pth / last.pth written by training, or an official BPBReID .pth"
    target = group if group is not None else parser.add_mutually_exclusive_group(required=required)
    target.add_argument("--checkpoint", default=None, metavar="PATH", help=text)
    hidden_alias(target, "-k", dest="checkpoint")
    parser.add_argument(
        "--no-strict",
        action="store_true",
        help="official checkpoints: load the tensors that match instead of refusing",
    )


def add_device(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--device``; read it with :func:`device_from_args` (``auto`` when not given).

    The value stays None when the flag is not given, so that ``train`` keeps the
    configuration's ``train.device`` (itself ``auto`` unless a config says otherwise).
    """
    parser.add_argument("--device", default=None, metavar="DEVICE", help=help or DEVICE_HELP)


def add_out(
    parser: argparse.ArgumentParser,
    *,
    help: str,
    default: str | None = None,
    aliases: tuple[str, ...] = (),
    required: bool = False,
) -> None:
    """``--out PATH``: where the command writes; ``aliases``: former spellings, hidden."""
    parser.add_argument("--out", default=default, required=required, metavar="PATH", help=help)
    if aliases:
        hidden_alias(parser, *aliases, dest="out")


def add_no_progress(parser: argparse.ArgumentParser, aliases: tuple[str, ...] = ()) -> None:
    """``--no-progress``: no progress bars (logs, CI); ``aliases``: former spellings, hidden."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    if aliases:
        hidden_alias(parser, *aliases, dest="no_progress", action="store_true")


def device_from_args(args: argparse.Namespace) -> str:
    """The ``--device`` value; ``auto`` when the flag was not given."""
    return getattr(args, "device", None) or "auto"


def progress_from_args(args: argparse.Namespace) -> bool:
    """Whether to show progress bars (no ``--no-progress``)."""
    return not getattr(args, "no_progress", False)


def config_from_args(
    args: argparse.Namespace, *, required: bool = False, extra: Sequence[str] = ()
) -> Config | None:
    """The ``--config`` configuration with the overrides, or None; before anything heavy.

    Call it first in ``run``, before torch, datasets or checkpoints are loaded: a setting
    that cannot work, or a malformed override, is refused at once (exit status 2). Without
    ``--config`` the overrides are checked on their own (key names, types, ranges); the
    checks that need the base configuration run when they are applied to the checkpoint's
    or the default configuration.

    Args:
        args: the parsed command line (``config``, ``overrides``).
        required: refuse to run without ``--config``.
        extra: overrides the command derives from its own flags (``train --out``), applied
            after the user's.

    Raises:
        ConfigError: unknown key, bad value, unreadable YAML, or no ``--config`` where
            ``required``.
    """
    from bpbreid.config import ConfigError, check_overrides, load_config

    config = getattr(args, "config", None)
    overrides = [*(getattr(args, "overrides", None) or []), *extra]
    if config is not None:
        return load_config(config, overrides)
    if required:
        raise ConfigError("This command needs --config (a bundled name or a YAML file).")
    check_overrides(overrides)
    return None


def load_checkpoint_from_args(
    args: argparse.Namespace,
    cfg: Config | None = None,
    *,
    device: str | None = None,
) -> LoadedCheckpoint:
    """The model of ``--checkpoint``, this package's or an official one.

    Args:
        args: the parsed command line (``checkpoint``, ``config``, ``overrides``,
            ``device``, ``no_strict``).
        cfg: what :func:`config_from_args` returned (computed here when ``--config`` is
            given and ``cfg`` is not); None without ``--config``: the checkpoint's own
            configuration, with the overrides applied.
        device: where the model goes, instead of ``--device`` (``export`` works on the CPU).

    Returns:
        :class:`bpbreid.engine.checkpoint.LoadedCheckpoint` ``(model, cfg, kind, state)``.

    Raises:
        CheckpointError: missing, unsafe, corrupt or mismatched checkpoint.
    """
    from bpbreid.engine.checkpoint import load_any_checkpoint

    if cfg is None and getattr(args, "config", None) is not None:
        cfg = config_from_args(args)
    return load_any_checkpoint(
        args.checkpoint,
        device=device or device_from_args(args),
        cfg=cfg,
        strict=not getattr(args, "no_strict", False),
        overrides=list(getattr(args, "overrides", None) or []),
    )
