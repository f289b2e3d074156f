"""Registry faults: garbage, locked and read-only databases (issue 9, defect 6)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.errors import NightshiftError, RegistryError
from daemon.registry import Registry, RunStatus
from daemon.registry import engine as registry_engine
from tests.faults.state import make_cfg, trained_run

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]


def nightshift(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "-c", str(config), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "nightshift.yaml"
    cfg.write_text(f"paths:\n  state_dir: {tmp_path / 'state'}\n")
    return cfg


def test_garbage_registry_is_one_error_line_that_says_what_to_do(tmp_path: Path, fault) -> None:
    """Defect 6: a garbage registry.sqlite gave a raw traceback."""
    config = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / "registry.sqlite").write_bytes(b"this is not a database" * 100)
    with fault("garbage registry.sqlite"):
        proc = nightshift(config, "history")
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
        assert "corrupt" in lines[0] and "mv " in lines[0]
        assert "Traceback" not in proc.stderr


def test_reads_do_not_wait_for_a_writer_and_writes_say_who_to_wait_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault
) -> None:
    """Defect 6: every read took BEGIN IMMEDIATE, so `status` failed while a night wrote."""
    monkeypatch.setattr(registry_engine, "BUSY_TIMEOUT_MS", 300)
    state = tmp_path / "state"
    reg = Registry.open(state)
    run_id = trained_run(reg, state, 1)
    writer = sqlite3.connect(state / "registry.sqlite", isolation_level=None)
    with fault("registry held by an external writer"):
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE runs SET progress = 'x'")
        try:
            # reads go on
            assert reg.get_run(run_id).status == RunStatus.DECIDING.value
            assert reg.runs()[0].id == run_id
            assert reg.champion() is None
            # a write says what happened and what to do
            with pytest.raises(RegistryError, match="locked by another process.*fuser"):
                reg.update_run(run_id, progress="{}")
        finally:
            writer.execute("ROLLBACK")
            writer.close()
        reg.update_run(run_id, progress="{}")
        reg.close()


def test_read_only_state_dir_is_one_error_line(tmp_path: Path, fault) -> None:
    """Defect 6: a read-only state dir gave a traceback."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        config = mnt / "nightshift.yaml"
        config.write_text(f"paths:\n  state_dir: {mnt / 'state'}\n")
        Registry.open(mnt / "state").close()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with fault("read-only state dir"):
            proc = nightshift(config, "history")
            assert proc.returncode == 1, proc.stdout
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
            assert "writable" in lines[0] or "read-only" in lines[0]
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_state_dir_is_private(tmp_path: Path) -> None:
    """Defect 8: state dirs were created 755 and files 644 under umask 022."""
    state = tmp_path / "state"
    reg = Registry.open(state)
    reg.close()
    assert state.stat().st_mode & 0o777 == 0o700
    assert (state / "registry.sqlite").stat().st_mode & 0o777 == 0o600


def test_a_corrupt_database_error_names_the_fix(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "registry.sqlite").write_bytes(b"\0" * 4096 + b"junk")
    with pytest.raises(NightshiftError, match="corrupt|not a database"):
        Registry.open(state)


def test_stale_manual_approval_is_refused(tmp_path: Path, fault) -> None:
    """Defect 11: `approve 2` then `approve 1` made run 1 champion without comparing them."""
    from daemon.pipeline import finish_manual_decision

    state = tmp_path / "state"
    reg = Registry.open(state)
    one = trained_run(reg, state, 1)
    two = trained_run(reg, state, 2)
    for run_id in (one, two):
        reg.transition(run_id, RunStatus.AWAITING_APPROVAL)
    reg.close()
    cfg = make_cfg(state)
    with fault("approve against a changed champion"):
        assert finish_manual_decision(cfg, two, approve=True, decided_by="op") == "promoted"
        with pytest.raises(NightshiftError, match=f"stale.*nightshift reject {one}"):
            finish_manual_decision(cfg, one, approve=True, decided_by="op")
        reg = Registry.open(state)
        assert reg.champion()[0].run_id == two  # type: ignore[index]
        assert reg.get_run(one).status == RunStatus.AWAITING_APPROVAL.value
        reg.close()
        assert finish_manual_decision(cfg, one, approve=False, decided_by="op") == "rejected"
