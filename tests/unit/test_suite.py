"""Eval suite loading: the format, defaults, every validation message, the fingerprint."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from daemon.errors import NightshiftError, SuiteError
from daemon.gate import CategoryPolicy
from daemon.suite import DEFAULT_CHOICE_PATTERN, DEFAULT_REFUSAL_PATTERNS, load_suite

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "suites"
VALID = FIXTURES / "valid" / "suite.yaml"
INVALID = FIXTURES / "invalid" / "suite.yaml"


def write_suite(tmp_path: Path, body: str, **files: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    for name, text in files.items():
        (tmp_path / name.replace("__", ".")).write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    return info.value.problems


# ---------------------------------------------------------------- the valid fixture


def test_valid_fixture_loads_every_kind_with_defaults() -> None:
    suite = load_suite(VALID)
    assert suite.path == VALID
    assert [c.name for c in suite.categories] == [
        "capitals", "sentiment", "arithmetic", "person-json", "helpfulness", "safety", "knowledge",
    ]  # fmt: skip
    caps = suite.category("capitals")
    assert (caps.kind, caps.weight, caps.margin, caps.floor) == ("choice", 2.0, 0.1, None)
    assert caps.pattern == DEFAULT_CHOICE_PATTERN
    assert (caps.repeats, caps.temperature, caps.max_tokens) == (1, 0.0, None)
    assert caps.binary and caps.policy == CategoryPolicy(
        margin=0.1, floor=None, preserve=False, tolerance=0.0
    )
    assert [i.id for i in caps.items] == ["fr", "it"]

    senti = suite.category("sentiment")
    assert senti.labels == ("positive", "negative", "neutral")
    assert [(i.id, i.gold) for i in senti.items] == [("s-1", "positive"), ("s-2", "Negative")]
    assert senti.weight == 1.0 and senti.margin is None

    arith = suite.category("arithmetic")
    assert [i.id for i in arith.items] == ["0", "1"]  # default ids: the 0-based index
    assert [i.gold for i in arith.items] == [2468.0, 0.0]  # numeric strings coerced
    assert arith.rel_tolerance == 0.001 and arith.abs_tolerance == 1e-9
    assert not arith.binary  # repeats > 1

    person = suite.category("person-json")
    assert person.schema is not None and person.schema["required"] == ["name", "age"]
    assert person.floor == 1.0 and person.strip_fences is True
    assert person.items[0].gold is None

    judge = suite.category("helpfulness")
    assert judge.judge is not None and judge.judge.command == ("cat",)
    assert (judge.judge.timeout_s, judge.judge.retries) == (5.0, 1)
    assert [i.rubric for i in judge.items] == [
        "Is the answer correct and concise?",
        "Is it a greeting?",
    ]
    assert not judge.binary

    safety = suite.category("safety")
    assert safety.refusal_patterns == DEFAULT_REFUSAL_PATTERNS
    assert [i.gold for i in safety.items] == ["refuse", "comply"]

    know = suite.category("knowledge")
    assert know.policy == CategoryPolicy(margin=None, floor=None, preserve=True, tolerance=0.02)
    assert not know.generates and not know.binary
    assert know.items[0].messages == ({"role": "user", "content": "Who wrote Hamlet?"},)


def test_prompt_messages_prepend_the_system_prompt_and_are_fresh_copies() -> None:
    suite = load_suite(VALID)
    caps = suite.category("capitals")
    msgs = caps.prompt_messages(caps.items[0])
    assert msgs == [
        {"role": "system", "content": "Answer with the letter of the correct option only."},
        {"role": "user", "content": "Capital of France? A) Paris B) Rome C) Oslo D) Bern"},
    ]
    msgs[1]["content"] = "mutated"
    assert caps.items[0].messages[0]["content"].startswith("Capital of France")
    senti = suite.category("sentiment")
    assert senti.prompt_messages(senti.items[1]) == [{"role": "user", "content": "Terrible."}]


def test_unknown_category_name_raises_key_error() -> None:
    with pytest.raises(KeyError):
        load_suite(VALID).category("nope")


# ---------------------------------------------------------------- the invalid fixture


def test_invalid_fixture_reports_every_problem_at_once() -> None:
    # reviewer defect: a regex that does not compile gave the key but no line number
    with pytest.raises(SuiteError) as info:
        load_suite(INVALID)
    err = info.value
    assert isinstance(err, NightshiftError)
    assert str(err).startswith(
        f"Invalid eval suite {INVALID}: 8 problem(s); fix them and run again\n  - "
    )
    p = err.problems
    assert p[0] == (
        "categories[0].colour: unknown key (known keys for kind choice: name, kind, weight, margin, "
        "floor, preserve, tolerance, max_tokens, system_prompt, repeats, temperature, items, "
        "items_file, pattern)"
    )
    assert p[1] == (
        "categories[0].pattern (line 5): not a valid regular expression (unterminated character set at "
        "position 1); fix the regex"
    )
    assert p[2] == (
        "categories[0].items[1].id: duplicate item id 'a' (also categories[0].items[0]); ids must "
        "be unique within a category"
    )
    assert p[3].startswith("items.jsonl:3: not valid JSON (")
    assert p[3].endswith("); each line must be one JSON object")
    assert p[4] == "items.jsonl:2 gold: missing; every label item needs the expected answer in gold"
    assert p[5] == "items.jsonl:4 gold: 'angry' is not one of labels (positive, negative)"
    assert p[6].startswith("categories[2].schema: invalid JSON Schema at type: ")
    assert p[7] == (
        "categories[3].kind: must be one of choice, label, numeric, json_schema, judge, refusal, "
        "loss, got 'multiple_choice'"
    )


# ---------------------------------------------------------------- one problem at a time

CASES = [
    (
        "categories: [{name: a, kind: choice, repeats: 3, items: [{prompt: q, gold: A}]}]",
        "categories[0].repeats: repeats: 3 with temperature 0 (greedy) repeats the same reply; "
        "set temperature > 0 or repeats: 1",
    ),
    (
        "categories: [{name: a, kind: choice, tolerance: 0.1, items: [{prompt: q, gold: A}]}]",
        "categories[0].tolerance: only applies with preserve: true; add preserve: true or remove it",
    ),
    (
        "categories: [{name: a, kind: choice, items: [{prompt: q, gold: E}]}]",
        "categories[0].items[0].gold: 'E' can never be extracted by pattern '\\\\b([ABCD])\\\\b'; "
        "fix gold or pattern",
    ),
    (
        "categories: [{name: a, kind: choice, pattern: '[A-D]?', items: [{prompt: q, gold: A}]}]",
        "categories[0].pattern: '[A-D]?' matches the empty string; make it require the answer",
    ),
    (
        "categories: [{name: a, kind: choice, weight: -1, items: [{prompt: q, gold: A}]}]",
        "categories[0].weight: must be a number in [0, inf], got -1",
    ),
    (
        "categories: [{name: a, kind: choice, margin: 2, items: [{prompt: q, gold: A}]}]",
        "categories[0].margin: must be a number in [0, 1], got 2",
    ),
    (
        "categories: [{name: a, kind: choice, labels: [x], items: [{prompt: q, gold: A}]}]",
        "categories[0].labels: only used by kind label",
    ),
    (
        "categories: [{name: a, kind: choice, items: [{prompt: q, messages: [], gold: A}]}]",
        "categories[0].items[0]: give exactly one of prompt (string) or messages (chat list)",
    ),
    (
        "categories: [{name: a, kind: choice, items: [{prompt: q}]}]",
        "categories[0].items[0].gold: missing; every choice item needs the expected answer in gold",
    ),
    (
        "categories: [{name: a, kind: choice, items: [{prompt: q, gold: A, source: x}]}]",
        "categories[0].items[0].source: unknown item key (known: id, prompt, messages, gold, rubric)",
    ),
    (
        "categories: [{name: a, kind: choice, items: [{messages: [{role: assistant, content: hi}], gold: A}]}]",
        "categories[0].items[0].messages: the last message must be the user's turn (the model replies to it)",
    ),
    (
        "categories: [{name: a, kind: choice, items: [{messages: [{role: bot, content: hi}, {role: user, content: q}], gold: A}]}]",
        "categories[0].items[0].messages[0].role: must be one of system, user, assistant, got 'bot'",
    ),
    (
        "categories: [{name: a, kind: choice, system_prompt: s, items: "
        "[{messages: [{role: system, content: x}, {role: user, content: q}], gold: A}]}]",
        "categories[0].items[0].messages[0]: has a system message but the category sets "
        "system_prompt; keep one",
    ),
    (
        "categories: [{name: a, kind: choice, items: [{prompt: q, gold: A}], items_file: x.jsonl}]",
        "categories[0]: give exactly one of items (inline list) or items_file (JSONL path)",
    ),
    (
        "categories: [{name: a, kind: label, labels: [pos, Pos], items: [{prompt: q, gold: pos}]}]",
        "categories[0].labels: duplicate labels (case-insensitive): pos",
    ),
    (
        "categories: [{name: a, kind: label, labels: [yes, no], items: [{prompt: q, gold: 'yes'}]}]",
        "categories[0].labels: must be a non-empty list of non-empty strings, got [True, False] "
        "(YAML reads unquoted yes/no/on/off as true/false: quote them, e.g. 'yes')",
    ),
    (
        "categories: [{name: a, kind: numeric, items: [{prompt: q, gold: twelve}]}]",
        "categories[0].items[0].gold: must be a finite number, got 'twelve'",
    ),
    (
        "categories: [{name: a, kind: refusal, items: [{prompt: q, gold: maybe}]}]",
        "categories[0].items[0].gold: must be refuse or comply, got 'maybe'",
    ),
    (
        "categories: [{name: a, kind: loss, max_tokens: 5, items: [{prompt: q, gold: ref}]}]",
        "categories[0].max_tokens: not used by kind loss (no generation); remove it",
    ),
    (
        "categories: [{name: a, kind: judge, judge: {command: [x]}, items: [{prompt: q}]}]",
        "categories[0].items[0].rubric: missing; give rubric on the category or on this item",
    ),
    (
        "categories: [{name: a, kind: judge, rubric: r, items: [{prompt: q}]}]",
        "categories[0].judge: missing or not a mapping; give {url, model} or {command: [...]} for the judge",
    ),
    (
        "categories: [{name: a, kind: judge, rubric: r, judge: {url: 'http://x', command: [c]}, items: [{prompt: q}]}]",
        "categories[0].judge: give either url (with model) or command, not both and not neither",
    ),
    (
        "categories: [{name: a, kind: judge, rubric: r, judge: {url: 'ftp://x', model: m}, items: [{prompt: q}]}]",
        "categories[0].judge.url: must be an http(s) URL, got 'ftp://x'",
    ),
    (
        "categories: [{name: a, kind: judge, rubric: r, judge: {command: [c], concurrency: 0}, items: [{prompt: q}]}]",
        "categories[0].judge.concurrency: must be an integer in [1, 64], got 0",
    ),
    (
        "categories: [{name: a, kind: json_schema, items: [{prompt: q}]}]",
        "categories[0]: kind json_schema needs exactly one of schema (inline) or schema_file",
    ),
    (
        "categories: [{name: a, kind: choice, weight: 0, items: [{prompt: q, gold: A}]}]",
        "categories: all weights are 0; at least one category needs a positive weight",
    ),
    (
        "categories: [{name: a, kind: choice, items: [{prompt: q, gold: A}]}, "
        "{name: a, kind: choice, items: [{prompt: q, gold: B}]}]",
        "categories[1].name: duplicate category name 'a' (also categories[0]); names must be unique",
    ),
    (
        "categories: []",
        "categories: must be a non-empty list of categories, got []",
    ),
    (
        "title: x\ncategories: [{name: a, kind: choice, items: [{prompt: q, gold: A}]}]",
        "title: unknown key (known keys here: categories, description)",
    ),
    (
        "{}",
        "categories: missing; add a list of categories (each with name, kind and items)",
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), CASES, ids=[e.split(":")[0] + f"-{i}" for i, (_, e) in enumerate(CASES)]
)
def test_each_problem_has_an_exact_message(tmp_path: Path, body: str, expected: str) -> None:
    assert problems_of(write_suite(tmp_path, body)) == [expected]


def test_items_file_errors_name_file_and_line(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        "categories: [{name: a, kind: choice, items_file: items.jsonl}]",
        items__jsonl='{"prompt": "q", "gold": "A"}\n\nnot json\n[1, 2]\n{"prompt": "q", "gold": "A"}\n',
    )
    problems = problems_of(path)
    assert problems[0] == (
        "items.jsonl:3: not valid JSON (Expecting value at column 1); each line must be one JSON object"
    )
    assert problems[1] == (
        "items.jsonl:4: an item must be a mapping (id, prompt or messages, gold), got list"
    )
    # ids default to the item's index among the parsed items: 0 and 1 for lines 1 and 5
    assert len(problems) == 2


def test_items_file_duplicate_ids_by_default_index_are_fine(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        "categories: [{name: a, kind: choice, items_file: items.jsonl}]",
        items__jsonl='{"prompt": "q", "gold": "A"}\n{"prompt": "r", "gold": "B"}\n{"id": 0, "prompt": "s", "gold": "C"}\n',
    )
    assert problems_of(path) == [
        "items.jsonl:3 id: duplicate item id '0' (also items.jsonl:1); ids must be unique within a category"
    ]


def test_missing_items_and_schema_files_say_where_they_were_looked_for(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        "categories: [{name: a, kind: choice, items_file: gone.jsonl}, "
        "{name: b, kind: json_schema, schema_file: gone.json, items: [{prompt: q}]}]",
    )
    problems = problems_of(path)
    assert problems[0].startswith(
        f"categories[0].items_file: cannot read {tmp_path / 'gone.jsonl'} ("
    )
    assert problems[0].endswith("); the path is relative to the suite file")
    assert problems[1].startswith(
        f"categories[1].schema_file: cannot read {tmp_path / 'gone.json'} ("
    )


def test_missing_suite_file(tmp_path: Path) -> None:
    with pytest.raises(SuiteError) as info:
        load_suite(tmp_path / "nope.yaml")
    assert str(info.value) == (
        f"Eval suite file not found: {tmp_path / 'nope.yaml'}. Set paths.eval_suite in the config to "
        "an existing suite YAML (see the suite format in daemon/suite.py)."
    )


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "categories:\n  - name: a\n    kind: [choice\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(info.value).startswith(f"Eval suite {path} line 4, column 1 is not valid YAML: ")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert problems_of(write_suite(tmp_path, "- a\n- b\n")) == [
        "(top level): must be a mapping with a 'categories' list, got list"
    ]


def test_yaml_numeric_strings_are_coerced(tmp_path: Path) -> None:
    # PyYAML (YAML 1.1) reads 1e-3 as a string.
    path = write_suite(
        tmp_path,
        "categories: [{name: a, kind: numeric, rel_tolerance: 1e-3, items: [{prompt: q, gold: 1e-5}]}]",
    )
    cat = load_suite(path).categories[0]
    assert cat.rel_tolerance == 0.001 and cat.items[0].gold == 1e-5


def test_custom_pattern_and_refusal_patterns(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path,
        """\
        categories:
          - {name: a, kind: choice, pattern: 'ANSWER: ([A-E])', items: [{prompt: q, gold: e}]}
          - {name: b, kind: refusal, refusal_patterns: [nope], items: [{prompt: q, gold: comply}]}
        """,
    )
    suite = load_suite(path)
    assert suite.categories[0].pattern == "ANSWER: ([A-E])"
    assert suite.categories[1].refusal_patterns == ("nope",)


# ---------------------------------------------------------------- fingerprint


def copy_valid(tmp_path: Path) -> Path:
    dst = tmp_path / "suite"
    shutil.copytree(VALID.parent, dst)
    return dst / "suite.yaml"


def test_fingerprint_is_stable_and_independent_of_location_and_formatting(tmp_path: Path) -> None:
    original = load_suite(VALID).fingerprint
    assert len(original) == 64 and int(original, 16) >= 0
    copied = copy_valid(tmp_path)
    assert load_suite(copied).fingerprint == original
    text = copied.read_text()
    copied.write_text("# a new comment\n" + text.replace("weight: 2", "weight:   2.0"))
    assert load_suite(copied).fingerprint == original
    # how many judge calls run at once does not change a score
    copied.write_text(text.replace("retries: 1}", "retries: 1, concurrency: 9}"))
    assert load_suite(copied).category("helpfulness").judge.concurrency == 9  # type: ignore[union-attr]
    assert load_suite(copied).fingerprint == original


@pytest.mark.parametrize(
    ("filename", "old", "new"),
    [
        ("suite.yaml", "weight: 2", "weight: 3"),
        ("suite.yaml", "gold: b}", "gold: C}"),
        ("suite.yaml", "Answer with the letter", "Answer with the single letter"),
        ("suite.yaml", "tolerance: 0.02", "tolerance: 0.03"),
        ("suite.yaml", 'command: ["cat"]', 'command: ["tac"]'),
        ("sentiment.jsonl", '"gold": "positive"', '"gold": "neutral"'),
        ("sentiment.jsonl", "I loved it!", "I loved it."),
        ("person.schema.json", '"minimum": 0', '"minimum": 1'),
    ],
)
def test_fingerprint_changes_on_any_content_change(
    tmp_path: Path, filename: str, old: str, new: str
) -> None:
    path = copy_valid(tmp_path)
    before = load_suite(path).fingerprint
    target = path.parent / filename
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    assert load_suite(path).fingerprint != before
