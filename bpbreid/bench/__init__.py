"""Speed benchmarks, each measuring a baseline in the same run and printing ratios, so that
figures from different machines compare.

A benchmark is a module of this package with ``add_arguments(parser)`` (its own sizes and
settings) and ``run(args) -> int`` (prints a table): :mod:`bpbreid.bench.eval` (part-based
distance and CMC/mAP ranking), :mod:`bpbreid.bench.train` (training step throughput).
Command line: ``python -m bpbreid bench <name>`` (:mod:`bpbreid.cli.bench`; ``all`` runs
every one).
"""

from __future__ import annotations

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


def load_benchmark(name: str) -> ModuleType:
    """The module of benchmark ``name`` (a key of :data:`BENCHMARKS`)."""
    return importlib.import_module(BENCHMARKS[name])
