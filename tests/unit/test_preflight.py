"""daemon.preflight: every check's failure on a bad fixture, and its passing case.

Models are built here: ``config.json`` plus safetensors files written by hand
(8-byte header length, JSON header, sparse data) for the file checks, and a
real tiny llama trained by mlx-lm in a child process for the smoke test.
"""

from __future__ import annotations

import http.server
import json
import math
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from daemon import resources
from daemon.commands.preflight_cmd import preflight
from daemon.config import Config, load_config
from daemon.lock import RunLock
from daemon.preflight import CheckResult, Level, PreflightReport, run_preflight
from daemon.preflight import system as system_checks
from daemon.preflight.model import read_safetensors_header
from daemon.preflight.smoke import judge_smoke
from daemon.preflight.template import TemplateTokenizer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "preflight"
DATASETS = FIXTURES / "datasets"
MODELS = FIXTURES / "models"

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
NO_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" + CHATML
)
LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 320,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}
SUITE = "categories:\n  - name: math\n    kind: numeric\n    items:\n      - {id: a, prompt: 'what is 99 plus 99', gold: '198'}\n"
DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2, "U32": 4}
BIG = resources.MemoryInfo(total_bytes=64 * resources.GB, available_bytes=32 * resources.GB)


# ---------------------------------------------------------------- builders


def llama_tensors(cfg: dict[str, Any]) -> dict[str, tuple[str, list[int]]]:
    """Tensor names and shapes of mlx-lm's llama for ``cfg`` (float32)."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    out: dict[str, tuple[str, list[int]]] = {"model.embed_tokens.weight": ("F32", [v, h]), "model.norm.weight": ("F32", [h])}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        out |= {
            f"{p}.self_attn.q_proj.weight": ("F32", [h, h]),
            f"{p}.self_attn.k_proj.weight": ("F32", [kv, h]),
            f"{p}.self_attn.v_proj.weight": ("F32", [kv, h]),
            f"{p}.self_attn.o_proj.weight": ("F32", [h, h]),
            f"{p}.mlp.gate_proj.weight": ("F32", [i, h]),
            f"{p}.mlp.up_proj.weight": ("F32", [i, h]),
            f"{p}.mlp.down_proj.weight": ("F32", [h, i]),
            f"{p}.input_layernorm.weight": ("F32", [h]),
            f"{p}.post_attention_layernorm.weight": ("F32", [h]),
        }
    return out


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], *, short_by: int = 0) -> None:
    """A safetensors file with a real header and sparse zero data, ``short_by`` bytes truncated."""
    header: dict[str, Any] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        fh.truncate(8 + len(blob) + offset - short_by)


def make_model(
    root: Path,
    tokenizer_dir: Path,
    *,
    config: dict[str, Any] | None = None,
    shards: int = 1,
    template: str | None = CHATML,
) -> Path:
    """A model directory: config.json, tokenizer files and hand-written weights (with an index)."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = config if config is not None else LLAMA
    (root / "config.json").write_text(json.dumps(cfg))
    shutil.copy(tokenizer_dir / "tokenizer.json", root)
    tok_cfg = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    if template is None:
        tok_cfg.pop("chat_template")
    else:
        tok_cfg["chat_template"] = template
    (root / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    tensors = llama_tensors(LLAMA)
    names = list(tensors)
    weight_map: dict[str, str] = {}
    for k in range(shards):
        shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors" if shards > 1 else "model.safetensors"
        part = {n: tensors[n] for n in names[k::shards]}
        write_safetensors(root / shard, part)
        weight_map |= {n: shard for n in part}
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return root


def make_workspace(
    root: Path,
    model_dir: Path,
    *,
    dataset: Path = DATASETS / "good",
    train: Path | None = None,
    suite: str | Path = SUITE,
    **sections: dict[str, Any],
) -> Config:
    """A workspace (config YAML, dataset, suite) around ``model_dir``; ``sections`` override the YAML."""
    data = root / "data"
    data.mkdir(parents=True)
    for name in ("train.jsonl", "valid.jsonl"):
        if (dataset / name).exists():
            shutil.copy(dataset / name, data / name)
    if train is not None:
        shutil.copy(train, data / "train.jsonl")
    if isinstance(suite, Path):
        for f in suite.parent.iterdir():
            if f.suffix in (".yaml", ".jsonl") and f.name not in ("train.jsonl", "valid.jsonl"):
                shutil.copy(f, root / f.name)
        suite_name = suite.name
    else:
        (root / "suite.yaml").write_text(suite)
        suite_name = "suite.yaml"
    raw: dict[str, Any] = {
        "paths": {"base_model": str(model_dir), "dataset": "data", "eval_suite": suite_name, "state_dir": "state"},
        "training": {"lora": {"layers": 2, "rank": 4}, "iters": 20, "batch_size": 2, "max_seq_len_tokens": 256, "save_every": 10},
        "preflight": {"min_train_examples": 4, "min_valid_examples": 1},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    (root / "nightshift.yaml").write_text(yaml.safe_dump(raw))
    return load_config(root / "nightshift.yaml")


def by_name(report: PreflightReport) -> dict[str, CheckResult]:
    return {c.name: c for c in report.checks}


def only(report: PreflightReport, name: str) -> tuple[Level, str]:
    matches = [c for c in report.checks if c.name == name]
    assert len(matches) == 1, [c.name for c in report.checks]
    return matches[0].level, matches[0].message


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer trained on the fixture texts, with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = tmp_path_factory.mktemp("tokenizer")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        show_progress=False,
        vocab_size=300,
        special_tokens=["<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # A fixed corpus (not every fixture file) keeps token counts stable when fixtures are added.
    texts = [line for p in sorted((DATASETS / "good").glob("*.jsonl")) for line in p.read_text().splitlines()]
    tok.train_from_iterator(texts * 3 + ["system user assistant"] * 10, trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|im_end|>",
                "pad_token": "<pad>",
                "chat_template": CHATML,
            }
        )
    )
    return out


@pytest.fixture
def model_dir(tmp_path: Path, tokenizer_dir: Path) -> Path:
    return make_model(tmp_path / "model", tokenizer_dir)


@pytest.fixture
def big_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin the memory probe so that results do not depend on the test machine."""
    monkeypatch.setattr(resources, "memory_info", lambda: BIG)


@pytest.fixture(scope="session")
def smoke_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A real tiny llama, trained briefly by mlx-lm in a child process."""
    from daemon.worker.env import worker_env

    out = tmp_path_factory.mktemp("smoke_model")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, out)
    subprocess.run(
        [sys.executable, str(FIXTURES / "make_tiny_model.py"), str(out), str(DATASETS / "good" / "train.jsonl")],
        check=True,
        env=worker_env(),
        capture_output=True,
        timeout=300,
    )
    return out


