"""State-dir faults: planted links, a full disk, dead runs, secrets (issue 9, defects 4, 7, 8, 9)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from daemon.errors import EvaluationFailed, StateDirError
from daemon.lock import RunLock
from daemon.registry import Registry, RunStatus
from tests.faults.state import make_cfg, trained_run

pytestmark = pytest.mark.faults


def plant(link: Path, victim: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim, link)


def test_planted_links_are_refused_and_their_targets_untouched(tmp_path: Path, fault) -> None:
    """Defect 8: run.lock, logs, reports, request files and the hash cache followed planted links."""
    from daemon.fingerprint import dir_sha256
    from daemon.logs import configure_logging
    from daemon.report import write_report
    from daemon.worker.common import write_json

    state = tmp_path / "state"
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    reg = Registry.open(state)
    run_id = trained_run(reg, state, 1)
    cfg = make_cfg(state)
    cases = {
        "run.lock": lambda: RunLock(state).__enter__(),
        "logs/nightshift.jsonl": lambda: configure_logging(state, console=False),
        f"reports/run-{run_id:04d}.md": lambda: write_report(cfg, reg, run_id),
        "runs/0001/evaluate_request.json": lambda: write_json(state / "runs/0001/evaluate_request.json", {"a": 1}),
    }
    for name, action in cases.items():
        with fault(f"symlink planted at {name}"):
            plant(state / name, victim)
            with pytest.raises(StateDirError, match="Refusing to follow the symbolic link"):
                action()
            assert victim.read_text() == "keep me"
            (state / name).unlink()
    with fault("symlink planted at hash-cache.json"):
        plant(state / "hash-cache.json", victim)
        model = tmp_path / "model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        with pytest.raises(StateDirError):
            dir_sha256(model, state)
        assert victim.read_text() == "keep me"
    reg.close()


def test_a_full_disk_is_recorded_with_its_cause(tmp_path: Path, fault) -> None:
    """Defect 4: on a full disk the run stayed `training` and its cause was lost."""
    from daemon.pipeline import _Night
    from daemon.registry.engine import is_disk_full
    from daemon.statedir import RESERVE_FILE, ensure_reserve

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        state = mnt / "state"
        reg = Registry.open(state)
        run_id = trained_run(reg, state, 1)
        assert ensure_reserve(state)
        night = _Night(make_cfg(state), reg, run_id, None)
        with fault("disk full (tmpfs) while a run records its end"):
            with open(mnt / "filler", "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                except OSError as exc:
                    assert is_disk_full(exc)
            with pytest.raises(Exception) as info:
                reg.add_train_metrics(run_id, [{"iteration": i, "train_loss": 1.0} for i in range(20000)])
            assert is_disk_full(info.value) and str(info.value).startswith("The disk holding the registry")
            night._record_end(RunStatus.FAILED, night._failure_reason(info.value, str(info.value)))
            run = reg.get_run(run_id)
            assert run.status == RunStatus.FAILED.value
            assert run.failure_reason is not None and run.failure_reason.startswith("disk full (")
            assert not (state / RESERVE_FILE).exists()
        reg.close()
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_childs_last_words_survive_a_full_disk(tmp_path: Path) -> None:
    """Defect 4: a full disk during fuse gave "exited with status 1" and an empty log."""
    from daemon.child import ChildResult

    result = ChildResult(
        returncode=1, duration_s=3.0, log_path=tmp_path / "fuse.log",
        output_tail=("Traceback (most recent call last):", "OSError: [Errno 28] No space left on device"),
    )
    text = result.describe_with_output()
    assert "No space left on device" in text and "disk full" in text and "fuse.log" in text


def test_status_tells_a_dead_run_and_rewrites_its_report(tmp_path: Path, fault) -> None:
    """Defect 7: `status` showed "last run: 2 training" for a dead run; its report said "still running"."""
    from daemon.report import write_report
    from daemon.status import collect_status, render_status

    state = tmp_path / "state"
    reg = Registry.open(state)
    dead = subprocess.Popen(["true"])
    dead.wait()
    run_id = trained_run(reg, state, 1)
    reg.update_run(run_id, pid=dead.pid)
    cfg = make_cfg(state)
    report = write_report(cfg, reg, run_id)
    before = report.read_text()
    reg.close()
    with fault("kill -9 of a run (dead pid, lock free)"):
        status = collect_status(cfg)
        assert status["last_run"]["status"] == RunStatus.INTERRUPTED.value
        assert f"pid {dead.pid}" in status["last_run"]["failure_reason"]
        assert status["running"] is None
        assert "run-interrupted" in render_status(status)
        after = report.read_text()
        assert after != before and "interrupted" in after


class _EchoKey401(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"error": f"invalid key {self.headers.get('Authorization')}"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_401_echoing_the_key_never_records_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault) -> None:
    """Defect 9: an HTTP judge's 401 body echoing the API key reached the terminal, the registry and the report."""
    from daemon.scoring import HttpJudge
    from daemon.secrets import protect, redact
    from daemon.worker.env import worker_env

    key = "sk-test-0123456789abcdef"
    monkeypatch.setenv("JUDGE_CREDENTIAL", key)
    protect(["JUDGE_CREDENTIAL"])
    server = HTTPServer(("127.0.0.1", 0), _EchoKey401)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with fault("HTTP judge answers 401 with the key in its body"):
            judge = HttpJudge(f"http://127.0.0.1:{server.server_port}", "m", api_key=key, retries=0)
            with pytest.raises(EvaluationFailed) as info:
                judge.complete("grade")
            assert key not in str(info.value) and "401" in str(info.value)
            state = tmp_path / "state"
            reg = Registry.open(state)
            run_id = trained_run(reg, state, 1)
            reg.transition(run_id, RunStatus.FAILED, reason=f"judge said: {key}")
            assert key not in (reg.get_run(run_id).failure_reason or "")
            reg.close()
            assert key not in redact(f"x {key} y")
            assert "JUDGE_CREDENTIAL" not in worker_env()
    finally:
        server.shutdown()
