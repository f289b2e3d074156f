"""Serving hand-off pieces with real processes and a real local HTTP server (no mlx).

The stand-in server (``STUB_SERVER``) is a small stdlib HTTP server that answers
``/health`` and ``/v1/chat/completions`` with the content of a file chosen by
its command line, so a test controls which "model" it serves. The real
mlx-lm server runs in ``tests/integration/test_serving.py`` (slow).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from daemon.config import config_from_dict
from daemon.errors import ConfigError, HandoffFailed
from daemon.serving.hook import run_reload_hook
from daemon.serving.leftover import PID_FILE, process_identity
from daemon.serving.probes import Probe, ProbeOutcome, run_probes, select_probes
from daemon.serving.server import (
    Supervisor,
    check_health,
    read_server_state,
    render_command,
    server_env,
    supervisor_alive,
)
from daemon.suite import load_suite

STUB_SERVER = r'''
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
replies = json.load(open(sys.argv[2]))  # {"user prompt": "reply"}
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def do_GET(self):
        self._send(200, {"status": "ok"}) if self.path == "/health" else self._send(404, {})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = replies.get(body["messages"][-1]["content"], "?")
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def _cfg(tmp_path: Path, **serving: object):
    (tmp_path / "base").mkdir(exist_ok=True)
    return config_from_dict(
        {"paths": {"base_model": "base", "state_dir": "state", "eval_suite": "suite.yaml"}, "serving": serving},
        base_dir=tmp_path,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ config


def test_serving_url_that_is_not_http_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _cfg(tmp_path, url="ftp://127.0.0.1:8080")
    assert "serving.url: must be an http:// or https:// URL, got 'ftp://127.0.0.1:8080'" in str(err.value)


def test_command_mode_needs_hook_and_url_and_placeholders_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _cfg(tmp_path, mode="command", command=["{python}", "{modle}"])
    text = str(err.value)
    assert "serving.reload_command: required" in text and "serving.url: required" in text
    assert "serving.command[1]: unknown placeholder {modle}" in text


def test_default_command_is_mlx_lm_server_on_the_resolved_release(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, mode="managed")
    release = str(tmp_path / "state" / "releases" / "run-0002")
    argv = render_command(cfg, release, 8123)
    assert argv[:3] == [sys.executable, "-m", "mlx_lm.server"]
    assert argv[argv.index("--adapter-path") + 1] == release
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[-1] == "8123"
    assert "--adapter-path" not in render_command(cfg, "", 8123)  # the base model alone


def test_template_needing_a_fused_model_refuses_a_release_without_one(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, mode="managed", command=["server", "--model", "{fused}", "--port", "{port}"])
    release = tmp_path / "run-0003"
    release.mkdir()
    with pytest.raises(HandoffFailed, match=r"has no fused model; set promotion.fuse: true"):
        render_command(cfg, str(release), 9000)
    (release / "model").mkdir()
    assert render_command(cfg, str(release), 9000) == ["server", "--model", str(release / "model"), "--port", "9000"]


def test_managed_server_gets_an_existing_hub_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # mlx_lm.server answers an empty GET /v1/models when the hub cache dir does not exist
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "missing"))
    env = server_env(tmp_path / "state")
    assert Path(env["HF_HUB_CACHE"]).is_dir()


# ------------------------------------------------------------------ probes


SUITE = """
categories:
  - name: greedy
    kind: label
    labels: [positive, negative]
    system_prompt: Answer with one word.
    max_tokens: 3
    items:
      - {id: a, prompt: "one", gold: positive}
      - {id: b, prompt: "two", gold: negative}
      - {id: c, prompt: "three", gold: positive}
  - name: sampled
    kind: label
    labels: [positive, negative]
    temperature: 0.7
    items:
      - {id: z, prompt: "four", gold: positive}
