"""The registry on a real SQLite file: migrations, WAL, state machine, promotion log."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from daemon.errors import DuplicateNight, RegistryError
from daemon.registry import Registry, RunStatus, Trigger
from daemon.registry.engine import _alembic_config
from daemon.registry.models import Base


def new_run(reg: Registry, night: str | None = None):
    return reg.create_run(trigger=Trigger.SCHEDULED, config_snapshot={"a": 1}, config_path=None, profile=None, night_key=night)


def test_schema_comes_from_migrations_and_matches_models(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path)
    with reg.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
        assert conn.exec_driver_sql("select version_num from alembic_version").scalar() == head
    Registry.open(tmp_path).close()  # reopening is a no-op upgrade
    reg.close()


def test_state_machine(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path)
    run = new_run(reg)
    with pytest.raises(RegistryError, match="cannot go from pending to evaluating"):
        reg.transition(run.id, RunStatus.EVALUATING)
    for st in (RunStatus.PREFLIGHT, RunStatus.TRAINING, RunStatus.EVALUATING, RunStatus.DECIDING, RunStatus.REJECTED):
        reg.transition(run.id, st)
    with pytest.raises(RegistryError, match="cannot go from rejected to failed"):
        reg.transition(run.id, RunStatus.FAILED, reason="x")
    assert reg.get_run(run.id).finished_at is not None


def test_times_come_back_aware_in_utc_and_naive_ones_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from daemon import clock

    paris = timezone(timedelta(hours=1))
    monkeypatch.setattr(clock, "now", lambda: datetime(2026, 11, 20, 2, 30, tzinfo=paris))
    reg = Registry.open(tmp_path)
    try:
        run = reg.get_run(new_run(reg).id)
        assert run.started_at == datetime(2026, 11, 20, 1, 30, tzinfo=UTC)
        assert run.started_at.tzinfo is UTC  # type: ignore[union-attr]
        with sqlite3.connect(tmp_path / "registry.sqlite") as con:  # stored as UTC wall time
            assert con.execute("select started_at from runs").fetchone()[0].startswith("2026-11-20 01:30:00")
        monkeypatch.setattr(clock, "now", lambda: datetime(2026, 11, 20, 2, 30))
        with pytest.raises(Exception, match="naive datetime"):
            new_run(reg)
    finally:
        reg.close()


def test_night_key_is_unique(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path)
    new_run(reg, "2026-11-21T01:00")
    with pytest.raises(DuplicateNight):
        new_run(reg, "2026-11-21T01:00")
    assert reg.night_run("2026-11-21T01:00") is not None and reg.count_runs() == 1


def test_abandoned_runs_marked_interrupted(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path)
    run = new_run(reg)
    reg.transition(run.id, RunStatus.PREFLIGHT)
    assert reg.mark_abandoned_runs("daemon died") == [run.id]
    got = reg.get_run(run.id)
    assert (got.status, got.failure_reason) == ("interrupted", "daemon died")


def test_promotion_log_names_champion_and_moves_the_run(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path)
    base = reg.base_model("/m", "a" * 64, mlx_version="0", mlx_lm_version="0")
    assert reg.champion() is None
    run = new_run(reg)
    with pytest.raises(RegistryError):  # not promotable from pending
        reg.record_promotion(run_id=run.id, from_model_id=None, to_model_id=base.id, release_path="", reason="r", decided_by="auto")
    for st in (RunStatus.PREFLIGHT, RunStatus.TRAINING, RunStatus.EVALUATING, RunStatus.DECIDING):
        reg.transition(run.id, st)
    adapter = reg.add_adapter_model(base=base, adapter_path="/a", adapter_sha256="b" * 64, run_id=run.id, mlx_version=None, mlx_lm_version=None)
    reg.record_promotion(run_id=run.id, from_model_id=None, to_model_id=adapter.id, release_path="/r", reason="r", decided_by="auto")
    promo, model = reg.champion()  # type: ignore[misc]
    assert model.id == adapter.id and promo.decided_by == "auto"
    assert reg.get_run(run.id).status == "promoted"


def test_concurrent_writers_wait_instead_of_failing(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path)
    run = new_run(reg)
    con = sqlite3.connect(tmp_path / "registry.sqlite", isolation_level=None, check_same_thread=False)
    con.execute("BEGIN IMMEDIATE")  # another process holds the write lock for a moment
    threading.Timer(0.5, lambda: con.execute("COMMIT")).start()
    reg.add_train_metrics(run.id, [{"iteration": 1, "train_loss": 1.0}])  # waits on busy_timeout
    assert len(reg.train_metrics(run.id)) == 1
