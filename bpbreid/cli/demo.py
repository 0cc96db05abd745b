"""``make demo`` / ``python -m bpbreid demo``: what part-based features buy under occlusion.

Trains the demo's models on the synthetic occluded-pedestrian set and compares them
(:func:`bpbreid.demo.run_demo`, which describes the models and the outputs).

Examples::

    python -m bpbreid demo --seed 0
    python -m bpbreid demo --models bpbreid,global_id --steps 300 --out outputs/demo_short
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bpbreid.cli import common
from bpbreid.demo import MODELS


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def parse_models(text: str) -> tuple[str, ...]:
    """``'bpbreid,global'`` -> ``('bpbreid', 'global')``; an unknown name is refused at once,
    before a configuration is loaded or a dataset generated, with the valid names."""
    models = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        what = f"unknown demo model(s) {', '.join(unknown)}" if unknown else "no demo model given"
        raise argparse.ArgumentTypeError(f"{what}; valid: {', '.join(MODELS)}")
    return models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", type=_count(0), default=0, help="training and data seed (default 0)"
    )
    parser.add_argument(
        "--preset", default=None, help="synthetic preset: tiny | small | default (config's)"
    )
    parser.add_argument(
        "--steps", type=_count(1), default=None, help="training steps per model (>= 1)"
    )
    common.add_config(
        parser,
        help="base config of every model (default: synthetic_cpu, or synthetic_gpu on CUDA)",
    )
    common.add_out(
        parser,
        default="outputs/demo",
        help="where results go (default: outputs/demo)",
        aliases=("--output-dir",),
    )
    parser.add_argument(
        "--models",
        type=parse_models,
        default=MODELS,
        help=f"comma-separated subset of {', '.join(MODELS)} (default: all)",
    )
    parser.add_argument(
        "--processes", type=_count(1), default=None, help="parallel trainings (CPU)"
    )
    common.add_device(parser)
    parser.add_argument("--no-figures", action="store_true", help="skip the ranking figures")
    common.add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    # Settings that cannot work are refused before torch is imported and data generated.
    common.config_from_args(args)

    from bpbreid.demo import run_demo

    run_demo(
        seed=args.seed,
        preset=args.preset,
        steps=args.steps,
        config=args.config,
        output_dir=args.out,
        models=args.models,
        processes=args.processes,
        device=common.device_from_args(args),
        overrides=args.overrides,
        figures=not args.no_figures,
        progress=common.progress_from_args(args),
    )
    return 0
