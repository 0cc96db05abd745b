"""Re-id in a tracker: sequences, the backend, the flat embedding, the tracker, metrics, export."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from bpbreid.config import load_config
from bpbreid.data.synthetic import sequences as seqmod
from bpbreid.engine.checkpoint import save_checkpoint
from bpbreid.metrics import flatten_part_embeddings, part_based_distance
from bpbreid.model import build_model, select_test_embeddings
from bpbreid.track import (
    Method,
    ReidBackend,
    Tracker,
    TrackerConfig,
    compare_methods,
    evaluate_tracks,
    occlusion_events,
)

TINY = seqmod.SequencePreset(sequences=1, frames=14, people=3, height=96, width=192)


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(seqmod.SEQUENCE_PRESETS, "test", TINY)
        folder = seqmod.generate_sequences(root, "test", seed=0)
        again = seqmod.generate_sequences(root, "test", seed=0)  # cached
    assert again == folder
    return seqmod.load_sequences(folder)[0]


@pytest.fixture(scope="module")
def model_and_cfg():
    torch.manual_seed(0)
    cfg = load_config(
        "synthetic_cpu", ["model.bpbreid.dim_reduce_output=16", "data.height=32", "data.width=16"]
    )
    model = build_model(cfg, 4)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 16))  # non-trivial batch-norm statistics
    return model.eval(), cfg


# --------------------------------------------------------------------------------------
# Sequences
# --------------------------------------------------------------------------------------


def test_sequence_layout_and_ground_truth(sequence):
    assert sequence.num_frames == TINY.frames and sequence.size == (96, 192)
    assert sequence.frame(0).shape == (96, 192, 3)
    ids, boxes = sequence.ground_truth(0)
    assert len(ids) == len(boxes) and (boxes[:, 2] > boxes[:, 0]).all()
    assert set(ids) <= set(range(seqmod.FIRST_IDENTITY, seqmod.FIRST_IDENTITY + TINY.people))
    assert ((sequence.gt[:, 8] >= 0) & (sequence.gt[:, 8] <= 1)).all()
    # Detections come only from people visible enough, one per person at most.
    for t in range(sequence.num_frames):
        visible = sequence.gt[(sequence.gt[:, 0] == t + 1) & (sequence.gt[:, 8] >= 0.3)]
        assert len(sequence.detections(t)) <= len(visible)


def test_sequences_are_deterministic(tmp_path, sequence, monkeypatch):
    monkeypatch.setitem(seqmod.SEQUENCE_PRESETS, "test", TINY)
    other = seqmod.load_sequences(seqmod.generate_sequences(tmp_path, "test", seed=0))[0]
    np.testing.assert_array_equal(other.gt, sequence.gt)
    np.testing.assert_array_equal(other.frame(3), sequence.frame(3))


def test_unknown_preset_is_a_clear_error(tmp_path):
    from bpbreid.errors import DatasetError

    with pytest.raises(DatasetError, match="fast"):
        seqmod.generate_sequences(tmp_path, "huge")


def test_occlusion_events_find_a_hidden_stretch():
    gt = np.array([[f, 7, 0, 0, 10, 20, 1, 1, v] for f, v in enumerate([1, 1, 0, 0, 0, 1], 1)])
    seq = seqmod.Sequence("s", None, gt.astype(float), np.zeros((0, 10)), 6, (50, 50))
    assert occlusion_events(seq, below=0.3, min_frames=3) == [(7, 2, 5)]


# --------------------------------------------------------------------------------------
# The flat embedding
# --------------------------------------------------------------------------------------


def test_flat_cosine_equals_part_based_cosine_when_the_same_parts_are_visible():
    torch.manual_seed(0)
    q, g = torch.randn(5, 4, 8), torch.randn(6, 4, 8)
    vis = torch.tensor([1.0, 1.0, 0.0, 1.0])
    qv, gv = vis.expand(5, 4), vis.expand(6, 4)
    flat = 1 - flatten_part_embeddings(q, qv) @ flatten_part_embeddings(g, gv).T
    expected = part_based_distance(q, g, qv, gv, metric="cosine")
    torch.testing.assert_close(flat, expected, atol=1e-5, rtol=1e-5)
    # Soft visibility, the same on both sides: still equal (parts weighed by sqrt(v_q v_g)).
    soft = torch.tensor([1.0, 0.4, 0.0, 0.7])
    flat = (
        1
        - flatten_part_embeddings(q, soft.expand(5, 4))
        @ flatten_part_embeddings(g, soft.expand(6, 4)).T
    )
    expected = part_based_distance(q, g, soft.expand(5, 4), soft.expand(6, 4), metric="cosine")
    torch.testing.assert_close(flat, expected, atol=1e-5, rtol=1e-5)


def test_flat_penalises_parts_seen_on_one_side_only():
    torch.manual_seed(1)
    q, g = torch.randn(3, 3, 8), torch.randn(3, 3, 8)
    qv = torch.tensor([[1.0, 1.0, 0.0]] * 3)
    gv = torch.ones(3, 3)
    flat = 1 - flatten_part_embeddings(q, qv) @ flatten_part_embeddings(g, gv).T
    exact = part_based_distance(q, g, qv, gv, metric="cosine")
    # Two parts in common, 2 visible on one side, 3 on the other: similarity shrunk by 2/sqrt(6).
    shrink = 2 / 6**0.5
    torch.testing.assert_close(flat, 1 - shrink * (1 - exact), atol=1e-5, rtol=1e-5)
    rows = flatten_part_embeddings(q, qv)
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(3))
    assert (rows.view(3, 3, 8)[:, 2] == 0).all()  # the invisible part is zeros


# --------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------


def test_backend_gives_one_unit_vector_per_box(model_and_cfg, sequence):
    model, cfg = model_and_cfg
    backend = ReidBackend(model, cfg, "flat")
    frame = sequence.frame(2)
    boxes = np.array([[10, 10, 40, 80], [100, 5, 130, 90], [-20, 0, 10, 60]], dtype=np.float32)
    feats = backend.get_features(boxes, frame)
    parts = 1 + cfg.model.bpbreid.masks.parts_num
    assert feats.shape == (3, parts * 16) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    f, v = backend.part_features(boxes, frame)
    assert f.shape == (3, parts, 16) and v.shape == (3, parts)
    # The flat vector is exactly the model's test embeddings on the crops, flattened.
    with torch.no_grad():
        expected = flatten_part_embeddings(
            *select_test_embeddings(model(backend.crops(boxes, frame)), backend.test_embeddings)
        )
    np.testing.assert_allclose(feats, expected.numpy(), atol=1e-6)
    assert backend.get_features(np.zeros((0, 4)), frame).shape[0] == 0


def test_backend_global_and_bgr(model_and_cfg, sequence):
    model, cfg = model_and_cfg
    frame = sequence.frame(0)
    boxes = np.array([[10, 10, 40, 80]], dtype=np.float32)
    glob = ReidBackend(model, cfg, "global").get_features(boxes, frame)
    assert glob.shape == (1, 16)
    rgb = ReidBackend(model, cfg, "flat").get_features(boxes, frame)
    bgr = ReidBackend(model, cfg, "flat", bgr=True).get_features(boxes, frame[..., ::-1])
    np.testing.assert_allclose(rgb, bgr, atol=1e-6)
    with pytest.raises(ValueError, match="flat"):
        ReidBackend(model, cfg, "mean")


# --------------------------------------------------------------------------------------
# The tracker (a fake detection loop)
# --------------------------------------------------------------------------------------


def _walk(frames, gap=()):
    """Two people walking towards each other; both hidden during ``gap``."""
    for t in range(frames):
        boxes = []
        if t not in gap:
            boxes = [[10 + 3 * t, 20, 30 + 3 * t, 70, 0.9], [200 - 3 * t, 22, 220 - 3 * t, 72, 0.9]]
        yield t, np.array(boxes, dtype=np.float32).reshape(-1, 5)


def test_motion_only_keeps_ids_on_a_steady_walk():
    tracker = Tracker(TrackerConfig("none"))
    ids = [tracker.update(d)[:, 4].tolist() for _, d in _walk(20)]
    assert sorted(ids[-1]) == [1.0, 2.0]  # confirmed after n_init, never replaced


def test_appearance_finds_a_track_again_after_a_long_occlusion():
    feats = np.eye(2, 8, dtype=np.float32)  # two very different people

    def run(appearance):
        tracker = Tracker(TrackerConfig(appearance, max_age=60))
        ids = {}
        for t, dets in _walk(40, gap=range(10, 30)):
            if t >= 30:  # they come back where constant velocity does not expect them
                dets[:, [0, 2]] += np.array([[40.0], [-40.0]])
            out = tracker.update(dets, feats[: len(dets)] if len(dets) else np.zeros((0, 8)))
            for row in out:
                ids.setdefault(t, []).append(int(row[4]))
        return ids

    assert sorted(run("global")[39]) == [1, 2]  # same ids as before the occlusion
    assert max(run("none")[39]) > 2  # motion alone starts new tracks


def test_parts_memory_ignores_invisible_parts():
    tracker = Tracker(TrackerConfig("parts", n_init=1))
    f = torch.nn.functional.normalize(torch.randn(1, 3, 8), dim=-1)
    tracker.update(np.array([[0, 0, 10, 20, 1.0]]), (f, torch.ones(1, 3)))
    memory = tracker.tracks[0].part_features.copy()
    hidden_legs = f.clone()
    hidden_legs[0, 2] = -hidden_legs[0, 2]  # what an occluder would put there
    tracker.update(np.array([[1, 0, 11, 20, 1.0]]), (hidden_legs, torch.tensor([[1.0, 1.0, 0.0]])))
    np.testing.assert_allclose(tracker.tracks[0].part_features[2], memory[2])


def test_tracker_rejects_bad_settings():
    with pytest.raises(ValueError, match="parts"):
        Tracker(TrackerConfig("colour"))
    with pytest.raises(ValueError, match="Unknown tracker setting"):
        Tracker(max_agee=3)


# --------------------------------------------------------------------------------------
# Metrics (py-motmetrics, TrackEval when installed) and the comparison
# --------------------------------------------------------------------------------------


def _gt_tracks(sequence, swap_at=None):
    rows = sequence.gt[sequence.gt[:, 8] >= 0.3]
    out = np.column_stack([rows[:, 0], rows[:, 1], rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]])
    if swap_at is not None:
        ids = np.unique(out[:, 1])
        late = out[:, 0] >= swap_at
        a, b = (out[:, 1] == ids[0]) & late, (out[:, 1] == ids[1]) & late
        out[a, 1], out[b, 1] = ids[1], ids[0]
    return out


def test_metrics_of_perfect_and_swapped_tracks(sequence):
    pytest.importorskip("motmetrics")
    perfect = evaluate_tracks([sequence], {sequence.name: _gt_tracks(sequence)})
    assert perfect["IDF1"] == pytest.approx(100.0) and perfect["IDsw"] == 0
    swapped = evaluate_tracks([sequence], {sequence.name: _gt_tracks(sequence, swap_at=8)})
    assert swapped["IDsw"] >= 2 and swapped["IDF1"] < 100.0
    if importlib.util.find_spec("trackeval"):
        assert perfect["HOTA"] == pytest.approx(100.0, abs=1e-6)
        assert swapped["HOTA"] < perfect["HOTA"]


def test_compare_methods_runs_every_tracker(sequence, model_and_cfg):
    pytest.importorskip("motmetrics")
    model, cfg = model_and_cfg
    backend = ReidBackend(model, cfg, "flat")
    methods = [
        Method("motion only", TrackerConfig("none")),
        Method("flat", TrackerConfig("flat"), "parts"),
        Method("parts", TrackerConfig("parts"), "parts"),
    ]
    rows, tracks = compare_methods([sequence], methods, {"parts": backend})
    assert [r["method"] for r in rows] == ["motion only", "flat", "parts"]
    assert all(0 <= r["IDF1"] <= 100 for r in rows)
    assert tracks["parts"][sequence.name].shape[1] == 6


@pytest.mark.skipif(importlib.util.find_spec("boxmot") is None, reason="boxmot not installed")
def test_a_short_run_of_a_real_boxmot_tracker(sequence, model_and_cfg, tmp_path):
    from bpbreid.track.adapters import BoxmotAdapter, make_boxmot_tracker

    model, cfg = model_and_cfg
    tracker = make_boxmot_tracker(
        "BotSort", reid_weights=tmp_path / "unused.pt", device="cpu", half=False
    )
    adapter = BoxmotAdapter(tracker, ReidBackend(model, cfg, "flat"))
    for t in range(sequence.num_frames):
        out = adapter.update(sequence.detections(t), sequence.frame(t))
        assert out.shape[1] == 5


def test_boxmot_missing_says_how_to_install(monkeypatch):
    import sys

    from bpbreid.errors import BPBReIDError
    from bpbreid.track.adapters import make_boxmot_tracker

    monkeypatch.setitem(sys.modules, "boxmot", None)
    with pytest.raises(BPBReIDError, match="bpbreid\\[track\\]"):
        make_boxmot_tracker()


def test_boxmot_adapter_passes_our_embeddings(model_and_cfg, sequence):
    from bpbreid.track.adapters import BoxmotAdapter

    class FakeTracker:  # boxmot's update(dets [N, 6], image, embs [N, D]) contract
        def update(self, dets, image, embs):
            assert dets.shape[1] == 6 and len(embs) == len(dets)
            ids = np.arange(1, len(dets) + 1)[:, None]
            return np.hstack([dets[:, :4], ids, dets[:, 4:6], ids - 1])

    model, cfg = model_and_cfg
    adapter = BoxmotAdapter(FakeTracker(), ReidBackend(model, cfg, "flat"))
    out = adapter.update(sequence.detections(0), sequence.frame(0))
    assert out.shape == (len(sequence.detections(0)), 5)


# --------------------------------------------------------------------------------------
# export --flat
# --------------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    return save_checkpoint(tmp_path / "model.pth", model, cfg, num_classes=4)


def test_flat_onnx_matches_pytorch(tmp_path, checkpoint, model_and_cfg):
    pytest.importorskip("onnx", reason="optional extra 'deploy' (onnx) missing")
    ort = pytest.importorskip("onnxruntime", reason="optional extra 'deploy' (onnxruntime)")
    from bpbreid.export import export_model

    path, check = export_model(checkpoint, tmp_path / "flat.onnx", fmt="onnx", flat=True)
    assert check.runtime == "onnxruntime" and check.passed, str(check)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["embeddings"]
    images = torch.randn(5, 3, 32, 16)
    (got,) = session.run(["embeddings"], {"images": images.numpy()})
    model, cfg = model_and_cfg
    with torch.no_grad():
        expected = flatten_part_embeddings(
            *select_test_embeddings(model(images), cfg.model.bpbreid.test_embeddings)
        )
    assert got.shape == (5, (1 + cfg.model.bpbreid.masks.parts_num) * 16)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


def test_export_flat_from_the_command_line(tmp_path, checkpoint, capsys):
    pytest.importorskip("onnxruntime", reason="optional extra 'deploy' (onnxruntime)")
    from bpbreid.__main__ import main

    out = tmp_path / "reid_flat.onnx"
    code = main(
        ["export", "--checkpoint", str(checkpoint), "--flat", "--format", "onnx", "--out", str(out)]
    )
    assert code == 0 and out.is_file()
    assert "OK: onnxruntime" in capsys.readouterr().out
