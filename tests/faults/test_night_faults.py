"""Whole nights killed at every stage boundary and promotion step (issue 9: the fault suite).

Each case runs the real ``nightshift --run-now`` on the demo workspace (tiny
model, real mlx-lm children), kills it with SIGKILL at a named point
(:mod:`daemon.faults`), then checks that nothing was lost: champion ==
``current``, ``current`` loadable, the run recorded with its reason, no
process left, ``PRAGMA integrity_check`` ok, and a following night completes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.faults import ACTION_ENV, FAULT_ENV, POINTS, READY_ENV
from daemon.registry import RunStatus
from tests.faults.state import assert_consistent

pytestmark = [pytest.mark.faults, pytest.mark.slow]

NIGHT_POINTS = POINTS  # every point the code declares


def nightshift(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "-c", str(config), *args],
        capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})},
    )


def leftover_processes(workspace: Path) -> list[str]:
    ps = subprocess.run(["ps", "-ww", "-eo", "stat=,args="], capture_output=True, text=True, check=True)
    return [ln for ln in ps.stdout.splitlines() if str(workspace) in ln and not ln.lstrip().startswith("Z")]


def no_process_left(workspace: Path) -> bool:
    end = time.monotonic() + 15  # children notice their parent's death within a poll (1 s)
    while leftover_processes(workspace) and time.monotonic() < end:
        time.sleep(0.2)
    return not leftover_processes(workspace)


@pytest.mark.parametrize("point", NIGHT_POINTS)
def test_kill_9_at_each_point_of_a_night(demo_workspace: Path, point: str, fault) -> None:
    config = demo_workspace / "nightshift.yaml"
    state = demo_workspace / "state"
    with fault(f"kill -9 of a night at {point}"):
        # The demo's first night promotes, so it passes every point.
        killed = nightshift(config, "--run-now", env={FAULT_ENV: point, ACTION_ENV: "kill"})
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert no_process_left(demo_workspace)
        status = nightshift(config, "status")  # opens the state: reconcile + dead-run marking
        assert status.returncode == 0, status.stderr
        reg = assert_consistent(state)
        run = reg.get_run(1)
        assert run.status in (RunStatus.INTERRUPTED.value, RunStatus.PROMOTED.value, RunStatus.REJECTED.value)
        if run.status == RunStatus.INTERRUPTED.value:
            assert run.failure_reason and "pid" in run.failure_reason
        if point == "handoff:verifying":  # killed while handing_off: the promotion was committed
            assert run.status == RunStatus.PROMOTED.value
            assert "handoff-interrupted" in [r.action for r in reg.recoveries()]
        reg.close()
        following = nightshift(config, "--run-now")
        assert following.returncode == 0, following.stderr
        assert_consistent(state).close()
        assert no_process_left(demo_workspace)


def test_sigterm_after_evaluation_does_not_promote(demo_workspace: Path, tmp_path: Path, fault) -> None:
    """Defect 3: a SIGTERM after the eval child ended still went on to decide and promote."""
    config = demo_workspace / "nightshift.yaml"
    state = demo_workspace / "state"
    ready = tmp_path / "ready"
    env = {**os.environ, FAULT_ENV: "stage:deciding", ACTION_ENV: "pause", READY_ENV: str(ready)}
    with fault("SIGTERM between evaluation and decision"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "-c", str(config), "--run-now"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        end = time.monotonic() + 900
        while not ready.exists() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.2)
        assert ready.exists(), proc.communicate()[1]
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        reg = assert_consistent(state)
        assert reg.champion() is None
        run = reg.get_run(1)
        assert run.status == RunStatus.INTERRUPTED.value and "SIGTERM" in (run.failure_reason or "")
        reg.close()
        assert no_process_left(demo_workspace)
