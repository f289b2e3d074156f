"""The night's data composition: examples per source and what changed since the last night."""

from __future__ import annotations

import json
from pathlib import Path

from daemon.dataset import clean_record
from daemon.dataset.composition import (
    COMPOSITION_FILE,
    UNTAGGED,
    load_composition,
    record_composition,
)
from daemon.registry import Registry
from daemon.report import render_report
from daemon.report.data import gather_report
from daemon.report.html import _data_html
from tests.unit.report_nights import make_config, make_night


def _write(directory: Path, train: list[dict], valid: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (directory / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in valid))
    return directory


def _ex(text: str, source: str | None = None) -> dict:
    msgs = [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]
    return {"messages": msgs, "source": source} if source else {"messages": msgs}


def test_added_and_removed_per_source_since_the_newest_recorded_night(tmp_path: Path) -> None:
    night1, night2, night3 = (tmp_path / f"runs/{n}" for n in (1, 2, 3))
    for d in (night1, night2, night3):
        d.mkdir(parents=True)
    first = _write(tmp_path / "d1", [_ex("a", "legacy"), _ex("b", "legacy"), _ex("c"), _ex("d", "tools")], [_ex("v", "legacy")])
    record_composition(first, night1, [])
    # night 2 failed before its data stage: no file, so night 3 compares with night 1
    second = _write(tmp_path / "d3", [_ex("a", "legacy"), _ex("b", "tools"), _ex("e", "tools"), _ex("e", "tools")],
                    [_ex("v", "legacy")])
    record_composition(second, night3, [(2, str(night2)), (1, str(night1)), (0, None)])
    comp = load_composition(night3)
    assert comp is not None and comp.previous_run == 1
    rows = {r.source: (r.train, r.valid, r.added, r.removed) for r in comp.rows}
    # "b" moved from legacy to tools; "c" (untagged) and "d" were removed; "e" came twice
    assert rows == {"legacy": (1, 1, 0, 1), "tools": (3, 0, 3, 1), UNTAGGED: (0, 0, 0, 1)}
    assert (comp.added, comp.removed) == (3, 3)
    first_comp = load_composition(night1)
    assert first_comp is not None and first_comp.previous_run is None
    assert (night1 / COMPOSITION_FILE).stat().st_mode & 0o777 == 0o600


def test_the_report_shows_the_composition_in_both_formats(tmp_path: Path) -> None:
    """Issue 10 gap: the report had no data composition (examples per source, change since the last night)."""
    cfg = make_config(tmp_path / "state")
    reg = Registry.open(cfg.paths.state_dir)
    try:
        make_night(cfg, reg, "promoted")
        rid = make_night(cfg, reg, "rejected")
        text = render_report(cfg, reg, rid)
        assert "## Training data (examples per source)" in text
        assert "| tool-use | 3 | 0 | +1 | 0 |" in text and "| legacy | 4 | 1 | 0 | 0 |" in text
        assert "| total | 8 | 2 | +1 | 0 |" in text
        assert "Since run 1: 1 example(s) added, 0 removed." in text
        page = "".join(_data_html(gather_report(cfg, reg, rid)))  # the HTML report's data section (no figures)
        assert "<h3>Examples per source</h3>" in page and "<td>tool-use</td>" in page
        assert "Since run 1: 1 example(s) added, 0 removed." in page
        first = render_report(cfg, reg, 1)
        assert "| tool-use | 2 | 0 | – | – |" in first and "nothing to compare with" in first
    finally:
        reg.close()


def test_clean_keeps_the_source_tag() -> None:
    result = clean_record({"source": "jailbreak", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "no"}]})
    assert result.record is not None and result.record["source"] == "jailbreak"
