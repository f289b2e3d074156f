"""The training stage on the tiny demo model with the real mlx-lm child: best checkpoint,
early stopping, guards, deadline, resume, and two ``mlx.launch`` ring processes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from daemon import shutdown
from daemon.config import Config, DistributedConfig, load_config
from daemon.errors import Interrupted, TrainingFailed
from daemon.pipeline import run_pipeline
from daemon.registry import Registry, RunStatus
from daemon.train import METRICS_FILE, TrainPlan, TrainResult, train_challenger
from daemon.worker.common import BEST_ADAPTER, CHECKPOINTS_DIR

SWAP = {"positive": "negative", "negative": "positive", "A": "B", "B": "A"}


def config(workspace: Path, **training: Any) -> Config:
    cfg = load_config(workspace / "nightshift.yaml", "quick")
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **training))


def records(run_dir: Path, event: str) -> list[dict[str, Any]]:
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    return [rec for rec in map(json.loads, lines) if rec["event"] == event]


def train(cfg: Config, run_dir: Path, plan: TrainPlan | None = None) -> TrainResult:
    return train_challenger(cfg, run_dir, on_metrics=lambda rows: None, plan=plan)


def wrong_answers_for_validation(workspace: Path) -> None:
    """Validation items answered wrongly: the more training learns the task, the worse their loss
    gets, so the best checkpoint comes early."""
    valid = workspace / "data" / "valid.jsonl"
    rows = []
    for rec in map(json.loads, valid.read_text().splitlines()):
        reply = rec["messages"][-1]
        if reply["content"] in SWAP:
            reply["content"] = SWAP[reply["content"]]
            rows.append(json.dumps(rec))
    valid.write_text("\n".join(rows) + "\n")


def checkpointing_config(workspace: Path) -> Config:
    """The demo config with a resume checkpoint every 20 iterations."""
    path = workspace / "nightshift.yaml"
    path.write_text(path.read_text().replace("  steps_per_eval: 100\n", "  steps_per_eval: 100\n  save_every: 20\n"))
    return load_config(path)


def night_until_checkpoint(cfg: Config, iteration: int) -> tuple[threading.Thread, list[BaseException]]:
    """Start run 1 in a thread and return once its checkpoint at ``iteration`` is written;
    what the night raises is appended to the list."""
    errors: list[BaseException] = []

    def first_night() -> None:
        try:
            run_pipeline(cfg)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    night = threading.Thread(target=first_night)
    night.start()
    metrics = cfg.paths.state_dir / "runs" / "0001" / METRICS_FILE
    deadline = time.monotonic() + 300
    while not (metrics.exists() and f'"checkpoint", "iteration": {iteration}' in metrics.read_text()):
        assert night.is_alive() and time.monotonic() < deadline
        time.sleep(0.2)
    return night, errors


def test_best_checkpoint_becomes_the_challenger(demo_workspace: Path, tmp_path: Path) -> None:
    """The challenger is the adapter of the lowest validation loss, not the last iteration's."""
    wrong_answers_for_validation(demo_workspace)
    cfg = config(demo_workspace, iters=40, steps_per_eval=10, save_every=1000)
    run_dir = tmp_path / "run"
    result = train(cfg, run_dir)
    vals = records(run_dir, "val")
    best = min(vals, key=lambda r: r["val_loss"])
    # mlx-lm's validations, the last one a step before the end; no extra pass for the final step
    assert [v["iteration"] for v in vals] == [0, 9, 19, 29, 39]
    assert 0 < result.chosen_iteration == best["iteration"] < result.iterations_done == 40  # a trained one
    assert result.chosen_val_loss == pytest.approx(best["val_loss"])
    adapter = (result.adapter_dir / "adapters.safetensors").read_bytes()
    assert adapter == (run_dir / CHECKPOINTS_DIR / BEST_ADAPTER).read_bytes()
    assert adapter != (run_dir / CHECKPOINTS_DIR / "last_adapters.safetensors").read_bytes()
    assert "best checkpoint at iteration" in result.summary()


@pytest.mark.slow
def test_early_stopping_after_patience_evaluations_without_improvement(demo_workspace: Path, tmp_path: Path) -> None:
    wrong_answers_for_validation(demo_workspace)
    cfg = config(demo_workspace, iters=60, steps_per_eval=10, early_stopping_patience=2)
    run_dir = tmp_path / "run"
    result = train(cfg, run_dir)
    vals = records(run_dir, "val")
    assert result.stop_reason == "early_stopping" and result.iterations_done is not None
    assert result.iterations_done < 60 and vals[-1]["iteration"] == result.iterations_done
    assert [v["best"] for v in vals[-2:]] == [False, False]  # exactly `patience` evaluations without a new best
    assert 0 < result.chosen_iteration == min(vals[1:], key=lambda r: r["val_loss"])["iteration"]
    assert records(run_dir, "stop")[0]["reason"] == "early_stopping"


