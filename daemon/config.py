"""Typed, validated configuration loaded from one YAML file.

Lookup order for the file: ``--config/-c PATH``, else ``$NIGHTSHIFT_CONFIG``,
else ``<user config dir>/nightshift/nightshift.yaml`` (platformdirs). A named
profile (``--profile`` or ``$NIGHTSHIFT_PROFILE``) is deep-merged over the
top-level sections. Relative paths are resolved against the config file's own
directory, so a workspace can be copied or moved.

Validation collects every problem (unknown keys, wrong types, out-of-range
values) and raises one :class:`~daemon.errors.ConfigError` that names each key
path and its legal range. This is the only module that reads the environment.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import string
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from daemon.deadline import parse_deadline
from daemon.errors import ConfigError, excerpt
from daemon.yamlfile import load_yaml_file

CONFIG_ENV = "NIGHTSHIFT_CONFIG"
PROFILE_ENV = "NIGHTSHIFT_PROFILE"
CONFIG_FILENAME = "nightshift.yaml"

#: Placeholders of ``serving.command`` (see :class:`ServingConfig`).
SERVING_PLACEHOLDERS = ("python", "base", "release", "fused", "host", "port")

#: mlx-lm's default LoRA scale (``mlx_lm.lora.CONFIG_DEFAULTS``).
MLX_LM_DEFAULT_LORA_SCALE = 20.0


def _rng(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict:
    return {"lo": lo, "hi": hi, "lo_open": lo_open}


@dataclass(frozen=True)
class PathsConfig:
    """Where things are. All paths may be relative to the config file."""

    base_model: Path = Path("models/base")
    """Directory of the base model (config.json, *.safetensors, tokenizer). Never a fine-tune."""
    dataset: Path = Path("data")
    """Directory holding ``train.jsonl`` and ``valid.jsonl`` (chat JSONL, ``{"messages": [...]}``)."""
    eval_suite: Path = Path("eval/suite.yaml")
    """The eval suite YAML file."""
    state_dir: Path = Path("state")
    """Registry, runs, releases, ``current`` symlink, reports and logs."""


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapter shape (Hu et al. 2021, arXiv:2106.09685).

    mlx-lm takes ``rank``, ``scale``, ``dropout`` and ``keys``; it has no
    ``alpha``. Configs written for PEFT say ``alpha``: we accept it and use
    ``scale = alpha / rank`` (the PEFT convention). Give ``alpha`` or ``scale``.
    """

    rank: int = field(default=8, metadata=_rng(1, 4096))
    alpha: float | None = field(default=None, metadata=_rng(0, None, lo_open=True))
    scale: float | None = field(default=None, metadata=_rng(0, None, lo_open=True))
    dropout: float = field(default=0.0, metadata=_rng(0.0, 0.99))
    layers: int = field(default=16, metadata=_rng(-1, 100_000))
    """Number of transformer blocks, counted from the last, that get adapters (-1: all)."""
    keys: list[str] | None = None
    """Module paths inside a block to adapt (mlx-lm ``keys``); default: all linear layers."""

    @property
    def effective_scale(self) -> float:
        """The scale passed to mlx-lm: ``scale``, else ``alpha / rank``, else 20.0."""
        if self.scale is not None:
            return float(self.scale)
        if self.alpha is not None:
            return float(self.alpha) / self.rank
        return MLX_LM_DEFAULT_LORA_SCALE


@dataclass(frozen=True)
class DistributedConfig:
    """Data-parallel training through ``mlx.launch`` (mlx-lm's trainer averages gradients).

    Off by default (``processes: 1`` and no ``hostfile``). ``hostfile`` is the
    JSON list ``mlx.launch --hostfile`` reads (``mlx.distributed_config``
    writes one); every host needs the same Python, model and dataset paths.
    ``processes`` > 1 without a hostfile runs that many local processes
    (``mlx.launch -n``), for tests and benchmarks. ``training.batch_size``
    must be divisible by the number of processes (mlx-lm's sharding).
    """

    processes: int = field(default=1, metadata=_rng(1, 1024))
    hostfile: Path | None = None
    backend: Literal["ring", "mpi", "jaccl", "nccl"] = "ring"
    """``ring`` (TCP), ``mpi``, ``jaccl`` (RDMA over Thunderbolt 5, macOS 26.2+) or ``nccl`` (NVIDIA,
    ``mlx[cuda]``; ``mlx.launch`` gives local rank k the GPU k, so ``processes: N`` needs N GPUs)."""
    share_model: bool = False
    """Preflight copies a model missing on a host there with ``mlx_lm share`` instead of failing."""

    @property
    def enabled(self) -> bool:
        """True when training runs under ``mlx.launch``."""
        return self.hostfile is not None or self.processes > 1


