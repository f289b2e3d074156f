"""Check results and the preflight report (pure data, rendering included)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_TABLE_DETAILS = 5
"""Detail lines printed under a warning or failure in the table (all are in ``--json``)."""

MAX_DETAILS = 200
"""Individual findings kept per result (the message gives the total)."""


class Level(StrEnum):
    """How bad a check's outcome is. Any ``fail`` stops the run before training."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one named check.

    Attributes:
        name: dotted check name, e.g. ``dataset.leaked_token``.
        level: ok, warn or fail.
        message: one line naming the file, line or key, and the fix.
        duration_s: wall time of the check that produced it (seconds).
        details: every individual finding behind ``message`` (e.g. one per
            dataset line), when there are several.
    """

    name: str
    level: Level
    message: str
    duration_s: float
    details: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "name": self.name,
            "level": self.level.value,
            "message": self.message,
            "duration_s": round(self.duration_s, 4),
            "details": list(self.details),
        }


def result(name: str, level: Level, message: str, details: Iterable[str] = ()) -> CheckResult:
    """A check's result; its duration is filled in by the runner.

    ``details`` are cut to the first :data:`MAX_DETAILS` findings.
    """
    return CheckResult(name, level, message, 0.0, tuple(details)[:MAX_DETAILS])


def grouped(name: str, level: Level, lines: list[str]) -> CheckResult:
    """One result for several findings of a kind: the first in full, then a count."""
    message = lines[0] if len(lines) == 1 else f"{lines[0]} (+{len(lines) - 1} more)"
    return result(name, level, message, lines)


@dataclass(frozen=True)
class PreflightReport:
    """All check results of one preflight, in the order they ran.

    Attributes:
        checks: every result, ok ones included.
        smoke: the smoke child's raw measurements (``--smoke``), else None.
        duration_s: wall time of the whole preflight (seconds).
    """

    checks: list[CheckResult]
    smoke: dict[str, Any] | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings allowed)."""
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        """The failed checks."""
        return [c for c in self.checks if c.level is Level.FAIL]

    @property
    def warnings(self) -> list[CheckResult]:
        """The checks that passed with a warning."""
        return [c for c in self.checks if c.level is Level.WARN]

    def summary(self) -> str:
        """One line: ``preflight failed: 2 failed, 1 warning, 14 ok (3.2 s)``."""
        n_fail, n_warn = len(self.failures), len(self.warnings)
        n_ok = len(self.checks) - n_fail - n_warn
        verdict = "passed" if self.ok else "failed"
        return (
            f"preflight {verdict}: {n_fail} failed, {n_warn} warning{'s' if n_warn != 1 else ''}, "
            f"{n_ok} ok ({self.duration_s:.1f} s)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: ``ok``, counts, ``checks`` and ``smoke``."""
        return {
            "ok": self.ok,
            "failed": len(self.failures),
            "warnings": len(self.warnings),
            "duration_s": round(self.duration_s, 4),
            "checks": [c.to_dict() for c in self.checks],
            "smoke": self.smoke,
        }

    def render_table(self) -> str:
        """A fixed-width table, one check per line, failures' details indented below."""
        width = max([len(c.name) for c in self.checks] + [5])
        lines = [f"{'LEVEL':<5}  {'CHECK':<{width}}  {'TIME':>7}  MESSAGE"]
        for c in self.checks:
            label = c.level.value.upper() if c.level is not Level.OK else "ok"
            first, *rest = c.message.splitlines() or [""]  # a cell is one line; more goes below it
            lines.append(f"{label:<5}  {c.name:<{width}}  {c.duration_s:>6.2f}s  {first}")
            for extra in rest:
                lines.append(f"{'':<5}  {'':<{width}}  {'':>7}  {extra.strip()}")
            if c.level is not Level.OK and len(c.details) > 1:
                for detail in c.details[:MAX_TABLE_DETAILS]:
                    lines.append(f"{'':<5}  {'':<{width}}  {'':>7}  - {detail}")
                if len(c.details) > MAX_TABLE_DETAILS:
                    more = len(c.details) - MAX_TABLE_DETAILS
                    lines.append(f"{'':<5}  {'':<{width}}  {'':>7}  ... {more} more (see --json)")
        lines.append(self.summary())
        return "\n".join(lines)