# ---------------------------------------------------------------- the passing case


EXPECTED_CHECKS = [
    "config",
    "model.config",
    "model.type",
    "model.weights",
    "model.quantization",
    "model.tokenizer",
    "model.chat_template",
    "suite",
    "suite.guards",
    "dataset.format",
    "dataset.size",
    "dataset.duplicates",
    "dataset.overlap",
    "dataset.contamination",
    "dataset.tokens",
    "resources.disk",
    "resources.memory",
    "resources.power",
    "resources.thermal",
    "resources.lock",
    "schedule",
    "serving",
]


def test_good_workspace_passes_every_check(
    tmp_path: Path, model_dir: Path, big_machine: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "read_pmset", lambda what: PMSET[what])
    cfg = make_workspace(tmp_path, model_dir)
    report = run_preflight(cfg)
    assert [c.name for c in report.checks] == EXPECTED_CHECKS
    # a one-item eval suite cannot guard any margin: the gate's check warns, nothing fails
    assert [c.name for c in report.checks if c.level is not Level.OK] == ["suite.guards"]
    assert report.ok and report.failures == [] and report.smoke is None
    checks = by_name(report)
    assert checks["config"].message == "warmup 0 < 20 iters; LoRA on 2 of 2 layers; 256 <= 512 context tokens"
    assert checks["model.type"].message.startswith("model_type llama is supported by mlx-lm 0.32")
    assert checks["model.weights"].message == "1 shard(s), 115.3 kB of tensors, headers complete"
    assert checks["model.quantization"].message == "unquantized F32 weights: training is LoRA"
    assert checks["model.chat_template"].message == "chat template from tokenizer_config.json"
    assert checks["dataset.format"].message == "every line is valid chat JSON (train.jsonl 12, valid.jsonl 3 examples)"
    assert checks["dataset.contamination"].message == "no training prompt matches any of 1 eval prompts"
    assert checks["dataset.tokens"].message.startswith("0 of 15 examples (0.0%) exceed 256 tokens")
    assert checks["resources.power"].message == "on AC power"
    assert all(c.duration_s >= 0 for c in report.checks)


