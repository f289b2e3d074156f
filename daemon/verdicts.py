"""What the promotion gate decided: verdicts and the decision record (no statistics here).

:func:`daemon.gate.decide_promotion` builds a :class:`Decision`; the pipeline stores
:meth:`Decision.to_dict` as JSON in the registry and the report reads it back with
:meth:`Decision.from_dict`. :mod:`daemon.gate` re-exports every name.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Verdict(str, Enum):
    """The gate's finding on one category (stored as its lowercase value)."""

    BETTER = "better"
    """Passed its guard and improved (one-sided lower bound above 0)."""
    NON_INFERIOR = "non-inferior"
    """Passed its guard: shown not to have dropped by ``guard`` or more."""
    REGRESSED = "regressed"
    """Not shown non-inferior and the observed mean dropped."""
    INCONCLUSIVE = "inconclusive"
    """Not shown non-inferior although the observed mean did not drop (too noisy)."""
    UNGUARDED = "unguarded"
    """Cannot guard its margin with its items, under the ``block`` policy."""
    FLOOR_BREACH = "floor-breach"
    PRESERVE_BREACH = "preserve-breach"
    UNDERPOWERED = "underpowered"
    """Only in decisions stored by gates before the guard policy (read back, never produced)."""


#: Verdicts that block promotion.
BLOCKING_VERDICTS = frozenset(
    {
        Verdict.REGRESSED,
        Verdict.INCONCLUSIVE,
        Verdict.UNGUARDED,
        Verdict.FLOOR_BREACH,
        Verdict.PRESERVE_BREACH,
    }
)


@dataclass(frozen=True)
class CompositeResult:
    """The weighted composite's paired comparison (``sum w_c * mean_c / sum w_c``).

    Attributes:
        method: ``stratified-bootstrap`` or ``mcnemar-exact``.
        lower_bound: one-sided ``confidence`` lower bound of ``delta``.
        p_value: p for H0 ``delta <= min_gain`` (bootstrap) or ``delta <= 0`` (McNemar).
        counted: the categories in the composite (at least ``min_items`` items each).
    """

    champion: float
    challenger: float
    delta: float
    lower_bound: float
    method: str
    p_value: float | None = None
    min_gain: float = 0.0
    confidence: float = 0.95
    resamples: int = 0
    counted: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EmptyReplies:
    """Items with at least one empty reply, pooled over categories, and their McNemar test.

    Attributes:
        only_challenger, only_champion: discordant items (empty for one model only).
        p_value: exact one-sided McNemar p for H1 "the challenger leaves more items empty".
        blocked: the increase exceeds ``allowed`` and ``p_value < 1 - confidence``.
    """

    champion: int
    challenger: int
    only_challenger: int
    only_champion: int
    p_value: float
    allowed: int
    blocked: bool


