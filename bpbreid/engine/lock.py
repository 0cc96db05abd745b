"""One training run per output folder: a lock file that names its holder.

Two runs writing the same folder interleave their ``steps.csv`` rows and overwrite each
other's checkpoints; the first run's results are lost without a word. A run therefore
creates ``<output_dir>/.lock`` atomically (``O_CREAT | O_EXCL``) holding its pid, host and
start time, and deletes it when it ends (also on an error or Ctrl-C). A second run finds
the file and is refused with the holder's pid. A run killed with ``kill -9`` cannot delete
its lock: when the recorded process no longer exists on this host, the lock is stale and
the next run takes it over (and says so).

A lock written on another host cannot be checked from here (its pid means nothing on this
machine), so it is always respected; the error says which file to delete when that run is
known to be gone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bpbreid.errors import TrainingError

LOCK_NAME = ".lock"
# A lock file without readable content is being written right now, or was left by a run
# killed between creating and filling it; after this many seconds it is the latter.
UNREADABLE_LOCK_GRACE_S = 10.0
TAKEOVER_ATTEMPTS = 3


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: process id, host name and start time (ISO 8601, local time)."""

    pid: int
    host: str
    started: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"


def current_holder() -> LockHolder:
    """This process as a lock holder."""
    return LockHolder(
        pid=os.getpid(), host=socket.gethostname(), started=time.strftime("%Y-%m-%dT%H:%M:%S%z")
    )


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host.

    Signal 0 checks existence without touching the process; a process of another user
    answers ``PermissionError`` and counts as alive. Windows has no signal 0 (``os.kill``
    would terminate the process), so there every process counts as alive.
    """
    if pid <= 0:
        return False
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_holder(path: Path) -> tuple[LockHolder | None, bytes]:
    """The holder recorded in a lock file and its raw bytes (``None`` when unreadable)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, b""
    try:
        data = json.loads(raw.decode("utf-8"))
        return LockHolder(
            pid=int(data["pid"]), host=str(data["host"]), started=str(data["started"])
        ), raw
    except (ValueError, KeyError, TypeError):
        return None, raw


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


class RunLock:
    """The lock of one output folder.

    Example::

        with RunLock(output_dir) as lock:
            if lock.takeover_note:
                print(lock.takeover_note)
            ...  # write the run's files

    Args:
        folder: the run's output folder (created if missing).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.takeover_note: str | None = None
        self._content: bytes | None = None

    @property
    def held(self) -> bool:
        return self._content is not None

    def acquire(self) -> RunLock:
        """Take the lock, or take over a stale one.

        Raises:
            TrainingError: another live run (or a run on another host) holds the folder;
                names the folder, the lock file and the holder's pid.
        """
        if self.held:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        me = current_holder()
        content = json.dumps(
            {"pid": me.pid, "host": me.host, "started": me.started}, sort_keys=True
        ).encode("utf-8")
        for _ in range(TAKEOVER_ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._clear_stale(me)
                continue
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            self._content = content
            return self
        raise TrainingError(
            f"Could not lock the output folder {self.folder}: its lock file {self.path} keeps "
            "reappearing (several runs are starting in it at once). Start one run per "
            "train.output_dir."
        )

    def _clear_stale(self, me: LockHolder) -> None:
        """Remove the existing lock file if its run is gone; raise if it is alive."""
        holder, raw = read_holder(self.path)
        if holder is None:
            if not raw and not self.path.exists():
                return  # released meanwhile: try again
            if _age_s(self.path) < UNREADABLE_LOCK_GRACE_S:
                raise TrainingError(
                    f"Output folder {self.folder} is being locked by another run starting "
                    f"right now (lock file {self.path}). Give this run another "
                    "train.output_dir (--output-dir), or wait and retry."
                )
            note = f"an unreadable lock file {self.path} (left by a killed run)"
        elif holder.host != me.host or pid_alive(holder.pid):
            where = "this process" if holder == me or holder.pid == me.pid else "another run"
            raise TrainingError(
                f"Output folder {self.folder} is in use by {where} ({holder.describe()}; "
                f"lock file {self.path}). Wait for it to finish, or give this run another "
                "train.output_dir (--output-dir). If that run is no longer running (e.g. it "
                f"ran on another machine), delete {self.path} and start again."
            )
        else:
            note = f"the lock of a run that is no longer running ({holder.describe()})"
        # Remove it only if it is still the file judged stale: a run starting at the same
        # moment may have replaced it with a live lock.
        current = self.path.read_bytes() if self.path.exists() else None
        if current == raw:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self.takeover_note = f"Took over {self.folder}: removed {note}."

    def release(self) -> None:
        """Delete the lock file if it is still this run's (idempotent)."""
        if self._content is None:
            return
        try:
            if self.path.read_bytes() == self._content:
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._content = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
