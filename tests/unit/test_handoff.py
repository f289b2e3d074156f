"""Hand-off and automatic rollback on a real registry, real symlinks, a real hook and HTTP server (no mlx)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from daemon import shutdown
from daemon.config import config_from_dict
from daemon.registry import Registry, RunStatus, Trigger
from daemon.serving.handoff import ServingSession, Target, hand_off_or_roll_back, switch_champion
from daemon.serving.server import check_health
from tests.unit.test_serving import STUB_SERVER

SUITE = """
categories:
  - name: c
    kind: label
    labels: [pos, neg]
    items:
      - {id: a, prompt: "p1", gold: pos}
      - {id: b, prompt: "p2", gold: neg}
      - {id: c, prompt: "p3", gold: pos}
"""
OLD = {"p1": "pos", "p2": "pos", "p3": "pos"}
NEW = {"p1": "pos", "p2": "neg", "p3": "neg"}


def rows(replies: dict[str, str]) -> list[SimpleNamespace]:
    ids = {"p1": "a", "p2": "b", "p3": "c"}
    return [SimpleNamespace(category="c", item_id=ids[p], sample=0, reply=r) for p, r in replies.items()]


@pytest.fixture()
def stub(tmp_path: Path):
    """A real HTTP server answering with the replies of the file ``served.json`` (the "old" model)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "stub.py").write_text(STUB_SERVER)
    (tmp_path / "served.json").write_text(json.dumps(OLD))
    proc = subprocess.Popen([sys.executable, str(tmp_path / "stub.py"), str(port), str(tmp_path / "served.json")])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while check_health(url, 1.0) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield url
    proc.kill()
    proc.wait()


def world(tmp_path: Path, url: str, hook: str, serving: dict | None = None):
    """A registry whose champion is run-0002 (just promoted over run-0001), as after a promotion."""
    (tmp_path / "suite.yaml").write_text(SUITE)
    (tmp_path / "base").mkdir(exist_ok=True)
    cfg = config_from_dict(
        {
            "paths": {"base_model": "base", "state_dir": "state", "eval_suite": "suite.yaml"},
            "serving": serving or {
                "mode": "command", "url": url, "reload_command": hook, "health_timeout_s": 5, "reload_timeout_s": 30,
            },
        },
        base_dir=tmp_path,
    )
    state = cfg.paths.state_dir
    reg = Registry.open(state)
    base = reg.base_model(str(tmp_path / "base"), "b" * 64, mlx_version=None, mlx_lm_version=None)
    targets = []
    for n in (1, 2):
        run = reg.create_run(trigger=Trigger.MANUAL, config_snapshot={}, config_path=None, profile=None)
        release = state / "releases" / f"run-{n:04d}"
        release.mkdir(parents=True)
        model = reg.add_adapter_model(base=base, adapter_path=str(release), adapter_sha256=str(n) * 64, run_id=run.id,
                                      mlx_version=None, mlx_lm_version=None)
        targets.append(Target(str(release.resolve()), model.id, run.id, release.name, rows(OLD if n == 1 else NEW)))
        switch_champion(cfg, reg, targets[-1], run_id=run.id, reason="promoted", decided_by="auto")
    return cfg, reg, targets[0], targets[1]


def champion_and_current(reg: Registry, state: Path) -> tuple[str, str]:
    champ = reg.champion()
    assert champ is not None
    return Path(champ[0].release_path).name, Path(os.readlink(state / "current")).name


def test_hook_exiting_non_zero_is_rolled_back_with_the_reason(tmp_path: Path, stub: str) -> None:
    cfg, reg, old, new = world(tmp_path, stub, "exit 7")
    out = hand_off_or_roll_back(cfg, reg, ServingSession(cfg), new=new, previous=old, since=time.time(), run_id=2, kind="promotion")
    assert not out.kept
    assert out.reason is not None and "serving.reload_command 'exit 7' exited with status 7" in out.reason
    assert champion_and_current(reg, cfg.paths.state_dir) == ("run-0001", "run-0001")
    last = reg.promotions()[-1]
    assert last.decided_by == "rollback" and "exit 7" in last.reason
    kinds = [(h.kind, h.ok) for h in reg.handoffs(2)]
    assert kinds == [("promotion", False), ("auto-rollback", False)]  # the hook fails for run-0001 too
    reg.close()


