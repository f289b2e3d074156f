"""Tell the operator that a night ended: webhook, macOS notification, command hook.

Sent at the end of every night whatever its outcome (promoted, rejected,
failed, interrupted, awaiting approval) and after ``approve``/``reject``. One
line: outcome, reason, composite change, path of the HTML report.

A failing notifier never fails the night: its error is logged and written to
``<state_dir>/notify.json``, which ``nightshift status`` shows.

Channels (``notify`` section of the config):

- ``webhook_url``: one JSON POST. The body carries ``text`` (what Slack and
  Slack-compatible incoming webhooks such as Mattermost, Rocket.Chat or
  Discord's ``/slack`` endpoint display) and ``topic``/``title``/``message``
  (ntfy's JSON publishing: POST to the server's root URL with
  ``webhook_topic`` set; https://docs.ntfy.sh/publish/#publish-as-json), plus
  the structured fields ``outcome``, ``run_id``, ``reason``, ``composite``
  and ``report``.
- ``macos``: ``osascript`` shows a notification (macOS only); the text is
  passed as an argument, never spliced into the AppleScript source.
- ``command``: an argv list run without a shell; it gets the JSON body on
  stdin and ``NIGHTSHIFT_OUTCOME``, ``NIGHTSHIFT_RUN_ID``,
  ``NIGHTSHIFT_MESSAGE`` and ``NIGHTSHIFT_REPORT`` in its environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from daemon import clock
from daemon.config import Config, NotifyConfig

log = structlog.get_logger("nightshift")

STATUS_FILE = "notify.json"
OSASCRIPT = (
    "on run argv",
    "display notification (item 2 of argv) with title (item 1 of argv)",
    "end run",
)


@dataclass(frozen=True)
class Notice:
    """What a notifier sends about one run.

    Attributes:
        composite: (champion, challenger) composite scores when the gate decided.
        report: the HTML report's path (or the Markdown one when no HTML was written).
    """

    run_id: int | None
    """None for a champion change outside a night (``nightshift rollback``)."""
    outcome: str
    reason: str
    composite: tuple[float, float] | None
    report: str | None
    headline: str = ""
    """The outcome in one sentence (:func:`daemon.runsummary.headline`), as the report's headline."""

    @property
    def subject(self) -> str:
        """``nightshift run 7``, or ``nightshift`` for a change outside a night."""
        return "nightshift" if self.run_id is None else f"nightshift run {self.run_id}"

    @property
    def line(self) -> str:
        """The one line every channel shows: the report's headline, composite change, report path."""
        if self.headline:
            parts = [f"{self.subject}: {self.headline}"]
        else:
            parts = [f"{self.subject}: {self.outcome.replace('_', ' ')}"]
            if self.reason:
                parts.append(self.reason if len(self.reason) <= 200 else self.reason[:200] + "…")
        if self.composite is not None:
            a, b = self.composite
            parts.append(f"composite {a:.4f} -> {b:.4f} ({b - a:+.4f})")
        if self.report:
            parts.append(f"report: {self.report}")
        return " · ".join(parts)

    def payload(self, topic: str | None) -> dict[str, Any]:
        """The webhook's JSON body (Slack ``text``; ntfy ``topic``/``title``/``message``)."""
        # Slack reads `text` as mrkdwn, where `<url|label>` is a link: escape &, < and > as its
        # docs ask (https://api.slack.com/reference/surfaces/formatting#escaping).
        slack = self.line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        body: dict[str, Any] = {
            "text": slack,
            "title": f"{self.subject}: {self.outcome.replace('_', ' ')}",
            "message": self.line,
            "outcome": self.outcome,
            "run_id": self.run_id,
            "reason": self.reason,
            "composite": list(self.composite) if self.composite else None,
            "report": self.report,
        }
        if topic:
            body["topic"] = topic
        return body


def _webhook(cfg: NotifyConfig, notice: Notice) -> None:
    import httpx

    assert cfg.webhook_url is not None
    resp = httpx.post(cfg.webhook_url, json=notice.payload(cfg.webhook_topic), timeout=cfg.timeout_s)
    if resp.status_code >= 300:
        raise RuntimeError(f"HTTP {resp.status_code} from {cfg.webhook_url}: {resp.text[:200]}")


def _macos(cfg: NotifyConfig, notice: Notice) -> None:
    argv = ["osascript"]
    for line in OSASCRIPT:
        argv += ["-e", line]
    argv += [notice.subject, notice.line]
    _run(argv, cfg.timeout_s, None, None)


def _command(cfg: NotifyConfig, notice: Notice) -> None:
    assert cfg.command
    env = dict(os.environ)
    env.update(
        NIGHTSHIFT_OUTCOME=notice.outcome,
        NIGHTSHIFT_RUN_ID="" if notice.run_id is None else str(notice.run_id),
        NIGHTSHIFT_MESSAGE=notice.line,
        NIGHTSHIFT_REPORT=notice.report or "",
    )
    _run(list(cfg.command), cfg.timeout_s, json.dumps(notice.payload(None)), env)


