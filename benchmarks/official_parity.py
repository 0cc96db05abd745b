"""Parity of our model with the official BPBReID model, backbone by backbone.

For each official backbone (``resnet50``, ``resnet50_ibn_a``, ``hrnet32``) this script

1. builds the official model from a checkout of github.com/VlSomers/bpbreid (commit
   c0db006) with random weights (no pretrained download), its BatchNorm statistics and part
   classifier drawn at random too so that eval-mode outputs and visibility are not trivial;
2. saves it the way the official engine does (``torchreid/engine/engine.py:88-98``: a dict
   with ``state_dict``, the yacs ``config``, scores, optimizer and scheduler states);
3. loads that file with :func:`bpbreid.official.load_official_checkpoint` (strict: every
   official key must map onto ours or be a known unused module);
4. runs both models in eval mode on the same random batch and prints the largest absolute
   difference of every embedding, of the part visibility scores and of the test-time
   query-gallery distances (first half of the batch = queries, second half = gallery),
   the official distances computed by the official ``compute_distance_matrix_using_bp_features``.

The official code is imported at run time from ``--official-repo``; none of it is part of
this repository. Only ``torchreid.models``, ``torchreid.scripts.default_config`` and
``torchreid.metrics.distance`` are imported: the ``__init__`` of ``torchreid``,
``torchreid.utils``, ``torchreid.scripts`` and ``torchreid.metrics`` pull in the whole
training stack (wandb, matplotlib, tabulate...), so those packages are registered as plain
namespaces of the checkout's folders. Two modules that the imported files name but that play
no part in a forward pass are replaced by stand-ins: ``deepdiff`` (config diffing in
``default_config.py``) when it is not installed, and ``torchreid.utils.writer`` (its
``Writer`` only logs distance statistics when a training run created one). The official code
needs ``yacs`` (``pip install yacs``; not a dependency of this package).

Usage::

    git -C /path/to/bpbreid.git archive HEAD torchreid configs | tar -x -C /tmp/official_bpbreid
    python benchmarks/official_parity.py --official-repo /tmp/official_bpbreid
    python benchmarks/official_parity.py --official-repo /tmp/official_bpbreid \\
        --backbones hrnet32 --height 384 --width 128

Exit status 0 when every checkpoint loaded strictly and every output is within
``--tolerance`` (relative to the largest official value of that output), else 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import tempfile
import types
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bpbreid.metrics import part_based_distance
from bpbreid.model.bpbreid import select_test_embeddings
from bpbreid.official import load_official_checkpoint

BACKBONES = ("resnet50", "resnet50_ibn_a", "hrnet32")
# The official short embedding names (torchreid/utils/constants.py:1-11) -> ours.
OFFICIAL_EMBEDDINGS = {
    "globl": "global",
    "foreg": "foreground",
    "backg": "background",
    "conct": "concat_parts",
    "parts": "parts",
}
# An official test config (configs/bpbreid/bpbreid_market1501_test.yaml) with its grouping.
OFFICIAL_TEST_CONFIG = "configs/bpbreid/bpbreid_market1501_test.yaml"
# parts_num follows the grouping; the official data pipeline sets it the same way
# (torchreid/data/masks_transforms/__init__.py:60-64), which is not imported here.
PARTS_OF_GROUPING = {"five_v": 5}


@dataclass
class Official:
    """The official entry points used here (imported from the checkout)."""

    build_model: Any  # torchreid.models.build_model
    get_default_config: Any  # torchreid.scripts.default_config.get_default_config
    distance: Any  # torchreid.metrics.distance.compute_distance_matrix_using_bp_features


def import_official(repo: Path) -> Official:
    """Import the official model factory, default config and test distance from ``repo``.

    Raises:
        SystemExit: the folder is not a checkout of the official repository, or yacs is missing.
    """
    if not (repo / "torchreid" / "models" / "bpbreid.py").is_file():
        raise SystemExit(f"{repo} is not a checkout of github.com/VlSomers/bpbreid.")
    if importlib.util.find_spec("yacs") is None:
        raise SystemExit(
            "The official code needs yacs: `pip install yacs` (or put a folder holding it on "
            "PYTHONPATH); it is not a dependency of this package."
        )
    # Plain namespaces: their __init__ files import the training stack, not needed here.
    for name in ("torchreid", "torchreid.utils", "torchreid.scripts", "torchreid.metrics"):
        module = types.ModuleType(name)
        module.__path__ = [str(repo.joinpath(*name.split(".")))]
        sys.modules[name] = module
    if importlib.util.find_spec("deepdiff") is None:
        deepdiff = types.ModuleType("deepdiff")
        deepdiff.DeepDiff = None  # type: ignore[attr-defined]  # only for config diffs
        sys.modules["deepdiff"] = deepdiff
    writer = types.ModuleType("torchreid.utils.writer")

    class Writer:
        """Stand-in: no training run, so no writer to log distance statistics to."""

        @staticmethod
        def current_writer() -> None:
            return None

    writer.Writer = Writer  # type: ignore[attr-defined]
    sys.modules["torchreid.utils.writer"] = writer
    models = importlib.import_module("torchreid.models")
    default_config = importlib.import_module("torchreid.scripts.default_config")
    distance = importlib.import_module("torchreid.metrics.distance")
    return Official(
        models.build_model,
        default_config.get_default_config,
        distance.compute_distance_matrix_using_bp_features,
    )


def official_config(official: Official, repo: Path, backbone: str, height: int, width: int) -> Any:
    """The official default config (a yacs ``CfgNode``) merged with an official test config."""
    cfg = official.get_default_config()
    cfg.merge_from_file(str(repo / OFFICIAL_TEST_CONFIG))
    cfg.model.bpbreid.backbone = backbone
    cfg.model.bpbreid.masks.parts_num = PARTS_OF_GROUPING[cfg.model.bpbreid.masks.preprocess]
    cfg.model.load_weights = ""
    cfg.data.height, cfg.data.width = height, width
    return cfg


@torch.no_grad()
def randomize_(model: nn.Module, generator: torch.Generator, images: Tensor) -> None:
    """Draw the normalization layers and the pixel classifier at random (in place).

    The official initialization leaves every BatchNorm an identity in eval mode and the pixel
    classifier at std 0.001: eval-mode activations then grow layer after layer (to ~1e9 in
    HRNet), all images look alike and the part logits are near ties, so visibility would hinge
    on rounding. Here the affine parameters are drawn at random, the running statistics are
    set to the statistics of one training-mode pass over ``images`` (as after training, every
    layer then sees normalized inputs in eval mode), and the pixel classifier gets unit-scale
    logits with biases that leave some parts invisible.

    Args:
        model: the official BPBReID model (its forward must run).
        generator: the random source.
        images: ``[N, 3, H, W]`` the calibration batch (not the one compared).
    """
    classifier = model.pixel_classifier.classifier
    classifier.weight.copy_(
        torch.randn(classifier.weight.shape, generator=generator) / classifier.in_channels**0.5
    )
    # Class biases of a few units: some parts then win no pixel of an image (invisible).
    classifier.bias.copy_(2 * torch.randn(classifier.bias.shape, generator=generator))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    momentum = {}
    for module in norms:
        if module.weight is not None:
            module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
            module.bias.copy_((torch.rand(module.bias.shape, generator=generator) - 0.5) / 5)
        if module.track_running_stats:
            momentum[module] = module.momentum
            module.reset_running_stats()
            module.momentum = None  # cumulative average: exactly this pass's statistics
    model.train()
    model(images)
    for module, value in momentum.items():
        module.momentum = value
    model.eval()


def save_like_official_engine(path: Path, model: nn.Module, cfg: Any) -> None:
    """Write ``model`` as ``torchreid/engine/engine.py:88-98`` does (yacs config pickled)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "epoch": 120,
            "rank1": np.float64(0.9),
            "mAP": np.float64(0.8),
            "ssmd": np.float64(1.0),
            "config": cfg,
            "optimizer": optimizer.state_dict(),
            "scheduler": torch.optim.lr_scheduler.MultiStepLR(optimizer, [40, 70]).state_dict(),
        },
        path,
    )