def test_server_that_keeps_the_old_model_fails_verification(tmp_path: Path, stub: str) -> None:
    # the hook "succeeds" but does nothing: the server still answers with run-0001's replies
    cfg, reg, old, new = world(tmp_path, stub, "true")
    out = hand_off_or_roll_back(cfg, reg, ServingSession(cfg), new=new, previous=old, since=time.time(), run_id=2, kind="promotion")
    assert not out.kept
    assert out.reason is not None and "the server still serves run-0001: 2/2 distinguishing probes match run-0001" in out.reason
    assert stub in out.reason  # the URL is named
    assert champion_and_current(reg, cfg.paths.state_dir) == ("run-0001", "run-0001")
    back = reg.handoffs(2)[-1]
    assert back.ok and back.verdict == "served = run-0001: 3/3 probes identical"
    reg.close()


def test_sigterm_during_the_hook_rolls_back_and_leaves_nothing_running(tmp_path: Path, stub: str) -> None:
    marker = tmp_path / "hook.pid"
    cfg, reg, old, new = world(tmp_path, stub, f"echo $$ > {marker}; sleep 60")
    timer = threading.Timer(1.0, shutdown.request_stop, args=("received SIGTERM",))
    timer.start()
    started = time.monotonic()
    try:
        out = hand_off_or_roll_back(cfg, reg, ServingSession(cfg), new=new, previous=old, since=time.time(), run_id=2, kind="promotion")
    finally:
        timer.cancel()
    assert time.monotonic() - started < 30
    assert not out.kept and "received SIGTERM" in (out.reason or "")
    assert champion_and_current(reg, cfg.paths.state_dir) == ("run-0001", "run-0001")
    with pytest.raises(ProcessLookupError):
        os.kill(int(marker.read_text()), 0)  # the hook's shell was stopped with its group
    reg.close()


def test_run_status_machine_allows_promoted_to_rolled_back_only(tmp_path: Path) -> None:
    reg = Registry.open(tmp_path)
    run = reg.create_run(trigger=Trigger.MANUAL, config_snapshot={}, config_path=None, profile=None)
    for st in (RunStatus.PREFLIGHT, RunStatus.TRAINING, RunStatus.EVALUATING, RunStatus.DECIDING, RunStatus.REJECTED):
        reg.transition(run.id, st)
    from daemon.errors import RegistryError

    with pytest.raises(RegistryError):
        reg.transition(run.id, RunStatus.ROLLED_BACK)  # only a promoted run can be rolled back
    reg.close()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["no-such-server-xyz", "{port}"], "cannot start the server command 'no-such-server-xyz'"),
        (["sleep", "60", "{port}"], "was not healthy within 1 s"),
    ],
)
def test_managed_server_that_cannot_start_or_never_gets_healthy_is_rolled_back(
    tmp_path: Path, command: list[str], expected: str
) -> None:
    cfg, reg, old, new = world(
        tmp_path, "", "", {"mode": "managed", "port": 0, "command": command, "health_timeout_s": 1, "max_backoff_s": 600},
    )
    session = ServingSession(cfg)
    try:
        out = hand_off_or_roll_back(cfg, reg, session, new=new, previous=old, since=time.time(), run_id=2, kind="promotion")
        assert not out.kept and out.reason is not None and expected in out.reason
        assert "\n" not in out.reason
        assert champion_and_current(reg, cfg.paths.state_dir) == ("run-0001", "run-0001")
    finally:
        session.close()
    ps = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True, check=True).stdout
    assert f"sleep 60 {session_port(cfg)}" not in ps  # nothing left running
    reg.close()


def session_port(cfg) -> str:  # type: ignore[no-untyped-def]
    from daemon.serving.server import read_server_state

    return str((read_server_state(cfg.paths.state_dir) or {}).get("port"))


def test_promotion_and_handoff_are_states_of_the_run(tmp_path: Path, stub: str) -> None:
    """Issue 13 item 6: promotion and hand-off were stage rows only; the run stayed `deciding` meanwhile."""
    from daemon.lock import RunLock
    from daemon.pipeline import promote_and_hand_off, timed_stage
    from daemon.status import collect_status
    from tests.faults.state import trained_run

    (tmp_path / "suite.yaml").write_text(SUITE)
    (tmp_path / "base").mkdir()
    cfg = config_from_dict(
        {
            "paths": {"base_model": "base", "state_dir": "state", "eval_suite": "suite.yaml"},
            "serving": {"mode": "command", "url": stub, "reload_command": "true", "health_timeout_s": 5},
        },
        base_dir=tmp_path,
    )
    reg = Registry.open(cfg.paths.state_dir)
    run_id = trained_run(reg, cfg.paths.state_dir, 1)
    seen: dict[str, tuple[str, str]] = {}

    def stage(name: str, fn):  # type: ignore[no-untyped-def]
        shown = collect_status(cfg)["last_run"]["status"]  # what `nightshift status` shows meanwhile
        seen[name] = (reg.get_run(run_id).status, shown)
        return timed_stage(reg, run_id, name, fn)

    with RunLock(cfg.paths.state_dir) as lock:  # as the night holds it: status does not "recover" the run
        lock.set_run_id(run_id)
        status, reason = promote_and_hand_off(
            cfg, reg, run_id, decided_by="auto", reason="test", session=ServingSession(cfg), record_stage=stage
        )
    assert (status, reason) == (RunStatus.PROMOTED, None)
    assert seen == {"promoting": ("promoting", "promoting"), "handoff": ("handing_off", "handing_off")}
    assert reg.get_run(run_id).status == "promoted"
    durations = {st.stage: st.duration_s for st in reg.stages(run_id)}
    assert durations["promoting"] is not None and durations["handoff"] is not None
    reg.close()


