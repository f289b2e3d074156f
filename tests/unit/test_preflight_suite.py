"""Preflight reads what the night reads: the suite through the real loader, each judge called
once, the schedule (the serving checks are in test_preflight.py). Regressions of issue 14:
preflight's own lenient suite parser passed 10 suite errors and a missing judge that failed
only after training."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import Config, load_config
from daemon.preflight import Level, PreflightReport, run_preflight
from daemon.preflight.system import check_schedule

# Ten suite errors the evaluate stage's loader rejects; one line each in the result's details.
BROKEN_SUITE = """\
categories:
  - name: tone
    kind: labels                     # 1. no such kind (label)
    labels: [positive, negative]
    items:
      - {id: a, prompt: "Great film", gold: positive}
  - name: letters
    kind: choice
    pattern: "([ABCD"                # 2. a regex that does not compile
    items:
      - {id: a, prompt: "Pick: A) x B) y", gold: A}
  - name: json
    kind: json_schema
    schema: {type: objekt}           # 3. a JSON Schema that is itself invalid
    items:
      - {id: a, prompt: "Give JSON"}
  - name: sentiment
    kind: label
    labels: [positive, negative]
    weigth: 2                        # 4. unknown key
    items:
      - {id: a, prompt: "I loved it"}                     # 5. missing gold
      - {id: b, prompt: "I hated it", gold: neutral}      # 6. gold not among the labels
      - {id: c, prompt: "Meh", gold: negative}
      - {id: c, prompt: "Fine", gold: positive}           # 7. duplicate id
  - name: nested
    kind: label
    labels: [positive, negative]
    items:
      - - {id: a, prompt: "Is it good?", gold: positive}  # 8. nested items
  - name: chat
    kind: label
    labels: [positive, negative]
    items:
      - id: a
        messages:                    # 9. ends with the assistant's turn
          - {role: user, content: "Review: fine"}
          - {role: assistant, content: "positive"}
        gold: positive
  - name: numbers
    kind: numeric
    items_file: numbers.jsonl        # 10. line 2 is not JSON
"""
NUMBERS = '{"id": "a", "prompt": "2+2?", "gold": 4}\n{"id": "b", "prompt": "3+3?", "gold": 6\n'
EXPECTED_PROBLEMS = [
    "categories[0].kind: must be one of",
    "categories[1].pattern (line 9): not a valid regular expression",
    "categories[2].schema: invalid JSON Schema",
    "categories[3].weigth: unknown key",
    "categories[3].items[0].gold: missing",
    "categories[3].items[1].gold: 'neutral' is not one of labels",
    "categories[3].items[3].id: duplicate item id 'c'",
    "categories[4].items[0]: an item must be a mapping",
    "categories[5].items[0].messages: the last message must be the user's turn",
    "numbers.jsonl:2: not valid JSON",
]

JUDGE_SUITE = """\
categories:
  - name: reply
    kind: judge
    rubric: 5 if the reply is right
    judge: {JUDGE}
    items:
      - {id: q1, prompt: "What is 2 + 2?", gold: "4"}
"""


def workspace(root: Path, suite: str, *, files: dict[str, str] | None = None, **sections: dict[str, Any]) -> Config:
    """A config whose suite is ``suite`` (model and dataset are absent: only suite checks matter)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "suite.yaml").write_text(suite)
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    raw: dict[str, Any] = {"paths": {"eval_suite": "suite.yaml"}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    (root / "nightshift.yaml").write_text(yaml.safe_dump(raw))
    return load_config(root / "nightshift.yaml")


def named(report: PreflightReport, name: str) -> list[tuple[Level, str]]:
    return [(c.level, c.message) for c in report.checks if c.name == name]


def test_ten_suite_errors_fail_preflight_with_every_problem(tmp_path: Path) -> None:
    """Regression: preflight's lenient suite parser passed all ten; the night failed after training."""
    report = run_preflight(workspace(tmp_path, BROKEN_SUITE, files={"numbers.jsonl": NUMBERS}))
    (check,) = [c for c in report.checks if c.name == "suite"]
    assert check.level is Level.FAIL and not report.ok
    assert check.message.startswith(f"Invalid eval suite {tmp_path / 'suite.yaml'}: 10 problem(s)")
    assert check.message.endswith("(+9 more)") and "\n" not in check.message
    assert len(check.details) == 10
    for detail, expected in zip(check.details, EXPECTED_PROBLEMS, strict=True):
        assert detail.startswith(expected), (detail, expected)


def judge_config(tmp_path: Path, judge: str) -> Config:
    return workspace(tmp_path, JUDGE_SUITE.replace("{JUDGE}", judge))


def test_missing_judge_command_fails_preflight(tmp_path: Path) -> None:
    """Regression: a judge command that does not exist passed `preflight --smoke`."""
    report = run_preflight(judge_config(tmp_path, "{command: [nightshift-no-such-judge], retries: 0}"))
    assert named(report, "suite") == [(Level.OK, "suite.yaml: 1 categories (judge), 1 items, every one valid")]
    ((level, message),) = named(report, "suite.judge")
    assert level is Level.FAIL and not report.ok
    assert message.startswith("category reply: Judge command 'nightshift-no-such-judge' cannot be started")


def test_judge_answers_with_a_grade(tmp_path: Path) -> None:
    (tmp_path / "judge.py").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "judge.py").write_text(
        "import sys\nprompt = sys.stdin.read()\nprint('Score: 5' if '<<<REPLY\\n4\\nREPLY>>>' in prompt else 'Score: 1')\n"
    )
    report = run_preflight(judge_config(tmp_path, f"{{command: [{sys.executable}, judge.py]}}"))
    ((level, message),) = named(report, "suite.judge")
    assert level is Level.OK, message
    assert message.startswith("category reply: the judge graded reply/q1 5/5 in ")  # probed with the item's gold


