"""Google Drive downloads through ``gdown``: list a public folder, fetch one file, once.

The official BPBReID checkpoints and parsing labels live in public Google Drive folders.
Every download of this package goes through this module, so that all of them behave
alike:

* ``gdown`` is optional (extra ``download``) and imported only when a download starts;
  without it, :func:`import_gdown` says what to install;
* a file already downloaded (non-empty, and passing the caller's check when one is given)
  is reused without touching the network;
* a download goes to ``<name>.part`` (resumed when run again) and is renamed to its final
  name only once complete, so a final name never holds half a file;
* network and Drive failures become a :class:`~bpbreid.errors.DownloadError` whose message
  names the exception and ends with the caller's manual instructions (what to download by
  hand and where to put it); the original exception stays attached as its cause.

Example::

    files = list_folder(FOLDER_ID, what="the labels folder", manual=how_to)
    path = download_file(files["market1501.zip"], Path("data/_downloads/market1501.zip"))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from types import ModuleType

from bpbreid.errors import DownloadError

__all__ = [
    "PARTIAL_SUFFIX",
    "download_file",
    "folder_url",
    "import_gdown",
    "is_downloaded",
    "list_folder",
]

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".part"  # an unfinished download: resumed, renamed when complete

INSTALL_HINT = (
    "Downloading from Google Drive needs gdown: pip install bpbreid[download] "
    "(in zsh: pip install 'bpbreid[download]'), or pip install gdown."
)


def folder_url(folder_id: str) -> str:
    """The browser address of a Google Drive folder."""
    return f"https://drive.google.com/drive/folders/{folder_id}"


def _with_manual(message: str, manual: str) -> str:
    """``message`` then the manual instructions (on a new line when they span several)."""
    if not manual:
        return message
    sep = "\n" if "\n" in manual else " "
    return f"{message}{sep}{manual}"


def import_gdown(manual: str = "") -> ModuleType:
    """The ``gdown`` module.

    Raises:
        DownloadError: gdown is not installed (or fails to import); says what to install,
            followed by ``manual``.
    """
    try:
        import gdown
    except ImportError as exc:
        raise DownloadError(_with_manual(INSTALL_HINT, manual)) from exc
    return gdown


def list_folder(
    folder_id: str, what: str = "the Google Drive folder", manual: str = ""
) -> dict[str, str]:
    """File names of a public Drive folder (and its subfolders) -> file ids; nothing downloaded.

    Args:
        folder_id: the Drive folder id.
        what: how messages name the folder (``"the labels folder"``).
        manual: what to do by hand, appended to every error message.

    Raises:
        DownloadError: gdown missing, offline, or Drive refusing the listing.
    """
    gdown = import_gdown(manual)
    try:
        listing = gdown.download_folder(id=folder_id, skip_download=True, quiet=True)
    except Exception as exc:  # network errors come from requests, gdown or urllib
        raise DownloadError(
            _with_manual(
                f"Cannot list {what} {folder_url(folder_id)} ({type(exc).__name__}: {exc}).",
                manual,
            )
        ) from exc
    return {PurePosixPath(str(item.path)).name: item.id for item in listing or []}


def is_downloaded(path: str | Path, check: Callable[[Path], bool] | None = None) -> bool:
    """``path`` is a non-empty file that passes ``check`` (e.g. a zip integrity test)."""
    p = Path(path)
    return p.is_file() and p.stat().st_size > 0 and (check is None or check(p))


def download_file(
    file_id: str,
    target: str | Path,
    quiet: bool = False,
    manual: str = "",
    check: Callable[[Path], bool] | None = None,
) -> Path:
    """Download one Drive file to ``target``, unless it is already there.

    A file at ``target`` that :func:`is_downloaded` accepts is reused (gdown is not even
    imported). Otherwise the file is downloaded to ``target + ".part"`` (resumed when a
    previous run stopped midway) and renamed to ``target`` when complete.

    Args:
        file_id: the Drive file id (from :func:`list_folder`).
        target: the final path; its folder is created.
        quiet: no progress bar.
        manual: what to do by hand, appended to every error message.
        check: extra test of a complete file (None: any non-empty file).

    Returns:
        ``target``.

    Raises:
        DownloadError: gdown missing, offline, or no file written.
    """
    target = Path(target)
    if is_downloaded(target, check):
        logger.info("Reusing %s", target)
        return target
    gdown = import_gdown(manual)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    logger.info("Downloading %s from Google Drive to %s", target.name, target)
    try:
        result = gdown.download(id=file_id, output=str(partial), quiet=quiet, resume=True)
    except Exception as exc:  # network errors come from requests, gdown or urllib
        raise DownloadError(
            _with_manual(
                f"Downloading {target.name} failed ({type(exc).__name__}: {exc}). "
                "Run it again to resume.",
                manual,
            )
        ) from exc
    if result is None or not partial.is_file():
        raise DownloadError(
            _with_manual(f"Downloading {target.name} failed (no file written).", manual)
        )
    os.replace(partial, target)  # never a half-downloaded file under the final name
    return target
