"""The morning report: Markdown and self-contained HTML per run, and an index of every night.

Written for every run that got a registry row (promoted, rejected, failed,
interrupted, awaiting approval, skipped or rolled back) to ``<state_dir>/reports/run-NNNN.md`` and
``run-NNNN.html``, plus ``reports/index.html`` listing every night.

Layout: :mod:`.content` holds the records a report shows; :mod:`.data` gathers
them once from the registry; :mod:`.markdown` and :mod:`.html` render that same
content; :mod:`.plots` draws the figures (matplotlib, imported only when an HTML
report is rendered, and in the daemon only in a child: :mod:`.child`);
:mod:`.escape` makes outside strings inert; :mod:`.decision` renders the gate's decision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.registry import Registry
    from daemon.report.child import RenderChild, RenderedPages, RenderRequest
    from daemon.report.data import ReportData, gather_report


def __getattr__(name: str) -> Any:
    """``ReportData`` and ``gather_report`` on first use: the package itself imports no
    registry, so the HTML render child (:mod:`daemon.report.child`) starts small."""
    if name in ("ReportData", "gather_report"):
        from daemon.report import data

        return getattr(data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

REPORTS_DIR = "reports"
INDEX_FILE = "index.html"

__all__ = [
    "ReportData",
    "gather_report",
    "html_report_path",
    "index_path",
    "ensure_report",
    "render_html_in_child",
    "render_report",
    "report_json",
    "report_path",
    "write_index",
    "write_report",
]


def report_path(state_dir: Path, run_id: int) -> Path:
    """Where the Markdown report of ``run_id`` lives."""
    return state_dir / REPORTS_DIR / f"run-{run_id:04d}.md"


def html_report_path(state_dir: Path, run_id: int) -> Path:
    """Where the HTML report of ``run_id`` lives."""
    return state_dir / REPORTS_DIR / f"run-{run_id:04d}.html"


def index_path(state_dir: Path) -> Path:
    """The HTML page listing every night with links to its reports."""
    return state_dir / REPORTS_DIR / INDEX_FILE


def render_report(cfg: Config, registry: Registry, run_id: int) -> str:
    """The Markdown text of a run's report."""
    from daemon.report.data import gather_report
    from daemon.report.markdown import render_markdown

    return render_markdown(gather_report(cfg, registry, run_id))


def _write_atomic(path: Path, text: str) -> None:
    from daemon.statedir import ensure_private_dir, write_private

    ensure_private_dir(path.parent)
    write_private(path, text.encode("utf-8"))  # temp + rename, 0600, no planted link followed


def write_report(cfg: Config, registry: Registry, run_id: int, *, html: bool = True) -> Path:
    """Render and write the Markdown report (and the HTML report and index); record its path.

    Args:
        html: also write ``run-NNNN.html`` and refresh ``index.html``.

    Returns:
        The Markdown report file.
    """
    from daemon.report.child import RenderChild, RenderRequest
    from daemon.report.data import gather_history, gather_report
    from daemon.report.markdown import render_markdown

    child = RenderChild() if html and _HTML_IN_CHILD else None  # its imports overlap the gathering below
    try:
        data = gather_report(cfg, registry, run_id)
        state_dir = cfg.paths.state_dir
        path = report_path(state_dir, run_id)
        _write_atomic(path, render_markdown(data))
        if html:
            rows, trend = gather_history(registry)
            have = {r.run_id for r in rows if r.run_id == run_id or html_report_path(state_dir, r.run_id).exists()}
            # The newest run's trend is the index's trend: draw it once for both pages.
            pages = _render(RenderRequest(data=data, rows=rows, trend=trend, have_html=have, index=True,
                                          share_trend=bool(rows) and rows[0].run_id == run_id), child)
            assert pages.run is not None and pages.index is not None
            _write_atomic(html_report_path(state_dir, run_id), pages.run)
            _write_atomic(index_path(state_dir), pages.index)
    finally:
        if child is not None:
            child.close()
    registry.update_run(run_id, report_path=str(path))
    return path


def write_index(cfg: Config, registry: Registry) -> Path:
    """Write ``reports/index.html``: every night with its status, composite and report links."""
    from daemon.report.child import RenderRequest
    from daemon.report.data import gather_history

    rows, trend = gather_history(registry)
    state_dir = cfg.paths.state_dir
    have = {r.run_id for r in rows if html_report_path(state_dir, r.run_id).exists()}
    pages = _render(RenderRequest(data=None, rows=rows, trend=trend, have_html=have, index=True))
    assert pages.index is not None
    path = index_path(state_dir)
    _write_atomic(path, pages.index)
    return path


_HTML_IN_CHILD = False


def render_html_in_child(enabled: bool = True) -> None:
    """From now on render HTML pages in a child process (:mod:`daemon.report.child`).

    The long-lived scheduler calls this at start so that matplotlib never enters
    it; short commands render in-process (a child would cost its start-up and imports).
    """
    global _HTML_IN_CHILD
    _HTML_IN_CHILD = enabled


def _render(req: RenderRequest, child: RenderChild | None = None) -> RenderedPages:
    from daemon.report.child import RenderChild, render_pages

    if not _HTML_IN_CHILD:
        return render_pages(req)
    return (child or RenderChild()).render(req)


def report_json(cfg: Config, registry: Registry, run_id: int) -> str:
    """The gathered report content as JSON (``nightshift report --json``)."""
    from daemon.report.data import gather_report

    return json.dumps(gather_report(cfg, registry, run_id).to_dict(), indent=2, default=str)


def ensure_report(cfg: Config, registry: Registry, run_id: int, *, html: bool = False) -> Path:
    """The run's Markdown report, (re)written when missing or older than the run's state.

    A report is rewritten when its file (or, with ``html``, the HTML file) is
    missing, when the run is not final (still running, awaiting approval), or
    when the run finished after the file was written (e.g. marked interrupted
    later): a stored "still running" report is never served for a dead run.

    Returns:
        The Markdown report file.
    """
    from daemon.registry import RunStatus

    run = registry.get_run(run_id)
    state_dir = cfg.paths.state_dir
    files = [report_path(state_dir, run_id)] + ([html_report_path(state_dir, run_id)] if html else [])
    stale = not RunStatus(run.status).is_final or any(not f.exists() for f in files)
    if not stale and run.finished_at is not None:
        stale = any(f.stat().st_mtime < run.finished_at.timestamp() for f in files)
    return write_report(cfg, registry, run_id, html=html) if stale else files[0]