def test_preflight_never_imports_mlx_or_transformers(tmp_path: Path, model_dir: Path) -> None:
    cfg = make_workspace(tmp_path, model_dir)
    code = (
        "import json, sys\n"
        "from daemon.config import load_config\n"
        "from daemon.preflight import run_preflight\n"
        f"report = run_preflight(load_config({str(cfg.source)!r}))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'transformers', 'torch'))\n"
        "print(json.dumps({'ok': report.ok, 'heavy': heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.splitlines()[-1])["heavy"] == []


def test_bad_paths_never_crash(tmp_path: Path) -> None:
    (tmp_path / "nightshift.yaml").write_text("paths: {}\ntraining: {iters: 5}\n")
    report = run_preflight(load_config(tmp_path / "nightshift.yaml"))
    assert not report.ok
    assert only(report, "model.config") == (
        Level.FAIL,
        f"model directory {tmp_path / 'models' / 'base'} does not exist; fix paths.base_model",
    )
    names = [c.name for c in report.failures]
    assert "dataset.files" in names and "suite" in names


def test_a_check_that_raises_is_reported_as_failed(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(cfg: Config) -> list[CheckResult]:
        raise RuntimeError("boom")

    monkeypatch.setattr(system_checks, "check_serving", boom)
    report = run_preflight(make_workspace(tmp_path, model_dir))
    level, message = only(report, "serving")
    assert level is Level.FAIL
    assert message.startswith("check crashed in test_preflight.py line ") and message.endswith(": RuntimeError: boom")
    assert "resources.lock" in by_name(report)  # the checks before it still ran


# ---------------------------------------------------------------- config


def test_config_inconsistent_with_the_model(tmp_path: Path, model_dir: Path) -> None:
    shutil.copytree(model_dir, tmp_path / "ws" / "model")
    (tmp_path / "ws" / "data").mkdir()
    shutil.copy(FIXTURES / "configs" / "model_mismatch.yaml", tmp_path / "ws" / "nightshift.yaml")
    cfg = load_config(tmp_path / "ws" / "nightshift.yaml")
    report = run_preflight(cfg)
    result = by_name(report)["config"]
    assert result.level is Level.FAIL
    assert result.details == (
        "training.lora.layers (8) exceeds the model's 2 layers; set it to 2 or less (-1 adapts all)",
        "training.max_seq_len_tokens (4096) exceeds the model's context of 512 tokens; set it to 512 or less",
    )
    assert result.message == result.details[0] + " (+1 more)"


def test_config_checks_the_schedule_and_accumulation(model_dir: Path, tmp_path: Path) -> None:
    """load_config rejects these itself; preflight re-checks configs built in code."""
    import dataclasses

    from daemon.preflight.model import check_config_consistency

    cfg = make_workspace(tmp_path, model_dir)
    bad = dataclasses.replace(
        cfg, training=dataclasses.replace(cfg.training, warmup_steps=20, grad_accumulation=0)
    )
    (result,) = check_config_consistency(bad, LLAMA)
    assert result.level is Level.FAIL
    assert result.details == (
        "training.grad_accumulation must be >= 1, got 0",
        "training.warmup_steps (20) must be below training.iters (20); lower the warmup or raise iters",
    )


def test_config_counts_layers_in_text_config(model_dir: Path, tmp_path: Path) -> None:
    from daemon.preflight.model import check_config_consistency

    cfg = make_workspace(tmp_path, model_dir, training={"lora": {"layers": 4, "rank": 4}})
    vlm = json.loads((MODELS / "gemma4_vlm_config.json").read_text())
    (result,) = check_config_consistency(cfg, vlm)
    assert (result.level, result.message) == (
        Level.FAIL,
        "training.lora.layers (4) exceeds the model's 2 layers; set it to 2 or less (-1 adapts all)",
    )


def test_cli_reports_three_config_errors_at_once(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "configs" / "three_errors.yaml", tmp_path / "three_errors.yaml")
    result = CliRunner().invoke(preflight, ["-c", str(tmp_path / "three_errors.yaml")])
    assert result.exit_code == 1
    assert "3 problem(s)" in result.output
    assert "training.iters: must be an integer in [1, 1e+07], got 0" in result.output
    assert "training.lora.rank: must be an integer in [1, 4096], got 'big'" in result.output
    assert "training.warmup: unknown key" in result.output


# ---------------------------------------------------------------- model


def test_missing_shard(tmp_path: Path, tokenizer_dir: Path, big_machine: None) -> None:
    model = make_model(tmp_path / "model", tokenizer_dir, shards=3)
    (model / "model-00002-of-00003.safetensors").unlink()
    report = run_preflight(make_workspace(tmp_path / "ws", model))
    level, message = only(report, "model.weights")
    assert level is Level.FAIL
    assert message == (
        "model-00002-of-00003.safetensors is missing (7 tensors listed in model.safetensors.index.json); "
        "finish or repeat the download"
    )


def test_truncated_shard(tmp_path: Path, tokenizer_dir: Path) -> None:
    model = make_model(tmp_path / "model", tokenizer_dir)
    write_safetensors(model / "model.safetensors", llama_tensors(LLAMA), short_by=5000)
    report = run_preflight(make_workspace(tmp_path / "ws", model))
    assert only(report, "model.weights") == (
        Level.FAIL,
        "model.safetensors is truncated: its header describes 115.3 kB of tensors but the file holds 110.3 kB; "
        "re-download it",
    )


def test_corrupt_header_and_stray_shard(tmp_path: Path, tokenizer_dir: Path) -> None:
    model = make_model(tmp_path / "model", tokenizer_dir, shards=2)
    (model / "model-00001-of-00002.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    write_safetensors(model / "model-old.safetensors", {"x": ("F32", [2])})
    report = run_preflight(make_workspace(tmp_path / "ws", model))
    result = by_name(report)["model.weights"]
    assert result.level is Level.FAIL
    assert result.details == (
        "model-00001-of-00002.safetensors has a corrupt header (says 1000000000000 header bytes, file is 10 bytes); "
        "re-download it",
        "model-old.safetensors is not in model.safetensors.index.json but mlx-lm loads every model*.safetensors; "
        "delete it if it is left over from another download",
    )


def test_no_weights(tmp_path: Path, tokenizer_dir: Path) -> None:
    model = make_model(tmp_path / "model", tokenizer_dir)
    (model / "model.safetensors").unlink()
    (model / "model.safetensors.index.json").unlink()
    (model / "pytorch_model.bin").write_bytes(b"\0")
    report = run_preflight(make_workspace(tmp_path / "ws", model))
    assert only(report, "model.weights") == (
        Level.FAIL,
        f"no model*.safetensors in {model} (found pytorch_model.bin: convert with mlx_lm.convert)",
    )


def test_header_reader_reads_no_tensor_data(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"w": ("BF16", [1024, 1024, 1024])})  # 2 GiB, sparse
    header = read_safetensors_header(path)
    assert header.data_bytes == 2 * 1024**3 and not header.truncated
    assert header.tensors["w"]["shape"] == [1024, 1024, 1024]


def model_with_config(tmp_path: Path, tokenizer_dir: Path, config_file: str, **sections: Any) -> PreflightReport:
    config = json.loads((MODELS / config_file).read_text())
    model = make_model(tmp_path / "model", tokenizer_dir, config=config)
    return run_preflight(make_workspace(tmp_path / "ws", model, **sections))


def test_unsupported_model_type(tmp_path: Path, tokenizer_dir: Path) -> None:
    report = model_with_config(tmp_path, tokenizer_dir, "unknown_type_config.json")
    level, message = only(report, "model.type")
    assert level is Level.FAIL
    assert message.startswith("model_type frobnicator is not supported by mlx-lm 0.32")
    assert message.endswith("(no mlx_lm/models/frobnicator.py); upgrade mlx-lm or pick a supported model")


def test_remapped_model_type_is_supported(tmp_path: Path, tokenizer_dir: Path) -> None:
    report = model_with_config(tmp_path, tokenizer_dir, "mistral_remapped_config.json")
    level, message = only(report, "model.type")
    assert level is Level.OK
    assert message.endswith(" (as llama)")


def test_gemma4_vlm_loads_its_text_tower(tmp_path: Path, tokenizer_dir: Path) -> None:
    report = model_with_config(tmp_path, tokenizer_dir, "gemma4_vlm_config.json")
    level, message = only(report, "model.type")
    assert level is Level.OK
    assert message.startswith("gemma4 is a vision-language checkpoint: mlx-lm 0.32")
    assert message.endswith(
        "loads its text tower and drops the vision/audio weights, so training and evaluation are text-only"
    )
    assert by_name(report)["config"].message.startswith("warmup 0 < 20 iters; LoRA on 2 of 2 layers")


def test_gemma4_vlm_with_fuse_warns_about_a_text_only_release(tmp_path: Path, tokenizer_dir: Path) -> None:
    report = model_with_config(tmp_path, tokenizer_dir, "gemma4_vlm_config.json", promotion={"fuse": True})
    level, message = only(report, "model.type")
    assert level is Level.WARN
    assert message.endswith(
        "promotion.fuse would write a text-only model: serve the adapter with mlx-vlm instead or set promotion.fuse: false"
    )


def test_vlm_mlx_lm_cannot_load_needs_mlx_vlm(tmp_path: Path, tokenizer_dir: Path) -> None:
    report = model_with_config(tmp_path, tokenizer_dir, "llava_next_config.json")
    level, message = only(report, "model.type")
    assert level is Level.FAIL
    assert "llava_next is a vision-language model mlx-lm 0.32" in message
    assert message.endswith(
        "(no mlx_lm/models/llava_next.py); it needs mlx-vlm, which nightshift does not drive: "
        "use its text-only variant or a model mlx-lm supports"
    )


def test_quantized_model_is_qlora(tmp_path: Path, tokenizer_dir: Path) -> None:
    report = model_with_config(tmp_path, tokenizer_dir, "quantized_llama_config.json")
    assert only(report, "model.quantization") == (
        Level.OK,
        "quantized (4-bit affine, group size 64): training is QLoRA (LoRA on a quantized base)",
    )


def test_broken_config_json(tmp_path: Path, tokenizer_dir: Path) -> None:
    model = make_model(tmp_path / "model", tokenizer_dir)
    (model / "config.json").write_text('{"model_type": "llama",\n  "hidden_size": }')
    report = run_preflight(make_workspace(tmp_path / "ws", model))
    assert only(report, "model.config") == (
        Level.FAIL,
        f"{model / 'config.json'} line 2 is not valid JSON (Expecting value); re-download the model",
    )
    assert only(report, "config")[0] is Level.WARN
    assert only(report, "resources.memory") == (Level.WARN, "not estimated: the model's config.json is unreadable")


def test_missing_tokenizer(tmp_path: Path, tokenizer_dir: Path) -> None:
    model = make_model(tmp_path / "model", tokenizer_dir)
    (model / "tokenizer.json").unlink()
    report = run_preflight(make_workspace(tmp_path / "ws", model))
    assert only(report, "model.tokenizer") == (
        Level.FAIL,
        f"no tokenizer in {model} (tokenizer.json, tokenizer.model, *.tiktoken or vocab.json+merges.txt); "
        "copy the tokenizer files from the original model",
    )
    level, message = only(report, "dataset.tokens")
    assert level is Level.WARN and message.startswith("token lengths not measured:")


def test_corrupt_tokenizer_json(tmp_path: Path, tokenizer_dir: Path) -> None:
    model = make_model(tmp_path / "model", tokenizer_dir)
    (model / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "nonsense"}}')
    report = run_preflight(make_workspace(tmp_path / "ws", model))
    level, message = only(report, "dataset.tokens")
    assert level is Level.FAIL
    assert message.startswith(f"{model / 'tokenizer.json'} cannot be loaded (")
    assert message.endswith("); re-download the tokenizer files")


def test_missing_and_broken_chat_template(tmp_path: Path, tokenizer_dir: Path) -> None:
    model = make_model(tmp_path / "a", tokenizer_dir, template=None)
    report = run_preflight(make_workspace(tmp_path / "ws_a", model))
    assert only(report, "model.chat_template") == (
        Level.FAIL,
        f"no chat template in {model} (chat_template.jinja, chat_template.json or tokenizer_config.json "
        "chat_template); use the instruct/-it checkpoint or add its chat_template.jinja",
    )
    model = make_model(tmp_path / "b", tokenizer_dir)
    (model / "chat_template.jinja").write_text("{% for m in messages %}\n{{ m['content'] }\n{% endfor %}")
    report = run_preflight(make_workspace(tmp_path / "ws_b", model))
    level, message = only(report, "model.chat_template")
    assert level is Level.FAIL
    assert message.startswith("chat_template.jinja: template syntax error at line 2:")


# ---------------------------------------------------------------- dataset


def dataset_report(tmp_path: Path, model_dir: Path, train: str | None = None, **kwargs: Any) -> PreflightReport:
    return run_preflight(
        make_workspace(tmp_path, model_dir, train=DATASETS / train if train else None, **kwargs)
    )


def test_dataset_broken_line(tmp_path: Path, model_dir: Path) -> None:
    report = dataset_report(tmp_path, model_dir, "broken_json.jsonl")
    assert only(report, "dataset.invalid_json") == (
        Level.FAIL,
        "train.jsonl line 2: not valid JSON (Expecting ',' delimiter at column 92); fix or delete the line",
    )
    assert only(report, "dataset.not_an_object")[0] is Level.FAIL
    assert "dataset.format" not in by_name(report)


def test_dataset_leaked_im_start_fails_with_every_line(tmp_path: Path, model_dir: Path) -> None:
    report = dataset_report(tmp_path, model_dir, "leaked_tokens.jsonl")
    result = by_name(report)["dataset.leaked_token"]
    assert result.level is Level.FAIL
    assert result.message == (
        "train.jsonl line 1: message 1 (user) contains chat-template tokens <|im_start|>, <|im_end|> "
        "(ChatML (Qwen, Hermes, Phi-4)); strip with `nightshift data clean` so only the model's own template adds them"
        " (+3 more)"
    )
    assert [d.split(":")[0] for d in result.details] == [
        "train.jsonl line 1",
        "train.jsonl line 2",
        "train.jsonl line 3",
        "train.jsonl line 3",
    ]


def test_dataset_empty_assistant_turn(tmp_path: Path, model_dir: Path) -> None:
    report = dataset_report(tmp_path, model_dir, "empty_assistant.jsonl")
    assert only(report, "dataset.empty_assistant") == (
        Level.FAIL,
        "train.jsonl line 2: the final assistant message (message 2) is empty; write the reply or drop the example",
    )


def test_dataset_typed_blocks_warn_and_images_fail(tmp_path: Path, model_dir: Path) -> None:
    report = dataset_report(tmp_path, model_dir, "typed_blocks.jsonl")
    level, message = only(report, "dataset.typed_blocks")
    assert level is Level.WARN
    assert message.startswith("train.jsonl line 1: message 1 (user) uses typed content blocks")
    assert only(report, "dataset.non_text_block") == (
        Level.FAIL,
        "train.jsonl line 2: message 1 (user) has a 'image_url' content block; nightshift trains on text only: "
        "remove the block or the example",
    )


def test_dataset_wrong_role_order(tmp_path: Path, model_dir: Path) -> None:
    report = dataset_report(tmp_path, model_dir, "role_order.jsonl")
    result = by_name(report)["dataset.role_order"]
    assert result.level is Level.FAIL
    assert len(result.details) == 4
    assert result.message.startswith("train.jsonl line 1: message 2 (user) follows another user message")
    assert only(report, "dataset.unknown_role")[0] is Level.FAIL
    assert only(report, "dataset.no_final_assistant")[0] is Level.FAIL


def test_dataset_blank_line_and_think_block_warn(tmp_path: Path, model_dir: Path) -> None:
    report = dataset_report(tmp_path, model_dir, "blank_line.jsonl")
    assert only(report, "dataset.blank_line") == (
        Level.WARN,
        "train.jsonl line 2: blank line; delete it (mlx-lm's own loader fails on it)",
    )
    report = dataset_report(tmp_path / "t", model_dir, "think_block.jsonl")
    assert only(report, "dataset.think_block")[0] is Level.WARN


def test_dataset_duplicates(tmp_path: Path, model_dir: Path) -> None:
    report = dataset_report(tmp_path, model_dir, "duplicates.jsonl")
    result = by_name(report)["dataset.duplicates"]
    assert result.level is Level.WARN
    assert result.details == (
        "train.jsonl line 3 repeats train.jsonl line 1 exactly; delete one (a duplicate weighs an example twice)",
        "train.jsonl line 4 repeats train.jsonl line 1 exactly; delete one (a duplicate weighs an example twice)",
    )


def test_dataset_train_valid_overlap(tmp_path: Path, model_dir: Path) -> None:
    report = dataset_report(tmp_path, model_dir, dataset=DATASETS / "overlap")
    assert only(report, "dataset.overlap") == (
        Level.WARN,
        "valid.jsonl line 2 is also train.jsonl line 2; remove it from one file "
        "(validation loss would look better than it is)",
    )


def test_dataset_eval_contamination(tmp_path: Path, model_dir: Path) -> None:
    report = dataset_report(
        tmp_path, model_dir, dataset=DATASETS / "contamination", suite=DATASETS / "contamination" / "suite.yaml"
    )
    result = by_name(report)["dataset.contamination"]
    assert result.level is Level.FAIL
    assert result.details == (
        "train.jsonl line 2: its prompt is eval item geography/capital-fr's prompt; remove the example "
        "(training on eval prompts makes the promotion gate meaningless)",
        "train.jsonl line 3: its prompt is eval item coding/fizzbuzz's prompt; remove the example "
        "(training on eval prompts makes the promotion gate meaningless)",
    )


def test_dataset_missing_eval_suite(tmp_path: Path, model_dir: Path) -> None:
    cfg = make_workspace(tmp_path, model_dir)
    (tmp_path / "suite.yaml").unlink()
    report = run_preflight(cfg)
    level, message = only(report, "suite")
    assert level is Level.FAIL
    assert message.startswith(f"Eval suite file not found: {tmp_path / 'suite.yaml'}. Set paths.eval_suite")
    assert only(report, "dataset.contamination") == (
        Level.WARN,
        "not checked: the eval suite did not load (see suite)",
    )


def test_a_binary_items_file_is_named_not_the_suite(tmp_path: Path, model_dir: Path) -> None:
    """A binary items file was blamed on suite.yaml ("eval suite suite.yaml cannot be read")."""
    suite = "categories:\n  - name: a\n    kind: label\n    labels: [x, y]\n    items_file: items.jsonl\n"
    cfg = make_workspace(tmp_path, model_dir, suite=suite)
    (tmp_path / "items.jsonl").write_bytes(b"\x1f\x8b\x08\x00binary\xff\xfe")
    failed = [c for c in run_preflight(cfg).checks if c.level is Level.FAIL]
    texts = [" ".join([c.message, *c.details]) for c in failed]
    assert any(f"{tmp_path / 'items.jsonl'} is not UTF-8 text" in t for t in texts), texts


def test_dataset_too_few_examples(tmp_path: Path, model_dir: Path) -> None:
    report = dataset_report(
        tmp_path, model_dir, dataset=DATASETS / "too_few", preflight={"min_train_examples": 10, "min_valid_examples": 1}
    )
    result = by_name(report)["dataset.size"]
    assert result.level is Level.FAIL
    assert result.details == (
        "train.jsonl has 3 usable examples, fewer than preflight.min_train_examples (10); "
        "add data or lower preflight.min_train_examples",
        "valid.jsonl has 1 usable examples, fewer than training.batch_size (2); mlx-lm needs at least one full batch",
    )


def test_dataset_missing_file(tmp_path: Path, model_dir: Path) -> None:
    cfg = make_workspace(tmp_path, model_dir)
    (tmp_path / "data" / "valid.jsonl").unlink()
    report = run_preflight(cfg)
    assert only(report, "dataset.files") == (
        Level.FAIL,
        f"{tmp_path / 'data' / 'valid.jsonl'} is missing; paths.dataset must hold train.jsonl and valid.jsonl",
    )


def test_dataset_template_refuses_examples(tmp_path: Path, tokenizer_dir: Path) -> None:
    model = make_model(tmp_path / "model", tokenizer_dir, template=NO_SYSTEM_TEMPLATE)
    report = run_preflight(make_workspace(tmp_path / "ws", model))
    assert only(report, "dataset.template") == (
        Level.FAIL,
        "train.jsonl line 1: the chat template refuses this example (System role not supported); fix it (+14 more)",
    )


def test_dataset_truncation_share_and_lost_answers(tmp_path: Path, model_dir: Path) -> None:
    tok = TemplateTokenizer(model_dir)
    rows = [json.loads(line) for line in (DATASETS / "good" / "train.jsonl").read_text().splitlines()]
    valid = [json.loads(line) for line in (DATASETS / "good" / "valid.jsonl").read_text().splitlines()]
    counts = sorted(tok.count([tok.render(r["messages"]) for r in rows + valid]))
    limit = counts[len(counts) // 2]
    over = sum(n > limit for n in counts)
    report = run_preflight(make_workspace(tmp_path / "a", model_dir, training={"max_seq_len_tokens": limit}))
    level, message = only(report, "dataset.tokens")
    assert level is Level.WARN
    assert message.startswith(f"{over} of 15 examples ({over / 15:.1%}) exceed {limit} tokens and will be truncated")
    assert message.endswith(
        "above preflight.max_truncated_share (5%): raise training.max_seq_len_tokens or split long examples"
    )

    report = run_preflight(make_workspace(tmp_path / "b", model_dir, training={"max_seq_len_tokens": 8}))
    level, message = only(report, "dataset.tokens")
    assert level is Level.WARN
    assert message.startswith("train.jsonl line 1: the prompt alone is ")
    assert "none of the answer fits in training.max_seq_len_tokens (8)" in message


def test_template_environment_matches_transformers() -> None:
    """``{% generation %}``, a non-escaping ``tojson`` and ``raise_exception`` behave as in transformers."""
    from daemon.errors import TemplateError
    from daemon.preflight.template import compile_template

    template = compile_template(
        "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}"
        "{% else %}{{ m.content | tojson }}{% endif %}{% endfor %}{{ bos_token }}"
    )
    messages = [{"role": "user", "content": "h\u00e9 <b>"}, {"role": "assistant", "content": "yo"}]
    assert template.render(messages=messages, bos_token="<s>") == '"h\u00e9 <b>"yo<s>'
    with pytest.raises(TemplateError, match="^no system$"):
        compile_template("{{ raise_exception('no system') }}").render()


# ---------------------------------------------------------------- resources


PMSET = {
    "batt": "Now drawing from 'AC Power'\n -InternalBattery-0 (id=1)\t100%; charged; 0:00 remaining present: true\n",
    "therm": "Note: No thermal warning level has been recorded\nNote: No performance warning level has been recorded\n",
}


def test_on_battery_and_throttled(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = {
        "batt": "Now drawing from 'Battery Power'\n -InternalBattery-0 (id=1)\t41%; discharging; 3:02 remaining present: true\n",
        "therm": "2024-01-01 CPU Power notify\n\tCPU_Scheduler_Limit \t= 100\n\tCPU_Speed_Limit \t= 60\n",
    }
    monkeypatch.setattr(resources, "read_pmset", lambda what: outputs[what])
    report = run_preflight(make_workspace(tmp_path, model_dir))
    assert only(report, "resources.power") == (
        Level.WARN,
        "running on battery at 41%; plug in the Mac before the night (macOS throttles or sleeps on battery)",
    )
    assert only(report, "resources.thermal") == (
        Level.WARN,
        "macOS reports thermal throttling (CPU speed limit 60%); training will be slower: give the Mac air or check the fans",
    )


def test_not_enough_memory(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "memory_info", lambda: resources.MemoryInfo(1 * resources.GB, 10**8))
    report = run_preflight(make_workspace(tmp_path, model_dir))
    level, message = only(report, "resources.memory")
    assert level is Level.FAIL
    assert message.startswith("training needs about 1.0 GB (weights 115.3 kB, activations ")
    assert message.endswith(
        "over 75% of this machine's 1.0 GB; lower training.batch_size or training.max_seq_len_tokens, "
        "set training.grad_checkpoint: true, or use a quantized model"
    )


def test_memory_free_now_only_warns(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "memory_info", lambda: resources.MemoryInfo(64 * resources.GB, 10**8))
    report = run_preflight(make_workspace(tmp_path, model_dir))
    level, message = only(report, "resources.memory")
    assert level is Level.WARN
    assert message.endswith("but only 100.0 MB is free now; close large apps before the night")


def test_not_enough_disk(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "free_disk_bytes", lambda path: 10**6)
    report = run_preflight(make_workspace(tmp_path, model_dir, promotion={"fuse": True}))
    level, message = only(report, "resources.disk")
    assert level is Level.FAIL
    assert message.startswith("the run writes about 64.2 MB (adapter 16.4 kB, 2 checkpoints 32.8 kB, release 16.4 kB, ")
    assert message.endswith(f"but only 1.0 MB is free under {tmp_path / 'state'}; free space or raise training.save_every")


def test_run_lock_held_by_someone_else(tmp_path: Path, model_dir: Path) -> None:
    cfg = make_workspace(tmp_path, model_dir)
    with RunLock(cfg.paths.state_dir) as lock:
        lock.set_run_id(41)
        report = run_preflight(cfg)
        assert only(report, "resources.lock") == (
            Level.FAIL,
            f"the run lock ({cfg.paths.state_dir / 'run.lock'}) is held by run 41, pid {__import__('os').getpid()}; "
            "wait for it (nightshift status) or stop it",
        )
        mine = run_preflight(cfg, holding_lock=True)
        assert only(mine, "resources.lock") == (Level.OK, "this run holds the run lock")


# ---------------------------------------------------------------- serving


class _Models(http.server.BaseHTTPRequestHandler):
    status = 200
    body: bytes | None = None
    """None: an OpenAI model list; b"": headers only, as mlx_lm.server sends when its HF hub cache
    dir is missing (it fails scanning the cache after sending 200)."""
    content_type = "application/json"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = self.body
        if body is None:
            body = json.dumps({"object": "list", "data": [{"id": "champion"}, {"id": "base"}]}).encode()
        code = self.status if self.path == "/v1/models" else 404
        self.send_response(code)
        self.send_header("Content-Type", self.content_type)
        if body:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Models]]]:
    handler = type("Handler", (_Models,), {"status": 200})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_serving_answers(tmp_path: Path, model_dir: Path, server: tuple[str, type[_Models]]) -> None:
    url, _ = server
    report = run_preflight(make_workspace(tmp_path, model_dir, serving={"url": url + "/"}))
    assert only(report, "serving") == (Level.OK, f"{url}/v1/models answers: champion, base")


