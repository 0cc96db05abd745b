"""``make demo`` / ``python -m bpbreid demo``: what part-based features buy under occlusion.

On the embedded synthetic occluded-pedestrian set, three models are trained with the same
budget and evaluated on occluded and holistic queries:

* ``bpbreid``: the full model (part attention, GiLt loss, visibility-aware distance);
* ``global``: a global-only model (GAP + BNNeck, identity + triplet losses, no part head);
* ``global_id``: the same with the identity loss only (the stronger global baseline here);
* ``global_pixel``: the ``global_id`` embedding on a backbone that also trains the
  part-attention head with the pixel loss (its weight capped at 5): the control that shows
  how much of the gain is multi-task supervision rather than part matching.

Everything lands in ``outputs/demo/``: ``results.json``, ``training_curves.png``, ranking
figures of the same occluded queries for ``bpbreid``, ``global`` and ``global_id``, and each
run's folder.
On a CPU the ``synthetic_cpu`` configuration is used, on CUDA ``synthetic_gpu``.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

MODELS = ("bpbreid", "global", "global_id", "global_pixel")
# Relative cost of one training step of each model on a CPU (synthetic_cpu, one thread,
# data loading included; bpbreid = 1). Used to start the longest trainings first and to
# extend the speed measured on the running machine to the trainings not started yet; the
# time itself is always measured, never assumed.
RELATIVE_STEP_COST = {"bpbreid": 1.0, "global": 0.69, "global_id": 0.64, "global_pixel": 0.78}
# Until the first steps are measured: seconds per step of bpbreid, and of the evaluation
# and figures after training, per bpbreid second-per-step (both measured on a 2-core CPU).
FIRST_GUESS_SECONDS_PER_STEP = 0.3
AFTER_TRAINING_STEPS = 150
# The control's pixel-loss weight is capped: one global embedding with an identity loss does
# not hold up against a pixel loss weighted as strongly as bpbreid's (synthetic_cpu, seed 0:
# rank-1 / mAP on occluded queries 34.5 / 34.5 at weight 2, 37.0 / 34.3 at 5, 20.0 / 22.1 at
# 20), and a control weakened that way would flatter the part-based model.
CONTROL_MAX_PIXEL_WEIGHT = 5.0


# --------------------------------------------------------------------------------------
# Configurations of the three models
# --------------------------------------------------------------------------------------


def model_configs(base: Any, output_dir: Path, seed: int) -> dict[str, Any]:
    """The demo configurations, identical but for the model and the losses."""
    from bpbreid.config import EmbeddingLossWeights, copy_config

    configs: dict[str, Any] = {}
    for name in MODELS:
        cfg = copy_config(base)
        cfg.name = name
        cfg.train.seed = seed
        cfg.data.synthetic.seed = seed
        cfg.train.output_dir = str(output_dir / f"{name}_seed{seed}")
        cfg.train.loggers = ["csv"]
        # Evaluated once, by evaluate_run after training (which keeps the details the
        # rankings and visibility rates need), not also by the trainer.
        cfg.train.eval_freq = 0
        cfg.train.test_at_end = False
        cfg.loss.preset = None
        if name != "bpbreid":
            # One global embedding: identity + triplet losses as BoT (`global`), or identity
            # only (`global_id`, `global_pixel`): from random initialization at this budget
            # the batch-hard triplet on the global embedding hurts it (see the README).
            triplet = 1.0 if name == "global" else 0.0
            cfg.loss.weights = {"global": EmbeddingLossWeights(id=1.0, tr=triplet)}
            cfg.model.bpbreid.test_embeddings = ["bn_global"]
        if name in ("global", "global_id"):
            cfg.model.bpbreid.part_mode = "global"
            cfg.loss.pixel_weight = 0.0
        if name == "global_pixel":
            cfg.loss.pixel_weight = min(cfg.loss.pixel_weight, CONTROL_MAX_PIXEL_WEIGHT)
        configs[name] = cfg
    return configs


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


def _count_steps(folder: Path) -> int:
    path = folder / "steps.csv"
    if not path.is_file():
        return 0
    try:
        with path.open() as handle:
            return max(0, sum(1 for _ in handle) - 1)
    except OSError:
        return 0


def clear_runs(configs: Any) -> None:
    """Remove the checkpoints and logs of earlier runs in these configurations' folders.

    Each demo or ablation run trains from scratch; the progress bar counts the rows of each
    run's ``steps.csv``, so an earlier run's files would read as progress (and its
    ``model.pth`` as a result if a training failed) until the new run replaces them.
    """
    for cfg in configs:
        for stale in ("last.pth", "model.pth", "steps.csv", "metrics.csv"):
            (Path(cfg.train.output_dir) / stale).unlink(missing_ok=True)


def longest_first(configs: dict[str, Any]) -> list[str]:
    """Names in the order to start them: the longest training first.

    With fewer processes than trainings, starting the longest one first keeps every core
    busy to the end (longest-processing-time scheduling); in submission order the slowest
    model could start last and finish alone on one core.
    """
    return sorted(
        configs,
        key=lambda n: -int(configs[n].train.max_steps or 0) * RELATIVE_STEP_COST.get(n, 1.0),
    )


def schedule_seconds(remaining: dict[str, float], running: list[str], processes: int) -> float:
    """Seconds until every training is done, given each one's remaining seconds.

    ``running`` trainings occupy processes now; the others start, in the order of
    ``remaining``, on whichever process frees first.
    """
    slots = sorted(remaining[n] for n in running)
    slots += [0.0] * max(0, processes - len(slots))
    for name, seconds in remaining.items():
        if name in running:
            continue
        slots.sort()
        slots[0] += seconds
    return max(slots) if slots else 0.0


class TimeEstimate:
    """Remaining time of the demo from the speed measured on the running machine.

    Each training's seconds per step come from its own progress once it has run a few
    steps (``steps.csv`` rows over wall time, the first rows excluded as warm-up); a
    training not started yet takes the measured speed of the running ones scaled by
    :data:`RELATIVE_STEP_COST`. The evaluation after training is priced in the same unit.
    """

    def __init__(self, configs: dict[str, Any], order: list[str], processes: int) -> None:
        self.configs = configs
        self.order = order
        self.processes = processes
        self.total = {n: int(configs[n].train.max_steps or 0) for n in order}
        self.first_seen: dict[str, tuple[float, int]] = {}
        self.seconds_per_step: dict[str, float] = {}

    def update(self, now: float, done: dict[str, int], warmup_steps: int = 5) -> None:
        for name, steps in done.items():
            if steps < warmup_steps or steps >= self.total[name]:
                continue
            if name not in self.first_seen:
                self.first_seen[name] = (now, steps)
                continue
            t0, s0 = self.first_seen[name]
            if steps - s0 >= 10 and now - t0 >= 10:
                self.seconds_per_step[name] = (now - t0) / (steps - s0)

    @property
    def measured(self) -> bool:
        return bool(self.seconds_per_step)

    def unit(self) -> float:
        """Measured seconds per step of bpbreid (or the first guess)."""
        if not self.seconds_per_step:
            return FIRST_GUESS_SECONDS_PER_STEP
        ratios = [sps / RELATIVE_STEP_COST.get(n, 1.0) for n, sps in self.seconds_per_step.items()]
        return sum(ratios) / len(ratios)

    def remaining_seconds(self, done: dict[str, int]) -> float:
        unit = self.unit()
        remaining = {}
        for name in self.order:
            sps = self.seconds_per_step.get(name, unit * RELATIVE_STEP_COST.get(name, 1.0))
            remaining[name] = max(0, self.total[name] - done.get(name, 0)) * sps
        running = [n for n in self.order if 0 < done.get(n, 0) < self.total[n]]
        return schedule_seconds(remaining, running, self.processes) + self.after_training()

    def after_training(self) -> float:
        return AFTER_TRAINING_STEPS * self.unit()


def train_all(configs: dict[str, Any], processes: int, progress: bool = True) -> dict[str, Any]:
    """Train the configurations as parallel single-threaded processes, with one bar.

    The longest trainings start first; once the first steps are measured, the estimated
    time of the whole demo is printed and the bar shows the time left.
    """
    from tqdm.auto import tqdm

    from bpbreid.engine.pool import run_parallel

    names = longest_first(configs)
    total = sum(int(c.train.max_steps or 0) for c in configs.values())
    outcome: dict[str, Any] = {}
    estimate = TimeEstimate(configs, names, processes)
    start = time.time()

    def work() -> None:
        try:
            outcome["states"] = run_parallel([configs[n] for n in names], processes=processes)
        except BaseException as exc:  # re-raised in the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    bar = tqdm(
        total=total,
        desc="training",
        unit="step",
        disable=not progress,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
    )
    announced = False
    while thread.is_alive():
        thread.join(timeout=2.0)
        done = {n: _count_steps(Path(configs[n].train.output_dir)) for n in names}
        now = time.time()
        estimate.update(now, done)
        bar.update(max(0, min(sum(done.values()), total) - bar.n))
        if estimate.measured:
            left = estimate.remaining_seconds(done)
            bar.set_postfix_str(f"about {_minutes(left)} left", refresh=False)
            if not announced:
                announced = True
                spent = now - start
                tqdm.write(
                    f"Estimated time: about {_minutes(spent + left)} for the trainings and the "
                    f"evaluation (measured on this machine: "
                    f"{estimate.unit():.2f} s per bpbreid step)."
                )
    bar.close()
    if "error" in outcome:
        raise outcome["error"]
    return {name: outcome["states"][names.index(name)] for name in configs}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"


def _metrics(result: Any) -> dict[str, dict[str, float]]:
    names = {"query": "occluded", "query_holistic": "holistic"}
    out = {}
    for set_name, label in names.items():
        if set_name in result.metrics:
            m = result.metrics[set_name]
            out[label] = {"rank1": round(float(m["rank1"]), 2), "mAP": round(float(m["mAP"]), 2)}
    return out


def label_visibility(mask_path: str, cfg: Any) -> Any:
    """Visibility ``[K]`` of a labelled image by the model's own rule, and where the labels
    show no pixel of a part at all.

    The labels become the training targets at the part head's resolution (1/4 of the
    image); a part is visible when it wins the argmax at some pixel of those targets, the
    rule the model applies to its predicted masks. A part is *hidden* only when no pixel of
    the label, at the label's own resolution, shows it (above the mask threshold): a thin
    part that loses the argmax after shrinking (a head, a sliver of torso beside an
    occluder) is small, not occluded.

    Returns:
        ``(visible, hidden)``: two lists of K booleans (``hidden`` implies not ``visible``).
    """
    from bpbreid.data.datasets import label_size
    from bpbreid.data.parsing import (
        hard_labels,
        load_label_parts,
        part_targets,
        resize_maps,
    )

    masks = cfg.model.bpbreid.masks
    parts = load_label_parts(mask_path, masks.preprocess)
    targets = part_targets(
        resize_maps(parts, label_size(cfg), mode="area"),
        strategy=masks.background_computation_strategy,
        threshold=masks.mask_filtering_threshold,
        softmax_weight=masks.softmax_weight,
    )
    labels = hard_labels(targets)
    visible = [bool((labels == k + 1).any()) for k in range(parts.shape[0])]
    # Exclusive by construction: with the 'sum' background two overlapping weak parts can win
    # the argmax without any label pixel above the threshold.
    hidden = [
        not seen and not bool((part > masks.mask_filtering_threshold).any())
        for seen, part in zip(visible, parts, strict=True)
    ]
    return visible, hidden


def _visibility_rates(result: Any, cfg: Any) -> dict[str, Any]:
    """Per part: share of queries where the model sees it and where the labels show it;
    how well the two agree: hidden parts seen as invisible, visible ones seen as visible."""
    import numpy as np

    from bpbreid.data.datasets import build_dataset_from_config

    data = build_dataset_from_config(cfg, require_masks=False)
    label_of = {
        s.img_path: s.mask_path
        for samples in (data.query, *data.extra_queries.values())
        for s in samples
    }
    names = result.embedding_names
    part_columns = [i for i, n in enumerate(names) if "foreground" not in n and "global" not in n]
    rates: dict[str, Any] = {"parts": [names[c] for c in part_columns], "labels": {}}
    for set_name, label in (("query", "occluded"), ("query_holistic", "holistic")):
        if set_name not in result.queries:
            continue
        query = result.queries[set_name]
        predicted = np.asarray(query["visibility"], dtype=np.float64)[:, part_columns] > 0.5
        rates[label] = [round(float(v), 3) for v in predicted.mean(0)]
        paths = [label_of.get(str(p)) for p in query["img_paths"]]
        if not all(p is not None for p in paths):
            continue
        truth, hidden = (np.array(t) for t in zip(*(label_visibility(p, cfg) for p in paths)))
        out = rates["labels"]
        out[label] = [round(float(v), 3) for v in truth.mean(0)]
        out[f"{label}_hidden_parts"] = int(hidden.sum())
        if hidden.any():
            out[f"{label}_hidden_seen_as_invisible"] = round(
                float((~predicted & hidden).sum() / hidden.sum()), 3
            )
        out[f"{label}_visible_seen_as_visible"] = round(
            float((predicted & truth).sum() / max(1, truth.sum())), 3
        )
        out[f"{label}_agreement"] = round(float((predicted == truth).mean()), 3)
    return rates


def evaluate_run(cfg: Any, device: str, progress: bool) -> Any:
    """Load a finished run's model and evaluate it on every query set."""
    from bpbreid.data.datasets import build_dataset_from_config, build_loaders
    from bpbreid.engine import evaluate
    from bpbreid.engine.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(Path(cfg.train.output_dir) / "model.pth", device=device)
    data = build_dataset_from_config(cfg, require_masks=False)
    loaders = build_loaders(cfg, data)
    extra = {k: v for k, v in loaders.items() if k not in ("train", "query", "gallery")}
    return evaluate(
        model, loaders["query"], loaders["gallery"], cfg, extra_query_loaders=extra,
        progress=progress,
    )  # fmt: skip