def test_a_run_killed_while_handing_off_is_promoted_or_rolled_back_by_recovery(tmp_path: Path) -> None:
    """A dead run in `handing_off` has a committed promotion: recovery ends it by the champion, not as lost."""
    from daemon.promote import build_release, promote_release
    from daemon.recovery import recover_state
    from tests.faults.state import make_cfg, trained_run

    state = tmp_path / "state"
    cfg = make_cfg(state)
    reg = Registry.open(state)
    run_id = trained_run(reg, state, 1)
    model = reg.get_model(reg.get_run(run_id).challenger_model_id)  # type: ignore[arg-type]
    release = build_release(cfg, run_id=run_id, adapter_dir=Path(model.adapter_path), manifest={}, work_dir=state)  # type: ignore[arg-type]
    reg.transition(run_id, RunStatus.PROMOTING)
    promote_release(state, reg, release=release, to_model_id=model.id, run_id=run_id, reason="t", decided_by="auto",
                    run_status=RunStatus.HANDING_OFF)
    assert reg.get_run(run_id).status == "handing_off"
    actions = recover_state(cfg, reg)  # the process is gone (the test holds no lock, no pid recorded)
    assert [a.action for a in actions] == ["handoff-interrupted"]
    assert "never verified" in actions[0].detail
    assert reg.get_run(run_id).status == "promoted"
    reg.close()


def test_a_failed_handoff_is_a_failed_stage_and_the_rollback_its_own_row(tmp_path: Path, stub: str) -> None:
    """Reviewer defect: a failed hand-off was recorded as `| handoff | ok |` (hand_off returns its failure)."""
    from daemon.pipeline import timed_stage

    cfg, reg, old, new = world(tmp_path, stub, "true")  # the server keeps serving run-0001

    def stage(name: str, fn):  # type: ignore[no-untyped-def]
        return timed_stage(reg, 2, name, fn)

    out = hand_off_or_roll_back(cfg, reg, ServingSession(cfg), new=new, previous=old, since=time.time(), run_id=2,
                                kind="promotion", record_stage=stage)
    assert not out.kept
    assert [(st.stage, st.outcome) for st in reg.stages(2)] == [("handoff", "failed"), ("rollback", "ok")]
    handoff_stage = reg.stages(2)[0]
    assert handoff_stage.reason is not None and "the server still serves run-0001" in handoff_stage.reason
    reg.close()


def test_a_handoff_no_probe_can_tell_apart_is_kept_as_unconfirmed_not_verified(tmp_path: Path, stub: str) -> None:
    """Reviewer defect: a challenger identical to the champion was labelled "verified" ("16/16 probes
    identical (none of them tells run-0002 from run-0001)"). Rule: kept, reported unconfirmed, not rolled back."""
    from dataclasses import replace as dc_replace

    from daemon.report.data import _extras

    cfg, reg, old, new = world(tmp_path, stub, "true")
    same = dc_replace(new, replies=rows(OLD))  # run-0002 answers every probe as run-0001 does (the stub's replies)
    out = hand_off_or_roll_back(cfg, reg, ServingSession(cfg), new=same, previous=old, since=time.time(), run_id=2,
                                kind="promotion")
    assert out.kept and out.reason is None  # kept: not rolled back
    assert champion_and_current(reg, cfg.paths.state_dir) == ("run-0002", "run-0002")
    (row,) = reg.handoffs(2)
    assert row.ok and row.verdict == (
        "served replies match run-0002, but none of the 3 probes tells it from run-0001 "
        "(identical replies): unconfirmed"
    )
    assert "verified" not in row.verdict
    assert reg.last_verified_handoff() is None  # status does not call it verified
    line = _extras(reg, reg.get_run(2), {})["hand-off"]
    assert line.startswith("unconfirmed (command")
    reg.close()
