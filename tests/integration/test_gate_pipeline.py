"""The gate inside the real pipeline: mislabelled data is rejected, manual policy, champion cache."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.demo import REPLIES
from daemon.pipeline import finish_manual_decision, run_pipeline
from daemon.registry import Registry, RunStatus

#: Every demo answer and its opposite (label, choice, stars, json, reply); refusals stay.
OPPOSITE = {
    "positive": "negative",
    "A": "B",
    "5": "1",
    '{"sentiment": "positive"}': '{"sentiment": "negative"}',
    REPLIES[True]: REPLIES[False],
}
OPPOSITE |= {v: k for k, v in OPPOSITE.items()}


def flip_labels(path: Path) -> int:
    """Give every sentiment answer in a chat JSONL file the opposite polarity; returns how many."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    flipped = 0
    for row in rows:
        answer = row["messages"][-1]
        if answer["content"] in OPPOSITE:
            answer["content"] = OPPOSITE[answer["content"]]
            flipped += 1
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return flipped


def test_mislabelled_training_data_regresses_and_is_rejected(demo_workspace: Path) -> None:
    assert flip_labels(demo_workspace / "data" / "train.jsonl") > 400
    flip_labels(demo_workspace / "data" / "valid.jsonl")
    cfg = load_config(demo_workspace / "nightshift.yaml")
    outcome = run_pipeline(cfg)
    assert outcome.status == RunStatus.REJECTED
    text = " ".join(outcome.reasons)
    assert "FAILED superiority" in text
    reg = Registry.open(cfg.paths.state_dir)
    try:
        decision = json.loads(reg.get_run(outcome.run_id).decision or "{}")
    finally:
        reg.close()
    sentiment = next(c for c in decision["categories"] if c["name"] == "sentiment")
    assert sentiment["delta"] < -0.2  # the challenger learned the wrong labels
    assert sentiment["verdict"] == "regressed"  # 60 items guard a 0.2 drop
    assert not (cfg.paths.state_dir / "current").exists()
    report = outcome.report_path.read_text() if outcome.report_path else ""
    assert "**rejected: " in report and "sentiment" in report
    # Regression: the next night with the same data, config and base retrained to the same rejection
    # (only the champion's run was compared, and the base is still the champion).
    again = run_pipeline(cfg)
    assert again.status == RunStatus.SKIPPED
    assert again.reasons[0].startswith(f"nothing changed since run {outcome.run_id} (rejected): ")
    assert not (cfg.paths.state_dir / "runs" / f"{again.run_id:04d}" / "metrics.jsonl").exists()


@pytest.mark.slow  # two nights; finish_manual_decision is unit-tested in tests/faults/test_registry_faults.py
def test_manual_policy_waits_for_approval(demo_workspace: Path, write_config: Callable[..., Path]) -> None:
    write_config(policy="manual")
    cfg = load_config(demo_workspace / "nightshift.yaml", "quick")
    first = run_pipeline(cfg)
    assert first.status == RunStatus.AWAITING_APPROVAL
    assert not (cfg.paths.state_dir / "current").exists()
    assert finish_manual_decision(cfg, first.run_id, approve=True, decided_by="alice") == "promoted"
    assert os.readlink(cfg.paths.state_dir / "current") == f"releases/run-{first.run_id:04d}"
    second = run_pipeline(cfg, force=True)  # same inputs as the champion's run: forced
    assert finish_manual_decision(cfg, second.run_id, approve=False, decided_by="bob") == "rejected"
    reg = Registry.open(cfg.paths.state_dir)
    try:
        promos = reg.promotions()
        assert [p.decided_by for p in promos] == ["alice"]
        assert reg.get_run(second.run_id).failure_reason.startswith("rejected by bob")  # type: ignore[union-attr]
    finally:
        reg.close()


@pytest.mark.slow  # three nights; the fingerprint inputs are unit-tested in tests/unit/test_fingerprints.py
def test_champion_cache_reused_only_on_exact_fingerprint(demo_workspace: Path) -> None:
    cfg = load_config(demo_workspace / "nightshift.yaml", "quick")
    run_pipeline(cfg)  # night 1: base is champion
    run_pipeline(cfg, force=True)  # night 2: champion = night 1's challenger, cached
    suite = demo_workspace / "eval" / "sentiment_known.jsonl"
    suite.write_text(suite.read_text().replace('"k000"', '"k000x"'))  # any change to the suite content
    run_pipeline(cfg, force=True)  # night 3: must re-score the champion
    reg = Registry.open(cfg.paths.state_dir)
    try:
        night2 = {es.role: es for es in reg.eval_sets(2)}
        night3 = {es.role: es for es in reg.eval_sets(3)}
        assert night2["champion"].reused_from is not None
        assert night3["champion"].reused_from is None
        assert night3["champion"].fingerprint != night2["champion"].fingerprint
    finally:
        reg.close()
