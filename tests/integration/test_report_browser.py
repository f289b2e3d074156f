"""The HTML report in a real headless Chromium: sections present, figures drawn, no console output.

Needs the distribution's ``chromium`` (Debian/Ubuntu: ``apt-get install chromium``; ``make
test-all`` installs it). The page has no script, so any console line (a CSP violation, a
failed load) is an error.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon import clock
from daemon.registry import Registry
from daemon.report import html_report_path, write_report
from tests.unit.report_nights import make_config, make_night

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium; make test-all installs it)"),
]

SECTIONS = ["Trend (2 decided nights)", "Scores per category", "Gate decision", "Sample diffs", "Training", "Stages", "Serving"]


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _blue_pixels(png: Path) -> int:
    from PIL import Image

    img = Image.open(png).convert("RGB")
    pixels = img.get_flattened_data() if hasattr(img, "get_flattened_data") else img.getdata()
    return sum(1 for r, g, b in pixels if abs(r - 26) < 40 and abs(g - 115) < 40 and b > 190)


def test_html_report_renders_in_a_real_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "now", lambda: datetime(2026, 11, 20, 1, 0, tzinfo=UTC))
    cfg = make_config(tmp_path / "state")
    reg = Registry.open(cfg.paths.state_dir)
    make_night(cfg, reg, "rejected")
    rid = make_night(cfg, reg, "promoted", hostile=True)
    write_report(cfg, reg, rid)
    reg.close()
    page = html_report_path(cfg.paths.state_dir, rid)
    url = page.as_uri()

    dom = _chromium(tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    headings = [re.sub(r"<[^>]+>", "", m) for m in re.findall(r"<h2>(.*?)</h2>", dom.stdout)]
    for section in SECTIONS:
        assert any(h.startswith(section) for h in headings), (section, headings)
    assert "<script" not in dom.stdout.lower()
    assert "<h3>Examples per source</h3>" in dom.stdout  # the night's data composition

    for name, width in (("laptop", 1280), ("phone", 390)):
        shot = tmp_path / f"{name}.png"
        run = _chromium(tmp_path / f"profile-{name}", f"--window-size={width},3000", f"--screenshot={shot}", url)
        assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
        console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
        assert console == [], console
        assert _blue_pixels(shot) > 300  # the champion's lines and bars were drawn
        keep = Path(__file__).parents[2] / ".screenshots"
        if keep.is_dir():  # `mkdir .screenshots` to keep them for a look
            shutil.copy(shot, keep / shot.name)
