"""Official BPBReID checkpoints: safe loading, key mapping, config mapping, download.

The official checkpoints (``bpbreid_market1501_hrnet32_10642.pth`` ...) are dicts with the
model's ``state_dict``, the training ``config`` (a pickled yacs ``CfgNode``), the epoch, the
optimizer and scheduler states and the test scores (NumPy scalars). One module per job:

* :mod:`~bpbreid.official.safe_load` - a *restricted* unpickler: only the globals in
  :data:`ALLOWED_GLOBALS` (tensor rebuild functions, ``OrderedDict``, ``set``, NumPy arrays
  and scalars) may be loaded; any other global stops the load with a
  :class:`~bpbreid.errors.CheckpointError` naming it; TorchScript archives are refused
  before the file is opened;
* :mod:`~bpbreid.official.config` - ``yacs.config.CfgNode`` becomes :class:`OfficialConfig`,
  a plain dict with attribute access (yacs need not be installed), translated into
  :class:`bpbreid.config.Config` by :func:`config_from_official`;
* :mod:`~bpbreid.official.keys` - the official parameter names mapped onto
  :class:`bpbreid.model.BPBReID` by an explicit table (:data:`HEAD_KEY_PREFIXES`), reported
  key by key (:class:`KeyMappingReport`); the modules that the official backbones build but
  BPBReID never calls (ResNet ``classifier``, HRNet ``cls_head``) are ignored by name
  (:data:`UNUSED_OFFICIAL_HEADS`), any other unknown key fails a strict load;
* :mod:`~bpbreid.official.load` - :func:`read_official_checkpoint` and
  :func:`load_official_checkpoint` (our model, our config and the report);
* :mod:`~bpbreid.official.download` - the published checkpoints
  (:data:`OFFICIAL_CHECKPOINTS`) and :func:`download_official_checkpoint` (explicit only).

Example::

    from bpbreid.official import download_official_checkpoint, load_official_checkpoint
    path = download_official_checkpoint("market1501")          # explicit download (gdown)
    model, cfg, report = load_official_checkpoint(path, device="cuda")
    print(report.summary())

Reference:
    Somers, Vleeschouwer, Alahi, "Body Part-Based Representation Learning for Occluded Person
    Re-Identification", WACV 2023; official code github.com/VlSomers/bpbreid
    (``torchreid/models/bpbreid.py``: module names ``backbone_appearance_feature_extractor``,
    ``{global,foreground,background,parts}_after_pooling_dim_reduce.layers.{0: Linear,
    1: BatchNorm1d}``, ``pixel_classifier.{bn,classifier}``, ``*_identity_classifier.{bn,
    classifier}``; ``torchreid/models/hrnet.py``: HRNet-W32 module names, which timm's
    ``hrnet_w32`` keeps; ``scripts/default_config.py``: config keys). Pretrained models:
    Google Drive folder ``1aUjpSXXVGtAh2nzV0RVsCq0tTXuDZWoH`` (BPBReID README).
"""

from __future__ import annotations

from bpbreid.official.config import (
    OFFICIAL_BACKBONES,
    OFFICIAL_DATASETS,
    OfficialConfig,
    config_from_official,
)
from bpbreid.official.download import (
    CACHE_ENV,
    OFFICIAL_CHECKPOINTS,
    OFFICIAL_MODELS_FOLDER_ID,
    OFFICIAL_MODELS_URL,
    default_cache_dir,
    download_official_checkpoint,
)
from bpbreid.official.keys import (
    HEAD_KEY_PREFIXES,
    IGNORED_OFFICIAL_KEYS,
    OFFICIAL_BACKBONE_PREFIX,
    UNUSED_OFFICIAL_HEADS,
    KeyMappingReport,
    UnusedOfficialHead,
    backbone_prefix_of,
    map_official_state_dict,
    official_key_to_ours,
    our_key_to_official,
    state_dict_to_official,
    unused_official_head,
)
from bpbreid.official.load import (
    OfficialCheckpoint,
    load_official_checkpoint,
    num_classes_of,
    official_backbone_of,
    read_official_checkpoint,
)
from bpbreid.official.safe_load import (
    ALLOWED_GLOBALS,
    RestrictedUnpickler,
    UnsafeGlobalError,
    restricted_pickle,
    restricted_torch_load,
)

__all__ = [
    "ALLOWED_GLOBALS",
    "CACHE_ENV",
    "HEAD_KEY_PREFIXES",
    "IGNORED_OFFICIAL_KEYS",
    "OFFICIAL_BACKBONES",
    "OFFICIAL_BACKBONE_PREFIX",
    "OFFICIAL_CHECKPOINTS",
    "OFFICIAL_DATASETS",
    "OFFICIAL_MODELS_FOLDER_ID",
    "OFFICIAL_MODELS_URL",
    "UNUSED_OFFICIAL_HEADS",
    "KeyMappingReport",
    "OfficialCheckpoint",
    "OfficialConfig",
    "RestrictedUnpickler",
    "UnsafeGlobalError",
    "UnusedOfficialHead",
    "backbone_prefix_of",
    "config_from_official",
    "default_cache_dir",
    "download_official_checkpoint",
    "load_official_checkpoint",
    "map_official_state_dict",
    "num_classes_of",
    "official_backbone_of",
    "official_key_to_ours",
    "our_key_to_official",
    "read_official_checkpoint",
    "restricted_pickle",
    "restricted_torch_load",
    "state_dict_to_official",
    "unused_official_head",
]
