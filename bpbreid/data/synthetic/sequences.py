"""Synthetic tracking sequences: people walking behind static occluders and past each other.

A multi-object tracker gives a person back the same identity after an occlusion only if its
appearance model recognises them; this module draws short videos where that is needed.
Each sequence is one camera of the synthetic set (its scene and colour response) with
static occluders in front of everybody:

* a tall ``wall`` (a billboard) that hides a person completely for a dozen frames or more;
* a ``car`` and a ``box`` that hide the legs (the case part-based re-id is made for);

and several people (identities never used for training) who walk left or right at their own
depth and speed, cross each other, and sometimes stop while hidden, so that a constant
velocity motion model mispredicts where they come out.

Ground truth is written in the MOTChallenge layout, which trackers and their evaluation
scripts read: ``<sequence>/img1/000001.jpg``, ``gt/gt.txt`` (``frame, id, x, y, w, h, 1, 1,
visibility``), ``det/det.txt`` (``frame, -1, x, y, w, h, score, -1, -1, -1``) and
``seqinfo.ini``. Boxes are *amodal* (the whole body, also the hidden part, as in MOT17);
``visibility`` is the fraction of the body's pixels that the frame shows. Detections are
derived from the ground truth (no detector needed): people at least ``det_min_visibility``
visible, each box missed with probability ``det_miss`` and jittered by ``det_jitter`` of its
height.

Generation is deterministic (every random draw is seeded from ``(seed, sequence)``) and
cached like the image set: a complete folder (``meta.json`` written last) is reused, a
half-written one is never read.

Example::

    from bpbreid.data.synthetic.sequences import generate_sequences, load_sequences
    root = generate_sequences("data/synthetic", preset="fast")   # 2 x 50 frames, seconds
    for seq in load_sequences(root):
        image = seq.frame(0)                    # uint8 [H, W, 3]
        dets = seq.detections(0)                # [N, 5]: x1, y1, x2, y2, score

Reference:
    Milan et al., "MOT16: A Benchmark for Multi-Object Tracking", arXiv 1603.00831 (the
    file formats and the amodal boxes with a visibility ratio).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bpbreid.data.synthetic.appearance import (
    FACING_YAW,
    camera_style,
    identity_appearance,
    sample_pose,
)
from bpbreid.data.synthetic.dataset import _is_complete, _move_into_place
from bpbreid.data.synthetic.drawing import _draw_person_on, _Painter
from bpbreid.data.synthetic.render import _camera_effects, render_background
from bpbreid.errors import DatasetError

SEQUENCES_VERSION = 1  # bump whenever the drawing changes: cached sequences are regenerated
# Identities of the sequences start here: far above every identity of the image presets, so
# no re-id model trained on the synthetic set has seen these people.
FIRST_IDENTITY = 10_000
OCCLUDER_KINDS: tuple[str, ...] = ("wall", "car", "box")


@dataclass(frozen=True)
class SequencePreset:
    """Sizes of a set of tracking sequences.

    Attributes:
        sequences: number of sequences (each one camera of the synthetic set).
        frames: frames per sequence.
        people: people per sequence (half walk left, half right, in crossing pairs).
        height, width: frame size in pixels (people are about 55-85% of the height).
        stop_probability: chance that a person pauses while hidden behind the wall.
        det_min_visibility: people less visible than this get no detection.
        det_miss: probability that a detection is missed.
        det_jitter: standard deviation of the box jitter, as a fraction of its height.
    """

    sequences: int
    frames: int
    people: int
    height: int = 160
    width: int = 320
    stop_probability: float = 0.5
    det_min_visibility: float = 0.3
    det_miss: float = 0.05
    det_jitter: float = 0.03


SEQUENCE_PRESETS: dict[str, SequencePreset] = {
    # tests and FAST notebooks: 100 frames, drawn in a few seconds
    "fast": SequencePreset(sequences=2, frames=50, people=4),
    # a CPU reader: 480 frames
    "cpu": SequencePreset(sequences=4, frames=120, people=5),
    # a GPU: 2,400 frames at twice the resolution (crops for 256x128 models)
    "gpu": SequencePreset(sequences=8, frames=300, people=7, height=320, width=640),
}


# --------------------------------------------------------------------------------------
# The plan of one sequence: occluders and trajectories
# --------------------------------------------------------------------------------------


@dataclass
class _Occluder:
    kind: str
    x0: float  # left edge, drawing pixels
    x1: float
    top: float  # top edge, drawing pixels (the bottom is the frame's)
    color: tuple[int, int, int]


@dataclass
class _Walker:
    pid: int
    depth: float  # 0 far .. 1 near
    direction: float  # +1 walks right, -1 left
    speed: float  # drawing pixels per frame
    x0: float  # body axis at frame 0, drawing pixels
    pause_start: int = -1  # first frame of the pause (-1: none)
    pause_length: int = 0
    pose: object = None
    appearance: object = None
    xs: list[float] = field(default_factory=list)


def _foot_and_height(depth: float, height: int) -> tuple[float, float]:
    """Feet line and body height (drawing pixels) at a depth: nearer is lower and larger."""
    return height * (0.78 + 0.2 * depth), height * (0.55 + 0.3 * depth)


def _plan_occluders(rng: np.random.Generator, height: int, width: int) -> list[_Occluder]:
    """A wall, a car and a box at separate places along the frame."""
    kinds = list(rng.permutation(OCCLUDER_KINDS))
    slots = np.linspace(0.18, 0.82, len(kinds)) + rng.uniform(-0.05, 0.05, size=len(kinds))
    colors = [(120, 120, 128), (40, 70, 120), (150, 110, 70), (170, 60, 45), (90, 90, 95)]
    out = []
    for kind, center in zip(kinds, slots):
        if kind == "wall":  # a billboard: hides a whole person
            w, top = rng.uniform(0.16, 0.2) * width, rng.uniform(0.0, 0.1) * height
        elif kind == "car":  # hides the legs of everybody behind it
            w, top = rng.uniform(0.24, 0.3) * width, rng.uniform(0.58, 0.64) * height
        else:
            w, top = rng.uniform(0.12, 0.16) * width, rng.uniform(0.64, 0.7) * height
        x = center * width
        color = colors[int(rng.integers(len(colors)))]
        out.append(_Occluder(str(kind), x - w / 2, x + w / 2, top, color))
    return out


def _plan_walkers(
    seed: int,
    rng: np.random.Generator,
    preset: SequencePreset,
    occluders: list[_Occluder],
    first_pid: int,
    height: int,
    width: int,
) -> list[_Walker]:
    """People in crossing pairs, each timed to pass behind one occluder mid-sequence."""
    walkers = []
    for k in range(preset.people):
        direction = 1.0 if k % 2 == 0 else -1.0
        # Pairs at about the same depth walk towards each other: their boxes overlap.
        depth = (
            float(rng.uniform(0, 1))
            if k % 2 == 0
            else float(np.clip(walkers[-1].depth + rng.uniform(-0.12, 0.12), 0, 1))
        )
        speed = float(rng.uniform(3.0, 6.0)) * width / 640
        target = occluders[int(rng.integers(len(occluders)))]
        center = (target.x0 + target.x1) / 2
        arrival = float(rng.uniform(0.25, 0.55)) * preset.frames
        walker = _Walker(
            first_pid + k, depth, direction, speed, center - direction * speed * arrival
        )
        if target.kind == "wall" and rng.random() < preset.stop_probability:
            # Stops while hidden: constant-velocity motion predicts the wrong exit time.
            walker.pause_start = int(arrival)
            walker.pause_length = int(rng.uniform(0.1, 0.25) * preset.frames)
        facing = "right" if direction > 0 else "left"
        walker.appearance = identity_appearance(seed, walker.pid)
        walker.pose = replace(sample_pose(rng, facing), yaw=FACING_YAW[facing])
        x = walker.x0
        for t in range(preset.frames):
            walker.xs.append(x)
            paused = walker.pause_start <= t < walker.pause_start + walker.pause_length
            x += 0.0 if paused else direction * speed
        walkers.append(walker)
    return walkers


def _draw_occluders(painter: _Painter, occluders: list[_Occluder], height: int) -> None:
    for o in occluders:
        bottom = height + 1
        if o.kind == "car":
            r = (o.x1 - o.x0) * 0.18
            painter.polygon(
                [(o.x0, o.top + r), (o.x0 + r, o.top), (o.x1 - r, o.top), (o.x1, o.top + r),
                 (o.x1, bottom), (o.x0, bottom)],
                o.color,
            )  # fmt: skip
            if painter.draw is not None:
                glass_y = o.top + (bottom - o.top) * 0.1
                painter.draw.rectangle(
                    (o.x0 + r, glass_y, o.x1 - r, glass_y + (bottom - o.top) * 0.25),
                    fill=(60, 75, 90),
                )
        else:
            painter.polygon([(o.x0, o.top), (o.x1, o.top), (o.x1, bottom), (o.x0, bottom)], o.color)
            if painter.draw is not None:
                dark = tuple(int(c * 0.75) for c in o.color)
                if o.kind == "wall":  # a poster on the billboard
                    pad = (o.x1 - o.x0) * 0.12
                    painter.draw.rectangle(
                        (o.x0 + pad, o.top + pad, o.x1 - pad, o.top + (bottom - o.top) * 0.55),
                        fill=(200, 190, 150),
                    )
                painter.draw.line([(o.x0, o.top), (o.x1, o.top)], fill=dark, width=3)


# --------------------------------------------------------------------------------------
# Rendering one sequence
# --------------------------------------------------------------------------------------


def _silhouette(walker: _Walker, x: float, height: int, width: int, pad: int) -> np.ndarray:
    """The person's whole silhouette on a canvas padded by ``pad`` on both sides."""
    foot, ph = _foot_and_height(walker.depth, height)
    painter = _Painter((width + 2 * pad, height), None)
    _draw_person_on(painter, walker.appearance, walker.pose, x + pad, foot - ph, ph, None)
    return np.asarray(painter.mask) > 127


