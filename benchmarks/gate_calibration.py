"""Does the promotion gate keep its promise? Simulated paired nights through the real gate.

Each simulated night draws fresh eval items and scores a champion and a challenger
whose true per-category change is known, then asks :func:`daemon.gate.decide_promotion`
(the default policy, confidence 0.95) whether to promote. Beside it, in the same run and
on the same nights, two baselines: **naive** ("the higher composite mean wins") and
**unpaired** (a one-sided two-sample z-test on the composite that ignores pairing).

The suite: three yes/no categories (0/1 answers), two judge categories (grades 1-5
scored ``(g - 1) / 4``) and a ``preserve`` yes/no category (tolerance 0.02), all
weight 1. Answers are correlated through item difficulty: a model answers item i
right when ``a_m + d_i + e_mi > 0`` with a shared difficulty ``d_i`` (variance
``rho``) and the model's own noise ``e_mi`` (variance ``1 - rho``); its accuracy is
``Phi(a_m)``. Judge grades cut the same latent score at four thresholds. ``rho`` is
0.5 for yes/no items (a paired SD of about 0.4) and 0.9 for judge items (about 0.14,
as measured on real judge categories). A category's true change moves ``a_m`` of
the challenger so that its expected score changes by exactly that many points.

Scenarios (true change per category) and the targets of issue 12 are printed with
the rates; 30/100/300 items per category by default. It also times one decision of
5 categories x 1,500 items at 10,000 resamples against a reference (sorting the same
number of floats), on one core (``OMP_NUM_THREADS=1``).

Exit status 0 when every target holds, 1 otherwise. Usage::

    OMP_NUM_THREADS=1 python benchmarks/gate_calibration.py [--nights 400] [--resamples 2000]
        [--sizes 30,100,300] [--workers 2] [--json]

``--resamples`` only sets the Monte Carlo precision of each night's bootstrap (the
gate's default of 10,000 is used for the timing); 2,000 keeps the default run to a
few minutes on 2 cores. With 400 nights a rate's standard error is about 1.1 points
at 5% and 2 points at 75%.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.gate import (  # noqa: E402
    CategoryPolicy,
    CategoryScores,
    GatePolicy,
    ModelScores,
    decide_promotion,
)

PHI = NormalDist()
#: Grade thresholds on the latent judge score (grades 1..5).
JUDGE_CUTS = (-1.2, -0.4, 0.3, 1.0)
BASE_ACCURACY = 0.7


@dataclass(frozen=True)
class Cat:
    """One simulated category: kind, true change (score units), size and sampling."""

    name: str
    kind: str  # "binary" or "judge"
    change: float
    n: int
    preserve: bool = False
    repeats: int = 1
    empty_rate: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """A named suite with known true changes and the promotion-rate target, if any."""

    name: str
    build: Callable[[int], list[Cat]]
    target: Callable[[int], tuple[str, float] | None] = lambda n: None
    sizes: tuple[int, ...] | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _expected_judge(a: float, rho_noise: float) -> float:
    """E[(grade - 1) / 4] when the latent score is N(a, 1)."""
    return sum(1.0 - PHI.cdf(c - a) for c in JUDGE_CUTS) / 4.0


def _solve(target: float, f: Callable[[float], float]) -> float:
    lo, hi = -8.0, 8.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _levels(cat: Cat) -> tuple[float, float]:
    """Latent locations of champion and challenger giving the category's true change."""
    if cat.kind == "binary":
        base = BASE_ACCURACY
        return PHI.inv_cdf(base), PHI.inv_cdf(min(0.999, max(0.001, base + cat.change)))
    a0 = 0.3
    base = _expected_judge(a0, 0.0)
    return a0, _solve(base + cat.change, lambda a: _expected_judge(a, 0.0))


def simulate(cat: Cat, rng: np.random.Generator) -> tuple[CategoryScores, CategoryScores, np.ndarray, np.ndarray]:
    """One night's scores of both models on ``cat`` (fresh items)."""
    rho = 0.5 if cat.kind == "binary" else 0.9
    a_ch, a_cl = _levels(cat)
    d = rng.normal(0.0, math.sqrt(rho), cat.n)
    out = []
    for a in (a_ch, a_cl):
        latent = a + d[:, None] + rng.normal(0.0, math.sqrt(1 - rho), (cat.n, cat.repeats))
        if cat.kind == "binary":
            s = (latent > 0).astype(float)
        else:
            s = np.searchsorted(np.array(JUDGE_CUTS), latent).astype(float) / 4.0
        empty = rng.random((cat.n, cat.repeats)) < cat.empty_rate
        s = np.where(empty, 0.0, s)
        means = s.mean(axis=1)
        within = float(s.var(axis=1, ddof=1).mean()) if cat.repeats > 1 else 0.0
        ids = [str(i) for i in range(cat.n)]
        out.append(
            (
                CategoryScores(
                    name=cat.name,
                    kind="choice" if cat.kind == "binary" else "judge",
                    weight=1.0,
                    item_scores=dict(zip(ids, means.tolist(), strict=True)),
                    binary=cat.kind == "binary" and cat.repeats == 1,
                    empty=int(empty.sum()),
                    unparsed=0,
                    policy=CategoryPolicy(preserve=True, tolerance=0.02) if cat.preserve else CategoryPolicy(),
                    empty_items=frozenset(i for i, e in zip(ids, empty.any(axis=1), strict=True) if e),
                    repeats=cat.repeats,
                    within_var=within,
                ),
                means,
            )
        )
    (ch, m_ch), (cl, m_cl) = out
    return ch, cl, m_ch, m_cl


