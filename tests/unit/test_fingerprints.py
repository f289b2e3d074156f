"""Every input a cached score depends on is in its evaluation fingerprint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from daemon.config import Config, load_config
from daemon.evaluate import ModelRef, eval_fingerprint
from daemon.suite import Suite, load_suite

SUITE = f"""\
categories:
  - name: reply
    kind: judge
    rubric: 5 if right
    judge: {{command: [{sys.executable}, judge.py]}}
    items:
      - {{id: q1, prompt: "2 + 2?", gold: "4"}}
"""
REF = ModelRef(role="champion", model_id=1, adapter_path=None, identity="base-sha")
VERSIONS = {"mlx": "0.32.4", "mlx-lm": "0.32.2"}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "suite.yaml").write_text(SUITE)
    (tmp_path / "eval" / "judge.py").write_text("print('Score: 5')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "valid.jsonl").write_text('{"messages": [{"role": "user", "content": "a"}]}\n')
    raw = {"paths": {"eval_suite": "eval/suite.yaml", "dataset": "data"}}
    (tmp_path / "nightshift.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path


def fingerprint(ws: Path) -> str:
    cfg: Config = load_config(ws / "nightshift.yaml")
    suite: Suite = load_suite(cfg.paths.eval_suite)
    return eval_fingerprint(cfg, suite, REF, VERSIONS)


def test_valid_jsonl_is_in_the_fingerprint(ws: Path) -> None:
    """Regression: the champion's held-out loss was reused after valid.jsonl changed (2.134 old vs 1.321 new)."""
    before = fingerprint(ws)
    assert fingerprint(ws) == before  # stable
    (ws / "data" / "valid.jsonl").write_text('{"messages": [{"role": "user", "content": "b"}]}\n')
    assert fingerprint(ws) != before


def test_judge_script_is_in_the_fingerprint(ws: Path) -> None:
    """A command judge's script beside the suite decides the judge scores: editing it re-scores."""
    before = fingerprint(ws)
    (ws / "eval" / "judge.py").write_text("print('Score: 1')\n")
    assert fingerprint(ws) != before


def test_held_out_off_ignores_valid_jsonl(ws: Path) -> None:
    path = ws / "nightshift.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["evaluation"] = {"held_out_loss": False}
    path.write_text(yaml.safe_dump(raw))
    before = fingerprint(ws)
    (ws / "data" / "valid.jsonl").write_text("changed\n")
    assert fingerprint(ws) == before


def test_suite_items_and_decoding_are_in_the_fingerprint(ws: Path) -> None:
    """The champion's cached scores are reused only while every item and the decoding are the same."""
    before = fingerprint(ws)
    suite = ws / "eval" / "suite.yaml"
    suite.write_text(suite.read_text().replace("id: q1", "id: q1x"))
    edited_item = fingerprint(ws)
    assert edited_item != before
    path = ws / "nightshift.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["evaluation"] = {"max_tokens": 7}
    path.write_text(yaml.safe_dump(raw))
    assert fingerprint(ws) != edited_item
