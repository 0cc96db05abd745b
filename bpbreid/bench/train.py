"""Training speed of BPBReID: fp32 baseline vs AMP + channels_last (+ torch.compile).

``python -m bpbreid bench train`` measures training images/s of BPBReID (ResNet-50,
256x128, batch 64 by default) on synthetic in-memory data, with the engine's real
training step, in one run:

1. ``fp32 eager`` with TF32 off: the baseline;
2. ``AMP + channels_last``: bf16 autocast (fp16 + GradScaler on GPUs without bf16) and
   NHWC memory layout;
3. ``AMP + channels_last + compile``: the same under ``torch.compile`` (CUDA only unless
   ``--compile`` is given).

For each: images/s, the ratio to the baseline, peak GPU memory and the share of the time
spent waiting for the next batch. On a CPU it runs a tiny version (small batch, a few
steps) by default: the speed options are meant for GPUs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VARIANTS = ("fp32", "amp_cl", "amp_cl_compile")
VARIANT_TITLES = {
    "fp32": "fp32 eager (TF32 off)",
    "amp_cl": "AMP + channels_last",
    "amp_cl_compile": "AMP + channels_last + compile",
}


class TensorReIDSet:
    """An in-memory re-id training set of random tensors (no files, no augmentation).

    Item ``i`` is ``{"image": [3, H, W], "target_masks": [K+1, H/4, W/4], "pid", "camid",
    "img_path"}``: an identity prototype plus noise drawn from ``seed + i`` (so items are
    reproducible and identities separable), and soft part targets. Used by the benchmark
    and by tests that need a real training loop without a dataset on disk.

    Args:
        num_ids: identities.
        per_id: images per identity.
        height, width: image size.
        parts: K (targets have K+1 channels, channel 0 = background).
        noise: noise amplitude around each identity's prototype.
        seed: everything is drawn from it.
    """

    def __init__(
        self,
        num_ids: int = 8,
        per_id: int = 4,
        height: int = 64,
        width: int = 32,
        parts: int = 4,
        noise: float = 0.5,
        seed: int = 0,
    ) -> None:
        import torch

        self.pids = [pid for pid in range(num_ids) for _ in range(per_id)]
        self.height, self.width, self.parts = height, width, parts
        self.noise = noise
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        self.prototypes = torch.randn(num_ids, 3, height, width, generator=generator)
        self.samples = [(f"{i}.jpg", pid, i % 2) for i, pid in enumerate(self.pids)]

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        generator = torch.Generator().manual_seed(self.seed * 100_003 + index + 1)
        pid = self.pids[index]
        shape = (3, self.height, self.width)
        image = self.prototypes[pid] + self.noise * torch.randn(shape, generator=generator)
        logits = torch.randn(self.parts + 1, self.height // 4, self.width // 4, generator=generator)
        return {
            "image": image,
            "target_masks": logits.mul(3).softmax(0),
            "pid": pid,
            "camid": index % 2,
            "img_path": f"{index}.jpg",
        }


def tensor_train_loader(
    dataset: TensorReIDSet,
    batch_size: int,
    num_instances: int = 4,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    workers: int = 0,
) -> Any:
    """An identity-balanced DataLoader over a :class:`TensorReIDSet` (DDP-aware)."""
    import torch
    from torch.utils.data import DataLoader

    from bpbreid.data.samplers import RandomIdentitySampler

    sampler = RandomIdentitySampler(
        dataset.pids, batch_size, num_instances, rank=rank, world_size=world_size, seed=seed
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed + rank),
    )


@dataclass
class BenchResult:
    """One variant's measurement."""

    variant: str
    images_per_s: float
    peak_memory_mb: float | None
    data_wait: float
    steps: int
    note: str = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument(
        "--backbone", default="resnet50", help="backbone (default resnet50, as the paper's ResNet)"
    )
    parser.add_argument("--height", type=int, default=256, help="image height (default 256)")
    parser.add_argument("--width", type=int, default=128, help="image width (default 128)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per step, P x 4 (default 64 on CUDA; 8 on CPU: a tiny run)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (default 30 on CUDA, 3 on CPU)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed first steps (default 10 on CUDA, 1 on CPU)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data-loading processes (default 4 on CUDA, 0 on CPU)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=None,
        help="what to measure (default: all on CUDA; fp32 and amp_cl on CPU)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="also measure torch.compile on CPU (slow to compile)"
    )
    parser.add_argument("--parts", type=int, default=5, help="K parts (default 5: five_v)")
    parser.add_argument(
        "--small", action="store_true", help="the tiny version on any device (as on a CPU)"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="instead: each demo model on the CPU (synthetic_cpu, one thread), before and after "
        "the tensor pipeline + channels_last, in one run",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="instead: the model alone (a batch kept on the device), the reference and the "
        "tensor pipeline, per variant, on --config (default synthetic_gpu on CUDA, "
        "synthetic_cpu on a CPU) with key=value overrides",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="with --ceiling or --pipelines: the configuration (name or YAML path)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        default=[],
        help="with --ceiling or --pipelines: config overrides key=value",
    )
    parser.add_argument(
        "--pipelines",
        action="store_true",
        help="instead: the reference and the tensor data pipeline, in one run, on --config "
        "(default synthetic_cpu, on the CPU) with key=value overrides",
    )


