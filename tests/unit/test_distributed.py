"""training.distributed: the mlx.launch command line and the preflight host check (no mlx)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from daemon.config import config_from_dict
from daemon.distributed import check_hosts, launch_argv, world_size
from daemon.preflight.runner import _check_distributed


def _cfg(tmp_path: Path, **distributed: object):
    return config_from_dict({"training": {"batch_size": 4, "distributed": distributed}}, base_dir=tmp_path)


def test_local_processes_launch_ring_ranks_of_the_train_worker(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, processes=2)
    argv = launch_argv(cfg, {"result_file": "r.json"})
    assert argv[0].endswith("mlx.launch") and argv[1:3] == ["--backend", "ring"] and "-n" in argv
    sep = argv.index("--")
    assert argv[sep + 1 : sep + 4] == [sys.executable, "-m", "daemon.worker.train"]
    assert json.loads(argv[-1]) == {"result_file": "r.json"}  # inline: remote hosts have no request file
    assert world_size(cfg) == 2 and check_hosts(cfg) == []


def test_preflight_names_a_missing_hostfile_and_an_unreachable_host(tmp_path: Path) -> None:
    missing = _check_distributed(_cfg(tmp_path, hostfile="hosts.json"))
    assert missing[0].level.value == "fail" and "hosts.json: cannot read it as JSON" in missing[0].message
    hosts = [{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}, {"ssh": "mac2.invalid", "ips": ["10.0.0.2"]}]
    (tmp_path / "hosts.json").write_text(json.dumps(hosts))
    cfg = _cfg(tmp_path, hostfile="hosts.json")
    assert world_size(cfg) == 2
    problems = check_hosts(cfg, timeout_s=3)
    assert len(problems) == 1 and problems[0].startswith("host mac2.invalid: not reachable over ssh")
    (tmp_path / "hosts.json").write_text(json.dumps(hosts[:1] * 2))
    ok = _check_distributed(cfg)
    assert ok[0].level.value == "ok" and "2 hosts of" in ok[0].message


def test_localhost_in_a_hostfile_needs_ssh_as_mlx_launch_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: preflight skipped the ssh probe for ``localhost``, which ``mlx.launch`` reaches
    over ssh (only 127.0.0.1 runs without it), and the night failed with exit code 255."""
    hosts = [{"ssh": "localhost", "ips": ["127.0.0.1"]}, {"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}]
    (tmp_path / "hosts.json").write_text(json.dumps(hosts))
    cfg = _cfg(tmp_path, hostfile="hosts.json")
    monkeypatch.setenv("PATH", str(tmp_path))  # no ssh client: the probe must fail rather than be skipped
    problems = check_hosts(cfg, timeout_s=3)
    assert len(problems) == 1 and problems[0].startswith("host localhost: not reachable over ssh")


def test_mpi_without_mpirun_fails_preflight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: ``backend: mpi`` passed preflight without mpirun; the night failed with a traceback."""
    monkeypatch.setenv("PATH", str(tmp_path))
    result = _check_distributed(_cfg(tmp_path, processes=2, backend="mpi"))
    assert result[0].level.value == "fail"
    assert "training.distributed.backend mpi: mpirun is not on PATH" in result[0].message
    (tmp_path / "mpirun").write_text("#!/bin/sh\n")
    (tmp_path / "mpirun").chmod(0o755)
    assert check_hosts(_cfg(tmp_path, processes=2, backend="mpi")) == []


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS may run jaccl")
def test_jaccl_fails_preflight_off_macos(tmp_path: Path) -> None:
    """Regression: on Linux preflight said jaccl was ready."""
    problems = check_hosts(_cfg(tmp_path, processes=2, backend="jaccl"))
    assert problems and "RDMA over Thunderbolt needs macOS 26.2 or later" in problems[0]


def test_a_jaccl_hostfile_without_rdma_devices_is_named(tmp_path: Path) -> None:
    hosts = [{"ssh": "127.0.0.1", "ips": ["10.0.0.1"], "rdma": [None, "rdma_en3"]},
             {"ssh": "127.0.0.1", "ips": ["10.0.0.2"]}]
    (tmp_path / "hosts.json").write_text(json.dumps(hosts))
    problems = check_hosts(_cfg(tmp_path, hostfile="hosts.json", backend="jaccl"))
    assert any("hosts.json: jaccl needs an `rdma` list per host" in p for p in problems)


@pytest.mark.skipif(sys.platform == "darwin", reason="no CUDA on a Mac")
def test_nccl_is_accepted_and_needs_a_gpu_mlx_can_use(tmp_path: Path) -> None:
    """Regression: ``backend: nccl`` was rejected though mlx.launch supports it (NVIDIA with mlx[cuda])."""
    cfg = _cfg(tmp_path, processes=2, backend="nccl")
    argv = launch_argv(cfg, {"result_file": "r.json"})
    assert argv[1:3] == ["--backend", "nccl"] and "--nccl-port" in argv
    problems = check_hosts(cfg)  # this machine: mlx without CUDA
    assert problems == [
        "training.distributed.backend nccl: no NVIDIA GPU usable by mlx here (install mlx[cuda] on a CUDA machine) "
        "or use backend: ring"
    ]


def test_a_lost_rank_is_named_with_how_it_ended() -> None:
    """Regression: a rank killed -9 read as "Training exited 0 but its outputs are incomplete"
    (mlx.launch exits 0 whatever its ranks do); the failure now names the rank and the signal."""
    from daemon.worker.launch import RankExit, describe_ranks

    assert describe_ranks([RankExit(0, "127.0.0.1", 0), RankExit(1, "127.0.0.1", 0)]) is None
    killed = [RankExit(1, "127.0.0.1", -9), RankExit(0, "127.0.0.1", -15, stopped_by_launcher=True)]
    assert describe_ranks(killed) == "rank 1 of 2 was killed by SIGKILL; mlx.launch then stopped rank 0"
    remote = [RankExit(1, "mac2.local", 255), RankExit(0, "127.0.0.1", 1)]
    assert describe_ranks(remote) == (
        "rank 1 of 2 on mac2.local exited with status 255 (ssh to mac2.local failed, or the rank died by a "
        "signal there); rank 0 of 2 exited with status 1"
    )