def test_serving_error_status_warns(tmp_path: Path, model_dir: Path, server: tuple[str, type[_Models]]) -> None:
    url, handler = server
    handler.status = 503
    report = run_preflight(make_workspace(tmp_path, model_dir, serving={"url": url}))
    assert only(report, "serving") == (
        Level.WARN,
        f"GET {url}/v1/models answered HTTP 503; check the server's log and serving.url",
    )
    assert report.ok  # warn only


def test_empty_models_body_points_at_the_hf_cache(
    tmp_path: Path, model_dir: Path, server: tuple[str, type[_Models]]
) -> None:
    """Regression: an mlx-lm server without a hub cache dir looked like a wrong URL."""
    url, handler = server
    handler.body = b""
    report = run_preflight(make_workspace(tmp_path, model_dir, serving={"url": url}))
    assert only(report, "serving") == (
        Level.WARN,
        f"GET {url}/v1/models answered 200 with an empty body; mlx-lm's server answers this way when its "
        "Hugging Face hub cache dir does not exist: create it or start the server with HF_HUB_CACHE set to "
        "an existing directory",
    )


def test_a_page_that_is_not_a_model_list_is_a_wrong_url(
    tmp_path: Path, model_dir: Path, server: tuple[str, type[_Models]]
) -> None:
    url, handler = server
    handler.body, handler.content_type = b"<html><body>Welcome to nginx!</body></html>", "text/html"
    level, message = only(run_preflight(make_workspace(tmp_path, model_dir, serving={"url": url})), "serving")
    assert level is Level.WARN
    assert message.startswith(f"GET {url}/v1/models answered '<html><body>Welcome to nginx!</body></html>'")
    assert "not an OpenAI model list" in message and "HF_HUB_CACHE" not in message


