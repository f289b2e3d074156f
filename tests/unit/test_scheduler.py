"""The scheduler's pure night logic, Daemon.tick over explicit datetimes, signals, status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from daemon import shutdown
from daemon.config import Config, config_from_dict
from daemon.errors import ConfigError, Interrupted, NightshiftError, RunLocked, TrainingFailed
from daemon.lock import RunLock
from daemon.recovery import ABANDONED_REASON
from daemon.scheduler import (
    MIN_GRACE_S,
    Daemon,
    due_night,
    handle_stop_signal,
    install_signal_handlers,
    latest_fire_time,
    load_schedule,
    next_fire_time,
    night_key,
    parse_cron,
    resolve_timezone,
    restore_signal_handlers,
    schedule_status,
)
from daemon.service import PIDFILE_NAME, DaemonPidFile

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
HOUR = 3600.0


@pytest.fixture(autouse=True)
def _clear_stop_flag():
    shutdown.reset()
    yield
    shutdown.reset()


def make_cfg(tmp_path: Path, **schedule: Any) -> Config:
    schedule.setdefault("timezone", "Europe/Berlin")
    return config_from_dict(
        {"paths": {"state_dir": str(tmp_path / "state")}, "schedule": schedule},
        base_dir=tmp_path,
        source=tmp_path / "nightshift.yaml",
    )


def at(tz: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold)  # type: ignore[arg-type,misc]


# ---------------------------------------------------------------- parsing


def test_five_field_cron_fires_at_one_am_local() -> None:
    trigger = parse_cron("0 1 * * *", BERLIN)
    fire = next_fire_time(trigger, at(BERLIN, 2026, 11, 20, 12, 0))
    assert fire == at(BERLIN, 2026, 11, 21, 1, 0)


def test_crontab_weekdays_count_sunday_as_zero() -> None:
    # APScheduler 3.x's from_crontab reads "1-5" as Tuesday-Saturday (its issue 286).
    trigger = parse_cron("0 1 * * 1-5", BERLIN)
    saturday = at(BERLIN, 2026, 11, 21, 12, 0)
    assert next_fire_time(trigger, saturday) == at(BERLIN, 2026, 11, 23, 1, 0)  # Monday
    for sunday in ("0", "7", "sun", "SUN"):
        fire = next_fire_time(parse_cron(f"0 1 * * {sunday}", BERLIN), saturday)
        assert fire == at(BERLIN, 2026, 11, 22, 1, 0)


def test_six_field_cron_has_seconds_first() -> None:
    trigger = parse_cron("30 15 2 * * *", BERLIN)
    assert next_fire_time(trigger, at(BERLIN, 2026, 11, 20, 0, 0)) == at(
        BERLIN, 2026, 11, 20, 2, 15, 30
    )


@pytest.mark.parametrize("expr", ["0 1 * *", "0 25 * * *", "0 1 * * 1-9", "0 1 * * fri-mon", "x 1 * * *"])
def test_bad_cron_names_the_key(expr: str) -> None:
    with pytest.raises(ConfigError, match=r"schedule\.cron"):
        parse_cron(expr, BERLIN)


def test_unknown_timezone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="schedule.timezone: unknown IANA time zone 'Mars/Olympus'"):
        resolve_timezone("Mars/Olympus")


def test_load_schedule_reports_every_problem(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, timezone="Nowhere/City", cron="61 1 * * *", rehearsal_cron="bad")
    with pytest.raises(ConfigError) as info:
        load_schedule(cfg)
    assert len(info.value.problems) == 3


def test_rehearsal_cron_is_ignored_when_rehearsal_is_off(tmp_path: Path) -> None:
    sched = load_schedule(make_cfg(tmp_path, rehearsal=False, rehearsal_cron="bad"))
    assert sched.rehearsal is None


# ---------------------------------------------------------------- night keys and due_night


def test_fall_back_night_has_one_key() -> None:
    first = at(NEW_YORK, 2026, 11, 1, 1, 0, fold=0)  # 05:00 UTC, EDT
    second = at(NEW_YORK, 2026, 11, 1, 1, 0, fold=1)  # 06:00 UTC, EST
    assert first.astimezone(UTC) != second.astimezone(UTC)
    assert night_key(first, NEW_YORK) == night_key(second, NEW_YORK) == "2026-11-01T01:00-04:00"


def test_key_has_seconds_only_when_the_cron_uses_them() -> None:
    assert night_key(at(BERLIN, 2026, 11, 21, 1, 0), BERLIN) == "2026-11-21T01:00+01:00"
    assert night_key(at(BERLIN, 2026, 11, 21, 1, 0, 5), BERLIN) == "2026-11-21T01:00:05+01:00"


NEVER_RAN = lambda key: False  # noqa: E731

DUE_TABLE = [
    # (cron, tz, now, grace_s, expected key)
    ("0 1 * * *", BERLIN, at(BERLIN, 2026, 11, 21, 0, 59), 6 * HOUR, None),
    ("0 1 * * *", BERLIN, at(BERLIN, 2026, 11, 21, 1, 0), 6 * HOUR, "2026-11-21T01:00+01:00"),
    # missed (asleep, daemon down): caught up inside the window ...
    ("0 1 * * *", BERLIN, at(BERLIN, 2026, 11, 21, 6, 59), 6 * HOUR, "2026-11-21T01:00+01:00"),
    ("0 1 * * *", BERLIN, at(BERLIN, 2026, 11, 21, 7, 0), 6 * HOUR, "2026-11-21T01:00+01:00"),
    # ... and skipped outside it
    ("0 1 * * *", BERLIN, at(BERLIN, 2026, 11, 21, 7, 0, 1), 6 * HOUR, None),
    ("0 1 * * *", BERLIN, at(BERLIN, 2026, 11, 21, 23, 0), 6 * HOUR, None),
    # DST fall-back in New York (01:00 happens at 05:00 and 06:00 UTC): one key
    ("0 1 * * *", NEW_YORK, at(NEW_YORK, 2026, 11, 1, 1, 30, fold=0), 6 * HOUR, "2026-11-01T01:00-04:00"),
    ("0 1 * * *", NEW_YORK, at(NEW_YORK, 2026, 11, 1, 1, 30, fold=1), 6 * HOUR, "2026-11-01T01:00-04:00"),
    # the grace window is elapsed time: 01:00 EST -> 07:00 EDT is 5 h on the clock, 5 h real
    ("0 1 * * *", NEW_YORK, at(NEW_YORK, 2026, 11, 1, 6, 0), 5 * HOUR, "2026-11-01T01:00-04:00"),
    # DST spring-forward: 01:00 EST -> 08:00 EDT is 7 h on the wall clock but 6 h elapsed
    ("0 1 * * *", NEW_YORK, at(NEW_YORK, 2026, 3, 8, 8, 0), 6 * HOUR, "2026-03-08T01:00-05:00"),
    ("0 1 * * *", NEW_YORK, at(NEW_YORK, 2026, 3, 8, 8, 0, 1), 6 * HOUR, None),
    # 02:30 does not exist that night; APScheduler fires at 03:30 EDT, keyed by the cron time
    ("30 2 * * *", NEW_YORK, at(NEW_YORK, 2026, 3, 8, 3, 29), 6 * HOUR, None),
    ("30 2 * * *", NEW_YORK, at(NEW_YORK, 2026, 3, 8, 3, 31), 6 * HOUR, "2026-03-08T02:30-05:00"),
    # only the latest fire time counts (older misses coalesce into it)
    ("*/30 * * * *", BERLIN, at(BERLIN, 2026, 11, 21, 3, 10), 6 * HOUR, "2026-11-21T03:00+01:00"),
]


@pytest.mark.parametrize(("cron", "tz", "now", "grace_s", "expected"), DUE_TABLE)
def test_due_night_table(cron: str, tz: ZoneInfo, now: datetime, grace_s: float, expected: str | None) -> None:
    assert due_night(now, cron, tz, grace_s, NEVER_RAN) == expected
    # the same instant in UTC gives the same answer
    assert due_night(now.astimezone(UTC), cron, tz, grace_s, NEVER_RAN) == expected


def test_due_night_never_twice() -> None:
    done: set[str] = set()
    ran = []
    start = at(NEW_YORK, 2026, 10, 31, 22, 0).astimezone(UTC)
    for minute in range(0, 14 * 60, 7):  # every 7 minutes through the fall-back night
        key = due_night(start + timedelta(minutes=minute), "0 1 * * *", NEW_YORK, 6 * HOUR, done.__contains__)
        if key:
            done.add(key)
            ran.append(key)
    assert ran == ["2026-11-01T01:00-04:00"]


def test_due_night_rejects_naive_now() -> None:
    with pytest.raises(ValueError, match="aware"):
        due_night(datetime(2026, 11, 21, 1, 0), "0 1 * * *", BERLIN, HOUR, NEVER_RAN)


def _brute_force_latest(trigger: Any, now: datetime, window: timedelta) -> datetime | None:
    fire = trigger.get_next_fire_time(None, now - window)
    best = None
    while fire is not None and fire.astimezone(UTC) <= now.astimezone(UTC):
        best = fire
        fire = trigger.get_next_fire_time(fire, fire)
    return best


@pytest.mark.parametrize(
    ("cron", "tz", "day"),
    [
        ("0 1 * * *", NEW_YORK, datetime(2026, 11, 1)),
        ("30 1 * * *", NEW_YORK, datetime(2026, 11, 1)),
        ("30 2 * * *", NEW_YORK, datetime(2026, 3, 8)),
        ("15 2 * * *", BERLIN, datetime(2026, 3, 29)),
        ("0 */2 * * *", BERLIN, datetime(2026, 10, 25)),
    ],
)
def test_latest_fire_time_matches_apschedulers_own_chain(cron: str, tz: ZoneInfo, day: datetime) -> None:
    trigger = parse_cron(cron, tz)
    window = timedelta(hours=6)
    start = day.replace(tzinfo=UTC) - timedelta(hours=6)
    for step in range(0, 36 * 60, 11):
        now = start + timedelta(minutes=step)
        got = latest_fire_time(trigger, now, window)
        want = _brute_force_latest(trigger, now, window)
        # equal instants, or the two 01:00s of a fall-back night (same key)
        assert (got is None) == (want is None), now
        if got is not None and want is not None:
            assert night_key(got, tz) == night_key(want, tz), now


# ---------------------------------------------------------------- Daemon.tick with fakes


@dataclass
class FakeRegistry:
    nights: dict[str, int] = field(default_factory=dict)
    rehearsals: list[dict] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)

    def night_run(self, night_key: str) -> int | None:
        return self.nights.get(night_key)

    def mark_abandoned_runs(self, reason: str) -> list[int]:
        self.abandoned.append(reason)
        return [41, 42]

    def record_rehearsal(self, report: dict) -> int:
        self.rehearsals.append(report)
        return len(self.rehearsals)

    def last_rehearsal(self) -> dict | None:
        return {"id": len(self.rehearsals), "ok": self.rehearsals[-1]["ok"]} if self.rehearsals else None


@dataclass
class Outcome:
    run_id: int
    status: str = "promoted"
    report_path: Path | None = None


@dataclass
class FakePipeline:
    """Records a night like the real pipeline: the run row (with its key) exists before work."""

    registry: FakeRegistry
    errors: list[BaseException | None] = field(default_factory=list)
    calls: list[tuple[Any, str | None]] = field(default_factory=list)

    def __call__(self, cfg: Config, *, trigger: Any, night_key: str | None = None) -> Outcome:
        self.calls.append((trigger, night_key))
        error = self.errors.pop(0) if self.errors else None
        if isinstance(error, RunLocked):
            raise error  # the real pipeline creates no run when the lock is held
        run_id = len(self.calls)
        if night_key is not None:
            self.registry.nights[night_key] = run_id
        if error is not None:
            raise error
        return Outcome(run_id)


def make_daemon(tmp_path: Path, *, errors: list[BaseException | None] | None = None, **schedule: Any):
    registry = FakeRegistry()
    pipeline = FakePipeline(registry, errors=list(errors or []))
    daemon = Daemon(
        make_cfg(tmp_path, **schedule),
        registry=registry,
        run_pipeline=pipeline,
        scheduled_trigger="scheduled",
        recover_state=lambda cfg, reg: reg.mark_abandoned_runs(ABANDONED_REASON),
    )
    return daemon, registry, pipeline


def test_tick_runs_the_night_once_over_a_table_of_times(tmp_path: Path) -> None:
    daemon, _, pipeline = make_daemon(tmp_path)
    table = [
        (at(BERLIN, 2026, 11, 20, 23, 0), None),
        (at(BERLIN, 2026, 11, 21, 0, 59, 59), None),
        (at(BERLIN, 2026, 11, 21, 1, 0), "2026-11-21T01:00+01:00"),
        (at(BERLIN, 2026, 11, 21, 1, 0, 1), None),  # APScheduler and the check loop both fire
        (at(BERLIN, 2026, 11, 21, 1, 5), None),
        (at(BERLIN, 2026, 11, 21, 6, 0), None),
        (at(BERLIN, 2026, 11, 22, 1, 0), "2026-11-22T01:00+01:00"),
    ]
    for now, expected in table:
        assert daemon.tick(now) == expected, now
    assert pipeline.calls == [
        ("scheduled", "2026-11-21T01:00+01:00"),
        ("scheduled", "2026-11-22T01:00+01:00"),
    ]


def test_tick_catches_up_a_missed_night_once_on_start_inside_the_window(tmp_path: Path) -> None:
    daemon, _, pipeline = make_daemon(tmp_path)
    assert daemon.tick(at(BERLIN, 2026, 11, 21, 6, 30)) == "2026-11-21T01:00+01:00"
    assert daemon.tick(at(BERLIN, 2026, 11, 21, 6, 35)) is None
    # a restarted daemon (fresh object, same registry) does not run it again
    again = Daemon(daemon.cfg, registry=daemon.registry, run_pipeline=pipeline)
    assert again.tick(at(BERLIN, 2026, 11, 21, 6, 40)) is None
    assert len(pipeline.calls) == 1


def test_tick_skips_a_night_missed_beyond_the_window(tmp_path: Path) -> None:
    daemon, _, pipeline = make_daemon(tmp_path, misfire_grace_s=2 * HOUR)
    assert daemon.tick(at(BERLIN, 2026, 11, 21, 3, 0, 1)) is None
    assert pipeline.calls == []


def test_zero_grace_still_allows_the_schedulers_wake_up_latency(tmp_path: Path) -> None:
    daemon, _, pipeline = make_daemon(tmp_path, misfire_grace_s=0)
    assert daemon.schedule.grace_s == MIN_GRACE_S
    assert daemon.tick(at(BERLIN, 2026, 11, 21, 1, 5)) is None
    assert daemon.tick(at(BERLIN, 2026, 11, 21, 1, 0, 30)) == "2026-11-21T01:00+01:00"


def test_tick_on_the_fall_back_night_runs_once(tmp_path: Path) -> None:
    daemon, _, pipeline = make_daemon(tmp_path, timezone="America/New_York")
    assert daemon.tick(at(NEW_YORK, 2026, 11, 1, 1, 0, fold=0)) == "2026-11-01T01:00-04:00"
    assert daemon.tick(at(NEW_YORK, 2026, 11, 1, 1, 0, fold=1)) is None
    assert daemon.tick(at(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)) is None
    assert len(pipeline.calls) == 1


def test_tick_postpones_a_night_while_another_run_holds_the_lock(tmp_path: Path) -> None:
    locked = RunLocked("Another run is in progress: run 3, pid 999.")
    daemon, registry, pipeline = make_daemon(tmp_path, errors=[locked, locked, None])
    for minute in (0, 5, 10, 15):
        daemon.tick(at(BERLIN, 2026, 11, 21, 1, minute))
    assert [key for _, key in pipeline.calls] == ["2026-11-21T01:00+01:00"] * 3
    assert registry.nights == {"2026-11-21T01:00+01:00": 3}


@pytest.mark.parametrize("error", [Interrupted("received SIGTERM"), TrainingFailed("exited 1")])
def test_tick_survives_a_failed_or_interrupted_night_and_does_not_retry_it(tmp_path: Path, error: NightshiftError) -> None:
    daemon, _, pipeline = make_daemon(tmp_path, errors=[error])
    assert daemon.tick(at(BERLIN, 2026, 11, 21, 1, 0)) == "2026-11-21T01:00+01:00"
    assert daemon.tick(at(BERLIN, 2026, 11, 21, 1, 5)) is None
    assert len(pipeline.calls) == 1


@dataclass
class RunRow:
    id: int
    status: str


def test_an_interrupted_night_is_retried_once_inside_the_window(tmp_path: Path) -> None:
    """A night killed mid-training (power loss, shutdown) gets one more attempt, which resumes it."""
    daemon, registry, pipeline = make_daemon(tmp_path)
    key = "2026-11-21T01:00+01:00"
    registry.nights[key] = RunRow(1, "interrupted")  # type: ignore[assignment]
    assert daemon.tick(at(BERLIN, 2026, 11, 21, 2, 0)) == key + "/retry"
    assert daemon.tick(at(BERLIN, 2026, 11, 21, 2, 5)) is None  # once
    assert [k for _, k in pipeline.calls] == [key + "/retry"]
    registry.nights = {key: RunRow(1, "failed")}  # type: ignore[dict-item]
    assert daemon.due(at(BERLIN, 2026, 11, 21, 2, 10)) is None
    registry.nights = {key: RunRow(1, "interrupted")}  # type: ignore[dict-item]
    assert daemon.due(at(BERLIN, 2026, 11, 21, 9, 0)) is None  # outside the catch-up window


def test_tick_does_nothing_once_stop_is_requested_or_while_busy(tmp_path: Path) -> None:
    daemon, _, pipeline = make_daemon(tmp_path)
    with daemon._busy:
        assert daemon.tick(at(BERLIN, 2026, 11, 21, 1, 0)) is None
    shutdown.request_stop("test")
    assert daemon.tick(at(BERLIN, 2026, 11, 21, 1, 0)) is None
    assert pipeline.calls == []


def test_recover_marks_abandoned_runs_under_the_run_lock(tmp_path: Path) -> None:
    daemon, registry, _ = make_daemon(tmp_path)
    assert daemon.recover() == [41, 42]
    assert registry.abandoned == [ABANDONED_REASON]


def test_recover_leaves_a_live_run_of_another_process_alone(tmp_path: Path) -> None:
    daemon, registry, _ = make_daemon(tmp_path)
    with RunLock(daemon.cfg.paths.state_dir):
        assert daemon.recover() == []
    assert registry.abandoned == []


@dataclass
class FakeReport:
    ok: bool

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [{"name": "disk", "level": "pass"}]}


def test_rehearse_records_the_smoke_preflight(tmp_path: Path) -> None:
    daemon, registry, pipeline = make_daemon(tmp_path)
    seen: list[bool] = []

    def preflight(cfg: Config, *, smoke: bool = False, holding_lock: bool = False) -> FakeReport:
        seen.append(smoke and holding_lock)
        return FakeReport(ok=True)

    daemon._run_preflight = preflight
    assert daemon.rehearse() == {"ok": True, "checks": [{"name": "disk", "level": "pass"}]}
    assert seen == [True]
    assert registry.rehearsals[-1]["ok"] is True
    assert pipeline.calls == []


def test_rehearse_records_a_preflight_that_raised(tmp_path: Path) -> None:
    daemon, registry, _ = make_daemon(tmp_path)

    def preflight(cfg: Config, *, smoke: bool = False, holding_lock: bool = False) -> FakeReport:
        raise NightshiftError("base model directory missing")

    daemon._run_preflight = preflight
    daemon.rehearse()
    assert registry.rehearsals == [{"ok": False, "error": "base model directory missing", "checks": []}]


def test_rehearse_is_skipped_while_a_run_holds_the_lock(tmp_path: Path) -> None:
    daemon, registry, _ = make_daemon(tmp_path)
    daemon._run_preflight = lambda cfg, *, smoke=False, holding_lock=False: FakeReport(ok=True)
    with RunLock(daemon.cfg.paths.state_dir):
        assert daemon.rehearse() is None
    assert registry.rehearsals == []


def test_an_interrupted_rehearsal_is_not_recorded(tmp_path: Path) -> None:
    daemon, registry, _ = make_daemon(tmp_path)

    def preflight(cfg: Config, *, smoke: bool = False, holding_lock: bool = False) -> FakeReport:
        raise Interrupted("received SIGTERM; stopped the smoke child")

    daemon._run_preflight = preflight
    assert daemon.rehearse() is None
    assert registry.rehearsals == []


# ---------------------------------------------------------------- signals and the loop


def test_signal_handler_only_sets_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(shutdown, "request_stop", calls.append)
    handle_stop_signal(signal.SIGTERM, None)
    assert calls == ["received SIGTERM"]


def test_real_sigterm_sets_the_flag_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    previous = install_signal_handlers()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert shutdown.wait(2.0)
        assert shutdown.stop_reason() == "received SIGTERM"
    finally:
        restore_signal_handlers(previous)
    assert signal.getsignal(signal.SIGTERM) is before


def test_serve_runs_each_fire_once_and_stops_on_the_flag(tmp_path: Path) -> None:
    # every second; APScheduler and the 0.05 s check loop race for each night
    daemon, _, pipeline = make_daemon(tmp_path, cron="* * * * * *", rehearsal=False)
    # below the config's 1 s minimum, to make the two paths collide often
    daemon.cfg = replace(daemon.cfg, schedule=replace(daemon.cfg.schedule, check_interval_s=0.05))
    timer = threading.Timer(2.5, shutdown.request_stop, args=("test stop",))
    timer.start()
    try:
        assert daemon.serve() == 0
    finally:
        timer.cancel()
    keys = [key for _, key in pipeline.calls]
    assert len(keys) >= 2
    assert len(keys) == len(set(keys))


def test_a_crashed_job_stops_the_daemon_with_status_1(tmp_path: Path) -> None:
    daemon, _, _ = make_daemon(tmp_path)
    from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent

    event = JobExecutionEvent(EVENT_JOB_ERROR, "nightly", None, datetime.now(UTC), exception=RuntimeError("bug"))
    daemon._on_job_event(event)
    assert shutdown.stop_requested()
    assert "job nightly crashed" in shutdown.stop_reason()


# ---------------------------------------------------------------- status


def test_status_with_a_stale_pidfile_says_not_running(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    cfg.paths.state_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (cfg.paths.state_dir / PIDFILE_NAME).write_text(f"{dead.pid}\n")
    status = schedule_status(cfg, at(BERLIN, 2026, 11, 20, 12, 0), registry=FakeRegistry())
    assert status == {
        "daemon": {"running": False, "pid": None},
        "next_run": None,
        "next_rehearsal": None,
        "rehearsal": None,
    }


def test_status_of_a_running_daemon(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    registry = FakeRegistry()
    registry.record_rehearsal({"ok": False})
    with DaemonPidFile(cfg.paths.state_dir):
        status = schedule_status(cfg, at(BERLIN, 2026, 11, 20, 12, 0), registry=registry)
    assert status["daemon"] == {"running": True, "pid": os.getpid()}
    assert status["next_run"] == "2026-11-21T01:00:00+01:00"
    assert status["next_rehearsal"] == "2026-11-20T22:00:00+01:00"
    assert status["rehearsal"] == {"id": 1, "ok": False}


def test_the_scheduler_process_never_imports_mlx() -> None:
    modules = ["daemon.scheduler", "daemon.commands.schedule_cmds", "daemon.service", "daemon.logs"]
    for optional in ("daemon.pipeline", "daemon.preflight", "daemon.registry", "daemon.cli"):
        spec_check = subprocess.run(
            [sys.executable, "-c", f"import importlib.util as u; print(u.find_spec('{optional}') is not None)"],
            capture_output=True,
            text=True,
        )
        if spec_check.stdout.strip() == "True":
            modules.append(optional)
    code = (
        f"import {', '.join(modules)}, sys; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


NIGHT_IN_THE_SCHEDULER = """
import sys
from pathlib import Path