@dataclass(frozen=True)
class TrainingConfig:
    """How the nightly LoRA adapter is trained (always on the base model)."""

    lora: LoraConfig = field(default_factory=LoraConfig)
    iters: int = field(default=1000, metadata=_rng(1, 10_000_000))
    batch_size: int = field(default=4, metadata=_rng(1, 4096))
    grad_accumulation: int = field(default=1, metadata=_rng(1, 4096))
    learning_rate: float = field(default=1e-5, metadata=_rng(0, 1, lo_open=True))
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    """``cosine``/``linear`` decay from ``learning_rate`` to ``min_learning_rate`` over the iterations after warmup."""
    warmup_steps: int = field(default=0, metadata=_rng(0, 10_000_000))
    min_learning_rate: float = field(default=0.0, metadata=_rng(0, 1))
    max_seq_len_tokens: int = field(default=2048, metadata=_rng(8, 1_048_576))
    grad_checkpoint: bool = False
    seed: int = field(default=0, metadata=_rng(0, 2**31 - 1))
    mask_prompt: bool = True
    """Train only on the final assistant turn (loss masked on the prompt)."""
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = field(default=0.0, metadata=_rng(0, 1))
    steps_per_report: int = field(default=10, metadata=_rng(1, 1_000_000))
    steps_per_eval: int = field(default=200, metadata=_rng(1, 1_000_000))
    val_batches: int = field(default=25, metadata=_rng(-1, 1_000_000))
    """Validation batches per val-loss report (-1: the whole validation set)."""
    save_every: int = field(default=100, metadata=_rng(1, 10_000_000))
    """Iterations between resume checkpoints (adapter, optimizer state, schedule position)."""
    timeout_s: float = field(default=6 * 3600.0, metadata=_rng(1, None))
    max_grad_norm: float | None = field(default=None, metadata=_rng(0, None, lo_open=True))
    """Clip the global gradient norm to this (``mlx.optimizers.clip_grad_norm``); null: no clipping."""
    loss_spike_factor: float | None = field(default=None, metadata=_rng(1, None, lo_open=True))
    """Abort when the training loss exceeds this multiple of its running median; null: off."""
    loss_spike_reports: int = field(default=3, metadata=_rng(1, 1000))
    """...for this many consecutive reports."""
    early_stopping_patience: int | None = field(default=None, metadata=_rng(1, 1_000_000))
    """Stop when the validation loss has not improved for this many evaluations; null: off."""
    deadline: str | None = field(default=None, metadata={"int_as_text": True, "example": '"06:30" or "5h"'})
    """Training ends in time for the rest of the night to finish by then: a local time
    (``06:30``; a time already passed today is tomorrow's) or a duration counted from the
    run's start, preflight included (``5h``, ``90m``, ``1h30m``, ``3600s``; a bare integer is seconds)."""
    resume: bool = True
    """Resume a run interrupted during training from its last checkpoint (same night, same job)."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


@dataclass(frozen=True)
class EvaluationConfig:
    """How champion and challenger are scored (identical for both)."""

    batch_size: int = field(default=16, metadata=_rng(1, 4096))
    """Prompts generated together by mlx-lm's batched generation."""
    max_tokens: int = field(default=64, metadata=_rng(1, 1_000_000))
    """Default generation budget per reply (a category may override it)."""
    seed: int = field(default=0, metadata=_rng(0, 2**31 - 1))
    held_out_loss: bool = True
    """Also record each model's loss on ``valid.jsonl`` (reported, not gated)."""
    loss_max_examples: int = field(default=200, metadata=_rng(1, 1_000_000))
    timeout_s: float = field(default=3 * 3600.0, metadata=_rng(1, None))
    backend: str = "mlx-lm"
    """Recorded with every score: scores from two backends are never compared."""


