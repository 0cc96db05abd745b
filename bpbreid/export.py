"""Export a model for deployment: images -> (test embeddings, visibility), ONNX or TorchScript.

The exported graph is :class:`EmbeddingModel`: a batch of normalized images
``[N, 3, H, W]`` (dynamic ``N``) in, the configured test embeddings ``[N, P, D]`` (e.g.
foreground + K parts) and their visibility ``[N, P]`` out, which is everything the
part-based distance needs (:func:`bpbreid.metrics.part_based_distance`). Image
preprocessing (resize to ``cfg.data.height x width``, ImageNet normalization) stays outside,
as in the evaluation pipeline.

With ``flat=True`` the graph is :class:`FlatEmbeddingModel`: images in, one unit vector per
image ``[N, P * D]`` out (:func:`bpbreid.metrics.flatten_part_embeddings`: invisible parts
zeroed, then normalized), the single embedding per box that trackers (BoT-SORT, StrongSORT,
Deep OC-SORT) compare with a cosine distance.

Every export is checked: the exported model runs on a batch of a *different* size than the
one it was traced with and must match PyTorch (ONNX through onnxruntime when it is
installed, extra ``deploy``; TorchScript always).

Example::

    from bpbreid.export import export_model
    path, check = export_model("outputs/synthetic_cpu/model.pth", "model.onnx", fmt="onnx")
    print(check)   # max abs difference to PyTorch

Command line: ``python -m bpbreid export --checkpoint ... --format onnx --out model.onnx``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bpbreid.config import Config

FORMATS = ("onnx", "torchscript")
INPUT_NAMES = ["images"]
OUTPUT_NAMES = ["embeddings", "visibility"]
FLAT_OUTPUT_NAMES = ["embeddings"]
DEPLOY_HINT = "pip install 'bpbreid[deploy]' (onnx, onnxruntime)"


class EmbeddingModel(nn.Module):
    """``images [N, 3, H, W] -> (embeddings [N, P, D], visibility [N, P])`` in eval mode.

    The same entries as :func:`bpbreid.model.select_test_embeddings` (``parts`` expands to
    the K parts with their visibility; other embeddings count as visible), written with
    tensor operations only so that tracing keeps the batch axis dynamic.

    Args:
        model: a :class:`bpbreid.model.BPBReID`.
        test_embeddings: e.g. ``["bn_foreground", "parts"]`` (``cfg.model.bpbreid.test_embeddings``).
    """

    output_names = OUTPUT_NAMES

    def __init__(self, model: nn.Module, test_embeddings: list[str]) -> None:
        from bpbreid.config import canonical_embedding

        super().__init__()
        self.model = model.eval()
        self.test_embeddings = [canonical_embedding(n) for n in test_embeddings]

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        output = self.model(images)
        features, visibility = [], []
        for name in self.test_embeddings:
            embedding = output.embeddings[name]
            if name in ("parts", "bn_parts"):
                features.append(embedding)
                vis = output.visibility
                visibility.append(
                    vis.float() if vis is not None else torch.ones_like(embedding[..., 0])
                )
            else:
                features.append(embedding.unsqueeze(1))
                visibility.append(torch.ones_like(embedding[:, :1]))
        return torch.cat(features, dim=1), torch.cat(visibility, dim=1)

    def check_against_model(self, images: Tensor) -> float:
        """Max difference to :func:`bpbreid.model.select_test_embeddings` (eager)."""
        from bpbreid.model import select_test_embeddings

        with torch.no_grad():
            expected = select_test_embeddings(self.model(images), self.test_embeddings)
            return _max_diff(expected, self(images))


class FlatEmbeddingModel(EmbeddingModel):
    """``images [N, 3, H, W] -> embeddings [N, P * D]``: one unit vector per image for trackers.

    The test embeddings flattened by :func:`bpbreid.metrics.flatten_part_embeddings`: the
    cosine distance of two outputs equals the visibility-aware part-based cosine distance when
    both images show the same parts, and shrinks the similarity towards 0 for parts seen in
    only one of them.
    """

    output_names = FLAT_OUTPUT_NAMES

    def forward(self, images: Tensor) -> Tensor:  # type: ignore[override]
        from bpbreid.metrics import flatten_part_embeddings

        features, visibility = super().forward(images)
        return flatten_part_embeddings(features, visibility)

    def check_against_model(self, images: Tensor) -> float:
        """Max difference to the flattened :func:`bpbreid.model.select_test_embeddings`."""
        from bpbreid.metrics import flatten_part_embeddings
        from bpbreid.model import select_test_embeddings

        with torch.no_grad():
            expected = flatten_part_embeddings(
                *select_test_embeddings(self.model(images), self.test_embeddings)
            )
            return _max_diff((expected,), (self(images),))


@dataclass
class ExportCheck:
    """How an exported model compares to PyTorch on a fresh batch.

    Attributes:
        runtime: what ran the exported model (``onnxruntime``, ``torchscript``) or None when
            no check could run (onnxruntime missing).
        batch_size: size of the check batch (differs from the traced one).
        max_abs_diff: largest absolute difference of embeddings and visibility.
        atol: the tolerance.
    """

    runtime: str | None
    batch_size: int
    max_abs_diff: float
    atol: float

    @property
    def passed(self) -> bool | None:
        return None if self.runtime is None else self.max_abs_diff <= self.atol

    def __str__(self) -> str:
        if self.runtime is None:
            return f"not checked: onnxruntime is not installed ({DEPLOY_HINT})"
        verdict = "OK" if self.passed else "MISMATCH"
        return (
            f"{verdict}: {self.runtime} vs PyTorch on a batch of {self.batch_size}: "
            f"max |diff| {self.max_abs_diff:.2e} (tolerance {self.atol:.0e})"
        )


def example_batch(cfg: Config, batch_size: int = 2, seed: int = 0) -> Tensor:
    """A random normalized image batch ``[N, 3, H, W]`` at the configured size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, cfg.data.height, cfg.data.width, generator=generator)


