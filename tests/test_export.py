"""Export: the embedding model as TorchScript and ONNX, checked against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bpbreid.__main__ import main
from bpbreid.config import load_config
from bpbreid.engine.checkpoint import save_checkpoint
from bpbreid.export import EmbeddingModel, example_batch, export_model
from bpbreid.model import build_model, select_test_embeddings

NUM_CLASSES = 4


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = load_config(
        "synthetic_cpu", ["model.bpbreid.dim_reduce_output=16", "data.height=32", "data.width=16"]
    )
    model = build_model(cfg, NUM_CLASSES)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 16))  # non-trivial batch-norm statistics
    return save_checkpoint(tmp_path / "model.pth", model.eval(), cfg, num_classes=NUM_CLASSES)


def _reference(checkpoint, images):
    from bpbreid.engine.checkpoint import load_checkpoint

    model, cfg, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        return select_test_embeddings(model(images), cfg.model.bpbreid.test_embeddings)


def test_embedding_model_matches_select_test_embeddings(checkpoint):
    from bpbreid.engine.checkpoint import load_checkpoint

    model, cfg, _ = load_checkpoint(checkpoint)
    wrapper = EmbeddingModel(model, ["bn_foreg", "parts"])  # official alias accepted
    images = example_batch(cfg, 3)
    feats, vis = wrapper(images)
    assert feats.shape == (3, 1 + cfg.model.bpbreid.masks.parts_num, 16)
    assert wrapper.check_against_model(images) == 0.0


@pytest.mark.filterwarnings("ignore:`torch.jit")  # deprecated in recent torch, still supported
def test_torchscript_equals_pytorch(tmp_path, checkpoint):
    path, check = export_model(checkpoint, tmp_path / "model.pt", fmt="torchscript")
    assert check.passed and check.runtime == "torchscript" and check.batch_size == 3
    loaded = torch.jit.load(str(path))
    images = torch.randn(5, 3, 32, 16)  # another batch size than traced (2) and checked (3)
    expected = _reference(checkpoint, images)
    with torch.no_grad():
        got = loaded(images)
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], expected[1])


def test_onnx_equals_pytorch(tmp_path, checkpoint):
    pytest.importorskip("onnx", reason="optional extra 'deploy' (onnx) missing")
    ort = pytest.importorskip("onnxruntime", reason="optional extra 'deploy' (onnxruntime) missing")
    path, check = export_model(checkpoint, tmp_path / "model.onnx", fmt="onnx")
    assert check.runtime == "onnxruntime" and check.passed, str(check)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.randn(4, 3, 32, 16)
    feats, vis = session.run(["embeddings", "visibility"], {"images": images.numpy()})
    expected = _reference(checkpoint, images)
    np.testing.assert_allclose(feats, expected[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(vis, expected[1].numpy(), atol=1e-4)


def test_onnx_without_the_onnx_package_says_how_to_install(tmp_path, checkpoint, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="bpbreid\\[deploy\\]"):
        export_model(checkpoint, tmp_path / "m.onnx", fmt="onnx")
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx")]) == 2


def test_export_cli_and_bad_format(tmp_path, checkpoint, capsys):
    out = tmp_path / "cli.pt"
    argv = ["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out)]
    assert main(argv) == 0
    assert out.is_file() and "OK" in capsys.readouterr().out
    with pytest.raises(ValueError, match="torchscript"):
        export_model(checkpoint, tmp_path / "x", fmt="tflite")
