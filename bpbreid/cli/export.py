"""``python -m bpbreid export``: a checkpoint -> ONNX or TorchScript embedding model.

Examples::

    python -m bpbreid export --checkpoint outputs/synthetic_cpu/model.pth --format onnx --out model.onnx
    python -m bpbreid export --checkpoint bpbreid_market1501_hrnet32_10642.pth --format torchscript --out m.pt
    python -m bpbreid export --checkpoint outputs/synthetic_cpu/model.pth --flat --format onnx --out reid_flat.onnx

The exported model maps normalized images ``[N, 3, H, W]`` (dynamic N) to the test
embeddings ``[N, P, D]`` and their visibility ``[N, P]``; it is checked against PyTorch on a
batch of another size (ONNX with onnxruntime when installed: pip install 'bpbreid[deploy]').
With ``--flat`` the model returns one unit vector per image ``[N, P * D]`` (invisible parts
zeroed, then normalized), the single embedding a tracker compares with a cosine distance.
It is exported on the CPU, in float32, so that the file runs anywhere.
Exit code 1 when the check finds a mismatch.
"""

from __future__ import annotations

import argparse
import sys

from bpbreid.cli import common

FORMATS = ("onnx", "torchscript")  # bpbreid.export.FORMATS, spelled out for a fast --help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_checkpoint(parser)
    common.add_config(
        parser, help="config (bundled name or YAML) to use instead of the checkpoint's own"
    )
    parser.add_argument("--format", default="onnx", choices=FORMATS)
    common.add_out(parser, required=True, help="output file (.onnx or .pt)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--atol", type=float, default=1e-4, help="tolerance of the check")
    parser.add_argument(
        "--flat",
        action="store_true",
        help="one [N, P*D] embedding per image (invisible parts zeroed, normalized) for trackers",
    )


def run(args: argparse.Namespace) -> int:
    given = common.config_from_args(args)  # before the heavy imports below

    from bpbreid.export import export_model

    loaded = common.load_checkpoint_from_args(args, given, device="cpu")
    try:
        path, check = export_model(
            loaded.model,
            args.out,
            fmt=args.format,
            config=loaded.cfg,
            opset=args.opset,
            atol=args.atol,
            flat=args.flat,
        )
    except ImportError as exc:  # onnx missing: a message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    print(f"check: {check}")
    return 1 if check.passed is False else 0
