"""Preflight check ``suite.guards``: can each eval-suite category guard its margin tonight?

The same computation as ``nightshift suite check`` (:func:`daemon.guards.check_suite_guards`).
"""

from __future__ import annotations

from daemon.config import Config
from daemon.errors import NightshiftError
from daemon.preflight.report import CheckResult, Level


def check_guards(cfg: Config) -> list[CheckResult]:
    """One result: ok when every category can guard its limit and can count toward a promotion;
    a warning naming the others (with the drop they catch and what they would need) otherwise.
    An unreadable suite is left to the suite checks (a warning here, not a second failure)."""
    from daemon.guards import check_suite_guards, describe

    try:
        result = check_suite_guards(cfg)
    except NightshiftError as exc:
        first, *rest = str(exc).splitlines() or [""]
        details = tuple(line.strip().removeprefix("- ") for line in rest if line.strip())
        if len(details) == 1:  # the table shows details only when there are several
            first, details = f"{first} ({details[0]})", ()
        return [CheckResult("suite.guards", Level.WARN, f"not checked: {first}", 0.0, details)]
    weak = [p for p in result.plans if not p.can_guard or not p.counted]
    src = f"paired SDs of run {result.from_run}" if result.from_run else "a prior SD of 0.5 (no night yet)"
    if not weak:
        return [
            CheckResult(
                "suite.guards",
                Level.OK,
                f"all {len(result.plans)} categories can guard their margin ({src})",
                0.0,
            )
        ]
    policy = (
        "the gate tests the drop each can catch instead (unguarded: widen)"
        if result.policy.unguarded == "widen"
        else "unguarded: block rejects every night until they can"
    )
    return [
        CheckResult(
            "suite.guards",
            Level.WARN,
            # an estimate before the night: the gate decides on tonight's own spread (a report says so)
            f"estimated before the night from {src}: {len(weak)} of {len(result.plans)} categories "
            f"may not guard their margin or count toward a promotion; {policy}; run `nightshift suite check`",
            0.0,
            tuple(f"{p.name}: {describe(p)}" for p in weak),
        )
    ]
