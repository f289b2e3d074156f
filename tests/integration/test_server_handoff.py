"""Serving hand-off with a real mlx_lm.server on the demo's tiny model (slow: whole nights)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from daemon.serving.server import check_health

pytestmark = pytest.mark.slow


def nightshift(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, timeout=900)


def add_serving(ws: Path, text: str) -> Path:
    """Replace the demo config's ``serving`` section with ``text`` (its indented body)."""
    import yaml

    cfg = ws / "nightshift.yaml"
    data = yaml.safe_load(cfg.read_text())
    data["serving"] = yaml.safe_load("serving:\n" + text)["serving"]
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    return cfg


def server_processes(ws: Path) -> list[str]:
    ps = subprocess.run(["ps", "-ww", "-eo", "stat=,args="], capture_output=True, text=True, check=True)
    return [
        line for line in ps.stdout.splitlines()
        if "mlx_lm.server" in line and str(ws) in line and not line.lstrip().startswith("Z")
    ]


def champion_and_current(state: Path) -> tuple[str, str | None]:
    con = sqlite3.connect(state / "registry.sqlite")
    try:
        release = con.execute("select release_path from promotions order by id desc limit 1").fetchone()[0]
    finally:
        con.close()
    link = os.readlink(state / "current") if (state / "current").is_symlink() else None
    return Path(release).name if release else "", Path(link).name if link else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_managed_handoff_verified_then_rollback_end_to_end(demo_workspace: Path) -> None:
    cfg = add_serving(demo_workspace, "  mode: managed\n  port: 0\n  probes: 12\n")
    state = demo_workspace / "state"
    night = nightshift("-c", str(cfg), "--run-now")
    assert night.returncode == 0, night.stderr
    assert "run 1: promoted" in night.stdout
    report = (state / "reports" / "run-0001.md").read_text()
    assert "- hand-off: verified (managed, http\\://127.0.0.1:" in report
    assert "s): served = run-0001: 12/12 probes identical" in report
    assert "| handoff | ok |" in report and "| promoting | ok |" in report
    assert server_processes(demo_workspace) == []  # the night's server stopped with the night
    status = json.loads(nightshift("-c", str(cfg), "status", "--json").stdout)
    assert status["serving"]["last_verified"]["verdict"] == "served = run-0001: 12/12 probes identical"
    assert status["serving"]["last_verified"]["run_id"] == 1

    back = nightshift("-c", str(cfg), "rollback", "--by", "ops", "--reason", "smoke test")
    assert back.returncode == 0, back.stderr
    assert "served = the base model: 12/12 probes identical" in back.stdout
    assert champion_and_current(state) == ("", None)
    forward = nightshift("-c", str(cfg), "rollback", "--to", "1")
    assert forward.returncode == 0, forward.stderr
    assert "served = run-0001: 12/12 probes identical" in forward.stdout
    assert champion_and_current(state) == ("run-0001", "run-0001")
    con = sqlite3.connect(state / "registry.sqlite")
    try:
        rows = con.execute("select decided_by, reason from promotions order by id").fetchall()
    finally:
        con.close()
    assert rows[1][0] == "ops" and "smoke test" in rows[1][1]
    releases = nightshift("-c", str(cfg), "releases").stdout
    assert "run-0001" in releases and "current" in releases
    assert server_processes(demo_workspace) == []


