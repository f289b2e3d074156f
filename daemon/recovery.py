"""Start-up recovery: the one step every command that opens the state runs first.

:func:`recover_state` (under the run lock) reconciles ``current`` with the
registry (:func:`daemon.promote.reconcile`), stops a managed model server that
a killed nightshift left running (:mod:`daemon.serving.leftover`), marks runs whose process died
``interrupted`` with that process's pid, and rewrites the reports of the runs
it changed, so a report never says "still running" about a dead run.
:func:`recover_if_idle` is the same for read commands (``status``,
``history``, ``report``): it runs only when no live process holds the run lock
and the state dir is writable, and never fails the command.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from daemon.config import Config
from daemon.errors import NightshiftError, RunLocked
from daemon.lock import RunLock
from daemon.promote import RecoveryAction, reconcile
from daemon.registry import Registry, RunStatus

log = structlog.get_logger("nightshift.recovery")

#: The reason recorded on runs found active from a process that is gone.
ABANDONED_REASON = "the nightshift process running it (pid {pid}) ended before the run finished (crash, kill -9 or power loss)"


def recover_state(cfg: Config, registry: Registry, *, full: bool = False) -> list[RecoveryAction]:
    """Reconcile, mark abandoned runs, rewrite changed reports. Call holding the run lock.

    Args:
        full: hash the champion's release files (the pipeline does, before it
            reuses cached champion scores).

    Returns:
        Everything repaired (also in the registry's ``recoveries`` table).

    Raises:
        RegistryError: the registry cannot be written.
    """
    state_dir = cfg.paths.state_dir
    actions = reconcile(state_dir, registry, full=full)
    stopped = _stop_leftover_server(cfg)
    if stopped is not None:
        registry.add_recovery("server-stopped", stopped)
        actions.append(RecoveryAction("server-stopped", stopped))
    handing_off = _finish_abandoned_handoff(registry)
    if handing_off is not None:
        registry.add_recovery(handing_off.action, handing_off.detail, run_id=handing_off.run_id)
        log.warning("recovered", action=handing_off.action, run_id=handing_off.run_id)
        actions.append(handing_off)
    for run_id in registry.mark_abandoned_runs(ABANDONED_REASON):
        action = RecoveryAction("run-interrupted", ABANDONED_REASON.format(pid=registry.get_run(run_id).pid), run_id)
        registry.add_recovery(action.action, action.detail, run_id=run_id)
        log.warning("recovered", action=action.action, run_id=run_id)
        actions.append(action)
    for run_id in sorted({a.run_id for a in actions if a.run_id is not None}):
        _rewrite_report(cfg, registry, run_id)
    return actions


def _finish_abandoned_handoff(registry: Registry) -> RecoveryAction | None:
    """End a run whose process died while ``handing_off``: its promotion row is committed.

    The champion decides: still the run's model -> ``promoted`` (the hand-off was never
    verified, and the repair says so); else an automatic rollback was committed ->
    ``rolled_back``. Call holding the run lock (the run's process is gone).
    """
    run = registry.active_run()
    if run is None or run.status != RunStatus.HANDING_OFF.value:
        return None
    champ = registry.champion()
    died = f"the nightshift process running it (pid {run.pid}) ended during the hand-off"
    if champ is not None and champ[1].run_id == run.id:
        registry.transition(run.id, RunStatus.PROMOTED)
        return RecoveryAction(
            "handoff-interrupted",
            f"run {run.id} was promoted, but {died}: the server was never verified to serve it",
            run.id,
        )
    registry.transition(run.id, RunStatus.ROLLED_BACK, reason=f"{died}; the previous champion is back")
    return RecoveryAction("handoff-interrupted", f"run {run.id} was rolled back: {died}", run.id)


def _stop_leftover_server(cfg: Config) -> str | None:
    """Stop a managed server that a killed nightshift left running (none while a supervisor lives)."""
    from daemon.serving.leftover import stop_leftover_server
    from daemon.serving.server import SERVING_DIR, supervisor_alive

    state_dir = cfg.paths.state_dir
    if not (state_dir / SERVING_DIR).is_dir() or supervisor_alive(state_dir):
        return None
    return stop_leftover_server(state_dir / SERVING_DIR, cfg.serving.stop_grace_s)


def recover_if_idle(cfg: Config, registry: Registry) -> list[RecoveryAction]:
    """:func:`recover_state` when nobody holds the run lock; [] otherwise or on error.

    A read command must work on a read-only state dir and while a night runs:
    an error is logged, not raised.
    """
    _log_to_state_dir(cfg)
    try:
        with RunLock(cfg.paths.state_dir):
            return recover_state(cfg, registry)
    except RunLocked:
        return []
    except (NightshiftError, OSError) as exc:
        log.warning("recovery skipped", error=str(exc))
        return []


def _log_to_state_dir(cfg: Config) -> None:
    """Send a read command's recovery events to the state dir's log (warnings also to
    stderr), never to stdout where ``--json`` output goes."""
    if structlog.is_configured():
        return
    from daemon.logs import configure_logging

    try:
        configure_logging(cfg.paths.state_dir, console=False)
    except (NightshiftError, OSError):
        pass


def _rewrite_report(cfg: Config, registry: Registry, run_id: int) -> Path | None:
    from daemon.report import write_report

    try:
        return write_report(cfg, registry, run_id)
    except Exception as exc:  # a report problem must not stop recovery
        log.error("report_failed", run_id=run_id, error=f"{type(exc).__name__}: {exc}")
        return None
