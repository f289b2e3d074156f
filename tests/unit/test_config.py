"""Config loading: every problem at once, key paths, ranges, profiles, relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import config_from_dict, load_config, resolve_config_path, resolve_profile
from daemon.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "nightshift.yaml"
    p.write_text(text)
    return p


def test_three_errors_reported_at_once_with_key_paths_and_ranges(tmp_path: Path) -> None:
    p = write(tmp_path, "training:\n  lora: {rank: 0, alpah: 3}\n  iters: many\n  lr_schedule: exp\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert f"Invalid config {p.resolve()}: 4 problem(s)" in msg
    assert "training.lora.rank: must be an integer in [1, 4096], got 0" in msg
    assert "training.lora.alpah: unknown key (known keys here: rank, alpha, scale, dropout, layers, keys)" in msg
    assert "training.iters: must be an integer in [1, 1e+07], got 'many'" in msg
    assert "training.lr_schedule: must be one of 'constant', 'cosine', 'linear', got 'exp'" in msg


def test_alpha_means_scale_alpha_over_rank_and_yaml_1e_strings_are_numbers(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "training:\n  lora: {rank: 64, alpha: 128}\n  learning_rate: 3e-6\n"))
    assert cfg.training.lora.effective_scale == 2.0
    assert cfg.training.learning_rate == 3e-6


def test_alpha_and_conflicting_scale_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give alpha or scale, not both"):
        load_config(write(tmp_path, "training:\n  lora: {rank: 8, alpha: 16, scale: 20}\n"))


def test_warmup_must_be_below_iters(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"training.warmup_steps: must be below training.iters \(10\), got 10"):
        load_config(write(tmp_path, "training:\n  iters: 10\n  warmup_steps: 10\n"))


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    sub = tmp_path / "ws"
    sub.mkdir()
    cfg = load_config(write(sub, "paths:\n  base_model: models/base\n"))
    assert cfg.paths.base_model == sub.resolve() / "models" / "base"
    assert cfg.paths.state_dir == sub.resolve() / "state"  # defaults too


def test_profiles_merge_over_top_level(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "training:\n  iters: 500\n  batch_size: 2\nprofiles:\n  qwen:\n    training: {iters: 800}\n",
    )
    assert load_config(p).training.iters == 500
    cfg = load_config(p, "qwen")
    assert (cfg.training.iters, cfg.training.batch_size, cfg.profile) == (800, 2, "qwen")
    with pytest.raises(ConfigError, match=r"Unknown profile 'gemma' .*profiles: qwen"):
        load_config(p, "gemma")


def test_missing_and_unparseable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="line 3, column 1 is not valid YAML"):
        load_config(write(tmp_path, "training:\n  iters: [1,\n"))


def test_lookup_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NIGHTSHIFT_CONFIG", str(tmp_path / "env.yaml"))
    monkeypatch.setenv("NIGHTSHIFT_PROFILE", "qwen")
    assert resolve_config_path("cli.yaml") == Path("cli.yaml")
    assert resolve_config_path(None) == tmp_path / "env.yaml"
    assert resolve_profile(None) == "qwen" and resolve_profile("gemma4") == "gemma4"
    monkeypatch.delenv("NIGHTSHIFT_CONFIG")
    assert resolve_config_path(None).name == "nightshift.yaml"


@pytest.mark.parametrize("name", ["demo.yaml", "gemma4-31b.yaml", "rank64-cosine.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    path = Path(__file__).resolve().parents[2] / "configs" / name
    cfg = load_config(path)
    assert cfg.training.iters >= 1


def test_gemma4_example_matches_the_documented_recipe() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "gemma4-31b.yaml")
    t = cfg.training
    assert (t.lora.rank, t.lora.effective_scale, t.lora.layers) == (16, 10.0, 16)
    assert (t.learning_rate, t.iters, t.batch_size, t.max_seq_len_tokens, t.grad_checkpoint) == (5e-6, 500, 1, 2048, True)


def test_rank64_example() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "rank64-cosine.yaml")
    t = cfg.training
    assert (t.lora.rank, t.lora.alpha, t.lora.effective_scale, t.lora.dropout) == (64, 128, 2.0, 0.05)
    assert (t.grad_accumulation, t.iters, t.lr_schedule, t.learning_rate, t.warmup_steps) == (16, 800, "cosine", 3e-6, 80)


def test_snapshot_is_json_ready(tmp_path: Path) -> None:
    import json

    cfg = config_from_dict({}, base_dir=tmp_path)
    assert json.loads(json.dumps(cfg.to_dict()))["training"]["lora"]["rank"] == 8
