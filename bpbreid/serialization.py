"""What a file may be before ``torch.load`` opens it.

``torch.load`` hands a zip archive that holds ``constants.pkl`` to ``torch.jit.load``
(a TorchScript archive), and TorchScript restores a scripted module by running the
module's own ``__setstate__`` from the archive's ``code/`` folder: opening such a file
runs code chosen by whoever wrote it (it can create and write files, for instance), and
no unpickler restriction is ever consulted. ``weights_only=True`` refuses those archives
itself, but the official BPBReID checkpoints need a full (restricted) unpickler and
therefore ``weights_only=False``. So every path of this package that reads a checkpoint
or a weights file first calls :func:`check_not_torchscript`, which reads only the zip
directory (no member is decompressed or executed) and refuses TorchScript archives and
archives that cannot be listed.

TorchScript models that this package exports (``python -m bpbreid export``) are opened
only by :func:`torch.jit.load` on purpose, never through a checkpoint loader.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from bpbreid.errors import CheckpointError

# The first bytes of a zip archive (a local file header); torch.save writes zip files
# since PyTorch 1.6, older files are plain pickles.
ZIP_MAGIC = b"PK\x03\x04"


def archive_members(path: str | Path) -> list[str] | None:
    """The member names of a zip archive, or None when the file is not a zip archive.

    Raises:
        CheckpointError: the file starts like a zip archive but its directory cannot be
            read (a torn or crafted file: torch might still open it another way).
    """
    p = Path(path)
    with open(p, "rb") as handle:
        head = handle.read(len(ZIP_MAGIC))
    if head != ZIP_MAGIC and not zipfile.is_zipfile(p):
        return None
    try:
        with zipfile.ZipFile(p) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"'{p}' looks like a zip archive but its directory cannot be read ({exc}); it was "
            "not opened. The file is incomplete or damaged: copy or download it again."
        ) from exc


def torchscript_markers(members: list[str]) -> list[str]:
    """The members that make an archive TorchScript: ``constants.pkl`` or ``code/``.

    Names are compared with and without the archive's top folder (``torch.save`` writes
    ``<name>/data.pkl``; torch's own reader strips ``<name>/``).
    """
    found = []
    for name in members:
        inner = name.split("/", 1)[1] if "/" in name else name
        if (
            "constants.pkl" in (name, inner)
            or inner.startswith("code/")
            or name.startswith("code/")
        ):
            found.append(name)
    return found


def check_not_torchscript(path: str | Path) -> None:
    """Refuse a TorchScript archive before any of its code can run.

    Reads only the zip directory. A plain ``torch.save`` file (zip or legacy pickle)
    passes; a missing file passes too (the caller reports it with its own advice).

    Raises:
        CheckpointError: the file is a TorchScript archive (names the members that show it)
            or a zip archive whose directory cannot be read.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        return
    members = archive_members(p)
    if members is None:
        return
    markers = torchscript_markers(members)
    if markers:
        shown = ", ".join(markers[:3]) + (
            f" (+{len(markers) - 3} more)" if len(markers) > 3 else ""
        )
        raise CheckpointError(
            f"'{p}' is a TorchScript archive ({shown}), not a checkpoint: it was refused "
            "without being opened, because loading TorchScript runs code stored in the file. "
            "Checkpoints are written by `python -m bpbreid train` (last.pth, model.pth) or by "
            "the official BPBReID code; open an exported TorchScript model you trust with "
            "torch.jit.load yourself."
        )
