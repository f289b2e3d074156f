"""Notifications at the end of a night: a real local HTTP server, a command hook, osascript."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from daemon.config import NotifyConfig
from daemon.notify import last_notice_status, notify_run
from daemon.registry import Registry
from daemon.status import render_status
from tests.unit.report_nights import make_config, make_night


class _Hook:
    """A local HTTP server recording JSON POSTs; answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        received: list[dict] = []
        self.received = received
        code = status

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"path": self.path, "type": self.headers["Content-Type"], "body": json.loads(body)})
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"ok" if code < 300 else b"no such channel")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/night"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def hook() -> Iterator[_Hook]:
    h = _Hook()
    yield h
    h.close()


@pytest.fixture()
def night(tmp_path: Path) -> Iterator[tuple]:
    cfg = make_config(tmp_path / "state")
    reg = Registry.open(cfg.paths.state_dir)
    yield cfg, reg
    reg.close()


def test_webhook_reaches_a_real_http_server(night: tuple, hook: _Hook) -> None:
    cfg, reg = night
    rid = make_night(cfg, reg, "promoted")
    cfg = replace(cfg, notify=NotifyConfig(webhook_url=hook.url, webhook_topic="nights"))
    report = cfg.paths.state_dir / "reports" / "run-0001.md"
    assert notify_run(cfg, reg, rid, report) == [{"channel": "webhook", "ok": True, "error": None}]
    (got,) = hook.received
    assert got["path"] == "/hooks/night" and got["type"] == "application/json"
    body = got["body"]
    assert body["text"] == body["message"].replace(">", "&gt;")  # Slack reads text (escaped), ntfy message
    assert body["topic"] == "nights" and body["outcome"] == "promoted" and body["run_id"] == rid
    assert body["message"].startswith("nightshift run 1: promoted: challenger beats champion by +0.3500 (95% lower bound +0.2421); all checks passed · composite 0.5000 -> 0.8500 (+0.3500) · ")
    assert body["message"].endswith(f"report: {report}")


def test_a_hostile_reason_cannot_make_a_slack_link(night: tuple, hook: _Hook) -> None:
    """Issue 9 defect 10 for notifications: `<url|label>` in a failure reason stays text in Slack."""
    cfg, reg = night
    rid = make_night(cfg, reg, "failed_preflight", hostile=True)
    reg.update_run(rid, failure_reason="judge: <javascript:alert(1)|click me> & more")
    cfg = replace(cfg, notify=NotifyConfig(webhook_url=hook.url))
    notify_run(cfg, reg, rid, None)
    body = hook.received[0]["body"]
    assert "&lt;javascript:alert(1)|click me&gt; &amp; more" in body["text"] and "<" not in body["text"]


def test_every_outcome_is_sent(night: tuple, hook: _Hook) -> None:
    cfg, reg = night
    cfg = replace(cfg, notify=NotifyConfig(webhook_url=hook.url))
    for outcome in ("failed_preflight", "interrupted", "awaiting_approval", "rejected", "rolled_back"):
        notify_run(cfg, reg, make_night(cfg, reg, outcome), None)
    assert [r["body"]["outcome"] for r in hook.received] == ["failed", "interrupted", "awaiting_approval", "rejected", "rolled_back"]
    rolled = hook.received[-1]["body"]
    assert rolled["message"].startswith("nightshift run 5: rolled back: hand-off of run-0005 failed: 2 of 4 probes differ")
    assert "composite 0.5000 -> 0.8500 (+0.3500)" in rolled["message"]
    assert "disk: 12 GB free" in hook.received[0]["body"]["reason"]


def test_a_failing_notifier_never_raises_and_shows_in_status(night: tuple, tmp_path: Path) -> None:
    cfg, reg = night
    broken = _Hook(status=404)
    try:
        cfg = replace(cfg, notify=NotifyConfig(webhook_url=broken.url, command=[str(tmp_path / "missing-hook")], timeout_s=5))
        results = notify_run(cfg, reg, make_night(cfg, reg, "rejected"), None)
    finally:
        broken.close()
    assert [(r["channel"], r["ok"]) for r in results] == [("webhook", False), ("command", False)]
    assert "HTTP 404" in results[0]["error"] and "not found" in results[1]["error"]
    recorded = last_notice_status(cfg.paths.state_dir)
    assert recorded is not None and recorded["results"] == results
    status = {"champion": None, "current": None, "last_run": None, "blas": "-", "notify": recorded}
    assert f"notify:     webhook FAILED for run 1: {results[0]['error']}" in render_status(status)


def test_command_hook_gets_json_and_environment(night: tuple, tmp_path: Path) -> None:
    cfg, reg = night
    out = tmp_path / "hook.json"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, os, sys\n"
        "body = json.load(sys.stdin)\n"
        "json.dump({'body': body, 'env': {k: v for k, v in os.environ.items() if k.startswith('NIGHTSHIFT_')}},"
        " open(sys.argv[1], 'w'))\n"
    )
    cfg = replace(cfg, notify=NotifyConfig(command=[sys.executable, str(script), str(out)]))
    rid = make_night(cfg, reg, "failed_training")
    assert notify_run(cfg, reg, rid, None)[0]["ok"]
    got = json.loads(out.read_text())
    assert got["body"]["outcome"] == "failed" and got["env"]["NIGHTSHIFT_OUTCOME"] == "failed"
    assert got["env"]["NIGHTSHIFT_RUN_ID"] == str(rid)
    assert "signal 9" in got["env"]["NIGHTSHIFT_MESSAGE"]


