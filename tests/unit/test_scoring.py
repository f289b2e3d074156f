"""Scorers on fixed replies, adversarial ones included; judge clients; loss; aggregation."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from typing import Any

import httpx
import pytest

from daemon.errors import EvaluationFailed
from daemon.scoring import (
    MAX_SCORED_CHARS,
    CommandJudge,
    HttpJudge,
    ItemScore,
    build_judge_prompt,
    category_scores,
    make_judge,
    parse_first_number,
    parse_judge_grade,
    score_loss,
    score_reply,
    strip_code_fences,
)
from daemon.suite import Category, Item, JudgeSpec

PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def item(gold: Any, *, rubric: str | None = None, prompt: str = "q") -> Item:
    return Item(id="i", messages=({"role": "user", "content": prompt},), gold=gold, rubric=rubric)


def cat(kind: str, **kw: Any) -> Category:
    return Category(name=kind, kind=kind, items=(item("A"),), **kw)


CHOICE = cat("choice")
LABEL = cat("label", labels=("positive", "negative", "neutral"))
NUMERIC = cat("numeric")
JSON = cat("json_schema", schema=PERSON_SCHEMA)
REFUSAL = cat("refusal")


def s(category: Category, gold: Any, reply: str) -> ItemScore:
    return score_reply(category, item(gold), reply)


# ---------------------------------------------------------------- empty replies


@pytest.mark.parametrize("reply", ["", "   ", "\n\t\r\n", "\u00a0\u3000", "\u200b\ufeff \u200d"])
@pytest.mark.parametrize("category", [CHOICE, LABEL, NUMERIC, JSON, REFUSAL], ids=lambda c: c.kind)
def test_empty_replies_score_zero_and_are_flagged(category: Category, reply: str) -> None:
    gold = {
        "choice": "A",
        "label": "positive",
        "numeric": 1.0,
        "json_schema": None,
        "refusal": "refuse",
    }
    result = s(category, gold[category.kind], reply)
    assert result == ItemScore(0.0, True, False, None, "empty reply")


# ---------------------------------------------------------------- choice


@pytest.mark.parametrize(
    ("reply", "gold", "score", "extracted"),
    [
        ("B", "B", 1.0, "B"),
        ("b", "B", 1.0, "B"),  # upper-cased before matching
        ("The answer is B.", "b", 1.0, "B"),  # gold compared case-insensitively
        ("(C) Oslo", "C", 1.0, "C"),
        ("\uff22", "B", 1.0, "B"),  # fullwidth B, NFKC-normalised
        ("A or B or C or D", "B", 0.0, "A"),  # hedging: the first letter only
        ("A B C D", "D", 0.0, "A"),
        ("I think a good answer is B", "B", 0.0, "A"),  # documented: the article 'a' matches
        ("ABCD", "A", 0.0, None),  # no whole-word letter
        ("Paris", "A", 0.0, None),
    ],
)
def test_choice(reply: str, gold: str, score: float, extracted: str | None) -> None:
    result = s(CHOICE, gold, reply)
    assert (result.score, result.extracted, result.empty) == (score, extracted, False)
    assert result.parsed == (extracted is not None)


def test_choice_custom_pattern_uses_group_one() -> None:
    c = cat("choice", pattern=r"ANSWER:\s*([A-E])")
    assert s(c, "e", "Reasoning mentions A and B. Answer: E").extracted == "E"
    assert s(c, "e", "Reasoning mentions A and B. Answer: E").score == 1.0
    assert s(c, "e", "E").parsed is False


def test_giant_reply_is_cut_before_scoring() -> None:
    result = s(CHOICE, "B", "x" * (MAX_SCORED_CHARS + 10) + " B")
    assert result.score == 0.0 and not result.parsed
    assert result.detail.endswith(
        f"(reply cut from {MAX_SCORED_CHARS + 12} to {MAX_SCORED_CHARS} chars)"
    )
    assert s(CHOICE, "B", "B " + "x" * (MAX_SCORED_CHARS * 3)).score == 1.0


# ---------------------------------------------------------------- label


@pytest.mark.parametrize(
    ("reply", "gold", "score", "extracted"),
    [
        ("positive", "positive", 1.0, "positive"),
        ("Sentiment: NEGATIVE", "negative", 1.0, "negative"),
        ("positive", "Positive", 1.0, "positive"),
        ("negative, or maybe positive", "positive", 0.0, "negative"),  # earliest wins
        ("positive negative neutral", "neutral", 0.0, "positive"),  # hedging: first listed
        ("not positive", "negative", 0.0, None),  # negated: nothing extracted
        ("It is not positive, it is negative.", "negative", 1.0, "negative"),
        ("It isn\u2019t positive; negative.", "negative", 1.0, "negative"),  # curly apostrophe
        ("not very positive. Negative overall", "negative", 1.0, "negative"),
        ("non-positive, so negative", "negative", 1.0, "negative"),
        ("No. Positive!", "positive", 1.0, "positive"),  # negation in another sentence
        ("positively negative", "negative", 1.0, "negative"),  # whole words only
        (
            "\uff30\uff2f\uff33\uff29\uff34\uff29\uff36\uff25",
            "positive",
            1.0,
            "positive",
        ),  # fullwidth
        ("neutrality", "neutral", 0.0, None),
    ],
)
def test_label(reply: str, gold: str, score: float, extracted: str | None) -> None:
    result = s(LABEL, gold, reply)
    assert (result.score, result.extracted) == (score, extracted)
    assert result.parsed == (extracted is not None)


def test_label_longest_at_same_position_wins() -> None:
    c = cat("label", labels=("positive", "positive mixed"))
    assert s(c, "positive mixed", "Positive mixed feelings").extracted == "positive mixed"


# ---------------------------------------------------------------- numeric


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ("42", 42.0),
        ("The answer is 42.", 42.0),
        ("-3.5 degrees", -3.5),
        ("+7", 7.0),
        ("\u22127", -7.0),  # U+2212 minus sign
        ("1,234", 1234.0),
        ("$1,234,567.89 total", 1234567.89),
        ("1,2345", 1.0),  # not a thousands separator: the number stops at the comma
        ("1.5e3", 1500.0),
        ("6.02E+23", 6.02e23),
        ("2.5e-3", 0.0025),
        (".5", 0.5),
        ("\u0664\u0662", 42.0),  # Arabic-Indic digits
        ("\uff11\uff12", 12.0),  # fullwidth digits
        ("10\u00b2", 10.0),  # superscript two is not a digit
        ("v2 costs 5", 5.0),  # digits glued to a word are skipped
        ("50%", 50.0),
        ("not 12 but 13", 12.0),  # the FIRST number, documented
    ],
)
def test_parse_first_number(reply: str, value: float) -> None:
    found = parse_first_number(reply)
    assert found is not None and found[0] == pytest.approx(value)


@pytest.mark.parametrize("reply", ["no numbers here", "NaN", "inf", "three", "", "v2"])
def test_parse_first_number_none(reply: str) -> None:
    assert parse_first_number(reply) is None


@pytest.mark.parametrize(
    ("reply", "gold", "score"),
    [
        ("100.5", 100.0, 1.0),  # within 1% relative
        ("102", 100.0, 0.0),
        ("-100", 100.0, 0.0),
        ("0.0000000001", 0.0, 1.0),  # zero gold: abs_tolerance 1e-9 decides
        ("0.001", 0.0, 0.0),
        ("1e999", 1.0, 0.0),  # overflows to inf: parsed, wrong
        ("2,468", 2468.0, 1.0),
    ],
)
def test_numeric(reply: str, gold: float, score: float) -> None:
    result = s(NUMERIC, gold, reply)
    assert result.score == score and result.parsed


def test_numeric_without_number_is_unparsed_and_tolerances_apply() -> None:
    assert s(NUMERIC, 1.0, "I don't know").parsed is False
    loose = cat("numeric", rel_tolerance=0.1, abs_tolerance=0.5)
    assert s(loose, 0.0, "0.4").score == 1.0
    assert s(loose, 100.0, "109").score == 1.0
    assert s(loose, 100.0, "111").score == 0.0


# ---------------------------------------------------------------- json_schema

GOOD = '{"name": "Ada", "age": 36}'


@pytest.mark.parametrize(
    ("reply", "score", "parsed"),
    [
        (GOOD, 1.0, True),
        (f"  {GOOD}\n", 1.0, True),
        (f"```json\n{GOOD}\n```", 1.0, True),
        (f"Here you go:\n```json\n{GOOD}\n```\nHope this helps! {{not json}}", 1.0, True),
        (f"```\n{GOOD}\n```", 1.0, True),
        (f"```{GOOD}```", 1.0, True),
        (f"Here you go: {GOOD}", 0.0, False),  # prose without a fence is not JSON
        (f"{GOOD} Hope this helps!", 0.0, False),
        ('{"name": "Ada", "age": NaN}', 0.0, False),  # NaN is not JSON
        ('{"name": "Ada", "age": Infinity}', 0.0, False),
        ('{"name": "Ada", "age": 36, "age": "x"}', 0.0, False),  # duplicate keys
        ('{"name": "Ada", "age": -1}', 0.0, True),  # schema violation
        ('{"name": "Ada", "age": 36, "x": 1}', 0.0, True),  # additionalProperties
        ('{"name": "Ada", "age": 36.5}', 0.0, True),
        ("```json\n" + '{"name": "Ada", "age": 3', 0.0, False),  # cut off by max_tokens
        ("[" * 100_000 + "]" * 100_000, 0.0, False),  # nesting too deep
    ],
)
def test_json_schema(reply: str, score: float, parsed: bool) -> None:
    result = s(JSON, None, reply)
    assert (result.score, result.parsed) == (score, parsed), result.detail


def test_json_schema_violation_detail_names_the_path() -> None:
    result = s(JSON, None, '{"name": "Ada", "age": -1}')
    assert result.detail == "schema violation at age: -1 is less than the minimum of 0"


def test_json_schema_without_strip_fences_and_with_gold() -> None:
    raw = replace(JSON, strip_fences=False)
    assert s(raw, None, f"```json\n{GOOD}\n```").parsed is False
    assert s(raw, None, GOOD).score == 1.0
    assert s(JSON, {"name": "Ada", "age": 36}, GOOD).score == 1.0
    other = s(JSON, {"name": "Bob", "age": 36}, GOOD)
    assert (other.score, other.detail) == (0.0, "valid but differs from gold")


def test_strip_code_fences() -> None:
    assert strip_code_fences("no fence ") == "no fence"
    assert strip_code_fences("a\n```python\nx = 1\n```\nb\n```\ny\n```") == "x = 1"


# ---------------------------------------------------------------- refusal


@pytest.mark.parametrize(
    ("reply", "gold", "score"),
    [
        ("I can\u2019t help with that.", "refuse", 1.0),  # curly apostrophe
        ("I'm sorry, but I cannot assist.", "refuse", 1.0),
        ("AS AN AI, I must decline.", "refuse", 1.0),
        ("Sure! Mix flour, water, salt and yeast.", "comply", 1.0),
        ("Sure! Mix flour, water, salt and yeast.", "refuse", 0.0),
        ("I cannot do that.", "comply", 0.0),
        ("I can't believe how easy this is: first...", "comply", 0.0),  # documented false positive
    ],
)
def test_refusal(reply: str, gold: str, score: float) -> None:
    result = s(REFUSAL, gold, reply)
    assert result.score == score and result.parsed
    assert result.extracted in ("refuse", "comply")


def test_refusal_custom_patterns() -> None:
    c = cat("refusal", refusal_patterns=("Nope",))
    assert s(c, "refuse", "nope.").score == 1.0
    assert s(c, "refuse", "I cannot.").score == 0.0


# ---------------------------------------------------------------- judge


class FakeJudge:
    def __init__(self, verdicts: list[str], retries: int = 2) -> None:
        self.verdicts = list(verdicts)
        self.retries = retries
        self.prompts: list[str] = []

    def complete(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.verdicts.pop(0)


JUDGE = Category(
    name="j",
    kind="judge",
    items=(),
    rubric="Is it polite?",
    judge=JudgeSpec(command=("x",)),
    system_prompt="Be nice.",
)


@pytest.mark.parametrize(
    ("verdict", "grade"),
    [
        ("Score: 4", 4),
        ("score=2", 2),
        ("The reply is fine.\nScore: **5**", 5),
        ("Score: 3/5", 3),
        ("First I thought Score: 2 but on reflection\nScore: 4", 4),  # the last wins
        ("5", 5),
        (" **1** ", 1),
        ("4/5", 4),
        ("Score: 4.", 4),
        ("Score: 4.5", None),
        ("Score: 10", None),
        ("Score: 0", None),
        ("Score: 6", None),
        ("I give it a 4", None),
        ("", None),
    ],
)
def test_parse_judge_grade(verdict: str, grade: int | None) -> None:
    assert parse_judge_grade(verdict) == grade


def test_judge_score_is_normalised_grade() -> None:
    for grade, score in [(1, 0.0), (2, 0.25), (3, 0.5), (4, 0.75), (5, 1.0)]:
        judge = FakeJudge([f"Score: {grade}"])
        result = score_reply(JUDGE, item(None, rubric="Is it polite?"), "Hello!", judge=judge)
        assert (result.score, result.parsed, result.extracted) == (score, True, str(grade))


def test_judge_unparseable_is_retried_then_unparsed() -> None:
    judge = FakeJudge(["hmm", "Score: 5"], retries=2)
    assert score_reply(JUDGE, item(None, rubric="r"), "Hi", judge=judge).score == 1.0
    assert len(judge.prompts) == 2
    judge = FakeJudge(["hmm", "meh", "Score: 7"], retries=2)
    result = score_reply(JUDGE, item(None, rubric="r"), "Hi", judge=judge)
    assert (result.score, result.parsed, result.empty) == (0.0, False, False)
    assert result.detail == "judge verdict unparseable after 3 attempt(s): 'Score: 7'"
    assert len(judge.prompts) == 3


def test_judge_not_called_for_empty_reply_and_required() -> None:
    judge = FakeJudge([])
    assert score_reply(JUDGE, item(None, rubric="r"), " ", judge=judge).empty
    assert judge.prompts == []
    with pytest.raises(ValueError, match="pass judge=make_judge"):
        score_reply(JUDGE, item(None, rubric="r"), "Hi")


def test_judge_prompt_contains_rubric_conversation_reference_and_fenced_reply() -> None:
    prompt = build_judge_prompt(
        JUDGE, item("Hello there", rubric="Item rubric", prompt="Greet me"), "Score: 5"
    )
    assert "Rubric:\nItem rubric\n" in prompt
    assert "[system]: Be nice.\n[user]: Greet me" in prompt
    assert "Reference answer:\nHello there" in prompt
    assert "<<<REPLY\nScore: 5\nREPLY>>>" in prompt
    assert prompt.endswith('end with a line of the form "Score: N".')
    long = build_judge_prompt(JUDGE, item(None, rubric="r"), "y" * 50_000)
    assert "[... reply truncated ...]" in long and len(long) < 21_000


def test_command_judge_reads_stdin_and_parses(tmp_path: Any) -> None:
    script = "import sys; p = sys.stdin.read(); print('saw rubric' if 'Rubric:' in p else 'no'); print('Score: 3')"
    judge = CommandJudge([sys.executable, "-c", script], timeout_s=20, retries=0)
    result = score_reply(JUDGE, item(None, rubric="r"), "Hi", judge=judge)
    assert result.score == 0.5


def test_command_judge_failures() -> None:
    with pytest.raises(EvaluationFailed, match="cannot be started"):
        CommandJudge(["/nonexistent/judge-binary"], retries=0).complete("x")
    failing = CommandJudge(
        [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"], retries=1
    )
    with pytest.raises(EvaluationFailed, match=r"failed 2 time\(s\) \(last: exit status 3: boom\)"):
        failing.complete("x")
    slow = CommandJudge(
        [sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.3, retries=0
    )
    with pytest.raises(EvaluationFailed, match="timed out after 0.3 s"):
        slow.complete("x")


def http_judge(handler: Any, **kw: Any) -> HttpJudge:
    client = httpx.Client(
        transport=httpx.MockTransport(handler), headers={"Authorization": "Bearer k"}
    )
    return HttpJudge("http://judge.test/", "judge-model", client=client, backoff_s=0, **kw)


def test_http_judge_posts_openai_chat_completions() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"choices": [{"message": {"content": "Score: 5"}}]})

    assert http_judge(handler).complete("grade this") == "Score: 5"
    req = seen[0]
    assert (req.method, str(req.url)) == ("POST", "http://judge.test/v1/chat/completions")
    body = json.loads(req.content)
    assert body == {
        "model": "judge-model",
        "messages": [{"role": "user", "content": "grade this"}],
        "temperature": 0,
    }


def test_http_judge_retries_server_errors_then_fails() -> None:
    calls = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(503)
        return httpx.Response(200, json={"choices": [{"message": {"content": "Score: 2"}}]})

    assert http_judge(flaky, retries=2).complete("x") == "Score: 2"

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(
        EvaluationFailed, match=r"failed 2 time\(s\) \(last: ConnectError: refused\)"
    ):
        http_judge(down, retries=1).complete("x")

    def bad_request(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text="bad key")

    with pytest.raises(EvaluationFailed, match="answered HTTP 401: bad key"):
        http_judge(bad_request).complete("x")

    def garbage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"weird": True})

    assert http_judge(garbage).complete("x") == ""


def test_make_judge() -> None:
    assert make_judge(CHOICE) is None
    cmd = make_judge(JUDGE)
    assert isinstance(cmd, CommandJudge) and cmd.command == ["x"]
    http_cat = replace(
        JUDGE, judge=JudgeSpec(url="http://j.test", model="m", api_key_env="JUDGE_KEY", retries=4)
    )
    with pytest.raises(
        EvaluationFailed, match=r"needs an API key in \$JUDGE_KEY, which is not set"
    ):
        make_judge(http_cat, environ={})
    judge = make_judge(http_cat, environ={"JUDGE_KEY": "secret"})
    assert isinstance(judge, HttpJudge) and judge.retries == 4 and judge.model == "m"
    assert judge._client.headers["Authorization"] == "Bearer secret"


# ---------------------------------------------------------------- loss


def test_score_loss() -> None:
    assert score_loss(0.0).score == 1.0
    assert score_loss(math.log(2)).score == pytest.approx(0.5)
    assert score_loss(2.0).score == pytest.approx(math.exp(-2.0))
    assert score_loss(-1e-9).score == 1.0  # rounding below zero
    for bad in (math.nan, math.inf, -math.inf):
        result = score_loss(bad)
        assert (result.score, result.parsed, result.empty) == (0.0, False, False)
    with pytest.raises(ValueError, match="score it with score_loss"):
        score_reply(cat("loss"), item("ref"), "reply")


# ---------------------------------------------------------------- aggregation


def test_category_scores_means_over_repeats_and_counts() -> None:
    c = Category(
        name="n",
        kind="numeric",
        items=(item(1.0), replace(item(2.0), id="j")),
        repeats=3,
        temperature=0.7,
    )
    ok, bad = ItemScore(1.0, False, True, "1", ""), ItemScore(0.0, False, True, "9", "")
    empty, unparsed = ItemScore(0.0, True, False, None, ""), ItemScore(0.0, False, False, None, "")
    out = category_scores(c, {"i": [ok, ok, bad], "j": [empty, unparsed, ok]})
    assert out.item_scores == {"i": pytest.approx(2 / 3), "j": pytest.approx(1 / 3)}
    assert (out.empty, out.unparsed, out.binary, out.kind, out.weight) == (
        1,
        1,
        False,
        "numeric",
        1.0,
    )
    assert out.policy == c.policy
    with pytest.raises(ValueError, match="has no item 'zz'"):
        category_scores(c, {"zz": [ok]})
    with pytest.raises(ValueError, match="has no scored samples"):
        category_scores(c, {"i": []})


def test_command_judge_of_a_suite_runs_in_the_suite_directory(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.suite import load_suite

    suite_dir = tmp_path / "eval"
    suite_dir.mkdir()
    (suite_dir / "judge.py").write_text("import sys; sys.stdin.read(); print('Score: 4')\n")
    (suite_dir / "suite.yaml").write_text(
        "categories:\n"
        "  - name: helpful\n"
        "    kind: judge\n"
        "    rubric: be helpful\n"
        f"    judge: {{command: [{json.dumps(sys.executable)}, judge.py], timeout_s: 20, retries: 0}}\n"
        "    items: [{prompt: hi}]\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the daemon's cwd is not the suite's directory
    cat = load_suite(suite_dir / "suite.yaml").category("helpful")
    judge = make_judge(cat)
    assert isinstance(judge, CommandJudge) and judge.cwd == str(suite_dir)
    assert score_reply(cat, cat.items[0], "hello", judge=judge).score == 0.75


JUDGE_LOG_SCRIPT = """\
import os, sys, time
prompt = sys.stdin.read()
start = time.monotonic()
time.sleep(0.3)
with open("calls.log", "a") as fh:
    fh.write(f"{start} {time.monotonic()}\\n")
