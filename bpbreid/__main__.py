"""Command line: ``python -m bpbreid <command> ...`` (also installed as ``bpbreid``).

Each command is one module of :mod:`bpbreid.cli` with two functions,
``add_arguments(parser)`` and ``run(args) -> int``; heavy imports (torch, datasets) happen
inside ``run``, and only the chosen command's module is imported, so that ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterable

# command -> (module, one-line help). The module provides add_arguments() and run().
# A command whose module is not part of this installation is left out of --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("bpbreid.cli.demo", "run the main job on the embedded synthetic data"),
    "data": (
        "bpbreid.cli.data",
        "datasets: check a layout, prepare Occluded-Duke, generate the synthetic set, get labels",
    ),
    "train": ("bpbreid.cli.train", "train a model from a config"),
    "eval": ("bpbreid.cli.eval", "evaluate a checkpoint on query/gallery sets"),
    "bench": ("bpbreid.cli.bench", "speed benchmarks with a baseline measured in the same run"),
    "visualize": ("bpbreid.cli.visualize", "ranking figures for chosen queries"),
    "labels": ("bpbreid.cli.labels", "parsing labels for new images from keypoints"),
    "infer": ("bpbreid.cli.infer", "embed and rank your own images with a checkpoint"),
    "export": (
        "bpbreid.cli.export",
        "export a model to ONNX or TorchScript (--flat: one vector per box, for trackers)",
    ),
    "config": ("bpbreid.cli.config", "print a configuration (a bundled name or a YAML file)"),
}


def _installed(module_name: str) -> bool:
    """Whether a module exists, found without running its packages' ``__init__``.

    ``importlib.util.find_spec('a.b.c')`` imports ``a.b`` first, and a package that imports
    torch on import would make every command line, ``--help`` included, wait for it.
    """
    first, *rest = module_name.split(".")
    spec = importlib.util.find_spec(first)
    for part in rest:
        if spec is None or not spec.submodule_search_locations:
            return False
        spec = importlib.machinery.PathFinder.find_spec(part, list(spec.submodule_search_locations))
    return spec is not None


def available_commands() -> dict[str, tuple[str, str]]:
    """The commands whose module is installed."""
    return {
        name: (module_name, help_text)
        for name, (module_name, help_text) in COMMANDS.items()
        if _installed(module_name)
    }


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The command-line parser.

    Args:
        commands: the commands whose module is imported and whose arguments are added;
            None: all of them. Every command is listed in ``--help`` either way. A command
            line names one command, and importing only its module keeps another command's
            imports (torch, for some) from delaying it, or its errors, by seconds.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bpbreid",
        description="Body part-based occluded person re-identification (BPBReID).",
    )
    from bpbreid import __version__

    parser.add_argument("--version", action="version", version=f"bpbreid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    wanted = None if commands is None else set(commands)
    for name, (module_name, help_text) in available_commands().items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if wanted is not None and name not in wanted:
            continue
        module = importlib.import_module(module_name)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command line; returns the exit status (2: a configuration or input error).

    A malformed command line exits through argparse (``SystemExit(2)``, with the usage).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    # The command is the first argument (the top-level parser has only --help and --version).
    parser = build_parser(argv[:1])
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Overrides written after a flag (`train --config c --out o key=value`): argparse stops
        # a positional list at the first flag, so the later ones arrive here.
        stray = [t for t in extra if t.startswith("-") or "=" not in t]
        if stray or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.overrides = [*(args.overrides or []), *extra]
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        # Errors meant for people: print the message, not a traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[BaseException], ...]:
    from bpbreid.config import ConfigError
    from bpbreid.errors import BPBReIDError

    return (BPBReIDError, ConfigError, FileNotFoundError)


if __name__ == "__main__":
    sys.exit(main())
