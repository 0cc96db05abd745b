"""The evaluation loop: extract test embeddings, part-based distances, CMC and mAP.

Example::

    from bpbreid.engine import evaluate
    result = evaluate(model, loaders["query"], loaders["gallery"], cfg)
    print(result.summary())                 # rank-1/5/10/20 and mAP per query set
    result.metrics["query"]["mAP"]          # in percent

The result also keeps what the ranking figures need (distance matrices, embeddings,
visibility, low-resolution part masks, image paths): see :mod:`bpbreid.viz.ranking`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bpbreid.config import Config, canonical_embedding
from bpbreid.metrics import RankDetails, evaluate_rank, part_based_distance, re_ranking
from bpbreid.parts import PART_EMBEDDINGS, PART_GROUPINGS

__all__ = ["EvalResult", "evaluate", "extract_features", "embedding_names", "flip_permutation"]

# CMC ranks reported in the metrics.
REPORTED_RANKS = (1, 5, 10, 20)
# Largest part-mask size kept for the figures (height, width): enough for a heatmap.
MASKS_SIZE = (32, 16)


@dataclass
class EvalResult:
    """Metrics per query set, and the data behind them (for figures and analysis).

    Attributes:
        metrics: ``{set name: {"rank1", "rank5", "rank10", "rank20", "mAP" (percent),
            "cmc" (np.ndarray in [0, 1]), "num_skipped", "num_queries"}}``; the main set is
            ``"query"``.
        gallery: the gallery's :func:`extract_features` dict.
        queries: ``{set name: extract_features dict}``.
        distmats: ``{set name: [Nq, Ng] float32}`` distances used for the ranking.
        details: ``{set name: RankDetails}`` (per-query AP, first-match rank, ...).
        embedding_names: names of the P test embeddings (``"bn_foreground"``, part names...).
        dist_metric: ``"euclidean"`` or ``"cosine"``.
        normalize: whether embeddings were L2-normalized.
    """

    metrics: dict[str, dict[str, Any]]
    gallery: dict[str, Any]
    queries: dict[str, dict[str, Any]]
    distmats: dict[str, np.ndarray]
    details: dict[str, RankDetails]
    embedding_names: list[str] = field(default_factory=list)
    dist_metric: str = "euclidean"
    normalize: bool = True

    def flat_metrics(self) -> dict[str, float]:
        """``{"<set>/rank1": ..., "<set>/mAP": ...}`` scalars (for loggers)."""
        out: dict[str, float] = {}
        for set_name, values in self.metrics.items():
            for key, value in values.items():
                if isinstance(value, int | float):
                    out[f"{set_name}/{key}"] = float(value)
        return out

    def summary(self) -> str:
        """A table of the metrics of every query set."""
        header = f"{'query set':<18} {'rank-1':>7} {'rank-5':>7} {'rank-10':>8} {'rank-20':>8}"
        header += f" {'mAP':>6} {'queries':>8} {'skipped':>8}"
        lines = [header, "-" * len(header)]
        for name, m in self.metrics.items():
            lines.append(
                f"{name:<18} {m['rank1']:>7.1f} {m['rank5']:>7.1f} {m['rank10']:>8.1f} "
                f"{m['rank20']:>8.1f} {m['mAP']:>6.1f} {m['num_queries']:>8d} "
                f"{m['num_skipped']:>8d}"
            )
        return "\n".join(lines)

    def part_distances(self, set_name: str, query_indices: list[int]) -> np.ndarray:
        """Per-embedding distances ``[P, n, Ng]`` of the chosen queries to the gallery."""
        query = self.queries[set_name]
        idx = list(query_indices)
        _, parts = part_based_distance(
            query["features"][idx],
            self.gallery["features"],
            query["visibility"][idx],
            self.gallery["visibility"],
            metric=self.dist_metric,
            normalize=self.normalize,
            return_parts_for=list(range(len(idx))),
        )
        return parts.cpu().numpy()


def embedding_names(names: list[str], part_names: list[str] | tuple[str, ...]) -> list[str]:
    """Names of the P entries of :func:`bpbreid.model.select_test_embeddings`.

    ``["bn_foreground", "parts"]`` with parts (head, torso) -> ``["bn_foreground", "head",
    "torso"]``: "parts"/"bn_parts" expand to the K part names.
    """
    out: list[str] = []
    for raw in names:
        name = canonical_embedding(raw)
        if name in PART_EMBEDDINGS:
            prefix = "bn_" if name.startswith("bn_") else ""
            out.extend(f"{prefix}{part}" for part in part_names)
        else:
            out.append(name)
    return out


def flip_permutation(names: list[str]) -> list[int]:
    """Index of the entry that each entry becomes after a horizontal flip.

    After a flip, the person's left arm looks like a right arm: the flipped image's
    ``left_*`` embedding describes the original's ``right_*`` part. Entries without a side
    (head, torso, foreground, stripes) map to themselves.
    """
    index = {name: i for i, name in enumerate(names)}
    perm = list(range(len(names)))
    for i, name in enumerate(names):
        for side, other in (("left_", "right_"), ("right_", "left_")):
            prefix = "bn_" if name.startswith("bn_") else ""
            base = name.removeprefix("bn_")
            if base.startswith(side):
                mirror = prefix + other + base[len(side) :]
                if mirror in index:
                    perm[i] = index[mirror]
    return perm


def _model_part_names(model: nn.Module, cfg: Config | None, num_parts: int) -> list[str]:
    # A DistributedDataParallel wrapper keeps the model under .module.
    names = getattr(getattr(model, "module", model), "part_names", None)
    if names is not None and len(names) == num_parts:
        return list(names)
    if cfg is not None:
        grouping = PART_GROUPINGS.get(cfg.model.bpbreid.masks.preprocess)
        if grouping is not None and len(grouping) == num_parts:
            return list(grouping)
    return [f"part_{i + 1}" for i in range(num_parts)]


def _select(output: Any, names: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Test embeddings ``[N, P, D]``, visibility ``[N, P]`` and the names actually used."""
    from bpbreid.model import select_test_embeddings

    if output.visibility is None and output.parts_masks is None:
        # Global-only model: its test embedding is the global one, always visible.
        present = [n for n in names if canonical_embedding(n) in output.embeddings]
        if not present:
            present = ["bn_global" if "bn_global" in output.embeddings else "global"]
        names = present
    feats, vis = select_test_embeddings(output, names)
    return feats, vis, names