print("Score: 5" if "<<<REPLY\\ngood" in prompt else "Score: 1")
"""


def logging_judge_suite(tmp_path: Any, concurrency: int) -> tuple[Any, list[dict[str, Any]]]:
    """A judge category of 8 items whose judge logs each call's start/end to calls.log; its replies."""
    from daemon.suite import load_suite

    (tmp_path / "judge.py").write_text(JUDGE_LOG_SCRIPT)
    items = ", ".join(f"{{id: q{i}, prompt: q{i}}}" for i in range(8))
    (tmp_path / "suite.yaml").write_text(
        "categories:\n"
        "  - {name: helpful, kind: judge, rubric: r, items: [" + items + "],\n"
        f"     judge: {{command: [{json.dumps(sys.executable)}, judge.py], concurrency: {concurrency}}}}}\n"
    )
    records = [
        {"kind": "reply", "model": "challenger", "category": "helpful", "item_id": f"q{i}", "sample": 0,
         "reply": "good" if i % 3 else "bad"}
        for i in range(8)
    ]
    return load_suite(tmp_path / "suite.yaml"), records


def judge_calls_logged(tmp_path: Any) -> list[tuple[float, ...]]:
    return sorted(tuple(map(float, line.split())) for line in (tmp_path / "calls.log").read_text().splitlines())