def official_test_features(outputs: tuple, names: list[str]) -> tuple[Tensor, Tensor]:
    """Stack the official test embeddings and visibility as its engine does at test time.

    ``torchreid/engine/image/part_based_engine.py:365-387``: each test embedding becomes
    ``[N, 1 or K, D]``, its visibility (of the embedding without ``bn_``) ``[N, 1 or K]``.

    Returns:
        ``features [N, P, D]`` and ``visibility [N, P]`` (bool, as the official model's).
    """
    embeddings, visibility = outputs[0], outputs[1]
    features, scores = [], []
    for name in names:
        value = embeddings[name]
        features.append(value if value.dim() == 3 else value.unsqueeze(1))
        vis = visibility[name.removeprefix("bn_")]
        scores.append(vis if vis.dim() == 2 else vis.unsqueeze(1))
    return torch.cat(features, dim=1), torch.cat(scores, dim=1)


def difference(official: Tensor, ours: Tensor) -> tuple[float, float]:
    """``(max |official - ours|, max |official|)`` in float64."""
    a, b = official.double(), ours.double()
    if a.shape != b.shape:
        raise SystemExit(f"shape mismatch: official {tuple(a.shape)} vs ours {tuple(b.shape)}")
    return float((a - b).abs().max()), float(a.abs().max())


