"""The only wall clock. Tests patch :func:`now` instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """Current time as an aware UTC datetime."""
    return datetime.now(UTC)


def local_text(when: datetime | str | None, *, seconds: bool = False) -> str:
    """``when`` for people: the machine's local time, no microseconds (``2026-12-02 01:00 CET``).

    JSON output keeps UTC ISO 8601; this is for every human-facing time (terminal lines,
    tables, the Markdown and HTML reports). ``when`` may be an ISO 8601 string (as stored
    in JSON-ready dicts). A naive ``when`` is taken to be UTC (the registry stores UTC).
    ``None`` or ``""`` -> ``"-"``.

    Raises:
        ValueError: ``when`` is a string that is not ISO 8601.
    """
    if not when:
        return "-"
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    local = when.astimezone()
    text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    zone = local.strftime("%Z")
    return f"{text} {zone}" if zone else text


def duration_text(seconds: float | None) -> str:
    """A duration for people: ``42s``, ``3m05s``, ``2h07m``; ``None`` -> ``"-"``."""
    if seconds is None:
        return "-"
    total = max(0, round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
