"""Verification probes: replay some of the night's eval prompts against the server.

A probe is one greedy (temperature 0, one sample) eval item of a generating
category, sent as ``POST {url}/v1/chat/completions`` with the eval's messages
(system prompt included) and ``max_tokens``, and compared with the reply the
eval recorded for the model that should now be served (``expected``) and for
the one it replaces (``other``). Probes where the two recorded replies differ
are chosen first: only they can tell the two models apart.

The hand-off passes when at least ``serving.min_match_share`` of all probes,
and of the distinguishing probes, come back identical (whitespace at the ends
ignored). When the distinguishing probes match ``other`` instead, the verdict
says the server still serves the old model.

Rule for a hand-off nothing can confirm: when no probe tells the two models
apart (their recorded replies are identical on every probe sent), matching
replies prove nothing about which one is served. The verdict then says
``served replies match run-0002, but none of the probes tells it from run-0001
(identical replies): unconfirmed``; the promotion is kept (the replies the
operator's clients get are the ones the gate scored), the report and status call
it unconfirmed, never verified, and it is not rolled back.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.suite import Suite


@dataclass(frozen=True)
class Probe:
    """One eval prompt to replay, with the recorded replies to compare against."""

    category: str
    item_id: str
    messages: list[dict[str, str]]
    max_tokens: int
    expected: str
    other: str | None = None

    @property
    def distinguishing(self) -> bool:
        """True when the two models' recorded replies differ (the probe can tell them apart)."""
        return self.other is not None and self.other.strip() != self.expected.strip()