def test_serving_down_warns(tmp_path: Path, model_dir: Path, server: tuple[str, type[_Models]]) -> None:
    url, _ = server
    dead = url.rsplit(":", 1)[0] + ":1"
    report = run_preflight(make_workspace(tmp_path, model_dir, serving={"url": dead, "timeout_s": 2}))
    level, message = only(report, "serving")
    assert level is Level.WARN
    assert message.startswith(f"GET {dead}/v1/models failed (ConnectError:")
    assert message.endswith("start the server or fix serving.url")


def managed(tmp_path: Path, **serving: Any) -> Config:
    from daemon.config import PathsConfig, ServingConfig

    return Config(paths=PathsConfig(state_dir=tmp_path / "state"), serving=ServingConfig(mode="managed", **serving))


def test_managed_server_is_checked_for_starting_not_probed(
    tmp_path: Path, server: tuple[str, type[_Models]]
) -> None:
    """Regression: with `serving.mode: managed` preflight probed serving.url (or said "not set") instead of
    checking that the managed server can start."""
    url, handler = server
    handler.status = 503  # whatever answers at the URL is not the managed server (it is not running yet)
    port = free_local_port()
    [check] = system_checks.check_serving(managed(tmp_path, url=url, port=port))
    assert (check.level, check.name) == (Level.OK, "serving")
    assert check.message == (
        f"managed server can start: {sys.executable} -m mlx_lm.server on 127.0.0.1:{port} (port free)"
    )
    [check] = system_checks.check_serving(managed(tmp_path, port=0, command=["{python}", "-m", "http.server", "{port}"]))
    assert check.level is Level.OK and check.message.endswith("on 127.0.0.1:0 (a free port is picked at start)")


