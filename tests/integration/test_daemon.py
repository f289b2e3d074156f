"""The real daemon process: `nightshift start` with real signals, children and SQLite.

The cheap tests (start, refuse a second daemon, SIGTERM/SIGINT -> exit 0,
kill -9 -> stale pidfile) need no model and run in `make test`. The ones that
train on the demo workspace's tiny model are marked slow (`make test-all`).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import load_config
from daemon.registry import Registry
from daemon.scheduler import schedule_status
from daemon.service import PIDFILE_NAME, read_daemon_pid

START_TIMEOUT_S = 60.0
STOP_GRACE_S = 3.0


def nightshift_cmd() -> list[str]:
    """The venv's `nightshift`, else `python -m daemon`."""
    script = Path(sys.executable).absolute().parent / "nightshift"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "daemon"]


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def log_events(state_dir: Path) -> list[dict]:
    path = state_dir / "logs" / "nightshift.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def process_table() -> list[tuple[int, int, int, str]]:
    """(pid, ppid, pgid, args) of every process (ps works on Linux and macOS)."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,pgid=,args="], capture_output=True, text=True, check=True)
    rows = []
    for line in out.stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4:
            rows.append((int(parts[0]), int(parts[1]), int(parts[2]), parts[3]))
    return rows


def worker_of(parent_pid: int, module: str = "daemon.worker.train") -> tuple[int, int] | None:
    """(pid, pgid) of the parent's worker child running ``module``, if any."""
    for pid, ppid, pgid, args in process_table():
        if ppid == parent_pid and module in args:
            return pid, pgid
    return None


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Daemons:
    """Starts `nightshift start` processes and kills any left at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, config: Path, *extra: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*nightshift_cmd(), "start", "--config", str(config), *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C of pytest must not reach it
        )
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    manager = Daemons()
    yield manager
    manager.cleanup()


def started(state_dir: Path, proc: subprocess.Popen[str]) -> dict:
    """Wait for the daemon's `daemon started` log line; fail with its stderr if it died."""

    def check() -> dict | None:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        for event in log_events(state_dir):
            if event.get("event") == "daemon started" and event.get("pid") == proc.pid:
                return event
        return None

    return wait_for(check, START_TIMEOUT_S, "the daemon to start")