@dataclass(frozen=True)
class PromotionConfig:
    """The promotion gate's policy (see :mod:`daemon.gate`)."""

    policy: Literal["auto", "manual"] = "auto"
    """``manual`` records the gate's verdict as pending; ``nightshift approve/reject`` finishes it."""
    min_gain: float = field(default=0.0, metadata=_rng(-1, 1))
    """The composite's one-sided lower confidence bound must exceed this (score units, 0..1)."""
    confidence: float = field(default=0.95, metadata=_rng(0.5, 0.9999))
    bootstrap_resamples: int = field(default=10_000, metadata=_rng(1000, 10_000_000))
    seed: int = field(default=0, metadata=_rng(0, 2**31 - 1))
    default_margin: float = field(default=0.05, metadata=_rng(0, 1))
    """Non-inferiority margin per category unless the suite sets one (score units)."""
    max_empty_increase: int = field(default=0, metadata=_rng(0, 1_000_000))
    """Extra items with an empty reply always allowed; a larger increase blocks only when it is
    significant (exact McNemar on the per-item empty indicator)."""
    guard_power: float = field(default=0.65, metadata=_rng(0.5, 0.99))
    """A category that cannot guard its margin is tested against the drop it detects with this
    probability (an unchanged category then passes this often)."""
    min_items: int = field(default=10, metadata=_rng(2, 1_000_000))
    """Categories with fewer items are guarded but cannot count toward the composite gain."""
    unguarded: Literal["widen", "block"] = "widen"
    """A category too small to guard its margin: ``widen`` guards the drop it can detect (and the
    report says so); ``block`` rejects the night."""
    fuse: bool = False
    """Also write a fused model (base + adapter merged) into the release directory."""


@dataclass(frozen=True)
class ScheduleConfig:
    """When the daemon runs (``nightshift start``)."""

    cron: str = "0 1 * * *"
    timezone: str | None = None
    """IANA name, e.g. ``Europe/Berlin``; default: the machine's local zone."""
    misfire_grace_s: float = field(default=6 * 3600.0, metadata=_rng(0, 86_400))
    """A missed nightly run still starts if we are this late (APScheduler's default is 1 s)."""
    rehearsal: bool = True
    """Run preflight in the evening so problems are known before the night."""
    rehearsal_cron: str = "0 22 * * *"
    check_interval_s: float = field(default=300.0, metadata=_rng(1, 86_400))
    """How often the daemon re-checks the registry for a missed night (wake from sleep)."""
    stop_grace_s: float = field(default=20.0, metadata=_rng(0.1, 3600))
    """SIGTERM-to-SIGKILL grace for a child; fits inside the LaunchAgent's ExitTimeOut."""


@dataclass(frozen=True)
class ServingConfig:
    """How the champion reaches the server that serves it (see :mod:`daemon.serving`).

    ``mode``: ``none`` (nothing is handed off; clients name the release per
    request), ``managed`` (nightshift runs the server: ``command``, default
    mlx-lm's server from this venv on ``host:port``) or ``command`` (a
    ``reload_command`` hook tells a server nightshift does not own to load the
    new release). Every hand-off is verified with ``probes`` of the night's
    eval prompts and rolled back when fewer than ``min_match_share`` of the
    served replies equal the recorded ones.
    """

    mode: Literal["none", "managed", "command"] = "none"
    url: str | None = None
    """Base URL, e.g. ``http://127.0.0.1:8080``; default for ``managed``: ``http://{host}:{port}``."""
    timeout_s: float = field(default=5.0, metadata=_rng(0.1, 600))
    """Per-request timeout for health checks; probes get ``probe_timeout_s``."""
    host: str = "127.0.0.1"
    """Address the managed server binds (loopback unless you mean to share it)."""
    port: int = field(default=8080, metadata=_rng(0, 65535))
    """Port of the managed server; 0 picks a free loopback port when it starts."""
    command: list[str] | None = None
    """Managed server argv template; placeholders {python} {base} {release} {fused} {host} {port}
    ({release} is the resolved release dir, never ``current``). Default:
    ``{python} -m mlx_lm.server --model {base} --adapter-path {release} --host {host} --port {port}``."""
    pause_during_training: bool = False
    """Stop the managed server while training and evaluating (frees unified memory); it comes back after."""
    restart_backoff_s: float = field(default=1.0, metadata=_rng(0.1, 3600))
    """First delay before restarting a managed server that died; doubles up to ``max_backoff_s``."""
    max_backoff_s: float = field(default=60.0, metadata=_rng(0.1, 86_400))
    reload_command: str | None = None
    """``command`` mode: a shell command that makes the server load the release named in
    $NIGHTSHIFT_RELEASE ($NIGHTSHIFT_BASE_MODEL, $NIGHTSHIFT_FUSED_MODEL, $NIGHTSHIFT_RUN_ID)."""
    reload_timeout_s: float = field(default=300.0, metadata=_rng(1, 86_400))
    health_timeout_s: float = field(default=120.0, metadata=_rng(1, 86_400))
    """How long a (re)started server may take to answer its health check."""
    model: str | None = None
    """The ``model`` field of probe requests (LM Studio/Ollama model name); default: the server's default."""
    probes: int = field(default=16, metadata=_rng(0, 10_000))
    """Eval prompts replayed against the server after each hand-off (0: health check only)."""
    probe_timeout_s: float = field(default=60.0, metadata=_rng(0.1, 3600))
    min_match_share: float = field(default=0.9, metadata=_rng(0, 1))
    """Share of probes whose served reply must equal the recorded reply for the hand-off to pass."""
    stop_grace_s: float = field(default=10.0, metadata=_rng(0.1, 3600))
    """SIGTERM-to-SIGKILL grace when stopping the managed server or a hook."""


