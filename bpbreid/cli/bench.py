"""``python -m bpbreid bench <name>``: speed benchmarks (``all`` runs every one).

Each benchmark (:mod:`bpbreid.bench`) measures a baseline in the same run and prints
ratios, so figures from different machines compare; its sizes and settings are its own
flags (``python -m bpbreid bench eval --help``).

Examples::

    python -m bpbreid bench eval --small
    python -m bpbreid bench train --device cuda
    python -m bpbreid bench all --small
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one sub-command per available benchmark, plus ``all``."""
    from bpbreid.bench import available_benchmarks, load_benchmark

    sub = parser.add_subparsers(dest="benchmark", metavar="<benchmark>")
    names = list(available_benchmarks())
    for name in names:
        module = load_benchmark(name)
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
    from bpbreid.bench import available_benchmarks, load_benchmark

    name = getattr(args, "benchmark", None)
    if not name:
        print("Benchmarks: " + ", ".join([*available_benchmarks(), "all"]))
        print("Run: python -m bpbreid bench <benchmark> [--small]")
        return 0
    if name != "all":
        return int(load_benchmark(name).run(args) or 0)
    status = 0
    for bench_name in available_benchmarks():
        module = load_benchmark(bench_name)
        # Each benchmark with its own defaults (only --small is shared).
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        knows_small = any("--small" in action.option_strings for action in parser._actions)
        small = getattr(args, "small", False) and knows_small
        bench_args = parser.parse_args(["--small"] if small else [])
        print(f"\n## bench {bench_name}\n")
        status = max(status, int(module.run(bench_args) or 0))
    return status
