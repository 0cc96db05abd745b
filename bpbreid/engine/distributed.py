"""Data-parallel training across processes (``torchrun``), and the device/AMP policy.

Launch: ``torchrun --nproc_per_node=4 -m bpbreid train --config market1501_hrnet_w32``.
``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed`
reads them, joins the process group (NCCL on CUDA, Gloo on CPU) and binds each process to
its GPU. The identity sampler (which knows ``rank``/``world_size``) deals each epoch's
P x K batches out to the ranks, so every rank trains on its own disjoint share and one
step sees ``train.batch_size x world_size`` images; gradients are averaged by
``DistributedDataParallel``, and only rank 0 logs, evaluates and saves.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bpbreid.config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (``world_size == 1``: a plain single-process run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from the environment (set by ``torchrun``)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``train.device``: ``auto`` picks CUDA when present (one GPU per DDP rank), else CPU."""
    key = (name or "auto").lower()
    if key == "auto":
        key = "cuda" if torch.cuda.is_available() else "cpu"
    if key.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"Device {name!r} was asked for (train.device or --device), but no CUDA GPU is "
                "visible. Use auto or cpu."
            )
        if key == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device(key)
    if key in ("cpu", "mps"):
        return torch.device(key)
    raise ConfigError(
        f"Unknown device {name!r} (train.device or --device). Valid: auto, cpu, cuda, cuda:<index>."
    )


def init_distributed(device: torch.device, info: DistInfo | None = None) -> DistInfo:
    """Join the process group when ``WORLD_SIZE > 1`` (idempotent).

    Uses NCCL for CUDA devices and Gloo for CPU; ``MASTER_ADDR``/``MASTER_PORT`` come from
    the environment (``torchrun`` sets them).
    """
    info = info or env_dist_info()
    if not info.enabled:
        return info
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed.")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            rank=info.rank,
            world_size=info.world_size,
            timeout=datetime.timedelta(minutes=30),
        )
    return info


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (the input itself in a single process)."""
    if not is_initialized():
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def all_true(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every rank (so all ranks stop together)."""
    if not is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0.5)


def cleanup() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------
# Mixed precision and device speed settings
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AmpPolicy:
    """What ``train.amp`` resolves to on a device.

    Attributes:
        enabled: autocast on.
        dtype: ``torch.bfloat16`` or ``torch.float16`` (None when off).
        use_scaler: a GradScaler is needed (fp16 only: bf16 has fp32's exponent range).
    """

    enabled: bool
    dtype: torch.dtype | None
    use_scaler: bool

    @property
    def name(self) -> str:
        if not self.enabled:
            return "off"
        return "bf16" if self.dtype == torch.bfloat16 else "fp16"


def resolve_amp(setting: str, device: torch.device) -> AmpPolicy:
    """``train.amp`` -> :class:`AmpPolicy`.

    ``auto``: bf16 on CUDA GPUs that support it (Ampere+), fp16 + GradScaler on older ones,
    off on CPU (CPU autocast is slower than fp32 for these convolutions). ``bf16``/``fp16``
    force a type (also on CPU); ``off`` trains in fp32.
    """
    key = str(setting or "auto").lower()
    if key in ("false", "no", "none", "0"):
        key = "off"  # YAML reads a bare `off` as the boolean false
    if key == "auto":
        if device.type != "cuda":
            return AmpPolicy(False, None, False)
        key = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if key == "off":
        return AmpPolicy(False, None, False)
    if key == "bf16":
        return AmpPolicy(True, torch.bfloat16, False)
    if key == "fp16":
        return AmpPolicy(True, torch.float16, True)
    raise ConfigError(f"Unknown train.amp {setting!r}. Valid: auto, bf16, fp16, off.")


def configure_backends(device: torch.device, deterministic: bool, tf32: bool = True) -> None:
    """Speed and reproducibility switches, stated explicitly.

    Args:
        device: the training device.
        deterministic: deterministic algorithms (``warn_only``: ops without a deterministic
            kernel warn instead of failing), cuDNN deterministic, no cuDNN autotuning.
        tf32: TF32 matmuls/convolutions on Ampere+ GPUs (about 1e-3 relative error, a large
            speed-up); the benchmark's fp32 baseline turns it off.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = not deterministic
        if deterministic:
            # cuBLAS needs a fixed workspace to be deterministic.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
