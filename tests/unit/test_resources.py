"""daemon.resources: memory and disk estimates with explicit numbers, pmset parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import resources
from daemon.resources import (
    GB,
    ModelShape,
    context_length,
    estimate_run_disk,
    estimate_training_memory,
    format_bytes,
    lora_parameter_count,
    parse_power,
    parse_thermal,
)

# Gemma 4 31B's text tower, as its config.json nests it under text_config.
GEMMA4_31B = {
    "model_type": "gemma4",
    "vision_config": {"hidden_size": 1152},
    "text_config": {
        "num_hidden_layers": 60,
        "hidden_size": 5376,
        "intermediate_size": 21504,
        "num_attention_heads": 32,
        "num_key_value_heads": 16,
        "head_dim": 256,
        "vocab_size": 262144,
        "max_position_embeddings": 262144,
    },
}
TINY = ModelShape(
    num_layers=2,
    hidden_size=32,
    intermediate_size=64,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    vocab_size=100,
    context_tokens=512,
)


def test_shape_reads_text_config_of_vision_language_models() -> None:
    shape = ModelShape.from_config(GEMMA4_31B)
    assert shape == ModelShape(60, 5376, 21504, 32, 16, 256, 262144, 262144)
    assert context_length(GEMMA4_31B) == 262144


def test_shape_defaults_and_missing_fields() -> None:
    shape = ModelShape.from_config({"num_hidden_layers": 4, "hidden_size": 256})
    assert shape == ModelShape(4, 256, 1024, 2, 2, 128, 32000, None)
    assert ModelShape.from_config({"hidden_size": 256}) is None
    assert context_length({"n_positions": 1024}) == 1024


def test_lora_parameter_count_by_hand() -> None:
    # q: 32+32, k,v: 2*(32+16), o: 32+32, gate/up/down: 3*(32+64) = 64+96+64+288 = 512 per rank
    assert lora_parameter_count(TINY, rank=4, lora_layers=1) == 4 * 512
    assert lora_parameter_count(TINY, rank=4, lora_layers=-1) == 2 * 4 * 512
    assert lora_parameter_count(TINY, rank=4, lora_layers=99) == 2 * 4 * 512


def test_memory_estimate_matches_published_gemma4_run() -> None:
    """Gemma 4 31B bf16 (58 GB), rank 16 on 16 layers, 2048 tokens, batch 1, checkpointing: 64.1 GB reported."""
    shape = ModelShape.from_config(GEMMA4_31B)
    assert shape is not None
    est = estimate_training_memory(
        shape, weights_bytes=58 * GB, rank=16, lora_layers=16, batch_size=1, seq_len_tokens=2048, grad_checkpoint=True
    )
    assert est.logits_bytes == 2048 * 262144 * 10
    assert est.total_bytes == pytest.approx(66.45e9, rel=1e-3)
    assert 64.1e9 < est.total_bytes < 64.1e9 * 1.1


def test_memory_estimate_parts_by_hand() -> None:
    s, b = 16, 2
    est = estimate_training_memory(
        TINY, weights_bytes=1000, rank=4, lora_layers=1, batch_size=b, seq_len_tokens=s, grad_checkpoint=False
    )
    block = s * b * (17 * 32 + 8 * 64) + 5 * 4 * s * s * b
    assert est.activation_bytes == block  # only the one adapted block keeps activations
    assert est.lora_bytes == 4 * 512 * 16
    assert est.logits_bytes == b * s * 100 * 10
    assert est.total_bytes == 1000 + block + 4 * 512 * 16 + b * s * 100 * 10 + resources.RUNTIME_OVERHEAD_BYTES
    ckpt = estimate_training_memory(
        TINY, weights_bytes=1000, rank=4, lora_layers=2, batch_size=b, seq_len_tokens=s, grad_checkpoint=True
    )
    assert ckpt.activation_bytes == 2 * 2 * s * b * 32 + block


def test_disk_estimate() -> None:
    est = estimate_run_disk(lora_params=1_000_000, iters=1000, save_every=100, fuse=False, weights_bytes=5 * GB)
    assert (est.adapter_bytes, est.checkpoint_bytes, est.release_bytes, est.fused_bytes) == (
        4_000_000,
        40_000_000,
        4_000_000,
        0,
    )
    assert est.total_bytes == 48_000_000 + resources.LOG_AND_METADATA_BYTES
    fused = estimate_run_disk(lora_params=1_000_000, iters=1000, save_every=100, fuse=True, weights_bytes=5 * GB)
    assert fused.total_bytes == est.total_bytes + 5 * GB


PMSET_BATT_AC = "Now drawing from 'AC Power'\n -InternalBattery-0 (id=4653155)\t100%; charged; 0:00 remaining present: true\n"
PMSET_BATT_BATTERY = "Now drawing from 'Battery Power'\n -InternalBattery-0 (id=4653155)\t62%; discharging; 4:12 remaining present: true\n"
PMSET_BATT_DESKTOP = "Now drawing from 'AC Power'\n"
PMSET_THERM_OK = (
    "Note: No thermal warning level has been recorded\n"
    "Note: No performance warning level has been recorded\n"
    "Note: No CPU power status has been recorded\n"
)
PMSET_THERM_THROTTLED = (
    "Note: No thermal warning level has been recorded\n"
    "Note: No performance warning level has been recorded\n"
    "2020-11-24 13:10:40 +0100 CPU Power notify\n"
    "\tCPU_Scheduler_Limit \t= 100\n\tCPU_Available_CPUs \t= 8\n\tCPU_Speed_Limit \t= 35\n"
)


def test_parse_power() -> None:
    assert parse_power(PMSET_BATT_AC) == resources.PowerState(True, 100)
    assert parse_power(PMSET_BATT_BATTERY) == resources.PowerState(False, 62)
    assert parse_power(PMSET_BATT_DESKTOP) == resources.PowerState(True, None)


def test_parse_thermal() -> None:
    ok = parse_thermal(PMSET_THERM_OK)
    assert ok == resources.ThermalState(None, None, None)
    assert not ok.throttled
    hot = parse_thermal(PMSET_THERM_THROTTLED)
    assert hot.cpu_speed_limit_pct == 35
    assert hot.throttled
    assert parse_thermal("Thermal warning level set to 2\n").thermal_warning_level == 2


def test_read_pmset_is_none_off_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources.sys, "platform", "linux")
    assert resources.read_pmset("batt") is None


def test_free_disk_of_a_path_not_created_yet(tmp_path: Path) -> None:
    assert resources.free_disk_bytes(tmp_path / "state" / "runs") == resources.shutil.disk_usage(tmp_path).free


def test_memory_info_is_plausible() -> None:
    info = resources.memory_info()
    assert info.total_bytes > 100 * 10**6
    assert info.available_bytes is None or 0 < info.available_bytes <= info.total_bytes


def test_format_bytes() -> None:
    assert format_bytes(66_450_000_000) == "66.5 GB"
    assert format_bytes(340_000_000) == "340.0 MB"
    assert format_bytes(512) == "512 B"
