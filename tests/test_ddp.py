"""Two-process data-parallel training on CPU (Gloo), as ``torchrun`` would launch it."""

from __future__ import annotations

import hashlib
import os
import socket

import torch
import torch.multiprocessing as mp

WORLD_SIZE = 2
NUM_IDS = 16


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for param in model.parameters():
        digest.update(param.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def _full_set_loss(trainer) -> float:
    dataset = trainer.train_loader.dataset
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([item["image"] for item in items])
    masks = torch.stack([item["target_masks"] for item in items])
    pids = torch.tensor([item["pid"] for item in items])
    with torch.no_grad():
        loss, _ = trainer.criterion(trainer.model(images), pids, masks)
    return float(loss)


def _worker(rank: int, port: int, out_dir: str) -> None:
    # What torchrun sets for each process.
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    from bpbreid.bench.train import TensorReIDSet, tensor_train_loader
    from bpbreid.config import load_config
    from bpbreid.engine.distributed import cleanup
    from bpbreid.engine.trainer import Trainer

    cfg = load_config(
        "synthetic_cpu",
        [
            "train.device=cpu",
            "train.batch_size=16",
            "train.max_steps=null",
            "train.max_epoch=3",
            "train.warmup_epochs=0",
            "train.lr_scheduler=constant",
            "train.loggers=[csv]",
            f"train.output_dir={out_dir}",
        ],
    )
    dataset = TensorReIDSet(num_ids=NUM_IDS, per_id=4, height=64, width=32, parts=4)
    loader = tensor_train_loader(dataset, 16, 4, rank=rank, world_size=WORLD_SIZE, seed=1)
    fingerprints: list[str] = []
    batches: list[list[int]] = []

    def record(trainer, step, components):
        fingerprints.append(_fingerprint(trainer.model))

    trainer = Trainer(cfg, data={"train": loader}, num_classes=NUM_IDS, step_hooks=[record])
    assert dist.is_initialized() and dist.get_world_size() == WORLD_SIZE
    assert isinstance(trainer.train_model, torch.nn.parallel.DistributedDataParallel)
    loader.sampler.set_epoch(0)
    batches = [int(i) for i in loader.sampler]
    before = _full_set_loss(trainer)
    state = trainer.fit()
    after = _full_set_loss(trainer)
    torch.save(
        {
            "fingerprints": fingerprints,
            "first_epoch_indices": batches,
            "before": before,
            "after": after,
            "steps": state.step,
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    cleanup()


def test_two_process_ddp_on_cpu(tmp_path):
    port = _free_port()
    mp.start_processes(
        _worker, args=(port, str(tmp_path)), nprocs=WORLD_SIZE, join=True, start_method="spawn"
    )
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    rank0, rank1 = results
    assert rank0["steps"] == rank1["steps"] > 0
    # Identical parameters on both ranks after every single step.
    assert len(rank0["fingerprints"]) == rank0["steps"]
    assert rank0["fingerprints"] == rank1["fingerprints"]
    assert len(set(rank0["fingerprints"])) == len(rank0["fingerprints"]), "parameters never moved"
    # Each rank trained on its own share of every epoch.
    assert not set(rank0["first_epoch_indices"]) & set(rank1["first_epoch_indices"])
    for result in results:
        assert result["after"] < result["before"], result
    # Only rank 0 writes the run's files.
    assert (tmp_path / "last.pth").is_file() and (tmp_path / "model.pth").is_file()
    assert (tmp_path / "metrics.csv").is_file()