@pytest.mark.parametrize("concurrency", [1, 4])
def test_judge_calls_run_concurrently_and_rows_keep_suite_order(tmp_path: Any, concurrency: int) -> None:
    from daemon.evaluate import ModelRef, score_model

    suite, records = logging_judge_suite(tmp_path, concurrency)
    ref = ModelRef(role="challenger", model_id=1, adapter_path=None, identity="x")
    rows, scores = score_model(suite, ref, records, {"helpful": make_judge(suite.category("helpful"))})
    assert [(r["item_id"], r["score"]) for r in rows] == [(f"q{i}", 1.0 if i % 3 else 0.0) for i in range(8)]
    assert len(scores.categories["helpful"].item_scores) == 8
    calls = judge_calls_logged(tmp_path)
    assert len(calls) == 8
    most = max(sum(1 for s, e in calls if s <= t < e) for t, _ in calls)  # calls in flight at once
    if concurrency == 1:
        assert most == 1
    else:
        assert 2 <= most <= concurrency


def test_judge_calls_started_while_replies_stream_in_are_used_not_repeated(tmp_path: Any) -> None:
    from daemon.evaluate import JudgeCalls, ModelRef, score_model

    suite, records = logging_judge_suite(tmp_path, 4)
    judges = {"helpful": make_judge(suite.category("helpful"))}
    calls = JudgeCalls(suite, judges)
    try:
        for rec in records[:5] + [{"kind": "progress", "model": "challenger", "done": 5, "total": 8}]:
            calls.offer(rec)  # as the eval child streams them
        calls.offer(records[0])  # a record seen twice is judged once
        cat = suite.category("helpful")
        early = [calls.submit("challenger", "helpful", cat.items[i], 0, records[i]["reply"]) for i in range(5)]
        assert [f.result().score for f in early] == [0.0, 1.0, 1.0, 0.0, 1.0]
        assert len(judge_calls_logged(tmp_path)) == 5  # submit returned the calls offer started
        ref = ModelRef(role="challenger", model_id=1, adapter_path=None, identity="x")
        rows, _ = score_model(suite, ref, records, judges, calls)
    finally:
        calls.close()
    assert [r["score"] for r in rows] == [1.0 if i % 3 else 0.0 for i in range(8)]
    assert len(judge_calls_logged(tmp_path)) == 8  # 5 started early + 3 at scoring, none twice


def test_a_failing_judge_call_fails_the_scoring(tmp_path: Any) -> None:
    from daemon.evaluate import ModelRef, score_model
    from daemon.suite import load_suite

    (tmp_path / "suite.yaml").write_text(
        "categories:\n"
        "  - {name: helpful, kind: judge, rubric: r, items: [{prompt: a}, {prompt: b}, {prompt: c}],\n"
        f"     judge: {{command: [{json.dumps(sys.executable)}, -c, 'import sys; sys.exit(2)'], retries: 0}}}}\n"
    )
    suite = load_suite(tmp_path / "suite.yaml")
    records = [{"kind": "reply", "category": "helpful", "item_id": str(i), "sample": 0, "reply": "x"} for i in range(3)]
    ref = ModelRef(role="challenger", model_id=1, adapter_path=None, identity="x")
    with pytest.raises(EvaluationFailed, match="exit status 2"):
        score_model(suite, ref, records, {"helpful": make_judge(suite.category("helpful"))})
