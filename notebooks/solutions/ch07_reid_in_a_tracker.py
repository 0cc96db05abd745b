"""Solutions to the exercises of chapter 07 (re-id in a tracker).

Run ``python notebooks/solutions/ch07_reid_in_a_tracker.py``; ``tests/test_solutions.py`` runs it
too. To run in seconds the script tracks small videos of its own (one sequence of 32 frames at
96x192, generated in a temporary folder) with a stand-in for the chapter's two models: the CPU
part-based model freshly initialized (seed 0) at half its input size (32x16), with batch-norm
statistics taken from the video's crops, whose ``bn_global`` embedding plays the global model.
Its embeddings barely tell people apart, so the numbers show how to run and read each comparison,
not which method wins. For numbers worth reading, use the helpers in the notebook on the chapter's
videos and models::

    features = embed(sequences, {"global": global_backend, "parts": parts_backend})
    compare(sequences, features)                      # exercise 1, on harder sequences
    idf1_by_threshold(sequences, features)            # exercise 2
    cut = [visible_part(s) for s in sequences]        # exercise 3
    compare(cut, embed(cut, {"global": global_backend, "parts": parts_backend}))
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bpbreid.config import load_config
from bpbreid.data.synthetic.sequences import (
    SEQUENCE_PRESETS,
    SequencePreset,
    generate_sequences,
    load_sequences,
)
from bpbreid.data.synthetic.sequences import Sequence as TrackingSequence
from bpbreid.metrics import flatten_part_embeddings
from bpbreid.model import build_model
from bpbreid.paths import thread_policy
from bpbreid.track import (
    Method,
    ReidBackend,
    TrackerConfig,
    embed_sequence,
    evaluate_tracks,
    iou_matrix,
    run_tracker,
)
from bpbreid.track.evaluation import FrameFeatures

# Exercise 1's hint: a preset under a new name, since the cache folder is keyed by the name.
# The small one stands in for the chapter's "cpu" preset (4 x 120 frames at 160x320).
SMALL, HARDER = "solution_small", "solution_harder"
SEQUENCE_PRESETS[SMALL] = SequencePreset(sequences=1, frames=32, people=4, height=96, width=192)
# Two more people (three crossing pairs), and everyone who walks behind the billboard stops there.
SEQUENCE_PRESETS[HARDER] = replace(SEQUENCE_PRESETS[SMALL], people=6, stop_probability=1.0)

METHODS = [
    Method("motion only", TrackerConfig("none")),
    Method("global re-id", TrackerConfig("global"), "global"),
    Method("part-based (flat)", TrackerConfig("flat"), "parts"),
    Method("part-based (part-aware)", TrackerConfig("parts"), "parts"),
]
# max_appearance_distance (the chapter uses 0.3): at 0 no appearance match is ever accepted, and
# every method is the motion-only tracker; a cosine distance reaches 2 at most.
THRESHOLDS = (0.0, 0.25, 0.5, 0.75, 1.0)


@functools.cache
def _setup() -> tuple[Path, ReidBackend]:
    """A temporary data folder, and one backend giving both the global and the part embeddings."""
    torch.set_num_threads(thread_policy())  # one thread on a 2-core CPU, as the notebooks
    root = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    # bn_global first, then the chapter's test embeddings (foreground + parts): one forward pass
    # per frame serves the global and the part-based trackers.
    cfg = load_config(
        "synthetic_cpu",
        ["train.device=cpu", "data.height=32", "data.width=16",
         "model.bpbreid.test_embeddings=[bn_global,bn_foreground,parts]"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=12)
    backend = ReidBackend(model, cfg, "parts")
    _calibrate(model, backend, load_sequences(_generate(root, SMALL))[0])
    return root, backend


def _generate(root: Path, preset: str) -> Path:
    return generate_sequences(root / "synthetic", preset, seed=0)


def _calibrate(model: torch.nn.Module, backend: ReidBackend, sequence: TrackingSequence) -> None:
    """Batch-norm statistics of the model from the crops of one sequence's detections.

    A fresh model normalizes with mean 0 and variance 1, which maps every crop to nearly the
    same embedding (cosine distances of about 0.01); with the statistics of real crops its random
    filters respond to colours and shapes, enough for the tracker's distances to vary.
    """
    crops = torch.cat([
        backend.crops(sequence.detections(t)[:, :4], sequence.frame(t))
        for t in range(0, sequence.num_frames, 4)
    ])  # fmt: skip
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches seen
    with torch.no_grad():
        model.train()(crops)
    model.eval()


@functools.cache
def _sequences(preset: str) -> tuple[TrackingSequence, ...]:
    root, _ = _setup()
    return tuple(load_sequences(_generate(root, preset)))


Features = dict[str, dict[str, list[FrameFeatures]]]  # backend key -> sequence name -> frames


def embed(sequences: Sequence[TrackingSequence], backends: dict[str, ReidBackend]) -> Features:
    """Every detection embedded once per backend (what ``compare_methods`` does inside)."""
    return {key: {s.name: embed_sequence(s, b) for s in sequences} for key, b in backends.items()}


def _features(sequences: Sequence[TrackingSequence]) -> Features:
    """The stand-in's features: one forward pass gives ``bn_global`` (first) and the parts."""
    _, backend = _setup()
    both = embed(sequences, {"both": backend})["both"]

    def take(frames: list[FrameFeatures], part: slice) -> list[FrameFeatures]:
        return [
            FrameFeatures(f.detections, f.features[:, part], f.visibility[:, part]) for f in frames
        ]

    return {
        "global": {name: take(frames, slice(0, 1)) for name, frames in both.items()},
        "parts": {name: take(frames, slice(1, None)) for name, frames in both.items()},
    }


