"""The long-lived scheduler behind ``nightshift start``: the only importer of APScheduler.

One nightly run per night key, at the configured cron time or, when the
machine was asleep, off or the daemon down at that moment, once on start or
on wake while still inside ``schedule.misfire_grace_s``. APScheduler fires on
time; the main loop re-checks the registry every ``schedule.check_interval_s``
because APScheduler's timers run on a clock that stops while a Mac sleeps, so
it can oversleep past the grace window. Both paths go through
:meth:`Daemon.tick`, which asks the registry whether the night already ran.

Signal handlers only call :func:`daemon.shutdown.request_stop`; the pipeline
notices the flag, stops its child's process group and marks the run
``interrupted``; the main loop then shuts APScheduler down and returns 0.

The scheduler process never imports mlx: training and evaluation run in
``daemon.worker`` children.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from daemon import clock, shutdown
from daemon.errors import ConfigError, Interrupted, NightshiftError, RunLocked
from daemon.lock import RunLock
from daemon.service import DaemonPidFile, read_daemon_pid

if TYPE_CHECKING:
    from daemon.config import Config

log = structlog.get_logger("nightshift.scheduler")

#: A fire time counts as on time for at least this long, even with a smaller
#: ``misfire_grace_s``, so the scheduler's own wake-up latency never loses a night.
MIN_GRACE_S = 60.0
RETRY_SUFFIX = "/retry"
"""Night key of the one retry of an interrupted night (it resumes training from its checkpoint)."""
#: APScheduler worker threads: nightly and rehearsal jobs; :meth:`Daemon.tick`
#: serialises the actual work, the second thread only lets a busy check return at once.
JOB_THREADS = 2
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


# ---------------------------------------------------------------- schedule parsing


def resolve_timezone(name: str | None) -> tzinfo:
    """The zone the schedule is read in.

    Args:
        name: an IANA zone name such as ``Europe/Berlin``, or None for the
            machine's local zone (as configured in the OS, DST rules included).

    Raises:
        ConfigError: the name is not a known IANA zone.
    """
    if name is None:
        import tzlocal  # APScheduler's own dependency for the local zone

        return tzlocal.get_localzone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"schedule.timezone: unknown IANA time zone {name!r} "
            "(e.g. Europe/Berlin, America/New_York; leave it out for the local zone)"
        ) from None


_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_APS_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _cron_day(token: str) -> int:
    if token.isdigit():
        day = int(token)
        if 0 <= day <= 7:
            return day
        raise ValueError(f"weekday {token} is out of range 0-7")
    try:
        return _CRON_DAYS.index(token.lower()[:3])
    except ValueError:
        raise ValueError(f"unknown weekday {token!r}") from None


def _crontab_weekdays(field: str) -> str:
    """Translate a crontab weekday field (0 or 7 = Sunday) to APScheduler names.

    APScheduler 3.x's ``from_crontab`` reads 0 as Monday (its issue 286), so
    ``1-5`` would mean Tuesday to Saturday; we spell the days out instead.
    """
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step in {part!r} must be at least 1")
        if base == "*":
            lo, hi = 0, 6
        elif "-" in base:
            first, last = base.split("-", 1)
            lo, hi = _cron_day(first), _cron_day(last)
        else:
            lo = _cron_day(base)
            hi = 6 if step_text else lo
        if lo > hi:
            raise ValueError(f"weekday range {base!r} runs backwards (Sunday is 0 or 7)")
        days.update(d % 7 for d in range(lo, hi + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(name for name in _APS_DAYS if _CRON_DAYS.index(name) in days)


def parse_cron(expr: str, tz: tzinfo, *, key: str = "schedule.cron") -> CronTrigger:
    """Build an APScheduler trigger from a crontab expression.

    Five fields are standard crontab (``minute hour day month weekday``, weekday
    0 or 7 = Sunday). Six fields put seconds first (``second minute hour day
    month weekday``), as Quartz does; tests use it to fire a few seconds ahead.

    Args:
        expr: the expression, e.g. ``"0 1 * * *"`` for 01:00 every night.
        tz: the zone whose wall clock the fields refer to.
        key: the config key named in errors.

    Raises:
        ConfigError: wrong field count or a field APScheduler rejects.
    """
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ConfigError(
            f"{key}: must be a crontab expression of 5 fields (minute hour day month weekday) "
            f"or 6 with seconds first, got {expr!r}"
        )
    second, minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_crontab_weekdays(weekday),
            timezone=tz,
        )
    except ValueError as exc:
        raise ConfigError(f"{key}: invalid cron expression {expr!r}: {exc}") from None


@dataclass(frozen=True)
class Schedule:
    """The validated schedule: zone, nightly trigger and optional rehearsal trigger."""

    tz: tzinfo
    nightly: CronTrigger
    rehearsal: CronTrigger | None
    grace_s: float
    """Effective catch-up window in seconds (``misfire_grace_s``, at least :data:`MIN_GRACE_S`)."""


def load_schedule(cfg: Config) -> Schedule:
    """Validate ``cfg.schedule`` (zone, cron, rehearsal cron) and build the triggers.

    Raises:
        ConfigError: every problem found, each naming its key.
    """
    problems: list[str] = []
    tz: tzinfo = UTC
    try:
        tz = resolve_timezone(cfg.schedule.timezone)
    except ConfigError as exc:
        problems.append(str(exc))
    triggers: dict[str, CronTrigger | None] = {"cron": None, "rehearsal_cron": None}
    for name in triggers:
        if name == "rehearsal_cron" and not cfg.schedule.rehearsal:
            continue
        try:
            triggers[name] = parse_cron(getattr(cfg.schedule, name), tz, key=f"schedule.{name}")
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        where = f"Invalid config {cfg.source}" if cfg.source else "Invalid config"
        raise ConfigError(f"{where}: {len(problems)} problem(s)", problems)
    nightly = triggers["cron"]
    assert nightly is not None
    return Schedule(
        tz=tz,
        nightly=nightly,
        rehearsal=triggers["rehearsal_cron"],
        grace_s=max(cfg.schedule.misfire_grace_s, MIN_GRACE_S),
    )


# ---------------------------------------------------------------- pure night logic


def night_key(fire_time: datetime, tz: tzinfo) -> str:
    """The registry key of the night a fire time belongs to.

    The local wall-clock date and time of the cron entry in ``tz``, with the
    offset that time first has that day, e.g. ``2026-11-21T01:00+01:00``. On the
    DST fall-back night 01:00 happens twice; both instants give one key, so the
    night runs once. Seconds appear only for six-field crons that use them.

    Args:
        fire_time: an aware fire time as APScheduler computed it.
        tz: the schedule's zone.
    """
    wall = fire_time.astimezone(tz).replace(tzinfo=None)
    canonical = wall.replace(tzinfo=tz, fold=0)
    spec = "minutes" if wall.second == 0 and wall.microsecond == 0 else "seconds"
    return canonical.isoformat(timespec=spec)


def latest_fire_time(trigger: CronTrigger, now: datetime, window: timedelta) -> datetime | None:
    """The last fire time ``f`` with ``now - window <= f <= now``, or None.

    Binary search over whole seconds (cron resolution) using APScheduler's own
    next-fire computation, so DST gaps and repeats follow APScheduler exactly;
    about 35 trigger evaluations for a day-long window.

    Raises:
        ValueError: ``now`` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now_utc = now.astimezone(UTC)

    def fire_at_or_after(start: datetime) -> datetime | None:
        fire = trigger.get_next_fire_time(None, start)
        return fire if fire is not None and fire.astimezone(UTC) <= now_utc else None

    best = fire_at_or_after(now_utc - window)
    if best is None:
        return None
    first_utc = best.astimezone(UTC)
    lo, hi = 0, int((now_utc - first_utc).total_seconds()) + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        fire = fire_at_or_after(first_utc + timedelta(seconds=mid))
        if fire is None:
            hi = mid
        else:
            lo, best = mid, fire
    return best