@dataclass(frozen=True)
class RetentionConfig:
    """What ``nightshift gc`` (and the nightly run, after its report) removes."""

    keep_releases: int = field(default=5, metadata=_rng(1, 100_000))
    """Newest releases kept; the current and previous champion are always kept."""
    checkpoint_max_age_days: float = field(default=7.0, metadata=_rng(0, 36_500))
    """Intermediate training checkpoints of finished runs older than this are removed."""


@dataclass(frozen=True)
class PreflightConfig:
    """Bounds used by preflight checks."""

    min_train_examples: int = field(default=10, metadata=_rng(1, 10_000_000))
    min_valid_examples: int = field(default=2, metadata=_rng(1, 10_000_000))
    max_perplexity: float = field(default=1000.0, metadata=_rng(1, None, lo_open=True))
    """Smoke test: the base model's validation perplexity must be below this."""
    smoke_samples: int = field(default=8, metadata=_rng(1, 10_000))
    max_truncated_share: float = field(default=0.05, metadata=_rng(0, 1))
    """Warn when more than this share of examples exceed ``max_seq_len_tokens``."""


@dataclass(frozen=True)
class NotifyConfig:
    """How the operator hears that a night ended (see :mod:`daemon.notify`)."""

    webhook_url: str | None = None
    """POST a JSON notice here (a Slack-compatible incoming webhook, or an ntfy server's root URL)."""
    webhook_topic: str | None = None
    """The ntfy topic (ntfy's JSON publishing needs it in the body)."""
    macos: bool = False
    """Show a macOS notification through ``osascript``."""
    command: list[str] | None = None
    """A hook run without a shell (argv list); gets the JSON notice on stdin."""
    timeout_s: float = field(default=10.0, metadata=_rng(0.1, 600))
    """Per-channel limit (seconds); a slow channel is a failed one, never a stuck night."""


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``source`` is the file it came from (None for defaults)."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    source: Path | None = field(default=None, metadata={"internal": True})
    profile: str | None = field(default=None, metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (paths as absolute strings), as stored per run."""
        return _to_jsonable(self)


# ---------------------------------------------------------------- lookup


def default_config_path() -> Path:
    """``<platform user config dir>/nightshift/nightshift.yaml``."""
    import platformdirs

    return Path(platformdirs.user_config_dir("nightshift")) / CONFIG_FILENAME


def resolve_config_path(cli_path: str | os.PathLike[str] | None) -> Path:
    """The config file to use: the CLI option, else ``$NIGHTSHIFT_CONFIG``, else the default."""
    if cli_path:
        return Path(cli_path).expanduser()
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    return default_config_path()


def resolve_profile(cli_profile: str | None) -> str | None:
    """The profile to use: the CLI option, else ``$NIGHTSHIFT_PROFILE``, else none."""
    return cli_profile or os.environ.get(PROFILE_ENV) or None


def load_config(path: str | os.PathLike[str], profile: str | None = None) -> Config:
    """Load, merge the profile into, and validate a YAML config file.

    Args:
        path: the YAML file. Relative paths inside it resolve against its directory.
        profile: name of an entry under ``profiles:`` to merge over the top level.

    Raises:
        ConfigError: the file is missing or not YAML, the profile is unknown, or
            any key is unknown, mistyped or out of range (all reported at once).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"Config file not found: {path}. Pass --config PATH, set ${CONFIG_ENV}, "
            f"or create it (`nightshift demo --no-run` writes an annotated example: demo-workspace/nightshift.yaml)."
        )
    raw = load_yaml_file(path, what="Config file", error=ConfigError)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of sections, got {type(raw).__name__}.")
    return config_from_dict(raw, base_dir=path.parent.resolve(), profile=profile, source=path.resolve())