def night(cats: list[Cat], policy: GatePolicy, seed: int) -> tuple[bool, bool, bool]:
    """(gate promoted, naive promoted, unpaired z-test promoted) for one simulated night."""
    rng = np.random.default_rng(seed)
    champ: dict[str, CategoryScores] = {}
    chall: dict[str, CategoryScores] = {}
    delta = var = 0.0
    for cat in cats:
        ch, cl, a, b = simulate(cat, rng)
        champ[cat.name], chall[cat.name] = ch, cl
        k = len(cats)
        delta += (b.mean() - a.mean()) / k
        if cat.n > 1:
            var += (a.var(ddof=1) / cat.n + b.var(ddof=1) / cat.n) / k**2
    d = decide_promotion(ModelScores("champion", champ), ModelScores("challenger", chall), policy)
    z = PHI.inv_cdf(policy.confidence)
    unpaired = var > 0 and delta / math.sqrt(var) > z
    return d.promote, bool(delta > 0), bool(unpaired)


def _everywhere(change: float, **kw: Any) -> Callable[[int], list[Cat]]:
    def build(n: int) -> list[Cat]:
        return [
            Cat("yes_no_a", "binary", change, n, **kw),
            Cat("yes_no_b", "binary", change, n, **kw),
            Cat("yes_no_c", "binary", change, n, **kw),
            Cat("judge_a", "judge", change, n, **kw),
            Cat("judge_b", "judge", change, n, **kw),
            Cat("know", "binary", change, n, preserve=True, **kw),
        ]

    return build


def _with(build: Callable[[int], list[Cat]], **changes: float) -> Callable[[int], list[Cat]]:
    def inner(n: int) -> list[Cat]:
        return [replace(c, change=changes.get(c.name, c.change)) for c in build(n)]

    return inner


def _repeats(change: float) -> Callable[[int], list[Cat]]:
    def build(n: int) -> list[Cat]:
        return [replace(c, repeats=3) if c.kind == "judge" else c for c in _everywhere(change)(n)]

    return build


def _at_most(limit: float, sizes: tuple[int, ...] | None = None) -> Callable[[int], tuple[str, float] | None]:
    return lambda n: ("<=", limit) if sizes is None or n in sizes else None


def _at_least(limit: float, sizes: tuple[int, ...]) -> Callable[[int], tuple[str, float] | None]:
    return lambda n: (">=", limit) if n in sizes else None


SCENARIOS = [
    Scenario("nothing changed", _everywhere(0.0), _at_most(0.05)),
    Scenario("worse: -5 everywhere", _everywhere(-0.05), _at_most(0.05)),
    Scenario("+5 everywhere", _everywhere(0.05), _at_least(0.70, (300,))),
    Scenario("+10 everywhere", _everywhere(0.10), _at_least(0.75, (100, 300))),
    Scenario(
        "+5 overall, yes_no_a -10 (must reject)",
        _with(_everywhere(0.08), yes_no_a=-0.10),
        lambda n: ("<=", 0.10) if n == 100 else ("<=", 0.05) if n == 300 else None,
        note="composite +5: five categories +8, one -10",
    ),
    Scenario(
        "preserve -5, others +5 (must reject)",
        _with(_everywhere(0.05), know=-0.05),
        _at_most(0.20, (300,)),
    ),
    Scenario("preserve unchanged, others +10", _with(_everywhere(0.10), know=0.0), note="info"),
    Scenario("judge repeats x3, nothing changed", _repeats(0.0), _at_most(0.05)),
    Scenario("judge repeats x3, +10 everywhere", _repeats(0.10), note="info"),
    Scenario("1% empty replies, nothing changed", _everywhere(0.0, empty_rate=0.01), _at_most(0.05)),
    Scenario(
        "1% empty replies, +10 everywhere",
        _everywhere(0.10, empty_rate=0.01),
        note="power within 5 points of +10 everywhere",
        extra={"compare": "+10 everywhere"},
    ),
    Scenario(
        "single yes/no category, nothing changed (McNemar)",
        lambda n: [Cat("only", "binary", 0.0, n)],
        _at_most(0.05),
    ),
    Scenario("single yes/no category, +10 (McNemar)", lambda n: [Cat("only", "binary", 0.10, n)], note="info"),
    Scenario(
        "five categories of 3 items, nothing changed",
        lambda n: [Cat(f"tiny{i}", "binary", 0.0, 3) for i in range(5)],
        _at_most(0.0),
        sizes=(3,),
    ),
]


