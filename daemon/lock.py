"""Lock files: the run lock, and the one flock helper behind it and the daemon's pidfile.

:class:`LockFile` is an ``fcntl.flock`` on a file in the state dir. The kernel
releases it when the holder dies (even by SIGKILL), so a lock is never broken
by age and a leftover file is harmless. The holder writes a small payload
(who holds it) that :func:`read_locked` returns only while the lock is held.
The file is opened with ``O_NOFOLLOW`` (a planted link is refused, never
truncated) and mode 0600.

The run lock (``run.lock``, :class:`RunLock`) serialises training: one run at a
time, scheduled and manual alike. Its payload is ``{"pid": ..., "run_id": ...}``
so a refused caller and ``nightshift status`` can name the holder.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType

from daemon.errors import RunLocked
from daemon.statedir import ensure_private_dir, open_private

LOCK_FILENAME = "run.lock"


class LockFile:
    """An exclusive, non-blocking ``flock`` on ``path`` with a payload.

    Args:
        path: the lock file (created 0600; its directory 0700).
        remove_on_release: unlink the file on release (a pidfile); the
            acquire loop copes with a holder unlinking it meanwhile.

    Raises:
        StateDirError: (on :meth:`acquire`) a symbolic link is planted at ``path``.
    """

    def __init__(self, path: Path, *, remove_on_release: bool = False) -> None:
        self.path = Path(path)
        self.remove_on_release = remove_on_release
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock; False (nothing changed) when another process holds it."""
        ensure_private_dir(self.path.parent)
        while True:
            fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            # A previous holder may have unlinked the file between our open and flock.
            try:
                if os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._fd = fd
        return True

    def write(self, payload: str) -> None:
        """Replace the payload (durably)."""
        assert self._fd is not None
        data = payload.encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    def release(self) -> None:
        """Drop the lock (no-op when not held); the payload is cleared or the file removed."""
        if self._fd is None:
            return
        if self.remove_on_release:
            self.path.unlink(missing_ok=True)
        else:
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def read_locked(path: Path) -> str | None:
    """The payload of ``path`` while some process holds its lock, else None.

    A file nobody holds the lock on (its holder died, or it is left over)
    counts as unlocked whatever it says. A link planted at ``path`` counts as
    unlocked too (it is not opened).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 4096, 0).decode(errors="replace")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class RunLock:
    """Exclusive, non-blocking run lock on ``<state_dir>/run.lock``.

    Use as a context manager; :meth:`set_run_id` records the run once it exists.

    Raises:
        RunLocked: on enter, when another process holds the lock; the message
            names the holder's run id and pid.
        StateDirError: on enter, a link is planted at ``run.lock`` or the
            state dir cannot be created.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILENAME
        self._lock = LockFile(self.path)

    def __enter__(self) -> RunLock:
        if not self._lock.acquire():
            holder = read_lock_holder(self.path.parent) or {}
            run = holder.get("run_id")
            run_text = f"run {run}" if run is not None else "a run (starting)"
            raise RunLocked(
                f"Another run is in progress: {run_text}, pid {holder.get('pid', '?')}. "
                "Wait for it to finish (nightshift status) or stop it first."
            )
        self._lock.write(json.dumps({"pid": os.getpid(), "run_id": None}))
        return self

    def set_run_id(self, run_id: int) -> None:
        """Record the run now holding the lock."""
        self._lock.write(json.dumps({"pid": os.getpid(), "run_id": run_id}))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()


def read_lock_holder(state_dir: Path) -> dict | None:
    """The holder recorded in the run lock if it is held now, else None.

    Returns:
        ``{"pid": int, "run_id": int | None}`` or None when nobody holds the lock.
    """
    raw = read_locked(Path(state_dir) / LOCK_FILENAME)
    if raw is None:
        return None
    try:
        return json.loads(raw or "{}") or {"pid": None, "run_id": None}
    except ValueError:
        return {"pid": None, "run_id": None}
