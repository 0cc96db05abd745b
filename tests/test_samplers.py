"""Identity-balanced P x K sampler: batch composition, epoch length, DDP shares, epochs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from bpbreid.data.datasets import Sample
from bpbreid.data.samplers import RandomIdentitySampler, feasible_batches


def make_pids(counts: dict[int, int], seed: int = 0) -> list[int]:
    """A shuffled pid list with ``counts[pid]`` images per identity."""
    pids = [pid for pid, n in counts.items() for _ in range(n)]
    np.random.default_rng(seed).shuffle(pids)
    return pids


def batches_of(sampler: RandomIdentitySampler) -> list[list[int]]:
    indices = list(sampler)
    assert len(indices) == len(sampler)  # __len__ consistent with iteration
    size = sampler.batch_size
    assert len(indices) % size == 0
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def assert_p_by_k(batch: list[int], pids: list[int], p: int, k: int) -> None:
    counts = Counter(pids[i] for i in batch)
    assert len(counts) == p, counts
    assert set(counts.values()) == {k}, counts


def test_every_batch_is_p_identities_by_k_images():
    pids = make_pids({pid: 4 + pid % 5 for pid in range(20)})
    sampler = RandomIdentitySampler(pids, batch_size=16, num_instances=4, seed=3)
    batches = batches_of(sampler)
    assert len(batches) > 0
    for batch in batches:
        assert_p_by_k(batch, pids, p=4, k=4)
    # torchreid's epoch length: sum over ids of floor(max(n, K) / K) chunks, P per batch
    chunks = sum(max(4 + pid % 5, 4) // 4 for pid in range(20))
    assert len(batches) == chunks // 4
    # without oversampling, no image is used twice in an epoch
    flat = [i for batch in batches for i in batch]
    assert len(flat) == len(set(flat))


def test_accepts_samples_and_oversamples_small_identities():
    samples = [Sample(f"{i}.jpg", pid, 0, None) for i, pid in enumerate([0, 1, 1, 1, 2, 2, 3])]
    sampler = RandomIdentitySampler(samples, batch_size=8, num_instances=4, seed=0)
    batches = batches_of(sampler)
    assert len(batches) == 2  # 4 identities, one chunk each, 2 per batch
    used = Counter(samples[i].pid for batch in batches for i in batch)
    assert used == {0: 4, 1: 4, 2: 4, 3: 4}
    only_image_of_pid0 = [i for batch in batches for i in batch if samples[i].pid == 0]
    assert set(only_image_of_pid0) == {0}  # one image drawn 4 times (with replacement)


def test_len_matches_iteration_when_one_identity_dominates():
    counts = {0: 40, 1: 4, 2: 4, 3: 4}  # 10 chunks for id 0, 1 for each of the others
    pids = make_pids(counts)
    sampler = RandomIdentitySampler(pids, batch_size=8, num_instances=4, seed=1)
    # torchreid would announce 13 // 2 = 6 batches but can only build 3 of 2 distinct ids
    assert feasible_batches(sampler.chunk_counts, 2) == 3
    for epoch in range(5):
        sampler.set_epoch(epoch)
        batches = batches_of(sampler)
        assert len(batches) == 3
        for batch in batches:
            assert_p_by_k(batch, pids, p=2, k=4)


@pytest.mark.parametrize("seed", range(8))
def test_random_layouts_always_fill_the_announced_batches(seed):
    rng = np.random.default_rng(seed)
    num_ids = int(rng.integers(3, 30))
    counts = {pid: int(rng.integers(1, 25)) for pid in range(num_ids)}
    k = int(rng.integers(1, 5))
    p = int(rng.integers(1, min(num_ids, 8) + 1))
    pids = make_pids(counts, seed)
    sampler = RandomIdentitySampler(pids, batch_size=p * k, num_instances=k, seed=seed)
    batches = batches_of(sampler)
    assert len(batches) >= 1
    for batch in batches:
        assert_p_by_k(batch, pids, p=p, k=k)


def test_ranks_get_disjoint_equal_shares_of_the_same_epoch():
    pids = make_pids({pid: 8 for pid in range(30)})
    kwargs = dict(batch_size=12, num_instances=4, seed=7)
    single = RandomIdentitySampler(pids, **kwargs)
    ranks = [RandomIdentitySampler(pids, rank=r, world_size=3, **kwargs) for r in range(3)]
    for sampler in (single, *ranks):
        sampler.set_epoch(2)
    shares = [batches_of(sampler) for sampler in ranks]
    assert len({len(share) for share in shares}) == 1 and len(shares[0]) > 0
    assert len(ranks[0]) * 3 <= len(single)
    flat = [i for share in shares for batch in share for i in batch]
    assert len(flat) == len(set(flat))  # no image on two ranks in one epoch
    everything = {tuple(batch) for batch in batches_of(single)}
    for share in shares:
        for batch in share:
            assert_p_by_k(batch, pids, p=3, k=4)
            assert tuple(batch) in everything  # each rank's batches come from the same epoch


def test_set_epoch_reshuffles_and_is_reproducible():
    pids = make_pids({pid: 6 for pid in range(12)})
    sampler = RandomIdentitySampler(pids, batch_size=8, num_instances=2, seed=0)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first  # same epoch, same order (all ranks agree)
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    assert list(sampler) != second  # a loop without set_epoch moves on to the next epoch
    other_seed = RandomIdentitySampler(pids, batch_size=8, num_instances=2, seed=1)
    assert list(other_seed) != first


def test_invalid_arguments():
    with pytest.raises(ValueError, match="multiple"):
        RandomIdentitySampler([0, 1, 2], batch_size=6, num_instances=4)
    with pytest.raises(ValueError, match="identities"):
        RandomIdentitySampler([0, 0, 1, 1], batch_size=12, num_instances=4)
    with pytest.raises(ValueError, match="rank"):
        RandomIdentitySampler([0, 1], batch_size=2, num_instances=1, rank=2, world_size=2)