def test_judge_verdict_without_a_grade_fails(tmp_path: Path) -> None:
    (tmp_path / "judge.py").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "judge.py").write_text("print('Looks fine to me.')\n")
    report = run_preflight(judge_config(tmp_path, f"{{command: [{sys.executable}, judge.py], retries: 0}}"))
    ((level, message),) = named(report, "suite.judge")
    assert level is Level.FAIL
    assert message.startswith("category reply: the judge answered 'Looks fine to me.' without a grade")


def test_judge_api_key_missing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NIGHTSHIFT_TEST_NO_KEY", raising=False)
    report = run_preflight(
        judge_config(tmp_path, "{url: 'http://127.0.0.1:1', model: m, api_key_env: NIGHTSHIFT_TEST_NO_KEY}")
    )
    ((level, message),) = named(report, "suite.judge")
    assert level is Level.FAIL and "$NIGHTSHIFT_TEST_NO_KEY, which is not set" in message


# ---------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ({"timezone": "Mars/Olympus"}, "schedule.timezone: unknown IANA time zone 'Mars/Olympus'"),
        ({"cron": "0 25 * * *"}, "schedule.cron: invalid cron expression '0 25 * * *'"),
        ({"rehearsal_cron": "every evening"}, "schedule.rehearsal_cron: must be a crontab expression of 5 fields"),
    ],
)
def test_bad_schedule_fails_preflight(tmp_path: Path, schedule: dict[str, str], expected: str) -> None:
    """Regression: a bad cron or time zone passed `--run-now`'s preflight; only status/start rejected it."""
    cfg = workspace(tmp_path, JUDGE_SUITE, schedule=schedule)
    ((result),) = check_schedule(cfg)
    assert result.level is Level.FAIL
    assert result.message.startswith(expected), result.message


def test_good_schedule_names_the_next_night(tmp_path: Path) -> None:
    cfg = workspace(tmp_path, JUDGE_SUITE, schedule={"timezone": "Europe/Berlin", "cron": "30 2 * * *"})
    ((result),) = check_schedule(cfg)
    assert result.level is Level.OK
    assert result.message.startswith("cron '30 2 * * *' in Europe/Berlin: next night ")
    assert result.message.endswith(" 02:30 CET") or result.message.endswith(" 02:30 CEST")


def test_evening_rehearsal_runs_the_same_checks(tmp_path: Path) -> None:
    """The 10 PM rehearsal is run_preflight(smoke=True): a missing judge fails it the evening before."""
    from daemon import scheduler

    cfg = judge_config(tmp_path, "{command: [nightshift-no-such-judge], retries: 0}")
    recorded: list[dict[str, Any]] = []

    class Registry:
        def record_rehearsal(self, report: dict[str, Any]) -> int:
            recorded.append(report)
            return len(recorded)

    daemon = scheduler.Daemon(
        cfg, registry=Registry(), run_pipeline=lambda *a, **k: None, run_preflight=scheduler._run_preflight  # type: ignore[arg-type]
    )
    report = daemon.rehearse()
    assert report is not None and report is recorded[-1] and report["ok"] is False
    failed = {c["name"]: c["message"] for c in report["checks"] if c["level"] == "fail"}
    assert failed["suite.judge"].startswith("category reply: Judge command 'nightshift-no-such-judge' cannot be started")
    assert {"suite", "schedule"} <= {c["name"] for c in report["checks"]}
