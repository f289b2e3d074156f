"""``python -m daemon.report.child``: render the HTML pages (matplotlib figures) in a child process.

The scheduler is a long-lived process that must stay small: it never imports
matplotlib (about 40 MB resident once pyplot is loaded). When
:func:`daemon.report.render_html_in_child` was called (``nightshift start`` does),
:func:`daemon.report.write_report` hands the gathered content to this module in a
child process: a pickled :class:`RenderRequest` on stdin, the pickled
:class:`RenderedPages` on stdout. The parent writes the files; the child writes
nothing. Pickle is safe here: both sides are this package, over a private pipe.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from daemon.report.content import NightRow, ReportData, TrendPoint

CHILD_TIMEOUT_S = 300.0
"""Longest a render child may take (seconds); a 2,000-item night renders in about 2 s."""


@dataclass(frozen=True)
class RenderRequest:
    """What to render: a run's page (when ``data``), the index page (when ``rows``).

    Attributes:
        share_trend: the run is the newest: its trend figure is the index's too (drawn once).
    """

    data: ReportData | None
    rows: Sequence[NightRow] = ()
    trend: Sequence[TrendPoint] = ()
    have_html: set[int] = field(default_factory=set)
    index: bool = False
    share_trend: bool = False


@dataclass(frozen=True)
class RenderedPages:
    """The HTML documents rendered (None where not asked)."""

    run: str | None
    index: str | None


def render_pages(req: RenderRequest) -> RenderedPages:
    """Render the pages of ``req`` in this process (imports matplotlib)."""
    from daemon.report import plots
    from daemon.report.html import render_html, render_index

    run_html = index_html = None
    trend_uri = None
    if req.data is not None:
        trend_uri = plots.trend_plot(req.data.trend) if req.data.trend else None
        run_html = render_html(req.data, trend_uri=trend_uri)
    if req.index:
        index_html = render_index(req.rows, req.trend, have_html=req.have_html,
                                  trend_uri=trend_uri if req.share_trend else None)
    return RenderedPages(run=run_html, index=index_html)


class RenderChild:
    """A render child started ahead of its request, so that its imports (matplotlib's
    included, most of its time) overlap the parent's reading of the registry.

    ``RenderChild()`` starts ``python -m daemon.report.child`` (without secrets in its
    environment); :meth:`render` sends the request and waits for the pages;
    :meth:`close` stops a child that was never asked.
    """

    def __init__(self) -> None:
        import os

        from daemon.secrets import without_secrets

        self._proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.report.child"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=without_secrets(os.environ),
        )

    def render(self, req: RenderRequest) -> RenderedPages:
        """The pages of ``req``, rendered by the child.

        Raises:
            RuntimeError: the child failed or timed out (its last line of stderr is quoted).
        """
        try:
            out, err = self._proc.communicate(pickle.dumps(req), timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            self.close()
            raise RuntimeError(f"the HTML report child did not finish within {CHILD_TIMEOUT_S:g} s") from exc
        if self._proc.returncode != 0:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"the HTML report child exited with status {self._proc.returncode}: {tail[0][:300]}")
        pages = pickle.loads(out)
        assert isinstance(pages, RenderedPages)
        return pages

    def close(self) -> None:
        """Stop the child if it still runs (the parent failed before asking it)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()


def main() -> int:
    """Read a pickled :class:`RenderRequest` from stdin, write the pickled :class:`RenderedPages` to stdout."""
    from daemon.report import plots

    plots.load()  # before the request arrives: the parent is still reading the registry
    req = pickle.load(sys.stdin.buffer)
    pages = render_pages(req)
    sys.stdout.buffer.write(pickle.dumps(pages))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    # Run the module's own copy, not __main__'s: pickle must name daemon.report.child's classes.
    from daemon.report.child import main as _main

    sys.exit(_main())
