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
from dataclasses import dataclass
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
    import platform

    import torch

    from bpbreid.engine.distributed import resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args = _defaults(args, cuda)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or 'cpu'})"
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
