"""Eval-suite checks: the suite through the night's own loader, and each judge called once.

The evaluate stage reads the suite with :func:`daemon.suite.load_suite` and
builds its judges with :func:`daemon.scoring.make_judge`; preflight calls the
same functions, so whatever would fail after hours of training fails here.
"""

from __future__ import annotations

import time

from daemon.errors import EvaluationFailed, SuiteError
from daemon.preflight.report import CheckResult, Level, result
from daemon.suite import Category, Item, Suite

PROBE_REPLY = "4"
"""The reply graded by the judge probe when the probed item has no text reference answer."""


def suite_results(suite: Suite | None, error: SuiteError | None) -> list[CheckResult]:
    """``suite``: ok with category and item counts, or fail with every problem the loader found.

    Args:
        suite: the suite as :func:`daemon.suite.load_suite` returned it (None when it raised).
        error: what it raised, if it did.
    """
    if suite is None:
        assert error is not None
        problems = error.problems
        if not problems:
            return [result("suite", Level.FAIL, f"{error} (evaluation would fail after training)")]
        first = str(error).splitlines()[0]
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return [result("suite", Level.FAIL, f"{first}: {problems[0]}{more}", problems)]
    items = sum(len(c.items) for c in suite.categories)
    kinds = ", ".join(sorted({c.kind for c in suite.categories}))
    return [
        result(
            "suite",
            Level.OK,
            f"{suite.path.name}: {len(suite.categories)} categories ({kinds}), {items} items, every one valid",
        )
    ]


def probe(category: Category) -> tuple[Item, str]:
    """The tiny known judge call for ``category``: its first item, answered with its reference.

    Returns:
        ``(item, reply)``; the reply is the item's text ``gold`` when it has one, else
        :data:`PROBE_REPLY`.
    """
    item = category.items[0]
    reply = item.gold if isinstance(item.gold, str) and item.gold.strip() else PROBE_REPLY
    return item, reply


def check_judges(suite: Suite | None) -> list[CheckResult]:
    """Start each judge category's judge once on :func:`probe` and parse its verdict.

    One ``suite.judge`` result per judge category: fail when the judge cannot be
    built (an unset ``api_key_env``), started (a missing command), reached, or
    answers without a 1-5 grade (every item would score 0); ok with the grade
    and the call's duration. The call is the night's own
    (:func:`daemon.scoring.build_judge_prompt`, ``judge.complete``,
    :func:`daemon.scoring.parse_judge_grade`), with the category's timeout and
    retries.
    """
    from daemon.scoring import build_judge_prompt, make_judge, parse_judge_grade

    if suite is None:
        return []
    out: list[CheckResult] = []
    for cat in suite.categories:
        if cat.kind != "judge":
            continue
        name = "suite.judge"
        try:
            judge = make_judge(cat)
            assert judge is not None
            item, reply = probe(cat)
            tic = time.monotonic()
            verdict = judge.complete(build_judge_prompt(cat, item, reply))
            took = time.monotonic() - tic
        except EvaluationFailed as exc:
            out.append(result(name, Level.FAIL, f"category {cat.name}: {exc}"))
            continue
        grade = parse_judge_grade(verdict)
        if grade is None:
            excerpt = " ".join(verdict.split())[:80]
            out.append(
                result(
                    name,
                    Level.FAIL,
                    f"category {cat.name}: the judge answered {excerpt!r} without a grade; every item would "
                    'score 0: make it end its verdict with a line "Score: N" (N from 1 to 5)',
                )
            )
            continue
        out.append(
            result(
                name,
                Level.OK,
                f"category {cat.name}: the judge graded {cat.name}/{item.id} {grade}/5 in {took:.1f} s",
            )
        )
    return out
