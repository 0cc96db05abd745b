"""Speed benchmarks: ``python -m bpbreid bench <name>`` (``all`` runs every one).

Each benchmark measures a baseline in the same run and prints ratios, so figures from
different machines compare. A benchmark is a module with ``add_arguments(parser)`` and
``run(args) -> int``; a module missing from this installation is left out.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from types import ModuleType

# benchmark name -> module
BENCHMARKS: dict[str, str] = {
    "eval": "bpbreid.bench.eval",
    "train": "bpbreid.bench.train",
}


def available_benchmarks() -> dict[str, str]:
    """The benchmarks whose module is installed."""
    return {
        name: module
        for name, module in BENCHMARKS.items()
        if importlib.util.find_spec(module) is not None
    }


def _load(name: str) -> ModuleType:
    return importlib.import_module(BENCHMARKS[name])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one sub-command per available benchmark, plus ``all``."""
    sub = parser.add_subparsers(dest="benchmark", metavar="<benchmark>")
    names = list(available_benchmarks())
    for name in names:
        module = _load(name)
        doc = (module.__doc__ or name).strip().splitlines()[0]
        cmd = sub.add_parser(name, help=doc, description=doc)
        module.add_arguments(cmd)
    everything = sub.add_parser(
        "all",
        help=f"run every benchmark with its defaults ({', '.join(names)})",
        description="Run every available benchmark with its default settings.",
    )
    everything.add_argument(
        "--small", action="store_true", help="the quick, reduced size of every benchmark"
    )


def run(args: argparse.Namespace) -> int:
    name = getattr(args, "benchmark", None)
    if not name:
        print("Benchmarks: " + ", ".join([*available_benchmarks(), "all"]))
        print("Run: python -m bpbreid bench <benchmark> [--small]")
        return 0
    if name != "all":
        return int(_load(name).run(args) or 0)
    status = 0
    for bench_name in available_benchmarks():
        module = _load(bench_name)
        # Each benchmark with its own defaults (only --small is shared).
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        knows_small = any("--small" in action.option_strings for action in parser._actions)
        small = getattr(args, "small", False) and knows_small
        bench_args = parser.parse_args(["--small"] if small else [])
        print(f"\n## bench {bench_name}\n")
        status = max(status, int(module.run(bench_args) or 0))
    return status
