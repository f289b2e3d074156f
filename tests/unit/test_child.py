"""Worker children started ahead of their request (warm start): real processes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from daemon.child import StartedWorker


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