@pytest.mark.slow
def test_a_night_that_never_beats_the_untrained_adapter_fails_without_a_challenger(
    demo_workspace: Path, tmp_path: Path
) -> None:
    """Reviewer #3: iteration 0 (the untrained adapter) was the "best checkpoint" and got evaluated."""
    diverging = {"iters": 60, "steps_per_eval": 20, "learning_rate": 0.05, "lr_schedule": "constant",
                 "warmup_steps": 8}
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingFailed, match=r"no trained checkpoint improved the validation loss of the untrained"):
        train(config(demo_workspace, **diverging), run_dir)
    assert not (run_dir / "adapter" / "adapters.safetensors").exists()
    assert [v["iteration"] for v in records(run_dir, "val")] == [0, 19, 39, 59]


@pytest.mark.slow
def test_loss_spike_aborts_and_gradient_clipping_keeps_the_same_run_stable(demo_workspace: Path, tmp_path: Path) -> None:
    """A learning rate that blows the loss up trips the watchdog; clipped gradients train through it."""
    risky = {"learning_rate": 0.05, "lr_schedule": "constant", "warmup_steps": 8, "steps_per_report": 1,
             "loss_spike_factor": 2.0, "loss_spike_reports": 2, "iters": 12}
    with pytest.raises(TrainingFailed, match=r"Training aborted: training loss .* stayed above 2 x its running median"):
        train(config(demo_workspace, **risky), tmp_path / "spiking")
    assert not (tmp_path / "spiking" / "adapter" / "adapters.safetensors").exists()  # no adapter is kept

    result = train(config(demo_workspace, **risky, max_grad_norm=1e-9), tmp_path / "clipped")
    reports = records(tmp_path / "clipped", "train")
    assert result.iterations_done == 12 and max(r["train_loss"] for r in reports) < 2.0
    assert all(r["grad_norm"] > 1e-9 for r in reports)  # the norm before clipping is reported


@pytest.mark.slow
def test_deadline_stops_training_early_and_keeps_the_best_checkpoint(demo_workspace: Path, tmp_path: Path) -> None:
    cfg = config(demo_workspace, iters=5000, steps_per_eval=20, save_every=10_000)
    run_dir = tmp_path / "run"
    started = time.time()
    result = train(cfg, run_dir, TrainPlan(stop_at_unix=started + 12.0))
    assert result.stop_reason == "deadline" and "to finish by the deadline" in result.stop_detail
    assert result.iterations_done is not None and 0 < result.iterations_done < 5000
    # the weights it stopped with were scored (a pass of their own unless mlx-lm had just validated a step before)
    assert records(run_dir, "val")[-1]["iteration"] >= result.iterations_done - 1
    assert (result.adapter_dir / "adapters.safetensors").read_bytes() == (
        run_dir / CHECKPOINTS_DIR / BEST_ADAPTER
    ).read_bytes()


@pytest.mark.slow
def test_a_night_interrupted_in_training_resumes_from_its_checkpoint(demo_workspace: Path, tmp_path: Path) -> None:
    """The next attempt continues at the checkpoint with the optimizer state and schedule position:
    its losses after the resume point equal an uninterrupted run's."""
    cfg = checkpointing_config(demo_workspace)
    state = cfg.paths.state_dir
    night, errors = night_until_checkpoint(cfg, 40)
    shutdown.request_stop("test: the Mac went to sleep")
    night.join(timeout=120)
    assert len(errors) == 1 and isinstance(errors[0], Interrupted)
    shutdown.reset()

    outcome = run_pipeline(cfg)
    reg = Registry.open(state)
    try:
        first, second = reg.get_run(1), reg.get_run(2)
        assert first.status == RunStatus.INTERRUPTED.value
        assert second.resumed_from_run_id == 1 and second.resumed_iterations == 40
        assert second.chosen_iteration is not None and second.train_stop_reason == "completed"
        assert min(m.iteration for m in reg.train_metrics(2) if m.train_loss is not None) == 50
    finally:
        reg.close()
    report = outcome.report_path.read_text() if outcome.report_path else ""
    assert "resumed 40 iterations from run 1" in report

    reference = train(cfg, tmp_path / "uninterrupted")
    ref_losses = {r["iteration"]: r["train_loss"] for r in records(tmp_path / "uninterrupted", "train")}
    resumed = {r["iteration"]: r["train_loss"] for r in records(state / "runs" / "0002", "train")}
    assert reference.iterations_done == cfg.training.iters and resumed
    assert all(resumed[i] == pytest.approx(ref_losses[i], rel=1e-5) for i in resumed)


