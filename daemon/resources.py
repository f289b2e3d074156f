"""Machine resources a night's run needs: disk, memory, power and heat.

Estimates are pure functions of the model's shape and the config, tested with
numbers; the probes (free disk, memory, ``pmset``) are thin and swappable.
No mlx here: the scheduler process imports this module.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

GB = 10**9
"""Bytes per gigabyte (decimal, as disk and memory sizes are printed)."""

LORA_PARAM_BYTES = 4
"""Bytes per LoRA parameter on disk and in memory: mlx-lm's LoRA matrices are float32."""

ADAM_STATE_BYTES_PER_PARAM = 3 * LORA_PARAM_BYTES
"""Gradient plus Adam's two moment estimates (Kingma & Ba 2015, arXiv:1412.6980), float32."""

ACTIVATION_BYTES = 2
"""Bytes per stored activation: bf16/fp16 models."""

LOGIT_BYTES_PER_ENTRY = 10
"""Per (token, vocabulary entry): 16-bit logits (2) + float32 log-softmax (4) + its gradient (4)."""

RUNTIME_OVERHEAD_BYTES = 1 * GB
"""mlx runtime, tokenizer, Python and allocator slack."""

USABLE_MEMORY_SHARE = 0.75
"""Share of physical memory a training run may plan to use: Metal's
``recommendedMaxWorkingSetSize`` on Apple silicon is about three quarters of RAM."""

LOG_AND_METADATA_BYTES = 64 * 10**6
"""Logs, metrics JSON lines, reports and run metadata per run."""

PMSET_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a transformer that memory and adapter-size estimates need.

    Read from ``config.json`` (and its ``text_config`` for vision-language
    checkpoints). Missing head/width fields fall back to common defaults.
    """

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    context_tokens: int | None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape | None:
        """Build from a ``config.json`` mapping; None when the layer count or width is missing."""
        layers = config_value(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
        hidden = config_value(config, "hidden_size", "n_embd", "d_model", "dim")
        if not isinstance(layers, int) or not isinstance(hidden, int):
            return None
        heads = config_value(config, "num_attention_heads", "n_head", "n_heads")
        heads = heads if isinstance(heads, int) and heads > 0 else max(1, hidden // 128)
        kv = config_value(config, "num_key_value_heads", "n_kv_heads", "num_kv_heads")
        kv = kv if isinstance(kv, int) and kv > 0 else heads
        head_dim = config_value(config, "head_dim")
        head_dim = head_dim if isinstance(head_dim, int) and head_dim > 0 else hidden // heads
        inter = config_value(config, "intermediate_size", "ffn_dim", "n_inner")
        inter = inter if isinstance(inter, int) and inter > 0 else 4 * hidden
        vocab = config_value(config, "vocab_size")
        vocab = vocab if isinstance(vocab, int) and vocab > 0 else 32_000
        return cls(layers, hidden, inter, heads, kv, head_dim, vocab, context_length(config))


CONTEXT_KEYS = (
    "max_position_embeddings",
    "max_sequence_length",
    "max_seq_len",
    "seq_length",
    "n_positions",
    "n_ctx",
    "model_max_length",
)
"""config.json keys that give the model's context length in tokens, in order of preference."""


