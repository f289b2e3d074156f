"""training.distributed: the mlx.launch command line and the preflight host check (no mlx)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
