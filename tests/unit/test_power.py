"""keep_awake: caffeinate -i -s -w PID where caffeinate exists, nothing elsewhere."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.power import keep_awake


def test_without_caffeinate_it_does_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert keep_awake(12345) is None


def test_with_caffeinate_it_holds_the_assertion_for_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "args.txt"
    fake = tmp_path / "caffeinate"
    fake.write_text(f'#!/bin/sh\necho "$@" > "{record}"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        proc = keep_awake(child.pid)
        assert proc is not None
        assert proc.wait(timeout=10) == 0
        assert proc.args == [str(fake), "-i", "-s", "-w", str(child.pid)]
        assert record.read_text().split() == ["-i", "-s", "-w", str(child.pid)]
    finally:
        child.wait()