def config_value(config: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` found at the top of ``config``, else in its ``text_config``
    (or ``llm_config``/``language_config``), else None."""
    scopes = [config]
    for nested in ("text_config", "llm_config", "language_config"):
        if isinstance(config.get(nested), dict):
            scopes.append(config[nested])
    for key in keys:
        for scope in scopes:
            if scope.get(key) is not None:
                return scope[key]
    return None


def context_length(config: dict[str, Any]) -> int | None:
    """The model's context length in tokens (see :data:`CONTEXT_KEYS`), else None."""
    value = config_value(config, *CONTEXT_KEYS)
    return value if isinstance(value, int) and value > 0 else None


# ---------------------------------------------------------------- estimates


def lora_parameter_count(shape: ModelShape, rank: int, lora_layers: int) -> int:
    """Trainable parameters of LoRA on all linear layers of the last ``lora_layers`` blocks.

    Each adapted ``d_in -> d_out`` linear gets ``rank * (d_in + d_out)``
    parameters (Hu et al. 2021, arXiv:2106.09685). A block is assumed to have
    q/k/v/o attention projections and a gated MLP (gate, up, down), mlx-lm's
    default ``keys`` for Llama-family models; mixture-of-experts blocks are
    undercounted.

    Args:
        lora_layers: adapted blocks counted from the last; -1 means all.
    """
    h, q_out, kv_out = shape.hidden_size, shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    per_block = rank * (
        (h + q_out)  # q_proj
        + 2 * (h + kv_out)  # k_proj, v_proj
        + (q_out + h)  # o_proj
        + 3 * (h + shape.intermediate_size)  # gate_proj, up_proj, down_proj
    )
    return per_block * adapted_layers(shape, lora_layers)


def adapted_layers(shape: ModelShape, lora_layers: int) -> int:
    """How many blocks get adapters (``-1`` or more than the model has: all of them)."""
    if lora_layers < 0:
        return shape.num_layers
    return min(lora_layers, shape.num_layers)


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak training memory, in bytes, by part (see :func:`estimate_training_memory`)."""

    weights_bytes: int
    lora_bytes: int
    activation_bytes: int
    logits_bytes: int
    overhead_bytes: int

    @property
    def total_bytes(self) -> int:
        """Sum of the parts."""
        return self.weights_bytes + self.lora_bytes + self.activation_bytes + self.logits_bytes + self.overhead_bytes


def estimate_training_memory(
    shape: ModelShape,
    *,
    weights_bytes: int,
    rank: int,
    lora_layers: int,
    batch_size: int,
    seq_len_tokens: int,
    grad_checkpoint: bool,
) -> MemoryEstimate:
    """Estimate the peak memory of LoRA training with mlx-lm.

    Parts (all bytes):

    - weights: the safetensors tensor bytes as stored (a quantized model stays packed).
    - LoRA: ``P * (4 + 12)``, ``P`` from :func:`lora_parameter_count`: float32
      parameters plus gradient and Adam's two moments.
    - activations, kept only for the adapted blocks (frozen blocks before the
      first adapter need no backward pass). Per block, from Korthikanti et al.
      2022 (arXiv:2205.05198, section 4.1): ``s*b*h*34 + 5*a*s^2*b`` bytes with
      16-bit activations, where ``s`` is the sequence length, ``b`` the batch,
      ``h`` the width and ``a`` the heads: 11sbh + 5as^2b for attention, 4sbh
      for the norms and 19sbh for a ``4h``-wide MLP. For a gated MLP of width
      ``I`` (Llama, Qwen, Gemma) the MLP keeps its input (2sbh) and the gate,
      up, activation and product outputs (8sbI), so a block is
      ``17*s*b*h + 8*s*b*I + 5*a*s^2*b`` bytes. With gradient checkpointing a
      block keeps only its input (``2*s*b*h``) and one block's full set is
      live at a time during recomputation.
    - logits: ``b*s*V*10`` (16-bit logits, float32 log-softmax and its gradient).
    - a fixed 1 GB for the runtime.

    The attention-score term assumes scores are materialised for the
    backward pass; fused attention kernels need less, so the estimate leans
    high. Checked against a published run (Gemma 4 31B bf16, 58 GB of
    weights, rank 16 on 16 layers, 2048 tokens, batch 1, checkpointing):
    estimate 66.5 GB, reported peak 64.1 GB.
    """
    s, b, h, a = seq_len_tokens, batch_size, shape.hidden_size, shape.num_heads
    n_adapted = adapted_layers(shape, lora_layers)
    full_block = s * b * (17 * h + 8 * shape.intermediate_size) + 5 * a * s * s * b
    if grad_checkpoint:
        activations = n_adapted * ACTIVATION_BYTES * s * b * h + (full_block if n_adapted else 0)
    else:
        activations = n_adapted * full_block
    lora = lora_parameter_count(shape, rank, lora_layers) * (LORA_PARAM_BYTES + ADAM_STATE_BYTES_PER_PARAM)
    logits = b * s * shape.vocab_size * LOGIT_BYTES_PER_ENTRY
    return MemoryEstimate(weights_bytes, lora, activations, logits, RUNTIME_OVERHEAD_BYTES)


@dataclass(frozen=True)
class DiskEstimate:
    """Bytes a run writes, by part (see :func:`estimate_run_disk`)."""

    adapter_bytes: int
    checkpoint_bytes: int
    release_bytes: int
    fused_bytes: int
    log_bytes: int

    @property
    def total_bytes(self) -> int:
        """Sum of the parts."""
        return self.adapter_bytes + self.checkpoint_bytes + self.release_bytes + self.fused_bytes + self.log_bytes


def estimate_run_disk(
    *,
    lora_params: int,
    iters: int,
    save_every: int,
    fuse: bool,
    weights_bytes: int,
) -> DiskEstimate:
    """Estimate what one night writes to the state directory.

    - adapter: ``lora_params * 4`` bytes (float32 ``adapters.safetensors``).
    - checkpoints: mlx-lm's trainer writes ``NNNNNNN_adapters.safetensors``
      every ``save_every`` iterations: ``floor(iters / save_every)`` copies.
    - release: one copy of the adapter in the release directory.
    - fused model (``promotion.fuse``): about the base weights' size (mlx-lm's
      fuse keeps the base's quantization).
    - logs and metadata: a fixed 64 MB.
    """
    adapter = lora_params * LORA_PARAM_BYTES
    checkpoints = (iters // max(save_every, 1)) * adapter
    return DiskEstimate(adapter, checkpoints, adapter, weights_bytes if fuse else 0, LOG_AND_METADATA_BYTES)


# ---------------------------------------------------------------- probes


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding ``path`` (or its nearest existing parent).

    Raises:
        OSError: no parent of ``path`` exists or it cannot be queried.
    """
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


@dataclass(frozen=True)
class MemoryInfo:
    """Physical memory in bytes; ``available_bytes`` None where it cannot be read."""

    total_bytes: int
    available_bytes: int | None


def memory_info() -> MemoryInfo:
    """Physical and currently available memory of this machine.

    Linux: ``/proc/meminfo`` (``MemTotal``, ``MemAvailable``). macOS:
    ``sysconf`` for the total and ``vm_stat`` free + inactive + speculative +
    purgeable pages for the available memory.
    """
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available: int | None = None
    if sys.platform.startswith("linux"):
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            meminfo = ""
        m = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
        if m:
            available = int(m.group(1)) * 1024
    elif sys.platform == "darwin":
        available = _darwin_available_bytes()
    return MemoryInfo(total, available)


OOM_LIKELY_RSS_SHARE = 0.8
"""A child killed by SIGKILL whose peak RSS reached this share of physical memory is
described as likely out of memory (the OOM killer picks the largest process)."""


def oom_kill_count() -> int | None:
    """The kernel's OOM-kill count for this process's cgroup and its descendants (Linux cgroup v2
    ``memory.events``, key ``oom_kill``); None where there is no such file (macOS, cgroup v1)."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
        rel = next((line[3:] for line in lines if line.startswith("0::")), None)
        if rel is None:
            return None
        events = Path("/sys/fs/cgroup") / rel.lstrip("/") / "memory.events"
        for line in events.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def children_peak_rss_bytes() -> int:
    """The largest peak RSS among this process's waited-for children (``getrusage(RUSAGE_CHILDREN)``;
    ``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def _darwin_available_bytes() -> int | None:
    try:
        text = subprocess.run(
            ["vm_stat"], capture_output=True, text=True, timeout=PMSET_TIMEOUT_S, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    page = re.search(r"page size of (\d+) bytes", text)
    size = int(page.group(1)) if page else os.sysconf("SC_PAGE_SIZE")
    pages = 0
    for label in ("Pages free", "Pages inactive", "Pages speculative", "Pages purgeable"):
        m = re.search(rf"^{label}:\s+(\d+)", text, re.MULTILINE)
        if m:
            pages += int(m.group(1))
    return pages * size


def read_pmset(what: Literal["batt", "therm"]) -> str | None:
    """Output of ``pmset -g batt`` or ``pmset -g therm``; None off macOS or on error.

    The one place power and thermal state are read: tests replace this function.
    """
    if sys.platform != "darwin":
        return None
    try:
        return subprocess.run(
            ["pmset", "-g", what], capture_output=True, text=True, timeout=PMSET_TIMEOUT_S, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass(frozen=True)
class PowerState:
    """Parsed ``pmset -g batt``: the power source and battery charge (percent, if any)."""

    on_ac: bool | None
    battery_percent: int | None


def parse_power(text: str) -> PowerState:
    """Parse ``pmset -g batt`` output (``Now drawing from 'AC Power'`` / ``'Battery Power'``)."""
    source = re.search(r"drawing from '([^']+)'", text)
    on_ac = None
    if source:
        on_ac = "AC" in source.group(1)
    pct = re.search(r"(\d{1,3})%", text)
    return PowerState(on_ac, int(pct.group(1)) if pct else None)


@dataclass(frozen=True)
class ThermalState:
    """Parsed ``pmset -g therm``: CPU speed limit (percent, 100 = none) and warning levels."""

    cpu_speed_limit_pct: int | None
    thermal_warning_level: int | None
    performance_warning_level: int | None

    @property
    def throttled(self) -> bool:
        """True when macOS reports a speed limit below 100 % or any warning level above 0."""
        return (
            (self.cpu_speed_limit_pct is not None and self.cpu_speed_limit_pct < 100)
            or bool(self.thermal_warning_level)
            or bool(self.performance_warning_level)
        )


def parse_thermal(text: str) -> ThermalState:
    """Parse ``pmset -g therm`` output (``CPU_Speed_Limit = 100``, ``... warning level set to N``)."""

    def _int(pattern: str) -> int | None:
        m = re.search(pattern, text, re.IGNORECASE)
        return int(m.group(1)) if m else None

    return ThermalState(
        _int(r"CPU_Speed_Limit\s*=\s*(\d+)"),
        _int(r"thermal warning level[^\d\n]*(\d+)"),
        _int(r"performance warning level[^\d\n]*(\d+)"),
    )


def format_bytes(n: float) -> str:
    """``n`` bytes as a short decimal string: ``1.2 GB``, ``340 MB``, ``12 kB``."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"