def plot_training_curves(configs: dict[str, Any], path: Path) -> Path:
    """Total loss per step of every run, smoothed, in one figure."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, cfg in configs.items():
        steps_file = Path(cfg.train.output_dir) / "steps.csv"
        if not steps_file.is_file():
            continue
        with steps_file.open() as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("total")]
        steps = np.array([float(r["step"]) for r in rows])
        loss = np.array([float(r["total"]) for r in rows])
        window = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("total training loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Training loss (moving average)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def save_ranking_figures(
    results: dict[str, Any], out_dir: Path, count: int = 4, seed: int = 0
) -> list[Path]:
    """Ranking figures of the same occluded queries for bpbreid and the global baselines
    (``global``, ``global_id``), in ``rankings_<model>_seed<seed>/`` (earlier figures of that
    folder are replaced)."""
    from bpbreid.viz.ranking import save_rankings

    paths: list[Path] = []
    main = results.get("bpbreid")
    if main is None:
        return paths
    # The queries where part-based matching changes the answer are the instructive ones:
    # those bpbreid gets right at rank 1 and global does not, then the rest by index.
    # Compared with the stronger global baseline when it ran.
    baseline = next((n for n in ("global_id", "global") if n in results), None)
    first = main.details["query"].first_match_rank if "query" in main.details else None
    chosen: list[int] = []
    if first is not None and baseline is not None:
        other = results[baseline].details["query"].first_match_rank
        chosen = [i for i in range(len(first)) if first[i] == 0 and other[i] != 0][:count]
    if not chosen:
        chosen = list(range(count))
    for name in ("bpbreid", "global", "global_id"):
        if name in results:
            folder = out_dir / f"rankings_{name}_seed{seed}"
            for stale in folder.glob("*.png"):
                stale.unlink()
            paths += list(save_rankings(results[name], folder, which=chosen, topk=5))
    return paths


def _print_table(models: dict[str, Any]) -> str:
    header = f"{'model':<14} {'occluded R1':>11} {'mAP':>6}   {'holistic R1':>11} {'mAP':>6}"
    lines = [header, "-" * len(header)]
    for name, m in models.items():
        occ, hol = m.get("occluded", {}), m.get("holistic", {})
        lines.append(
            f"{name:<14} {occ.get('rank1', math.nan):>11.1f} {occ.get('mAP', math.nan):>6.1f}   "
            f"{hol.get('rank1', math.nan):>11.1f} {hol.get('mAP', math.nan):>6.1f}"
        )
    return "\n".join(lines)


def _visibility_table(vis: dict[str, Any]) -> str:
    """Predicted vs labelled visibility rates per part."""
    labels = vis.get("labels", {})
    lines = ["bpbreid part visibility (share of queries where the part is visible):"]
    lines.append(f"  {'part':<22} {'occluded: model':>15} {'labels':>7}   {'holistic: model':>15}")
    for i, part in enumerate(vis["parts"]):
        occ = vis.get("occluded", [math.nan] * (i + 1))[i]
        truth = labels.get("occluded", [math.nan] * (i + 1))[i]
        hol = vis.get("holistic", [math.nan] * (i + 1))[i]
        lines.append(f"  {part:<22} {occ:>15.2f} {truth:>7.2f}   {hol:>15.2f}")
    if "occluded_hidden_seen_as_invisible" in labels:
        lines.append(
            f"  parts the labels show nowhere on occluded queries: "
            f"{labels['occluded_hidden_parts']}, seen as invisible: "
            f"{100 * labels['occluded_hidden_seen_as_invisible']:.0f}%"
        )
    if "occluded_visible_seen_as_visible" in labels:
        lines.append(
            "  visible parts seen as visible: "
            f"{100 * labels['occluded_visible_seen_as_visible']:.0f}% (occluded queries), "
            f"{100 * labels.get('holistic_visible_seen_as_visible', math.nan):.0f}% (holistic)"
        )
    return "\n".join(lines)


def run_demo(
    seed: int = 0,
    preset: str | None = None,
    steps: int | None = None,
    config: str | None = None,
    output_dir: str | Path = "outputs/demo",
    models: tuple[str, ...] = MODELS,
    processes: int | None = None,
    device: str = "auto",
    overrides: list[str] | None = None,
    figures: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo and return the content of ``results.json``."""
    import torch

    from bpbreid.config import apply_overrides, load_config
    from bpbreid.data.datasets import build_dataset_from_config
    from bpbreid.paths import resolve_path

    cuda = torch.cuda.is_available() and device != "cpu"
    base = load_config(config or ("synthetic_gpu" if cuda else "synthetic_cpu"), overrides)
    extra = [f"train.device={'cuda' if cuda else 'cpu'}"]
    if preset:
        extra.append(f"data.synthetic.preset={preset}")
    if steps:
        extra.append(f"train.max_steps={steps}")
    base = apply_overrides(base, extra)
    out = resolve_path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"Unknown demo model(s) {unknown}; valid: {', '.join(MODELS)}.")
    configs = {k: v for k, v in model_configs(base, out, seed).items() if k in models}

    cores = os.cpu_count() or 1
    workers = 1 if cuda else (processes or min(len(configs), cores))
    n_steps = int(base.train.max_steps or 0)
    print(
        f"bpbreid demo: {len(configs)} models x {n_steps} steps on "
        f"{'CUDA' if cuda else f'{workers} CPU process(es)'}, preset "
        f"'{base.data.synthetic.preset}', seed {seed}."
    )
    print("The time is estimated from the speed of the first steps on this machine.")

    start = time.time()
    build_dataset_from_config(base, progress=progress)  # generate (or reuse) the set first
    clear_runs(configs.values())
    train_start = time.time()
    train_all(configs, processes=workers, progress=progress)
    train_seconds = time.time() - train_start

    results = {}
    for name, cfg in configs.items():
        results[name] = evaluate_run(cfg, device="cuda" if cuda else "cpu", progress=False)
    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({cores} cores)",
        "train_seconds": round(train_seconds, 1),
        "total_seconds": None,
        "seed": seed,
        "preset": base.data.synthetic.preset,
        "steps": n_steps,
        "image_size": [base.data.height, base.data.width],
        "models": {name: _metrics(result) for name, result in results.items()},
        "visibility": (
            _visibility_rates(results["bpbreid"], configs["bpbreid"])
            if "bpbreid" in results
            else {}
        ),
    }
    plot_training_curves(configs, out / "training_curves.png")
    if figures:
        save_ranking_figures(results, out, seed=seed)
    summary["total_seconds"] = round(time.time() - start, 1)
    text = json.dumps(summary, indent=2)
    (out / "results.json").write_text(text)
    (out / f"results_seed{seed}.json").write_text(text)  # kept when other seeds run

    print()
    print(_print_table(summary["models"]))
    if summary["visibility"]:
        print("\n" + _visibility_table(summary["visibility"]))
    print(f"\ntraining {train_seconds / 60:.1f} min, total {summary['total_seconds'] / 60:.1f} min")
    print(f"results: {out / 'results.json'}")
    return summary