def config_from_dict(
    raw: dict[str, Any],
    *,
    base_dir: Path,
    profile: str | None = None,
    source: Path | None = None,
) -> Config:
    """Validate an already-parsed mapping (see :func:`load_config`).

    Raises:
        ConfigError: every problem found, with key paths and legal ranges.
    """
    raw = copy.deepcopy(raw)
    profiles = raw.pop("profiles", None) or {}
    where = f"Invalid config {source}" if source else "Invalid config"
    if not isinstance(profiles, dict):
        raise ConfigError(where, ["profiles: must be a mapping of profile name -> overrides"])
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none defined"
            raise ConfigError(
                f"Unknown profile {profile!r} in {source or 'config'} (profiles: {known})."
            )
        overrides = profiles[profile]
        if not isinstance(overrides, dict):
            raise ConfigError(where, [f"profiles.{profile}: must be a mapping of section overrides"])
        raw = _deep_merge(raw, overrides)
    problems: list[str] = []
    values = _build(Config, raw, "", problems, base_dir)
    if problems:
        suffix = f" (profile {profile})" if profile else ""
        raise ConfigError(f"{where}{suffix}: {len(problems)} problem(s)", problems)
    values["source"] = source
    values["profile"] = profile
    cfg = Config(**values)
    _check_consistency(cfg, where)
    return cfg


def _check_consistency(cfg: Config, where: str) -> None:
    problems = []
    t = cfg.training
    if t.warmup_steps >= t.iters:
        problems.append(
            f"training.warmup_steps: must be below training.iters ({t.iters}), got {t.warmup_steps}"
        )
    lora = t.lora
    if lora.alpha is not None and lora.scale is not None:
        if abs(lora.alpha / lora.rank - lora.scale) > 1e-9:
            problems.append(
                "training.lora: give alpha or scale, not both "
                f"(alpha/rank = {lora.alpha / lora.rank:g}, scale = {lora.scale:g})"
            )
    if t.min_learning_rate > t.learning_rate:
        problems.append(
            f"training.min_learning_rate: must not exceed training.learning_rate ({t.learning_rate:g})"
        )
    if t.deadline is not None:
        try:
            parse_deadline(t.deadline)
        except ValueError as exc:
            problems.append(f"training.deadline: {exc}")
    world = t.distributed.processes if t.distributed.hostfile is None else None
    if world is not None and t.batch_size % world:
        problems.append(
            f"training.batch_size ({t.batch_size}) must be divisible by training.distributed.processes ({world})"
        )
    problems += _serving_problems(cfg.serving)
    if problems:
        raise ConfigError(f"{where}: {len(problems)} problem(s)", problems)


