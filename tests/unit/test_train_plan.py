"""The training child's watchers, the deadline arithmetic and the resume decision (no mlx)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from daemon.config import config_from_dict
from daemon.deadline import deadline_at, parse_deadline, post_training_reserve_s, should_stop
from daemon.errors import ConfigError, TrainingFailed
from daemon.registry import Registry, RunStatus, Trigger
from daemon.train import build_request, find_resume_point, plan_training
from daemon.worker.common import CHECKPOINTS_DIR, LATEST_CHECKPOINT
from daemon.worker.guards import BestCheckpoint, LossSpikeWatch, needs_final_validation


def test_best_checkpoint_tracks_lowest_loss_and_patience() -> None:
    best = BestCheckpoint()
    assert [best.observe(i, v) for i, v in ((0, 2.0), (10, 1.5), (20, 1.6), (30, float("nan")))] == [
        False, True, False, False,
    ]
    assert (best.iteration, best.val_loss, best.evals_since_best, best.untrained_val_loss) == (10, 1.5, 2, 2.0)
    assert best.patience_exhausted(2) and not best.patience_exhausted(3) and not best.patience_exhausted(None)
    assert BestCheckpoint.from_dict(json.loads(json.dumps(best.to_dict()))) == best
    assert best.no_improvement() is None


def test_the_untrained_adapter_is_never_the_best_checkpoint() -> None:
    """Reviewer #3: iteration 0 (the untrained adapter) was chosen and evaluated as a challenger."""
    best = BestCheckpoint()
    for i, v in ((0, 0.359), (19, 2.83), (39, 2.65), (59, 2.61)):
        best.observe(i, v)
    assert (best.iteration, best.val_loss) == (59, 2.61)
    reason = best.no_improvement()
    assert reason is not None and "untrained adapter (0.359 at iteration 0; best trained 2.61 at iteration 59)" in reason
    assert "lower training.learning_rate" in reason
    # patience counts against the untrained loss too: a night that only gets worse stops early
    early = BestCheckpoint()
    for i, v in ((0, 0.359), (19, 2.83), (39, 2.65)):
        early.observe(i, v)
    assert early.patience_exhausted(2)
    assert "no trained checkpoint was validated" in (BestCheckpoint(untrained_val_loss=1.0).no_improvement() or "")
    # a checkpoint written before this fix may name iteration 0 as its best: it becomes the bar
    old = BestCheckpoint.from_dict({"iteration": 0, "val_loss": 0.5, "evals_since_best": 1})
    assert (old.iteration, old.val_loss, old.untrained_val_loss) == (None, None, 0.5)


def test_final_weights_are_validated_only_when_more_than_one_update_went_unscored() -> None:
    assert not needs_final_validation(59, 60)  # completed: mlx-lm validated one step before the end
    assert not needs_final_validation(40, 40)  # early stopping ends on a validation
    assert needs_final_validation(40, 47)  # the deadline stopped between validations
    assert needs_final_validation(0, 1) and needs_final_validation(None, 3)  # nothing trained was scored
    assert not needs_final_validation(None, 0)
    assert not needs_final_validation(30, 31)  # resumed at 30 with one iteration left


def test_final_validation_counts_optimizer_updates_with_grad_accumulation() -> None:
    """Reviewer #11: the rule counted iterations (micro-batches), not optimizer updates."""
    assert not needs_final_validation(39, 40, 4)  # completed: update 9 of 10 scored, one unscored
    assert not needs_final_validation(19, 23, 4)  # deadline at 23: only update 5 (iteration 20) unscored
    assert needs_final_validation(19, 24, 4)  # updates 5 and 6 unscored
    assert not needs_final_validation(41, 42, 4)  # iterations 41-42 only accumulate: no update unscored
    assert needs_final_validation(0, 4, 4) and not needs_final_validation(0, 3, 4)  # an update vs none at all


def test_loss_spike_watch_needs_consecutive_reports_over_the_running_median() -> None:
    watch = LossSpikeWatch(factor=3.0, reports=2)
    for i, loss in enumerate([2.0, 1.8, 1.7, 1.6]):
        assert watch.observe(i, loss) is None
    assert watch.observe(4, 9.0) is None  # one bad batch is tolerated
    assert watch.observe(5, 1.5) is None  # and forgotten
    assert watch.observe(6, 9.0) is None
    reason = watch.observe(7, 8.0)
    assert reason is not None and "stayed above 3 x its running median" in reason and "iteration 7" in reason
    off = LossSpikeWatch(factor=None)
    assert all(off.observe(i, 1e9 * i) is None for i in range(10))