@dataclass
class ProbeOutcome:
    """What the server answered to the probes.

    Attributes:
        total: probes sent.
        matched: served reply == expected reply.
        distinguishing: probes whose expected and other replies differ.
        matched_distinguishing: distinguishing probes that matched expected.
        matched_other: distinguishing probes that matched the other model's reply.
        errors: one line per failed request (at most 3 kept).
        mismatches: up to 3 ``{category, item_id, expected, served}`` examples.
        compared: probes for which the other model's reply was recorded.
        unconfirmed: the replies matched but no probe could tell the models apart
            (set by :meth:`verdict`'s caller from :meth:`indistinct`).
    """

    total: int = 0
    matched: int = 0
    distinguishing: int = 0
    matched_distinguishing: int = 0
    matched_other: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    mismatches: list[dict[str, str]] = field(default_factory=list)
    compared: int = 0
    unconfirmed: bool = False

    def indistinct(self, other: str | None) -> bool:
        """Probes were sent with a model to tell apart (``other``), and none of them could."""
        return other is not None and self.total > 0 and self.distinguishing == 0

    def passed(self, min_share: float) -> bool:
        """At least ``min_share`` of all probes and of the distinguishing ones matched."""
        if self.total == 0:
            return True
        if self.matched < min_share * self.total:
            return False
        return self.distinguishing == 0 or self.matched_distinguishing >= min_share * self.distinguishing

    def still_other(self, min_share: float) -> bool:
        """The distinguishing probes match the replaced model: the server did not switch."""
        return self.distinguishing > 0 and self.matched_other >= min_share * self.distinguishing

    def verdict(self, target: str, other: str | None, min_share: float) -> str:
        """One line for the report, e.g. ``served = run-0007: 16/16 probes identical``."""
        if self.total == 0:
            return f"served = {target}: healthy (no greedy eval prompts to probe with)"
        if self.passed(min_share):
            if self.indistinct(other):
                why = "identical replies" if self.compared else f"no recorded replies of {other}"
                return (
                    f"served replies match {target}, but none of the {self.total} probes "
                    f"tells it from {other} ({why}): unconfirmed"
                )
            return f"served = {target}: {self.matched}/{self.total} probes identical"
        if other and self.still_other(min_share):
            return (
                f"the server still serves {other}: {self.matched_other}/{self.distinguishing} distinguishing "
                f"probes match {other}, {self.matched}/{self.total} match {target}"
            )
        if self.error_count == self.total:
            return f"no probe answered ({self.errors[0] if self.errors else 'error'})"
        return (
            f"served replies match {target} on {self.matched}/{self.total} probes "
            f"(need {min_share:.0%})" + (f"; {self.error_count} request(s) failed: {self.errors[0]}" if self.errors else "")
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored with the hand-off record)."""
        return {
            "total": self.total,
            "matched": self.matched,
            "distinguishing": self.distinguishing,
            "matched_distinguishing": self.matched_distinguishing,
            "matched_other": self.matched_other,
            "error_count": self.error_count,
            "errors": self.errors,
            "mismatches": self.mismatches,
            "compared": self.compared,
            "unconfirmed": self.unconfirmed,
        }


def select_probes(
    suite: Suite,
    expected: Sequence[Any],
    other: Sequence[Any] | None,
    *,
    count: int,
    default_max_tokens: int,
    seed: int = 0,
) -> list[Probe]:
    """Pick up to ``count`` probes from recorded eval rows.

    Args:
        suite: the eval suite (messages, max_tokens and temperature per category).
        expected: ``eval_results`` rows (attributes ``category``, ``item_id``,
            ``sample``, ``reply``) of the model that should be served.
        other: the same for the model it replaces, or None.
        count: how many probes at most.
        default_max_tokens: ``evaluation.max_tokens`` (a category may override it).
        seed: makes the sample reproducible (the run id).

    Returns:
        Distinguishing probes first, then others; items no longer in the suite
        and non-greedy categories are skipped.
    """
    cats = {c.name: c for c in suite.categories if c.generates and c.temperature == 0}
    items = {(c.name, i.id): (c, i) for c in cats.values() for i in c.items}
    others = {(r.category, r.item_id): r.reply for r in (other or []) if r.sample == 0 and r.reply is not None}
    probes = []
    for r in expected:
        key = (r.category, r.item_id)
        if r.sample != 0 or r.reply is None or key not in items:
            continue
        cat, item = items[key]
        probes.append(
            Probe(
                category=cat.name,
                item_id=item.id,
                messages=cat.prompt_messages(item),
                max_tokens=cat.max_tokens or default_max_tokens,
                expected=r.reply,
                other=others.get(key),
            )
        )
    rng = random.Random(seed)
    rng.shuffle(probes)
    probes.sort(key=lambda p: not p.distinguishing)  # stable: distinguishing first, shuffled within
    return probes[:count]


def run_probes(
    url: str,
    probes: Sequence[Probe],
    *,
    model: str | None,
    timeout_s: float,
) -> ProbeOutcome:
    """Send each probe (one at a time, greedy, the eval's max_tokens) and compare.

    Args:
        url: the server's base URL (``http://127.0.0.1:8080``).
        model: the request's ``model`` field; None leaves it out (the server's default model).
        timeout_s: per request (seconds).

    Returns:
        The counts; request failures count as mismatches and are listed in ``errors``.
    """
    import httpx

    out = ProbeOutcome()
    endpoint = url.rstrip("/") + "/v1/chat/completions"
    with httpx.Client(timeout=timeout_s) as client:
        for p in probes:
            out.total += 1
            if p.other is not None:
                out.compared += 1
            if p.distinguishing:
                out.distinguishing += 1
            body: dict[str, Any] = {
                "messages": p.messages,
                "max_tokens": p.max_tokens,
                "temperature": 0.0,
                "stream": False,
            }
            if model:
                body["model"] = model
            try:
                r = client.post(endpoint, json=body)
                r.raise_for_status()
                served = str(r.json()["choices"][0]["message"]["content"] or "")
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
                out.error_count += 1
                if len(out.errors) < 3:
                    out.errors.append(f"POST {endpoint} failed ({type(exc).__name__}: {exc})")
                continue
            if served.strip() == p.expected.strip():
                out.matched += 1
                if p.distinguishing:
                    out.matched_distinguishing += 1
            else:
                if p.distinguishing and p.other is not None and served.strip() == p.other.strip():
                    out.matched_other += 1
                if len(out.mismatches) < 3:
                    out.mismatches.append(
                        {"category": p.category, "item_id": p.item_id, "expected": p.expected, "served": served}
                    )
    return out