def _serving_problems(sv: ServingConfig) -> list[str]:
    problems = []
    if sv.url is not None and not sv.url.lower().startswith(("http://", "https://")):
        problems.append(f"serving.url: must be an http:// or https:// URL, got {sv.url!r}")
    if sv.mode == "command" and not sv.reload_command:
        problems.append("serving.reload_command: required with serving.mode: command (the hook that reloads the server)")
    if sv.mode == "command" and not sv.url:
        problems.append("serving.url: required with serving.mode: command (where the hand-off is verified)")
    if sv.command is not None and not sv.command:
        problems.append("serving.command: must be a non-empty list of arguments, or left out for mlx_lm.server")
    for i, arg in enumerate(sv.command or []):
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(arg) if f is not None}
        except ValueError as exc:
            problems.append(f"serving.command[{i}]: {exc} in {arg!r} (write {{{{ and }}}} for literal braces)")
            continue
        unknown = sorted(names - set(SERVING_PLACEHOLDERS))
        if unknown:
            problems.append(
                f"serving.command[{i}]: unknown placeholder {{{unknown[0]}}} in {arg!r} "
                f"(known: {', '.join('{' + p + '}' for p in SERVING_PLACEHOLDERS)})"
            )
    if sv.max_backoff_s < sv.restart_backoff_s:
        problems.append("serving.max_backoff_s: must be at least serving.restart_backoff_s")
    return problems


# ---------------------------------------------------------------- validation engine


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None)) + " or null"
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _range_text(meta: dict) -> str:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is None and hi is None:
        return ""
    left = "(" if meta.get("lo_open") else "["
    lo_text = "-inf" if lo is None else f"{lo:g}"
    hi_text = "inf" if hi is None else f"{hi:g}"
    return f" in {left}{lo_text}, {hi_text}]"


def _coerce(tp: Any, value: Any, key: str, problems: list[str], base_dir: Path, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key, problems, base_dir, meta)
    if origin is Literal:
        if value not in typing.get_args(tp):
            problems.append(f"{key}: must be {_describe(tp)}, got {excerpt(value)}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{key}: must be {_describe(tp)}, got {type(value).__name__} {excerpt(value)}")
            return value
        return [_coerce(item_tp, v, f"{key}[{i}]", problems, base_dir, {}) for i, v in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{key}: must be a mapping, got {type(value).__name__} {excerpt(value)}")
            return tp()
        return tp(**_build(tp, value, key + ".", problems, base_dir))
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{key}: must be true or false, got {excerpt(value)}")
        return value
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True
        if not ok:
            problems.append(f"{key}: must be an integer{_range_text(meta)}, got {excerpt(value)}")
            return value
        _check_range(value, key, meta, problems, "an integer")
        return value
    if tp is float:
        # PyYAML (YAML 1.1) reads `1e-5` as a string: accept numeric strings.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                problems.append(f"{key}: must be a number{_range_text(meta)}, got {excerpt(value)}")
                return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{key}: must be a number{_range_text(meta)}, got {excerpt(value)}")
            return value
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            problems.append(f"{key}: must be a finite number, got {excerpt(value)}")
            return value
        _check_range(value, key, meta, problems, "a number")
        return value
    if tp is str:
        if meta.get("int_as_text") and isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # a bare number of seconds (training.deadline: 3600)
        if not isinstance(value, str):
            example = f" such as {meta['example']} (quoted)" if meta.get("example") else ""
            problems.append(f"{key}: must be a string{example}, got {excerpt(value)}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            problems.append(f"{key}: must be a path string, got {excerpt(value)}")
            return Path(".")
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base_dir / p)
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # pragma: no cover - programming error


def _check_range(value: float, key: str, meta: dict, problems: list[str], kind: str) -> None:
    lo, hi = meta.get("lo"), meta.get("hi")
    too_low = lo is not None and (value <= lo if meta.get("lo_open") else value < lo)
    too_high = hi is not None and value > hi
    if too_low or too_high:
        problems.append(f"{key}: must be {kind}{_range_text(meta)}, got {excerpt(value)}")


def _build(cls: type, data: dict[str, Any], prefix: str, problems: list[str], base_dir: Path) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in fields:
            known = ", ".join(fields)
            problems.append(f"{prefix}{key}: unknown key (known keys here: {known})")
    out: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            if hints[name] is Path:  # defaults are relative to the config file too
                out[name] = base_dir / f.default  # type: ignore[operator]
            elif isinstance(hints[name], type) and dataclasses.is_dataclass(hints[name]):
                # a missing section: its defaults, with paths resolved
                section: type = hints[name]
                out[name] = section(**_build(section, {}, prefix + name + ".", problems, base_dir))
            continue
        out[name] = _coerce(hints[name], data[name], prefix + name, problems, base_dir, dict(f.metadata))
    return out


def _to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, list):
        return [_to_jsonable(v) for v in obj]
    return obj
