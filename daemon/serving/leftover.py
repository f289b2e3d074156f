"""The managed server's pid record, and stopping a server a dead nightshift left running.

The managed server runs in a session of its own (so it can be stopped as a
process group), which also means a ``kill -9`` of the nightshift process that
supervises it leaves it running, holding its port and the model's memory. So
the :class:`~daemon.serving.server.Supervisor` records each server it starts in
``<state_dir>/serving/server.pid.json``::

    {"pid": 4242, "identity": "<start time> <command line>", "argv": [...],
     "supervisor_pid": 4200, "started_at": 1764612000.0}

and removes the record when it stops the server. A record left behind names a
leftover; :func:`stop_leftover_server` stops it, but only when the process with
that pid is verifiably the one recorded (same start time and command line: a pid
reused by another program is never touched). It runs at start-up recovery
(:func:`daemon.recovery.recover_state`, when no supervisor is alive) and when a
supervisor starts. On Linux the server also gets ``SIGTERM`` as its parent-death
signal (``prctl(PR_SET_PDEATHSIG)``), so it usually goes with its supervisor.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from daemon.statedir import write_private

log = structlog.get_logger("nightshift.serving")

PID_FILE = "server.pid.json"
#: After SIGKILL, how long to wait for a leftover to disappear (seconds).
KILL_WAIT_S = 5.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def process_identity(pid: int) -> str | None:
    """What tells this process from a later one that reuses its pid: start time and command line.

    Linux: ``/proc/<pid>/stat`` field 22 (start time in clock ticks since boot) and
    ``/proc/<pid>/cmdline``; elsewhere ``ps -o lstart=`` and ``ps -o command=``.

    Returns:
        ``"<start> <argv joined by spaces>"``, or None when no such process runs
        (a zombie counts as gone: its command line is empty).
    """
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        # The command name (field 2) is in parentheses and may hold spaces: split after it.
        fields = stat[stat.rfind(")") + 2 :].split()
        argv = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
        if len(fields) < 20 or not argv:
            return None
        return f"{fields[19]} {' '.join(argv)}"
    out = subprocess.run(
        ["ps", "-ww", "-p", str(pid), "-o", "lstart=", "-o", "command="],
        capture_output=True, text=True, check=False,
    )
    line = out.stdout.strip()
    return line if out.returncode == 0 and line else None


def parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when its parent dies (Linux), else None.

    ``prctl`` is looked up here, in the parent, so the child between fork and exec
    only makes the call (no import, no library loading).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return set_pdeathsig


def record_server(serving_dir: Path, pid: int, argv: Sequence[str]) -> None:
    """Write the pid record of a server just started (mode 0600, atomically)."""
    record = {
        "pid": pid,
        "identity": process_identity(pid),
        "argv": list(argv),
        "supervisor_pid": os.getpid(),
        "started_at": time.time(),
    }
    write_private(Path(serving_dir) / PID_FILE, json.dumps(record).encode())


def forget_server(serving_dir: Path) -> None:
    """Remove the pid record (the server was stopped by its supervisor)."""
    (Path(serving_dir) / PID_FILE).unlink(missing_ok=True)


def stop_leftover_server(serving_dir: Path, grace_s: float) -> str | None:
    """Stop the server a record names when it still runs and is verifiably ours; remove the record.

    Call only when no live supervisor owns the record (a supervisor that just took
    the lock, or recovery after checking :func:`~daemon.serving.server.supervisor_alive`).

    Args:
        grace_s: seconds between SIGTERM and SIGKILL to its process group.

    Returns:
        One line saying what was stopped, or None (no record, the process is gone,
        or its pid now belongs to another program, which is left alone).
    """
    path = Path(serving_dir) / PID_FILE
    if path.is_symlink():
        path.unlink()
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        pid, identity = int(record["pid"]), record.get("identity")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)  # a torn record names nothing we could verify
        return None
    if not identity or process_identity(pid) != identity:
        path.unlink(missing_ok=True)
        return None
    command = " ".join(record.get("argv") or [])[:200]
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, KILL_WAIT_S)):
        try:
            os.killpg(pid, sig)  # started with start_new_session: its group id is its pid
        except ProcessLookupError:
            break
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while process_identity(pid) == identity and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_identity(pid) != identity:
            break
    path.unlink(missing_ok=True)
    log.warning("leftover_server_stopped", pid=pid, command=command)
    return (
        f"stopped the managed server (pid {pid}: {command}) that a nightshift process "
        f"(pid {record.get('supervisor_pid', '?')}) left running when it ended without stopping it"
    )
