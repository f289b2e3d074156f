"""Every "check crashed" names the file and line it was reading (issue 14: RecursionError,
TypeError and ValueError were reported without either)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from daemon import dataset as dataset_pkg
from daemon.config import Config, load_config
from daemon.preflight import Level, PreflightReport, run_preflight
from daemon.preflight.runner import crash_message

GOOD_LINE = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
DEEP = "[" * 100_000 + "]" * 100_000


def workspace(root: Path, *, train: str = GOOD_LINE * 4, config_json: str | None = None) -> Config:
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.jsonl").write_text(train)
    (root / "data" / "valid.jsonl").write_text(GOOD_LINE)
    (root / "model").mkdir()
    if config_json is not None:
        (root / "model" / "config.json").write_text(config_json)
    raw = {"paths": {"base_model": "model", "dataset": "data", "eval_suite": "suite.yaml"}}
    (root / "nightshift.yaml").write_text(yaml.safe_dump(raw))
    return load_config(root / "nightshift.yaml")


def messages(report: PreflightReport, name: str) -> list[tuple[Level, str]]:
    return [(c.level, c.message) for c in report.checks if c.name == name]


def test_deeply_nested_dataset_line_is_a_finding_with_its_line(tmp_path: Path) -> None:
    """Regression: a deeply nested JSON line crashed the dataset check with a bare RecursionError."""
    cfg = workspace(tmp_path, train=GOOD_LINE * 3 + DEEP + "\n")
    report = run_preflight(cfg)
    assert messages(report, "dataset.invalid_json") == [
        (Level.FAIL, "train.jsonl line 4: JSON nested too deeply to read; fix or delete the line")
    ]
    assert not [c for c in report.checks if c.message.startswith("check crashed")]


def test_deeply_nested_config_json_names_the_file(tmp_path: Path) -> None:
    """Regression: "check crashed: RecursionError" without the file it was reading."""
    cfg = workspace(tmp_path, config_json=DEEP)
    report = run_preflight(cfg)
    crashed = [c for c in report.checks if c.message.startswith("check crashed")]
    assert crashed, [c.message for c in report.checks]
    assert {c.message.split(": RecursionError")[0] for c in crashed} == {
        f"check crashed while reading {tmp_path / 'model' / 'config.json'}"
    }


def test_a_crash_inside_a_dataset_line_names_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = dataset_pkg.records.normalise_record
    calls = [0]

    def flaky(record: object) -> object:
        calls[0] += 1
        if calls[0] == 3:
            raise TypeError("unhashable type: 'dict'")
        return real(record)  # type: ignore[arg-type]

    monkeypatch.setattr(dataset_pkg.records, "normalise_record", flaky)
    cfg = workspace(tmp_path)
    ((level, message),) = messages(run_preflight(cfg), "dataset")
    assert level is Level.FAIL
    assert message == (
        f"check crashed while reading {tmp_path / 'data' / 'train.jsonl'} line 3: TypeError: unhashable type: 'dict'"
    )


def test_a_crash_outside_any_reader_names_the_source_line_and_clips_the_value() -> None:
    def check() -> None:
        raise ValueError("x" * 5000)

    try:
        check()
    except ValueError as exc:
        message = crash_message(exc)
    assert message.startswith("check crashed in test_preflight_messages.py line ")
    assert "(a nightshift bug: please report it): ValueError: xxx" in message
    assert len(message) < 400


def test_deeply_nested_items_line_is_a_suite_problem_naming_its_line(tmp_path: Path) -> None:
    """A RecursionError in an items file named neither the file nor the line (it blamed suite.yaml)."""
    cfg = workspace(tmp_path)
    (tmp_path / "suite.yaml").write_text("categories:\n  - {name: t, kind: loss, items_file: items.jsonl}\n")
    (tmp_path / "items.jsonl").write_text('{"prompt": "a", "gold": "b"}\n' + DEEP + "\n")
    ((level, message),) = messages(run_preflight(cfg), "suite")
    assert level is Level.FAIL
    assert message.startswith(f"Invalid eval suite {tmp_path / 'suite.yaml'}: 1 problem(s); fix them and run again: items.jsonl:2: not valid JSON (maximum recursion depth exceeded")


def test_guards_not_checked_keeps_the_table_cell_one_line(tmp_path: Path) -> None:
    """Reviewer defect: "not checked" under suite.guards spilled the suite's multi-line problem list into the table."""
    from daemon.config import config_from_dict
    from daemon.preflight.guards import check_guards
    from daemon.preflight.report import PreflightReport

    (tmp_path / "suite.yaml").write_text("categories:\n  - {name: a, kind: nope}\n  - {name: b, kind: nope}\n")
    cfg = config_from_dict({"paths": {"eval_suite": "suite.yaml", "state_dir": "state"}}, base_dir=tmp_path)
    (res,) = check_guards(cfg)
    assert "\n" not in res.message and res.message.startswith("not checked: Invalid eval suite")
    assert len(res.details) == 2 and all(d.startswith("categories[") for d in res.details)
    table = PreflightReport([res]).render_table().splitlines()
    assert table[1].startswith("WARN ") and table[2].strip().startswith("- categories[0].kind")