@functools.cache
def _preset_features(preset: str) -> Features:
    return _features(_sequences(preset))


def compare(
    sequences: Sequence[TrackingSequence], features: Features, methods: list[Method] | None = None
) -> dict[str, dict[str, float]]:
    """The chapter's ``compare_methods`` on features embedded beforehand: method -> metrics."""
    out = {}
    for method in methods or METHODS:
        cache = features.get(method.features or "", {})
        tracks = {s.name: run_tracker(s, method.config, cache.get(s.name)) for s in sequences}
        out[method.name] = evaluate_tracks(sequences, tracks)
    return out


@functools.cache
def exercise_1() -> dict[str, dict[str, object]]:
    """The comparison on the small preset and on its harder twin.

    Per preset: people, pauses behind the billboard (from ``meta.json``), and IDF1 and ID switches
    of each method. With trained models, expect motion only to lose the most on the harder preset:
    a stopped person comes out later than the constant-velocity prediction, so only appearance can
    link them to their track again.
    """
    answer = {}
    for preset in (SMALL, HARDER):
        sequences = _sequences(preset)
        meta = json.loads((sequences[0].folder.parent / "meta.json").read_text())
        rows = compare(sequences, _preset_features(preset))
        answer[preset] = {
            "people": sum(len(s["identities"]) for s in meta["sequences"]),
            "pauses": sum(s["pauses"] for s in meta["sequences"]),
            "IDF1": {name: row["IDF1"] for name, row in rows.items()},
            "IDsw": {name: row["IDsw"] for name, row in rows.items()},
        }
    return answer


def _identities(sequence: TrackingSequence, frame: int, detections: np.ndarray) -> np.ndarray:
    """The ground-truth identity of each detection (its best-overlapping box), -1 if none."""
    ids, boxes = sequence.ground_truth(frame)
    if len(ids) == 0:
        return np.full(len(detections), -1)
    iou = iou_matrix(detections[:, :4], boxes)
    return np.where(iou.max(1) >= 0.5, ids[iou.argmax(1)], -1)


def distance_scales(sequences: Sequence[TrackingSequence], features: Features) -> dict[str, dict]:
    """Median cosine distance between detections of the same person and of different people.

    The unit vectors the trackers compare: ``global`` (one embedding) and ``flat`` (the
    part-based embedding flattened). Their scales differ, so one threshold cannot suit both.
    """
    out = {}
    for kind, key in (("global", "global"), ("flat", "parts")):
        vectors, pids = [], []
        for sequence in sequences:
            for frame, found in enumerate(features[key][sequence.name]):
                vectors.append(flatten_part_embeddings(found.features, found.visibility))
                pids.append(_identities(sequence, frame, found.detections))
        x, pid = torch.cat(vectors), np.concatenate(pids)
        distance = (1 - x @ x.T).numpy()
        known = (pid[:, None] >= 0) & (pid[None] >= 0)
        same = known & (pid[:, None] == pid[None]) & ~np.eye(len(pid), dtype=bool)
        out[kind] = {
            "same person": float(np.median(distance[same])),
            "different people": float(np.median(distance[known & (pid[:, None] != pid[None])])),
        }
    return out


def idf1_by_threshold(
    sequences: Sequence[TrackingSequence],
    features: Features,
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, list[float]]:
    """IDF1 of each appearance method at each ``max_appearance_distance``: method -> values.

    The detections are embedded once; only the tracking and the scoring are redone.
    """
    idf1: dict[str, list[float]] = {}
    for method in METHODS[1:]:
        for threshold in thresholds:
            config = replace(method.config, max_appearance_distance=threshold)
            row = compare(sequences, features, [replace(method, config=config)])[method.name]
            idf1.setdefault(method.name, []).append(row["IDF1"])
    return idf1


