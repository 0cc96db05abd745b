"""The published BPBReID checkpoints and their explicit download from Google Drive.

Nothing downloads unless asked: :func:`download_official_checkpoint` fetches one checkpoint
into a cache folder (once; a file already there is reused) through :mod:`bpbreid.gdrive`.

Reference:
    Pretrained models of the official code (BPBReID README, github.com/VlSomers/bpbreid):
    Google Drive folder ``1aUjpSXXVGtAh2nzV0RVsCq0tTXuDZWoH``.
"""

from __future__ import annotations

import os
from pathlib import Path

from bpbreid import gdrive
from bpbreid.errors import DownloadError

__all__ = [
    "CACHE_ENV",
    "OFFICIAL_CHECKPOINTS",
    "OFFICIAL_MODELS_FOLDER_ID",
    "OFFICIAL_MODELS_URL",
    "default_cache_dir",
    "download_official_checkpoint",
]

OFFICIAL_MODELS_FOLDER_ID = "1aUjpSXXVGtAh2nzV0RVsCq0tTXuDZWoH"
OFFICIAL_MODELS_URL = gdrive.folder_url(OFFICIAL_MODELS_FOLDER_ID)
OFFICIAL_CHECKPOINTS: dict[str, str] = {
    "market1501": "bpbreid_market1501_hrnet32_10642.pth",
    "dukemtmc": "bpbreid_dukemtmcreid_hrnet32_10669.pth",
    "occluded_duke": "bpbreid_occluded_duke_hrnet32_10670.pth",
    "p_dukemtmc": "bpbreid_p_dukemtmc_hrnet32_10672.pth",
}
CACHE_ENV = "BPBREID_CACHE"


def default_cache_dir() -> Path:
    """Where downloads go: ``$BPBREID_CACHE/official``, else ``~/.cache/bpbreid/official``."""
    root = os.environ.get(CACHE_ENV) or str(Path("~/.cache/bpbreid"))
    return Path(root).expanduser() / "official"


def download_official_checkpoint(
    dataset: str, dest: str | Path | None = None, quiet: bool = False
) -> Path:
    """Download an official BPBReID checkpoint (HRNet-W32) from Google Drive, once.

    A file already at ``<dest>/<name>`` is reused. Needs ``gdown`` (extra ``download``).

    Args:
        dataset: ``market1501``, ``dukemtmc``, ``occluded_duke`` or ``p_dukemtmc``.
        dest: folder for the file (default :func:`default_cache_dir`).
        quiet: no progress bar.

    Returns:
        The path of the checkpoint.

    Raises:
        DownloadError: unknown dataset, gdown missing, offline, or the file not found in
            the Drive folder; the message says how to download it by hand.
    """
    key = dataset.strip().lower().replace("-", "_")
    if key not in OFFICIAL_CHECKPOINTS:
        raise DownloadError(
            f"No official checkpoint for '{dataset}'. Available: {', '.join(OFFICIAL_CHECKPOINTS)}."
        )
    name = OFFICIAL_CHECKPOINTS[key]
    folder = Path(dest).expanduser() if dest is not None else default_cache_dir()
    target = folder / name
    if gdrive.is_downloaded(target):
        return target
    manual = (
        f"Download {name} by hand from {OFFICIAL_MODELS_URL} and pass its path "
        f"(e.g. put it at {target})."
    )
    files = gdrive.list_folder(
        OFFICIAL_MODELS_FOLDER_ID, what="the official models folder", manual=manual
    )
    if name not in files:
        raise DownloadError(
            f"{name} is not in {OFFICIAL_MODELS_URL} (found: {', '.join(sorted(files)) or 'nothing'}). "
            f"{manual}"
        )
    return gdrive.download_file(files[name], target, quiet=quiet, manual=manual)