from daemon import scheduler
from daemon.errors import PreflightFailed
from daemon.registry import Registry, Trigger
from tests.unit.report_nights import make_config, make_night

cfg = make_config(Path(sys.argv[1]) / "state")
reg = Registry.open(cfg.paths.state_dir)
make_night(cfg, reg, "promoted")  # a decided night: tonight's HTML report draws the trend
reg.close()
try:  # the daemon's night function; the base model is missing, so preflight fails and the report is written
    scheduler._run_pipeline(cfg, trigger=Trigger.SCHEDULED, night_key="2026-11-21")
except PreflightFailed:
    pass
page = (cfg.paths.state_dir / "reports" / "run-0002.html").read_text()
print("figure" if "data:image/svg+xml;base64," in page else "no figure")
print(sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib"))
"""


@pytest.mark.slow  # a night (to its preflight failure) in a fresh interpreter, plus the render child
def test_a_night_through_the_daemon_draws_its_figures_in_a_child(tmp_path: Path) -> None:
    """Issue 10 gap: the long-lived scheduler imported matplotlib once it rendered its first HTML report."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", NIGHT_IN_THE_SCHEDULER, str(tmp_path)], capture_output=True, text=True,
                         cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["figure", "[]"], out.stdout


# ---------------------------------------------------------------- logs


