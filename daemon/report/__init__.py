"""The morning report: one Markdown file per run, read at breakfast.

Written for every run that got a registry row (promoted, rejected, failed or
interrupted) to ``<state_dir>/reports/run-NNNN.md``.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.gate import Decision
from daemon.promote import current_target
from daemon.registry import Registry, RunStatus
from daemon.report.decision import render_decision_markdown

REPORTS_DIR = "reports"
WORST_ITEMS = 5

HEADLINES = {
    RunStatus.PROMOTED: "Promoted: the challenger is the new champion.",
    RunStatus.REJECTED: "Rejected: the champion stays.",
    RunStatus.AWAITING_APPROVAL: "Awaiting approval: run `nightshift approve {id}` or `nightshift reject {id}`.",
    RunStatus.FAILED: "Failed: nothing was promoted; the champion and `current` are untouched.",
    RunStatus.INTERRUPTED: "Interrupted: nothing was promoted; the champion and `current` are untouched.",
}


def report_path(state_dir: Path, run_id: int) -> Path:
    """Where the report of ``run_id`` lives."""
    return state_dir / REPORTS_DIR / f"run-{run_id:04d}.md"


def _esc(text: Any, limit: int = 300) -> str:
    s = "" if text is None else str(text)
    if len(s) > limit:
        s = s[:limit] + "…"
    return html.escape(s).replace("|", "&#124;").replace("\n", "<br>")


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render_report(cfg: Config, registry: Registry, run_id: int) -> str:
    """The Markdown text of a run's report."""
    run = registry.get_run(run_id)
    status = RunStatus(run.status)
    lines = [f"# nightshift morning report: run {run.id}", ""]
    lines.append(f"**{HEADLINES.get(status, status.value).format(id=run.id)}**")
    lines.append("")
    started = run.started_at.isoformat(timespec="seconds") if run.started_at else "?"
    finished = run.finished_at.isoformat(timespec="seconds") if run.finished_at else "still running"
    lines.append(f"- status: `{status.value}` · trigger: {run.trigger} · started {started} · finished {finished}")
    if run.profile:
        lines.append(f"- profile: {run.profile}")
    if run.dataset_sha256:
        lines.append(f"- dataset: {run.dataset_examples} examples, sha256 `{run.dataset_sha256[:16]}…`")
    if run.failure_reason:
        lines += ["", "## Why it stopped", "", "```", run.failure_reason, "```"]
    if run.run_dir:
        lines.append(f"- run directory: `{run.run_dir}`")

    decision = Decision.from_dict(json.loads(run.decision)) if run.decision else None
    evals = {es.role: es for es in registry.eval_sets(run_id)}
    if decision is not None:
        lines += ["", render_decision_markdown(decision)]
    if evals:
        lines += ["", "## Scores per category (mean item score, 0–1)", ""]
        lines += _scores_table(registry, evals)
        worst = _worst_items(registry, evals.get("challenger"))
        if worst:
            lines += ["", f"## Worst challenger items (lowest {len(worst)})", ""]
            lines += ["| category | item | score | prompt | reply | gold |", "|---|---|---|---|---|---|"]
            for r in worst:
                lines.append(
                    f"| {_esc(r.category)} | {_esc(r.item_id)} | {r.score:.2f} | {_esc(r.prompt)} | {_esc(r.reply)} | {_esc(r.gold)} |"
                )

    lines += ["", "## Training", ""]
    lines += _training_section(cfg, registry, run_id, run.config_snapshot)
    lines += ["", "## Stages", "", "| stage | outcome | duration (s) |", "|---|---|---|"]
    for st in registry.stages(run_id):
        lines.append(f"| {st.stage} | {st.outcome or 'running'} | {_fmt(st.duration_s, 1)} |")
    checks = registry.preflight_checks(run_id)
    notable = [c for c in checks if c.level != "ok"]
    if notable:
        lines += ["", "## Preflight findings", "", "| check | level | message |", "|---|---|---|"]
        lines += [f"| {c.name} | {c.level} | {_esc(c.message, 500)} |" for c in notable]
    rehearsal = registry.last_rehearsal()
    if rehearsal is not None:
        verdict = "passed" if rehearsal["ok"] else "FAILED"
        lines += ["", f"Last evening rehearsal ({rehearsal['created_at']}): {verdict}."]
    target = current_target(cfg.paths.state_dir)
    lines += ["", "## Serving", ""]
    if target is None:
        lines.append("No release has been promoted yet: keep serving the base model.")
    else:
        lines.append(f"`current` -> `{target}`. A running `mlx_lm.server` does not notice the swap: restart it (see README).")
    return "\n".join(lines) + "\n"