def _defaults(args: argparse.Namespace, cuda: bool) -> argparse.Namespace:
    values = vars(args).copy()
    full = cuda and not getattr(args, "small", False)
    values["batch_size"] = args.batch_size or (64 if full else 8)
    values["steps"] = args.steps or (30 if full else 3)
    values["warmup"] = args.warmup if args.warmup is not None else (10 if full else 1)
    values["workers"] = args.workers if args.workers is not None else (4 if full else 0)
    if args.variants:
        variants = list(args.variants)
    elif cuda or args.compile:
        variants = list(VARIANTS)
    else:
        variants = ["fp32", "amp_cl"]
    values["variants"] = variants
    return argparse.Namespace(**values)


def _config(args: argparse.Namespace, variant: str, amp: str, output_dir: str) -> Any:
    from bpbreid.config import load_config

    grouping = {1: "one", 2: "two", 4: "four", 5: "five_v", 8: "eight"}.get(args.parts, "five_v")
    overrides = [
        f"model.backbone={args.backbone}",
        "model.pretrained=false",
        f"model.bpbreid.masks.preprocess={grouping}",
        f"model.bpbreid.masks.parts_num={args.parts}",
        f"data.height={args.height}",
        f"data.width={args.width}",
        f"train.batch_size={args.batch_size}",
        "train.num_instances=4",
        f"train.device={args.device}",
        f"train.amp={'off' if variant == 'fp32' else amp}",
        f"train.channels_last={'false' if variant == 'fp32' else 'true'}",
        f"train.compile={'true' if variant.endswith('compile') else 'false'}",
        f"train.output_dir={output_dir}",
        "train.loggers=[]",
        "train.warmup_epochs=0",
        "train.lr_scheduler=constant",
    ]
    return load_config(None, overrides)


def _amp_setting(device_type: str) -> str:
    """bf16 where supported (Ampere+ GPUs, CPUs), fp16 + GradScaler on older GPUs."""
    import torch

    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16"
    return "bf16"