def _run_cell(args: tuple[int, int, int, int, int]) -> tuple[int, int, list[tuple[bool, bool, bool]]]:
    si, n, nights, resamples, seed = args
    policy = GatePolicy(resamples=resamples)
    cats = SCENARIOS[si].build(n)
    return si, n, [night(cats, policy, seed * 1_000_003 + k) for k in range(nights)]


def two_one_item_categories() -> bool:
    """The issue's example: two one-item categories, the challenger right on both, the champion
    wrong on both. True when the gate refuses."""
    def cat(name: str, v: float) -> CategoryScores:
        return CategoryScores(name, "choice", 1.0, {"x": v}, True, 0, 0)

    d = decide_promotion(
        ModelScores("champion", {"a": cat("a", 0.0), "b": cat("b", 0.0)}),
        ModelScores("challenger", {"a": cat("a", 1.0), "b": cat("b", 1.0)}),
        GatePolicy(),
    )
    return not d.promote


def time_decision(repeat: int = 3) -> dict[str, float]:
    """Median seconds of one decision of 5 categories x 1,500 items (3 yes/no, 2 judge) at
    10,000 resamples, beside sorting 5 x 1,500 x 10,000 floats once (the reference)."""
    rng = np.random.default_rng(0)
    cats = [Cat(f"c{i}", "binary" if i < 3 else "judge", 0.05, 1500) for i in range(5)]
    champ, chall = {}, {}
    for c in cats:
        champ[c.name], chall[c.name], _, _ = simulate(c, rng)
    pair = (ModelScores("champion", champ), ModelScores("challenger", chall))
    times, refs = [], []
    data = rng.random(5 * 1500 * 10_000 // 10)
    for _ in range(repeat):
        t = time.perf_counter()
        decide_promotion(*pair, GatePolicy())
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(10):
            np.sort(data)
        refs.append(time.perf_counter() - t)
    return {"decision_s": float(np.median(times)), "reference_sort_s": float(np.median(refs))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=400)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--sizes", default="30,100,300")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    args = parser.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {args.nights} nights per cell, "
          f"{args.resamples} resamples per night")
    started = time.monotonic()
    jobs = []
    for si, sc in enumerate(SCENARIOS):
        for n in sc.sizes or sizes:
            jobs.append((si, n, args.nights, args.resamples, args.seed + 7919 * si + n))
    results: dict[tuple[int, int], list[tuple[bool, bool, bool]]] = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for si, n, rows in pool.map(_run_cell, jobs):
            results[(si, n)] = rows

    failures: list[str] = []
    table: list[dict[str, Any]] = []
    print()
    print(f"{'scenario (true change)':<52} {'n':>4} {'gate':>7} {'naive':>7} {'unpaired':>9}  target")
    rate_of: dict[tuple[str, int], float] = {}
    for si, sc in enumerate(SCENARIOS):
        for n in sc.sizes or sizes:
            rows = results[(si, n)]
            gate, naive, unpaired = (float(np.mean([r[i] for r in rows])) for i in range(3))
            rate_of[(sc.name, n)] = gate
            tgt = sc.target(n)
            status = ""
            if tgt is not None:
                op, limit = tgt
                ok = gate <= limit if op == "<=" else gate >= limit
                status = f"{op} {limit:.0%} {'ok' if ok else 'MISSED'}"
                if not ok:
                    failures.append(f"{sc.name} at n={n}: {gate:.1%} (target {op} {limit:.0%})")
            if "compare" in sc.extra:
                ref = rate_of.get((sc.extra["compare"], n))
                if ref is not None:
                    ok = gate >= ref - 0.05
                    status = f"vs {ref:.1%} without empties: {'ok' if ok else 'MISSED'}"
                    if not ok and n in (100, 300):
                        failures.append(f"{sc.name} at n={n}: {gate:.1%} vs {ref:.1%}")
            elif sc.note and not status:
                status = sc.note
            print(f"{sc.name:<52} {n:>4} {gate:>7.1%} {naive:>7.1%} {unpaired:>9.1%}  {status}")
            table.append({"scenario": sc.name, "n": n, "gate": gate, "naive": naive, "unpaired": unpaired,
                          "target": status})
    refused = two_one_item_categories()
    print(f"\ntwo one-item categories, challenger right on both: {'refused' if refused else 'PROMOTED'}")
    if not refused:
        failures.append("two one-item categories promoted")
    timing = time_decision()
    ratio = timing["decision_s"] / timing["reference_sort_s"]
    print(
        f"one decision, 5 categories x 1,500 items, 10,000 resamples: {timing['decision_s']:.3f} s "
        f"(target < 2 s); reference sort of 7.5e7 floats: {timing['reference_sort_s']:.3f} s; ratio {ratio:.2f}"
    )
    if timing["decision_s"] >= 2.0:
        failures.append(f"decision took {timing['decision_s']:.2f} s")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}; {time.monotonic() - started:.0f} s")
    print("PASS" if not failures else "MISSED: " + "; ".join(failures))
    if args.json:
        print(json.dumps({"rates": table, "timing": timing, "failures": failures}))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
