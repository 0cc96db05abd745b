"""The BPBReID model: backbones, part attention, pooling, embeddings and visibility.

Example::

    from bpbreid.config import load_config
    from bpbreid.model import build_model, select_test_embeddings

    cfg = load_config("synthetic_cpu")
    model = build_model(cfg, num_classes=150)
    output = model(images)                 # BPBReIDOutput
    print(output.describe())               # every tensor and its shape
    feats, vis = select_test_embeddings(output, cfg.model.bpbreid.test_embeddings)
"""

from bpbreid.model.backbones import BACKBONES, Backbone, build_backbone
from bpbreid.model.bpbreid import (
    PART_HEADS,
    PART_MODES,
    BNClassifier,
    BPBReID,
    BPBReIDOutput,
    DimReduce,
    build_model,
    horizontal_stripes,
    measure_cost,
    part_visibility,
    select_test_embeddings,
    validate_model_config,
    weighted_average_pool,
)

__all__ = [
    "BACKBONES",
    "PART_HEADS",
    "PART_MODES",
    "BNClassifier",
    "BPBReID",
    "BPBReIDOutput",
    "Backbone",
    "DimReduce",
    "build_backbone",
    "build_model",
    "horizontal_stripes",
    "measure_cost",
    "part_visibility",
    "select_test_embeddings",
    "validate_model_config",
    "weighted_average_pool",
]