def _render_sequence(seed: int, index: int, preset: SequencePreset, out: Path) -> dict:
    """Draw one sequence into ``out`` (MOTChallenge layout); return its summary."""
    rng = np.random.default_rng([seed, 700, index])
    H, W = preset.height, preset.width
    dh, dw = 2 * H, 2 * W  # drawn at twice the size, then downsampled (as the image set)
    camera = 1 + index % 6
    style = camera_style(seed, camera)
    background = render_background(style, dh, dw, rng).astype(np.uint8)
    occluders = _plan_occluders(rng, dh, dw)
    walkers = _plan_walkers(seed, rng, preset, occluders, FIRST_IDENTITY + 100 * index, dh, dw)
    occ_layer = Image.fromarray(background.copy())
    occ_painter = _Painter(occ_layer.size, occ_layer)
    _draw_occluders(occ_painter, occluders, dh)
    occ_mask = np.asarray(occ_painter.mask) > 127
    occ_alpha = occ_painter.mask

    (out / "img1").mkdir(parents=True, exist_ok=True)
    (out / "gt").mkdir(exist_ok=True)
    (out / "det").mkdir(exist_ok=True)
    pad = dh  # wider than any person: silhouettes entering the frame are drawn whole
    gt_rows: list[list[float]] = []
    det_rows: list[list[float]] = []
    det_rng = np.random.default_rng([seed, 701, index])
    frame_rng = np.random.default_rng([seed, 702, index])
    for t in range(preset.frames):
        present = [w for w in walkers if -0.3 * dw < w.xs[t] < 1.3 * dw]
        present.sort(key=lambda w: w.depth)  # far first: nearer people are drawn over them
        masks = {w.pid: _silhouette(w, w.xs[t], dh, dw, pad) for w in present}
        image = Image.fromarray(background.copy())
        for w in present:
            paused = w.pause_start <= t < w.pause_start + w.pause_length
            phase = w.pose.phase + (0.0 if paused else 0.09 * w.speed * t * 640 / dw)
            pose = replace(w.pose, phase=phase, facing="front" if paused else w.pose.facing)
            if paused:
                pose = replace(pose, yaw=0.0)
            foot, ph = _foot_and_height(w.depth, dh)
            person_rng = np.random.default_rng([seed, 703, w.pid])  # same shade every frame
            _draw_person_on(
                _Painter(image.size, image), w.appearance, pose, w.xs[t], foot - ph, ph,
                person_rng,
            )  # fmt: skip
        image.paste(occ_layer, (0, 0), occ_alpha)
        pixels = _camera_effects(image, style, frame_rng, (H, W))
        Image.fromarray(pixels).save(out / "img1" / f"{t + 1:06d}.jpg", quality=92)

        covered = occ_mask.copy()
        for w in reversed(present):  # nearest first: each hides those behind it
            full = masks[w.pid]
            area = int(full.sum())
            if area == 0:
                continue
            inside = full[:, pad : pad + dw]
            visible = inside & ~covered
            covered |= inside
            ys, xs = np.nonzero(full)
            x1, x2 = (xs.min() - pad) / 2, (xs.max() + 1 - pad) / 2
            y1, y2 = ys.min() / 2, (ys.max() + 1) / 2
            cx1, cx2 = max(0.0, x1), min(float(W), x2)
            if cx2 - cx1 < 0.5 * (x2 - x1):  # mostly outside the frame: not annotated
                continue
            vis = float(visible.sum()) / area
            box = [cx1, y1, cx2 - cx1, y2 - y1]
            gt_rows.append([t + 1, w.pid, *box, 1, 1, round(vis, 4)])
            if vis >= preset.det_min_visibility and det_rng.random() >= preset.det_miss:
                bh = box[3]
                jit = det_rng.normal(0, preset.det_jitter, size=4) * bh
                det = [box[0] + jit[0], box[1] + jit[1], box[2] + jit[2], box[3] + jit[3]]
                score = float(np.clip(0.5 + 0.5 * vis + det_rng.normal(0, 0.05), 0.05, 1.0))
                det_rows.append([t + 1, -1, *det, round(score, 3), -1, -1, -1])
    gt_rows.sort(key=lambda r: (r[0], r[1]))
    np.savetxt(out / "gt" / "gt.txt", np.array(gt_rows), delimiter=",", fmt="%.6g")
    np.savetxt(
        out / "det" / "det.txt", np.array(det_rows).reshape(-1, 10), delimiter=",", fmt="%.6g"
    )
    (out / "seqinfo.ini").write_text(
        "[Sequence]\n"
        f"name={out.name}\nimDir=img1\nframeRate=25\nseqLength={preset.frames}\n"
        f"imWidth={W}\nimHeight={H}\nimExt=.jpg\n"
    )
    return {
        "name": out.name,
        "camera": camera,
        "identities": [w.pid for w in walkers],
        "occluders": [o.kind for o in occluders],
        "pauses": sum(1 for w in walkers if w.pause_length > 0),
    }