@pytest.mark.skipif(sys.platform == "darwin", reason="the real osascript would show a notification")
def test_macos_notification_passes_the_text_as_an_argument(night: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """osascript cannot run here: a fake on PATH records its argv (the only fake)."""
    cfg, reg = night
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "argv.json"
    fake = bindir / "osascript"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")
    cfg = replace(cfg, notify=NotifyConfig(macos=True))
    rid = make_night(cfg, reg, "interrupted")
    assert notify_run(cfg, reg, rid, None)[0]["ok"]
    argv = json.loads(record.read_text())
    assert argv[-2] == f"nightshift run {rid}" and argv[-1].startswith(f"nightshift run {rid}: interrupted")
    assert all('"' not in a for a in argv[:-2])  # the message never becomes AppleScript source


def test_notify_status_is_written_privately_and_never_through_a_planted_link(night: tuple, hook: _Hook, tmp_path: Path) -> None:
    """Issue 10/9 gap: notify.json was written with write_text + rename (umask mode, a planted
    `.notify.json.tmp` link followed); now through the state dir's safe writer."""
    import os

    cfg, reg = night
    cfg = replace(cfg, notify=NotifyConfig(webhook_url=hook.url))
    state = cfg.paths.state_dir
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (state / ".notify.json.tmp").symlink_to(victim)  # the old temp name
    old = os.umask(0o022)
    try:
        notify_run(cfg, reg, make_night(cfg, reg, "rejected"), None)
    finally:
        os.umask(old)
    assert victim.read_text() == "keep me"
    assert (state / "notify.json").stat().st_mode & 0o777 == 0o600
    assert last_notice_status(state)["results"][0]["ok"] is True  # type: ignore[index]
    # a link planted at notify.json itself is refused (logged), the target untouched, and never read
    (state / "notify.json").unlink()
    (state / "notify.json").symlink_to(victim)
    notify_run(cfg, reg, make_night(cfg, reg, "rejected"), None)
    assert victim.read_text() == "keep me" and last_notice_status(state) is None


def test_nightshift_rollback_is_notified(tmp_path: Path, hook: _Hook) -> None:
    """Issue 10 gap: `nightshift rollback` changed the champion without telling anyone."""
    from click.testing import CliRunner

    from daemon.cli import cli
    from daemon.registry import Registry

    (tmp_path / "nightshift.yaml").write_text(f"paths:\n  state_dir: state\nnotify:\n  webhook_url: {hook.url}\n")
    cfg = make_config(tmp_path / "state")
    reg = Registry.open(cfg.paths.state_dir)
    first = make_night(cfg, reg, "promoted")
    second = make_night(cfg, reg, "promoted")
    reg.close()
    result = CliRunner().invoke(cli, ["rollback", "-c", str(tmp_path / "nightshift.yaml"), "--by", "alice", "--reason", "replies got worse"])
    assert result.exit_code == 0, result.output
    (got,) = hook.received
    body = got["body"]
    assert body["outcome"] == "rolled_back" and body["run_id"] is None
    assert body["message"].startswith(
        "nightshift: rolled back to run-0001 by alice: replies got worse · composite 0.8500 -> 0.8500 (+0.0000) · report: "
    )
    report = Path(body["report"])
    assert report.stem == f"run-{second:04d}"  # the newest report, rewritten: it names the rollback
    text = report.with_suffix(".md").read_text()
    assert f"Since then: rolled back to run {first} at " in text and "by alice" in text
    assert last_notice_status(tmp_path / "state") == {"run_id": None, "at": last_notice_status(tmp_path / "state")["at"],  # type: ignore[index]
                                                     "results": [{"channel": "webhook", "ok": True, "error": None}]}


@pytest.mark.slow  # promotes, hands off and renders the HTML report (matplotlib)
def test_an_automatic_rollback_after_an_approval_is_notified(tmp_path: Path, hook: _Hook) -> None:
    """Issue 10 gap: a promotion whose hand-off failed and was rolled back is notified as
    `rolled back` with the reason (the same path as a night's promotion: promote_and_hand_off)."""
    from daemon.config import config_from_dict
    from daemon.pipeline import finish_manual_decision
    from daemon.registry import Registry

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapters.safetensors").write_bytes(b"\0" * 16)
    (adapter / "adapter_config.json").write_text("{}")
    cfg = config_from_dict(
        {"paths": {"state_dir": "state"}, "promotion": {"policy": "manual"},
         "serving": {"mode": "command", "url": "http://127.0.0.1:9", "reload_command": "exit 7"},
         "notify": {"webhook_url": hook.url}},
        base_dir=tmp_path,
    )  # fmt: skip
    reg = Registry.open(cfg.paths.state_dir)
    rid = make_night(cfg, reg, "awaiting_approval", adapter_dir=adapter)
    reg.close()
    assert finish_manual_decision(cfg, rid, approve=True, decided_by="alice") == "rolled_back"
    (got,) = hook.received
    body = got["body"]
    assert body["outcome"] == "rolled_back" and body["run_id"] == rid
    assert body["message"].startswith(f"nightshift run {rid}: rolled back: hand-off of run-{rid:04d} failed: ")
    assert "exited with status 7" in body["message"] and "composite 0.5000 -> 0.8500 (+0.3500)" in body["message"]
    assert body["report"].endswith(f"run-{rid:04d}.html")