def test_deadline_forms_and_next_occurrence() -> None:
    assert parse_deadline("06:30").clock == (6, 30)
    assert parse_deadline("1h30m").duration_s == 5400 and parse_deadline("3600").duration_s == 3600
    for bad in ("6.30", "25:00", "soon", "0m", ""):
        with pytest.raises(ValueError):
            parse_deadline(bad)
    berlin = ZoneInfo("Europe/Berlin")
    late = datetime(2026, 12, 1, 23, 0, tzinfo=berlin)
    assert deadline_at(parse_deadline("06:30"), late) == datetime(2026, 12, 2, 6, 30, tzinfo=berlin)
    early = datetime(2026, 12, 2, 1, 0, tzinfo=berlin)
    assert deadline_at(parse_deadline("06:30"), early) == datetime(2026, 12, 2, 6, 30, tzinfo=berlin)
    assert deadline_at(parse_deadline("90m"), early) == early + timedelta(minutes=90)
    # the slowest of the last 3 nights' post-training times, with a safety factor; a share without history
    assert post_training_reserve_s([100.0, 400.0, 200.0, 9999.0], 3600) == pytest.approx(500.0)
    assert post_training_reserve_s([], 4000) == pytest.approx(1000.0)
    assert should_stop(100.0, 130.0, next_interval_s=20, final_eval_s=10)
    assert not should_stop(100.0, 131.0, next_interval_s=20, final_eval_s=10)


def test_config_rejects_bad_deadline_and_indivisible_batch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(
            {"training": {"deadline": "half past six", "batch_size": 3, "distributed": {"processes": 2}}},
            base_dir=tmp_path,
        )
    text = str(exc.value)
    assert "training.deadline: must be a local time HH:MM" in text
    assert 'quoted (deadline: "06:30" or deadline: "5h"), got \'half past six\'' in text
    assert "training.batch_size (3) must be divisible by training.distributed.processes (2)" in text


def _cfg(tmp_path: Path, **training: object):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for name in ("train.jsonl", "valid.jsonl"):
        (data / name).write_text('{"messages": []}\n')
    return config_from_dict({"paths": {"state_dir": "state"}, "training": training}, base_dir=tmp_path)


def _training_run(
    reg: Registry,
    cfg,
    tmp_path: Path,
    *,
    fingerprint: str | None = None,
    checkpoint: int | None = 40,
    status: RunStatus = RunStatus.INTERRUPTED,
    training_outcome: str = "interrupted",
    child_result: dict | None = None,
    eval_outcome: str = "interrupted",
) -> int:
    """A run that trained and ended ``status``, with a checkpoint at ``checkpoint`` (None: none written)."""
    run = reg.create_run(trigger=Trigger.SCHEDULED, config_snapshot={}, config_path=None, profile=None)
    run_dir = tmp_path / "state" / "runs" / f"{run.id:04d}"
    reg.update_run(run.id, run_dir=str(run_dir))
    reg.transition(run.id, RunStatus.PREFLIGHT)
    reg.transition(run.id, RunStatus.TRAINING)
    reg.finish_stage(reg.start_stage(run.id, "training"), duration_s=5.0, outcome=training_outcome)
    if training_outcome == "ok":
        reg.transition(run.id, RunStatus.EVALUATING)
        reg.finish_stage(reg.start_stage(run.id, "evaluating"), duration_s=5.0, outcome=eval_outcome)
    reg.transition(run.id, status, reason="test")
    ckpt = run_dir / CHECKPOINTS_DIR
    ckpt.mkdir(parents=True)
    if child_result is not None:
        (run_dir / "train_result.json").write_text(json.dumps(child_result))
    if checkpoint is not None:
        name = f"resume-{checkpoint:07d}"
        (ckpt / name).mkdir()
        fp = fingerprint or build_request(cfg, run_dir)["fingerprint"]
        (ckpt / LATEST_CHECKPOINT).write_text(json.dumps({"dir": name, "iteration": checkpoint, "fingerprint": fp}))
    return run.id


def _new_run(reg: Registry) -> int:
    return reg.create_run(trigger=Trigger.MANUAL, config_snapshot={}, config_path=None, profile=None).id