def measure(args: argparse.Namespace, variant: str) -> BenchResult:
    """Train ``warmup + steps`` steps of one variant with the engine; time the last ``steps``.

    The waiting share is the time spent in ``next(loader)``: each step ends with a device
    sync (the loss components are read back), so that time is really spent waiting.
    """
    import torch

    from bpbreid.engine.distributed import resolve_device
    from bpbreid.engine.trainer import Trainer

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="bpbreid-bench-") as tmp:
        cfg = _config(args, variant, _amp_setting(device.type), tmp)
        num_ids = max(args.batch_size // 4 * 2, 8)
        dataset = TensorReIDSet(
            num_ids=num_ids, per_id=8, height=args.height, width=args.width, parts=args.parts
        )
        loader = tensor_train_loader(dataset, args.batch_size, workers=args.workers)
        trainer = Trainer(cfg, data={"train": loader}, num_classes=num_ids, progress=False)
        if device.type == "cuda":
            # The baseline is true fp32: no TF32 tensor cores (the trainer enables them).
            tf32 = variant != "fp32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.cuda.reset_peak_memory_stats(device)
        batches = _forever(loader)
        waited, start = 0.0, time.perf_counter()
        for step in range(args.warmup + args.steps):
            if step == args.warmup:
                _sync(device)
                waited, start = 0.0, time.perf_counter()
            tick = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - tick
            trainer.train_step(batch)
        _sync(device)
        elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        del batches, trainer
    return BenchResult(
        variant=variant,
        images_per_s=args.steps * args.batch_size / max(elapsed, 1e-9),
        peak_memory_mb=peak,
        data_wait=min(1.0, waited / max(elapsed, 1e-9)),
        steps=args.steps,
        note=cfg.train.amp if variant != "fp32" else "",
    )


def _forever(loader: Any) -> Any:
    """The loader's batches, epoch after epoch."""
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


PIPELINE_TITLES = {
    "reference": "reference (DataLoader: decode + albumentations per image)",
    "tensor": "tensor (decode once, batch tensor ops)",
}


def _bench_trainer(
    cfg: Any,
    overrides: list[str],
    output_dir: str,
    device: str,
    threads: int | None,
    data: Any,
    what: str,
) -> Any:
    """A quiet :class:`~bpbreid.engine.trainer.Trainer` of ``cfg`` + ``overrides`` on ``data``
    (no loggers, its own ``output_dir``), as every timing here builds them."""
    from bpbreid.config import apply_overrides
    from bpbreid.engine.trainer import Trainer

    extra = [f"train.device={device}", f"train.output_dir={output_dir}", "train.loggers=[]"]
    if threads is not None:
        extra.append(f"train.threads={int(threads)}")
    return Trainer(apply_overrides(cfg, [*overrides, *extra], what), data=data, progress=False)


def _per_round(steps: int, rounds: int) -> list[int]:
    """``steps`` split into at most ``rounds`` nearly equal turns (at least one step each)."""
    rounds = max(1, min(int(rounds), int(steps)))
    return [steps // rounds + (1 if r < steps % rounds else 0) for r in range(rounds)]


def _time_training_steps(
    trainers: dict[str, Any],
    batches: dict[str, Any],
    per_round: list[int],
    warmup: int,
    device: Any,
    phases: dict[str, dict[str, float]] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds of whole training steps per trainer, and of them the seconds spent waiting
    for batches; the trainers take turns, ``per_round[r]`` steps each in round ``r``. With
    ``phases``, each trainer's timed steps also add their phase seconds to ``phases[name]``
    (see ``Trainer.train_step``)."""
    for name, trainer in trainers.items():
        for _ in range(warmup):
            trainer.train_step(next(batches[name]))
    step_time = dict.fromkeys(trainers, 0.0)
    waited = dict.fromkeys(trainers, 0.0)
    for count in per_round:
        for name, trainer in trainers.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(count):
                tick = time.perf_counter()
                batch = next(batches[name])
                _sync(device)
                waited[name] += time.perf_counter() - tick
                trainer.train_step(batch, phase_seconds=phases[name] if phases else None)
            _sync(device)
            step_time[name] += time.perf_counter() - start
    return step_time, waited


def compare_pipelines(
    cfg: Any,
    steps: int = 100,
    device: str = "cpu",
    *,
    warmup: int = 5,
    rounds: int = 2,
    threads: int | None = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Images/s of the reference and the tensor pipeline, alone and in whole training steps.

    Builds the dataset of ``cfg`` once and a :class:`~bpbreid.engine.trainer.Trainer` per
    pipeline (``data.pipeline`` = ``reference`` / ``tensor``, everything else as ``cfg``), then
    times, in ``rounds`` alternating rounds of ``steps / rounds`` batches each (so that a change
    of machine load hits both alike):

    * the data path alone: making training batches (reference: the DataLoader with
      ``cfg.data.workers`` workers; tensor: gather + augment from the cache, built beforehand
      and timed on its own);
    * whole training steps: next batch + the engine's ``train_step``; the share of the time
      spent waiting for the batch.

    Args:
        cfg: the configuration (e.g. ``load_config("synthetic_cpu")``).
        steps: timed batches per pipeline and measurement.
        device: ``cpu``, ``cuda`` or ``auto``.
        warmup: untimed batches/steps before the timed ones.
        rounds: alternations between the two pipelines.
        threads: intra-op CPU threads (1 as the demo trains); None: the trainer's policy.
        progress: progress bar while the cache is decoded.

    Returns:
        ``{"device", "threads", "batch_size", "image_size", "steps", "cache": {"seconds",
        "mib", "images"}, "data": {"reference", "tensor", "speedup"}, "training":
        {"reference": {"images_per_s", "data_wait"}, "tensor": {...}, "speedup"}}``;
        images/s, speed-ups as tensor / reference.
    """
    import torch

    from bpbreid.data.datasets import build_dataset_from_config
    from bpbreid.engine.distributed import resolve_device

    resolved = resolve_device(device)
    if threads is not None and resolved.type == "cpu":
        torch.set_num_threads(int(threads))
    per_round = _per_round(steps, rounds)
    data = build_dataset_from_config(cfg)
    with tempfile.TemporaryDirectory(prefix="bpbreid-bench-") as tmp:
        trainers = {
            name: _bench_trainer(
                cfg, [f"data.pipeline={name}"], f"{tmp}/{name}", device, threads, data,
                "compare_pipelines",
            )
            for name in ("reference", "tensor")
        }  # fmt: skip
        tensor_loader = trainers["tensor"].train_loader
        tensor_loader.progress = progress
        start = time.perf_counter()
        cache = tensor_loader.prepare()
        _sync(resolved)
        cache_seconds = time.perf_counter() - start

        batches = {name: _forever(t.train_loader) for name, t in trainers.items()}
        batch_size = int(cfg.train.batch_size)

        # The data path alone.
        for name in trainers:
            for _ in range(warmup):
                next(batches[name])
        data_time = dict.fromkeys(trainers, 0.0)
        for count in per_round:
            for name in trainers:
                _sync(resolved)
                start = time.perf_counter()
                for _ in range(count):
                    batch = next(batches[name])
                _sync(resolved)
                data_time[name] += time.perf_counter() - start
                del batch

        # Whole training steps.
        step_time, waited = _time_training_steps(trainers, batches, per_round, warmup, resolved)
        del batches, trainers

    def rate(seconds: float) -> float:
        return steps * batch_size / max(seconds, 1e-9)

    data_rates = {name: rate(seconds) for name, seconds in data_time.items()}
    training = {
        name: {
            "images_per_s": rate(step_time[name]),
            "data_wait": min(1.0, waited[name] / max(step_time[name], 1e-9)),
        }
        for name in step_time
    }
    return {
        "device": str(resolved),
        "threads": torch.get_num_threads() if resolved.type == "cpu" else None,
        "batch_size": batch_size,
        "image_size": [int(cfg.data.height), int(cfg.data.width)],
        "steps": int(steps),
        "cache": {
            "seconds": cache_seconds,
            "mib": cache.nbytes / 2**20,
            "images": len(cache),
        },
        "data": {**data_rates, "speedup": data_rates["tensor"] / data_rates["reference"]},
        "training": {
            **training,
            "speedup": training["tensor"]["images_per_s"] / training["reference"]["images_per_s"],
        },
    }


def time_training_variants(
    cfg: Any,
    variants: dict[str, list[str]],
    steps: int = 60,
    device: str = "cpu",
    *,
    warmup: int = 5,
    rounds: int = 3,
    threads: int | None = 1,
    data: Any = None,
) -> dict[str, dict[str, float]]:
    """Images/s of whole training steps of ``cfg`` under several sets of overrides.

    One :class:`~bpbreid.engine.trainer.Trainer` per variant on the same dataset; the
    variants take turns in ``rounds`` rounds of ``steps / rounds`` steps each, so that a
    change of machine load hits every variant alike.

    Returns:
        ``{variant: {"images_per_s", "data_wait"}}``.
    """
    import torch

    from bpbreid.data.datasets import build_dataset_from_config
    from bpbreid.engine.distributed import resolve_device

    resolved = resolve_device(device)
    if threads is not None and resolved.type == "cpu":
        torch.set_num_threads(int(threads))
    per_round = _per_round(steps, rounds)
    data = data if data is not None else build_dataset_from_config(cfg)
    batch_size = int(cfg.train.batch_size)
    with tempfile.TemporaryDirectory(prefix="bpbreid-bench-") as tmp:
        trainers = {
            name: _bench_trainer(
                cfg, overrides, f"{tmp}/{i}", device, threads, data, f"variant {name}"
            )
            for i, (name, overrides) in enumerate(variants.items())
        }
        batches = {name: _forever(t.train_loader) for name, t in trainers.items()}
        step_time, waited = _time_training_steps(trainers, batches, per_round, warmup, resolved)
        del batches, trainers
    return {
        name: {
            "images_per_s": steps * batch_size / max(seconds, 1e-9),
            "data_wait": min(1.0, waited[name] / max(seconds, 1e-9)),
        }
        for name, seconds in step_time.items()
    }


SOURCES = ("model", "reference", "tensor")
SOURCE_TITLES = {
    "model": "model alone (one batch kept on the device: the ceiling)",
    "reference": "reference pipeline (DataLoader, albumentations per image)",
    "tensor": "tensor pipeline (decoded once, batches augmented on the device)",
}
# Market-1501's training set and the paper's schedule, to turn images/s into an epoch time.
MARKET1501_TRAIN_IMAGES = 12_936
PAPER_EPOCHS = 120
VARIANT_OVERRIDES = {
    "fp32": ["train.amp=off", "train.channels_last=false", "train.compile=false"],
    "amp_cl": ["train.channels_last=true", "train.compile=false"],
    "amp_cl_compile": ["train.channels_last=true", "train.compile=true"],
}


def _repeat(batch: Any) -> Any:
    while True:
        yield batch


def compare_ceiling(
    cfg: Any,
    steps: int = 30,
    device: str = "auto",
    variants: tuple[str, ...] | None = None,
    *,
    warmup: int = 5,
    rounds: int = 2,
    threads: int | None = None,
) -> dict[str, Any]:
    """Training images/s of the model alone, the reference and the tensor pipeline, per variant.

    For each speed variant (``fp32`` eager with TF32 off, ``amp_cl``: AMP + channels_last,
    ``amp_cl_compile``: + ``torch.compile``; default: all on CUDA, the first two on a CPU), one
    :class:`~bpbreid.engine.trainer.Trainer` per pipeline on ``cfg``'s dataset, timed in whole
    training steps, the three sources taking turns in ``rounds`` rounds:

    * ``model``: the tensor trainer's step on one batch made once and kept on the device (no
      loading, no augmentation): the ceiling the pipelines are measured against;
    * ``reference``: ``data.pipeline=reference`` (``cfg.data.workers`` loader processes);
    * ``tensor``: ``data.pipeline=tensor`` (its cache is built before timing).

    Returns:
        ``{"device", "batch_size", "image_size", "backbone", "steps", "rows": [{"variant",
        "source", "images_per_s", "data_wait", "vs_fp32", "vs_ceiling"}]}``; ``vs_fp32``: to the
        fp32 reference pipeline (None without an fp32 row), ``vs_ceiling``: to the model alone
        in the same variant.
    """
    import torch

    from bpbreid.data.datasets import build_dataset_from_config
    from bpbreid.engine.distributed import resolve_device

    resolved = resolve_device(device)
    cuda = resolved.type == "cuda"
    variants = variants or (VARIANTS if cuda else ("fp32", "amp_cl"))
    if threads is not None and not cuda:
        torch.set_num_threads(int(threads))
    per_round = _per_round(steps, rounds)
    data = build_dataset_from_config(cfg)
    batch_size = int(cfg.train.batch_size)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bpbreid-bench-") as tmp:
        for variant in variants:
            overrides = list(VARIANT_OVERRIDES[variant])
            if variant != "fp32" and cfg.train.amp == "off":
                overrides.append(f"train.amp={_amp_setting(resolved.type)}")
            trainers = {
                pipeline: _bench_trainer(
                    cfg, [*overrides, f"data.pipeline={pipeline}"], f"{tmp}/{variant}_{pipeline}",
                    device, threads, data, f"variant {variant}",
                )
                for pipeline in ("reference", "tensor")
            }  # fmt: skip
            if cuda:
                # The baseline is true fp32: no TF32 tensor cores (the trainer enables them).
                tf32 = variant != "fp32"
                torch.backends.cuda.matmul.allow_tf32 = tf32
                torch.backends.cudnn.allow_tf32 = tf32
            batches = {name: _forever(trainer.train_loader) for name, trainer in trainers.items()}
            kept = next(batches["tensor"])
            batches = {"model": _repeat(kept), **batches}
            timed = {"model": trainers["tensor"], **trainers}
            step_time, waited = _time_training_steps(timed, batches, per_round, warmup, resolved)
            for source in SOURCES:
                rows.append(
                    {
                        "variant": variant,
                        "source": source,
                        "images_per_s": steps * batch_size / max(step_time[source], 1e-9),
                        "data_wait": min(1.0, waited[source] / max(step_time[source], 1e-9)),
                    }
                )
            del batches, timed, trainers, kept
    fp32 = next((r for r in rows if r["variant"] == "fp32" and r["source"] == "reference"), None)
    for row in rows:
        ceiling = next(r for r in rows if r["variant"] == row["variant"] and r["source"] == "model")
        row["vs_ceiling"] = row["images_per_s"] / ceiling["images_per_s"]
        row["vs_fp32"] = row["images_per_s"] / fp32["images_per_s"] if fp32 else None
    return {
        "device": _device_name(resolved),
        "batch_size": batch_size,
        "image_size": [int(cfg.data.height), int(cfg.data.width)],
        "backbone": str(cfg.model.backbone),
        "steps": int(steps),
        "rows": rows,
    }


def _device_name(device: Any) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or 'cpu'}, {torch.get_num_threads()} thread(s))"


def format_ceiling(result: dict[str, Any]) -> str:
    """A markdown table of :func:`compare_ceiling`, with the epoch times it implies and the
    device pipeline's goals (90% of the ceiling with AMP + channels_last, 3x fp32 reference)."""
    height, width = result["image_size"]
    lines = [
        f"{result['backbone']} at {height}x{width}, batch {result['batch_size']}, on "
        f"{result['device']}, {result['steps']} timed steps per source.",
        "",
        "| variant | source | images/s | vs fp32 reference | vs ceiling | waiting for data "
        f"| Market-1501 epoch | {PAPER_EPOCHS} epochs |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        epoch = MARKET1501_TRAIN_IMAGES / row["images_per_s"]
        vs_fp32 = f"{row['vs_fp32']:.2f}x" if row["vs_fp32"] is not None else "n/a"
        lines.append(
            f"| {VARIANT_TITLES[row['variant']]} | {SOURCE_TITLES[row['source']]} "
            f"| {row['images_per_s']:,.0f} | {vs_fp32} | {100 * row['vs_ceiling']:.0f}% "
            f"| {100 * row['data_wait']:.0f}% | {epoch:,.0f} s "
            f"| {PAPER_EPOCHS * epoch / 60:,.1f} min |"
        )
    tensor_amp = next(
        (r for r in result["rows"] if r["variant"] == "amp_cl" and r["source"] == "tensor"), None
    )
    if tensor_amp is not None:
        lines += [
            "",
            f"Tensor pipeline, AMP + channels_last: {100 * tensor_amp['vs_ceiling']:.0f}% "
            "of the ceiling (goal: at least 90%)",
        ]
        if tensor_amp["vs_fp32"] is not None:
            lines[-1] += (
                f"; {tensor_amp['vs_fp32']:.2f}x the fp32 reference pipeline (goal: at least 3x)"
            )
        lines[-1] += "."
    return "\n".join(lines)


# The demo's CPU training before and after its speed work: the albumentations pipeline in
# the default memory layout, and the decode-once tensor pipeline with channels_last.
DEMO_VARIANTS: dict[str, list[str]] = {
    "before": ["data.pipeline=reference", "train.channels_last=false"],
    "after": ["data.pipeline=tensor", "train.channels_last=true"],
}


def compare_demo_models(
    steps: int = 60,
    rounds: int = 3,
    models: tuple[str, ...] | None = None,
    overrides: list[str] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Training images/s of each demo model (``synthetic_cpu``, one thread), before/after.

    Every model's variants are timed in the same run, taking turns (see
    :func:`time_training_variants`), so the ratios hold whatever the machine's load.

    Returns:
        ``{model: {"before": {"images_per_s", "data_wait"}, "after": {...}}}``.
    """
    from bpbreid.config import load_config
    from bpbreid.data.datasets import build_dataset_from_config
    from bpbreid.demo import MODELS, model_configs

    base = load_config("synthetic_cpu", ["train.device=cpu", *(overrides or [])])
    data = build_dataset_from_config(base)
    with tempfile.TemporaryDirectory(prefix="bpbreid-bench-") as tmp:
        configs = model_configs(base, Path(tmp), seed=0)
        return {
            name: time_training_variants(
                configs[name], DEMO_VARIANTS, steps, "cpu", rounds=rounds, threads=1, data=data
            )
            for name in (models or MODELS)
        }


PHASES = ("data", "transfer", "forward", "backward", "optimizer")


def dense_peak_gflops(seconds: float = 0.5) -> float:
    """Single-precision GFLOP/s of the fastest dense kernel on this process's threads.

    The best of square matrix products (512, 1024, 2048) and a 3x3 convolution of 256
    channels on 16x16 maps, batch 64, channels_last (each run for ``seconds``): large dense
    kernels are the best case for a CPU's vector units, so this stands for what the machine
    can do at most; the small convolutions of a training step reach a share of it.
    """
    import torch

    def rate(run: Callable[[], Any], flops: float) -> float:
        run()  # warm-up
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or count < 3:
            run()
            count += 1
        return flops * count / (time.perf_counter() - start) / 1e9

    best = 0.0
    for size in (512, 1024, 2048):
        a, b = torch.randn(size, size), torch.randn(size, size)
        best = max(best, rate(lambda a=a, b=b: torch.mm(a, b), 2 * size**3))
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False)
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(64, 256, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        best = max(best, rate(lambda: conv(x), 2 * 64 * 16 * 16 * 256 * 256 * 9))
    return best


def step_flops(trainer: Any, batch: Any) -> float:
    """FLOPs of the convolutions and linear layers in one training step of ``trainer``.

    Counted with forward hooks during one real step: ``2 x MACs`` forward, as much again for
    the weight gradient, and again for the input gradient wherever the input needs one (not
    the first layer: the image has no gradient). Everything else (normalization, activations,
    pooling, losses, the optimizer) is left out, so this is a lower bound of the work.
    """
    from torch import nn

    total = 0.0

    def count(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            macs = output.numel() * module.weight[0].numel()
        else:
            macs = output.numel() * module.in_features
        total += 2 * macs * (2 + int(bool(inputs[0].requires_grad)))

    layers = [m for m in trainer.model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(count) for m in layers]
    try:
        trainer.train_step(batch)
    finally:
        for handle in handles:
            handle.remove()
    return total


def demo_phases(
    steps: int = 30,
    rounds: int = 3,
    models: tuple[str, ...] | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Where each demo model's CPU training step goes, against the machine's arithmetic peak.

    Each model as the demo trains it (``synthetic_cpu``, one thread), the models taking turns
    in ``rounds`` rounds: seconds per step in each phase (``data``: the next batch from the
    loader; ``transfer``: to the device and memory layout; ``forward`` with the loss;
    ``backward``; ``optimizer`` with the scheduler), the convolution + linear FLOPs of a step
    (:func:`step_flops`) and the single-thread dense-kernel peak (:func:`dense_peak_gflops`).
    From those: the demo's training time on two processes as measured, and the floor it
    could not beat at the peak.

    Returns:
        ``{"peak_gflops", "models": {name: {"images_per_s", "phases": {phase: s/step},
        "gflop_per_step", "floor_s_per_step"}}, "demo": {"measured_s", "floor_s",
        "processes", "steps"}}``.
    """
    import torch

    from bpbreid.config import load_config
    from bpbreid.data.datasets import build_dataset_from_config
    from bpbreid.demo import MODELS, longest_first, model_configs, schedule_seconds

    torch.set_num_threads(1)
    names = models or MODELS
    base = load_config("synthetic_cpu", ["train.device=cpu", *(overrides or [])])
    data = build_dataset_from_config(base)
    per_round = _per_round(steps, rounds)
    with tempfile.TemporaryDirectory(prefix="bpbreid-bench-") as tmp:
        configs = model_configs(base, Path(tmp), seed=0)
        trainers = {
            name: _bench_trainer(configs[name], [], f"{tmp}/{name}", "cpu", 1, data, name)
            for name in names
        }
        batches = {name: _forever(trainer.train_loader) for name, trainer in trainers.items()}
        flops = {name: step_flops(t, next(batches[name])) for name, t in trainers.items()}
        phases: dict[str, dict[str, float]] = {name: {} for name in names}
        _, waited = _time_training_steps(
            trainers, batches, per_round, 3, torch.device("cpu"), phases
        )
        for name in names:
            phases[name]["data"] = waited[name]
        max_steps = {name: int(configs[name].train.max_steps) for name in names}
        order = longest_first({name: configs[name] for name in names})
        del batches, trainers
    peak = dense_peak_gflops()
    batch_size = int(base.train.batch_size)
    result: dict[str, Any] = {"peak_gflops": peak, "models": {}}
    for name in names:
        per_step = {phase: phases[name][phase] / steps for phase in PHASES}
        result["models"][name] = {
            "images_per_s": batch_size / sum(per_step.values()),
            "phases": per_step,
            "gflop_per_step": flops[name] / 1e9,
            "floor_s_per_step": flops[name] / 1e9 / peak,
        }
    processes = 2

    def demo_seconds(seconds_per_step: dict[str, float]) -> float:
        work = {name: max_steps[name] * seconds_per_step[name] for name in order}
        return schedule_seconds(work, [], processes)

    models = result["models"]
    result["demo"] = {
        "measured_s": demo_seconds({n: sum(models[n]["phases"].values()) for n in names}),
        "floor_s": demo_seconds({n: models[n]["floor_s_per_step"] for n in names}),
        "processes": processes,
        "steps": max_steps,
    }
    return result


def format_demo_phases(result: dict[str, Any]) -> str:
    """A markdown table of :func:`demo_phases`, and the demo's training time it implies."""
    lines = [
        "| model | images/s | data | transfer | forward + loss | backward | optimizer "
        "| conv + linear GFLOP/step | floor at peak | step / floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, info in result["models"].items():
        total = sum(info["phases"].values())
        shares = " | ".join(
            f"{1000 * info['phases'][p]:.0f} ms ({100 * info['phases'][p] / total:.0f}%)"
            for p in PHASES
        )
        lines.append(
            f"| {name} | {info['images_per_s']:.0f} | {shares} | {info['gflop_per_step']:.1f} "
            f"| {1000 * info['floor_s_per_step']:.0f} ms "
            f"| {total / info['floor_s_per_step']:.1f}x |"
        )
    demo = result["demo"]
    lines += [
        "",
        "Single-thread dense-kernel peak on this machine (best of matrix products and a "
        f"large convolution): {result['peak_gflops']:.0f} GFLOP/s. "
        f"The demo's trainings on {demo['processes']} single-threaded processes (longest first): "
        f"{demo['measured_s'] / 60:.1f} min at the speeds above; "
        f"{demo['floor_s'] / 60:.1f} min if every convolution and linear layer ran at that peak "
        "and nothing else took time (the floor).",
    ]
    return "\n".join(lines)


def format_demo_comparison(result: dict[str, dict[str, dict[str, float]]]) -> str:
    """A markdown table of :func:`compare_demo_models`."""
    lines = [
        "| model | before: images/s | waiting for data | after: images/s | waiting for data "
        "| after / before |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, variants in result.items():
        before, after = variants["before"], variants["after"]
        ratio = after["images_per_s"] / max(before["images_per_s"], 1e-9)
        lines.append(
            f"| {name} | {before['images_per_s']:.0f} | {100 * before['data_wait']:.0f}% "
            f"| {after['images_per_s']:.0f} | {100 * after['data_wait']:.0f}% | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def format_pipeline_comparison(result: dict[str, Any]) -> str:
    """A markdown table of :func:`compare_pipelines`; ratios relative to the reference."""
    height, width = result["image_size"]
    cache = result["cache"]
    threads = f", {result['threads']} thread(s)" if result.get("threads") else ""
    lines = [
        f"Batch {result['batch_size']} at {height}x{width} on {result['device']}{threads}, "
        f"{result['steps']} timed batches each. Tensor cache: {cache['images']} images, "
        f"{cache['mib']:.1f} MiB, decoded in {cache['seconds']:.1f} s.",
        "",
        "| pipeline | data path images/s | vs reference | training images/s | vs reference "
        "| waiting for data |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("reference", "tensor"):
        data = result["data"][name]
        train = result["training"][name]
        data_ratio = data / result["data"]["reference"]
        train_ratio = train["images_per_s"] / result["training"]["reference"]["images_per_s"]
        wait = 100 * train["data_wait"]
        lines.append(
            f"| {PIPELINE_TITLES[name]} | {data:,.0f} | {data_ratio:.2f}x "
            f"| {train['images_per_s']:,.1f} | {train_ratio:.2f}x | {wait:.0f}% |"
        )
    return "\n".join(lines)


def format_table(results: list[BenchResult]) -> str:
    """A markdown table; ratios are relative to the first row (the fp32 baseline)."""
    base = results[0].images_per_s if results else 1.0
    lines = [
        "| variant | images/s | vs fp32 | peak memory | waiting for data |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        memory = f"{r.peak_memory_mb:,.0f} MiB" if r.peak_memory_mb is not None else "n/a (CPU)"
        title = VARIANT_TITLES.get(r.variant, r.variant) + (f" ({r.note})" if r.note else "")
        lines.append(
            f"| {title} | {r.images_per_s:,.1f} | {r.images_per_s / base:.2f}x | {memory} "
            f"| {100 * r.data_wait:.0f}% |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:

    import torch

    from bpbreid.engine.distributed import resolve_device

    if getattr(args, "demo", False):
        steps = args.steps or (6 if args.small else 60)
        print(
            f"Demo models on the CPU (synthetic_cpu, batch 64 at 64x32, one thread), "
            f"{steps} timed steps per variant, variants taking turns:",
            flush=True,
        )
        print(format_demo_comparison(compare_demo_models(steps, rounds=min(3, steps))))
        print()
        print("Where each step goes (the demo's configuration), per step:", flush=True)
        print(format_demo_phases(demo_phases(steps, rounds=min(3, steps))))
        return 0
    if getattr(args, "ceiling", False):
        from bpbreid.config import load_config

        cuda = resolve_device(args.device).type == "cuda"
        config = args.config or ("synthetic_gpu" if cuda else "synthetic_cpu")
        overrides = list(args.overrides or [])
        if not cuda:
            overrides = ["data.synthetic.preset=small", *overrides]
        cfg = load_config(config, overrides)
        steps = args.steps or (30 if cuda else 4)
        variants = tuple(args.variants) if args.variants else None
        print(f"Ceiling and pipelines ({config}), sources taking turns:", flush=True)
        result = compare_ceiling(cfg, steps, args.device, variants, warmup=args.warmup or 5)
        print(format_ceiling(result))
        return 0
    if getattr(args, "pipelines", False):
        from bpbreid.config import load_config

        steps = args.steps or (6 if args.small else 100)
        config = args.config or "synthetic_cpu"
        cfg = load_config(config, ["train.device=cpu", *(args.overrides or [])])
        print(f"Reference and tensor pipeline ({config}), taking turns:", flush=True)
        result = compare_pipelines(cfg, steps, args.device, rounds=min(2, steps))
        print(format_pipeline_comparison(result))
        return 0
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args = _defaults(args, cuda)
    name = _device_name(device)
    print(
        f"Training speed, BPBReID {args.backbone} at {args.height}x{args.width}, "
        f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up steps, "
        f"{args.workers} loader workers, on {name} (torch {torch.__version__})."
    )
    if not cuda:
        print(
            "No GPU: this is a tiny CPU version. AMP, channels_last and torch.compile are GPU "
            "speed options; on a CPU they are measured only to show that they run."
        )
    results = []
    for variant in args.variants:
        print(f"  measuring {VARIANT_TITLES[variant]} ...", flush=True)
        results.append(measure(args, variant))
    print()
    print(format_table(results))
    return 0