def test_hook_that_does_nothing_fails_verification_and_is_rolled_back(demo_workspace: Path, tmp_path: Path) -> None:
    # A real mlx_lm.server the operator runs on the base model; the hook never reloads it.
    port = free_port()
    hub = tmp_path / "no-hub-cache"  # does not exist: GET /v1/models answers an empty body
    env = {**os.environ, "HF_HUB_CACHE": str(hub)}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlx_lm.server", "--model", str(demo_workspace / "models" / "base"),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while check_health(url, 2.0) is not None:
            assert time.monotonic() < deadline and server.poll() is None, "mlx_lm.server did not start"
            time.sleep(0.2)
        assert httpx.get(url + "/v1/models", timeout=10).text == ""  # the empty listing, yet /health works
        cfg = add_serving(
            demo_workspace,
            f"  mode: command\n  url: {url}\n  reload_command: 'true'\n  probes: 12\n",
        )
        night = nightshift("-c", str(cfg), "--run-now")
        assert night.returncode == 1
        assert "run 1: rolled back: hand-off of run-0001 failed:" in night.stdout
        error = night.stderr.strip().splitlines()[-1]  # progress lines come before it
        assert error == "Error: run 1 was promoted, then rolled back (the reason is on the line above and in the report)"
        assert "the server still serves the base model" in night.stdout and url in night.stdout
        assert night.stdout.count("the server still serves the base model") == 1  # the reason once, no log lines
        assert "handoff_failed" not in night.stderr
        state = demo_workspace / "state"
        assert champion_and_current(state) == ("", None)  # champion and current agree: the base model
        report = (state / "reports" / "run-0001.md").read_text()
        assert report.splitlines()[2].startswith("**rolled back: hand-off of run-0001 failed:")
        assert "- rollback hand-off: verified (command" in report and "served = the base model" in report
        assert "- hand-off: NOT verified (command" in report and "the server still serves the base model" in report
        con = sqlite3.connect(state / "registry.sqlite")
        try:
            promos = con.execute("select decided_by, reason from promotions order by id").fetchall()
        finally:
            con.close()
        assert [p[0] for p in promos] == ["auto", "rollback"]
        assert "the server still serves the base model" in promos[1][1]
    finally:
        os.killpg(server.pid, 9)
        server.wait()


def test_real_server_does_not_outlive_a_kill_9_of_nightshift_serve(demo_workspace: Path) -> None:
    """Defect: the managed mlx_lm.server (own session) outlived a kill -9 of its supervisor."""
    from daemon.serving.server import read_server_state

    cfg = add_serving(demo_workspace, "  mode: managed\n  port: 0\n")
    state = demo_workspace / "state"
    serve = subprocess.Popen(
        [sys.executable, "-m", "daemon", "-c", str(cfg), "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while (st := read_server_state(state) or {}).get("state") != "running":
            assert serve.poll() is None and time.monotonic() < deadline, st
            time.sleep(0.2)
        assert check_health(st["url"], 5.0) is None and server_processes(demo_workspace)
    finally:
        serve.kill()
        serve.wait()
    status = nightshift("-c", str(cfg), "status")  # recovery stops a leftover (Linux: the parent-death signal did)
    assert status.returncode == 0, status.stderr
    deadline = time.monotonic() + 30
    while server_processes(demo_workspace) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server_processes(demo_workspace) == []
    assert not (state / "serving" / "server.pid.json").exists()


def test_busy_port_during_the_handoff_rolls_the_promotion_back(
    demo_workspace: Path, write_config: Callable[..., Path]
) -> None:
    """Issue 13: a managed server that cannot bind its port ends in a rolled-back promotion naming the port.

    Preflight refuses a port that is busy before the night, so the port is taken after it:
    the night waits for approval, another program takes the port, then ``approve`` hands off.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_config(policy="manual")
    cfg = add_serving(demo_workspace, f"  mode: managed\n  port: {port}\n  health_timeout_s: 30\n")
    night = nightshift("-c", str(cfg), "--run-now")
    assert night.returncode == 0 and "run 1: awaiting approval" in night.stdout, night.stderr
    with socket.socket() as busy:  # another program holds the configured port
        busy.bind(("127.0.0.1", port))
        busy.listen()
        approved = nightshift("-c", str(cfg), "approve", "1")
        assert approved.returncode == 1, approved.stderr
        assert "run 1: rolled back" in approved.stdout, approved.stdout
        error = approved.stderr.strip().splitlines()[-1]
        assert error.startswith("Error: run 1 was promoted, then rolled back")
        assert f"port {port} on 127.0.0.1 is already in use" in approved.stdout
        state = demo_workspace / "state"
        assert champion_and_current(state) == ("", None)  # the base model again; current removed
        con = sqlite3.connect(state / "registry.sqlite")
        try:
            status, reason = con.execute("select status, failure_reason from runs where id = 1").fetchone()
        finally:
            con.close()
        assert status == "rolled_back" and f"port {port}" in reason and "\n" not in reason
        assert server_processes(demo_workspace) == []  # nothing left running
        assert not (state / "serving" / "server.pid.json").exists()
