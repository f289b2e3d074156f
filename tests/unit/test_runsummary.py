"""What the operator reads: the --run-now line, the history table, the live run in status."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon import clock
from daemon.cli import cli
from daemon.registry import Registry, RunStatus, Trigger
from daemon.runsummary import summarize_run
from daemon.status import render_status, running_text

T0 = datetime(2026, 11, 20, 1, 0, 0, 123456, tzinfo=UTC)

REJECT = {
    "promote": False,
    "reasons": ["FAILED superiority: composite 0.5840 -> 0.5801", "passed sanity: same items"],
    "summary": "REJECT: challenger vs champion: failed superiority (composite delta -0.0039, lower bound -0.0200)",
    "composite": {"champion": 0.584, "challenger": 0.5801, "delta": -0.0039},
    "checks": {"sanity": True, "superiority": False, "non_inferiority": True},
}


def finished_run(reg: Registry, status: RunStatus, *, decision: dict | None = None, reason: str | None = None, minutes: int = 7) -> int:
    run = reg.create_run(trigger=Trigger.MANUAL, config_snapshot={}, config_path=None, profile=None)
    stages = [RunStatus.PREFLIGHT, RunStatus.TRAINING, RunStatus.EVALUATING, RunStatus.DECIDING]
    for st in stages if status != RunStatus.FAILED else stages[:2]:
        reg.transition(run.id, st)
    if decision is not None:
        reg.update_run(run.id, decision=json.dumps(decision))
    clock_at(T0 + timedelta(minutes=minutes, seconds=5))
    reg.transition(run.id, status, reason=reason)
    reg.update_run(run.id, report_path=f"/s/reports/run-{run.id:04d}.md")
    return run.id


def clock_at(when: datetime) -> None:
    clock.now = lambda: when  # type: ignore[assignment]  # restored by the fixture


@pytest.fixture()
def reg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import time

    monkeypatch.setattr(clock, "now", lambda: T0)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    registry = Registry.open(tmp_path / "state")
    yield registry
    registry.close()
    monkeypatch.undo()
    time.tzset()


def test_run_now_line_has_outcome_reason_composite_and_report(reg: Registry) -> None:
    """`--run-now` ended with `run 2: rejected` and no reason; now the report's headline sentence."""
    run_id = finished_run(reg, RunStatus.REJECTED, decision=REJECT)
    line = summarize_run(reg.get_run(run_id)).outcome_line()
    assert line == (
        f"run {run_id}: rejected: challenger vs champion: failed superiority (composite delta -0.0039, "
        "lower bound -0.0200); composite 0.5840 -> 0.5801 (-0.0039); "
        f"report: /s/reports/run-{run_id:04d}.md"
    )


