"""Build nights in a real registry file for the report tests (no training: rows written directly).

Shared by ``test_report.py`` and ``benchmarks/report_render.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from daemon.config import Config, config_from_dict
from daemon.dataset.composition import record_composition
from daemon.fingerprint import dataset_fingerprint
from daemon.gate import CategoryScores, GatePolicy, ModelScores, decide_promotion
from daemon.registry import Registry, RunStatus, Trigger

HOSTILE = {
    "category": "evil|<b>cat</b>",
    "item": "[x](javascript:alert(1))",
    "reply": "<script>alert('r')</script> ![img](http://evil.example/i.png) [click](javascript:alert(2))\n```\n<b>out</b>",
    "gold": "<img src=x onerror=alert(3)> www.evil.example",
    "reason": "judge said:\n```\n<script>alert('fence')</script>\n```\n[x](javascript:alert(4))",
}


def write_dataset(directory: Path, night: int, *, hostile: bool = False) -> Path:
    """A tagged chat dataset that grows by one ``tool-use`` example per night (and has two untagged lines).

    Returns:
        ``directory`` (holding ``train.jsonl`` and ``valid.jsonl``).
    """
    def line(source: str | None, i: int) -> str:
        msgs = [{"role": "user", "content": f"{source} question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
        return json.dumps({"source": source, "messages": msgs} if source else {"messages": msgs}) + "\n"

    other = HOSTILE["category"] if hostile else "tool-use"
    directory.mkdir(parents=True, exist_ok=True)
    train = [line("legacy", i) for i in range(4)] + [line(other, i) for i in range(night + 1)] + [line(None, 0), "\n"]
    (directory / "train.jsonl").write_text("".join(train))
    (directory / "valid.jsonl").write_text(line("legacy", 10) + line(None, 11))
    return directory


def make_config(state_dir: Path) -> Config:
    """Defaults with the state dir at ``state_dir``."""
    return config_from_dict({"paths": {"state_dir": str(state_dir)}}, base_dir=state_dir.parent)


def make_night(
    cfg: Config,
    reg: Registry,
    outcome: str,
    *,
    categories: dict[str, tuple[list[float], list[float]]] | None = None,
    hostile: bool = False,
    metrics_every: int = 10,
    iters: int = 100,
    champion_model_id: int | None = None,
    adapter_dir: Path | None = None,
) -> int:
    """One run ending in ``outcome``: promoted, rejected, awaiting_approval, operator_rejected,
    failed_preflight, failed_training, interrupted or rolled_back. Returns the run id."""
    cat_name = HOSTILE["category"] if hostile else "math"
    if categories is None:
        categories = {
            cat_name: ([1.0] * 6 + [0.0] * 14, [1.0] * 18 + [0.0] * 2),
            "style": ([0.5, 0.6, 0.7, 0.8, 0.9] * 4, [0.6, 0.7, 0.8, 0.9, 1.0] * 4),
        }
        if outcome == "rejected":
            categories = {k: (b, a) for k, (a, b) in categories.items()}
    run = reg.create_run(trigger=Trigger.MANUAL, config_snapshot=cfg.to_dict(), config_path=None, profile=None)
    rid = run.id

    def stage(status: RunStatus, outcome_: str = "ok", duration: float = 1.5) -> None:
        reg.transition(rid, status)
        sid = reg.start_stage(rid, status.value)
        reg.finish_stage(sid, duration_s=duration, outcome=outcome_)

    if outcome == "failed_preflight":
        stage(RunStatus.PREFLIGHT, "failed")
        reg.record_preflight(rid, [{"name": "disk", "level": "fail", "message": "12 GB free, 40 GB needed", "duration_s": 0.1}])
        reg.transition(rid, RunStatus.FAILED, reason=HOSTILE["reason"] if hostile else "Preflight failed (1 check(s)); training was not started:\n  - disk: 12 GB free, 40 GB needed")
        return rid
    stage(RunStatus.PREFLIGHT)
    run_dir = cfg.paths.state_dir / "runs" / f"run-{rid:04d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    data = write_dataset(cfg.paths.state_dir.parent / f"data-{rid}", rid, hostile=hostile)
    sha, count = dataset_fingerprint(data)  # as the data stage records them
    reg.update_run(rid, dataset_sha256=sha, dataset_examples=count, run_dir=str(run_dir))
    earlier = [(r.id, r.run_dir) for r in reg.runs(limit=50) if r.id < rid]
    record_composition(data, run_dir, earlier)
    stage(RunStatus.TRAINING, "failed" if outcome == "failed_training" else "ok", 60.0)
    reg.add_train_metrics(
        rid,
        [
            {"iteration": i, "train_loss": 3.0 / (1 + i / 20), "val_loss": (3.2 / (1 + i / 25)) if i % 50 == 0 else None,
             "learning_rate": 1e-5, "tokens_per_s": 500.0, "trained_tokens": i * 100, "peak_memory_bytes": 2_000_000_000}
            for i in range(metrics_every, iters + 1, metrics_every)
        ],
    )
    if outcome == "failed_training":
        reg.transition(rid, RunStatus.FAILED, reason="Training exited with signal 9 after 5400 s (likely out of memory); log: runs/run-0001/train.log")
        return rid
    reg.transition(rid, RunStatus.EVALUATING)
    sid = reg.start_stage(rid, "evaluating")
    base = reg.base_model("/models/base", "b" * 64, mlx_version="0.32", mlx_lm_version="0.32.2")
    chall = reg.add_adapter_model(base=base, adapter_path=str(adapter_dir or f"/runs/{rid}/adapters"), adapter_sha256=f"{rid:064d}", run_id=rid,
                                  mlx_version="0.32", mlx_lm_version="0.32.2")
    champ_id = champion_model_id or base.id
    reg.update_run(rid, champion_model_id=champ_id, challenger_model_id=chall.id)
    if outcome == "interrupted":
        reg.finish_stage(sid, duration_s=12.0, outcome="interrupted")
        reg.transition(rid, RunStatus.INTERRUPTED, reason="Stopped by SIGTERM while evaluating; nothing was promoted.")
        return rid
    scored: dict[str, dict[str, CategoryScores]] = {"champion": {}, "challenger": {}}
    for role, model_id in (("champion", champ_id), ("challenger", chall.id)):
        rows = []
        for cat, pair in categories.items():
            vals = pair[0] if role == "champion" else pair[1]
            for i, v in enumerate(vals):
                item = f"{HOSTILE['item']}-{i}" if hostile else f"{cat}-{i:03d}"
                reply = HOSTILE["reply"] if hostile else f"{role} answer {i}"
                rows.append({"category": cat, "item_id": item, "sample": 0, "score": v, "empty": False, "parsed": True,
                             "prompt": f"question {i} of {cat}?", "reply": reply,
                             "gold": HOSTILE["gold"] if hostile else f"gold {i}", "extracted": None,
                             "detail": HOSTILE["reply"] if hostile else f"scored {v:.1f}"})
            scored[role][cat] = CategoryScores(
                name=cat, kind="choice", weight=1.0,
                item_scores={(f"{HOSTILE['item']}-{i}" if hostile else f"{cat}-{i:03d}"): v for i, v in enumerate(vals)},
                binary=all(v in (0.0, 1.0) for v in vals), empty=0, unparsed=0,
            )
        reg.add_eval_set(run_id=rid, model_id=model_id, role=role, fingerprint=f"fp-{role}-{rid}", results=rows,
                         held_out_loss=1.25 if role == "champion" else 1.1, duration_s=3.0)
    reg.finish_stage(sid, duration_s=30.0, outcome="ok")
    reg.transition(rid, RunStatus.DECIDING)
    d = decide_promotion(ModelScores("champion", scored["champion"]), ModelScores("challenger", scored["challenger"]),
                         GatePolicy(resamples=1000))
    reg.update_run(rid, decision=json.dumps(d.to_dict()))
    if outcome in ("promoted", "rolled_back"):
        assert d.promote, d.reasons
        release = cfg.paths.state_dir / "releases" / f"run-{rid:04d}"
        release.mkdir(parents=True, exist_ok=True)  # a real release: start-up reconcile checks it
        for name in ("adapters.safetensors", "adapter_config.json", "manifest.json"):
            (release / name).write_text("{}")
        reg.record_promotion(run_id=rid, from_model_id=None, to_model_id=chall.id,
                             release_path=str(cfg.paths.state_dir / "releases" / f"run-{rid:04d}"),
                             reason=d.summary, decided_by="auto")
        if outcome == "rolled_back":  # the hand-off failed: the previous champion is put back
            why = f"hand-off of run-{rid:04d} failed: 2 of 4 probes differ from the evaluated replies"
            reg.record_promotion(run_id=rid, from_model_id=chall.id, to_model_id=champ_id, release_path="",
                                 reason=f"rolled back to the base model: {why}", decided_by="rollback", finish_run=False)
            reg.transition(rid, RunStatus.ROLLED_BACK, reason=why)
    elif outcome == "rejected":
        assert not d.promote
        reg.transition(rid, RunStatus.REJECTED)
    elif outcome == "awaiting_approval":
        reg.transition(rid, RunStatus.AWAITING_APPROVAL)
    elif outcome == "operator_rejected":
        reg.transition(rid, RunStatus.AWAITING_APPROVAL)
        reg.transition(rid, RunStatus.REJECTED, reason="rejected by alice (gate recommended promotion)")
    else:
        raise ValueError(outcome)
    return rid