@functools.cache
def exercise_2() -> dict[str, object]:
    """IDF1 of each appearance method against ``max_appearance_distance``, and the scales.

    Too low a threshold links nobody by appearance (at 0 every method is the motion tracker);
    too high a one links different people. Read each method's best threshold against its
    ``distance_scales``: it lies between its same-person and different-people distances.
    """
    sequences, features = _sequences(SMALL), _preset_features(SMALL)
    return {
        "thresholds": list(THRESHOLDS),
        "IDF1": idf1_by_threshold(sequences, features),
        "scales": distance_scales(sequences, features),
    }


def plot_exercise_2(answer: dict[str, object] | None = None):
    """IDF1 against the threshold, one line per method: the figure the exercise asks for."""
    import matplotlib.pyplot as plt

    answer = answer or exercise_2()
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    for name, values in answer["IDF1"].items():
        ax.plot(answer["thresholds"], values, marker="o", label=name)
    ax.set_xlabel("max_appearance_distance")
    ax.set_ylabel("IDF1 (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def visible_part(sequence: TrackingSequence) -> TrackingSequence:
    """The sequence with every box cut to the visible part of the person, as a detector sees it.

    The car and the box rise from the ground, so what they leave visible is the top of the body:
    each box keeps the top ``visibility`` share of its height (the ground truth's last column).
    For the billboard and for people hiding each other the hidden part is at a side, and this is
    an approximation. A detection takes the visibility of the ground-truth box it overlaps most.
    """
    gt = sequence.gt.copy()
    gt[:, 5] *= gt[:, 8]
    dets = sequence.dets.copy()
    for frame in np.unique(dets[:, 0]).astype(int):
        rows = np.flatnonzero(dets[:, 0] == frame)  # the order of sequence.detections()
        truth = sequence.gt[sequence.gt[:, 0] == frame]
        boxes = np.c_[truth[:, 2:4], truth[:, 2:4] + truth[:, 4:6]]
        iou = iou_matrix(sequence.detections(frame - 1)[:, :4], boxes)
        dets[rows, 5] *= truth[iou.argmax(1), 8]
    return replace(sequence, gt=gt, dets=dets)


@functools.cache
def exercise_3() -> dict[str, object]:
    """IDF1 of each method with full-body boxes and with visible-part boxes.

    The cut boxes are scored against the ground truth cut the same way. The crop of a person
    behind the car is then their upper body stretched to a whole crop: the global embedding
    describes an image unlike the ones it learnt, while a part-based model can mark the parts it
    does not find as invisible; with the chapter's models, see which loses more IDF1.
    """
    full = _sequences(SMALL)
    cut = tuple(visible_part(s) for s in full)
    answer: dict[str, object] = {}
    for name, sequences, features in (
        ("full boxes", full, _preset_features(SMALL)),
        ("visible part", cut, _features(cut)),
    ):
        answer[name] = {method: row["IDF1"] for method, row in compare(sequences, features).items()}
    kept = [c.dets[:, 5] / f.dets[:, 5] for c, f in zip(cut, full)]
    answer["share of the height kept"] = float(np.concatenate(kept).mean())
    return answer


def _table(rows: dict[str, dict[str, float]]) -> None:
    names = list(next(iter(rows.values())))
    print(f"   {'':<16}" + "".join(f"{name:>25}" for name in names))
    for label, values in rows.items():
        print(f"   {label:<16}" + "".join(f"{values[name]:>25.1f}" for name in names))


if __name__ == "__main__":
    one = exercise_1()
    print("1. IDF1 on the small preset and on the harder one")
    for preset, row in one.items():
        print(f"   {preset}: {row['people']} people, {row['pauses']} pause(s) behind the billboard")
    _table({preset: row["IDF1"] for preset, row in one.items()})
    two = exercise_2()
    print("2. IDF1 against max_appearance_distance", two["thresholds"])
    for name, values in two["IDF1"].items():
        print(f"   {name:<24}", [round(v, 1) for v in values])
    for kind, scale in two["scales"].items():
        print(f"   median {kind} distance: same person {scale['same person']:.3f}, "
              f"different people {scale['different people']:.3f}")  # fmt: skip
    three = exercise_3()
    kept = three["share of the height kept"]
    print(f"3. IDF1 with visible-part boxes ({kept:.0%} of the box height kept on average)")
    _table({name: three[name] for name in ("full boxes", "visible part")})
