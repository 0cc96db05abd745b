"""``make demo`` / ``python -m bpbreid demo``: the main job.

Until the end-to-end demo (generate the synthetic set, train BPBReID and two global
baselines, evaluate on occluded and holistic queries) is in place, it reports what the
installed package can do and checks that the configuration system works.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def run(args: argparse.Namespace) -> int:
    from bpbreid.__main__ import available_commands
    from bpbreid.config import CONFIGS_DIR, load_config
    from bpbreid.notebook import find_repo_root, package_versions

    print("bpbreid: body part-based occluded person re-identification")
    print(" | ".join(f"{k} {v}" for k, v in package_versions().items()))
    configs = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))
    for name in configs:
        load_config(name)  # every bundled config must load
    print(f"bundled configs ({len(configs)}, all load): {', '.join(configs) or 'none yet'}")
    print("commands available:")
    for name, (_, help_text) in available_commands().items():
        print(f"  python -m bpbreid {name:<10} {help_text}")
    notebooks = sorted((find_repo_root() / "notebooks").glob("*.ipynb"))
    print("notebooks:")
    for nb in notebooks:
        print(f"  notebooks/{nb.name}")
    print(
        "The end-to-end demo (synthetic occluded set, BPBReID vs global baselines) "
        "is not available in this version yet."
    )
    return 0