def test_managed_server_command_that_does_not_exist_fails(tmp_path: Path) -> None:
    missing = tmp_path / "bin" / "llama-server"
    [check] = system_checks.check_serving(managed(tmp_path, command=[str(missing), "--port", "{port}"], port=0))
    assert check.level is Level.FAIL
    assert check.message == (
        f"managed server command {str(missing)!r} does not exist or is not executable; install it or fix serving.command"
    )
    [check] = system_checks.check_serving(managed(tmp_path, command=["no-such-server-xyz", "{port}"], port=0))
    assert check.level is Level.FAIL and "'no-such-server-xyz' is not on PATH" in check.message


def test_managed_server_port_taken_by_another_program_fails(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        [check] = system_checks.check_serving(managed(tmp_path, port=port))
    assert check.level is Level.FAIL
    assert check.message == (
        f"serving.port {port} on 127.0.0.1 is in use by another program: the managed server could not bind it; "
        "stop that program or set serving.port (0 picks a free port)"
    )
    [check] = system_checks.check_serving(managed(tmp_path, host="192.0.2.1", port=0))  # TEST-NET: not ours
    assert check.level is Level.FAIL and check.message.startswith("serving.host 192.0.2.1 cannot be bound (")


def test_a_running_managed_server_is_probed_at_its_url(tmp_path: Path, server: tuple[str, type[_Models]]) -> None:
    """When `nightshift start`/`serve` already supervises the managed server, its port is ours: probe it."""
    import fcntl
    import os

    from daemon.serving.server import LOCK_FILE, STATE_FILE, serving_dir

    url, _ = server
    sdir = serving_dir(tmp_path / "state")
    (sdir / STATE_FILE).write_text(json.dumps({"state": "running", "url": url, "pid": os.getpid()}))
    fd = os.open(sdir / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        [check] = system_checks.check_serving(managed(tmp_path, port=int(url.rsplit(":", 1)[1])))
    finally:
        os.close(fd)
    assert (check.level, check.message) == (Level.OK, f"{url}/v1/models answers: champion, base")


def free_local_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- smoke


def test_smoke_passes_on_a_real_tiny_model(tmp_path: Path, smoke_model_dir: Path, big_machine: None) -> None:
    report = run_preflight(make_workspace(tmp_path, smoke_model_dir), smoke=True)
    smoke = {c.name: c for c in report.checks if c.name.startswith("smoke")}
    # an untrained tiny model may well ramble to max_tokens: only that the check ran matters here
    assert smoke.pop("smoke.truncation").level in (Level.OK, Level.WARN)
    assert {n: c.level for n, c in smoke.items()} == {
        "smoke.loss": Level.OK,
        "smoke.generation": Level.OK,
        "smoke.training": Level.OK,
        "smoke.train_forward": Level.OK,
        "smoke.memory": Level.OK,
        "smoke.duration": Level.OK,
    }, [c.message for c in smoke.values()]
    raw = report.smoke
    assert raw is not None and raw["ok"] is True
    assert raw["loss_examples"] == ["valid.jsonl:1", "valid.jsonl:2", "valid.jsonl:3"]
    assert 1.0 < raw["perplexity"] < 150  # an untrained model sits near the vocabulary size (~300)
    assert raw["generation"].strip()
    assert len(raw["train_losses"]) == 2 and all(math.isfinite(x) for x in raw["train_losses"])
    assert len(raw["train_step_s"]) == 2 and all(s > 0 for s in raw["train_step_s"])
    ((sample),) = raw["eval_samples"]  # the suite's one category, answered with its own budget
    assert sample["category"] == "math" and sample["max_tokens"] == 64 and isinstance(sample["truncated"], bool)
    assert raw["eval_generation_steps"] >= 1 and isinstance(raw["generation_truncated"], bool)
    assert raw["peak_memory_bytes"] > 0
    assert (tmp_path / "state" / "preflight" / "smoke.log").is_file()


def test_smoke_catches_nan_weights(tmp_path: Path, smoke_model_dir: Path, big_machine: None) -> None:
    """A checkpoint that loads but computes garbage (the 2.7M-perplexity class of bug) fails the night before."""
    model = tmp_path / "model"
    shutil.copytree(smoke_model_dir, model)
    path = model / "model.safetensors"
    header = read_safetensors_header(path)
    with open(path, "r+b") as fh:
        fh.seek(8 + header.header_bytes)
        fh.write(b"\xff" * header.data_bytes)  # every float32 becomes NaN
    report = run_preflight(make_workspace(tmp_path / "ws", model), smoke=True)
    level, message = only(report, "smoke.loss")
    assert level is Level.FAIL
    assert message == (
        "the base model's loss on 3 validation examples (33 tokens) is nan: "
        "the weights or the way they are loaded are broken"
    )
    assert only(report, "smoke.training")[0] is Level.FAIL
    assert not report.ok


def test_smoke_is_not_started_when_the_model_is_broken(tmp_path: Path, tokenizer_dir: Path) -> None:
    model = make_model(tmp_path / "model", tokenizer_dir, shards=2)
    (model / "model-00001-of-00002.safetensors").unlink()
    report = run_preflight(make_workspace(tmp_path / "ws", model), smoke=True)
    assert only(report, "smoke") == (Level.WARN, "not run: fix the failed checks first (model.weights)")
    assert report.smoke is None


GOOD_SMOKE: dict[str, Any] = {
    "ok": True,
    "stage": "done",
    "loss": 2.0,
    "perplexity": math.exp(2.0),
    "loss_examples": ["valid.jsonl:1", "valid.jsonl:2"],
    "loss_tokens": 40,
    "generation": "4 plus 4 is 8",
    "generation_example": "valid.jsonl:1",
    "train_batch": {"batch_size": 2, "tokens": 30},
    "reference_loss": 2.5,
    "train_losses": [2.5, 2.49],
    "grads_finite": True,
    "params_finite": True,
    "peak_memory_bytes": 2_000_000,
    "max_rss_bytes": 90_000_000,
}


def judged(**changes: Any) -> dict[str, tuple[Level, str]]:
    raw = {**GOOD_SMOKE, **changes}
    return {r.name: (r.level, r.message) for r in judge_smoke(raw, max_perplexity=1000.0)}


def test_judge_smoke_passing() -> None:
    got = judged()
    assert got == {
        "smoke.loss": (Level.OK, "perplexity 7.39 (loss 2.000) on 2 validation examples (40 tokens) < 1000"),
        "smoke.generation": (Level.OK, "greedy reply to valid.jsonl:1: '4 plus 4 is 8'"),
        "smoke.training": (Level.OK, "two LoRA steps (batch 2 x 30 tokens): loss 2.500, 2.490"),
        "smoke.train_forward": (Level.OK, "training and inference agree on the same batch (loss 2.5000 vs 2.5000)"),
        "smoke.memory": (Level.OK, "peak mlx memory 2.0 MB (max RSS 90.0 MB)"),
    }


def test_judge_smoke_perplexity_too_high() -> None:
    """Regression guard for the Gemma 4 checkpointing bug: perplexity 2.7M while 'training ran fine'."""
    level, message = judged(loss=math.log(2.7e6), perplexity=2.7e6)["smoke.loss"]
    assert level is Level.FAIL
    assert message.startswith("the base model's perplexity on 2 validation examples (40 tokens) is 2.7e+06, not below")


def test_judge_smoke_training_forward_disagrees() -> None:
    level, message = judged(reference_loss=2.0, train_losses=[14.8, 14.7])["smoke.train_forward"]
    assert level is Level.FAIL
    assert message.startswith("the training forward pass gives loss 14.8000 where inference gives 2.0000")
    assert message.endswith("try training.grad_checkpoint: false")


def test_judge_smoke_empty_generation_and_nonfinite_training() -> None:
    got = judged(generation="  \n", train_losses=[float("nan"), float("nan")], grads_finite=False)
    assert got["smoke.generation"][0] is Level.FAIL
    assert got["smoke.training"][0] is Level.FAIL


def test_judge_smoke_reports_the_failed_stage() -> None:
    raw = {"ok": False, "stage": "loading the model", "error": "ValueError: Model type frob not supported."}
    (result,) = judge_smoke(raw, max_perplexity=1000.0, log_path=Path("state/preflight/smoke.log"))
    assert (result.name, result.level, result.message) == (
        "smoke",
        Level.FAIL,
        "smoke test failed while loading the model: ValueError: Model type frob not supported.; "
        "log: state/preflight/smoke.log",
    )


# ---------------------------------------------------------------- report and CLI


def test_report_table_and_json() -> None:
    report = PreflightReport(
        [
            CheckResult("config", Level.OK, "fine", 0.01),
            CheckResult("dataset.leaked_token", Level.FAIL, "train.jsonl line 1: x (+1 more)", 0.5, ("a", "b")),
        ],
        None,
        0.6,
    )
    table = report.render_table().splitlines()
    assert table[0].split() == ["LEVEL", "CHECK", "TIME", "MESSAGE"]
    assert table[1].split(None, 3) == ["ok", "config", "0.01s", "fine"]
    assert table[2].startswith("FAIL   dataset.leaked_token")
    assert table[3].strip() == "- a" and table[4].strip() == "- b"
    assert table[-1] == "preflight failed: 1 failed, 0 warnings, 1 ok (0.6 s)"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["failed"] == 1
    assert data["checks"][1] == {
        "name": "dataset.leaked_token",
        "level": "fail",
        "message": "train.jsonl line 1: x (+1 more)",
        "duration_s": 0.5,
        "details": ["a", "b"],
    }


def test_cli_takes_the_config_from_the_group(tmp_path: Path, model_dir: Path, big_machine: None) -> None:
    from daemon.cli import cli

    cfg = make_workspace(tmp_path, model_dir)
    result = CliRunner().invoke(cli, ["-c", str(cfg.source), "preflight", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ok"] is True


def test_cli_preflight_passes_and_fails(tmp_path: Path, model_dir: Path, big_machine: None) -> None:
    cfg = make_workspace(tmp_path / "good", model_dir)
    result = CliRunner().invoke(preflight, ["-c", str(cfg.source)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("preflight passed: 0 failed")

    bad = make_workspace(tmp_path / "bad", model_dir, train=DATASETS / "leaked_tokens.jsonl")
    result = CliRunner().invoke(preflight, ["-c", str(bad.source), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is False
    assert [c["name"] for c in data["checks"] if c["level"] == "fail"] == ["dataset.leaked_token"]
