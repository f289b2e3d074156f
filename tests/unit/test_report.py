"""The morning report: golden Markdown per outcome, no contradictions, inert outside strings."""

from __future__ import annotations

import html
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from daemon import clock
from daemon.registry import Registry
from daemon.report import render_report
from daemon.report.data import gather_report
from daemon.report.escape import md_block, md_inline
from tests.unit.report_nights import HOSTILE, make_config, make_night

GOLDEN = Path(__file__).parent / "golden"
OUTCOMES = [
    "promoted", "rejected", "awaiting_approval", "operator_rejected",
    "failed_preflight", "failed_training", "interrupted", "rolled_back",
]  # fmt: skip


@pytest.fixture()
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fixed clock, and UTC as the local zone (human times are local: the golden files must not
    depend on the machine's zone)."""
    monkeypatch.setattr(clock, "now", lambda: datetime(2026, 11, 20, 1, 0, tzinfo=UTC))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture()
def night(tmp_path: Path, fixed_clock: None) -> Iterator[tuple]:
    state = tmp_path / "state"
    cfg = make_config(state)
    reg = Registry.open(state)
    yield cfg, reg, state
    reg.close()


def normalise(text: str, state: Path) -> str:
    text = text.replace(str(state.parent).replace("_", "\\_"), "<TMP>").replace(str(state.parent), "<TMP>")
    return text


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_markdown_matches_the_golden_file(outcome: str, night: tuple) -> None:
    """Golden Markdown per outcome (UPDATE_GOLDEN=1 rewrites them; review the diff)."""
    cfg, reg, state = night
    make_night(cfg, reg, "promoted")  # a previous night: trend, dataset and config comparisons
    rid = make_night(cfg, reg, outcome)
    text = normalise(render_report(cfg, reg, rid), state)
    golden = GOLDEN / f"report-{outcome}.md"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_markdown_does_not_contradict_itself(outcome: str, night: tuple) -> None:
    """Defect: "Rejected" above an unexplained PROMOTE, "finished still running", restart advice
    on a night that swapped nothing, training parameters of a training that never started."""
    cfg, reg, state = night
    rid = make_night(cfg, reg, outcome)
    text = render_report(cfg, reg, rid)
    assert "still running" not in text
    if outcome != "promoted":
        assert "restart it" not in text
        assert "swapped tonight" not in text
    if outcome == "rolled_back":
        assert text.startswith("# nightshift morning report: run 1\n\n**rolled back: hand-off of run-0001 failed: 2 of 4 probes")
        assert "the previous champion is back" in text
    if outcome == "failed_preflight":
        assert "## Training" not in text and "learning rate" not in text
        assert "## Why it failed (during preflight)" in text
    if outcome in ("failed_training", "interrupted"):
        assert "## Training" in text  # it started: its parameters and curve are facts
    if outcome == "interrupted":
        assert "## Why it was interrupted (during evaluating)" in text
    if outcome == "operator_rejected":
        assert "**rejected by alice (gate recommended promotion)**" in text
        assert "The gate recommended promotion; an operator rejected it. The champion stays." in text
    if outcome == "awaiting_approval":
        assert "waiting for an operator's decision" in text
        assert "not applied until an operator approves or rejects it" in text
        assert "**awaiting approval: the gate recommends PROMOTE: challenger beats champion" in text
    if outcome == "rejected":
        assert "Promotion decision: PROMOTE" not in text
        assert "**rejected: challenger vs champion: failed superiority" in text and "The champion stays." in text


# ------------------------------------------------------------------ escaping (issue 9, defect 10)


def _render_commonmark(text: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(text)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(html_text: str) -> list[tuple[str, dict[str, str | None]]]:
    p = _Tags()
    p.feed(html_text)
    return p.tags


def test_hostile_strings_are_inert_in_markdown(night: tuple) -> None:
    """Issue 9 defect 10: a code fence in a failure reason broke out of its block; category names
    broke the table; links and images in replies stayed live."""
    cfg, reg, _ = night
    failed = make_night(cfg, reg, "failed_preflight", hostile=True)
    decided = make_night(cfg, reg, "awaiting_approval", hostile=True)
    for rid in (failed, decided):
        rendered = _render_commonmark(render_report(cfg, reg, rid))
        tags = {t for t, _ in _tags(rendered)}
        assert not tags & {"a", "img", "script", "b"}, tags
    text = render_report(cfg, reg, decided)
    assert f"| {md_inline(HOSTILE['category'], 120)} | 3 | 0 | – | – |" in text  # a hostile source name in the data table
    # every table row keeps its column count: the category (and source) name did not add a cell
    md = MarkdownIt("commonmark").enable("table")
    for tok_row in _table_rows(md.parse(text)):
        assert tok_row[0] == tok_row[1]
    # the failure reason is one code block holding the whole reason, fence included
    fences = [t for t in MarkdownIt("commonmark").parse(render_report(cfg, reg, failed)) if t.type == "fence"]
    assert [f.content.rstrip("\n") for f in fences] == [HOSTILE["reason"]]


def _table_rows(tokens: list) -> Iterator[tuple[int, int]]:
    """(cells in this row, cells in its table's header) for every body row."""
    header = cells = 0
    in_head = False
    for t in tokens:
        if t.type == "thead_open":
            in_head, header = True, 0
        elif t.type == "thead_close":
            in_head = False
        elif t.type == "tr_open":
            cells = 0
        elif t.type in ("th_open", "td_open"):
            cells += 1
        elif t.type == "tr_close" and not in_head:
            yield cells, header
        elif t.type == "tr_close":
            header = cells


def test_md_inline_and_md_block() -> None:
    assert md_inline("a|b") == "a\\|b"
    assert md_inline("line1\n# line2") == "line1 # line2"
    assert "\\:" in md_inline("see https://x.example") and "www\\." in md_inline("www.x.example")
    assert _render_commonmark(md_inline("![i](http://e/x.png) <i>x</i> [l](javascript:alert(1))")).count("<") == 2  # <p></p>
    block = md_block("a\n````\nb")
    assert block.startswith("`````text\n") and block.endswith("\n`````")


def test_hostile_strings_are_inert_in_html(night: tuple) -> None:
    """Issue 9 defect 10 in the HTML report: replies, golds, categories, item ids, judge output
    and failure reasons are text; the only link is ours, every image is a data: URI."""
    from daemon.report.html import render_html

    cfg, reg, _ = night
    failed = make_night(cfg, reg, "failed_preflight", hostile=True)
    decided = make_night(cfg, reg, "awaiting_approval", hostile=True)
    for rid in (failed, decided):
        page = render_html(gather_report(cfg, reg, rid))
        tags = _tags(page)
        names = {t for t, _ in tags}
        assert "script" not in names and "b" in names  # our own <b>; theirs would be escaped text
        assert [a.get("href") for t, a in tags if t == "a"] == ["index.html"]
        assert all((a.get("src") or "").startswith("data:image/svg+xml;base64,") for t, a in tags if t == "img")
        assert "&lt;script&gt;" in page
        assert not re.search(r"<(script|iframe|object)", page, re.I)
    assert "evil|&lt;b&gt;cat&lt;/b&gt;" in page


# ------------------------------------------------------------------ the CLI


def test_report_command_html_json_and_history_plot(tmp_path: Path) -> None:
    import json as _json

    from click.testing import CliRunner

    from daemon.cli import cli

    cfg_file = tmp_path / "nightshift.yaml"
    cfg_file.write_text("paths:\n  state_dir: state\n")
    cfg = make_config(tmp_path / "state")
    reg = Registry.open(cfg.paths.state_dir)
    make_night(cfg, reg, "rejected")
    rid = make_night(cfg, reg, "promoted")
    reg.close()
    run = CliRunner().invoke(cli, ["report", "-c", str(cfg_file), "--json"])
    assert run.exit_code == 0, run.output
    data = _json.loads(run.stdout)  # stderr may carry recovery warnings
    assert data["run_id"] == rid and data["status"] == "promoted" and len(data["trend"]) == 2
    assert data["decision"]["promote"] is True and data["diffs"][0]["category"] == "math"
    run = CliRunner().invoke(cli, ["report", "1", "-c", str(cfg_file), "--html"])
    assert run.exit_code == 0, run.output
    html_path = Path(run.stdout.strip())
    assert html_path.name == "run-0001.html" and html_path.read_text().startswith("<!DOCTYPE html>")
    run = CliRunner().invoke(cli, ["history", "-c", str(cfg_file), "--plot"])
    index = Path(run.stdout.strip())
    assert index.name == "index.html" and 'href="run-0001.html"' in index.read_text()
    # the report of a run whose state changed after it was written is rewritten (issue 9 defect 7)
    md = Path(CliRunner().invoke(cli, ["report", "1", "-c", str(cfg_file), "--path"]).output.strip())
    md.write_text("# stale: still running\n")
    os.utime(md, (0, 0))
    assert "still running" not in CliRunner().invoke(cli, ["report", "1", "-c", str(cfg_file)]).output


def test_a_run_failed_on_an_invalid_config_renders_in_both_formats(night: tuple) -> None:
    """The run recorded for an invalid config has no training snapshot: no training section."""
    from daemon.registry import RunStatus, Trigger
    from daemon.report.html import render_html

    cfg, reg, _ = night
    run = reg.create_run(trigger=Trigger.MANUAL, config_snapshot={"invalid_config": "x.yaml"}, config_path="x.yaml", profile=None)
    reg.transition(run.id, RunStatus.FAILED, reason="Invalid config x.yaml: 1 problem(s)\n  - training.iters: must be an integer")
    text = render_report(cfg, reg, run.id)
    assert "## Why it failed" in text and "## Training" not in text and "training.iters" in text
    page = render_html(gather_report(cfg, reg, run.id))
    assert "training.iters: must be an integer" in page and "<h2>Training</h2>" not in page


def test_config_diff_and_dataset_change_since_the_previous_night(night: tuple) -> None:
    from dataclasses import replace

    cfg, reg, _ = night
    make_night(cfg, reg, "promoted")
    changed = replace(cfg, training=replace(cfg.training, iters=500, learning_rate=2e-5))
    rid = make_night(changed, reg, "rejected")
    reg.update_run(rid, dataset_sha256="cd" * 32, dataset_examples=150)
    data = gather_report(changed, reg, rid)
    assert data.config_diff == [("training.iters", "1000", "500"), ("training.learning_rate", "1e-05", "2e-05")]
    text = render_report(changed, reg, rid)
    assert "## Config changes since run 1" in text and "| training.iters | 1000 | 500 |" in text
    assert "(changed since run 1: 9 -> 150 examples)" in text


def test_a_skipped_night_says_so_without_training_or_restart_advice(night: tuple) -> None:
    from daemon.registry import RunStatus, Trigger

    cfg, reg, _ = night
    run = reg.create_run(trigger=Trigger.SCHEDULED, config_snapshot=cfg.to_dict(), config_path=None, profile=None)
    reg.transition(run.id, RunStatus.PREFLIGHT)
    reg.transition(run.id, RunStatus.SKIPPED, reason="nothing changed since run 1 trained the champion")
    text = render_report(cfg, reg, run.id)
    assert "**skipped: nothing changed since run 1 trained the champion**" in text
    assert "Nothing was trained or promoted; the champion stays." in text
    assert "## Training" not in text and "restart it" not in text and "still running" not in text


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_report_run_now_line_and_notification_say_the_same_sentence(outcome: str, night: tuple) -> None:
    """Issue 10 gap: the report's headline ("Rejected: the champion stays.") was not the gate's
    sentence that `--run-now`'s last line and the notification print."""
    from daemon.notify import Notice
    from daemon.report.data import night_row
    from daemon.runsummary import summarize_run

    cfg, reg, _ = night
    rid = make_night(cfg, reg, outcome)
    data = gather_report(cfg, reg, rid)
    run = reg.get_run(rid)
    row = night_row(run)
    notice = Notice(run_id=rid, outcome=row.status, reason=row.reason, composite=row.composite, report=None, headline=row.headline)
    assert data.headline and data.headline == row.headline == summarize_run(run).headline
    assert summarize_run(run).outcome_line().startswith(f"run {rid}: {data.headline}")
    assert notice.line.startswith(f"nightshift run {rid}: {data.headline}")
    assert f"**{md_inline(data.headline, None)}**" in render_report(cfg, reg, rid).splitlines()
    decision = data.decision
    if decision is not None and outcome in ("promoted", "rejected"):
        gate = decision.summary.removeprefix("PROMOTE: ").removeprefix("REJECT: ")
        assert data.headline == f"{outcome}: {gate}"


@pytest.fixture()
def no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTML report without its matplotlib figures (fast; the figures have their own tests)."""
    from daemon.report import plots

    for name in ("trend_plot", "loss_plot", "category_plot"):
        monkeypatch.setattr(plots, name, lambda *a, **k: None)


def test_a_pending_approval_and_the_nights_recoveries_are_in_the_report(night: tuple, no_figures: None) -> None:
    """Issue 9 gap: a later night's report did not say that an earlier run still awaits approval,
    nor what reconcile repaired since the previous night."""
    from daemon.report.html import render_html

    cfg, reg, _ = night
    waiting = make_night(cfg, reg, "awaiting_approval")
    reg.add_recovery("finish_promotion", f"`current` pointed at run-0009 {HOSTILE['reason']}", run_id=waiting)
    rid = make_night(cfg, reg, "rejected")
    text = render_report(cfg, reg, rid)
    pending = f"Pending: run {waiting} awaits approval since 2026-11-20 01:00 UTC: run `nightshift approve {waiting}`"
    assert pending in text
    assert "## Recovered since the previous night" in text
    row = next(line for line in text.splitlines() if line.startswith("| 2026-11-20 01:00:00 UTC | finish_promotion |"))
    assert "\\<script>" in row and "\\[x\\]" in row  # inert: escaped, one line, one cell
    rendered = _render_commonmark(text)
    assert not {t for t, _ in _tags(rendered)} & {"a", "img", "script"}
    page = render_html(gather_report(cfg, reg, rid))
    assert f"<b>Pending:</b> run {waiting} awaits approval since 2026-11-20 01:00 UTC" in page
    assert "<h2>Recovered since the previous night</h2>" in page and "&lt;script&gt;" in page
    assert not re.search(r"<script", page, re.I)
    # the waiting run's own report says it waits, not that it is pending elsewhere; the first night has no recoveries
    assert "Pending:" not in render_report(cfg, reg, waiting)


def test_status_says_since_when_a_run_awaits_approval(night: tuple) -> None:
    from daemon.status import collect_status, render_status

    cfg, reg, _ = night
    waiting = make_night(cfg, reg, "awaiting_approval")
    reg.add_recovery("mark_dead_run", "run 7 was marked interrupted (pid 4242 is gone)")
    status = collect_status(cfg)
    assert status["pending_approval"] == [waiting] and status["pending_since"] == {str(waiting): "2026-11-20T01:00:00+00:00"}
    text = render_status(status)
    assert f"approval:   run {waiting} awaits approval since 2026-11-20 " in text
    # (human status lines are local time: issue 10 review, defect 3)
    assert "recovered:  2026-11-20 01:00 UTC mark_dead_run: run 7 was marked interrupted (pid 4242 is gone)" in text


def test_a_later_rollback_does_not_rewrite_what_a_night_served(night: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10 review, defect 1: after `nightshift rollback` a promoted night's report said "The
    challenger is the new champion." beside "champion since: rolled back", its Serving section named
    today's `current` as swapped that night, and a rejected night's said "No release has been
    promoted yet"; `history` and index.html never showed the rollback."""
    from daemon.report.data import gather_history
    from daemon.report.html import render_index
    from daemon.runsummary import command_changes, history_table, summarize_run

    cfg, reg, state = night
    first = make_night(cfg, reg, "promoted")
    second = make_night(cfg, reg, "promoted")
    rejected = make_night(cfg, reg, "rejected")
    monkeypatch.setattr(clock, "now", lambda: datetime(2026, 11, 20, 9, 12, tzinfo=UTC))
    one = reg.get_model(reg.get_run(first).challenger_model_id)
    reg.record_promotion(run_id=None, from_model_id=reg.get_run(second).challenger_model_id, to_model_id=one.id,
                         release_path=str(state / "releases" / "run-0001"), decided_by="alice",
                         reason="nightshift rollback by alice from run-0002: bad replies", finish_run=False)
    text = render_report(cfg, reg, second)
    assert "The challenger is the new champion." not in text and "The challenger became the champion." in text
    assert "`current` -> <TMP>/state/releases/run-0002".replace("<TMP>", str(state.parent)) in text.replace("\\_", "_")
    assert "Since then: rolled back to run 1 at 2026-11-20 " in text and "by alice" in text
    assert "champion since" not in text
    later = render_report(cfg, reg, rejected)
    assert "No release has been promoted yet" not in later and "keep serving" not in later
    assert "The champion stayed." in later and "Since then: rolled back to run 1" in later
    assert "releases/run-0002" in later.replace("\\_", "_")  # what that night served
    runs = reg.runs(10)
    table = history_table([summarize_run(r) for r in runs], command_changes(reg, runs))
    lines = table.splitlines()
    change = next(i for i, line in enumerate(lines) if "champion rolled back to run 1" in line)
    assert f"(after run {rejected})" in lines[change] and lines[change + 1].lstrip().startswith(str(rejected))
    rows, trend = gather_history(reg)
    page = render_index(rows, [], have_html=set())
    assert "champion change" in page and "rolled back to run 1" in page


def test_the_hand_off_line_shows_the_probe_match_in_full_once(night: tuple, no_figures: None) -> None:
    """Issue 10 review, defect 2: the HTML hand-off card cut the probe match at 80 characters
    ("16/16 prob…") and a failed hand-off repeated its verdict ("...; <verdict> at <url>")."""
    from daemon.report.html import render_html

    cfg, reg, state = night
    rid = make_night(cfg, reg, "rolled_back")
    at = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    ok = "served = run-0001: 16/16 probes identical (none of them tells run-0001 from the base model)"
    bad = "the server still serves the base model: 16/16 distinguishing probes match the base model, 0/16 match run-0001"
    common = {"run_id": rid, "mode": "managed", "release_path": str(state / "releases" / "run-0001"),
              "served_run_id": None, "url": "http://127.0.0.1:5113", "duration_s": 3.8, "probes": "{}", "finished_at": at}
    reg.add_handoff(kind="promotion", ok=False, verdict=bad, reason=f"{bad} at http://127.0.0.1:5113", **common)
    reg.add_handoff(kind="auto-rollback", ok=True, verdict=ok, reason=None, **common)
    data = gather_report(cfg, reg, rid)
    assert data.extras["hand-off"].count("still serves the base model") == 1
    page = render_html(data)
    assert page.count("0/16 match run-0001") >= 2 and "16/16 probes identical (none of them tells" in page
    assert "prob…" not in page
    assert "0/16 match run-0001" in render_report(cfg, reg, rid)


def test_human_times_in_the_report_are_local(night: tuple, no_figures: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10 review, defect 3: report times were ISO UTC in two formats in one HTML card and
    index.html had a "started (UTC)" column; human output is local time, --json stays UTC."""
    from daemon.report.data import gather_history
    from daemon.report.html import render_html, render_index

    cfg, reg, _ = night
    rid = make_night(cfg, reg, "promoted")
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    text = render_report(cfg, reg, rid)
    assert "started 2026-11-19 20:00:00 EST · finished 2026-11-19 20:00:00 EST" in text and "+00:00" not in text
    page = render_html(gather_report(cfg, reg, rid))
    assert "2026-11-19 20:00:00 EST</b>manual · finished 2026-11-19 20:00:00 EST" in page and "+00:00" not in page
    index = render_index(gather_history(reg)[0], [], have_html=set())
    assert "(UTC)" not in index and "2026-11-19 20:00 EST" in index
    assert gather_report(cfg, reg, rid).to_dict()["started_at"] == "2026-11-20T01:00:00+00:00"  # --json: UTC


def test_releases_json_created_is_utc_with_offset(tmp_path: Path) -> None:
    """Issue 10 review, defect 3: `releases --json` gave naive local time ("2026-12-01T13:53:54")."""
    from daemon.serving.releases import ReleaseInfo

    r = ReleaseInfo(name="run-0001", path=tmp_path, run_id=1, status="champion", size_bytes=1, created=1_796_000_000.0)
    assert r.to_dict()["created"] == datetime.fromtimestamp(1_796_000_000.0, UTC).isoformat(timespec="seconds")
    assert r.to_dict()["created"].endswith("+00:00")


def test_status_verified_line_is_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10 review, defect 3: `status` showed "13:56 EST" on most lines but its `verified:` line
    was "2026-12-01T18:56:55+00:00"."""
    from daemon.status import _serving_lines

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        lines = _serving_lines({"mode": "managed", "url": "http://127.0.0.1:5113", "server": None,
                                "last_verified": {"verdict": "served = run-0001: 16/16 probes identical",
                                                  "at": "2026-12-01T18:56:55+00:00"}})
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert lines[-1] == "verified:   served = run-0001: 16/16 probes identical at 2026-12-01 13:56 EST"


def test_loss_categories_are_left_out_of_the_reply_diffs() -> None:
    """Issue 10 review, defect 5: a held-out `loss` category (no replies) showed as "newly right ·
    reference_loss / l017 · 0.19 → 1.00" with empty champion and challenger boxes."""
    from daemon.report.content import ItemRow
    from daemon.report.data import _diffs, _with_replies, _worst

    def row(cat: str, i: int, champ: float, chall: float, reply: str) -> ItemRow:
        return ItemRow(category=cat, item_id=f"{cat}-{i}", champion_score=champ, challenger_score=chall,
                       prompt="q", champion_reply=reply and f"a {reply}", challenger_reply=reply and f"b {reply}", gold="g")

    items = [row("reference_loss", i, 0.19, 1.0, "") for i in range(3)] + [row("math", i, 0.0, 1.0, "x") for i in range(3)]
    kept = _with_replies(items, None)
    assert {it.category for it in _diffs(kept)} == {"math"}
    assert all(it.champion_reply and it.challenger_reply for it in _diffs(kept) + _worst(kept))
    assert {it.category for it in _diffs(items)} == {"math", "reference_loss"}  # the defect, before the filter


def test_readme_has_no_empty_heading_nor_a_repeated_command_list() -> None:
    """Issue 10 review, defect 8: an empty heading above "## Serving: ...", and the Commands section
    listed `systemd install|uninstall` and `demo` twice and said "Errors are one line" twice."""
    text = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    lines = re.sub(r"(?ms)^```.*?^```", "", text).splitlines()  # headings only, not shell comments in code
    empty = [a for a, b in zip(lines, lines[1:], strict=False) if a.startswith("## ") and b.startswith("## ")]
    assert not empty, empty
    commands = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    assert commands.count("Errors are one line") == 1
    assert commands.count("`systemd install|uninstall [--dry-run]`") == 1 and commands.count("`demo [--workspace DIR]`") == 1


def test_terminal_report_has_no_markdown_escapes_and_html_renders_code(night: tuple, no_figures: None) -> None:
    """Issue 10 review, defect 6: `nightshift report` showed `http\\://127.0.0.1:43255`, `'61 1 \\* \\* \\*'`
    and `` \\`nightshift suite check\\` `` on the terminal; the HTML preflight table showed raw backticks."""
    from daemon.report.escape import md_plain
    from daemon.report.html import render_html

    assert md_inline("cron 61 1 * * * is invalid") == "cron 61 1 * * * is invalid"  # no escape needed there
    assert _render_commonmark(md_inline("*a* 1 * 2 **b**")).count("<") == 2  # still inert: <p></p>
    cfg, reg, _ = night
    rid = make_night(cfg, reg, "failed_preflight")
    reg.record_preflight(rid, [{"name": "suite", "level": "warn", "duration_s": 0.1,
                                "message": "run `nightshift suite check` (server http://127.0.0.1:43255, cron '61 1 * * *')"}])
    text = render_report(cfg, reg, rid)
    plain = md_plain(text)
    assert "run `nightshift suite check` (server http://127.0.0.1:43255, cron '61 1 * * *')" in plain
    assert "\\:" in text and "\\:" not in plain  # the file stays inert Markdown
    fenced = md_block("C:\\path\\*x*")
    assert md_plain(f"a\\_b\n{fenced}") == f"a_b\n{fenced}"  # a code block's backslashes are its text
    page = render_html(gather_report(cfg, reg, rid))
    assert "run <code>nightshift suite check</code> (server http://127.0.0.1:43255" in page and "`" not in page


def test_the_preflight_guard_estimate_does_not_contradict_the_gate(night: tuple) -> None:
    """Issue 10 review, defect 7: the report warned "8 of 8 categories cannot guard their margin or
    count toward a promotion" (preflight's estimate from the previous night or a prior) while its
    gate section said "8 of 8 categories counted"."""
    from daemon.config import config_from_dict
    from daemon.preflight.guards import check_guards

    cfg, reg, state = night
    suite = Path(__file__).parents[1] / "fixtures" / "suites" / "valid" / "suite.yaml"  # small categories
    small = config_from_dict({"paths": {"state_dir": str(state), "eval_suite": str(suite)}}, base_dir=state.parent)
    (warn,) = check_guards(small)
    assert warn.level == "warn" and warn.message.startswith("estimated before the night from a prior SD"), warn.message
    rid = make_night(cfg, reg, "promoted")
    reg.record_preflight(rid, [{"name": "suite.guards", "level": "warn", "message": warn.message, "duration_s": 0.0}])
    text = render_report(cfg, reg, rid)
    row = next(line for line in text.splitlines() if line.startswith("| suite.guards |"))
    assert "estimated before the night" in row and "the gate decided on tonight's scores: 2 of 2 categories counted" in row
    assert "2 of 2 categories counted" in text.split("### Composite", 1)[1]


def test_the_training_section_says_the_iterations_done_the_processes_and_the_whole_checkpoint_line(
    night: tuple, no_figures: None
) -> None:
    """Issue 11 review, defects 4, 7, 9 and 10: the Training section said "steps: 100000 iterations" after a
    deadline stop at 720, the HTML cut the resume note ("resumed 40 i..."), a distributed night was
    not recorded, and every completed night said "training stopped: completed"."""
    from daemon.report.html import render_html

    cfg, reg, state = night
    rid = make_night(cfg, reg, "promoted")
    reg.update_run(
        rid, chosen_iteration=399, chosen_val_loss=0.001, train_stop_reason="deadline",
        train_stop_detail="stopped at iteration 720 of 100000 to finish by the deadline", train_iterations_done=720,
        train_iterations_total=100000, train_deadline=datetime(2026, 11, 20, 6, 30, tzinfo=UTC),
        train_world_size=2, train_backend="ring", resumed_from_run_id=3, resumed_iterations=40,
    )
    data = gather_report(cfg, reg, rid)
    rows = dict(data.training or [])
    assert rows["steps"].startswith("720 of 100000 iterations (stopped early for the deadline 06:30), batch")
    assert rows["processes"] == "2 processes (ring)"
    assert data.headline.endswith("; training stopped early at iteration 720 of 100000 for the deadline 06:30")
    page = render_html(data)
    assert "resumed 40 iterations from run 3" in page and "stopped early at iteration 720 of 100000" in page
    completed = make_night(cfg, reg, "promoted")
    reg.update_run(completed, chosen_iteration=59, chosen_val_loss=0.5, train_stop_reason="completed",
                   train_iterations_done=100, train_iterations_total=100, train_world_size=1)
    data = gather_report(cfg, reg, completed)
    assert data.extras["best checkpoint"] == "iteration 59 (validation loss 0.500)"
    assert dict(data.training or [])["steps"].startswith("100 iterations, batch") and "processes" not in dict(data.training or [])
    assert "completed" not in render_report(cfg, reg, completed)


def test_a_night_that_started_over_says_why_in_both_formats(night: tuple, no_figures: None) -> None:
    """Reviewer 11 #2c: a night that started at iteration 0 although a checkpoint existed said nothing."""
    from daemon.report.html import render_html

    cfg, reg, _state = night
    rid = make_night(cfg, reg, "rejected")
    note = (
        "training starts at iteration 0: run 3's checkpoint at iteration 40 was written for another training job "
        "(model, data, hyperparameters or processes changed since)"
    )
    reg.update_run(rid, resume_note=note)
    data = gather_report(cfg, reg, rid)
    assert data.extras["resume"] == note
    assert html.escape(note) in render_html(data)  # in full: the why is at the end
    assert "(model, data, hyperparameters or processes changed since)" in render_report(cfg, reg, rid)
