"""Hand-off, verification and automatic rollback.

After the champion changes (a promotion, or ``nightshift rollback``),
:func:`hand_off_or_roll_back` hands the new release to the server
(``serving.mode``), waits until the server is healthy, replays a sample of
eval prompts (:mod:`daemon.serving.probes`) and compares the replies with the
ones recorded for the new champion. When any of that fails, or a stop is
requested meanwhile, the previous champion is put back through the same swap
and registry path (a ``rollback`` row in the promotion log with the reason),
handed off and verified in turn. Every attempt is recorded in the registry's
``handoffs`` table, which the report and ``nightshift status`` read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from daemon import clock, shutdown
from daemon.config import Config
from daemon.errors import HandoffFailed, Interrupted, NightshiftError, SuiteError
from daemon.faults import fault_point
from daemon.notify import notify_rollback
from daemon.registry import Registry
from daemon.serving.hook import run_reload_hook
from daemon.serving.probes import ProbeOutcome, run_probes, select_probes
from daemon.serving.server import (
    PAUSE_FILE,
    Supervisor,
    check_health,
    read_server_state,
    serving_dir,
    supervisor_alive,
)

log = structlog.get_logger("nightshift.serving")

ROLLBACK_ACTOR = "rollback"
"""``decided_by`` of the promotion row an automatic rollback writes."""


@dataclass(frozen=True)
class Target:
    """A model the server should serve.

    Attributes:
        release: resolved release directory, or '' for the base model alone.
        model_id: its registry model row.
        run_id: the run that trained it (None for the base).
        label: how reports name it (``run-0007``, ``the base model``).
        replies: its recorded ``eval_results`` rows (the probes' expected replies).
    """

    release: str
    model_id: int
    run_id: int | None
    label: str
    replies: Sequence[Any] = ()


@dataclass
class HandoffResult:
    """One hand-off attempt and its verification (stored as a ``handoffs`` row)."""

    ok: bool
    mode: str
    verdict: str
    url: str | None = None
    reason: str | None = None
    duration_s: float = 0.0
    probes: ProbeOutcome = field(default_factory=ProbeOutcome)


def target_label(release: str) -> str:
    """``run-0007`` for a release dir, ``the base model`` for ''."""
    return Path(release).name if release else "the base model"


# ------------------------------------------------------------------ sessions


class ServingSession:
    """What the hand-offs of one command share: a managed server started for them when none runs.

    In ``managed`` mode with no live supervisor (no ``nightshift start`` or
    ``nightshift serve`` on this state dir), the first hand-off starts one in
    this process; :meth:`close` stops it, so nothing is left running.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.own: Supervisor | None = None

    def ensure_server(self) -> None:
        """Start a temporary supervisor when managed mode has none."""
        if self.cfg.serving.mode != "managed" or self.own is not None:
            return
        if not supervisor_alive(self.cfg.paths.state_dir):
            self.own = Supervisor(self.cfg)
            self.own.start()

    def close(self) -> None:
        """Stop the temporary server, if this session started one."""
        if self.own is not None:
            self.own.stop()
            self.own = None


@contextmanager
def serving_session(cfg: Config) -> Iterator[ServingSession]:
    """A :class:`ServingSession` closed on exit (the temporary server stopped)."""
    session = ServingSession(cfg)
    try:
        yield session
    finally:
        session.close()


@contextmanager
def paused_server(cfg: Config, run_id: int) -> Iterator[None]:
    """Stop the managed server while the block runs (``serving.pause_during_training``).

    Writes ``<state_dir>/serving/pause.json`` naming this process; a live
    supervisor stops the server and waits. The file is removed on exit whatever
    happened, and the supervisor brings the server back on ``current``. A dead
    process's pause file is ignored, so a crash never keeps the server down.
    """
    sv = cfg.serving
    if sv.mode != "managed" or not sv.pause_during_training:
        yield
        return
    import os

    path = serving_dir(cfg.paths.state_dir) / PAUSE_FILE
    path.write_text(json.dumps({"pid": os.getpid(), "run_id": run_id}), encoding="utf-8")
    try:
        deadline = time.monotonic() + sv.stop_grace_s + 10
        while supervisor_alive(cfg.paths.state_dir) and time.monotonic() < deadline:
            state = read_server_state(cfg.paths.state_dir) or {}
            if state.get("state") in ("paused", "stopped"):
                break
            shutdown.wait(0.1)
        log.info("server_paused", run_id=run_id)
        yield
    finally:
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------ hand-off


def _wait_managed(cfg: Config, release: str, since: float) -> str:
    """Wait until the supervisor runs a healthy server on ``release``; returns its URL.

    Raises:
        HandoffFailed: it failed to start, stopped, or did not come up in time.
        Interrupted: a stop was requested.
    """
    sv = cfg.serving
    state_dir = cfg.paths.state_dir
    deadline = time.monotonic() + sv.health_timeout_s + sv.stop_grace_s + 10
    name = target_label(release)
    while True:
        st = read_server_state(state_dir) or {}
        if st.get("release") == release and float(st.get("updated_at") or 0) >= since:
            if st.get("state") == "running":
                return str(st["url"])
            if st.get("state") == "failed":
                raise HandoffFailed(f"the managed server could not serve {name}: {st.get('error')}")
        if not supervisor_alive(state_dir):
            raise HandoffFailed(f"the managed server's supervisor stopped before it served {name}")
        if shutdown.stop_requested():
            raise Interrupted(f"{shutdown.stop_reason()} during the hand-off of {name}")
        if time.monotonic() > deadline:
            raise HandoffFailed(
                f"the managed server did not come up on {name} at {st.get('url', '?')} within "
                f"{sv.health_timeout_s:g} s (state: {st.get('state', 'unknown')})"
            )
        shutdown.wait(0.05)  # wakes at once on a stop


def _wait_healthy(cfg: Config, url: str) -> None:
    sv = cfg.serving
    deadline = time.monotonic() + sv.health_timeout_s
    while True:
        problem = check_health(url, sv.timeout_s)
        if problem is None:
            return
        if shutdown.stop_requested():
            raise Interrupted(f"{shutdown.stop_reason()} while waiting for {url}")
        if time.monotonic() > deadline:
            raise HandoffFailed(f"the server at {url} was not healthy within {sv.health_timeout_s:g} s: {problem}")
        shutdown.wait(0.2)


def hand_off(
    cfg: Config,
    session: ServingSession,
    target: Target,
    *,
    other: Target | None,
    since: float,
    seed: int = 0,
) -> HandoffResult:
    """Hand ``target`` to the server and verify that it serves it.

    Args:
        session: the command's serving session (may start a managed server).
        other: the model being replaced (its replies tell "still serves the old one").
        since: ``time.time()`` before ``current`` changed (older supervisor reports are stale).
        seed: seeds the probe sample (the run id).

    Returns:
        The result; ``ok`` is False with a one-line ``reason`` on failure.

    Raises:
        Interrupted: a stop was requested meanwhile (nothing is left running by the hook).
    """
    sv = cfg.serving
    started = time.monotonic()
    if sv.mode == "none":
        return HandoffResult(
            ok=True,
            mode="none",
            verdict=(
                f"nothing handed off (serving.mode: none): a client selects {target.label} per request with "
                '"model": the base model path and "adapters": the release path (nightshift status --json)'
                if target.release
                else "nothing handed off (serving.mode: none): clients use the base model"
            ),
        )
    url: str | None = sv.url
    try:
        if sv.mode == "managed":
            session.ensure_server()
            url = _wait_managed(cfg, target.release, since)
        else:
            run_reload_hook(cfg, target.release, target.run_id)
            assert url is not None  # config validation requires serving.url with mode: command
            _wait_healthy(cfg, url)
        try:
            suite = _load_suite(cfg)
            probes = select_probes(
                suite, target.replies, other.replies if other else None,
                count=sv.probes, default_max_tokens=cfg.evaluation.max_tokens, seed=seed,
            )
        except SuiteError as exc:
            log.warning("probes_unavailable", error=str(exc).splitlines()[0])
            probes = []
        fault_point("handoff:verifying")  # the server is up (managed: ours), the run is handing_off
        outcome = run_probes(url, probes, model=sv.model, timeout_s=sv.probe_timeout_s)
    except HandoffFailed as exc:
        return HandoffResult(
            ok=False, mode=sv.mode, verdict=f"hand-off of {target.label} failed", url=url,
            reason=str(exc), duration_s=time.monotonic() - started,
        )
    verdict = outcome.verdict(target.label, other.label if other else None, sv.min_match_share)
    ok = outcome.passed(sv.min_match_share)
    outcome.unconfirmed = ok and outcome.indistinct(other.label if other else None)  # kept, not verified
    return HandoffResult(
        ok=ok, mode=sv.mode, verdict=verdict, url=url, reason=None if ok else f"{verdict} at {url}",
        duration_s=time.monotonic() - started, probes=outcome,
    )


def _load_suite(cfg: Config) -> Any:
    from daemon.suite import load_suite

    return load_suite(cfg.paths.eval_suite)


# ------------------------------------------------------------------ champion switch + rollback


def champion_target(registry: Registry, *, base_model_id: int | None) -> Target | None:
    """The registry's champion as a hand-off :class:`Target` (no replies yet), or None.

    ``base_model_id``: the base model row to use when nothing was promoted yet.
    """
    champ = registry.champion()
    if champ is not None:
        promo, model = champ
        release = str(Path(promo.release_path).resolve()) if promo.release_path else ""
        return Target(release=release, model_id=model.id, run_id=model.run_id, label=target_label(release))
    if base_model_id is None:
        return None
    return Target(release="", model_id=base_model_id, run_id=None, label=target_label(""))


def recorded_replies(registry: Registry, model_id: int, *, run_id: int | None = None) -> list[Any]:
    """The eval rows recorded for ``model_id``: in run ``run_id`` when it scored it, else its newest eval set."""
    if run_id is not None:
        for es in registry.eval_sets(run_id):
            if es.model_id == model_id:
                return registry.eval_results(es.id)
    latest = registry.latest_eval_set(model_id)
    return registry.eval_results(latest.id) if latest is not None else []



def switch_champion(
    cfg: Config, registry: Registry, target: Target, *, run_id: int | None, reason: str, decided_by: str
) -> None:
    """Make ``target`` the champion through the promotion protocol
    (:func:`daemon.promote.promote_release`: intent, ``current`` swap, promotion row, intent cleared).

    A ``target`` with no release (the base model) removes ``current``. Call holding the run lock.

    Raises:
        RegistryError, OSError: nothing changed (the swap is undone when the commit fails;
            a kill at any step is repaired by :func:`daemon.promote.reconcile`).
    """
    from daemon.promote import promote_release

    promote_release(
        cfg.paths.state_dir,
        registry,
        release=Path(target.release) if target.release else None,
        to_model_id=target.model_id,
        run_id=run_id,
        reason=reason,
        decided_by=decided_by,
        finish_run=False,
    )


@dataclass
class ChangeOutcome:
    """How a champion change ended: kept (hand-off verified) or rolled back, and why."""

    kept: bool
    reason: str | None
    results: list[HandoffResult]


def hand_off_or_roll_back(
    cfg: Config,
    registry: Registry,
    session: ServingSession,
    *,
    new: Target,
    previous: Target,
    since: float,
    run_id: int | None,
    kind: str,
    seed: int = 0,
    record_stage: Callable[[str, Callable[[], Any]], Any] | None = None,
) -> ChangeOutcome:
    """Hand off ``new`` (already the champion); on failure put ``previous`` back and hand it off.

    Args:
        new: the champion just switched to.
        previous: the champion before (the rollback target).
        since: ``time.time()`` taken before ``current`` changed.
        run_id: the run recorded with the hand-offs and a rollback row.
        kind: ``promotion`` or ``rollback`` (``nightshift rollback``), stored with the rows.
        record_stage: wraps a step as a timed run stage (``handoff``, ``rollback``).

    Returns:
        ``kept`` True when ``new`` was verified; else the one-line reason.
    """
    stage: Callable[[str, Callable[[], Any]], Any] = record_stage or (lambda _name, fn: fn())
    results: list[HandoffResult] = []
    interrupted: Interrupted | None = None

    def first() -> HandoffResult:
        return hand_off(cfg, session, new, other=previous, since=since, seed=seed)

    result: HandoffResult
    try:
        result = stage("handoff", first)
    except Interrupted as exc:
        interrupted = exc
        result = HandoffResult(ok=False, mode=cfg.serving.mode, verdict=f"hand-off of {new.label} interrupted", reason=str(exc))
    _record(registry, result, new, run_id=run_id, kind=kind)
    results.append(result)
    if result.ok:
        event = "handoff_unconfirmed" if result.probes.unconfirmed else "handoff_verified"
        log.info(event, target=new.label, verdict=result.verdict)
        return ChangeOutcome(kept=True, reason=None, results=results)

    reason = f"hand-off of {new.label} failed: {result.reason}"
    log.error("handoff_failed", target=new.label, reason=result.reason)
    back_since = time.time()

    def roll_back() -> HandoffResult:
        switch_champion(
            cfg, registry, previous, run_id=run_id, decided_by=ROLLBACK_ACTOR,
            reason=f"rolled back to {previous.label}: {reason}",
        )
        if interrupted is not None:  # shutting down: put the champion back, hand nothing off
            return HandoffResult(ok=False, mode=cfg.serving.mode, verdict="not handed off (stopping)", reason=str(interrupted))
        try:
            return hand_off(cfg, session, previous, other=new, since=back_since, seed=seed)
        except Interrupted as exc:
            return HandoffResult(ok=False, mode=cfg.serving.mode, verdict=f"hand-off of {previous.label} interrupted", reason=str(exc))

    back: HandoffResult = stage("rollback", roll_back)
    _record(registry, back, previous, run_id=run_id, kind="auto-rollback")
    results.append(back)
    if not back.ok:
        log.error("rollback_handoff_failed", target=previous.label, reason=back.reason)
    return ChangeOutcome(kept=False, reason=reason, results=results)


def _record(registry: Registry, result: HandoffResult, target: Target, *, run_id: int | None, kind: str) -> None:
    try:
        registry.add_handoff(
            run_id=run_id,
            kind=kind,
            mode=result.mode,
            release_path=target.release,
            served_run_id=target.run_id,
            url=result.url,
            ok=result.ok,
            verdict=result.verdict,
            reason=result.reason,
            duration_s=result.duration_s,
            probes=json.dumps(result.probes.to_dict()),
            finished_at=clock.now(),
        )
    except NightshiftError as exc:  # the record must not turn a verified hand-off into a failure
        log.error("handoff_record_failed", error=str(exc))


def rollback_champion(
    cfg: Config, registry: Registry, *, to_run: int | None, who: str, why: str | None
) -> tuple[Target, ChangeOutcome]:
    """``nightshift rollback``: make an earlier release the champion, hand it off and verify it.

    Call while holding the run lock. A failed hand-off puts the champion from
    before the rollback back (and hands that off), like a failed promotion.

    Args:
        to_run: the run whose release to go back to; None: the previous champion.
        who: recorded as ``decided_by``.
        why: recorded in the promotion row's reason.

    Returns:
        The target and how the change ended.

    Raises:
        RegistryError: nothing promoted yet, no such release, it was removed, or it is already the champion.
    """
    from daemon.errors import RegistryError

    current = champion_target(registry, base_model_id=None)
    if current is None:
        raise RegistryError("Nothing has been promoted yet: there is nothing to roll back.")
    # Every champion so far, oldest first: (release path or '' for the base, model id).
    history: list[tuple[str, int]] = []
    for promo in registry.promotions():
        if not history:  # the base model the first promotion replaced
            base_id = promo.from_model_id or registry.get_model(promo.to_model_id).parent_base_id
            if base_id is not None:
                history.append(("", base_id))
        history.append((promo.release_path or "", promo.to_model_id))
    resolved = [(str(Path(r).resolve()) if r else "", m) for r, m in history]
    if to_run is None:
        earlier = [(r, m) for r, m in reversed(resolved) if r != current.release]
        if not earlier:
            raise RegistryError("There is no earlier champion to roll back to (see `nightshift releases`).")
        release, model_id = earlier[0]
    else:
        wanted = f"run-{to_run:04d}"
        found = [(r, m) for r, m in reversed(resolved) if r and Path(r).name == wanted]
        if not found:
            raise RegistryError(f"Run {to_run} was never promoted: no release {wanted} (see `nightshift releases`).")
        release, model_id = found[0]
    if release and not Path(release).is_dir():
        raise RegistryError(f"Release {release} no longer exists (removed by gc?); pick another with --to.")
    if release == current.release:
        raise RegistryError(f"{target_label(release)} is already the champion.")
    model = registry.get_model(model_id)
    target = Target(
        release=release, model_id=model.id, run_id=model.run_id, label=target_label(release),
        replies=recorded_replies(registry, model.id),
    )
    current = replace(current, replies=recorded_replies(registry, current.model_id))
    since = time.time()
    switch_champion(
        cfg, registry, target, run_id=None, decided_by=who,
        reason=f"nightshift rollback by {who} from {current.label}: {why or 'no reason given'}",
    )
    with serving_session(cfg) as session:
        outcome = hand_off_or_roll_back(
            cfg, registry, session, new=target, previous=current, since=since, run_id=None, kind="rollback"
        )
    notify_rollback(  # never raises
        cfg, registry, kept=outcome.kept, from_model_id=current.model_id, to_model_id=target.model_id,
        headline=f"rolled back to {target.label} by {who}: {why or 'no reason given'}" if outcome.kept
        else f"rollback to {target.label} by {who} undone: {outcome.reason}",
    )
    return target, outcome
