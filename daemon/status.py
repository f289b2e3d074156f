"""``nightshift status``: champion, last run, run in progress, daemon and schedule."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from daemon import clock
from daemon.clock import duration_text, local_text
from daemon.config import Config
from daemon.lock import read_lock_holder
from daemon.notify import last_notice_status
from daemon.promote import current_target
from daemon.registry import Registry
from daemon.runsummary import (
    champion_change_text,
    is_rollback,
    training_processes_text,
    training_stop_text,
)
from daemon.worker.env import blas_description


def collect_status(cfg: Config) -> dict[str, Any]:
    """A JSON-ready status object.

    Keys: ``champion`` (null or ``{run_id, model_id, release, promoted_at,
    decided_by}``), ``last_run`` (null or ``{id, status, trigger, started_at,
    finished_at, failure_reason, report}``), ``running`` (null or the live
    progress of the run holding the lock: ``{run_id, pid, stage, iteration,
    total, train_loss, eta_s, stop_at, ...}``; ``stop_at``: when training stops for the deadline), ``pending_approval`` (ids of runs
    awaiting approval) and ``pending_since`` (id -> when it started waiting, or null), ``recoveries`` (the newest repairs of the start-up
    reconcile step: ``{at, action, detail, run_id}``), ``current`` (resolved release path or
    null), ``blas``, plus the scheduler's ``daemon``, ``next_run``,
    ``next_rehearsal`` and ``rehearsal``, ``notify`` (null or the last
    notification's ``{run_id, at, results: [{channel, ok, error}]}``), and
    ``last_event`` (null or ``{at, kind, text}``: a champion change after the last
    run ended, e.g. ``nightshift rollback``); the champion's ``rolled_back`` is true
    when its promotion-log row put back an earlier champion.
    """
    from daemon.recovery import recover_if_idle
    from daemon.scheduler import schedule_status

    state_dir = cfg.paths.state_dir
    registry = Registry.open(state_dir)
    try:
        recover_if_idle(cfg, registry)  # a dead run is marked, a broken promotion repaired
        champ = registry.champion()
        last = registry.last_run()
        holder = read_lock_holder(state_dir)
        running = None
        if holder is not None:
            running = {"run_id": holder.get("run_id"), "pid": holder.get("pid")}
            if holder.get("run_id") is not None:
                run = registry.get_run(int(holder["run_id"]))
                running.update(json.loads(run.progress or "{}"))
                if running.get("stage") == "training":
                    _catch_up_training(running, registry.train_metrics(run.id))
        target = current_target(state_dir)
        pending = registry.pending_approvals()
        out: dict[str, Any] = {
            "champion": None
            if champ is None
            else {
                "run_id": champ[1].run_id,
                "model_id": champ[1].id,
                "release": champ[0].release_path,
                "promoted_at": champ[0].decided_at.isoformat(timespec="seconds"),
                "decided_by": champ[0].decided_by,
                "rolled_back": is_rollback(*champ),
            },
            "last_run": None
            if last is None
            else {
                "id": last.id,
                "status": last.status,
                "trigger": last.trigger,
                "started_at": last.started_at.isoformat(timespec="seconds") if last.started_at else None,
                "finished_at": last.finished_at.isoformat(timespec="seconds") if last.finished_at else None,
                "failure_reason": last.failure_reason,
                "training": training_stop_text(last) or None,
                "processes": training_processes_text(last) or None,
                "report": last.report_path,
            },
            "running": running,
            "pending_approval": [r.id for r, _ in pending],
            "pending_since": {str(r.id): since.isoformat(timespec="seconds") if since else None for r, since in pending},
            "recoveries": [
                {"at": r.at.isoformat(timespec="seconds"), "action": r.action, "detail": r.detail, "run_id": r.run_id}
                for r in registry.recoveries(limit=5)
            ],
            "current": str(target) if target else None,
            "state_dir": str(state_dir),
            "blas": blas_description(),
            "notify": last_notice_status(state_dir),
        }
        out["last_event"] = _last_event(champ, last)
        out["serving"] = serving_status(cfg, registry, target)
        out.update(schedule_status(cfg, clock.now(), registry))
        return out
    finally:
        registry.close()


def _last_event(champ: Any, last: Any) -> dict[str, Any] | None:
    """The champion's change when it came after the last run ended (``nightshift rollback``):
    ``{at, kind, text}``, else None (the last run is the last event)."""
    if champ is None:
        return None
    promo, model = champ
    if last is not None and (promo.run_id == last.id or last.finished_at is None or promo.decided_at <= last.finished_at):
        return None
    return {
        "at": promo.decided_at.isoformat(timespec="seconds"),
        "kind": "rollback" if is_rollback(promo, model) else "promotion",
        "text": champion_change_text(promo, model),
    }


def _catch_up_training(running: dict[str, Any], metrics: list[Any]) -> None:
    """Take the iteration and loss from the newest stored training report when the
    (throttled) progress snapshot is older: status must never lag the metrics."""
    reports = [m for m in metrics if m.train_loss is not None]
    if reports and reports[-1].iteration > int(running.get("iteration") or 0):
        running["iteration"] = reports[-1].iteration
        running["train_loss"] = reports[-1].train_loss


def _local(iso: str | None) -> str:
    return local_text(datetime.fromisoformat(iso)) if iso else "-"


def running_text(run: dict[str, Any]) -> str:
    """The live run in one line: stage, iteration/total or items/total, loss, ETA.

    ``run 3 (pid 4242): training, iteration 40/200, loss 1.234, ETA 2m05s`` (then
    ``stops by 05:40 for the deadline`` with ``training.deadline``; the ETA never goes past it) or
    ``run 3 (pid 4242): evaluating challenger (model 1 of 2), items 64/268, ETA 1m10s``.
    """
    stage = str(run.get("stage") or "starting")
    bits = [f"run {run.get('run_id')} (pid {run.get('pid')}): {stage}"]
    if stage == "training" and run.get("total"):
        bits.append(f"iteration {run.get('iteration') or 0}/{run['total']}")
        if run.get("train_loss") is not None:
            bits.append(f"loss {run['train_loss']:.3f}")
        if run.get("tokens_per_s"):
            bits.append(f"{run['tokens_per_s']:.0f} tok/s")
    elif stage == "evaluating" and run.get("total"):
        if run.get("model"):
            of = f" (model {run['model_index']} of {run['models']})" if run.get("models", 1) > 1 else ""
            bits[0] += f" {run['model']}{of}"
        bits.append(f"items {run.get('done') or 0}/{run['total']}")
    if stage in ("training", "evaluating") and run.get("eta_s") is not None:
        bits.append(f"ETA {duration_text(run['eta_s'])}")
    if stage == "training" and run.get("stop_at"):
        bits.append(f"stops by {datetime.fromisoformat(run['stop_at']).astimezone():%H:%M} for the deadline")
    return ", ".join(bits)
def serving_status(cfg: Config, registry: Registry, target: Any) -> dict[str, Any]:
    """The serving part of ``status --json``.

    Keys: ``mode``; ``url``; ``server`` (the managed server supervisor's last
    report or null); ``last_verified`` (null or ``{release, run_id, at,
    verdict, url}``: what a server was last verified to serve, and when);
    ``request`` (the per-request selection of the champion for an mlx-lm
    server: ``{"model": base path, "adapters": resolved release or null}``).
    """
    from daemon.serving.server import read_server_state

    last = registry.last_verified_handoff()
    server = read_server_state(cfg.paths.state_dir) if cfg.serving.mode == "managed" else None
    return {
        "mode": cfg.serving.mode,
        "url": (server or {}).get("url") or cfg.serving.url,
        "server": server,
        "last_verified": None
        if last is None
        else {
            "release": last.release_path or None,
            "run_id": last.served_run_id,
            "at": last.finished_at.isoformat(timespec="seconds"),
            "verdict": last.verdict,
            "url": last.url,
        },
        "request": {"model": str(cfg.paths.base_model), "adapters": str(target) if target else None},
    }


def render_status(status: dict[str, Any]) -> str:
    """Human-readable lines for the terminal (local times, no microseconds)."""
    lines = []
    champ = status["champion"]
    verb = "rolled back to" if champ and champ.get("rolled_back") else "promoted"
    lines.append(
        "champion:   base model (nothing promoted yet)"
        if champ is None
        else f"champion:   {'run ' + str(champ['run_id']) if champ.get('release', True) else 'base model'} "
        f"({verb} {_local(champ['promoted_at'])} by {champ['decided_by']})"
    )
    lines.append(f"current:    {status['current'] or '-'}")
    lines += _serving_lines(status.get("serving"))
    last = status["last_run"]
    if last is None:
        lines.append("last run:   none")
    else:
        lines.append(f"last run:   {last['id']} {last['status']} ({last['trigger']}, started {_local(last['started_at'])})")
        if last.get("failure_reason"):
            lines.append(f"            reason: {last['failure_reason'].splitlines()[0]}")
        training = "; ".join(t for t in (last.get("processes"), last.get("training")) if t)
        if training:
            lines.append(f"            training: {training}")
        if last.get("report"):
            lines.append(f"            report: {last['report']}")
    event = status.get("last_event")
    if event:  # a champion change after the last run (nightshift rollback) is the newest news
        lines.append(f"last event: {event['text']}")
    run = status.get("running")
    if run:
        lines.append("running:    " + running_text(run))
    for run_id in status.get("pending_approval") or []:
        since = (status.get("pending_since") or {}).get(str(run_id))
        when = f" since {_local(since)}" if since else ""
        lines.append(f"approval:   run {run_id} awaits approval{when} (nightshift approve {run_id} / nightshift reject {run_id})")
    for rec in status.get("recoveries") or []:
        lines.append(f"recovered:  {_local(rec['at'])} {rec['action']}: {rec['detail']}")
    daemon = status.get("daemon") or {}
    lines.append(f"daemon:     {'running, pid ' + str(daemon.get('pid')) if daemon.get('running') else 'not running'}")
    next_run = status.get("next_run")
    lines.append(f"next run:   {_local(next_run) if next_run else '- (start the daemon: nightshift start, or install the LaunchAgent)'}")
    reh = status.get("rehearsal")
    if reh:
        lines.append(f"rehearsal:  {'passed' if reh.get('ok') else 'FAILED'} at {_local(reh.get('created_at'))}")
    failed = [r for r in (status.get("notify") or {}).get("results", []) if not r.get("ok")]
    for r in failed:
        lines.append(f"notify:     {r['channel']} FAILED for run {status['notify']['run_id']}: {r['error']}")
    lines.append(f"BLAS:       {status['blas']}")
    return "\n".join(lines)


def _serving_lines(sv: dict[str, Any] | None) -> list[str]:
    if not sv:
        return []
    lines = []
    if sv["mode"] == "none":
        req = sv["request"]
        lines.append("serving:    nothing is handed off (serving.mode: none); an mlx-lm client selects the champion")
        lines.append(f'            per request: "model": "{req["model"]}", "adapters": "{req["adapters"] or "(none: base model)"}"')
    else:
        server = sv.get("server") or {}
        state = f" ({server.get('state')}{': ' + server['error'] if server.get('error') else ''})" if server else ""
        lines.append(f"serving:    {sv['mode']} at {sv.get('url') or '-'}{state}")
    last = sv.get("last_verified")
    if last:
        lines.append(f"verified:   {last['verdict']} at {_local(last['at'])}")
    elif sv["mode"] != "none":
        lines.append("verified:   never (no hand-off has been verified yet)")
    return lines
