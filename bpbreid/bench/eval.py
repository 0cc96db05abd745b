"""Evaluation speed: part-based distance and CMC/mAP ranking against their baselines.

A problem at Market-1501 test scale (3,368 queries x 15,913 gallery images, foreground + 8
parts, 512-d embeddings, ~80% of parts visible, 751 identities, 6 cameras) is timed in one run:

* the floor: the bare batched matrix multiplications the distance needs;
* :func:`bpbreid.metrics.part_based_distance` (goal: within 1.3x of the floor);
* :func:`bpbreid.metrics.evaluate_rank` (goal: no slower than the floor);
* the baseline: a per-query Python loop over the protocol, as torchreid's pure-Python path
  (on a subset of queries at full scale, extrapolated, and said so).

The metrics of the vectorized ranking and of the baseline must agree; peak extra memory is
reported (resident memory on the CPU, allocated memory on CUDA).

Run: ``python -m bpbreid bench eval [--small] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

# Market-1501 test split: 3,368 queries, 15,913 gallery images (distractors included).
FULL = {"queries": 3368, "gallery": 15913, "ids": 751}
SMALL = {"queries": 300, "gallery": 1500, "ids": 100}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--small", action="store_true", help="a quick run at reduced size")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op CPU threads")
    parser.add_argument("--queries", type=int, default=None, help="number of queries")
    parser.add_argument("--gallery", type=int, default=None, help="number of gallery images")
    parser.add_argument("--parts", type=int, default=8, help="K parts (+ foreground)")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension")
    parser.add_argument("--visibility", type=float, default=0.8, help="part visibility rate")
    parser.add_argument(
        "--baseline-queries",
        type=int,
        default=1000,
        help="queries ranked by the per-query Python baseline (extrapolated to all)",
    )
    parser.add_argument("--repeat", type=int, default=2, help="timed repetitions (best kept)")
    parser.add_argument("--seed", type=int, default=0)


# --------------------------------------------------------------------------------------
# The baseline: the protocol, one query at a time, in plain NumPy
# --------------------------------------------------------------------------------------


def reference_evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> tuple[np.ndarray, float, int]:
    """Market-1501 CMC/mAP, one query at a time (the straightforward definition).

    Returns:
        ``(cmc [max_rank] float32, mAP, number of skipped queries)``.
    """
    num_gallery = distmat.shape[1]
    max_rank = min(max_rank, num_gallery)
    curves, precisions = [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        pids, cams = g_pids[order], g_camids[order]
        kept = ~((pids == q_pids[i]) & (cams == q_camids[i]))
        is_match = pids[kept] == q_pids[i]
        if not is_match.any():
            continue
        # CMC: 1 from the rank of the first correct match on.
        first = int(np.argmax(is_match))
        curve = np.zeros(max_rank, dtype=np.float32)
        curve[first:] = 1.0
        curves.append(curve)
        # AP: mean over the correct matches of the precision at each of them.
        positions = np.flatnonzero(is_match) + 1.0
        hits = np.arange(1, len(positions) + 1)
        precisions.append(float(np.mean(hits / positions)))
    skipped = distmat.shape[0] - len(curves)
    return np.mean(curves, axis=0).astype(np.float32), float(np.mean(precisions)), skipped


# --------------------------------------------------------------------------------------
# The problem
# --------------------------------------------------------------------------------------


@dataclass
class Problem:
    query_feats: Any  # [Nq, P, D] float32 tensor
    gallery_feats: Any  # [Ng, P, D]
    query_visibility: Any  # [Nq, P] bool
    gallery_visibility: Any  # [Ng, P] bool
    q_pids: np.ndarray
    g_pids: np.ndarray
    q_camids: np.ndarray
    g_camids: np.ndarray


def make_problem(
    n_query: int,
    n_gallery: int,
    n_ids: int,
    n_parts: int = 8,
    dim: int = 512,
    visibility: float = 0.8,
    n_cams: int = 6,
    seed: int = 0,
    noise: float = 4.0,
) -> Problem:
    """Embeddings around one centre per identity and part, with ~``visibility`` parts seen.

    The foreground embedding (index 0) is always visible; the noise (4.0: rank-1 ~80%, mAP
    ~43% at full scale) makes the problem neither trivial nor solved, so the rankings exercise
    the whole protocol.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_embeddings = n_parts + 1
    centres = torch.randn(n_ids, n_embeddings, dim, generator=gen)
    g_pids = rng.permutation(np.arange(n_gallery) % n_ids)
    q_pids = rng.integers(0, n_ids, n_query)

    def sample(pids: np.ndarray) -> Any:
        feats = torch.randn(len(pids), n_embeddings, dim, generator=gen).mul_(noise)
        feats += centres[torch.from_numpy(pids)]
        return feats

    def seen(n: int) -> Any:
        vis = torch.rand(n, n_embeddings, generator=gen) < visibility
        vis[:, 0] = True
        return vis

    return Problem(
        query_feats=sample(q_pids),
        gallery_feats=sample(g_pids),
        query_visibility=seen(n_query),
        gallery_visibility=seen(n_gallery),
        q_pids=q_pids,
        g_pids=g_pids,
        q_camids=rng.integers(0, n_cams, n_query),
        g_camids=rng.integers(0, n_cams, n_gallery),
    )