def run_backbone(
    official: Official, repo: Path, backbone: str, args: argparse.Namespace, workdir: Path
) -> bool:
    """Build, save, load and compare one backbone; print the figures. True when all agree."""
    print(
        f"\n== {backbone}: input {args.batch}x3x{args.height}x{args.width}, "
        f"{args.num_classes} identities"
    )
    torch.manual_seed(args.seed)
    cfg = official_config(official, repo, backbone, args.height, args.width)
    reference = official.build_model(
        "bpbreid", args.num_classes, loss="part_based", pretrained=False, config=cfg
    ).eval()
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, args.height, args.width, generator=generator)
    calibration = torch.randn(8, 3, args.height, args.width, generator=generator)
    with torch.no_grad():
        try:
            reference(images)
        except Exception as exc:  # the official IBN-a ResNet cannot feed BPBReID: see below
            extractor = reference.backbone_appearance_feature_extractor
            print(f"official BPBReID forward fails: {type(exc).__name__}: {exc}")
            print(
                "  -> its backbone returns a pooled vector whatever `loss` is; compared with "
                "the backbone's own `featuremaps` as the BPBReID input instead"
            )
            extractor.forward = extractor.featuremaps
    randomize_(reference, generator, calibration)
    path = workdir / f"official_{backbone}.pth.tar"
    save_like_official_engine(path, reference, cfg)

    model, our_cfg, report = load_official_checkpoint(path, strict=True)
    official_keys = len(reference.state_dict())
    heads = ", ".join(f"{p}* ({n})" for p, n in report.ignored_heads.items()) or "none"
    print(
        f"official keys {official_keys}: loaded {len(report.loaded)} (our model has "
        f"{len(model.state_dict())}), ignored by name {len(report.ignored)}: {heads}; "
        f"unexpected {len(report.unexpected)}, missing {len(report.missing)}, "
        f"wrong shape {len(report.mismatched)}"
    )
    with torch.no_grad():
        reference_out = reference(images)
        ours = model(images)

    ok = report.ok
    rows: list[tuple[str, tuple[int, ...], float, float]] = []
    for short, name in OFFICIAL_EMBEDDINGS.items():
        for prefix in ("", "bn_"):
            diff, scale = difference(
                reference_out[0][prefix + short], ours.embeddings[prefix + name]
            )
            rows.append(
                (f"{prefix}{name}", tuple(ours.embeddings[prefix + name].shape), diff, scale)
            )
    diff, scale = difference(reference_out[1]["parts"].float(), ours.visibility)
    rows.append(("visibility (parts)", tuple(ours.visibility.shape), diff, scale))

    # Test distances: the configured test embeddings, queries = first half of the batch.
    names = list(cfg.model.bpbreid.test_embeddings)
    ref_feats, ref_vis = official_test_features(reference_out, names)
    our_feats, our_vis = select_test_embeddings(ours, our_cfg.model.bpbreid.test_embeddings)
    half = args.batch // 2
    normalize = bool(cfg.test.normalize_feature)
    ref_feats_n = F.normalize(ref_feats, p=2, dim=-1) if normalize else ref_feats  # engine.py:558

    def official_distance(feats: torch.Tensor) -> torch.Tensor:
        """The official query-gallery distance of the batch's two halves."""
        dist, _ = official.distance(
            feats[:half],
            feats[half:],
            ref_vis[:half],
            ref_vis[half:],
            cfg.test.part_based.dist_combine_strat,
            cfg.test.batch_size_pairwise_dist_matrix,
            False,
            cfg.test.dist_metric,
        )
        return dist

    ref_dist = official_distance(ref_feats_n)
    our_dist = part_based_distance(
        our_feats[:half],
        our_feats[half:],
        our_vis[:half],
        our_vis[half:],
        metric=our_cfg.test.dist_metric,
        normalize=our_cfg.test.normalize_feature,
    )
    diff, _ = difference(ref_dist, our_dist)
    # Distances between L2-normalized embeddings lie in [0, 2]: the tolerance is relative to
    # that range, since ||q||^2 + ||g||^2 - 2 q.g loses ~1e-7 of it to cancellation in float32
    # and the square root magnifies that for close pairs (random weights make all pairs close).
    span = 2.0 if normalize else float(ref_dist.abs().max())
    rows.append((f"distances {names}", tuple(our_dist.shape), diff, span))
    exact = official_distance(ref_feats_n.double())
    floor, _ = difference(exact, ref_dist)

    print(f"{'output':<34} {'shape':<12} {'scale':>9} {'max abs diff':>13} {'relative':>9}")
    for label, shape, diff, scale in rows:
        relative = diff / scale if scale > 0 else diff
        ok &= relative <= args.tolerance
        print(f"{label:<34} {str(shape):<12} {scale:>9.4g} {diff:>13.3g} {relative:>9.2g}")
    print(
        f"(scale: max |official| of the output; distances: their range [0, 2]. The official "
        f"distance itself, float32 vs float64 on the same features: {floor:.3g}; official "
        f"distances {float(ref_dist.min()):.4g}..{float(ref_dist.max()):.4g})"
    )
    visible = ours.visibility.bool()
    print(
        f"visible parts: {int(visible.sum())}/{visible.numel()}; "
        f"{'PASS' if ok else 'FAIL'} (relative tolerance {args.tolerance:g})"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--official-repo",
        type=Path,
        required=True,
        help="checkout of github.com/VlSomers/bpbreid (commit c0db006)",
    )
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4, help="even: half queries, half gallery")
    parser.add_argument("--num-classes", type=int, default=751)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.batch < 2 or args.batch % 2:
        parser.error("--batch must be even and >= 2 (half queries, half gallery)")
    if args.threads:
        torch.set_num_threads(args.threads)
    repo = args.official_repo.expanduser().resolve()
    official = import_official(repo)
    print(f"official code: {repo}; torch {torch.__version__}")
    results = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.backbones:
            results[run_backbone(official, repo, backbone, args, Path(tmp))] += 1
    print(f"\n{results[True]} of {len(args.backbones)} backbones agree")
    return 0 if not results[False] else 1


if __name__ == "__main__":
    sys.exit(main())