"""


def _rows(replies: dict[tuple[str, str], str]) -> list[SimpleNamespace]:
    return [SimpleNamespace(category=c, item_id=i, sample=0, reply=r) for (c, i), r in replies.items()]


def test_probes_use_greedy_items_with_eval_messages_distinguishing_first(tmp_path: Path) -> None:
    (tmp_path / "suite.yaml").write_text(SUITE)
    suite = load_suite(tmp_path / "suite.yaml")
    new = _rows({("greedy", "a"): "positive", ("greedy", "b"): "negative", ("greedy", "c"): "positive", ("sampled", "z"): "x"})
    old = _rows({("greedy", "a"): "positive", ("greedy", "b"): "positive", ("greedy", "c"): "positive"})
    probes = select_probes(suite, new, old, count=2, default_max_tokens=9)
    assert probes[0].item_id == "b" and probes[0].distinguishing  # the one that tells them apart
    assert all(p.category == "greedy" for p in probes)  # sampled replies are not reproducible
    assert probes[0].messages == [
        {"role": "system", "content": "Answer with one word."},
        {"role": "user", "content": "two"},
    ]
    assert probes[0].max_tokens == 3


def test_verdict_names_the_release_or_says_the_old_one_is_still_served() -> None:
    ok = ProbeOutcome(total=16, matched=16, distinguishing=10, matched_distinguishing=10)
    assert ok.verdict("run-0007", "run-0006", 0.9) == "served = run-0007: 16/16 probes identical"
    stale = ProbeOutcome(total=16, matched=6, distinguishing=10, matched_distinguishing=0, matched_other=10)
    assert not stale.passed(0.9)
    assert stale.verdict("run-0007", "run-0006", 0.9).startswith("the server still serves run-0006")
    # a high overall share must not hide that the distinguishing probes point at the old model
    mostly_same = ProbeOutcome(total=16, matched=15, distinguishing=1, matched_distinguishing=0, matched_other=1)
    assert not mostly_same.passed(0.9)


# ------------------------------------------------------------------ real processes


def _stub(tmp_path: Path, replies: dict[str, str], name: str) -> Path:
    (tmp_path / "stub.py").write_text(STUB_SERVER)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(replies))
    return path


def test_run_probes_against_a_real_http_server(tmp_path: Path) -> None:
    port = _free_port()
    replies = _stub(tmp_path, {"one": "positive", "two": "negative"}, "r")
    proc = subprocess.Popen([sys.executable, str(tmp_path / "stub.py"), str(port), str(replies)])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while check_health(url, 1.0) is not None:
            assert time.monotonic() < deadline, "stub server did not start"
            time.sleep(0.05)
        probes = [
            Probe("g", "a", [{"role": "user", "content": "one"}], 3, expected="positive", other="negative"),
            Probe("g", "b", [{"role": "user", "content": "two"}], 3, expected="positive", other="negative"),
        ]
        out = run_probes(url, probes, model=None, timeout_s=5)
        assert (out.total, out.matched, out.matched_other) == (2, 1, 1)
        assert out.mismatches[0]["served"] == "negative"
    finally:
        proc.kill()
        proc.wait()


def test_supervisor_follows_current_and_stops_its_server(tmp_path: Path) -> None:
    replies_a = _stub(tmp_path, {"one": "A"}, "a")
    cfg = _cfg(
        tmp_path, mode="managed", port=0, health_timeout_s=20,
        command=["{python}", str(tmp_path / "stub.py"), "{port}", "{release}/replies.json"],
    )
    state = cfg.paths.state_dir
    rel_a = state / "releases" / "run-0001"
    rel_b = state / "releases" / "run-0002"
    for rel, reply in ((rel_a, "A"), (rel_b, "B")):
        rel.mkdir(parents=True)
        (rel / "replies.json").write_text(json.dumps({"one": reply}))
    assert replies_a.exists()
    os.symlink("releases/run-0001", state / "current")
    sup = Supervisor(cfg)
    sup.start()
    try:
        assert supervisor_alive(state)
        with pytest.raises(HandoffFailed, match="already runs"):
            Supervisor(cfg).start()  # one supervisor per state dir

        def served() -> str:
            probe = Probe("g", "a", [{"role": "user", "content": "one"}], 3, expected="B")
            out = run_probes(sup.url, [probe], model=None, timeout_s=5)
            return "B" if out.matched else "not B"

        def wait_running(release: Path) -> dict:
            deadline = time.monotonic() + 30
            while True:
                st = read_server_state(state) or {}
                if st.get("state") == "running" and st.get("release") == str(release.resolve()):
                    return st
                assert st.get("state") != "failed", st
                assert time.monotonic() < deadline, st
                time.sleep(0.05)

        first = wait_running(rel_a)
        assert served() == "not B"
        os.replace(_link(state, "releases/run-0002"), state / "current")  # the promotion's swap
        second = wait_running(rel_b)
        assert served() == "B" and second["pid"] != first["pid"]
        pid = second["pid"]
        # the running server is recorded (pid + start time/command line) for leftover recovery
        record = json.loads((state / "serving" / PID_FILE).read_text())
        assert record["pid"] == pid and record["identity"] == process_identity(pid)
    finally:
        sup.stop()
    assert not supervisor_alive(state)
    assert not (state / "serving" / PID_FILE).exists()  # forgotten once stopped
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # nothing left running
    assert (read_server_state(state) or {})["state"] == "stopped"


def _link(state: Path, target: str) -> Path:
    tmp = state / ".current.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    return tmp


def test_missing_server_command_fails_with_its_name(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, mode="managed", port=0, command=["no-such-server-xyz", "--port", "{port}"])
    with Supervisor(cfg):
        deadline = time.monotonic() + 10
        while (st := read_server_state(cfg.paths.state_dir) or {}).get("state") != "failed":
            assert time.monotonic() < deadline, st
            time.sleep(0.05)
    assert "cannot start the server command 'no-such-server-xyz'" in st["error"]


def test_busy_port_fails_before_starting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = _cfg(tmp_path, mode="managed", port=port, command=["{python}", "-c", "pass"])
        with Supervisor(cfg):
            deadline = time.monotonic() + 10
            while (st := read_server_state(cfg.paths.state_dir) or {}).get("state") != "failed":
                assert time.monotonic() < deadline, st
                time.sleep(0.05)
    assert f"port {port} on 127.0.0.1 is already in use" in st["error"]


def test_reload_hook_gets_the_release_and_fails_on_exit_status_or_timeout(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    cfg = _cfg(
        tmp_path, mode="command", url="http://127.0.0.1:1",
        reload_command=f'echo "$NIGHTSHIFT_RELEASE|$NIGHTSHIFT_RUN_ID|$NIGHTSHIFT_BASE_MODEL" > {out}',
    )
    run_reload_hook(cfg, "/r/run-0004", 4)
    assert out.read_text().strip() == f"/r/run-0004|4|{tmp_path / 'base'}"
    failing = _cfg(tmp_path, mode="command", url="http://127.0.0.1:1", reload_command="exit 3")
    with pytest.raises(HandoffFailed, match=r"serving.reload_command 'exit 3' exited with status 3"):
        run_reload_hook(failing, "/r", 1)
    hanging = _cfg(tmp_path, mode="command", url="http://127.0.0.1:1", reload_command="sleep 30", reload_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(HandoffFailed, match=r"did not finish within 1 s and was stopped"):
        run_reload_hook(hanging, "/r", 1)
    assert time.monotonic() - started < 20


def test_pause_during_training_stops_the_server_and_brings_it_back(tmp_path: Path) -> None:
    from daemon.serving.handoff import paused_server

    _stub(tmp_path, {"one": "A"}, "a")
    cfg = _cfg(
        tmp_path, mode="managed", port=0, health_timeout_s=20, pause_during_training=True,
        command=["{python}", str(tmp_path / "stub.py"), "{port}", str(tmp_path / "a.json")],
    )
    state = cfg.paths.state_dir

    def wait_for(want: str) -> dict:
        deadline = time.monotonic() + 30
        while (st := read_server_state(state) or {}).get("state") != want:
            assert time.monotonic() < deadline, st
            time.sleep(0.05)
        return st

    with Supervisor(cfg) as sup:
        pid = wait_for("running")["pid"]
        with paused_server(cfg, run_id=3):
            assert read_server_state(state)["state"] == "paused"  # paused before training starts
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
            assert check_health(sup.url, 1.0) is not None
        wait_for("running")
        assert check_health(sup.url, 1.0) is None


def test_a_server_that_dies_is_restarted_after_a_backoff(tmp_path: Path) -> None:
    _stub(tmp_path, {"one": "A"}, "a")
    cfg = _cfg(
        tmp_path, mode="managed", port=0, health_timeout_s=20, restart_backoff_s=0.5,
        command=["{python}", str(tmp_path / "stub.py"), "{port}", str(tmp_path / "a.json")],
    )
    state = cfg.paths.state_dir
    with Supervisor(cfg) as sup:
        deadline = time.monotonic() + 30
        while (st := read_server_state(state) or {}).get("state") != "running":
            assert time.monotonic() < deadline, st
            time.sleep(0.05)
        os.kill(st["pid"], 9)
        seen_failed = False
        while (now := read_server_state(state) or {}).get("state") != "running" or now["pid"] == st["pid"]:
            seen_failed = seen_failed or (now.get("state") == "failed" and "restarting in 0.5 s" in now["error"])
            assert time.monotonic() < deadline + 30, now
            time.sleep(0.02)
        assert seen_failed and check_health(sup.url, 1.0) is None
