"""Helpers shared by the worker children: parent watch, JSON lines, results."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_REQUEST = 2
EXIT_NONFINITE = 3
EXIT_ORPHANED = 4

CHECKPOINTS_DIR = "checkpoints"
"""Under a run's directory: the best adapter so far and the resume checkpoints."""
LATEST_CHECKPOINT = "latest.json"
"""In :data:`CHECKPOINTS_DIR`: the newest complete resume checkpoint (its dir, iteration, fingerprint)."""
BEST_ADAPTER = "best_adapters.safetensors"
"""In :data:`CHECKPOINTS_DIR`: the adapter with the lowest validation loss so far."""

PARENT_PID_ENV = "NIGHTSHIFT_PARENT_PID"
PARENT_POLL_S = 1.0
"""How often a child checks that its parent is alive (seconds)."""


def signal_name(returncode: int) -> str | None:
    """``SIGKILL`` etc. for a process's exit status ``-N`` (killed by signal N), else None."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def watch_parent(poll_s: float = PARENT_POLL_S, *, ignore_env: bool = False) -> None:
    """Exit this process when the parent that started it dies.

    ``kill -9`` of the daemon must not leave a trainer holding tens of GB: a
    daemon thread polls ``os.getppid()`` and hard-exits once it changes
    (re-parented to init/launchd). The parent passes its pid in
    ``$NIGHTSHIFT_PARENT_PID``: a parent killed before this thread starts
    (the child already re-parented) is caught too. A rank started by
    ``mlx.launch`` passes ``ignore_env=True``: its parent is the launcher,
    which watches the daemon itself (:mod:`daemon.worker.launch`).
    """
    expected = None if ignore_env else os.environ.get(PARENT_PID_ENV)
    parent = int(expected) if expected else os.getppid()
    if os.getppid() != parent:
        os._exit(EXIT_ORPHANED)

    def _watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(EXIT_ORPHANED)

    threading.Thread(target=_watch, name="parent-watch", daemon=True).start()


class JsonLines:
    """Append-only JSON lines file: every record is flushed, and fsynced when asked (``sync=True``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the object

    def write(self, record: dict[str, Any], *, sync: bool = False) -> None:
        """Append one record (``time`` in Unix seconds is added).

        Every record is flushed (the parent tails the file); ``sync=True`` also
        fsyncs, for records that mark a finished unit of work.
        """
        record = {"time": time.time(), **record}
        self._fh.write(json.dumps(record, allow_nan=True) + "\n")
        self._fh.flush()
        if sync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        """fsync and close the file."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename), mode 0600, following no planted link.

    Raises:
        StateDirError: a symbolic link is planted at ``path``.
    """
    from daemon.statedir import write_private

    write_private(Path(path), json.dumps(payload, indent=2, default=str).encode("utf-8"))


REQUEST_POLL_S = 0.02
"""How often a warm-started child looks for its request file (seconds)."""


def read_request(argv: list[str]) -> dict[str, Any]:
    """Load the JSON request named by the single command-line argument.

    A child started ahead of its work (:class:`daemon.child.StartedWorker`)
    finds no file yet and waits for it, polling every :data:`REQUEST_POLL_S`
    seconds; the parent writes it atomically, and stops the child (or the
    parent watch ends it) if the work never comes.
    """
    if len(argv) != 2:
        print(f"usage: python -m {argv[0]} REQUEST.json", file=sys.stderr)
        sys.exit(EXIT_BAD_REQUEST)
    path = Path(argv[1])
    while not path.exists():
        time.sleep(REQUEST_POLL_S)
    return json.loads(path.read_text(encoding="utf-8"))


def versions() -> dict[str, str]:
    """Installed mlx and mlx-lm versions."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("mlx", "mlx-lm"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a chat JSONL file as preflight sees it: typed text blocks joined into
    strings (:func:`daemon.dataset.read_chat_jsonl`), rejected lines left out
    (preflight already failed the run on those)."""
    from daemon.dataset import read_chat_jsonl

    examples, _findings = read_chat_jsonl(path)
    return [ex.record() for ex in examples]
