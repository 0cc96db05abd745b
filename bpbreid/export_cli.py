"""``python -m bpbreid export``: a checkpoint -> ONNX or TorchScript embedding model.

Examples::

    python -m bpbreid export --checkpoint outputs/synthetic_cpu/model.pth --format onnx --out model.onnx
    python -m bpbreid export --checkpoint bpbreid_market1501_hrnet32_10642.pth --format torchscript --out m.pt

The exported model maps normalized images ``[N, 3, H, W]`` (dynamic N) to the test
embeddings ``[N, P, D]`` and their visibility ``[N, P]``; it is checked against PyTorch on a
batch of another size (ONNX with onnxruntime when installed: pip install 'bpbreid[deploy]').
Exit code 1 when the check finds a mismatch.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="this package's or an official .pth")
    parser.add_argument("--format", default="onnx", choices=("onnx", "torchscript"))
    parser.add_argument("--out", required=True, help="output file (.onnx or .pt)")
    parser.add_argument("--config", default=None, help="override the stored config (YAML or name)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--atol", type=float, default=1e-4, help="tolerance of the check")
    parser.add_argument(
        "--no-strict", action="store_true", help="official checkpoints: load matching keys only"
    )


def run(args: argparse.Namespace) -> int:
    from bpbreid.export import export_model

    try:
        path, check = export_model(
            args.checkpoint,
            args.out,
            fmt=args.format,
            config=args.config,
            opset=args.opset,
            atol=args.atol,
            strict=not args.no_strict,
        )
    except ImportError as exc:  # onnx missing: a message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    print(f"check: {check}")
    return 1 if check.passed is False else 0
