"""Stops honoured: judge commands in their own group, killed on stop and when
nightshift dies (issue 9, defect 3)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

import pytest

from daemon import shutdown
from daemon.errors import Interrupted
from daemon.scoring import CommandJudge

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]


def hanging_judge(pidfile: Path) -> list[str]:
    """A judge command that records its pid and hangs."""
    return ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 300"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


def wait_for(predicate, limit_s: float = 20.0) -> bool:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_stop_kills_a_hanging_judge_command(tmp_path: Path, fault) -> None:
    """SIGTERM while judges hang took 91 s: a judge wait now honours the stop."""
    pidfile = tmp_path / "judge.pid"
    judge = CommandJudge(hanging_judge(pidfile), timeout_s=600, retries=0)
    with fault("stop while a judge command hangs"):
        threading.Timer(0.5, lambda: wait_for(pidfile.exists) and shutdown.request_stop("received SIGTERM")).start()
        with pytest.raises(Interrupted, match="SIGTERM"):
            judge.complete("grade this")
        pid = int(pidfile.read_text())
        assert wait_for(lambda: not alive(pid), 5.0)


def test_cancel_kills_judges_in_flight(tmp_path: Path, fault) -> None:
    """After a judge error the CLI lingered 95 s: the other calls in flight are killed."""
    pidfile = tmp_path / "judge.pid"
    judge = CommandJudge(hanging_judge(pidfile), timeout_s=600, retries=0)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            judge.complete("x")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    with fault("evaluation ends with a judge in flight"):
        t = threading.Thread(target=call)
        t.start()
        assert wait_for(pidfile.exists)
        judge.cancel()
        t.join(10)
        assert not t.is_alive() and isinstance(errors[0], Interrupted)
        assert wait_for(lambda: not alive(int(pidfile.read_text())), 5.0)
        # the judge still works for a later evaluation
        ok = CommandJudge(["sh", "-c", "cat >/dev/null; echo 5"], timeout_s=30, retries=0)
        ok.cancel()
        assert ok.complete("x").strip() == "5"


def test_kill_9_of_nightshift_leaves_no_judge_behind(tmp_path: Path, fault) -> None:
    """A kill -9 of the parent left 4 judge processes with ppid 1."""
    pidfile = tmp_path / "judge.pid"
    script = (
        "import sys; from daemon.scoring import CommandJudge; "
        f"CommandJudge({hanging_judge(pidfile)!r}, timeout_s=600, retries=0).complete('x')"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        with fault("kill -9 of nightshift while a judge runs"):
            assert wait_for(pidfile.exists, 60)
            pid = int(pidfile.read_text())
            parent.send_signal(signal.SIGKILL)
            parent.wait()
            assert wait_for(lambda: not alive(pid), 10.0), "the judge command outlived nightshift"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_judge_wait_honours_a_stop(fault) -> None:
    """A stop was only checked while a child ran: waiting for judges ignored it."""
    from daemon.evaluate import _judge_result

    never: Future = Future()
    with fault("stop while waiting for a judge result"):
        threading.Timer(0.3, shutdown.request_stop, args=("received SIGTERM",)).start()
        with pytest.raises(Interrupted, match="waiting for a judge"):
            _judge_result(never)


def test_missing_judge_command_is_still_a_clear_error() -> None:
    from daemon.errors import EvaluationFailed

    with pytest.raises(EvaluationFailed, match="cannot be started.*judge.command"):
        CommandJudge(["no-such-judge-program-xyz"], timeout_s=10, retries=0).complete("x")


@contextmanager
def hanging_http_server() -> Iterator[str]:
    """A local HTTP judge that accepts connections, reads the request and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.1)
    conns: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        done.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()


def test_stop_abandons_a_hanging_http_judge_call(fault) -> None:
    """An in-flight HTTP judge call waited its whole timeout (600 s here) after a stop."""
    from daemon.scoring import HttpJudge

    errors: list[BaseException] = []
    with hanging_http_server() as url, fault("stop while an HTTP judge hangs"):
        judge = HttpJudge(url, "m", timeout_s=600, retries=0)

        def call() -> None:
            try:
                judge.complete("grade this")
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        t = threading.Thread(target=call, daemon=True)
        t.start()
        threading.Timer(0.5, shutdown.request_stop, args=("received SIGTERM",)).start()
        t.join(10)
        assert not t.is_alive(), "the judge call ignored the stop"
        assert isinstance(errors[0], Interrupted) and "SIGTERM" in str(errors[0])


@pytest.mark.slow
def test_sigterm_with_a_hanging_http_judge_exits_within_the_grace(fault) -> None:
    """SIGTERM while an HTTP judge hangs: the process exits at once, not after the judge's timeout."""
    script = (
        "import sys, concurrent.futures\n"
        "from daemon.errors import Interrupted\n"
        "from daemon.evaluate import _judge_result\n"
        "from daemon.scheduler import install_signal_handlers\n"
        "from daemon.scoring import HttpJudge\n"
        "install_signal_handlers()\n"
        "judge = HttpJudge(sys.argv[1], 'm', timeout_s=600, retries=0)\n"
        "pool = concurrent.futures.ThreadPoolExecutor(2)\n"  # as JudgeCalls runs them
        "future = pool.submit(judge.complete, 'x')\n"
        "print('ready', flush=True)\n"
        "try:\n"
        "    _judge_result(future)\n"
        "except Interrupted:\n"
        "    pool.shutdown(wait=False, cancel_futures=True)\n"
        "    judge.cancel()\n"
        "    sys.exit(130)\n"
    )
    grace_s = 5.0
    with hanging_http_server() as url, fault("SIGTERM of a process waiting on a hanging HTTP judge"):
        proc = subprocess.Popen([sys.executable, "-c", script, url], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            time.sleep(0.5)  # the call is in flight
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=grace_s + 10) == 130
            assert time.monotonic() - started < grace_s
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