def _run(argv: list[str], timeout_s: float, stdin: str | None, env: dict[str, str] | None) -> None:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except FileNotFoundError as exc:
        raise RuntimeError(f"{argv[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{argv[0]} did not finish within {timeout_s:g} s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"{argv[0]} exited with status {proc.returncode}: {tail[0][:200]}")


def send_notices(cfg: NotifyConfig, notice: Notice) -> list[dict[str, Any]]:
    """Send ``notice`` on every configured channel; never raises.

    Returns:
        One ``{"channel", "ok", "error"}`` per configured channel.
    """
    channels = []
    if cfg.webhook_url:
        channels.append(("webhook", _webhook))
    if cfg.macos:
        channels.append(("macos", _macos))
    if cfg.command:
        channels.append(("command", _command))
    results = []
    for name, send in channels:
        try:
            send(cfg, notice)
            results.append({"channel": name, "ok": True, "error": None})
        except Exception as exc:  # a notifier must never fail the night
            error = f"{type(exc).__name__}: {exc}"
            log.error("notify_failed", channel=name, run_id=notice.run_id, error=error)
            results.append({"channel": name, "ok": False, "error": error})
    return results


def notify_run(cfg: Config, registry: Any, run_id: int, report: Path | None) -> list[dict[str, Any]]:
    """Build the notice of ``run_id`` from the registry, send it, record the results.

    Never raises: a problem reading the run is recorded like a failing channel.

    Returns:
        The per-channel results (empty when no channel is configured).
    """
    ncfg = cfg.notify
    if not (ncfg.webhook_url or ncfg.macos or ncfg.command):
        return []
    try:
        from daemon.report import html_report_path
        from daemon.report.data import night_row

        row = night_row(registry.get_run(run_id))
        html = html_report_path(cfg.paths.state_dir, run_id)
        path = html if html.exists() else report
        notice = Notice(run_id=run_id, outcome=row.status, reason=row.reason, composite=row.composite,
                        report=str(path) if path else None, headline=row.headline)
        results = send_notices(ncfg, notice)
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        results = [{"channel": "all", "ok": False, "error": f"{type(exc).__name__}: {exc}"}]
        log.error("notify_failed", run_id=run_id, error=results[0]["error"])
    _record(cfg.paths.state_dir, run_id, results)
    return results


def notify_rollback(
    cfg: Config, registry: Any, *, kept: bool, headline: str, from_model_id: int, to_model_id: int
) -> list[dict[str, Any]]:
    """Tell the operator about ``nightshift rollback`` (a champion change outside a night).

    The newest run's report is rewritten first, whether or not a channel is
    configured (it then names the later champion change), and linked. Never raises.

    Args:
        kept: the rollback's hand-off was verified (outcome ``rolled_back``); else it was
            undone (outcome ``rollback_failed``).
        headline: the one sentence (who, to what, why; or why it was undone).
        from_model_id, to_model_id: the champion before and the rollback's target; the
            composite change is between the composites recorded when each was evaluated.

    Returns:
        The per-channel results (empty when no channel is configured).
    """
    from daemon.report import html_report_path, write_report

    report: Path | None = None
    last = registry.last_run()
    if last is not None:  # with or without a channel: the report must not contradict status
        html = html_report_path(cfg.paths.state_dir, last.id)
        try:  # refresh the formats that exist: the Markdown report, and the HTML one when written
            report = write_report(cfg, registry, last.id, html=html.exists())
            report = html if html.exists() else report
        except Exception as exc:  # noqa: BLE001 - the notice still goes out, without a link
            log.error("report_failed", run_id=last.id, error=f"{type(exc).__name__}: {exc}")
    ncfg = cfg.notify
    if not (ncfg.webhook_url or ncfg.macos or ncfg.command):
        return []
    try:
        before, after = model_composite(registry, from_model_id), model_composite(registry, to_model_id)
        notice = Notice(
            run_id=None, outcome="rolled_back" if kept else "rollback_failed", reason=headline,
            composite=(before, after) if before is not None and after is not None else None,
            report=str(report) if report is not None else None, headline=headline,
        )
        results = send_notices(ncfg, notice)
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        results = [{"channel": "all", "ok": False, "error": f"{type(exc).__name__}: {exc}"}]
        log.error("notify_failed", error=results[0]["error"])
    _record(cfg.paths.state_dir, None, results)
    return results


def model_composite(registry: Any, model_id: int, *, lookback: int = 200) -> float | None:
    """The composite recorded for ``model_id`` by the newest decided run that scored it
    (as challenger or champion), or None."""
    for run in registry.runs(limit=lookback):
        if not run.decision or model_id not in (run.challenger_model_id, run.champion_model_id):
            continue
        try:
            comp = json.loads(run.decision).get("composite") or {}
        except (ValueError, AttributeError):
            continue
        value = comp.get("challenger" if run.challenger_model_id == model_id else "champion")
        if isinstance(value, int | float):
            return float(value)
    return None


def _record(state_dir: Path, run_id: int | None, results: list[dict[str, Any]]) -> None:
    """Write ``notify.json`` (0600, temp + rename, no planted link followed); never raises."""
    from daemon.errors import StateDirError
    from daemon.statedir import write_private

    body = {"run_id": run_id, "at": clock.now().isoformat(timespec="seconds"), "results": results}
    try:
        write_private(state_dir / STATUS_FILE, json.dumps(body).encode("utf-8"))
    except (OSError, StateDirError) as exc:
        log.error("notify_record_failed", error=str(exc))


def last_notice_status(state_dir: Path) -> dict[str, Any] | None:
    """The newest recorded notification results ``{run_id, at, results}``, or None
    (``run_id`` is None after ``nightshift rollback``)."""
    path = state_dir / STATUS_FILE
    if path.is_symlink():  # a planted link is never read (nor written: see _record)
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
