"""A managed server outliving a kill -9 of the nightshift process that supervised it (issue 9 + 13).

The managed server runs in a session of its own, so a ``kill -9`` of ``nightshift
serve``/``start`` used to leave it running, holding its port and memory, with
nothing that would ever stop it. The stand-in server here is the stdlib HTTP
server of ``tests/unit/test_serving.py``; one variant ignores SIGTERM (a hung
server), which also outlives Linux's parent-death signal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from daemon.registry import Registry
from daemon.serving.leftover import PID_FILE, process_identity, record_server, stop_leftover_server
from daemon.serving.server import check_health, free_port, read_server_state
from tests.unit.test_serving import STUB_SERVER

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
IGNORE_TERM = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"


def serve_workspace(tmp_path: Path, *, ignore_term: bool) -> tuple[Path, Path]:
    """A config whose managed server is the stand-in on a free port; returns (config, state dir)."""
    stub = tmp_path / "stub.py"
    stub.write_text((IGNORE_TERM if ignore_term else "") + STUB_SERVER)
    served = tmp_path / "served.json"
    served.write_text(json.dumps({}))
    state = tmp_path / "state"
    config = tmp_path / "nightshift.yaml"
    config.write_text(yaml.safe_dump({
        "paths": {"state_dir": str(state)},
        "serving": {
            "mode": "managed", "port": free_port("127.0.0.1"), "stop_grace_s": 0.5, "health_timeout_s": 30,
            "command": ["{python}", str(stub), "{port}", str(served)],
        },
    }))
    return config, state


def serve_then_kill_9(config: Path, state: Path) -> int:
    """Start ``nightshift serve``, wait until its server is healthy, kill -9 it; returns the server's pid."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "-c", str(config), "serve"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while (st := read_server_state(state) or {}).get("state") != "running":
            assert proc.poll() is None and time.monotonic() < deadline, (st, proc.poll())
            time.sleep(0.05)
        pid = int(st["pid"])
        assert check_health(st["url"], 2.0) is None
    finally:
        proc.kill()
        proc.wait()
    return pid


def gone(pid: int, identity: str | None, wait_s: float = 5.0) -> bool:
    deadline = time.monotonic() + wait_s
    while process_identity(pid) == identity and time.monotonic() < deadline:
        time.sleep(0.05)
    return process_identity(pid) != identity


@pytest.mark.slow
def test_server_left_by_a_killed_serve_is_stopped_by_the_next_command(tmp_path: Path, fault) -> None:
    """Defect: a kill -9 of `nightshift serve` left its managed server running forever."""
    config, state = serve_workspace(tmp_path, ignore_term=True)
    with fault("kill -9 of nightshift serve (server ignores SIGTERM)"):
        pid = serve_then_kill_9(config, state)
        identity = process_identity(pid)
        assert identity is not None and (state / "serving" / PID_FILE).exists()
        time.sleep(0.3)
        assert process_identity(pid) == identity  # outlived its supervisor (and the parent-death SIGTERM)
        status = subprocess.run(
            [sys.executable, "-m", "daemon", "-c", str(config), "status"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert status.returncode == 0, status.stderr
        assert gone(pid, identity, wait_s=1.0)
        assert not (state / "serving" / PID_FILE).exists()
        reg = Registry.open(state)
        rows = [(r.action, r.detail) for r in reg.recoveries()]
        reg.close()
        assert [a for a, _ in rows] == ["server-stopped"]
        assert f"pid {pid}" in rows[0][1] and "stub.py" in rows[0][1]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_server_gets_sigterm_when_its_supervisor_is_killed(tmp_path: Path, fault) -> None:
    """Linux: the parent-death signal stops the server with its supervisor, before any recovery runs."""
    config, state = serve_workspace(tmp_path, ignore_term=False)
    with fault("kill -9 of nightshift serve (parent-death signal)"):
        pid = serve_then_kill_9(config, state)
        assert gone(pid, process_identity(pid) or "?")


def test_a_recorded_pid_that_another_program_reuses_is_left_alone(tmp_path: Path) -> None:
    """Only a verifiably-ours server is killed: same pid, other start time/command line -> untouched."""
    serving = tmp_path / "serving"
    serving.mkdir()
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        record_server(serving, other.pid, ["python", "-m", "mlx_lm.server"])
        record = json.loads((serving / PID_FILE).read_text())
        record["identity"] = "12345 python -m mlx_lm.server"  # what the dead server looked like
        (serving / PID_FILE).write_text(json.dumps(record))
        assert stop_leftover_server(serving, 0.1) is None
        assert other.poll() is None  # still running
        assert not (serving / PID_FILE).exists()
    finally:
        other.kill()
        other.wait()


def test_a_leftover_is_stopped_with_sigkill_by_recovery_and_recorded(tmp_path: Path) -> None:
    """A hung leftover server (SIGTERM ignored) is killed after the grace period and the repair recorded."""
    from daemon.config import config_from_dict
    from daemon.recovery import recover_state

    state = tmp_path / "state"
    cfg = config_from_dict({"paths": {"state_dir": str(state)}, "serving": {"stop_grace_s": 0.2}}, base_dir=tmp_path)
    serving = state / "serving"
    serving.mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", IGNORE_TERM + "import time; print('up', flush=True); time.sleep(60)"],
        start_new_session=True, stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # the handler is installed
        record_server(serving, proc.pid, ["stand-in"])
        reg = Registry.open(state)
        actions = recover_state(cfg, reg)
        assert [a.action for a in actions] == ["server-stopped"] and f"pid {proc.pid}" in actions[0].detail
        assert [r.action for r in reg.recoveries()] == ["server-stopped"]
        reg.close()
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert not (serving / PID_FILE).exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