def test_history_is_a_table_with_a_header_and_reasons(reg: Registry, tmp_path: Path) -> None:
    """`history` had no header, no scores, and an empty reason for rejected runs."""
    rejected = finished_run(reg, RunStatus.REJECTED, decision=REJECT)
    clock_at(T0)
    failed = finished_run(reg, RunStatus.FAILED, reason="Training exited with signal 9 after 5400 s\nlog: x", minutes=90)
    config = tmp_path / "c.yaml"
    config.write_text(f"paths:\n  state_dir: {tmp_path / 'state'}\n")
    result = CliRunner().invoke(cli, ["history", "-c", str(config)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["run", "trigger", "started", "duration", "outcome", "delta", "reason"]
    assert lines[1].split(None, 8) == [
        str(failed), "manual", "2026-11-20", "01:00", "UTC", "1h30m", "failed", "-",
        "Training exited with signal 9 after 5400 s log: x",  # folded to one line
    ]
    assert lines[2].split(None, 8) == [
        str(rejected), "manual", "2026-11-20", "01:00", "UTC", "7m05s", "rejected", "-0.0039", "failed superiority",
    ]
    rows = json.loads(CliRunner().invoke(cli, ["history", "-c", str(config), "--json"]).output)
    assert rows[1]["started_at"] == "2026-11-20T01:00:00+00:00"  # JSON stays UTC ISO 8601
    assert rows[1]["composite_delta"] == -0.0039 and rows[1]["reason"] == "failed superiority"


def test_status_while_training_shows_the_latest_reported_iteration(reg: Registry, tmp_path: Path) -> None:
    """`status` showed `iteration 0/200` while training was at 40/200."""
    from daemon.status import _catch_up_training

    run = reg.create_run(trigger=Trigger.MANUAL, config_snapshot={}, config_path=None, profile=None)
    reg.add_train_metrics(run.id, [{"iteration": i, "train_loss": 2.0 - i / 100} for i in (10, 20, 30, 40)])
    running = {"run_id": run.id, "pid": 42, "stage": "training", "iteration": 0, "total": 200, "eta_s": 125.0}
    _catch_up_training(running, reg.train_metrics(run.id))
    assert running_text(running) == f"run {run.id} (pid 42): training, iteration 40/200, loss 1.600, ETA 2m05s"


def test_status_while_evaluating_shows_items_not_iteration_none() -> None:
    """`status` showed `evaluating, iteration None/268`."""
    running = {"run_id": 3, "pid": 42, "stage": "evaluating", "model": "champion", "model_index": 2,
               "models": 2, "done": 64, "total": 268, "eta_s": 70.4}
    assert running_text(running) == "run 3 (pid 42): evaluating champion (model 2 of 2), items 64/268, ETA 1m10s"


def test_status_times_are_local_without_microseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Times were UTC with microseconds."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    import time

    time.tzset()
    try:
        text = render_status({
            "champion": {"run_id": 1, "promoted_at": T0.isoformat(), "decided_by": "auto"},
            "current": None,
            "last_run": {"id": 2, "status": "rejected", "trigger": "scheduled", "started_at": T0.isoformat()},
            "running": None, "daemon": {}, "next_run": None, "blas": "x",
        })
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert "promoted 2026-11-20 02:00 CET by auto" in text
    assert "started 2026-11-20 02:00 CET" in text and ".123456" not in text


def test_status_after_a_rollback_names_it(tmp_path: Path) -> None:
    """Issue 10 gap: after `nightshift rollback`, status still said "champion: run 2 (promoted ...)"
    and "last run: 2 promoted" was the newest news."""
    from tests.unit.report_nights import make_config, make_night

    config = tmp_path / "c.yaml"
    config.write_text("paths:\n  state_dir: state\n")
    cfg = make_config(tmp_path / "state")
    registry = Registry.open(cfg.paths.state_dir)
    first = make_night(cfg, registry, "promoted")
    make_night(cfg, registry, "promoted")
    registry.close()
    done = CliRunner().invoke(cli, ["rollback", "-c", str(config), "--by", "alice", "--reason", "worse replies"])
    assert done.exit_code == 0, done.output
    result = CliRunner().invoke(cli, ["status", "-c", str(config)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.match(rf"champion:   run {first} \(rolled back to .+ by alice\)$", lines[0]), lines[0]
    (event,) = [line for line in lines if line.startswith("last event: ")]
    assert re.match(rf"last event: rolled back to run {first} at .+ by alice \(nightshift rollback by alice from run-0002: worse replies\)$", event)
    data = json.loads(CliRunner().invoke(cli, ["status", "-c", str(config), "--json"]).stdout)
    assert data["champion"]["rolled_back"] is True and data["last_event"]["kind"] == "rollback"
    # the newest report is rewritten (no notification configured): it names the rollback too
    report = (tmp_path / "state" / "reports" / "run-0002.md").read_text()
    assert f"Since then: rolled back to run {first} at " in report


def test_history_reasons_name_the_operators_approval_and_the_failing_preflight_check(tmp_path: Path) -> None:
    """Issue 10 review, defect 4: after `approve` on a run the gate recommended rejecting, history
    said only "failed superiority" (no override); a failed preflight's reason ended on its colon."""
    from daemon.config import config_from_dict
    from daemon.pipeline import finish_manual_decision
    from daemon.runsummary import summarize_run
    from tests.faults.state import trained_run
    from tests.unit.report_nights import make_night

    cfg = config_from_dict({"paths": {"state_dir": str(tmp_path / "state")}}, base_dir=tmp_path)
    registry = Registry.open(cfg.paths.state_dir)
    try:
        failed = make_night(cfg, registry, "failed_preflight")
        rid = trained_run(registry, cfg.paths.state_dir, 1)
        registry.transition(rid, RunStatus.AWAITING_APPROVAL)
        registry.update_run(rid, decision=json.dumps({"promote": False, "summary": "REJECT: failed superiority"}))
    finally:
        registry.close()
    assert finish_manual_decision(cfg, rid, approve=True, decided_by="root") == "promoted"
    registry = Registry.open(cfg.paths.state_dir)
    try:
        approved = summarize_run(registry.get_run(rid))
        preflight = summarize_run(registry.get_run(failed))
    finally:
        registry.close()
    assert approved.reason == "approved by root (gate recommended rejection)"
    assert preflight.reason.endswith("training was not started: - disk: 12 GB free, 40 GB needed")


PROMOTE = {
    "promote": True,
    "summary": "PROMOTE: challenger beats champion by +0.4160 (95% lower bound +0.3000); all checks passed",
    "composite": {"champion": 0.2, "challenger": 0.616, "delta": 0.416},
    "checks": {"sanity": True, "superiority": True, "non_inferiority": True},
}
DEADLINE_STOP = "stopped early at iteration 720 of 100000 for the deadline 06:30"


def _stopped(reg: Registry, reason: str, detail: str) -> int:
    run_id = finished_run(reg, RunStatus.PROMOTED, decision=PROMOTE)
    reg.update_run(
        run_id, train_stop_reason=reason, train_stop_detail=detail, train_iterations_done=720,
        train_iterations_total=100000, train_deadline=datetime(2026, 11, 20, 6, 30, tzinfo=UTC),
    )
    return run_id


def test_a_deadline_stop_is_said_in_the_run_now_line_history_and_status(reg: Registry, tmp_path: Path) -> None:
    """Issue 11 review, defect 4: a deadline stop was only in one terse report line, not in the
    --run-now line, the headline (notifications), history or status."""
    run_id = _stopped(reg, "deadline", "stopped at iteration 720 of 100000 to finish by the deadline")
    summary = summarize_run(reg.get_run(run_id))
    assert summary.headline.endswith(f"all checks passed; training {DEADLINE_STOP}")
    assert f"training {DEADLINE_STOP}; composite" in summary.outcome_line()
    assert summary.to_dict()["training"] == DEADLINE_STOP
    config = tmp_path / "c.yaml"
    config.write_text(f"paths:\n  state_dir: {tmp_path / 'state'}\n")
    history = CliRunner().invoke(cli, ["history", "-c", str(config)])
    # re-review #2: the outcome's reason comes first (an early stop pushed the gate's reason out of the column)
    assert "all checks passed; training stopped early at iteration 720 of 100000" in history.output
    assert json.loads(CliRunner().invoke(cli, ["history", "-c", str(config), "--json"]).output)[0]["training"] == DEADLINE_STOP
    status = CliRunner().invoke(cli, ["status", "-c", str(config), "--json"])
    assert json.loads(status.output)["last_run"]["training"] == DEADLINE_STOP
    assert f"training: {DEADLINE_STOP}" in CliRunner().invoke(cli, ["status", "-c", str(config)]).output

    reg.update_run(run_id, train_world_size=2, train_backend="ring")  # issue 11 review, defect 9: distributed unrecorded
    assert json.loads(CliRunner().invoke(cli, ["history", "-c", str(config), "--json"]).output)[0]["processes"] == "2 processes (ring)"
    status_text = CliRunner().invoke(cli, ["status", "-c", str(config)]).output
    assert f"training: 2 processes (ring); {DEADLINE_STOP}" in status_text


def test_early_stopping_is_said_in_words_and_a_completed_run_says_nothing(reg: Registry) -> None:
    """Issue 11 review, defect 10: the raw `early_stopping` was printed, and every normal night said
    "training stopped: completed"."""
    from daemon.runsummary import training_stop_text

    detail = "validation loss has not improved for 3 evaluations (best 1.2040 at iteration 200)"
    run = reg.get_run(_stopped(reg, "early_stopping", detail))
    assert training_stop_text(run) == f"stopped early at iteration 720 of 100000: {detail}"
    completed = reg.get_run(finished_run(reg, RunStatus.PROMOTED, decision=PROMOTE))
    reg.update_run(completed.id, train_stop_reason="completed", train_iterations_done=60, train_iterations_total=60)
    completed = reg.get_run(completed.id)
    assert training_stop_text(completed) == "" and "training" not in summarize_run(completed).headline


def test_training_eta_never_passes_the_deadline_stop() -> None:
    """Issue 11 review, defect 4: status showed "iteration 450/100000 ... ETA 1h35m" with the
    deadline under a minute away."""
    import time

    from daemon.train import TrainProgress

    progress = TrainProgress(total=100000, iteration=450, stop_at_unix=time.time() + 50)
    progress.started_monotonic -= 60
    assert progress.eta_s is not None and 0 < progress.eta_s <= 50
    assert TrainProgress(total=100000, iteration=450, stop_at_unix=time.time() - 5, started_monotonic=0).eta_s == 0
    running = {"run_id": 3, "pid": 42, "stage": "training", "iteration": 450, "total": 100000, "eta_s": 50.0,
               "stop_at": "2026-11-20T05:40:00+00:00"}
    assert running_text(running).endswith("ETA 50s, stops by 05:40 for the deadline")