def _max_diff(a: Any, b: Any) -> float:
    # One output (the flat model) or a tuple of outputs (embeddings, visibility).
    a = (a,) if isinstance(a, Tensor) else tuple(a)
    b = (b,) if isinstance(b, Tensor) else tuple(b)
    return max(
        float((torch.as_tensor(x).float() - torch.as_tensor(y).float()).abs().max())
        for x, y in zip(a, b)
    )


def export_torchscript(
    wrapper: EmbeddingModel, example: Tensor, path: str | Path, atol: float = 1e-4
) -> ExportCheck:
    """Trace ``wrapper`` with ``example`` and save it; check it on another batch size.

    Tracing records the operations of one forward pass; the check runs the saved module on
    a batch of another size to catch shapes frozen into the trace.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values in the graph
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path), map_location=example.device)
        check = torch.cat([example, example[:1] * 0.5], dim=0)
        expected = wrapper(check)
        got = loaded(check)
    return ExportCheck("torchscript", int(check.shape[0]), _max_diff(expected, got), atol)


def export_onnx(
    wrapper: EmbeddingModel,
    example: Tensor,
    path: str | Path,
    opset: int = 17,
    atol: float = 1e-4,
) -> ExportCheck:
    """Export ``wrapper`` to ONNX with a dynamic batch axis; check it with onnxruntime.

    Uses the TorchScript-based exporter (``dynamo=False``), which needs the ``onnx``
    package but not ``onnxscript``. The check is skipped (``runtime=None``) when
    onnxruntime is not installed.

    Raises:
        ImportError: the ``onnx`` package is missing (message says how to install it).
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise ImportError(f"ONNX export needs the onnx package: {DEPLOY_HINT}.") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_wrapper = wrapper.to("cpu")
    example = example.to("cpu")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation and tracer warnings
        torch.onnx.export(
            cpu_wrapper,
            (example,),
            str(path),
            dynamo=False,
            input_names=INPUT_NAMES,
            output_names=list(wrapper.output_names),
            dynamic_axes={name: {0: "batch"} for name in INPUT_NAMES + wrapper.output_names},
            opset_version=opset,
            do_constant_folding=True,
        )
    check = torch.cat([example, example[:1] * 0.5], dim=0)
    try:
        import onnxruntime as ort
    except ImportError:
        return ExportCheck(None, int(check.shape[0]), float("nan"), atol)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(list(wrapper.output_names), {INPUT_NAMES[0]: check.numpy()})
    with torch.no_grad():
        expected = cpu_wrapper(check)
    return ExportCheck("onnxruntime", int(check.shape[0]), _max_diff(expected, got), atol)


def export_model(
    checkpoint: str | Path | nn.Module,
    out: str | Path,
    fmt: str = "onnx",
    config: Config | str | Path | None = None,
    batch_size: int = 2,
    opset: int = 17,
    atol: float = 1e-4,
    strict: bool = True,
    flat: bool = False,
) -> tuple[Path, ExportCheck]:
    """Load a checkpoint and export its embedding model.

    Args:
        checkpoint: see :func:`bpbreid.inference.load_model` (this package's or official).
        out: the output file (``.onnx`` / ``.pt``).
        fmt: ``onnx`` or ``torchscript``.
        config: override the stored configuration.
        batch_size: batch size of the example used to trace (the batch axis stays dynamic).
        opset: ONNX opset.
        atol: tolerance of the check against PyTorch.
        strict: official checkpoints: refuse mismatched keys.
        flat: export :class:`FlatEmbeddingModel` (one ``[N, P * D]`` vector per image, for
            trackers) instead of embeddings + visibility.

    Returns:
        ``(path, check)``.

    Raises:
        ValueError: unknown format.
    """
    from bpbreid.inference import load_model

    if fmt not in FORMATS:
        raise ValueError(f"Unknown export format '{fmt}'. Valid: {', '.join(FORMATS)}.")
    # Exported on the CPU in float32: the file then runs anywhere.
    model, cfg = load_model(checkpoint, config, device="cpu", strict=strict)
    wrapper_class = FlatEmbeddingModel if flat else EmbeddingModel
    wrapper = wrapper_class(model, list(cfg.model.bpbreid.test_embeddings)).eval()
    example = example_batch(cfg, batch_size)
    # Fails early (ConfigError) when the test embeddings cannot be stacked.
    wrapper.check_against_model(example)
    if fmt == "onnx":
        check = export_onnx(wrapper, example, out, opset=opset, atol=atol)
    else:
        check = export_torchscript(wrapper, example, out, atol=atol)
    return Path(out), check