def _autocast(device: torch.device, cfg: Config | None) -> Any:
    if device.type != "cuda":
        return nullcontext()
    from bpbreid.engine.distributed import resolve_amp

    policy = resolve_amp(cfg.train.amp if cfg is not None else "auto", device)
    if not getattr(policy, "enabled", False):
        return nullcontext()
    return torch.autocast("cuda", dtype=policy.dtype)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _small_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks at most ``size``, float16 on the CPU (kept for the figures only)."""
    h, w = masks.shape[-2:]
    if h > size[0] or w > size[1]:
        masks = F.adaptive_avg_pool2d(masks.float(), (min(h, size[0]), min(w, size[1])))
    return masks.to("cpu", torch.float16)


def extract_features(
    model: nn.Module,
    loader: Any,
    test_embeddings: list[str],
    device: torch.device | str | None = None,
    flip: bool = False,
    progress: bool = True,
    cfg: Config | None = None,
    use_target_masks: bool = False,
    masks_size: tuple[int, int] = MASKS_SIZE,
    desc: str = "features",
) -> dict[str, Any]:
    """Run the model over a loader and keep the test embeddings.

    Args:
        model: a model whose output has ``embeddings``, ``visibility`` and ``parts_masks``
            (:class:`bpbreid.model.BPBReIDOutput`).
        loader: yields dicts with ``"image"`` ``[N, 3, H, W]``, ``"pid"``, ``"camid"``,
            ``"img_path"`` (and ``"target_masks"`` when ``use_target_masks``).
        test_embeddings: e.g. ``["bn_foreground", "parts"]``.
        device: where the model runs (default: the model's device).
        flip: flip test-time augmentation: average with the mirrored image's embeddings,
            left/right parts swapped; a part counts as visible if seen in either view.
        progress: show a progress bar.
        cfg: the configuration (AMP policy, part names for the flip).
        use_target_masks: pass the batch's parsing labels to the model (external masks).
        masks_size: largest size of the part masks kept for figures.
        desc: progress-bar label.

    Returns:
        ``{"features": [N, P, D] float32, "visibility": [N, P] float32, "pids": [N] int64,
        "camids": [N] int64, "img_paths": list[str], "parts_masks": [N, K+1, h, w] float16
        or None, "names": list of the P embedding names}``, tensors on the CPU.
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    feats_list: list[torch.Tensor] = []
    vis_list: list[torch.Tensor] = []
    masks_list: list[torch.Tensor] = []
    pids: list[int] = []
    camids: list[int] = []
    paths: list[str] = []
    names: list[str] | None = None
    perm: list[int] = []
    mask_perm: list[int] = []
    try:
        with torch.inference_mode(), _autocast(device, cfg):
            for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
                images = batch["image"].to(device, non_blocking=True)
                masks = batch.get("target_masks") if use_target_masks else None
                if masks is not None:
                    masks = masks.to(device, non_blocking=True)
                output = model(images, masks) if masks is not None else model(images)
                feats, vis, used = _select(output, test_embeddings)
                if names is None:
                    num_parts = 0 if output.visibility is None else output.visibility.shape[1]
                    part_names = _model_part_names(model, cfg, num_parts)
                    names = embedding_names(used, part_names)
                    if len(names) != feats.shape[1]:
                        names = [f"embedding_{i}" for i in range(feats.shape[1])]
                    perm = flip_permutation(names)
                    # Label channels: 0 = background, then the K parts.
                    mask_perm = [0, *(1 + i for i in flip_permutation(part_names))]
                if flip:
                    flipped_masks = None
                    if masks is not None and masks.shape[1] == len(mask_perm):
                        flipped_masks = masks.flip(-1)[:, mask_perm]
                    elif masks is not None:
                        flipped_masks = masks.flip(-1)
                    out_flip = (
                        model(images.flip(-1), flipped_masks)
                        if flipped_masks is not None
                        else model(images.flip(-1))
                    )
                    f_feats, f_vis, _ = _select(out_flip, used)
                    feats = (feats.float() + f_feats.float()[:, perm]) / 2
                    vis = torch.maximum(vis.float(), f_vis.float()[:, perm])
                feats_list.append(feats.float().cpu())
                vis_list.append(vis.float().cpu())
                if output.parts_masks is not None:
                    masks_list.append(_small_masks(output.parts_masks, masks_size))
                pids.extend(int(p) for p in _as_list(batch["pid"]))
                camids.extend(int(c) for c in _as_list(batch["camid"]))
                paths.extend(str(p) for p in batch["img_path"])
    finally:
        model.train(was_training)
    if not feats_list:
        raise ValueError(f"The {desc} loader yielded no images.")
    return {
        "features": torch.cat(feats_list),
        "visibility": torch.cat(vis_list),
        "pids": np.asarray(pids, dtype=np.int64),
        "camids": np.asarray(camids, dtype=np.int64),
        "img_paths": paths,
        "parts_masks": torch.cat(masks_list) if masks_list else None,
        "names": names or [],
    }


def _as_list(values: Any) -> list:
    if isinstance(values, torch.Tensor):
        return values.tolist()
    return list(values)


def _uses_target_masks(cfg: Config) -> bool:
    bp = cfg.model.bpbreid
    return bp.part_mode == "external" or bp.test_use_target_segmentation != "none"


def _distance(query: dict, gallery: dict, cfg: Config, device: torch.device) -> torch.Tensor:
    # On CUDA the distance and the ranking run on the GPU; on the CPU, in place.
    return part_based_distance(
        query["features"].to(device),
        gallery["features"].to(device),
        query["visibility"].to(device),
        gallery["visibility"].to(device),
        metric=cfg.test.dist_metric,
        normalize=cfg.test.normalize_feature,
    )


def _rank_metrics(cmc: np.ndarray, mAP: float, details: RankDetails, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rank in REPORTED_RANKS:
        # A gallery shorter than the rank: the CMC has reached its final value.
        out[f"rank{rank}"] = float(cmc[min(rank, len(cmc)) - 1]) * 100.0
    out["mAP"] = float(mAP) * 100.0
    out["cmc"] = cmc
    out["num_skipped"] = int(details.num_skipped)
    out["num_queries"] = int(n)
    return out


def evaluate(
    model: nn.Module,
    query_loader: Any,
    gallery_loader: Any,
    cfg: Config,
    extra_query_loaders: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    max_rank: int = 50,
) -> EvalResult:
    """Evaluate a model on a query/gallery split (and extra query sets).

    Embeddings are extracted with the model in eval mode under ``torch.inference_mode``
    (autocast on CUDA), compared with :func:`bpbreid.metrics.part_based_distance`
    (``cfg.test.dist_metric``, ``cfg.test.normalize_feature``), optionally re-ranked
    (``cfg.test.rerank``), and ranked with :func:`bpbreid.metrics.evaluate_rank`
    (Market-1501 protocol).

    Args:
        model: the model (its device is used unless ``device`` is given).
        query_loader, gallery_loader: test loaders (see :func:`extract_features`).
        cfg: the configuration (``model.bpbreid.test_embeddings``, ``test.*``).
        extra_query_loaders: ``{name: loader}`` more query sets against the same gallery
            (e.g. ``{"query_holistic": ...}``).
        device: where to run.
        progress: show progress bars.
        max_rank: length of the CMC curves.

    Returns:
        An :class:`EvalResult`.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    names = list(cfg.model.bpbreid.test_embeddings)
    kwargs = {
        "test_embeddings": names,
        "device": device,
        "flip": cfg.test.flip,
        "progress": progress,
        "cfg": cfg,
        "use_target_masks": _uses_target_masks(cfg),
    }
    gallery = extract_features(model, gallery_loader, desc="gallery", **kwargs)
    loaders = {"query": query_loader, **(extra_query_loaders or {})}
    queries: dict[str, dict[str, Any]] = {}
    metrics: dict[str, dict[str, Any]] = {}
    distmats: dict[str, np.ndarray] = {}
    details: dict[str, RankDetails] = {}
    for set_name, loader in loaders.items():
        query = extract_features(model, loader, desc=set_name, **kwargs)
        distmat = _distance(query, gallery, cfg, device)
        if cfg.test.rerank:
            distmat = torch.from_numpy(
                re_ranking(
                    distmat.cpu(),
                    _distance(query, query, cfg, device).cpu(),
                    _distance(gallery, gallery, cfg, device).cpu(),
                )
            )
        cmc, mAP, rank_details = evaluate_rank(
            distmat,
            query["pids"],
            gallery["pids"],
            query["camids"],
            gallery["camids"],
            max_rank=min(max_rank, len(gallery["pids"])),
            return_details=True,
        )
        queries[set_name] = query
        distmats[set_name] = distmat.cpu().numpy()
        details[set_name] = rank_details
        metrics[set_name] = _rank_metrics(cmc, mAP, rank_details, len(query["pids"]))
    return EvalResult(
        metrics=metrics,
        gallery=gallery,
        queries=queries,
        distmats=distmats,
        details=details,
        embedding_names=gallery["names"],
        dist_metric=cfg.test.dist_metric,
        normalize=cfg.test.normalize_feature,
    )
