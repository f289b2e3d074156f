"""kill -9 at every step of the promotion protocol during ``nightshift rollback`` (issue 9 + 13).

``nightshift rollback`` and the automatic rollback after a failed hand-off once
changed the champion with a bare registry commit around the ``current`` swap,
outside the intent protocol of :func:`daemon.promote.promote_release`: a kill
between the swap and the commit left ``current`` on a release the registry
did not name, with no intent for reconcile to finish or undo. Each case kills
the real CLI at one ``promote:*`` point, runs the next command (``status``,
which reconciles), and checks that champion == ``current``, ``current`` is
loadable, the repair is recorded and the database is intact.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from daemon import promote as promote_module
from daemon.faults import ACTION_ENV, FAULT_ENV
from daemon.promote import current_target, read_intent, release_name
from daemon.registry import Registry
from tests.faults.state import assert_consistent, promote, trained_run

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
# The points a rollback reaches (it builds no release, so promote:release-built is never hit),
# each for a rollback to an earlier release and to the base model (no release: `current` removed).
# The swap-to-commit window back to the base model runs in `make test`; the rest in `make test-all`.
ROLLBACK_CASES = [
    pytest.param(point, to_base, id=f"{'to-base-model' if to_base else 'to-release'}-{point}",
                 marks=() if (point, to_base) == ("promote:current-swapped", True) else pytest.mark.slow)
    for to_base in (False, True)
    for point in ("promote:intent-written", "promote:current-swapped", "promote:registry-committed", "promote:intent-cleared")
]


def workspace(tmp_path: Path, promotions: int) -> tuple[Path, Path]:
    """A state dir with ``promotions`` runs promoted in turn and a config file naming it."""
    state = tmp_path / "state"
    for seed in range(1, promotions + 1):
        reg = Registry.open(state)
        try:
            run_id = trained_run(reg, state, seed)
        finally:
            reg.close()
        promote(state, run_id)
    config = tmp_path / "nightshift.yaml"
    config.write_text(yaml.safe_dump({"paths": {"state_dir": str(state)}, "serving": {"mode": "none"}}))
    return config, state


def nightshift(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "-c", str(config), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(("point", "to_base"), ROLLBACK_CASES)
def test_kill_9_during_rollback_is_repaired_by_the_next_command(tmp_path: Path, point: str, to_base: bool, fault) -> None:
    """Defect: rollback swapped `current` outside the intent protocol; a kill before the commit went unrepaired."""
    # to_base: one promotion, so the previous champion is the base model (current removed).
    config, state = workspace(tmp_path, 1 if to_base else 2)
    with fault(f"kill -9 of nightshift rollback at {point} ({'base model' if to_base else 'release'})"):
        killed = nightshift(config, "rollback", "--reason", "test", env={FAULT_ENV: point, ACTION_ENV: "kill"})
        assert killed.returncode == -9, killed.stderr
        intent = read_intent(state)
        if point in ("promote:intent-written", "promote:current-swapped", "promote:registry-committed"):
            assert intent is not None and intent.release == ("" if to_base else str(state / "releases" / release_name(1)))
        status = nightshift(config, "status")  # the next command reconciles
        assert status.returncode == 0, status.stderr
        reg = assert_consistent(state)
        champ = reg.champion()
        assert champ is not None
        # An intent is always finished: the rollback target is the champion now.
        if to_base:
            assert champ[0].release_path == "" and champ[1].kind == "base"
            assert current_target(state) is None and not (state / "current").is_symlink()
        else:
            assert champ[1].run_id == 1 and current_target(state).name == release_name(1)  # type: ignore[union-attr]
        assert champ[0].decided_by != "auto" and "test" in champ[0].reason
        if intent is not None:
            assert [r.action for r in reg.recoveries()] == ["promotion-completed"]
        reg.close()


def test_rollback_to_the_base_model_goes_through_the_intent_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect: a rollback to the base model removed `current` outside the intent protocol."""
    from daemon.config import load_config
    from daemon.serving.handoff import rollback_champion

    config, state = workspace(tmp_path, 1)
    cfg = load_config(config)
    reg = Registry.open(state)
    seen: list[bool] = []
    real = promote_module.promote_release

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs["release"] is None)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(promote_module, "promote_release", spy)
    target, outcome = rollback_champion(cfg, reg, to_run=None, who="tester", why="test")
    assert outcome.kept and target.label == "the base model"
    assert seen == [True]
    reg.close()
    reg = assert_consistent(state)
    champ = reg.champion()
    assert champ is not None and champ[0].release_path == "" and champ[1].kind == "base"
    assert champ[0].decided_by == "tester" and not (state / "current").exists()
    reg.close()