# --------------------------------------------------------------------------------------
# The set: generation, caching, loading
# --------------------------------------------------------------------------------------


def _get_preset(name: str) -> SequencePreset:
    if name not in SEQUENCE_PRESETS:
        raise DatasetError(
            f"Unknown sequence preset '{name}'. Valid presets: {', '.join(SEQUENCE_PRESETS)}."
        )
    return SEQUENCE_PRESETS[name]


def sequences_dir(root: str | Path, preset: str = "fast", seed: int = 0) -> Path:
    """Where :func:`generate_sequences` writes: ``<root>/sequences/<preset>_s<seed>_<H>x<W>``."""
    p = _get_preset(preset)
    return Path(root) / "sequences" / f"{preset}_s{seed}_{p.height}x{p.width}"


def _expected_meta(preset: str, seed: int) -> dict:
    return {
        "generator": "bpbreid.data.synthetic.sequences",
        "version": SEQUENCES_VERSION,
        "preset": preset,
        "seed": seed,
        "sizes": asdict(_get_preset(preset)),
    }


def generate_sequences(root: str | Path, preset: str = "fast", seed: int = 0) -> Path:
    """Generate (or reuse) a set of tracking sequences and return its folder.

    Args:
        root: the synthetic data folder (e.g. ``data/synthetic``); sequences go under
            ``<root>/sequences/``.
        preset: ``fast`` (tests: 2 x 50 frames), ``cpu`` (4 x 120) or ``gpu`` (8 x 300 at
            320x640); see :data:`SEQUENCE_PRESETS`.
        seed: the same seed gives the same frames.

    Returns:
        The folder holding one MOTChallenge-style folder per sequence and ``meta.json``.

    Raises:
        DatasetError: unknown preset.
    """
    p = _get_preset(preset)
    target = sequences_dir(root, preset, seed)
    expected = _expected_meta(preset, seed)
    if _is_complete(target, expected):
        return target
    partial = target.parent / ".partial" / f"{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    try:
        summaries = [
            _render_sequence(seed, i, p, partial / f"seq{i + 1:02d}") for i in range(p.sequences)
        ]
        meta = {**expected, "sequences": summaries}
        (partial / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # written last
        _move_into_place(partial, target, expected)  # the image set's atomic rename
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.parent.rmdir()
        except OSError:
            pass
    return target


@dataclass
class Sequence:
    """One tracking sequence read from its MOTChallenge-style folder.

    Attributes:
        name: the folder name (``seq01``...).
        folder: the folder.
        gt: float64 ``[M, 9]`` rows ``frame, id, x, y, w, h, 1, 1, visibility`` (1-based frames).
        dets: float64 ``[N, 10]`` rows ``frame, -1, x, y, w, h, score, -1, -1, -1``.
        num_frames: frames in the sequence.
        size: ``(height, width)`` of a frame.
    """

    name: str
    folder: Path
    gt: np.ndarray
    dets: np.ndarray
    num_frames: int
    size: tuple[int, int]

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as uint8 RGB ``[H, W, 3]``."""
        path = self.folder / "img1" / f"{index + 1:06d}.jpg"
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))

    def detections(self, index: int) -> np.ndarray:
        """Detections of frame ``index`` (0-based): float32 ``[N, 5]`` x1, y1, x2, y2, score."""
        rows = self.dets[self.dets[:, 0] == index + 1]
        out = np.empty((len(rows), 5), dtype=np.float32)
        out[:, :2] = rows[:, 2:4]
        out[:, 2:4] = rows[:, 2:4] + rows[:, 4:6]
        out[:, 4] = rows[:, 6]
        return out

    def ground_truth(
        self, index: int, min_visibility: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth of frame ``index`` (0-based): ids ``[M]`` and boxes ``[M, 4]`` (xyxy)."""
        rows = self.gt[(self.gt[:, 0] == index + 1) & (self.gt[:, 8] >= min_visibility)]
        boxes = rows[:, 2:6].copy()
        boxes[:, 2:] += boxes[:, :2]
        return rows[:, 1].astype(int), boxes


def _read_rows(path: Path, columns: int) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path} not found: is this a sequence folder (img1/, gt/, det/)?")
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    return rows.reshape(-1, columns) if rows.size else np.zeros((0, columns))


