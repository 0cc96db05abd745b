"""GiLt ablation on the synthetic set: one model per loss preset, same budget.

    python benchmarks/gilt_ablation.py [--steps 1000] [--seed 0] [--presets gilt,global_only,...]

Trains the ``synthetic_cpu`` configuration once per preset of ``bpbreid.losses.LOSS_PRESETS``
(in parallel single-threaded processes on a CPU), evaluates each on the occluded (``query``)
and holistic (``query_holistic``) queries, and writes
``notebooks/results/gilt_ablation.json`` (read by notebook 03):
``{"results": [{"preset", "query_set", "rank1", "mAP"}, ...], "steps", "seed", "device"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from bpbreid.config import apply_overrides, copy_config, load_config
from bpbreid.demo import clear_runs, evaluate_run, train_all
from bpbreid.losses import LOSS_PRESETS
from bpbreid.notebook import find_repo_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presets", default=",".join(LOSS_PRESETS))
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--output-dir", default="outputs/gilt_ablation")
    args = parser.parse_args()

    root = find_repo_root()
    base = load_config(
        "synthetic_cpu",
        [f"train.max_steps={args.steps}", f"train.seed={args.seed}", "train.device=cpu"],
    )
    configs = {}
    for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
        cfg = copy_config(base)
        cfg.name = f"gilt_{preset}"
        cfg.loss.preset = preset
        cfg.train.loggers = ["csv"]
        cfg.train.test_at_end = False  # evaluate_run below evaluates each model once
        cfg.train.output_dir = str(root / args.output_dir / preset)
        configs[preset] = apply_overrides(cfg, [])
    start = time.time()
    processes = args.processes or min(len(configs), os.cpu_count() or 1)
    clear_runs(configs.values())  # earlier runs' files would read as progress
    train_all(configs, processes=processes)
    rows = []
    for preset, cfg in configs.items():
        result = evaluate_run(cfg, device="cpu", progress=False)
        for query_set, metrics in result.metrics.items():
            rows.append(
                {
                    "preset": preset,
                    "query_set": query_set,
                    "rank1": round(float(metrics["rank1"]), 2),
                    "mAP": round(float(metrics["mAP"]), 2),
                }
            )
            print(
                f"{preset:<20} {query_set:<15} R1 {metrics['rank1']:5.1f}  mAP {metrics['mAP']:5.1f}"
            )
    out = root / "notebooks" / "results" / "gilt_ablation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "results": rows,
        "steps": args.steps,
        "seed": args.seed,
        "device": f"cpu ({os.cpu_count()} cores)",
        "seconds": round(time.time() - start, 1),
        "command": "python benchmarks/gilt_ablation.py",
    }
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