def _own_children(module: str) -> list[int]:
    """Pids of this process's children running ``python -m module`` (never another test's)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and module.encode() in cmdline:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow
@pytest.mark.faults
def test_a_training_child_killed_by_sigkill_is_resumed_by_the_next_run(demo_workspace: Path, tmp_path: Path) -> None:
    """Reviewer #2a/#2e: a child killed by signal 9 (the OOM killer) left a `failed` run that the next
    run did not resume, and the --run-now output never said a run resumed."""
    cfg = checkpointing_config(demo_workspace)
    night, _errors = night_until_checkpoint(cfg, 40)
    (child,) = _own_children("daemon.worker.train")
    os.kill(child, signal.SIGKILL)
    night.join(timeout=120)
    assert not night.is_alive()

    second_night = subprocess.run(
        [sys.executable, "-m", "daemon", "-c", str(demo_workspace / "nightshift.yaml"), "--run-now"],
        capture_output=True, text=True, timeout=600,
    )
    assert second_night.returncode == 0, second_night.stderr
    reg = Registry.open(cfg.paths.state_dir)
    try:
        first, second = reg.get_run(1), reg.get_run(2)
        assert first.status == RunStatus.FAILED.value and "signal 9" in (first.failure_reason or "")
        assert second.resumed_from_run_id == 1 and second.resumed_iterations == 40
        assert second.resume_note == "resuming run 1's checkpoint at iteration 40"
    finally:
        reg.close()
    assert "run 2: resuming run 1's checkpoint at iteration 40" in second_night.stderr
    logged = [json.loads(line) for line in (cfg.paths.state_dir / "logs" / "nightshift.jsonl").read_text().splitlines()]
    assert any(e["event"] == "resume" and e["run_id"] == 2 and e["resumed"] for e in logged)


@pytest.mark.slow
def test_two_ring_processes_match_one_process_with_the_same_global_batch(demo_workspace: Path, tmp_path: Path) -> None:
    """Data parallelism through ``mlx.launch --backend ring -n 2``.

    Tolerance: the first validation (same weights, the global batch split over two ranks)
    agrees to 1e-4 relative; the last to 10 % relative, because each rank averages its loss
    over its own tokens before mlx-lm averages the gradients, which differs slightly from one
    process averaging over all tokens of the batch.
    """
    cfg = config(demo_workspace, iters=40, steps_per_eval=20, save_every=20)
    one = train(cfg, tmp_path / "one")
    two_cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, distributed=DistributedConfig(processes=2)))
    two = train(two_cfg, tmp_path / "two")
    assert (one.world_size, two.world_size) == (1, 2)
    v1, v2 = records(tmp_path / "one", "val"), records(tmp_path / "two", "val")
    assert [v["iteration"] for v in v1] == [v["iteration"] for v in v2]
    assert v2[0]["val_loss"] == pytest.approx(v1[0]["val_loss"], rel=1e-4)
    assert v2[-1]["val_loss"] == pytest.approx(v1[-1]["val_loss"], rel=0.10)
    assert v2[-1]["val_loss"] < 0.5 * v2[0]["val_loss"]  # it learned
    t1, t2 = records(tmp_path / "one", "train"), records(tmp_path / "two", "train")
    assert [t["iteration"] for t in t1] == [t["iteration"] for t in t2]
    assert all(b["train_loss"] == pytest.approx(a["train_loss"], rel=0.15) for a, b in zip(t1, t2, strict=True))
    # Regression: processed_tokens counted rank 0's shard only (half of one process's count)
    assert [t["processed_tokens"] for t in t2] == [t["processed_tokens"] for t in t1]
    # rank 0 alone wrote the outputs, and every rank is gone
    assert (two.adapter_dir / "adapters.safetensors").is_file() and (tmp_path / "two" / CHECKPOINTS_DIR).is_dir()
    assert "Node with rank 1 exited with code" not in (tmp_path / "two" / "train.log").read_text()


@pytest.mark.slow
def test_stopping_a_distributed_run_leaves_no_rank_behind(demo_workspace: Path, tmp_path: Path) -> None:
    """A shutdown during distributed training stops the launcher and every rank."""
    from tests.integration.test_pipeline import worker_processes

    cfg = config(demo_workspace, iters=100_000, distributed=DistributedConfig(processes=2))
    run_dir = tmp_path / "run"

    def stop_after_first_report() -> None:
        while not ((run_dir / METRICS_FILE).exists() and '"train"' in (run_dir / METRICS_FILE).read_text()):
            time.sleep(0.2)
        shutdown.request_stop("test: stop")

    watcher = threading.Thread(target=stop_after_first_report, daemon=True)
    watcher.start()
    with pytest.raises(Interrupted):
        train(cfg, run_dir)
    assert worker_processes(run_dir) == []  # launcher, both ranks: gone


@pytest.mark.slow
@pytest.mark.faults
def test_a_launcher_killed_by_sigkill_leaves_no_rank_behind(demo_workspace: Path, tmp_path: Path) -> None:
    """Regression: after ``kill -9`` of the launch wrapper, ``mlx.launch`` and both ranks kept
    training and writing into the failed run's directory."""
    import os
    import signal
    import subprocess

    from tests.integration.test_pipeline import worker_processes

    cfg = config(demo_workspace, iters=100_000, distributed=DistributedConfig(processes=2))
    run_dir = tmp_path / "run"

    def kill_launcher_after_first_report() -> None:
        while not ((run_dir / METRICS_FILE).exists() and '"train"' in (run_dir / METRICS_FILE).read_text()):
            time.sleep(0.2)
        pids = subprocess.run(["pgrep", "-f", f"daemon.worker.launch {run_dir}"], capture_output=True, text=True)
        for pid in pids.stdout.split():
            os.kill(int(pid), signal.SIGKILL)

    watcher = threading.Thread(target=kill_launcher_after_first_report, daemon=True)
    watcher.start()
    with pytest.raises(TrainingFailed, match="SIGKILL"):
        train(cfg, run_dir)
    watcher.join(5)
    time.sleep(0.5)
    assert worker_processes(run_dir) == []  # launcher, both ranks: gone
    size = (run_dir / METRICS_FILE).stat().st_size
    time.sleep(3)
    assert (run_dir / METRICS_FILE).stat().st_size == size  # nobody writes into the failed run


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds a rank by its MLX_RANK in /proc")
@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_killed_by_sigkill_is_named(demo_workspace: Path, tmp_path: Path, rank: int) -> None:
    """Regression: a rank killed -9 read as "Training exited 0 but its outputs are incomplete" (rank 0)
    or "exited with status 0 ... connection to a peer was lost" (rank 1): mlx.launch exits 0."""
    import os
    import signal
    import subprocess

    from tests.integration.test_pipeline import worker_processes

    cfg = config(demo_workspace, iters=100_000, distributed=DistributedConfig(processes=2))
    run_dir = tmp_path / "run"

    def kill_rank_after_first_report() -> None:
        while not ((run_dir / METRICS_FILE).exists() and '"train"' in (run_dir / METRICS_FILE).read_text()):
            time.sleep(0.2)
        ps = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
        for line in ps.stdout.splitlines():
            pid, _, args = line.strip().partition(" ")
            if "daemon.worker.train" in args and str(run_dir) in args:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if f"MLX_RANK={rank}".encode() in env:
                    os.kill(int(pid), signal.SIGKILL)

    watcher = threading.Thread(target=kill_rank_after_first_report, daemon=True)
    watcher.start()
    with pytest.raises(TrainingFailed) as failed:
        train(cfg, run_dir)
    assert f"rank {rank} of 2 was killed by SIGKILL" in str(failed.value)
    assert "exited 0" not in str(failed.value) and "status 0" not in str(failed.value)
    assert worker_processes(run_dir) == []


@pytest.mark.slow
def test_a_night_stopped_by_the_deadline_says_so_everywhere(demo_workspace: Path) -> None:
    """Issue 11 review, defect 4: a deadline stop was said in one terse report line only; the run
    now records it and the --run-now line, the headline and the Training section say it."""
    from daemon.runsummary import summarize_run

    cfg = config(demo_workspace, iters=100_000, steps_per_eval=200, save_every=100_000, deadline="1m")
    outcome = run_pipeline(cfg)
    reg = Registry.open(cfg.paths.state_dir)
    try:
        run = reg.get_run(outcome.run_id)
        done = run.train_iterations_done
        assert run.train_stop_reason == "deadline" and done is not None and 0 < done < 100_000
        assert run.train_iterations_total == 100_000 and run.train_deadline is not None and run.train_stop_at is not None
        assert run.train_stop_at < run.train_deadline and run.train_world_size == 1
        said = f"training stopped early at iteration {done} of 100000 for the deadline {run.train_deadline.astimezone():%H:%M}"
        assert said in summarize_run(run).outcome_line()
    finally:
        reg.close()
    report = outcome.report_path.read_text() if outcome.report_path else ""
    assert f"steps: {done} of 100000 iterations (stopped early for the deadline" in report