def load_sequence(folder: str | Path) -> Sequence:
    """Read one MOTChallenge-style sequence folder (``img1/``, ``gt/gt.txt``, ``det/det.txt``)."""
    folder = Path(folder)
    info = dict(
        line.split("=", 1)
        for line in (folder / "seqinfo.ini").read_text().splitlines()
        if "=" in line
    )
    return Sequence(
        name=folder.name,
        folder=folder,
        gt=_read_rows(folder / "gt" / "gt.txt", 9),
        dets=_read_rows(folder / "det" / "det.txt", 10),
        num_frames=int(info["seqLength"]),
        size=(int(info["imHeight"]), int(info["imWidth"])),
    )


def load_sequences(folder: str | Path) -> list[Sequence]:
    """Every sequence of a folder written by :func:`generate_sequences`, in order."""
    folder = Path(folder)
    found = sorted(p for p in folder.iterdir() if (p / "seqinfo.ini").is_file())
    if not found:
        raise DatasetError(f"No sequence (a folder with seqinfo.ini) in {folder}.")
    return [load_sequence(p) for p in found]


def draw_tracks(
    image: np.ndarray, boxes: np.ndarray, ids: list[int] | np.ndarray, palette_seed: int = 0
) -> np.ndarray:
    """A copy of ``image`` with each box ``[N, 4]`` (xyxy) drawn and labelled by its id."""
    out = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(out)
    for box, tid in zip(np.asarray(boxes).reshape(-1, 4), ids):
        color = tuple(
            int(c) for c in np.random.default_rng([palette_seed, int(tid)]).integers(40, 255, 3)
        )
        draw.rectangle(tuple(float(v) for v in box), outline=color, width=2)
        draw.rectangle((box[0], box[1], box[0] + 6 * len(str(tid)) + 3, box[1] + 10), fill=color)
        draw.text((box[0] + 2, box[1]), str(int(tid)), fill=(0, 0, 0))
    return np.asarray(out)
