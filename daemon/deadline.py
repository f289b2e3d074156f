"""``training.deadline``: when a night must be over, and when training must stop for that.

Pure functions (no clock, no registry): the train stage passes the run's start
time and the durations of the last nights' post-training stages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")

POST_TRAIN_SAFETY = 1.25
"""Factor on the slowest recent post-training time (evaluation etc. vary night to night)."""
POST_TRAIN_HISTORY = 3
"""How many recent nights' post-training times the estimate looks at."""
DEFAULT_RESERVE_SHARE = 0.25
"""Without history, this share of the time until the deadline is kept for evaluation and the rest."""


@dataclass(frozen=True)
class DeadlineSpec:
    """A parsed ``training.deadline``: a local clock time, or a duration from the run's start.

    Attributes:
        clock: ``(hour, minute)`` for ``06:30``, else None.
        duration_s: seconds for ``5h``/``90m``/``3600s``, else None.
    """

    clock: tuple[int, int] | None = None
    duration_s: float | None = None


def parse_deadline(text: str) -> DeadlineSpec:
    """Parse ``HH:MM`` (local time) or a duration (``5h``, ``90m``, ``1h30m``, ``3600s``; ``3600``: seconds).

    Raises:
        ValueError: neither form, or a zero duration; the message says what is accepted.
    """
    value = str(text).strip().lower().replace(" ", "")
    m = _CLOCK.match(value)
    if m:
        return DeadlineSpec(clock=(int(m.group(1)), int(m.group(2))))
    if value.isdigit():
        seconds = float(value)
    else:
        d = _DURATION.match(value)
        if not value or d is None or not any(d.groups()):
            raise ValueError(
                f"must be a local time HH:MM or a duration such as 5h, 90m, 1h30m or 3600s, quoted "
                f'(deadline: "06:30" or deadline: "5h"), got {text!r}'
            )
        h, mi, s = (int(g) if g else 0 for g in d.groups())
        seconds = float(h * 3600 + mi * 60 + s)
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    return DeadlineSpec(duration_s=seconds)


def deadline_at(spec: DeadlineSpec, start: datetime) -> datetime:
    """The deadline as an aware datetime: ``start`` + duration, or the first ``HH:MM`` after ``start``.

    A clock time is read in ``start``'s zone (pass the schedule's local time):
    a run starting at 23:00 with ``06:30`` ends the next morning.

    Raises:
        ValueError: ``start`` is naive.
    """
    if start.tzinfo is None:
        raise ValueError("start must be an aware datetime")
    if spec.duration_s is not None:
        return start + timedelta(seconds=spec.duration_s)
    assert spec.clock is not None
    hour, minute = spec.clock
    candidate = start.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= start:
        candidate += timedelta(days=1)
    return candidate


def post_training_reserve_s(recent_s: list[float], time_left_s: float) -> float:
    """Seconds to keep after training for evaluation, the decision, promotion and the report.

    Args:
        recent_s: post-training wall times of the last nights (seconds, newest first).
        time_left_s: seconds from now to the deadline.

    Returns:
        ``POST_TRAIN_SAFETY`` x the slowest of the last ``POST_TRAIN_HISTORY``
        nights; without history, ``DEFAULT_RESERVE_SHARE`` of ``time_left_s``.
    """
    recent = [s for s in recent_s[:POST_TRAIN_HISTORY] if s >= 0]
    if recent:
        return POST_TRAIN_SAFETY * max(recent)
    return DEFAULT_RESERVE_SHARE * max(time_left_s, 0.0)


def should_stop(now_unix: float, stop_at_unix: float, next_interval_s: float, final_eval_s: float) -> bool:
    """True when training must stop now to end (with its final validation) by ``stop_at_unix``.

    Args:
        now_unix: the current time (Unix seconds).
        stop_at_unix: when training must be over (Unix seconds).
        next_interval_s: the wall time of the last reporting interval (another one would take about as long).
        final_eval_s: the wall time of the last validation pass (one more follows the stop).
    """
    return now_unix + max(next_interval_s, 0.0) + max(final_eval_s, 0.0) >= stop_at_unix
