"""A small real state dir for the fault suite: registry, adapters, releases.

Runnable as ``python -m tests.faults.state STATE_DIR promote RUN_ID`` to promote
a run in a child process (so a fault point can SIGKILL it mid-protocol).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import mlx.core as mx

from daemon.config import Config, config_from_dict
from daemon.promote import (
    build_release,
    current_target,
    promote_release,
    read_intent,
    verify_release,
)
from daemon.registry import Registry, RunStatus, Trigger

BASE_SHA = "b" * 64


def make_cfg(state_dir: Path) -> Config:
    """A config whose only setting that matters is the state dir."""
    return config_from_dict({"paths": {"state_dir": str(state_dir)}}, base_dir=state_dir.parent)


def trained_run(reg: Registry, state_dir: Path, seed: int) -> int:
    """A run in ``deciding`` with a real (tiny) safetensors adapter; returns its id."""
    snapshot = make_cfg(state_dir).to_dict()
    run = reg.create_run(trigger=Trigger.MANUAL, config_snapshot=snapshot, config_path=None, profile=None, pid=None)
    for st in (RunStatus.PREFLIGHT, RunStatus.TRAINING, RunStatus.EVALUATING, RunStatus.DECIDING):
        reg.transition(run.id, st)
    adapter = state_dir / "runs" / f"{run.id:04d}" / "adapter"
    adapter.mkdir(parents=True)
    mx.save_safetensors(str(adapter / "adapters.safetensors"), {"lora_a": mx.full((64, 8), float(seed))})
    (adapter / "adapter_config.json").write_text('{"rank": 8}')
    base = reg.base_model("/base", BASE_SHA, mlx_version=None, mlx_lm_version=None)
    model = reg.add_adapter_model(
        base=base, adapter_path=str(adapter), adapter_sha256=f"{seed:064d}", run_id=run.id,
        mlx_version=None, mlx_lm_version=None,
    )
    reg.update_run(run.id, challenger_model_id=model.id, champion_model_id=base.id, run_dir=str(adapter.parent))
    return run.id


def promote(state_dir: Path, run_id: int) -> None:
    """Build the run's release and promote it (the pipeline's path, minus evaluation)."""
    cfg = make_cfg(state_dir)
    reg = Registry.open(state_dir)
    try:
        run = reg.get_run(run_id)
        assert run.challenger_model_id is not None
        model = reg.get_model(run.challenger_model_id)
        assert model.adapter_path is not None
        release = build_release(cfg, run_id=run_id, adapter_dir=Path(model.adapter_path), manifest={"run_id": run_id}, work_dir=state_dir)
        promote_release(state_dir, reg, release=release, to_model_id=model.id, run_id=run_id, reason="test", decided_by="auto")
    finally:
        reg.close()


def loadable(release: Path) -> bool:
    """mlx can load the release's adapter weights."""
    try:
        mx.load(str(release / "adapters.safetensors"))
        return True
    except Exception:
        return False


def assert_consistent(state_dir: Path) -> Registry:
    """Champion == ``current``, ``current`` intact and loadable, no intent or
    leftovers, ``PRAGMA integrity_check`` ok. Returns the open registry."""
    reg = Registry.open(state_dir)
    champ = reg.champion()
    target = current_target(state_dir)
    if champ is None or not champ[0].release_path:  # the base model: no `current`
        assert target is None and not (state_dir / "current").is_symlink()
    else:
        assert target is not None and target.name == Path(champ[0].release_path).name, (target, champ[0].release_path)
        assert verify_release(target, full=True) == []
        assert loadable(target)
    assert read_intent(state_dir) is None
    releases = state_dir / "releases"
    named = {Path(p.release_path).name for p in reg.promotions() if p.release_path}
    leftovers = [p.name for p in releases.iterdir() if p.name not in named] if releases.exists() else []
    assert leftovers == []
    assert not list(state_dir.glob(".current.*"))
    with sqlite3.connect(state_dir / "registry.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return reg


if __name__ == "__main__":
    if sys.argv[2] == "promote":
        promote(Path(sys.argv[1]), int(sys.argv[3]))
