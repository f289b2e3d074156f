"""A normal (non-editable) install works from any directory.

`pip install .` then `nightshift demo` used to build for two minutes and fail with
"Alembic migrations not found ... install nightshift from a checkout with pip
install -e ."; `status` and `--run-now` failed the same way. This builds a wheel
from a copy of the source, installs it into a fresh venv and runs `status` and the
demo (on the prebuilt demo workspace) from an unrelated directory. Slow: building the wheel fetches setuptools through pip's
cache or the package registry (no other network).
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "demo-workspace", "__pycache__",
                              ".mypy_cache", ".ruff_cache", ".pytest_cache", "tests", "benchmarks")


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_runs_from_another_directory(
    tmp_path: Path, demo_workspace: Path
) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=SKIP)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    (wheel,) = dist.glob("nightshift-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)  # pip from ensurepip, offline
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    # The wheel alone (its console script then runs the new venv's python)...
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    # ...which it takes from this test environment: a plain path entry, so the .pth files there
    # (this checkout's editable install among them) are not processed and cannot shadow the wheel.
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "_test_deps.pth").write_text("\n".join(deps) + "\n")
    nightshift = venv / "bin" / "nightshift"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(nightshift), *args], cwd=elsewhere, capture_output=True, text=True, timeout=900,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import daemon; print(daemon.__file__)"],
        cwd=elsewhere, capture_output=True, text=True, check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(purelib), where.stdout  # the wheel, not the checkout

    config = demo_workspace / "nightshift.yaml"
    status = run("-c", str(config), "status")
    assert status.returncode == 0, status.stderr
    assert "champion:   base model (nothing promoted yet)" in status.stdout

    # The demo itself on the prebuilt workspace (its tiny model is reused): a whole night.
    night = run("demo", "--workspace", str(demo_workspace))
    assert night.returncode == 0, night.stderr
    assert "run 1: preflight" in night.stderr and "Alembic" not in night.stderr
    assert "run 1: promoted" in night.stdout or "run 1: rejected" in night.stdout, night.stdout
