"""Command line: ``python -m bpbreid <command> ...`` (also installed as ``bpbreid``).

Each command lives in its own module with two functions, ``add_arguments(parser)`` and
``run(args) -> int``; heavy imports (torch, datasets) happen inside ``run`` so that
``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# command -> (module, one-line help). The module provides add_arguments() and run().
# A command whose module is not part of this installation is left out of --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("bpbreid.demo", "run the main job on the embedded synthetic data"),
    "data": (
        "bpbreid.data.cli",
        "datasets: check a layout, generate the synthetic set, get labels",
    ),
    "train": ("bpbreid.engine.cli_train", "train a model from a config"),
    "eval": ("bpbreid.engine.cli_eval", "evaluate a checkpoint on query/gallery sets"),
    "bench": ("bpbreid.bench", "speed benchmarks with a baseline measured in the same run"),
    "visualize": ("bpbreid.viz.cli", "ranking figures for chosen queries"),
    "labels": ("bpbreid.labels.cli", "parsing labels for new images from keypoints"),
    "infer": ("bpbreid.inference_cli", "embed and rank your own images with a checkpoint"),
    "export": ("bpbreid.export_cli", "export a model to ONNX or TorchScript"),
    "config": ("bpbreid.config_cli", "print a configuration (a bundled name or a YAML file)"),
}


def available_commands() -> dict[str, tuple[str, str]]:
    """The commands whose module is installed."""
    out = {}
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            found = importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:  # its parent package is not installed either
            found = False
        if found:
            out[name] = (module_name, help_text)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bpbreid",
        description="Body part-based occluded person re-identification (BPBReID).",
    )
    from bpbreid import __version__

    parser.add_argument("--version", action="version", version=f"bpbreid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (module_name, help_text) in available_commands().items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
