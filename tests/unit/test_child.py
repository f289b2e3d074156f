"""Worker children started ahead of their request (warm start): real processes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from daemon.child import ChildResult, StartedWorker


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_warm_worker_waits_for_its_request_and_can_be_stopped(tmp_path: Path) -> None:
    (tmp_path / "evaluate_request.json").write_text("{}")  # stale: must not be run
    worker = StartedWorker("daemon.worker.evaluate", work_dir=tmp_path, name="evaluate")
    assert not (tmp_path / "evaluate_request.json").exists()
    time.sleep(1.5)  # long enough to import mlx-lm and start waiting
    assert worker.proc.poll() is None  # still waiting for work
    worker.stop(grace_s=2)
    assert worker.proc.poll() is not None and not alive(worker.proc.pid)
    worker.stop(grace_s=2)  # idempotent


def test_a_warm_worker_runs_the_request_it_is_handed_later(tmp_path: Path) -> None:
    worker = StartedWorker("daemon.worker.evaluate", work_dir=tmp_path, name="evaluate")
    time.sleep(0.5)
    # A request the eval child rejects at once (no such model): it ran, and reported why.
    request = {
        "base_model": str(tmp_path / "no-model"),
        "models": [],
        "output_file": str(tmp_path / "out.jsonl"),
        "result_file": str(tmp_path / "result.json"),
    }
    result = worker.run(request, timeout_s=60, stop_grace_s=2)
    assert result.returncode == 1
    reason = json.loads((tmp_path / "result.json").read_text())["reason"]
    assert "no-model" in reason
    assert json.loads((tmp_path / "evaluate_request.json").read_text()) == request


# ---------------------------------------------------------------- SIGKILL described with what is known


def _killed(**kw: object) -> ChildResult:
    return ChildResult(returncode=-9, duration_s=12.0, log_path=Path("train.log"), **kw)  # type: ignore[arg-type]


def test_sigkill_without_evidence_is_not_called_out_of_memory() -> None:
    """Regression: any SIGKILL was reported as "likely out of memory"."""
    assert _killed().describe(total_memory_bytes=64 * 10**9) == (
        "was killed by signal 9 (SIGKILL) after 12 s — by the OOM killer or another process"
    )
    small = _killed(peak_rss_bytes=2 * 10**9, oom_killed=False)
    assert "out of memory" not in small.describe(total_memory_bytes=64 * 10**9)


def test_sigkill_with_memory_evidence_says_so() -> None:
    assert _killed(oom_killed=True).describe(total_memory_bytes=64 * 10**9) == (
        "was killed by SIGKILL after 12 s by the kernel's OOM killer: out of memory"
    )
    assert _killed(peak_rss_bytes=60 * 10**9).describe(total_memory_bytes=64 * 10**9) == (
        "was killed by SIGKILL after 12 s at a peak RSS of 60.0 GB of 64.0 GB: likely out of memory"
    )


# ---------------------------------------------------------------- a leader killed -9 takes its group along


def test_a_leader_killed_by_sigkill_leaves_no_grandchild_behind(tmp_path: Path) -> None:
    """Regression: after ``kill -9`` of the distributed launch wrapper, ``mlx.launch`` and every
    rank (its grandchildren, same process group) kept training into the failed run's directory."""
    import subprocess

    from daemon.child import _supervise

    pid_file = tmp_path / "grandchild.pid"
    proc = subprocess.Popen(
        ["/bin/sh", "-c", f'sleep 60 & echo $! > "{pid_file}"; kill -9 $$'],
        start_new_session=True,
    )
    result = _supervise(
        proc, "train", time.monotonic(), tmp_path / "train.log",
        timeout_s=30, stop_grace_s=2, on_poll=None, on_start=None,
    )
    assert result.signal_name == "SIGKILL"
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # SIGKILL is delivered at once; reaping (by init) may lag a moment
        if not alive(grandchild) or _zombie(grandchild):
            break
        time.sleep(0.05)
    assert not alive(grandchild) or _zombie(grandchild)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def test_a_failure_reason_quotes_the_childs_last_lines_without_terminal_colours(tmp_path: Path) -> None:
    """Re-review #3: mlx-lm's TrainUI colours its lines even into a file, and the escape codes
    reached the report's failure reason (``\\[1miter train_loss ...\\[0m``)."""
    import subprocess
    import sys

    from daemon.child import OutputTail

    proc = subprocess.Popen(
        [sys.executable, "-c", r"print('\x1b[1miter train_loss\x1b[0m | \x1b[38;5;244m 1\x1b[0m \x1b[1;35mval 2.0\x1b[0m')"],
        stdout=subprocess.PIPE,
    )
    tail = OutputTail(proc.stdout, tmp_path / "train.log")
    proc.wait()
    tail.join()
    assert tail.last_lines() == ["iter train_loss |  1 val 2.0"]
    assert b"\x1b[1m" in (tmp_path / "train.log").read_bytes()  # the log keeps what the child wrote
