"""This package's re-id models as the appearance model of a multi-object tracker.

Trackers ask one thing of a re-id model: given a frame and the boxes of its detections, one
embedding per box. :class:`ReidBackend` answers in the form boxmot's trackers call
(``get_features(xyxys, image) -> [N, D]``; or compute the embeddings yourself and pass them as
``tracker.update(dets, image, embs)``), with three kinds of embedding:

* ``global``: one embedding per box (``bn_global`` of a part model, or the test embedding of a
  global-only model), L2-normalized;
* ``flat``: the test embeddings (foreground + K parts) flattened by
  :func:`bpbreid.metrics.flatten_part_embeddings`: invisible parts zeroed, then normalized, so
  that the tracker's cosine distance equals the part-based cosine distance whenever two boxes
  show the same parts, and shrinks the similarity towards 0 for parts seen in only one of them;
* ``parts``: the embeddings ``[N, P, D]`` and visibility ``[N, P]`` themselves
  (:meth:`ReidBackend.part_features`), for a tracker that lets us supply the appearance cost
  (:class:`bpbreid.track.tracker.Tracker` with ``appearance="parts"``).

Crops: a detector's box is tight around the person, while re-id models are trained on crops
with some context (the synthetic set: the person fills about 85% of the height, centred, in a
2:1 crop; Market-1501 is similar). ``person_fraction`` widens each box to the model's aspect
ratio with that margin before resizing; ``None`` resizes the box as it is, as boxmot's own
re-id backends do. Crops are cut with :func:`torchvision.ops.roi_align` (bilinear, averaging
2x2 samples per output pixel, so a downscaled crop is not aliased) from the normalized frame;
outside the frame they are the mean colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bpbreid.config import Config

EMBEDDINGS = ("global", "flat", "parts")
GLOBAL_NAMES = ("bn_global", "global")


class ReidBackend:
    """Embed the detections of a frame with a BPBReID (or global) model.

    Args:
        model: a :class:`bpbreid.model.BPBReID` in eval mode.
        cfg: its configuration (image size, normalization, test embeddings).
        embedding: ``flat`` (part-based, flattened), ``global`` or ``parts``; see the module.
        device: where the model runs.
        person_fraction: the person's share of the crop height (None: the box as it is).
        bgr: frames arrive as OpenCV BGR (boxmot's trackers are fed ``cv2`` frames).
        batch_size: crops per forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: Config,
        embedding: str = "flat",
        device: str | torch.device = "cpu",
        person_fraction: float | None = 0.85,
        bgr: bool = False,
        batch_size: int = 64,
    ) -> None:
        if embedding not in EMBEDDINGS:
            raise ValueError(f"Unknown embedding '{embedding}'. Valid: {', '.join(EMBEDDINGS)}.")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.cfg = cfg
        self.embedding = embedding
        self.person_fraction = person_fraction
        self.bgr = bgr
        self.batch_size = batch_size
        self.size = (int(cfg.data.height), int(cfg.data.width))
        self.mean = torch.tensor(cfg.data.norm_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(cfg.data.norm_std, dtype=torch.float32).view(3, 1, 1)
        self.test_embeddings = list(cfg.model.bpbreid.test_embeddings)

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, embedding: str = "flat", device: str = "cpu", **kwargs: Any
    ) -> ReidBackend:
        """A backend for a checkpoint of this package or an official one (safe loading)."""
        from bpbreid.engine.checkpoint import load_any_checkpoint

        loaded = load_any_checkpoint(checkpoint, device)
        return cls(loaded.model, loaded.cfg, embedding, device, **kwargs)

    # ----------------------------------------------------------------------------------

    def crop_boxes(self, xyxys: np.ndarray) -> np.ndarray:
        """The crop of each box ``[N, 4]`` (xyxy): the box with the training crops' context."""
        boxes = np.asarray(xyxys, dtype=np.float32).reshape(-1, 4)[:, :4].copy()
        if self.person_fraction is None or len(boxes) == 0:
            return boxes
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        h = (boxes[:, 3] - boxes[:, 1]) / self.person_fraction
        w = h * self.size[1] / self.size[0]
        return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)

    def crops(self, xyxys: np.ndarray, image: np.ndarray) -> torch.Tensor:
        """Normalized crops ``[N, 3, H, W]`` (the model's input size) of the boxes ``[N, 4]``."""
        from torchvision.ops import roi_align

        frame = torch.from_numpy(np.array(image[..., :3], dtype=np.uint8))  # writable copy
        if self.bgr:
            frame = frame.flip(-1)
        frame = frame.permute(2, 0, 1).float().div_(255.0)
        frame = ((frame - self.mean) / self.std).unsqueeze(0).to(self.device)
        boxes = torch.from_numpy(self.crop_boxes(xyxys)).to(self.device)
        if len(boxes) == 0:
            return frame.new_zeros(0, 3, *self.size)
        rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], dim=1)
        return roi_align(frame, rois, self.size, spatial_scale=1.0, sampling_ratio=2, aligned=True)

    @torch.no_grad()
    def part_features(
        self, xyxys: np.ndarray, image: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Test embeddings ``[N, P, D]`` and visibility ``[N, P]`` of the boxes (CPU tensors).

        With ``embedding="global"``, P = 1 (the global embedding, always visible).
        """
        from bpbreid.model import select_test_embeddings

        names = self._names()
        crops = self.crops(xyxys, image)
        feats, vis = [], []
        for start in range(0, len(crops), self.batch_size):
            output = self.model(crops[start : start + self.batch_size])
            f, v = select_test_embeddings(output, names)
            feats.append(f.float().cpu())
            vis.append(v.float().cpu())
        if not feats:
            dim = int(self.cfg.model.bpbreid.dim_reduce_output or 0)
            return torch.zeros(0, len(names), dim), torch.zeros(0, len(names))
        return torch.cat(feats), torch.cat(vis)

    def get_features(self, xyxys: np.ndarray, image: np.ndarray) -> np.ndarray:
        """One unit vector per box: float32 ``[N, D]`` (boxmot's re-id backend interface).

        ``global``: the global embedding, normalized; ``flat`` and ``parts``: the flattened
        part-based embedding (:func:`bpbreid.metrics.flatten_part_embeddings`).
        """
        from bpbreid.metrics import flatten_part_embeddings

        feats, vis = self.part_features(xyxys, image)
        return flatten_part_embeddings(feats, vis).numpy()

    def _names(self) -> list[str]:
        if self.embedding != "global":
            return self.test_embeddings
        # A global-only model's test embedding is its global one; a part model has bn_global.
        if len(self.test_embeddings) == 1 and self.test_embeddings[0] in GLOBAL_NAMES:
            return self.test_embeddings
        return ["bn_global"]

    def __repr__(self) -> str:
        return (
            f"ReidBackend(embedding={self.embedding!r}, input={self.size[0]}x{self.size[1]}, "
            f"test_embeddings={self._names()}, device={self.device})"
        )
