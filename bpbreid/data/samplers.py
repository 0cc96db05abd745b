"""Identity-balanced sampling: every batch holds P identities x K images each.

The triplet losses mine positives and negatives inside a batch, so each batch must hold
several images of each of its identities. :class:`RandomIdentitySampler` yields sample
indices in runs of ``batch_size = P * K``: P distinct identities, K images of each.

Epoch (as torchreid): every identity's images are shuffled and cut into chunks of K
(identities with fewer than K images are drawn with replacement up to K; a last
incomplete chunk is dropped), and the chunks are dealt out P distinct identities at a
time. An epoch has ``total chunks // P`` batches (torchreid's length), fewer only when
one identity owns so many chunks that batches of P *distinct* identities run out.
Unlike torchreid, the batch count is fixed in advance so ``len()`` matches iteration.

Distributed training: all ranks build the same epoch (same seed and epoch) and rank
``r`` takes batches ``r, r + world_size, ...``, so their shares are disjoint and equal.

Example::

    sampler = RandomIdentitySampler(data.train, batch_size=64, num_instances=4)
    loader = DataLoader(dataset, batch_size=64, sampler=sampler, drop_last=True)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        ...

Reference:
    Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification",
    arXiv 1703.07737 (P x K batches); torchreid ``RandomIdentitySampler``
    (github.com/KaiyangZhou/deep-person-reid, ``torchreid/data/sampler.py``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler


def _pids_of(samples_or_pids: Sequence[Any]) -> list[int]:
    """Pids from a list of samples (anything with ``.pid`` or a ``"pid"`` key) or of ints."""
    pids = []
    for item in samples_or_pids:
        if isinstance(item, (int, np.integer)):
            pids.append(int(item))
        elif hasattr(item, "pid"):
            pids.append(int(item.pid))
        else:
            pids.append(int(item["pid"]))
    return pids


def feasible_batches(chunk_counts: Sequence[int], per_batch: int) -> int:
    """The most batches of ``per_batch`` distinct identities that the chunks allow.

    ``B`` batches are possible iff ``sum_i min(c_i, B) >= per_batch * B`` (an identity
    gives at most one chunk per batch); the answer is at most ``sum(c) // per_batch``.
    """
    counts = np.asarray(chunk_counts, dtype=np.int64)
    upper = int(counts.sum()) // per_batch
    for batches in range(upper, 0, -1):
        if int(np.minimum(counts, batches).sum()) >= per_batch * batches:
            return batches
    return 0


class RandomIdentitySampler(Sampler[int]):
    """Yields indices in batches of P identities x K images (``num_instances``).

    Args:
        samples_or_pids: the training samples (with a ``pid``) or their pids, in dataset
            order; yielded indices refer to this order.
        batch_size: images per batch, ``P * num_instances`` (per process in DDP).
        num_instances: K, images per identity in a batch.
        rank, world_size: this process and the number of processes (DDP).
        seed: the same on every rank.

    Use with ``DataLoader(batch_size=batch_size, drop_last=True)``. Call
    :meth:`set_epoch` before each epoch (as with ``DistributedSampler``); without it,
    each new iteration uses the next epoch.
    """

    def __init__(
        self,
        samples_or_pids: Sequence[Any],
        batch_size: int,
        num_instances: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise ValueError(
                f"batch_size={batch_size} must be a positive multiple of "
                f"num_instances={num_instances} (batches are P identities x K images)."
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size}).")
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.num_pids_per_batch = batch_size // num_instances
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0

        index_by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(_pids_of(samples_or_pids)):
            index_by_pid[pid].append(index)
        self.pids = sorted(index_by_pid)
        self.index_by_pid = {pid: np.asarray(index_by_pid[pid]) for pid in self.pids}
        if len(self.pids) < self.num_pids_per_batch:
            raise ValueError(
                f"{len(self.pids)} identities cannot fill a batch of "
                f"{self.num_pids_per_batch} distinct identities "
                f"(batch_size={batch_size} / num_instances={num_instances})."
            )
        # Chunks of K per identity: fixed counts, so the epoch length is known up front.
        self.chunk_counts = np.asarray(
            [max(len(self.index_by_pid[pid]), num_instances) // num_instances for pid in self.pids]
        )
        self.batches_per_epoch = feasible_batches(self.chunk_counts, self.num_pids_per_batch)
        self.batches_per_rank = self.batches_per_epoch // world_size

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields (same on all ranks)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_rank * self.batch_size

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """All batches of an epoch (every rank's), each ``[batch_size]`` indices."""
        rng = np.random.default_rng([self.seed, epoch])
        k = self.num_instances
        chunks: list[list[np.ndarray]] = []
        for pid in self.pids:
            indices = self.index_by_pid[pid]
            if len(indices) < k:
                indices = rng.choice(indices, size=k, replace=True)
            else:
                indices = rng.permutation(indices)
            usable = len(indices) - len(indices) % k
            chunks.append([indices[i : i + k] for i in range(0, usable, k)])
        remaining = self.chunk_counts.copy()
        batches = []
        p = self.num_pids_per_batch
        for done in range(self.batches_per_epoch):
            chosen = self._choose_ids(remaining, self.batches_per_epoch - done, p, rng)
            remaining[chosen] -= 1
            batch = [chunks[i][remaining[i]] for i in chosen]
            batches.append(np.concatenate(batch))
        return batches

    @staticmethod
    def _choose_ids(
        remaining: np.ndarray, batches_left: int, p: int, rng: np.random.Generator
    ) -> np.ndarray:
        """P distinct identities, random, that keep the remaining batches feasible.

        With ``R`` batches left, the slack ``s = sum_i min(r_i, R) - P * R`` says how many
        identities that still have ``>= R`` chunks may skip this batch; the others must
        be taken now, or a later batch would run short of distinct identities.
        """
        saturated = np.flatnonzero(remaining >= batches_left)
        slack = int(np.minimum(remaining, batches_left).sum()) - p * batches_left
        must = max(0, len(saturated) - slack)
        chosen = rng.choice(saturated, size=must, replace=False) if must else saturated[:0]
        others = np.setdiff1d(np.flatnonzero(remaining > 0), chosen)
        if p > must:
            chosen = np.concatenate([chosen, rng.choice(others, size=p - must, replace=False)])
        return rng.permutation(chosen)

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        self.epoch += 1  # a loop that never calls set_epoch still gets a new order
        batches = self.epoch_batches(epoch)
        start = self.rank
        stop = self.batches_per_rank * self.world_size
        for batch in batches[start : stop : self.world_size]:
            yield from (int(i) for i in batch)