def _scores_table(registry: Registry, evals: dict[str, Any]) -> list[str]:
    means: dict[str, dict[str, float]] = {}
    for role, es in evals.items():
        per: dict[str, list[float]] = defaultdict(list)
        for r in registry.eval_results(es.id):
            per[r.category].append(r.score)
        means[role] = {c: sum(v) / len(v) for c, v in per.items() if v}
    roles = [r for r in ("base", "champion", "challenger") if r in means]
    cats = sorted({c for m in means.values() for c in m})
    out = ["| category | " + " | ".join(roles) + " | Δ vs champion | Δ vs base |", "|---" * (len(roles) + 3) + "|"]
    for c in cats:
        vals = [means[r].get(c) for r in roles]
        ch = means.get("challenger", {}).get(c)
        champ = means.get("champion", {}).get(c)
        base = means.get("base", means.get("champion", {})).get(c)
        d1 = f"{ch - champ:+.3f}" if ch is not None and champ is not None else "–"
        d2 = f"{ch - base:+.3f}" if ch is not None and base is not None else "–"
        out.append(f"| {c} | " + " | ".join(_fmt(v) for v in vals) + f" | {d1} | {d2} |")
    held = {role: es.held_out_loss for role, es in evals.items() if es.held_out_loss is not None}
    if held:
        out += ["", "Held-out loss (nats/token, lower is better): " + ", ".join(f"{r} {_fmt(v)}" for r, v in held.items())]
    reused = [f"{role} (from eval set {es.reused_from})" for role, es in evals.items() if es.reused_from]
    if reused:
        out += ["", "Reused cached scores (identical fingerprint): " + ", ".join(reused)]
    return out


def _worst_items(registry: Registry, es: Any) -> list[Any]:
    if es is None:
        return []
    rows = [r for r in registry.eval_results(es.id) if r.reply is not None]
    rows.sort(key=lambda r: (r.score, r.category, r.item_id))
    return [r for r in rows[:WORST_ITEMS] if r.score < 1.0]


def _training_section(cfg: Config, registry: Registry, run_id: int, snapshot: str) -> list[str]:
    snap = json.loads(snapshot)
    t = snap["training"]
    lora = t["lora"]
    lines = [
        f"- base model: `{snap['paths']['base_model']}` (every night trains on the base, never on a fine-tune)",
        f"- LoRA rank {lora['rank']}, scale {cfg.training.lora.effective_scale:g}, dropout {lora['dropout']}, "
        f"layers {lora['layers']}; iters {t['iters']}, batch {t['batch_size']} × grad accumulation {t['grad_accumulation']}",
        f"- learning rate {t['learning_rate']:g} ({t['lr_schedule']}, warmup {t['warmup_steps']}), "
        f"max sequence {t['max_seq_len_tokens']} tokens, grad checkpointing {t['grad_checkpoint']}, seed {t['seed']}",
    ]
    metrics = registry.train_metrics(run_id)
    train_rows = [m for m in metrics if m.train_loss is not None]
    val_rows = [m for m in metrics if m.val_loss is not None]
    if train_rows:
        last = train_rows[-1]
        peak = max((m.peak_memory_bytes or 0) for m in train_rows)
        lines.append(
            f"- final train loss {_fmt(last.train_loss)} at iteration {last.iteration}; "
            f"{_fmt(last.tokens_per_s, 0)} tokens/s; peak memory {peak / 1e9:.2f} GB"
        )
    if val_rows:
        lines.append(f"- final validation loss {_fmt(val_rows[-1].val_loss)} (first {_fmt(val_rows[0].val_loss)})")
    if not metrics:
        lines.append("- no training metrics recorded")
    return lines


def write_report(cfg: Config, registry: Registry, run_id: int) -> Path:
    """Render and write the report; records its path on the run.

    Returns:
        The report file.
    """
    path = report_path(cfg.paths.state_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render_report(cfg, registry, run_id), encoding="utf-8")
    tmp.replace(path)
    registry.update_run(run_id, report_path=str(path))
    return path
