"""Kill -9 at every step of the promotion protocol, then recover (issue 9, defects 1 and 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.faults import ACTION_ENV, FAULT_ENV
from daemon.promote import current_target, reconcile, release_name
from daemon.recovery import recover_state
from daemon.registry import Registry, RunStatus
from tests.faults.state import assert_consistent, make_cfg, promote, trained_run

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
# The swap-to-commit window (defect 1) runs in `make test`; every other step in `make test-all`.
PROMOTE_POINTS = (
    pytest.param("promote:release-built", marks=pytest.mark.slow),
    pytest.param("promote:intent-written", marks=pytest.mark.slow),
    "promote:current-swapped",
    pytest.param("promote:registry-committed", marks=pytest.mark.slow),
    pytest.param("promote:intent-cleared", marks=pytest.mark.slow),
)


def champion_and_challenger(state_dir: Path) -> tuple[int, int]:
    reg = Registry.open(state_dir)
    try:
        first = trained_run(reg, state_dir, 1)
    finally:
        reg.close()
    promote(state_dir, first)
    reg = Registry.open(state_dir)
    try:
        second = trained_run(reg, state_dir, 2)
    finally:
        reg.close()
    return first, second


def promote_in_child(state_dir: Path, run_id: int, point: str, action: str = "kill") -> int:
    env = {**os.environ, FAULT_ENV: point, ACTION_ENV: action}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.faults.state", str(state_dir), "promote", str(run_id)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    return proc.returncode


@pytest.mark.parametrize("point", PROMOTE_POINTS)
def test_kill_9_at_each_promotion_step_is_repaired_by_reconcile(tmp_path: Path, point: str, fault) -> None:
    """Defect 1: kill -9 between the swap and the commit left current != champion."""
    state = tmp_path / "state"
    first, second = champion_and_challenger(state)
    with fault(f"kill -9 at {point}"):
        assert promote_in_child(state, second, point) == -9
        reg = Registry.open(state)
        actions = recover_state(make_cfg(state), reg)
        reg.close()
        reg = assert_consistent(state)
        champ = reg.champion()
        assert champ is not None
        # Once the intent is durable the promotion is finished; before it, undone.
        expected = first if point == "promote:release-built" else second
        assert champ[0].run_id == expected, (point, actions)
        # the killed process's run is finished by the promotion, or marked interrupted
        assert reg.get_run(second).status == (
            RunStatus.PROMOTED.value if expected == second else RunStatus.INTERRUPTED.value
        )
        if point in ("promote:release-built", "promote:intent-written", "promote:current-swapped", "promote:registry-committed"):
            assert actions, "reconcile must record what it repaired"
            assert [r.action for r in reg.recoveries()] == [a.action for a in reversed(actions)]
        # a following promotion completes
        third = trained_run(reg, state, 3)
        reg.close()
        promote(state, third)
        reg = assert_consistent(state)
        assert reg.champion()[0].run_id == third  # type: ignore[index]
        reg.close()


def test_undo_when_the_release_is_corrupt_after_an_interrupted_swap(tmp_path: Path, fault) -> None:
    """An interrupted promotion whose release no longer verifies is undone, not finished."""
    state = tmp_path / "state"
    first, second = champion_and_challenger(state)
    with fault("kill -9 after swap, then release truncated"):
        assert promote_in_child(state, second, "promote:current-swapped") == -9
        weights = state / "releases" / release_name(second) / "adapters.safetensors"
        weights.chmod(0o600)
        weights.write_bytes(b"\0" * 10)
        reg = Registry.open(state)
        actions = reconcile(state, reg)
        reg.close()
        assert [a.action for a in actions][:1] == ["promotion-undone"]
        reg = assert_consistent(state)
        assert reg.champion()[0].run_id == first  # type: ignore[index]
        reg.close()


def test_corrupt_champion_is_replaced_by_the_newest_intact_release(tmp_path: Path, fault) -> None:
    """Defect 2: a truncated current/adapters.safetensors went unnoticed."""
    state = tmp_path / "state"
    first, second = champion_and_challenger(state)
    promote(state, second)
    with fault("champion adapter truncated"):
        weights = current_target(state) / "adapters.safetensors"  # type: ignore[operator]
        weights.chmod(0o600)
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
        reg = Registry.open(state)
        actions = reconcile(state, reg, full=True)
        assert [a.action for a in actions] == ["champion-replaced"]
        assert "corrupt" in actions[0].detail and release_name(first) in actions[0].detail
        champ = reg.champion()
        assert champ is not None and champ[0].run_id == first and champ[0].decided_by == "nightshift"
        reg.close()
        assert current_target(state).name == release_name(first)  # type: ignore[union-attr]


def test_same_size_corruption_is_caught_by_hashes_only(tmp_path: Path, fault) -> None:
    """A flipped byte keeps the size: the quick check passes, the full one replaces the champion."""
    state = tmp_path / "state"
    first, second = champion_and_challenger(state)
    promote(state, second)
    with fault("champion adapter byte flipped"):
        weights = current_target(state) / "adapters.safetensors"  # type: ignore[operator]
        weights.chmod(0o600)
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        reg = Registry.open(state)
        assert reconcile(state, reg, full=False) == []
        assert [a.action for a in reconcile(state, reg, full=True)] == ["champion-replaced"]
        assert reg.champion()[0].run_id == first  # type: ignore[index]
        reg.close()


def test_leftovers_are_cleaned(tmp_path: Path, fault) -> None:
    """Defect 5: releases/.run-NNNN.tmp, orphan releases and .current.tmp.PID stayed forever."""
    state = tmp_path / "state"
    first, _second = champion_and_challenger(state)
    with fault("leftovers of killed promotions"):
        (state / "releases" / ".run-0009.tmp").mkdir()
        (state / "releases" / ".run-0009.tmp" / "x").write_text("partial")
        orphan = state / "releases" / "run-0008"
        orphan.mkdir()
        (orphan / "manifest.json").write_text("{}")
        os.symlink("releases/run-0008", state / ".current.tmp.12345")
        reg = Registry.open(state)
        actions = reconcile(state, reg)
        reg.close()
        assert sorted(a.action for a in actions) == ["orphan-removed", "temp-removed"]
        assert_consistent(state).close()


def test_current_pointing_elsewhere_follows_the_registry(tmp_path: Path) -> None:
    """No intent: the registry wins and the repair is recorded."""
    state = tmp_path / "state"
    first, second = champion_and_challenger(state)
    promote(state, second)
    (state / "current").unlink()
    os.symlink(f"releases/{release_name(first)}", state / "current")
    reg = Registry.open(state)
    assert [a.action for a in reconcile(state, reg)] == ["current-repointed"]
    reg.close()
    assert current_target(state).name == release_name(second)  # type: ignore[union-attr]
