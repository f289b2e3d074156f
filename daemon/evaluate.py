"""The evaluate stage: champion, challenger (and base) scored under identical conditions.

One child process loads the base model once and generates replies for every
model that needs scoring, with the same prompts, decoding, seeds and backend.
Replies are scored here, in the parent, by :mod:`daemon.scoring`. A model's
results are reused from an earlier night only when its evaluation fingerprint
(model, suite content, decoding, backend, judge) matches exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon import shutdown
from daemon.child import JsonLinesTail, StartedWorker, read_result_file
from daemon.config import Config
from daemon.errors import EvaluationFailed, Interrupted
from daemon.gate import ModelScores
from daemon.scoring import (
    JUDGE_POLL_S,
    ItemScore,
    category_scores,
    make_judge,
    score_loss,
    score_reply,
)
from daemon.suite import Item, Suite

RESULTS_FILE = "eval_results.jsonl"
RESULT_FIELDS = (
    "category", "item_id", "sample", "score", "empty", "parsed", "prompt", "reply", "gold", "extracted", "detail",
    "truncated",
)
"""The columns of a registry ``eval_results`` row that :func:`score_model` produces."""


@dataclass(frozen=True)
class ModelRef:
    """A model to score: its role in this run, registry id and adapter (None = base)."""

    role: str
    model_id: int
    adapter_path: Path | None
    identity: str
    """Content identity: base sha256, plus adapter sha256 when there is one."""


@dataclass(frozen=True)
class ModelEval:
    """One model's scored results.

    Attributes:
        rows: registry ``eval_results`` rows (category, item_id, sample, score, ...).
        scores: the gate's per-category view.
        held_out_loss: mean validation loss (nats/token), or None.
        duration_s: time spent generating for this model (seconds); 0 when reused.
    """

    ref: ModelRef
    fingerprint: str
    rows: list[dict[str, Any]]
    scores: ModelScores
    held_out_loss: float | None
    duration_s: float


@dataclass
class EvalProgress:
    """Live view of the eval child: items done / total for the model being scored."""

    model: str = ""
    done: int = 0
    total: int = 0


def eval_fingerprint(cfg: Config, suite: Suite, ref: ModelRef, versions: dict[str, str]) -> str:
    """SHA-256 of everything that changes a model's scores.

    Covers the model's content identity, the suite's content fingerprint (items,
    schemas, judge settings), the content of files a command judge runs from the
    suite's directory (its script), decoding (default max_tokens, seed, batch
    size: batched numerics can differ), the held-out loss's settings and the
    content of ``valid.jsonl`` it is measured on, backend name, mlx/mlx-lm
    versions and nightshift's own version (its scoring rules).
    """
    from daemon import __version__
    from daemon.fingerprint import file_sha256

    valid = cfg.paths.dataset / "valid.jsonl"
    payload = {
        "model": ref.identity,
        "suite": suite.fingerprint,
        "judge_files": judge_files_sha256(suite),
        "decoding": {
            "max_tokens": cfg.evaluation.max_tokens,
            "seed": cfg.evaluation.seed,
            "batch_size": cfg.evaluation.batch_size,
        },
        "held_out": {
            "enabled": cfg.evaluation.held_out_loss,
            "max_examples": cfg.evaluation.loss_max_examples,
            "mask_prompt": cfg.training.mask_prompt,
            "max_seq_len_tokens": cfg.training.max_seq_len_tokens,
            "valid_sha256": file_sha256(valid) if cfg.evaluation.held_out_loss and valid.is_file() else None,
        },
        "backend": cfg.evaluation.backend,
        "versions": versions,
        "nightshift": __version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def judge_files_sha256(suite: Suite) -> dict[str, dict[str, str]]:
    """category -> {argv element: sha256} for the files a command judge names inside the suite's
    directory (e.g. ``judge.py`` in ``[python3, judge.py]``): editing the script changes the scores.

    Programs outside the suite's directory (``python3``, ``claude``) are left out: their
    version is not content we own.
    """
    from daemon.fingerprint import file_sha256

    out: dict[str, dict[str, str]] = {}
    root = suite.path.parent.resolve()
    for cat in suite.categories:
        spec = cat.judge
        if spec is None or not spec.command:
            continue
        cwd = Path(spec.cwd) if spec.cwd else root
        files = {}
        for arg in spec.command:
            path = (cwd / arg).resolve()
            if path.is_file() and path.is_relative_to(root):
                files[arg] = file_sha256(path)
        if files:
            out[cat.name] = files
    return out


def build_request(cfg: Config, suite: Suite, refs: Sequence[ModelRef], run_dir: Path) -> dict[str, Any]:
    """The JSON request for ``daemon.worker.evaluate``."""
    generation = []
    loss_items = []
    for cat in suite.categories:
        for item in cat.items:
            messages = cat.prompt_messages(item)
            if not cat.generates:
                loss_items.append(
                    {"category": cat.name, "item_id": item.id, "messages": messages, "reference": str(item.gold)}
                )
                continue
            for sample in range(cat.repeats):
                generation.append(
                    {
                        "category": cat.name,
                        "item_id": item.id,
                        "sample": sample,
                        "messages": messages,
                        "max_tokens": cat.max_tokens or cfg.evaluation.max_tokens,
                        "temperature": cat.temperature,
                    }
                )
    held_out = None
    if cfg.evaluation.held_out_loss:
        held_out = {
            "file": str(cfg.paths.dataset / "valid.jsonl"),
            "max_examples": cfg.evaluation.loss_max_examples,
            "mask_prompt": cfg.training.mask_prompt,
            "max_seq_len_tokens": cfg.training.max_seq_len_tokens,
        }
    return {
        "base_model": str(cfg.paths.base_model),
        "models": [
            {"key": r.role, "adapter_path": str(r.adapter_path) if r.adapter_path else None} for r in refs
        ],
        "generation": generation,
        "loss_items": loss_items,
        "held_out": held_out,
        "batch_size": cfg.evaluation.batch_size,
        "seed": cfg.evaluation.seed,
        "output_file": str(run_dir / RESULTS_FILE),
        "result_file": str(run_dir / "eval_result.json"),
    }


class JudgeCalls:
    """Judge calls, one thread pool per judge category (``judge.concurrency`` threads each).

    :func:`run_evaluation` offers every record the eval child streams, so judging
    starts while the child is still generating (the next categories, the next
    model) and a judge's seconds per call are hidden behind generation;
    :func:`score_model` then collects them. A reply is judged once. Scores are the
    same as judging afterwards: a pure function of category, item and reply.
    """

    def __init__(self, suite: Suite, judges: dict[str, Any]) -> None:
        self._judges = judges
        self._cats = {c.name: c for c in suite.categories if c.kind == "judge"}
        self._items = {(c.name, i.id): i for c in self._cats.values() for i in c.items}
        self._pools = {
            name: ThreadPoolExecutor(
                max_workers=c.judge.concurrency if c.judge is not None else 1,
                thread_name_prefix=f"judge-{name}",
            )
            for name, c in self._cats.items()
        }
        self._futures: dict[tuple[str, str, str, int], Future[ItemScore]] = {}

    def submit(self, model: str, category: str, item: Item, sample: int, reply: str) -> Future[ItemScore]:
        """The judge call for this reply: the one already started, else a new one."""
        key = (model, category, item.id, sample)
        if key not in self._futures:
            cat = self._cats[category]
            self._futures[key] = self._pools[category].submit(
                score_reply, cat, item, reply, judge=self._judges.get(category)
            )
        return self._futures[key]

    def offer(self, rec: dict[str, Any]) -> None:
        """Start judging ``rec`` if it is a reply of a judge category (other records are ignored)."""
        if rec.get("kind") != "reply" or rec.get("category") not in self._cats:
            return
        item = self._items.get((rec["category"], rec["item_id"]))
        if item is not None:
            self.submit(rec["model"], rec["category"], item, int(rec.get("sample", 0)), rec["reply"])

    def close(self) -> None:
        """Drop calls not started yet and cancel those in flight (a judge command's
        process group is killed), so an ended or failed evaluation leaves no judge behind."""
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        for judge in self._judges.values():
            cancel = getattr(judge, "cancel", None)
            if cancel is not None:
                cancel()


def score_model(
    suite: Suite,
    ref: ModelRef,
    records: list[dict[str, Any]],
    judges: dict[str, Any],
    calls: JudgeCalls | None = None,
) -> tuple[list[dict[str, Any]], ModelScores]:
    """Score one model's raw child records (replies and losses).

    ``calls``: the run's judge calls, some already started for these records (None: judge
    here, with a :class:`JudgeCalls` of its own).

    Returns:
        ``(rows, scores)``: registry rows and the gate's :class:`ModelScores`.

    Judge categories call their judge ``judge.concurrency`` items at a time; rows keep suite order.

    Raises:
        EvaluationFailed: an item has no reply (the child's output is incomplete), or a judge
            could not be reached.
    """
    own = calls is None
    calls = JudgeCalls(suite, judges) if calls is None else calls
    try:
        return _score_model(suite, ref, records, judges, calls)
    finally:
        if own:
            calls.close()


def _score_model(
    suite: Suite, ref: ModelRef, records: list[dict[str, Any]], judges: dict[str, Any], calls: JudgeCalls
) -> tuple[list[dict[str, Any]], ModelScores]:
    by_key = {(r["category"], r["item_id"], r.get("sample", 0)): r for r in records if r["kind"] in ("reply", "loss")}
    rows: list[dict[str, Any]] = []
    categories = {}
    for cat in suite.categories:
        per_item: dict[str, list[ItemScore]] = defaultdict(list)
        samples = cat.repeats if cat.generates else 1
        todo = []
        for item in cat.items:
            for sample in range(samples):
                rec = by_key.get((cat.name, item.id, sample))
                if rec is None:
                    raise EvaluationFailed(
                        f"The eval child produced no result for {ref.role} {cat.name}/{item.id} sample {sample}."
                    )
                todo.append((item, sample, rec))
        if not cat.generates:
            scored = [score_loss(float(rec["nll"])) for _, _, rec in todo]
        elif cat.kind == "judge":
            futures = [calls.submit(ref.role, cat.name, item, sample, rec["reply"]) for item, sample, rec in todo]
            scored = [_judge_result(f) for f in futures]
        else:
            scored = [score_reply(cat, item, rec["reply"]) for item, _, rec in todo]
        for (item, sample, rec), s in zip(todo, scored, strict=True):
            prompt_text = "\n".join(m["content"] for m in item.messages if m.get("role") == "user")
            reply: str | None = rec["reply"] if cat.generates else None
            per_item[item.id].append(s)
            rows.append(
                {
                    "category": cat.name,
                    "item_id": item.id,
                    "sample": sample,
                    "score": s.score,
                    "empty": s.empty,
                    "parsed": s.parsed,
                    "prompt": prompt_text,
                    "reply": reply,
                    "gold": None if item.gold is None else json.dumps(item.gold) if not isinstance(item.gold, str) else item.gold,
                    "extracted": s.extracted,
                    "detail": s.detail,
                    "truncated": bool(rec.get("truncated")) if cat.generates else None,
                }
            )
        categories[cat.name] = category_scores(cat, per_item)
    return rows, ModelScores(label=ref.role, categories=categories)


@dataclass(frozen=True)
class Truncation:
    """How many of a category's replies stopped at ``max_tokens`` (cut off, not finished)."""

    truncated: int
    replies: int

    @property
    def share(self) -> float:
        """``truncated / replies`` (0 when there are no replies)."""
        return self.truncated / self.replies if self.replies else 0.0


def truncation(rows: Sequence[Any]) -> dict[str, Truncation]:
    """Category -> :class:`Truncation` over ``eval_results`` rows (registry rows or row dicts).

    Rows without a reply (loss items) and rows recorded before truncation was measured
    (``truncated`` None) are left out; a category with none of its rows measured is absent.
    """
    counts: dict[str, list[int]] = {}
    for r in rows:
        flag = r.get("truncated") if isinstance(r, dict) else getattr(r, "truncated", None)
        if flag is None:
            continue
        category = r["category"] if isinstance(r, dict) else r.category
        c = counts.setdefault(category, [0, 0])
        c[0] += bool(flag)
        c[1] += 1
    return {cat: Truncation(t, n) for cat, (t, n) in counts.items()}


def _judge_result(future: Future[ItemScore]) -> ItemScore:
    """Wait for a judge call, waking every :data:`JUDGE_POLL_S` seconds to honour a stop.

    Raises:
        Interrupted: a stop was requested while waiting.
    """
    while True:
        try:
            return future.result(timeout=JUDGE_POLL_S)
        except TimeoutError:
            if shutdown.stop_requested():
                raise Interrupted(
                    f"{shutdown.stop_reason() or 'shutdown requested'}; stopped while waiting for a judge"
                ) from None


def scores_from_rows(suite: Suite, role: str, rows: Sequence[Any]) -> ModelScores:
    """Rebuild the gate's view from stored ``eval_results`` rows (the champion cache)."""
    per_cat: dict[str, dict[str, list[ItemScore]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        per_cat[r.category][r.item_id].append(
            ItemScore(score=r.score, empty=r.empty, parsed=r.parsed, extracted=r.extracted, detail=r.detail or "")
        )
    return ModelScores(
        label=role,
        categories={cat.name: category_scores(cat, per_cat[cat.name]) for cat in suite.categories},
    )


def start_eval_worker(run_dir: Path) -> StartedWorker:
    """Start the eval child for ``run_dir`` now; it imports mlx-lm and waits for its request.

    Hand it to :func:`run_evaluation`, or call its ``stop()`` if the run ends before.
    """
    return StartedWorker("daemon.worker.evaluate", work_dir=run_dir, name="evaluate")


def run_evaluation(
    cfg: Config,
    suite: Suite,
    refs: Sequence[ModelRef],
    run_dir: Path,
    versions: dict[str, str],
    *,
    on_progress: Callable[[EvalProgress], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    worker: StartedWorker | None = None,
) -> dict[str, ModelEval]:
    """Generate and score every model in ``refs`` in one child process.

    ``worker``: an eval child started earlier with :func:`start_eval_worker` (it has
    imported mlx-lm meanwhile); None starts one now.

    Returns:
        role -> :class:`ModelEval`.

    Raises:
        EvaluationFailed: the child failed or its output is incomplete (log named).
        Interrupted: shutdown was requested.
    """
    if not refs:
        return {}
    request = build_request(cfg, suite, refs, run_dir)
    results_path = run_dir / RESULTS_FILE
    results_path.unlink(missing_ok=True)
    tail = JsonLinesTail(results_path)
    records: list[dict[str, Any]] = []
    progress = EvalProgress()
    judges = {cat.name: make_judge(cat) for cat in suite.categories}  # a missing API key fails before the child
    calls = JudgeCalls(suite, judges)

    def poll() -> None:
        for rec in tail.read_new():
            records.append(rec)
            calls.offer(rec)
            if rec["kind"] == "progress":
                progress.model, progress.done, progress.total = rec["model"], rec["done"], rec["total"]
        if on_progress is not None:
            on_progress(progress)

    try:
        if worker is None:
            worker = start_eval_worker(run_dir)
        result = worker.run(
            request,
            timeout_s=cfg.evaluation.timeout_s,
            stop_grace_s=cfg.schedule.stop_grace_s,
            on_poll=poll,
            on_start=on_start,
        )
        if result.returncode != 0:
            reason = read_result_file(run_dir / "eval_result.json").get("reason")
            raise EvaluationFailed(f"Evaluation {result.describe_with_output(reason)}")
        return _collect(cfg, suite, refs, records, judges, calls, versions, result.log_path)
    finally:
        calls.close()


def _collect(
    cfg: Config,
    suite: Suite,
    refs: Sequence[ModelRef],
    records: list[dict[str, Any]],
    judges: dict[str, Any],
    calls: JudgeCalls,
    versions: dict[str, str],
    log_path: Path,
) -> dict[str, ModelEval]:
    out: dict[str, ModelEval] = {}
    for ref in refs:
        mine = [r for r in records if r.get("model") == ref.role]
        done = [r for r in mine if r["kind"] == "model_done"]
        if not done:
            raise EvaluationFailed(f"The eval child did not finish {ref.role}. log: {log_path}")
        rows, scores = score_model(suite, ref, mine, judges, calls)
        held = [r["loss"] for r in mine if r["kind"] == "held_out"]
        held_out = float(held[0]) if held and math.isfinite(float(held[0])) else (float("nan") if held else None)
        out[ref.role] = ModelEval(
            ref=ref,
            fingerprint=eval_fingerprint(cfg, suite, ref, versions),
            rows=rows,
            scores=scores,
            held_out_loss=held_out,
            duration_s=float(done[0]["duration_s"]),
        )
    return out