def due_night(
    now: datetime,
    cron: str | CronTrigger,
    tz: tzinfo,
    grace_s: float,
    already_run: Callable[[str], bool],
) -> str | None:
    """The night key to run now, or None.

    Only the most recent fire time counts (older missed ones are coalesced
    into it); it is due when it lies at most ``grace_s`` seconds (elapsed
    time, not wall clock) before ``now`` and ``already_run`` says no run has
    that key yet.

    Args:
        now: aware current time.
        cron: a crontab expression (see :func:`parse_cron`) or a built trigger.
        tz: the zone of the schedule (keys are its local date and time).
        grace_s: catch-up window in seconds.
        already_run: whether the registry holds a run for a night key.

    Raises:
        ValueError: ``now`` is naive.
        ConfigError: ``cron`` is a string that does not parse.
    """
    trigger = parse_cron(cron, tz) if isinstance(cron, str) else cron
    fire = latest_fire_time(trigger, now, timedelta(seconds=grace_s))
    if fire is None:
        return None
    key = night_key(fire, tz)
    return None if already_run(key) else key


def next_fire_time(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The first fire time strictly after ``now`` (in the trigger's zone), or None."""
    return trigger.get_next_fire_time(None, now.astimezone(UTC) + timedelta(microseconds=1))


# ---------------------------------------------------------------- the daemon


class DaemonRegistry(Protocol):
    """The registry calls the daemon makes (:class:`daemon.registry.Registry`)."""

    def night_run(self, night_key: str) -> Any | None: ...

    def record_rehearsal(self, report: dict) -> int: ...


class RecoverFn(Protocol):
    """:func:`daemon.recovery.recover_state` as the daemon calls it (returns the ids
    of the runs it marked interrupted)."""

    def __call__(self, cfg: Config, registry: Any) -> list[int]: ...


class PipelineFn(Protocol):
    """:func:`daemon.pipeline.run_pipeline`'s signature as the daemon calls it."""

    def __call__(self, cfg: Config, *, trigger: Any, night_key: str | None = None) -> Any: ...


class PreflightFn(Protocol):
    """:func:`daemon.preflight.run_preflight`'s signature as the rehearsal calls it."""

    def __call__(self, cfg: Config, *, smoke: bool = False, holding_lock: bool = False) -> Any: ...


def handle_stop_signal(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGINT handler: set the shutdown flag, nothing else."""
    shutdown.request_stop(f"received {signal.Signals(signum).name}")


class Daemon:
    """The nightly scheduler. :meth:`tick` is the testable unit; :meth:`serve` the loop.

    Args:
        cfg: the loaded config.
        registry: the run registry (night keys, abandoned runs, rehearsals).
        run_pipeline: runs one night (``daemon.pipeline.run_pipeline``).
        run_preflight: the rehearsal's check (``daemon.preflight.run_preflight``).
        scheduled_trigger: the registry's ``Trigger.SCHEDULED`` value.
        recover_state: start-up recovery (default :func:`daemon.recovery.recover_state`).

    Raises:
        ConfigError: the schedule section does not validate (see :func:`load_schedule`).
    """

    def __init__(
        self,
        cfg: Config,
        *,
        registry: DaemonRegistry,
        run_pipeline: PipelineFn,
        run_preflight: PreflightFn | None = None,
        scheduled_trigger: Any = "scheduled",
        recover_state: RecoverFn | None = None,
    ) -> None:
        self.cfg = cfg
        self._recover_state = recover_state or _recover_state
        self.schedule = load_schedule(cfg)
        self.registry = registry
        self._run_pipeline = run_pipeline
        self._run_preflight = run_preflight
        self._scheduled_trigger = scheduled_trigger
        self._busy = threading.Lock()
        self._job_error: str | None = None

    # -- the units tests drive

    def recover(self) -> list[int]:
        """Start-up recovery: reconcile ``current`` with the registry and mark runs
        left active by a dead process ``interrupted`` (:mod:`daemon.recovery`).

        Done under the run lock, so a live run in another process (a manual
        ``--run-now``) is never touched; while one holds the lock this is skipped
        and that process finishes its own run.

        Returns:
            The ids of the runs marked.
        """
        try:
            with RunLock(self.cfg.paths.state_dir):
                marked = self._recover_state(self.cfg, self.registry)
        except RunLocked as exc:
            log.info("recovery skipped: a run is in progress", holder=str(exc))
            return []
        if marked:
            log.warning("marked abandoned runs interrupted", run_ids=marked)
        return marked

    def due(self, now: datetime) -> str | None:
        """The night key due at ``now`` that has no run yet, or None.

        A night whose run was ``interrupted`` (shutdown, crash, power loss) is
        due once more, as ``<key>/retry``, while still inside the catch-up
        window: the train stage resumes it from its last checkpoint
        (:func:`daemon.train.plan_training`). A failed night is not retried.
        """
        key = due_night(
            now,
            self.schedule.nightly,
            self.schedule.tz,
            self.schedule.grace_s,
            lambda key: self.registry.night_run(key) is not None,
        )
        if key is not None:
            return key
        fire = latest_fire_time(self.schedule.nightly, now, timedelta(seconds=self.schedule.grace_s))
        if fire is None:
            return None
        key = night_key(fire, self.schedule.tz)
        first = self.registry.night_run(key)
        if getattr(first, "status", None) != "interrupted":
            return None
        retry = key + RETRY_SUFFIX
        return retry if self.registry.night_run(retry) is None else None

    def tick(self, now: datetime) -> str | None:
        """Run tonight's pipeline if it is due at ``now`` and nothing else is running here.

        The run lock held by another process (a manual run) is logged and the
        night is retried on the next tick; a failed night keeps its key and is
        not retried, an interrupted one is retried once (see :meth:`due`).

        Returns:
            The night key attempted, or None when nothing was due or this
            daemon was already busy.
        """
        if shutdown.stop_requested():
            return None
        if not self._busy.acquire(blocking=False):
            return None
        try:
            key = self.due(now)
            if key is None:
                return None
            log.info("night due", night_key=key)
            try:
                outcome = self._run_pipeline(
                    self.cfg, trigger=self._scheduled_trigger, night_key=key
                )
            except RunLocked as exc:
                log.warning("night postponed: another run holds the lock", night_key=key, error=str(exc))
            except Interrupted as exc:
                log.info("night interrupted", night_key=key, reason=str(exc))
            except NightshiftError as exc:
                log.error("night failed", night_key=key, error=str(exc))
            else:
                log.info(
                    "night finished",
                    night_key=key,
                    run_id=getattr(outcome, "run_id", None),
                    status=str(getattr(outcome, "status", "")),
                    report=str(getattr(outcome, "report_path", "")),
                    mlx_loaded=_mlx_loaded(),
                )
            return key
        finally:
            self._busy.release()

    def rehearse(self) -> dict | None:
        """Run preflight with the smoke test and record it as the evening rehearsal.

        Holds the run lock meanwhile, so no run starts next to the smoke
        child; skipped (None) while a run is in progress here or in another
        process, or when a shutdown interrupts it.

        Returns:
            The recorded report dict, or None when skipped.
        """
        if self._run_preflight is None or shutdown.stop_requested():
            return None
        if not self._busy.acquire(blocking=False):
            log.info("rehearsal skipped: the nightly run is in progress")
            return None
        try:
            with RunLock(self.cfg.paths.state_dir):
                try:
                    report = self._run_preflight(self.cfg, smoke=True, holding_lock=True).to_dict()
                except Interrupted as exc:
                    log.info("rehearsal interrupted", reason=str(exc))
                    return None
                except NightshiftError as exc:
                    report = {"ok": False, "error": str(exc), "checks": []}
        except RunLocked as exc:
            log.info("rehearsal skipped: a run is in progress", holder=str(exc))
            return None
        finally:
            self._busy.release()
        self.registry.record_rehearsal(report)
        log.info("rehearsal finished", ok=report.get("ok"))
        return report

    # -- the long-running loop

    def _nightly_job(self) -> None:
        self.tick(clock.now())

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            log.warning("job missed by APScheduler; the registry check catches it up", job=event.job_id)
            return
        # A bug, not a NightshiftError: stop cleanly and exit non-zero so the
        # service manager restarts us (and recovery marks any run interrupted).
        self._job_error = f"job {event.job_id} crashed: {event.exception!r}"
        log.error("job crashed", job=event.job_id, error=repr(event.exception), traceback=event.traceback)
        shutdown.request_stop(self._job_error)

    def serve(self, on_started: Callable[[datetime | None], None] | None = None) -> int:
        """Schedule the jobs and loop until a stop is requested.

        Call from the main thread after :meth:`recover`; install the signal
        handlers first (see :func:`run_daemon`).

        Args:
            on_started: called once the jobs are scheduled, with the next nightly run's time.

        Returns:
            0 after a requested stop, 1 when a job crashed.
        """
        sched = BackgroundScheduler(
            timezone=self.schedule.tz,
            executors={"default": ThreadPoolExecutor(JOB_THREADS)},
        )
        misfire_s = max(1, math.ceil(self.schedule.grace_s))
        sched.add_job(
            self._nightly_job,
            self.schedule.nightly,
            id="nightly",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=misfire_s,
        )
        if self.schedule.rehearsal is not None:
            sched.add_job(
                self.rehearse,
                self.schedule.rehearsal,
                id="rehearsal",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, math.ceil(self.cfg.schedule.check_interval_s)),
            )
        sched.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        sched.start()
        nxt = next_fire_time(self.schedule.nightly, clock.now())
        log.info(
            "daemon started",
            pid=os.getpid(),
            next_run=nxt.isoformat() if nxt else None,
            modules_loaded=len(sys.modules),
            mlx_loaded=_mlx_loaded(),
        )
        if on_started is not None:
            on_started(nxt)
        try:
            while not shutdown.stop_requested():
                self.tick(clock.now())
                shutdown.wait(self.cfg.schedule.check_interval_s)
        except BaseException:
            shutdown.request_stop("daemon main loop crashed")
            raise
        finally:
            # A job still running sees the flag, stops its child and returns.
            sched.shutdown(wait=True)
            log.info("daemon stopped", reason=shutdown.stop_reason())
        return 1 if self._job_error else 0


def install_signal_handlers() -> dict[int, Any]:
    """Route SIGTERM and SIGINT to :func:`handle_stop_signal` (main thread only).

    Returns:
        The previous handlers, for :func:`restore_signal_handlers`.
    """
    return {sig: signal.signal(sig, handle_stop_signal) for sig in _STOP_SIGNALS}


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    """Put back the handlers :func:`install_signal_handlers` replaced."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)


# The pipeline's imports (numpy and friends, ~15 MB) load when the first night
# runs, not while the daemon idles; none of them is mlx (tests check that).
def _run_pipeline(cfg: Config, *, trigger: Any, night_key: str | None = None) -> Any:
    from daemon.pipeline import run_pipeline
    from daemon.report import render_html_in_child

    render_html_in_child()  # the HTML report's figures (matplotlib) are drawn in a child, never here
    return run_pipeline(cfg, trigger=trigger, night_key=night_key)


def _run_preflight(cfg: Config, *, smoke: bool = False, holding_lock: bool = False) -> Any:
    from daemon.preflight import run_preflight

    return run_preflight(cfg, smoke=smoke, holding_lock=holding_lock)


def _recover_state(cfg: Config, registry: Any) -> list[int]:
    from daemon.recovery import recover_state

    return [a.run_id for a in recover_state(cfg, registry) if a.action == "run-interrupted" and a.run_id is not None]


def _mlx_loaded() -> bool:
    return any(m == "mlx" or m.startswith("mlx.") for m in sys.modules)


def run_daemon(cfg: Config, on_started: Callable[[datetime | None], None] | None = None) -> int:
    """Run the scheduler in the foreground until SIGTERM/SIGINT (``nightshift start``).

    Writes ``<state_dir>/daemon.pid``, marks runs abandoned by a previous
    process ``interrupted``, catches up a missed night inside the grace
    window, then runs each night at the cron time.

    Args:
        on_started: called with the next nightly run's time once the daemon
            holds its pidfile and has scheduled its jobs (the startup line).

    Returns:
        The exit status: 0 after a signal, 1 when a job crashed.

    Raises:
        ConfigError: the schedule section is invalid.
        NightshiftError: another daemon runs on this state directory, or the
            registry cannot be opened.
    """
    load_schedule(cfg)  # fail before taking the pidfile

    from daemon.registry import Registry, Trigger
    from daemon.report import render_html_in_child

    render_html_in_child()  # reports rewritten by start-up recovery draw their figures in a child too

    state_dir = cfg.paths.state_dir
    with DaemonPidFile(state_dir):
        registry = Registry.open(state_dir)
        daemon = Daemon(
            cfg,
            registry=registry,
            run_pipeline=_run_pipeline,
            run_preflight=_run_preflight,
            scheduled_trigger=Trigger.SCHEDULED,
        )
        previous = install_signal_handlers()
        supervisor = None
        if cfg.serving.mode == "managed":  # the managed model server lives and dies with the daemon
            from daemon.serving.server import Supervisor

            supervisor = Supervisor(cfg)
            supervisor.start()  # stops a server a killed daemon left running
            if supervisor.leftover_stopped is not None:
                registry.add_recovery("server-stopped", supervisor.leftover_stopped)
        try:
            daemon.recover()
            return daemon.serve(on_started)
        finally:
            if supervisor is not None:
                supervisor.stop()
            restore_signal_handlers(previous)


# ---------------------------------------------------------------- status


class RehearsalSource(Protocol):
    """The registry call :func:`schedule_status` makes."""

    def last_rehearsal(self) -> dict | None: ...


def schedule_status(cfg: Config, now: datetime, registry: RehearsalSource | None = None) -> dict:
    """The scheduler's part of ``nightshift status --json``.

    Args:
        cfg: the loaded config.
        now: aware current time (``daemon.clock.now()``).
        registry: an open registry; opened from ``cfg.paths.state_dir`` when None.

    Returns:
        ``{"daemon": {"running": bool, "pid": int | None},
        "next_run": ISO time in the schedule's zone or None (None when no
        daemon is running: nothing will start it), "next_rehearsal": same for
        the rehearsal (None when disabled), "rehearsal": the last rehearsal
        report dict or None}``.

    Raises:
        ConfigError: the schedule section is invalid.
    """
    sched = load_schedule(cfg)
    pid = read_daemon_pid(cfg.paths.state_dir)
    running = pid is not None

    def upcoming(trigger: CronTrigger | None) -> str | None:
        if not running or trigger is None:
            return None
        fire = next_fire_time(trigger, now)
        return fire.isoformat(timespec="seconds") if fire else None

    if registry is None:
        from daemon.registry import Registry

        registry = Registry.open(cfg.paths.state_dir)
    return {
        "daemon": {"running": running, "pid": pid},
        "next_run": upcoming(sched.nightly),
        "next_rehearsal": upcoming(sched.rehearsal),
        "rehearsal": registry.last_rehearsal(),
    }
