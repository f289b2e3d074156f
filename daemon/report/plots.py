"""The report's figures as SVG data URIs (matplotlib, Agg/SVG backends, no network).

matplotlib is imported inside :func:`_pyplot` only, so the scheduler and the
CLI pay for it only when an HTML report is rendered. Figures are written as
SVG with text as ``<text>`` elements (``svg.fonttype: none``; matplotlib
XML-escapes the strings, and is several times faster than text as paths).
Each figure is embedded as an ``<img src="data:image/svg+xml;base64,...">``:
an SVG loaded as an image runs no script and loads nothing, figures share no
ids, and the page stays one self-contained file.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from daemon.report.content import CategoryRow, LossCurve, TrendPoint

COLORS = {"base": "#9aa0a6", "champion": "#1a73e8", "challenger": "#e8710a"}
MARKERS_UP_TO = 60
"""Nights up to which the trend draws a marker per night."""
MAX_TREND_CATEGORIES = 8
"""Per-category trend lines drawn (the rest would be unreadable on a phone)."""


def load() -> None:
    """Import matplotlib now (the render child does while its parent gathers the report)."""
    _pyplot()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text as <text> (escaped by matplotlib), drawn by the browser
            "svg.hashsalt": "nightshift",  # stable ids: the same data renders the same file
            "font.size": 11,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
        }
    )
    return plt


def _data_uri(fig: Any) -> str:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _label(text: str, limit: int = 28) -> str:
    # mathtext would interpret `$...$` in a category name; cut long names for the axis.
    s = text if len(text) <= limit else text[: limit - 1] + "…"
    return s.replace("$", r"\$")


def trend_plot(trend: Sequence[TrendPoint]) -> str | None:
    """Composite of champion and challenger per night, promotions starred, and per-category
    means of both below (challenger solid, champion dotted); None without a decided night."""
    if not trend:
        return None
    plt = _pyplot()
    cats = sorted({c for p in trend for c in p.categories})[:MAX_TREND_CATEGORIES]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True, height_ratios=[3, 2])
    legend_rows = (len(cats) + 1) // 2
    fig.subplots_adjust(left=0.14, right=0.97, top=0.94, bottom=(0.6 + 0.22 * legend_rows) / 6.5, hspace=0.08)
    xs = [p.run_id for p in trend]
    marker = "o" if len(trend) <= MARKERS_UP_TO else ""  # markers cost time and hide lines on a year of nights
    ax.plot(xs, [p.champion for p in trend], "-" + marker, color=COLORS["champion"], ms=3, label="champion")
    ax.plot(xs, [p.challenger for p in trend], "--" + marker, color=COLORS["challenger"], ms=3, label="challenger")
    promoted = [p for p in trend if p.status == "promoted"]
    if promoted:
        ax.scatter([p.run_id for p in promoted], [p.challenger for p in promoted], marker="*", s=140,
                   color="#188038", zorder=5, label="promoted")
    ax.set_ylabel("composite (0–1)")
    ax.set_title("Composite per night")
    ax.legend(loc="best", fontsize=9)
    for c in cats:
        pts = [(p.run_id, p.categories[c]) for p in trend if c in p.categories]
        xs_c = [x for x, _ in pts]
        (line,) = ax2.plot(xs_c, [y[1] for _, y in pts], "-" + marker, ms=2, lw=1.2, label=_label(c))
        ax2.plot(xs_c, [y[0] for _, y in pts], ":", lw=0.9, color=line.get_color())
    ax2.set_ylabel("per category\n(— challenger, ··· champion)", fontsize=9)
    ax2.set_xlabel("run")
    if cats:
        fig.legend(*ax2.get_legend_handles_labels(), loc="lower center", ncols=2, fontsize=9, frameon=False)
    if len(xs) <= 12:
        ax2.set_xticks(xs)
    else:
        ax2.xaxis.get_major_locator().set_params(integer=True)
    if len(xs) == 1:
        ax2.set_xlim(xs[0] - 1, xs[0] + 1)
    return _data_uri(fig)


def loss_plot(curve: LossCurve | None, previous: Sequence[LossCurve]) -> str | None:
    """Train and validation loss per step for tonight, earlier nights in grey behind it,
    the best checkpoint marked; None without metrics."""
    if curve is None or not (curve.train or curve.val):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.15)
    for i, prev in enumerate(previous):
        label = "earlier nights" if i == 0 else None
        if prev.train:
            ax.plot(*zip(*prev.train, strict=True), color="#bdc1c6", lw=0.8, label=label)
    if curve.train:
        ax.plot(*zip(*curve.train, strict=True), color=COLORS["challenger"], lw=1.5, label=f"train (run {curve.run_id})")
    if curve.val:
        ax.plot(*zip(*curve.val, strict=True), "o--", color=COLORS["champion"], ms=4, lw=1.2, label="validation")
    if curve.best_iteration is not None:
        ax.axvline(curve.best_iteration, color="#188038", ls=":", lw=1.5, label=f"best checkpoint ({curve.best_iteration})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Training loss")
    ax.legend(loc="best", fontsize=9)
    return _data_uri(fig)


def category_plot(categories: Sequence[CategoryRow]) -> str | None:
    """Horizontal bars of base, champion and challenger per category with intervals; the
    verdict written beside each category; None without scores."""
    if not categories:
        return None
    plt = _pyplot()
    roles = [r for r in ("base", "champion", "challenger") if any(r in c.means for c in categories)]
    n = len(categories)
    height = 1.6 + 0.3 * n * len(roles)
    fig, ax = plt.subplots(figsize=(6, height))
    # fixed margins (a layout engine doubles the drawing time): room for 28-character names
    fig.subplots_adjust(left=0.32, right=0.97, top=1 - 0.35 / height, bottom=1.0 / height)
    bar = 0.8 / len(roles)
    for j, role in enumerate(roles):
        ys, vals, errs = [], [], []
        for i, c in enumerate(categories):
            if role not in c.means:
                continue
            m = c.means[role]
            ys.append(n - 1 - i + (len(roles) / 2 - j - 0.5) * bar)
            vals.append(m)
            lo, hi = c.ci.get(role, (m, m))
            errs.append((max(0.0, m - lo), max(0.0, hi - m)))
        ax.barh(ys, vals, height=bar * 0.9, color=COLORS[role], label=role,
                xerr=list(zip(*errs, strict=True)) if errs else None, error_kw={"lw": 0.8, "capsize": 2})
    ax.set_yticks(range(n))
    ax.set_yticklabels([_label(c.name) for c in reversed(categories)])
    ax.set_xlim(0, 1.25)
    for i, c in enumerate(categories):
        if c.verdict:
            ax.text(1.02, n - 1 - i, _label(c.verdict, 14), va="center", fontsize=9)
    ax.set_xlabel("mean item score (0–1); whiskers: interval")
    ax.set_title("Scores per category")
    fig.legend(loc="lower center", ncols=len(roles), fontsize=9, frameon=False)
    return _data_uri(fig)