# --------------------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------------------


def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextmanager
def peak_memory(device: Any) -> Iterator[dict[str, float]]:
    """Peak extra memory of the block, in MiB, into ``result["mib"]``.

    On CUDA: peak allocated memory above the start. On the CPU: the resident-set high-water
    mark above the start (Linux: the mark is reset first through /proc/self/clear_refs; else
    ``getrusage`` maxrss, which can only report a new overall peak).
    """
    import torch

    result: dict[str, float] = {"mib": float("nan")}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result["mib"] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
        return
    reset = False
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        reset = True
    except OSError:
        pass
    start_rss = _proc_status("VmRSS")
    start_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    yield result
    if reset and start_rss is not None:
        result["mib"] = ((_proc_status("VmHWM") or 0) - start_rss) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["mib"] = max(0, peak - max(start_max, start_rss or 0)) / 2**20


def best_time(
    fn: Callable[[], Any], repeat: int, device: Any, warmup: bool = True
) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls (after one warm-up on CUDA) and the last result."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if warmup and device.type == "cuda":
        fn()
        sync()
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        out = None  # free the previous result before the next run
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best, out


def matmul_floor(problem: Problem, device: Any) -> Callable[[], None]:
    """The bare batched products ``[P, nq, D] x [P, D, ng]`` over the distance's blocks."""
    import torch

    from bpbreid.metrics.distance import _block_sizes

    q = problem.query_feats.to(device).transpose(0, 1).contiguous()
    g = problem.gallery_feats.to(device).transpose(0, 1).contiguous()
    n_parts, n_query, _ = q.shape
    n_gallery = g.shape[1]
    qc, gc = _block_sizes(n_query, n_gallery, n_parts, device, None, None)
    block = torch.empty(n_parts, qc, gc, device=device)

    def run() -> None:
        for q0 in range(0, n_query, qc):
            q1 = min(q0 + qc, n_query)
            for g0 in range(0, n_gallery, gc):
                g1 = min(g0 + gc, n_gallery)
                torch.bmm(
                    q[:, q0:q1], g[:, g0:g1].transpose(1, 2), out=block[:, : q1 - q0, : g1 - g0]
                )

    return run


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(args: argparse.Namespace) -> int:
    import torch

    from bpbreid.metrics import evaluate_rank, part_based_distance

    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = SMALL if args.small else FULL
    n_query = args.queries or size["queries"]
    n_gallery = args.gallery or size["gallery"]
    n_ids = min(size["ids"], n_gallery)
    problem = make_problem(
        n_query, n_gallery, n_ids, args.parts, args.dim, args.visibility, seed=args.seed
    )
    cpu_name = _cpu_name()
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{cpu_name}, {torch.get_num_threads()} thread(s)"
    )
    print(
        f"Evaluation benchmark: {n_query} queries x {n_gallery} gallery, {args.parts} parts + "
        f"foreground, {args.dim}-d, visibility ~{args.visibility:.0%}, {n_ids} ids, on {where}"
    )

    q = problem.query_feats.to(device)
    g = problem.gallery_feats.to(device)
    qv = problem.query_visibility.to(device)
    gv = problem.gallery_visibility.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)

    floor = matmul_floor(problem, device)

    def distance() -> Any:
        return part_based_distance(q, g, qv, gv)

    def ranking(dist: Any) -> tuple[np.ndarray, float]:
        return evaluate_rank(
            dist, problem.q_pids, problem.g_pids, problem.q_camids, problem.g_camids
        )

    # Memory first (one run each, also a warm-up), then the timings interleaved, so that
    # load from other processes hits the floor and the measured code alike.
    with peak_memory(device) as mem_dist:
        distmat = distance()
    with peak_memory(device) as mem_rank:
        cmc, mAP = ranking(distmat)
    times: dict[str, float] = {}
    for rep in range(max(1, args.repeat)):
        for name, fn in (
            ("floor", floor),
            ("distance", distance),
            ("ranking", lambda: ranking(distmat)),
            ("total", lambda: ranking(distance())),
        ):
            seconds, _ = best_time(fn, 1, device, warmup=rep == 0)
            times[name] = min(times.get(name, float("inf")), seconds)
    t_floor, t_dist, t_rank, t_total = (
        times["floor"],
        times["distance"],
        times["ranking"],
        times["total"],
    )

    # The baseline on a subset of queries (the whole set when small enough).
    n_base = min(n_query, args.baseline_queries)
    dist_np = distmat.float().cpu().numpy()
    start = time.perf_counter()
    ref_cmc, ref_map, _ = reference_evaluate_rank(
        dist_np[:n_base],
        problem.q_pids[:n_base],
        problem.g_pids,
        problem.q_camids[:n_base],
        problem.g_camids,
    )
    t_base = (time.perf_counter() - start) * n_query / n_base
    sub_cmc, sub_map = evaluate_rank(
        dist_np[:n_base],
        problem.q_pids[:n_base],
        problem.g_pids,
        problem.q_camids[:n_base],
        problem.g_camids,
    )
    cmc_diff = float(np.abs(sub_cmc - ref_cmc).max())
    map_diff = abs(sub_map - ref_map)
    agree = cmc_diff <= 1e-6 and map_diff <= 1e-6

    base_note = "" if n_base == n_query else f" (measured on {n_base} queries, extrapolated)"
    rows = [
        ("matmul floor (batched products only)", t_floor, "1.00x floor"),
        ("part-based distance", t_dist, f"{t_dist / t_floor:.2f}x floor (goal <= 1.3x)"),
        ("ranking: CMC + mAP, vectorized", t_rank, f"{t_rank / t_floor:.2f}x floor (goal <= 1x)"),
        ("whole evaluation (distance + ranking)", t_total, f"{t_total / t_floor:.2f}x floor"),
        (
            f"ranking baseline: per-query Python{base_note}",
            t_base,
            f"{t_base / t_rank:.1f}x slower than vectorized",
        ),
    ]
    print()
    print("| stage | time (s) | ratio |")
    print("|---|---:|---|")
    for name, seconds, ratio in rows:
        print(f"| {name} | {seconds:.3f} | {ratio} |")
    mem_unit = "allocated on GPU" if device.type == "cuda" else "resident"
    print()
    print(
        f"Peak extra memory ({mem_unit}): distance {mem_dist['mib']:.0f} MiB "
        f"(distance matrix alone {n_query * n_gallery * 4 / 2**20:.0f} MiB), "
        f"ranking {mem_rank['mib']:.0f} MiB (goal < 2048 MiB)."
    )
    print(f"Metrics: rank-1 {cmc[0]:.2%}, rank-5 {cmc[min(4, len(cmc) - 1)]:.2%}, mAP {mAP:.2%}.")
    print(
        f"Vectorized vs baseline on {n_base} queries: max |CMC diff| {cmc_diff:.1e}, "
        f"|mAP diff| {map_diff:.1e} -> {'equal' if agree else 'DIFFERENT'}."
    )
    return 0 if agree else 1


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    return f"{name} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU ({os.cpu_count()} cores)"
