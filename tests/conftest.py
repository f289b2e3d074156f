"""Shared fixtures: a real demo workspace (tiny local model) built once per session."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon import shutdown


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo workspace (model, data, suite, config) built once; never run in."""
    from daemon.demo import build_workspace

    ws = tmp_path_factory.mktemp("demo-template") / "ws"
    build_workspace(ws, iters=60)
    return ws


@pytest.fixture()
def demo_workspace(demo_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the demo workspace for one test (its own state dir)."""
    ws = tmp_path / "ws"
    shutil.copytree(demo_template, ws, symlinks=True)
    return ws


@pytest.fixture()
def write_config(demo_workspace: Path) -> Callable[..., Path]:
    """Rewrite top-level scalar keys of the demo config: ``write_config(iters=500)``.

    Keys are matched as ``  key: value`` lines (the first occurrence).
    """

    def _write(**overrides: object) -> Path:
        path = demo_workspace / "nightshift.yaml"
        text = path.read_text()
        for key, value in overrides.items():
            text, n = re.subn(rf"(?m)^(\s+){key}: .*$", rf"\g<1>{key}: {value}", text, count=1)
            assert n == 1, f"no key {key} in demo config"
        path.write_text(text)
        return path

    return _write


@pytest.fixture(autouse=True)
def _reset_shutdown_flag() -> None:
    shutdown.reset()
