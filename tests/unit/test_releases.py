"""Release list, retention and the fuse check's verdict (real registry, real files)."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from daemon import clock
from daemon.config import config_from_dict
from daemon.errors import PromotionRefused
from daemon.registry import Registry, RunStatus, Trigger
from daemon.serving.fusecheck import fuse_manifest_entry
from daemon.serving.handoff import Target, switch_champion
from daemon.serving.releases import apply_gc, list_releases, plan_gc


def test_retention_keeps_newest_and_both_champions_and_removes_old_checkpoints(tmp_path: Path) -> None:
    cfg = config_from_dict(
        {"paths": {"state_dir": "state"}, "retention": {"keep_releases": 2, "checkpoint_max_age_days": 1}},
        base_dir=tmp_path,
    )
    state = cfg.paths.state_dir
    reg = Registry.open(state)
    base = reg.base_model("base", "b" * 64, mlx_version=None, mlx_lm_version=None)
    models = {}
    for n in range(1, 6):
        run = reg.create_run(trigger=Trigger.MANUAL, config_snapshot={}, config_path=None, profile=None)
        rel = state / "releases" / f"run-{n:04d}"
        rel.mkdir(parents=True)
        (rel / "adapters.safetensors").write_bytes(b"x" * 100)
        adapter = state / "runs" / f"{n:04d}" / "adapter"
        adapter.mkdir(parents=True)
        (adapter / "adapters.safetensors").write_bytes(b"final")
        (adapter / "0000100_adapters.safetensors").write_bytes(b"checkpoint")
        reg.update_run(run.id, run_dir=str(adapter.parent))
        for st in (RunStatus.PREFLIGHT, RunStatus.TRAINING, RunStatus.EVALUATING, RunStatus.DECIDING, RunStatus.REJECTED):
            reg.transition(run.id, st)
        models[n] = reg.add_adapter_model(base=base, adapter_path=str(adapter), adapter_sha256=str(n) * 64,
                                          run_id=run.id, mlx_version=None, mlx_lm_version=None)
    # champions: run-0001, run-0002 (previous), then run-0003 current... then back to run-0001
    for n in (1, 2, 3, 4, 1):
        rel = state / "releases" / f"run-{n:04d}"
        switch_champion(cfg, reg, Target(str(rel.resolve()), models[n].id, n, rel.name), run_id=None, reason="t", decided_by="t")
    status = {r.name: r.status for r in list_releases(cfg, reg)}
    # run-0005 was never promoted (orphan); the newest 2 promoted are run-0004 (previous champion)
    # and run-0003; run-0001 is older but the current champion, so it stays too
    assert status == {"run-0005": "orphan", "run-0004": "previous", "run-0003": "kept", "run-0002": "old", "run-0001": "current"}
    old_run = reg.runs()[-1]
    assert old_run.finished_at is not None
    plan = plan_gc(cfg, reg, now=old_run.finished_at.timestamp() + 2 * 86_400)
    assert sorted(p.name for p in plan.releases) == ["run-0002", "run-0005"]
    assert len(plan.checkpoints) == 5 and all(p.name == "0000100_adapters.safetensors" for p in plan.checkpoints)
    assert plan_gc(cfg, reg, now=time.time()).checkpoints == []  # finished just now: too young
    apply_gc(plan)
    left = sorted(p.name for p in (state / "releases").iterdir())
    assert left == ["run-0001", "run-0003", "run-0004"]
    assert os.path.exists(state / "runs" / "0001" / "adapter" / "adapters.safetensors")  # the final adapter stays
    assert clock.now() - old_run.finished_at < timedelta(hours=1)
    reg.close()


def test_fused_model_that_differs_from_base_plus_adapter_is_refused(tmp_path: Path) -> None:
    cfg = config_from_dict({"serving": {"min_match_share": 0.9}}, base_dir=tmp_path)
    with pytest.raises(PromotionRefused, match=r"does not reproduce the evaluated model .*: 20/32 eval replies identical"):
        fuse_manifest_entry(cfg, {"probes": 32, "identical": 20, "dequantized": True,
                                  "mismatches": [{"expected": "positive", "fused": "negative"}]})
    entry = fuse_manifest_entry(cfg, {"probes": 32, "identical": 32, "dequantized": True})
    assert entry["checked"] and entry["dequantized"]
    assert entry["method"].startswith("fused with dequantization (the base is quantized); checked against base + adapter")