def write_config(directory: Path, schedule: dict[str, Any], base: dict[str, Any] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    raw = dict(base or {})
    raw.setdefault("paths", {})
    raw["paths"] = {**raw["paths"], "state_dir": str(directory / "state")}
    raw["schedule"] = {**raw.get("schedule", {}), **schedule}
    path = directory / "nightshift.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


# A schedule that is never due while the test runs (grace 0 means the 60 s minimum).
IDLE_SCHEDULE = {"cron": "0 1 * * *", "misfire_grace_s": 0, "rehearsal": False, "stop_grace_s": STOP_GRACE_S}


# ---------------------------------------------------------------- cheap: no model


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_daemon_starts_refuses_a_second_and_stops_cleanly(
    tmp_path: Path, daemons: Daemons, sig: signal.Signals
) -> None:
    config = write_config(tmp_path, IDLE_SCHEDULE)
    state = tmp_path / "state"
    proc = daemons.start(config)
    event = started(state, proc)
    assert event["mlx_loaded"] is False

    cfg = load_config(config)
    status = schedule_status(cfg, datetime.now(UTC))
    assert status["daemon"] == {"running": True, "pid": proc.pid}
    assert status["next_run"] is not None

    second = subprocess.run(
        [*nightshift_cmd(), "start", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert second.returncode != 0
    assert f"Error: The nightshift daemon is already running (pid {proc.pid})" in second.stderr

    os.kill(proc.pid, sig)
    assert proc.wait(timeout=30) == 0
    # `nightshift start` printed nothing at all: now one startup line says where everything is
    assert proc.stdout is not None
    first_line = proc.stdout.readline()
    assert first_line.startswith(f"nightshift started: pid {proc.pid}, config {config.resolve()}, next run 20")
    assert first_line.rstrip().endswith(f", log {state.resolve() / 'logs' / 'nightshift.jsonl'}")
    assert not (state / PIDFILE_NAME).exists()
    assert schedule_status(cfg, datetime.now(UTC))["daemon"] == {"running": False, "pid": None}
    stopped = [e for e in log_events(state) if e.get("event") == "daemon stopped"]
    assert stopped and stopped[-1]["reason"] == f"received {sig.name}"


def test_after_kill_9_the_pidfile_is_stale_and_a_new_daemon_starts(tmp_path: Path, daemons: Daemons) -> None:
    config = write_config(tmp_path, IDLE_SCHEDULE)
    state = tmp_path / "state"
    first = daemons.start(config)
    started(state, first)
    first.kill()
    first.wait()
    assert (state / PIDFILE_NAME).exists()
    assert read_daemon_pid(state) is None
    second = daemons.start(config)
    started(state, second)
    assert read_daemon_pid(state) == second.pid
    second.terminate()
    assert second.wait(timeout=30) == 0


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.mark.slow  # a real daemon process: about 3-6 s
def test_start_on_a_terminal_prints_its_startup_line_and_logs_to_it(tmp_path: Path) -> None:
    """`nightshift start` printed nothing at all on a terminal; now a startup line, then the log events
    both on the terminal and in the JSON log (a real pty: the daemon sees isatty() true)."""
    config = write_config(tmp_path, IDLE_SCHEDULE)
    state = tmp_path / "state"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*nightshift_cmd(), "start", "-c", str(config)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    seen = bytearray()

    def read_until(text: str, timeout_s: float = START_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while text not in ANSI_ESCAPE.sub("", seen.decode(errors="replace")):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {text!r} on the terminal; got {bytes(seen)!r}")
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the daemon closed the terminal (exited)
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {text!r}; got {bytes(seen)!r}")
                seen.extend(chunk)
        return ANSI_ESCAPE.sub("", seen.decode(errors="replace")).replace("\r\n", "\n")

    try:
        read_until("daemon started")
        shown = read_until("nightshift.jsonl\r\n")  # the startup line (after the scheduler's first events)
        startup = next(line for line in shown.splitlines() if line.startswith("nightshift started:"))
        assert startup.startswith(f"nightshift started: pid {proc.pid}, config {config.resolve()}, next run 20")
        assert startup.endswith(f", log {state.resolve() / 'logs' / 'nightshift.jsonl'}")
        assert [e for e in log_events(state) if e.get("event") == "daemon started" and e.get("pid") == proc.pid]
        os.kill(proc.pid, signal.SIGTERM)
        shown = read_until("daemon stopped", timeout_s=30)
        assert proc.wait(timeout=30) == 0
        assert "received SIGTERM" in shown.split("daemon stopped", 1)[1].splitlines()[0]
        assert "Traceback" not in shown
        assert [e for e in log_events(state) if e.get("event") == "daemon stopped"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)


# ---------------------------------------------------------------- slow: real nights on the tiny model


def demo_config(demo_workspace: Path, directory: Path, schedule: dict[str, Any], **sections: Any) -> Path:
    """A variant of the demo workspace's config with its own state dir and schedule."""
    src = demo_workspace / "nightshift.yaml"
    raw = yaml.safe_load(src.read_text()) or {}
    cfg = load_config(src)
    raw["paths"] = {
        "base_model": str(cfg.paths.base_model),
        "dataset": str(cfg.paths.dataset),
        "eval_suite": str(cfg.paths.eval_suite),
    }
    for section, overrides in sections.items():
        raw[section] = {**raw.get(section, {}), **overrides}
    return write_config(directory, schedule, raw)


def cron_in(seconds: float) -> tuple[str, str]:
    """A six-field UTC cron firing once, ``seconds`` from now, and its night key."""
    at = (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)
    key = at.isoformat(timespec="minutes" if at.second == 0 else "seconds")
    return f"{at.second} {at.minute} {at.hour} {at.day} {at.month} *", key


def slow_schedule(seconds_ahead: float) -> tuple[dict[str, Any], str]:
    cron, key = cron_in(seconds_ahead)
    schedule = {
        "cron": cron,
        "timezone": "UTC",
        "misfire_grace_s": 120,
        "rehearsal": False,
        "check_interval_s": 1,
        "stop_grace_s": STOP_GRACE_S,
    }
    return schedule, key


def run_status(state: Path, key: str) -> str | None:
    run = Registry.open(state).night_run(key)
    return None if run is None else run.status


def current_target(state: Path) -> str | None:
    link = state / "current"
    return os.readlink(link) if link.is_symlink() else None


@pytest.mark.slow
def test_a_scheduled_night_runs_exactly_once(demo_workspace: Path, tmp_path: Path, daemons: Daemons) -> None:
    schedule, key = slow_schedule(8)
    config = demo_config(demo_workspace, tmp_path, schedule)
    state = tmp_path / "state"
    proc = daemons.start(config)
    started(state, proc)
    final = {"promoted", "rejected", "failed", "awaiting_approval", "interrupted"}
    status = wait_for(lambda: (run_status(state, key) or "") in final and run_status(state, key), 900, "the night to end", 1.0)
    time.sleep(3)  # the check loop ticks every second: it must not start the night again
    registry = Registry.open(state)
    runs = registry.runs()
    assert [(r.night_key, r.trigger) for r in runs] == [(key, "scheduled")], status
    assert status != "failed", registry.get_run(runs[0].id).failure_reason
    proc.terminate()
    assert proc.wait(timeout=60) == 0


def _start_training(demo_workspace: Path, tmp_path: Path, daemons: Daemons) -> tuple[subprocess.Popen[str], Path, str, tuple[int, int]]:
    schedule, key = slow_schedule(6)
    config = demo_config(demo_workspace, tmp_path, schedule, training={"iters": 200_000, "steps_per_eval": 100_000})
    state = tmp_path / "state"
    proc = daemons.start(config)
    started(state, proc)
    wait_for(lambda: run_status(state, key) == "training", 600, "training to start", 0.5)
    child = wait_for(lambda: worker_of(proc.pid), 60, "the training child", 0.2)
    return proc, state, key, child


@pytest.mark.slow
def test_sigterm_during_training_interrupts_the_run_and_exits_0(
    demo_workspace: Path, tmp_path: Path, daemons: Daemons
) -> None:
    proc, state, key, (child_pid, child_pgid) = _start_training(demo_workspace, tmp_path, daemons)
    registry = Registry.open(state)
    champion_before = registry.champion()
    current_before = current_target(state)
    time.sleep(2)  # let it train a little

    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    wait_for(lambda: not group_alive(child_pgid), STOP_GRACE_S + 10, "the child's process group to end")
    assert proc.wait(timeout=60) == 0
    elapsed = time.monotonic() - t0
    assert elapsed < STOP_GRACE_S + 30

    run = registry.night_run(key)
    assert run is not None and run.status == "interrupted"
    assert "SIGTERM" in (run.failure_reason or "")
    after = registry.champion()
    assert (after[1].id if after else None) == (champion_before[1].id if champion_before else None)
    assert current_target(state) == current_before
    assert not (state / PIDFILE_NAME).exists()


@pytest.mark.slow
def test_kill_9_of_the_daemon_leaves_no_child_and_the_next_start_recovers(
    demo_workspace: Path, tmp_path: Path, daemons: Daemons
) -> None:
    proc, state, key, (child_pid, child_pgid) = _start_training(demo_workspace, tmp_path, daemons)
    proc.kill()
    proc.wait()
    # the worker notices its parent is gone and exits by itself
    wait_for(lambda: not group_alive(child_pgid), 60, "the orphaned child to exit")
    assert run_status(state, key) == "training"  # nobody was left to record the end

    # the next start marks it interrupted and can run again (a new night, a few seconds ahead)
    schedule, next_key = slow_schedule(6)
    raw = yaml.safe_load((tmp_path / "nightshift.yaml").read_text())
    raw["schedule"].update(schedule)
    (tmp_path / "nightshift.yaml").write_text(yaml.safe_dump(raw))
    again = daemons.start(tmp_path / "nightshift.yaml")
    started(state, again)
    run = Registry.open(state).night_run(key)
    assert run is not None and run.status == "interrupted"
    wait_for(lambda: run_status(state, next_key) == "training", 600, "the next night to train", 0.5)
    again.terminate()
    assert again.wait(timeout=60) == 0
    assert run_status(state, next_key) == "interrupted"


@pytest.mark.slow
def test_two_concurrent_run_now_one_trains_the_other_names_it(
    demo_workspace: Path, tmp_path: Path, daemons: Daemons
) -> None:
    from daemon.lock import read_lock_holder

    config = demo_config(demo_workspace, tmp_path, dict(IDLE_SCHEDULE), training={"iters": 200_000})
    state = tmp_path / "state"
    first = subprocess.Popen(
        [*nightshift_cmd(), "--run-now", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    daemons.procs.append(first)
    holder = wait_for(
        lambda: (h := read_lock_holder(state)) and h.get("run_id") is not None and h, 600, "the first run to take the lock", 0.2
    )
    assert holder["pid"] == first.pid
    wait_for(lambda: worker_of(first.pid), 600, "the first run to train", 0.5)

    t0 = time.monotonic()
    second = subprocess.run(
        [*nightshift_cmd(), "--run-now", "--config", str(config)], capture_output=True, text=True, timeout=120
    )
    assert time.monotonic() - t0 < 60  # refused at once, not after waiting
    assert second.returncode != 0
    assert f"run {holder['run_id']}, pid {first.pid}" in second.stderr
    assert second.stderr.startswith("Error:")
    assert [r.id for r in Registry.open(state).runs()] == [holder["run_id"]]  # the second created no run

    child = worker_of(first.pid)
    first.kill()
    first.wait()
    if child is not None:
        wait_for(lambda: not group_alive(child[1]), 60, "the orphaned child to exit")
