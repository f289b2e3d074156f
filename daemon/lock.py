"""The run lock: one training at a time, scheduled and manual runs alike.

An ``fcntl.flock`` on ``<state_dir>/run.lock``. The kernel releases it when the
holder dies (even by SIGKILL), so the file is never deleted and the lock is
never broken by age. The holder writes ``{"pid": ..., "run_id": ...}`` into the
file so a refused caller and ``nightshift status`` can name it.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType

from daemon.errors import RunLocked

LOCK_FILENAME = "run.lock"


class RunLock:
    """Exclusive, non-blocking run lock on ``<state_dir>/run.lock``.

    Use as a context manager; :meth:`set_run_id` records the run once it exists.

    Raises:
        RunLocked: on enter, when another process holds the lock; the message
            names the holder's run id and pid.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILENAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_lock_holder(self.path.parent) or {}
            run = holder.get("run_id")
            run_text = f"run {run}" if run is not None else "a run (starting)"
            raise RunLocked(
                f"Another run is in progress: {run_text}, pid {holder.get('pid', '?')}. "
                "Wait for it to finish (nightshift status) or stop it first."
            ) from None
        self._fd = fd
        self._write({"pid": os.getpid(), "run_id": None})
        return self

    def set_run_id(self, run_id: int) -> None:
        """Record the run now holding the lock."""
        self._write({"pid": os.getpid(), "run_id": run_id})

    def _write(self, payload: dict) -> None:
        assert self._fd is not None
        data = json.dumps(payload).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_lock_holder(state_dir: Path) -> dict | None:
    """The holder recorded in the lock file if the lock is held now, else None.

    Returns:
        ``{"pid": int, "run_id": int | None}`` or None when nobody holds the lock.
    """
    path = Path(state_dir) / LOCK_FILENAME
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.pread(fd, 4096, 0)
            try:
                return json.loads(raw.decode() or "{}") or {"pid": None, "run_id": None}
            except ValueError:
                return {"pid": None, "run_id": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
