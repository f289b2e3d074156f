"""Run every preflight check in order and collect the results."""

from __future__ import annotations

import dataclasses
import functools
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.dataset import Example
from daemon.errors import Interrupted, ModelFileError, SuiteError, reading, reading_location
from daemon.preflight import data, model, suite, system
from daemon.preflight.guards import check_guards
from daemon.preflight.report import CheckResult, Level, PreflightReport
from daemon.resources import ModelShape
from daemon.suite import Suite, load_suite

CRASH_EXCERPT_CHARS = 200
"""Characters of a crashed check's exception message kept in its result."""


def crash_message(exc: BaseException) -> str:
    """``check crashed while reading FILE line N: Type: message`` for a check that raised.

    The file and line come from :func:`daemon.errors.note_reading`; without one, the
    innermost nightshift source line that raised is named instead (a bug to report).
    """
    where = reading_location(exc)
    if where is not None:
        place = f"while reading {where}"
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "daemon" in Path(f.filename).parts and Path(f.filename).name != "runner.py"]
        last = (ours or frames)[-1] if frames else None
        place = f"in {Path(last.filename).name} line {last.lineno} (a nightshift bug: please report it)" if last else ""
    text = " ".join(str(exc).split())
    if len(text) > CRASH_EXCERPT_CHARS:
        text = text[: CRASH_EXCERPT_CHARS - 1] + "…"
    return f"check crashed {place}: {type(exc).__name__}: {text}".replace("crashed :", "crashed:")


SMOKE_PREREQUISITES = ("config", "model.", "dataset.", "resources.memory")
"""Checks whose failure makes the smoke test pointless (it is then not started)."""


class _Context:
    """Facts shared between checks, each computed once on first use."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.config_error: str | None = None
        self.examples: dict[str, list[Example]] = {}

    @functools.cached_property
    def model_config(self) -> dict[str, Any] | None:
        try:
            return model.read_model_config(self.cfg.paths.base_model)
        except ModelFileError as exc:
            self.config_error = str(exc)
            return None

    @functools.cached_property
    def weights(self) -> model.WeightsScan:
        return model.scan_weights(self.cfg.paths.base_model)

    @property
    def shape(self) -> ModelShape | None:
        return ModelShape.from_config(self.model_config) if self.model_config else None

    @functools.cached_property
    def suite(self) -> tuple[Suite | None, SuiteError | None]:
        """The eval suite as the evaluate stage loads it, or the loader's error."""
        try:
            with reading(self.cfg.paths.eval_suite):
                return load_suite(self.cfg.paths.eval_suite), None
        except SuiteError as exc:
            return None, exc

    def dataset(self) -> list[CheckResult]:
        results, self.examples = data.check_dataset(self.cfg, self.suite[0])
        return results


def run_preflight(cfg: Config, *, smoke: bool = False, holding_lock: bool = False) -> PreflightReport:
    """Run every check and return all results; never raises on bad input.

    A check that raises is reported as ``fail`` with the exception's message.
    Without ``smoke`` no weights are loaded and mlx is not imported: the model
    checks read ``config.json``, the safetensors headers and the tokenizer
    files only.

    Args:
        cfg: the validated config.
        smoke: also run the smoke child (:mod:`daemon.preflight.smoke`); it is
            skipped, with a warning, when a model, dataset or memory check failed.
        holding_lock: the caller holds the run lock itself, so the lock check passes.

    Raises:
        Interrupted: a shutdown was requested during the smoke test.
    """
    started = time.monotonic()
    ctx = _Context(cfg)
    results: list[CheckResult] = []
    raw_smoke: dict[str, Any] | None = None

    def run(name: str, check: Callable[[], list[CheckResult]]) -> None:
        tic = time.monotonic()
        try:
            out = check()
        except Interrupted:
            raise
        except Exception as exc:  # a broken check must not hide the others
            out = [CheckResult(name, Level.FAIL, crash_message(exc), 0.0)]
        elapsed = time.monotonic() - tic
        results.extend(dataclasses.replace(r, duration_s=elapsed) for r in out)

    run("config", lambda: model.check_config_consistency(cfg, ctx.model_config))
    run("model", lambda: model.check_model(cfg, ctx.model_config, ctx.config_error, ctx.weights))
    run("suite", lambda: suite.suite_results(*ctx.suite))
    run("suite.judge", lambda: suite.check_judges(ctx.suite[0]))
    run("suite.guards", lambda: check_guards(cfg))
    run("dataset", ctx.dataset)
    run("dataset.tokens", lambda: data.check_token_lengths(cfg, ctx.examples))
    run("resources.disk", lambda: system.check_disk(cfg, ctx.shape, ctx.weights.data_bytes))
    run("resources.memory", lambda: system.check_memory(cfg, ctx.shape, ctx.weights.data_bytes))
    run("resources.power", system.check_power)
    run("resources.lock", lambda: system.check_lock(cfg.paths.state_dir, holding_lock))
    run("schedule", lambda: system.check_schedule(cfg))
    run("schedule.deadline", lambda: system.check_deadline(cfg))
    run("serving", lambda: system.check_serving(cfg))
    if cfg.training.distributed.enabled:
        run("distributed", lambda: _check_distributed(cfg))
    if smoke:
        blockers = [r.name for r in results if r.level is Level.FAIL and r.name.startswith(SMOKE_PREREQUISITES)]
        if blockers:
            results.append(
                CheckResult(
                    "smoke",
                    Level.WARN,
                    f"not run: fix the failed checks first ({', '.join(dict.fromkeys(blockers))})",
                    0.0,
                )
            )
        else:

            def _smoke() -> list[CheckResult]:
                nonlocal raw_smoke
                from daemon.preflight.smoke import run_smoke

                raw_smoke, out = run_smoke(cfg, ctx.suite[0])
                return out

            run("smoke", _smoke)
    return PreflightReport(results, raw_smoke, time.monotonic() - started)


def _check_distributed(cfg: Config) -> list[CheckResult]:
    """``training.distributed``: every host reachable with the same paths (:func:`daemon.distributed.check_hosts`)."""
    from daemon.distributed import check_hosts, world_size

    problems = check_hosts(cfg)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return [CheckResult("distributed.hosts", Level.FAIL, problems[0] + more, 0.0, tuple(problems))]
    d = cfg.training.distributed
    where = f"hosts of {d.hostfile}" if d.hostfile else "local processes"
    return [CheckResult("distributed.hosts", Level.OK, f"{world_size(cfg)} {where} ({d.backend}) ready", 0.0)]