@pytest.fixture
def root_logging() -> Any:
    """configure_logging changes the root logger and structlog: put both back after the test."""
    import logging

    import structlog

    root = logging.getLogger()
    before = list(root.handlers), root.level
    yield root
    for handler in [h for h in root.handlers if h not in before[0]]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(before[1])
    structlog.reset_defaults()


def test_configure_logging_writes_json_lines_for_structlog_and_stdlib(tmp_path: Path, root_logging: Any) -> None:
    import json
    import logging

    import structlog

    from daemon.logs import configure_logging

    path = configure_logging(tmp_path, console=False)
    configure_logging(tmp_path, console=False)  # a second call replaces, not duplicates
    structlog.get_logger("nightshift").info("stage", run_id=3, stage="train", duration_s=1.5)
    logging.getLogger("apscheduler.scheduler").info("Added job %s", "nightly")
    for handler in root_logging.handlers:
        handler.flush()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert path == tmp_path / "logs" / "nightshift.jsonl"
    assert [r["event"] for r in records] == ["stage", "Added job nightly"]
    assert records[0]["run_id"] == 3 and records[0]["stage"] == "train" and records[0]["level"] == "info"
    assert records[1]["logger"] == "apscheduler.scheduler"
    assert records[0]["timestamp"].endswith("Z")


def test_console_false_keeps_even_errors_off_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], root_logging: Any
) -> None:
    """Reviewer defect: `--run-now` printed a raw `[error ] handoff_failed` line before its own summary."""
    import json

    import structlog

    from daemon.logs import configure_logging

    path = configure_logging(tmp_path, console=False)
    structlog.get_logger("nightshift").error("handoff_failed", target="run-0001", reason="r")
    for handler in root_logging.handlers:
        handler.flush()
    assert "handoff_failed" not in capfd.readouterr().err
    assert json.loads(path.read_text().splitlines()[-1])["event"] == "handoff_failed"