def test_resume_only_the_same_job_interrupted_during_training_tonight(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    reg = Registry.open(cfg.paths.state_dir)
    try:
        now = datetime.now(UTC)
        prev = _training_run(reg, cfg, tmp_path)
        current = _new_run(reg)
        found = find_resume_point(cfg, reg, current, now)
        assert found.checkpoint is not None and found.checkpoint.name == "resume-0000040"
        assert (found.run_id, found.iteration, found.reason) == (prev, 40, "")
        plan = plan_training(cfg, reg, current, now)
        assert plan.resumed_from_run_id == prev and plan.resume_iteration == 40
        assert plan.resume_line() == f"resuming run {prev}'s checkpoint at iteration 40"
        # another night (too late), another job (fingerprint), or resume switched off: start over
        late = find_resume_point(cfg, reg, current, now + timedelta(days=1))
        assert late.checkpoint is None and "is from another night (24 h old)" in late.reason
        changed = plan_training(_cfg(tmp_path, learning_rate=3e-4), reg, current, now)
        assert changed.resume_from is None and changed.resumed_from_run_id is None
        assert changed.resume_line() == (
            f"training starts at iteration 0: run {prev}'s checkpoint at iteration 40 was written for another "
            "training job (model, data, hyperparameters or processes changed since)"
        )
        assert plan_training(_cfg(tmp_path, resume=False), reg, current, now).resume_from is None
        other = _training_run(reg, cfg, tmp_path, fingerprint="another job")
        assert other and find_resume_point(cfg, reg, _new_run(reg), now).checkpoint is None
    finally:
        reg.close()


def test_a_training_child_killed_by_a_signal_is_resumed_a_diverged_one_is_not(tmp_path: Path) -> None:
    """Reviewer #2a: only `interrupted` runs were resumed, not a child killed by signal 9 (OOM)."""
    cfg = _cfg(tmp_path)
    reg = Registry.open(cfg.paths.state_dir)
    try:
        now = datetime.now(UTC)
        killed = _training_run(reg, cfg, tmp_path, status=RunStatus.FAILED, training_outcome="failed")
        found = find_resume_point(cfg, reg, _new_run(reg), now)
        assert (found.run_id, found.iteration) == (killed, 40)
        lost_rank = _training_run(  # under mlx.launch the wrapper says a rank was killed
            reg, cfg, tmp_path, status=RunStatus.FAILED, training_outcome="failed",
            child_result={"ok": False, "kind": "killed", "reason": "rank 1 of 2 was killed by SIGKILL"},
        )
        assert find_resume_point(cfg, reg, _new_run(reg), now).run_id == lost_rank
        diverged = _training_run(
            reg, cfg, tmp_path, status=RunStatus.FAILED, training_outcome="failed",
            child_result={"ok": False, "kind": "nonfinite", "reason": "training loss became nan at iteration 50"},
        )
        refused = find_resume_point(cfg, reg, _new_run(reg), now)
        assert refused.checkpoint is None
        assert refused.reason == (
            f"run {diverged}'s checkpoint at iteration 40 is not resumed: run {diverged} failed in training for a "
            "reason that would recur (training loss became nan at iteration 50)"
        )
    finally:
        reg.close()


def test_resume_walks_back_past_runs_stopped_before_their_first_checkpoint(tmp_path: Path) -> None:
    """Reviewer #2b: a resumed run interrupted before its own first checkpoint lost the one it resumed."""
    cfg = _cfg(tmp_path)
    reg = Registry.open(cfg.paths.state_dir)
    try:
        now = datetime.now(UTC)
        _training_run(reg, cfg, tmp_path, checkpoint=40)
        second = _training_run(reg, cfg, tmp_path, checkpoint=60, status=RunStatus.FAILED, training_outcome="failed")
        _training_run(reg, cfg, tmp_path, checkpoint=None)
        found = find_resume_point(cfg, reg, _new_run(reg), now)
        assert (found.run_id, found.iteration) == (second, 60)
    finally:
        reg.close()


def test_a_run_interrupted_in_evaluation_resumes_its_last_checkpoint(tmp_path: Path) -> None:
    """Reviewer #2d: an interruption during evaluation retrained from iteration 0."""
    cfg = _cfg(tmp_path)
    reg = Registry.open(cfg.paths.state_dir)
    try:
        now = datetime.now(UTC)
        evaluating = _training_run(reg, cfg, tmp_path, checkpoint=180, training_outcome="ok")
        found = find_resume_point(cfg, reg, _new_run(reg), now)
        assert (found.run_id, found.iteration) == (evaluating, 180)
        # a night that went on after training (here: failed in evaluation) ends the search, and says why
        failed_later = _training_run(reg, cfg, tmp_path, checkpoint=180, training_outcome="ok", status=RunStatus.FAILED)
        later = find_resume_point(cfg, reg, _new_run(reg), now)
        assert later.checkpoint is None and f"run {failed_later} finished training and failed later" in later.reason
    finally:
        reg.close()



def test_an_evaluation_child_killed_by_a_signal_resumes_one_that_reported_a_failure_does_not(tmp_path: Path) -> None:
    """Re-review #1: an evaluation child killed by SIGKILL (the OOM killer) threw the night's training away."""
    cfg = _cfg(tmp_path)
    reg = Registry.open(cfg.paths.state_dir)
    try:
        now = datetime.now(UTC)
        killed = _training_run(
            reg, cfg, tmp_path, checkpoint=100, training_outcome="ok", status=RunStatus.FAILED, eval_outcome="failed"
        )
        found = find_resume_point(cfg, reg, _new_run(reg), now)
        assert (found.run_id, found.iteration) == (killed, 100)
        reported = _training_run(
            reg, cfg, tmp_path, checkpoint=100, training_outcome="ok", status=RunStatus.FAILED, eval_outcome="failed"
        )
        (tmp_path / "state" / "runs" / f"{reported:04d}" / "eval_result.json").write_text(
            json.dumps({"ok": False, "reason": "suite item q7: bad schema"})
        )
        refused = find_resume_point(cfg, reg, _new_run(reg), now)
        assert refused.checkpoint is None and f"run {reported} finished training and failed later" in refused.reason
    finally:
        reg.close()

def test_deadline_plan_keeps_the_last_nights_post_training_time(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, deadline="2h")
    reg = Registry.open(cfg.paths.state_dir)
    try:
        past = reg.create_run(trigger=Trigger.SCHEDULED, config_snapshot={}, config_path=None, profile=None).id
        for stage, seconds in (("preflight", 50.0), ("training", 3000.0), ("evaluating", 600.0), ("deciding", 1.0)):
            reg.finish_stage(reg.start_stage(past, stage), duration_s=seconds, outcome="ok")
        current = reg.create_run(trigger=Trigger.MANUAL, config_snapshot={}, config_path=None, profile=None).id
        now = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
        plan = plan_training(cfg, reg, current, now)
        assert plan.reserve_s == pytest.approx(1.25 * 601.0)
        assert plan.stop_at_unix == pytest.approx(now.timestamp() + 7200 - 1.25 * 601.0)
        with pytest.raises(TrainingFailed, match="leaves no time to train"):
            plan_training(_cfg(tmp_path, deadline="10m"), reg, current, now)
    finally:
        reg.close()


def test_unquoted_deadlines_in_the_config_file(tmp_path: Path) -> None:
    """Defect: `deadline: 6:30` was read as the base-60 integer 390 and `deadline: 3600` was refused."""
    from daemon.config import load_config

    path = tmp_path / "nightshift.yaml"
    path.write_text("training:\n  deadline: 6:30\n")
    assert load_config(path).training.deadline == "6:30"
    path.write_text("training:\n  deadline: 3600\n")
    deadline = load_config(path).training.deadline
    assert deadline is not None and parse_deadline(deadline).duration_s == 3600
    path.write_text("training:\n  deadline: 6.5\n")
    with pytest.raises(ConfigError, match=r'training.deadline: must be a string such as "06:30" or "5h" \(quoted\)'):
        load_config(path)


def test_duration_deadline_counts_from_the_run_start(tmp_path: Path) -> None:
    """Defect: `deadline: 2h` was counted from the start of training (after preflight), not the run's."""
    cfg = _cfg(tmp_path, deadline="2h")
    reg = Registry.open(cfg.paths.state_dir)
    try:
        current = reg.create_run(trigger=Trigger.MANUAL, config_snapshot={}, config_path=None, profile=None).id
        started = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
        now = started + timedelta(minutes=30)  # preflight took half an hour
        plan = plan_training(cfg, reg, current, now, started=started)
        assert plan.deadline == started + timedelta(hours=2)
        assert plan.stop_at_unix == pytest.approx(started.timestamp() + 7200 - 0.25 * 5400)
    finally:
        reg.close()


def test_preflight_says_which_deadline_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11 review, defects 4 and 10: preflight did not show the deadline, and one already
    passed today silently became tomorrow's."""
    import time

    from daemon import clock
    from daemon.preflight.system import check_deadline

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        monkeypatch.setattr(clock, "now", lambda: datetime(2026, 12, 1, 9, 37, tzinfo=UTC))
        (found,) = check_deadline(_cfg(tmp_path, deadline="06:30"))
        assert found.level == "ok"
        # re-review #5: the plan is for a night started now, not the scheduled one; the line says so
        assert found.message.startswith("for a night started now: deadline 06:30 tomorrow, in 20h53m: training stops by ~")
        assert check_deadline(_cfg(tmp_path)) == []
    finally:
        monkeypatch.undo()
        time.tzset()