@dataclass(frozen=True)
class CategoryVerdict:
    """The gate's finding on one category (numbers in score units, 0..1).

    Attributes:
        delta: ``challenger_mean - champion_mean``.
        lo, hi: one-sided ``confidence`` lower and upper bounds of delta (together a two-sided
            ``2 * confidence - 1`` interval), widened for small samples.
        sd: observed SD of the per-item differences (clustered over repeats).
        guard: the drop shown not to have happened (H0 ``delta <= -guard``): ``margin`` unless
            ``widened``.
        widened: the category did not show its margin and cannot detect a drop of that size
            (``detectable > margin``), so the drop it can detect was tested instead.
        detectable: the drop it detects with probability ``power`` (tonight's SD, prior-pooled).
        counted: the category counts toward the composite (``n_items >= min_items``).
        p_value: p for H0 ``delta <= -guard`` (expanded paired bootstrap).
        non_inferior: H0 rejected.
        n_required: items needed to guard ``margin`` (or a smaller preserve ``tolerance``) at
            tonight's SD.
        repeats_required: samples per item that would guard it with these items (None:
            single-sample category, or no number of repeats can).
        preserve_guard, preserve_p: the drop tested for ``preserve`` categories, and its p.
        mcnemar_p: two-sided exact McNemar p (binary categories only).
    """

    name: str
    kind: str
    n_items: int
    weight: float
    champion_mean: float
    challenger_mean: float
    delta: float
    lo: float
    hi: float
    p_value: float
    verdict: Verdict
    margin: float
    guard: float
    widened: bool
    non_inferior: bool
    counted: bool = True
    sd: float = 0.0
    detectable: float = 0.0
    n_required: int = 0
    repeats: int = 1
    within_sd: float = 0.0
    repeats_required: int | None = None
    champion_ci: tuple[float, float] = (0.0, 0.0)
    challenger_ci: tuple[float, float] = (0.0, 0.0)
    mcnemar_p: float | None = None
    floor: float | None = None
    preserve: bool = False
    tolerance: float = 0.0
    preserve_guard: float = 0.0
    preserve_p: float | None = None
    champion_empty: int = 0
    challenger_empty: int = 0
    champion_unparsed: int = 0
    challenger_unparsed: int = 0

    @property
    def blocking(self) -> bool:
        """This category alone prevents promotion."""
        return self.verdict in BLOCKING_VERDICTS


@dataclass(frozen=True)
class Decision:
    """The gate's verdict with every number behind it.

    Attributes:
        promote: every check passed.
        reasons: one line per check, failed checks first (``FAILED <check>: ...`` /
            ``passed <check>: ...``).
        summary: one line for logs and notifications.
        headline: sentences the report leads with: every category whose observed drop exceeds
            its margin (significant or not), every category that could not guard its margin.
        composite: None after a hard sanity reject (mismatched items, NaN).
        checks: check name (sanity, empty_replies, superiority, non_inferiority, floors,
            preservation) -> passed.
        policy: the :class:`GatePolicy` numbers used.
    """

    promote: bool
    reasons: list[str]
    summary: str
    composite: CompositeResult | None
    categories: list[CategoryVerdict]
    checks: dict[str, bool] = field(default_factory=dict)
    champion_label: str = ""
    challenger_label: str = ""
    policy: dict[str, Any] = field(default_factory=dict)
    headline: list[str] = field(default_factory=list)
    empty: EmptyReplies | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists, verdicts strings; no NaN is stored)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        """Rebuild a decision stored with :meth:`to_dict` (also by older gates: unknown keys
        are dropped, missing ones take their defaults).

        Raises:
            KeyError, TypeError, ValueError: the dict is not a stored decision.
        """
        cats = []
        known = {f.name for f in dataclasses.fields(CategoryVerdict)}
        for c in data["categories"]:
            c = {k: v for k, v in c.items() if k in known}
            c["verdict"] = Verdict(c["verdict"])
            c["champion_ci"] = tuple(c.get("champion_ci") or (0.0, 0.0))
            c["challenger_ci"] = tuple(c.get("challenger_ci") or (0.0, 0.0))
            c.setdefault("guard", c.get("margin", 0.0))
            c.setdefault("widened", False)
            c.setdefault("non_inferior", c["verdict"] in (Verdict.BETTER, Verdict.NON_INFERIOR))
            cats.append(CategoryVerdict(**c))
        comp = data.get("composite")
        comp_known = {f.name for f in dataclasses.fields(CompositeResult)}
        empty = data.get("empty")
        return cls(
            promote=bool(data["promote"]),
            reasons=list(data["reasons"]),
            summary=str(data["summary"]),
            composite=CompositeResult(**{k: v for k, v in comp.items() if k in comp_known})
            if comp is not None
            else None,
            categories=cats,
            checks=dict(data.get("checks", {})),
            champion_label=str(data.get("champion_label", "")),
            challenger_label=str(data.get("challenger_label", "")),
            policy=dict(data.get("policy", {})),
            headline=list(data.get("headline", [])),
            empty=EmptyReplies(**empty) if empty is not None else None,
        )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
