"""Files of a run folder that must survive a crash: atomic writes and their leftovers.

A file that is rewritten (a checkpoint, a CSV history truncated on resume) is written to a
temporary file in the same folder, flushed to disk (fsync) and renamed over the target with
``os.replace``: a process killed mid-write leaves the previous file intact, never an empty
or half-written one. The temporary file is named ``.<target name>.<random>.tmp``; a kill
between its creation and the rename leaves it behind, and :func:`remove_stale_temporaries`
removes those when the next run starts in the folder.

No PyTorch here: the loggers use it and stay light.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

# What atomic writes leave behind when killed: checkpoints and CSV histories.
STALE_TEMPORARY_PATTERNS: tuple[str, ...] = (".*.pth.*.tmp", ".*.csv.*.tmp")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through ``write(handle)`` so that it is either old or new, never partial.

    The bytes go to a temporary file in the same folder (the rename stays on one file
    system), are flushed and fsynced, then moved over ``path`` with ``os.replace`` (atomic on
    POSIX and Windows). On any error, a KeyboardInterrupt included, the temporary file is
    removed and ``path`` is untouched.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty ``.<name>.<random>.tmp`` beside ``path``, opened for writing.

    Created with the usual permissions (``0o666`` less the umask) rather than
    ``tempfile.mkstemp``'s owner-only ``0o600``: the file becomes the run's CSV or
    checkpoint, which others sharing the folder read.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        candidate = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(candidate, flags, 0o666), candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"No free temporary file name beside {path}.")


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write` of a text (UTF-8 by default)."""
    data = text.encode(encoding)
    return atomic_write(path, lambda handle: handle.write(data))


def fsync_dir(folder: Path) -> None:
    """Persist a rename itself (POSIX); silently skipped where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stale_temporaries(
    folder: str | Path, patterns: Iterable[str] = STALE_TEMPORARY_PATTERNS
) -> list[Path]:
    """The temporary files of interrupted atomic writes in ``folder`` (sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = {p for pattern in patterns for p in folder.glob(pattern) if p.is_file()}
    return sorted(found)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete what killed atomic writes left in ``folder``; returns the files removed.

    Call it only while holding the folder's run lock: another run's write in progress
    would otherwise lose its temporary file.
    """
    removed = []
    for path in stale_temporaries(folder):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed
