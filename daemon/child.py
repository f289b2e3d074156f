"""Supervising the mlx worker children.

Each child runs ``[sys.executable, "-m", "daemon.worker.<name>", REQUEST.json]``
in its own session (so its whole process group can be stopped with
``os.killpg``), with output to a per-run log file, a hard timeout, and
SIGTERM-then-SIGKILL on shutdown. The parent reads only the files the child
writes (JSON lines and a JSON result) to learn results; the child's output goes
through a pipe to its log file, and the last :data:`OUTPUT_TAIL_BYTES` are also
kept in memory, so a failure's cause (a traceback, "No space left on device")
is reported even when the disk was too full to write the log.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon import shutdown
from daemon.errors import Interrupted, NightshiftError
from daemon.worker.common import PARENT_PID_ENV, signal_name, write_json
from daemon.worker.env import worker_env

POLL_S = 0.5
"""How often the parent polls a running child and its metrics file (seconds)."""
OUTPUT_TAIL_BYTES = 4096
"""How much of a child's last output is kept in memory for failure reasons (bytes)."""
OUTPUT_TAIL_LINES = 6
"""How many of those lines a failure reason quotes."""


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
"""An ECMA-48 control sequence (colours, bold, cursor moves), as terminals read them."""


class OutputTail:
    """Copies a child's output pipe to its log file and keeps the last bytes in memory.

    A log write that fails (disk full) is counted, not raised: the tail still
    holds what the child said.
    """

    def __init__(self, pipe: Any, log_path: Path) -> None:
        self._pipe = pipe
        self._log_path = log_path
        self._tail = b""
        self.log_errors = 0
        self._thread = threading.Thread(target=self._pump, name="child-output", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        from daemon.statedir import open_private

        try:  # never through a link planted at train.log
            log = os.fdopen(open_private(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab")
        except (OSError, NightshiftError):
            log = None
            self.log_errors += 1
        try:
            while chunk := os.read(self._pipe.fileno(), 65536):
                self._tail = (self._tail + chunk)[-OUTPUT_TAIL_BYTES:]
                if log is not None:
                    try:
                        log.write(chunk)
                        log.flush()
                    except OSError:
                        self.log_errors += 1
        except OSError:
            pass
        finally:
            if log is not None:
                try:
                    log.close()
                except OSError:
                    self.log_errors += 1
            self._pipe.close()

    def join(self, timeout_s: float = 2.0) -> None:
        """Wait for the output to be drained (after the child exited)."""
        self._thread.join(timeout_s)

    def last_lines(self, n: int = OUTPUT_TAIL_LINES) -> list[str]:
        """The last ``n`` non-blank lines the child printed, terminal escape codes removed
        (mlx-lm's TrainUI colours its lines even into a file; a failure reason is plain text)."""
        text = _ANSI_ESCAPE.sub("", self._tail.decode("utf-8", errors="replace"))
        return [line.rstrip() for line in text.splitlines() if line.strip()][-n:]


@dataclass(frozen=True)
class ChildResult:
    """How a worker child ended.

    Attributes:
        returncode: the exit status; negative ``-N`` when killed by signal N.
        duration_s: wall time from start to exit (seconds, monotonic).
        log_path: the child's stdout+stderr.
        timed_out: True when we killed it for exceeding its timeout.
        output_tail: the last lines it printed (kept in memory, see :class:`OutputTail`).
    """

    returncode: int
    duration_s: float
    log_path: Path
    timed_out: bool = False
    peak_rss_bytes: int | None = None
    """The child's peak RSS when known (it set a new maximum among our children), else None."""
    oom_killed: bool | None = None
    """The kernel's OOM killer struck in our cgroup while the child ran (Linux cgroup v2); None: unknown."""
    output_tail: tuple[str, ...] = ()

    @property
    def signal_name(self) -> str | None:
        """``SIGKILL`` etc. when the child died by a signal, else None."""
        return signal_name(self.returncode)

    def describe(self, total_memory_bytes: int | None = None) -> str:
        """One phrase: ``exited with status 1 after 3 s`` / ``was killed by SIGTERM after 5 s``.

        A SIGKILL is described with what is known: out of memory only when the kernel's OOM
        killer struck (:attr:`oom_killed`) or the child's peak RSS reached
        :data:`~daemon.resources.OOM_LIKELY_RSS_SHARE` of ``total_memory_bytes`` (default: this
        machine's); otherwise ``killed by signal 9 (SIGKILL) ... by the OOM killer or another process``.
        """
        from daemon.resources import OOM_LIKELY_RSS_SHARE, format_bytes, memory_info

        after = f"after {self.duration_s:.0f} s"
        if self.timed_out:
            return f"timed out {after} and was stopped"
        sig = self.signal_name
        if sig == "SIGKILL":
            if self.oom_killed:
                return f"was killed by SIGKILL {after} by the kernel's OOM killer: out of memory"
            total = total_memory_bytes if total_memory_bytes is not None else memory_info().total_bytes
            if self.peak_rss_bytes and total and self.peak_rss_bytes >= OOM_LIKELY_RSS_SHARE * total:
                return (
                    f"was killed by SIGKILL {after} at a peak RSS of {format_bytes(self.peak_rss_bytes)} "
                    f"of {format_bytes(total)}: likely out of memory"
                )
            return f"was killed by signal 9 (SIGKILL) {after} — by the OOM killer or another process"
        if sig:
            return f"was killed by {sig} {after}"
        return f"exited with status {self.returncode} {after}"

    def describe_with_output(self, reason: str | None = None) -> str:
        """The whole failure reason: :meth:`describe`, then the ``reason`` the child
        wrote in its result file or else its last output lines, a full disk when
        either shows one or the disk is nearly full, and the log path."""
        from daemon.statedir import disk_full_hint

        text = self.describe()
        if reason:
            text += f": {reason}"
        elif self.output_tail:
            text += "; last output: " + " | ".join(self.output_tail)
        hint = disk_full_hint(self.log_path.parent, (reason or "") + "\n".join(self.output_tail))
        if hint:
            text += f"; {hint}"
        return f"{text}. log: {self.log_path}"


def stop_process_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after ``grace_s`` seconds."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()
    kill_leftover_group(proc)


def kill_leftover_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of an ended child's process group (its grandchildren).

    The child ran in its own session, so its pid is its group id. The group
    outlives its leader while any member lives: a ``kill -9`` of the launch
    wrapper leaves ``mlx.launch`` and every local rank training into the failed
    run's directory unless this is called. Safe after the leader was reaped: a
    pid still in use as a process group id is never handed to a new process.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_worker(
    module: str,
    request: dict[str, Any],
    *,
    work_dir: Path,
    name: str,
    timeout_s: float,
    stop_grace_s: float,
    on_poll: Callable[[], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ChildResult:
    """Run a worker module to completion under supervision.

    Args:
        module: e.g. ``daemon.worker.train``.
        request: JSON-serialisable request; written to ``<work_dir>/<name>_request.json``.
        work_dir: where the request and the ``<name>.log`` go.
        timeout_s: hard limit (seconds); the group is stopped when it passes.
        stop_grace_s: SIGTERM-to-SIGKILL grace (seconds).
        on_poll: called every :data:`POLL_S` while the child runs, and once after.
        on_start: called with the child's pid once it started.

    Returns:
        How the child ended.

    Raises:
        Interrupted: a shutdown was requested; the child's group was stopped first.
    """
    return StartedWorker(module, work_dir=work_dir, name=name).run(
        request, timeout_s=timeout_s, stop_grace_s=stop_grace_s, on_poll=on_poll, on_start=on_start
    )


class StartedWorker:
    """A worker child, started now; its request may follow later (a *warm start*).

    ``python -m daemon.worker.<name> REQUEST.json`` waits for the request file
    when it does not exist yet, after importing what it needs (see
    :func:`daemon.worker.common.read_request`). Starting the eval child while
    training runs moves its interpreter start and mlx-lm import (about a second,
    more from a cold disk) out of the evaluating stage; it loads no model until
    the request arrives, so it holds only the libraries' memory meanwhile.

    The caller must either :meth:`run` it or :meth:`stop` it (``stop`` is safe to
    call in a ``finally`` after ``run``).
    """

    def __init__(
        self,
        module: str,
        *,
        work_dir: Path,
        name: str,
    ) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.request_path = work_dir / f"{name}_request.json"
        self.log_path = work_dir / f"{name}.log"
        self.request_path.unlink(missing_ok=True)  # never run a stale request
        if self.log_path.is_symlink():
            from daemon.statedir import planted_link_error

            raise planted_link_error(self.log_path)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, str(self.request_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=worker_env({PARENT_PID_ENV: str(os.getpid())}),
            cwd=work_dir,
        )
        self.output = OutputTail(self.proc.stdout, self.log_path)

    def run(
        self,
        request: dict[str, Any],
        *,
        timeout_s: float,
        stop_grace_s: float,
        on_poll: Callable[[], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> ChildResult:
        """Hand the child its request and supervise it to the end.

        The request is written atomically (a waiting child never reads half of
        it). ``timeout_s`` counts from now. Returns and raises as :func:`run_worker`.
        """
        write_json(self.request_path, request)
        result = _supervise(
            self.proc,
            self.name,
            time.monotonic(),
            self.log_path,
            timeout_s=timeout_s,
            stop_grace_s=stop_grace_s,
            on_poll=on_poll,
            on_start=on_start,
        )
        self.output.join()
        return dataclasses.replace(result, output_tail=tuple(self.output.last_lines()))

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the child's process group: the child if it still runs, and what is left of its group."""
        if self.proc.poll() is None:
            stop_process_group(self.proc, grace_s)
        else:
            kill_leftover_group(self.proc)


def _supervise(
    proc: subprocess.Popen[bytes],
    name: str,
    started: float,
    log_path: Path,
    *,
    timeout_s: float,
    stop_grace_s: float,
    on_poll: Callable[[], None] | None,
    on_start: Callable[[int], None] | None,
) -> ChildResult:
    from daemon.power import keep_awake
    from daemon.resources import children_peak_rss_bytes, oom_kill_count

    awake = keep_awake(proc.pid)
    rss_before, oom_before = children_peak_rss_bytes(), oom_kill_count()
    try:
        if on_start is not None:
            on_start(proc.pid)
        timed_out = False
        while proc.poll() is None:
            if shutdown.stop_requested():
                stop_process_group(proc, stop_grace_s)
                raise Interrupted(
                    f"{shutdown.stop_reason() or 'shutdown requested'}; stopped the {name} child "
                    f"(pid {proc.pid}) after {time.monotonic() - started:.0f} s"
                )
            if time.monotonic() - started > timeout_s:
                stop_process_group(proc, stop_grace_s)
                timed_out = True
                break
            if on_poll is not None:
                on_poll()
            try:  # wakes as soon as the child exits
                proc.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
        if on_poll is not None:
            on_poll()
        if shutdown.stop_requested() and proc.returncode != 0:
            # The signal reached the child too (systemd KillMode=control-group,
            # Ctrl-C in a terminal): this is a shutdown, not a failed run.
            raise Interrupted(
                f"{shutdown.stop_reason() or 'shutdown requested'}; the {name} child (pid {proc.pid}) "
                f"stopped with status {proc.returncode}"
            )
        rss_after, oom_after = children_peak_rss_bytes(), oom_kill_count()
        return ChildResult(
            returncode=proc.returncode if proc.returncode is not None else -9,
            duration_s=time.monotonic() - started,
            log_path=log_path,
            timed_out=timed_out,
            peak_rss_bytes=rss_after if rss_after > rss_before else None,
            oom_killed=None if oom_before is None or oom_after is None else oom_after > oom_before,
        )
    finally:
        if proc.poll() is None:  # an exception in on_poll: never leave the child behind
            stop_process_group(proc, stop_grace_s)
        else:  # the leader ended (or was killed -9): its grandchildren go with it
            kill_leftover_group(proc)
        if awake is not None and awake.poll() is None:
            awake.terminate()


def read_result_file(path: Path) -> dict[str, Any]:
    """The JSON result a worker wrote, or ``{}`` when it wrote none (or a torn one)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


class JsonLinesTail:
    """Reads the JSON lines a child appends, a complete line at a time."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        """Records appended since the last call (an incomplete last line waits)."""
        if not self.path.exists():
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            if line.strip():
                out.append(json.loads(line))
        return out
