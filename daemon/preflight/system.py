"""Machine and neighbour checks: disk, memory, power, heat, the run lock, the server."""

from __future__ import annotations

import os
from pathlib import Path

from daemon import resources
from daemon.config import Config
from daemon.lock import read_lock_holder
from daemon.preflight.report import CheckResult, Level, result
from daemon.resources import ModelShape, format_bytes


def check_disk(cfg: Config, shape: ModelShape | None, weights_bytes: int) -> list[CheckResult]:
    """Free space under ``paths.state_dir`` against :func:`daemon.resources.estimate_run_disk`."""
    t = cfg.training
    if shape is None:
        lora_params = 0
        note = " (adapter size unknown: the model's config.json is unreadable)"
    else:
        lora_params = resources.lora_parameter_count(shape, t.lora.rank, t.lora.layers)
        note = ""
    est = resources.estimate_run_disk(
        lora_params=lora_params,
        iters=t.iters,
        save_every=t.save_every,
        fuse=cfg.promotion.fuse,
        weights_bytes=weights_bytes,
    )
    free = resources.free_disk_bytes(cfg.paths.state_dir)
    parts = (
        f"adapter {format_bytes(est.adapter_bytes)}, {t.iters // t.save_every} checkpoints "
        f"{format_bytes(est.checkpoint_bytes)}, release {format_bytes(est.release_bytes)}"
        + (f", fused model {format_bytes(est.fused_bytes)}" if est.fused_bytes else "")
    )
    if est.total_bytes > free:
        return [
            result(
                "resources.disk",
                Level.FAIL,
                f"the run writes about {format_bytes(est.total_bytes)} ({parts}) but only {format_bytes(free)} "
                f"is free under {cfg.paths.state_dir}; free space or raise training.save_every",
            )
        ]
    return [
        result(
            "resources.disk",
            Level.OK,
            f"{format_bytes(free)} free under {cfg.paths.state_dir}, run writes about "
            f"{format_bytes(est.total_bytes)} ({parts}){note}",
        )
    ]


def check_memory(cfg: Config, shape: ModelShape | None, weights_bytes: int) -> list[CheckResult]:
    """Estimated peak training memory (:func:`daemon.resources.estimate_training_memory`)
    against ``USABLE_MEMORY_SHARE`` of physical memory (fail) and what is free now (warn)."""
    if shape is None:
        return [result("resources.memory", Level.WARN, "not estimated: the model's config.json is unreadable")]
    t = cfg.training
    est = resources.estimate_training_memory(
        shape,
        weights_bytes=weights_bytes,
        rank=t.lora.rank,
        lora_layers=t.lora.layers,
        batch_size=t.batch_size,
        seq_len_tokens=t.max_seq_len_tokens,
        grad_checkpoint=t.grad_checkpoint,
    )
    mem = resources.memory_info()
    usable = int(mem.total_bytes * resources.USABLE_MEMORY_SHARE)
    parts = (
        f"weights {format_bytes(est.weights_bytes)}, activations {format_bytes(est.activation_bytes)}, "
        f"logits {format_bytes(est.logits_bytes)}, LoRA+Adam {format_bytes(est.lora_bytes)}"
    )
    need = f"training needs about {format_bytes(est.total_bytes)} ({parts})"
    if est.total_bytes > usable:
        hint = "" if t.grad_checkpoint else ", set training.grad_checkpoint: true"
        return [
            result(
                "resources.memory",
                Level.FAIL,
                f"{need}, over {resources.USABLE_MEMORY_SHARE:.0%} of this machine's {format_bytes(mem.total_bytes)}; "
                f"lower training.batch_size or training.max_seq_len_tokens{hint}, or use a quantized model",
            )
        ]
    if mem.available_bytes is not None and est.total_bytes > mem.available_bytes:
        return [
            result(
                "resources.memory",
                Level.WARN,
                f"{need} but only {format_bytes(mem.available_bytes)} is free now; close large apps before the night",
            )
        ]
    return [result("resources.memory", Level.OK, f"{need}; {format_bytes(mem.total_bytes)} installed")]


def check_power() -> list[CheckResult]:
    """macOS only: on AC power (``pmset -g batt``) and not thermally throttled (``pmset -g therm``)."""
    batt = resources.read_pmset("batt")
    if batt is None:
        return [result("resources.power", Level.OK, "power and heat not checked (not macOS or pmset unavailable)")]
    out = []
    power = resources.parse_power(batt)
    if power.on_ac is False:
        pct = f" at {power.battery_percent}%" if power.battery_percent is not None else ""
        out.append(
            result(
                "resources.power",
                Level.WARN,
                f"running on battery{pct}; plug in the Mac before the night (macOS throttles or sleeps on battery)",
            )
        )
    else:
        out.append(result("resources.power", Level.OK, "on AC power"))
    therm = resources.read_pmset("therm")
    state = resources.parse_thermal(therm or "")
    if therm is not None and state.throttled:
        limit = f"CPU speed limit {state.cpu_speed_limit_pct}%" if state.cpu_speed_limit_pct is not None else ""
        levels = [
            f"{kind} warning level {lvl}"
            for kind, lvl in (("thermal", state.thermal_warning_level), ("performance", state.performance_warning_level))
            if lvl
        ]
        what = ", ".join(x for x in [limit, *levels] if x)
        out.append(
            result(
                "resources.thermal",
                Level.WARN,
                f"macOS reports thermal throttling ({what}); training will be slower: give the Mac air or check the fans",
            )
        )
    else:
        out.append(result("resources.thermal", Level.OK, "no thermal throttling reported"))
    return out


def check_lock(state_dir: Path, holding_lock: bool) -> list[CheckResult]:
    """Nobody else holds the run lock (``<state_dir>/run.lock``)."""
    if holding_lock:
        return [result("resources.lock", Level.OK, "this run holds the run lock")]
    holder = read_lock_holder(state_dir)
    if holder is None:
        return [result("resources.lock", Level.OK, "run lock is free")]
    run = holder.get("run_id")
    who = f"run {run}" if run is not None else "a starting run"
    return [
        result(
            "resources.lock",
            Level.FAIL,
            f"the run lock ({state_dir / 'run.lock'}) is held by {who}, pid {holder.get('pid', '?')}; "
            "wait for it (nightshift status) or stop it",
        )
    ]


def check_schedule(cfg: Config) -> list[CheckResult]:
    """``schedule``: the cron, rehearsal cron and time zone, through the daemon's own
    :func:`daemon.scheduler.load_schedule`; ok names the next nightly run."""
    from daemon import clock
    from daemon.errors import ConfigError
    from daemon.scheduler import load_schedule, next_fire_time

    try:
        schedule = load_schedule(cfg)
    except ConfigError as exc:
        problems = exc.problems or [str(exc)]
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return [result("schedule", Level.FAIL, f"{problems[0]}{more}; fix the schedule section", problems)]
    fire = next_fire_time(schedule.nightly, clock.now())
    when = fire.astimezone(schedule.tz).strftime("%Y-%m-%d %H:%M %Z") if fire else "never"
    return [result("schedule", Level.OK, f"cron {cfg.schedule.cron!r} in {schedule.tz}: next night {when}")]


def check_deadline(cfg: Config) -> list[CheckResult]:
    """``schedule.deadline``: which ``training.deadline`` applies to a night starting now and
    when training stops for it (``deadline 06:30 tomorrow, in 5h30m: training stops by ~05:40
    ...``); warns when it leaves no time to train. Reads the last nights' post-training times
    from the registry when there is one (it is not created here)."""
    if cfg.training.deadline is None:
        return []
    from daemon import clock
    from daemon.errors import RegistryError, TrainingFailed
    from daemon.registry import Registry
    from daemon.registry.engine import REGISTRY_FILENAME
    from daemon.train import plan_deadline, recent_post_training_s

    recent: list[float] = []
    if (cfg.paths.state_dir / REGISTRY_FILENAME).is_file():
        try:
            registry = Registry.open(cfg.paths.state_dir)
            try:
                recent = recent_post_training_s(registry, run_id=0)
            finally:
                registry.close()
        except RegistryError:
            recent = []  # the estimate falls back to a share of the time left
    now = clock.now()
    try:
        plan = plan_deadline(cfg, recent, now)
    except TrainingFailed as exc:
        return [result("schedule.deadline", Level.WARN, str(exc))]
    # Said for a night started now (a --run-now); the scheduled night's own plan is made as it starts.
    return [result("schedule.deadline", Level.OK, f"for a night started now: {plan.describe(now)}")]


HF_CACHE_HINT = (
    "mlx-lm's server answers this way when its Hugging Face hub cache dir does not exist: "
    "create it or start the server with HF_HUB_CACHE set to an existing directory"
)
"""Why ``GET /v1/models`` can answer 200 with no body (``mlx_lm.server`` scans the hub
cache with ``huggingface_hub.scan_cache_dir`` after sending its headers)."""


def check_serving(cfg: Config) -> list[CheckResult]:
    """The server the champion is handed to (one ``serving`` result).

    ``serving.mode: managed``: :func:`check_managed_server`. Otherwise, if ``serving.url``
    is set, ``GET {url}/v1/models`` answers with a JSON model list (warn only, see
    :func:`probe_models`).
    """
    if cfg.serving.mode == "managed":
        return check_managed_server(cfg)
    if not cfg.serving.url:
        return [result("serving", Level.OK, "serving.url not set: no server to check")]
    return probe_models(cfg.serving.url, cfg.serving.timeout_s)


def check_managed_server(cfg: Config) -> list[CheckResult]:
    """``serving.mode: managed``: the server nightshift runs can start (fail otherwise).

    While a supervisor (``nightshift start``/``serve``) already runs it, its port is ours:
    its URL is probed instead (:func:`probe_models`). Otherwise the command's executable
    must exist (for the default command, mlx-lm must be importable by this Python) and
    ``serving.host:serving.port`` must be bindable (port 0: the host alone; a free port is
    picked at start). Nothing is started.
    """
    import importlib.util
    import shutil
    import sys

    from daemon.serving.server import read_server_state, supervisor_alive

    sv = cfg.serving
    if supervisor_alive(cfg.paths.state_dir):
        url = (read_server_state(cfg.paths.state_dir) or {}).get("url") or sv.url
        if url:
            return probe_models(str(url), sv.timeout_s)
    problem = None
    if sv.command is None:
        shown = f"{sys.executable} -m mlx_lm.server"
        if importlib.util.find_spec("mlx_lm") is None:
            problem = f"mlx-lm is not installed for {sys.executable}: install it (pip install mlx-lm) or set serving.command"
    else:
        values = {"python": sys.executable, "base": str(cfg.paths.base_model), "release": "", "fused": ""}
        try:
            shown = sv.command[0].format(**values, host=sv.host, port=str(sv.port))
        except (KeyError, IndexError, ValueError) as exc:
            shown = sv.command[0]
            problem = f"serving.command[0] {shown!r} has a bad placeholder ({exc}); use {{python}} or a path"
        else:
            if "/" in shown and not (Path(shown).is_file() and os.access(shown, os.X_OK)):
                problem = f"managed server command {shown!r} does not exist or is not executable"
            elif "/" not in shown and shutil.which(shown) is None:
                problem = f"managed server command {shown!r} is not on PATH"
            if problem is not None:
                problem += "; install it or fix serving.command"
    problem = problem or _bind_problem(sv.host, sv.port)
    if problem is not None:
        return [result("serving", Level.FAIL, problem)]
    port = "(a free port is picked at start)" if sv.port == 0 else "(port free)"
    return [result("serving", Level.OK, f"managed server can start: {shown} on {sv.host}:{sv.port} {port}")]


def _bind_problem(host: str, port: int) -> str | None:
    """Why the managed server could not bind ``host:port`` now, or None (bound and released at once).

    ``SO_REUSEADDR`` as Python's ``http.server`` (mlx-lm's server) sets it: a port in TIME_WAIT is free.
    """
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"serving.port {port} on {host} is in use by another program: the managed server could not "
                    "bind it; stop that program or set serving.port (0 picks a free port)"
                )
            return f"serving.host {host} cannot be bound ({exc.strerror or exc}); use 127.0.0.1 or an address of this machine"
    return None


def probe_models(url: str, timeout_s: float) -> list[CheckResult]:
    """``GET {url}/v1/models`` answers with a JSON model list (warn only).

    Tells apart: no server at the URL (connection error), a wrong URL (HTTP error
    status, or a body that is not an OpenAI model list), and an mlx-lm server
    that answers 200 with an empty body (:data:`HF_CACHE_HINT`).
    """
    import httpx  # only when there is a server to ask: it costs ~50 ms to import

    endpoint = url.rstrip("/") + "/v1/models"
    try:
        response = httpx.get(endpoint, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return [
            result(
                "serving",
                Level.WARN,
                f"GET {endpoint} failed ({type(exc).__name__}: {exc}); start the server or fix serving.url",
            )
        ]
    if response.status_code == 404:
        return [
            result(
                "serving",
                Level.WARN,
                f"GET {endpoint} answered HTTP 404: no model list at this URL; check serving.url "
                "(the server's base URL, without /v1)",
            )
        ]
    if response.status_code != 200:
        return [
            result(
                "serving",
                Level.WARN,
                f"GET {endpoint} answered HTTP {response.status_code}; check the server's log and serving.url",
            )
        ]
    if not response.content.strip():
        return [result("serving", Level.WARN, f"GET {endpoint} answered 200 with an empty body; {HF_CACHE_HINT}")]
    try:
        data = response.json().get("data", [])
        ids = [str(m.get("id")) for m in data if isinstance(m, dict)]
    except (ValueError, AttributeError):
        excerpt = " ".join(response.text.split())[:60]
        return [
            result(
                "serving",
                Level.WARN,
                f"GET {endpoint} answered {excerpt!r}, not an OpenAI model list: the URL points at another "
                "server or path; check serving.url (the base URL, without /v1)",
            )
        ]
    served = ", ".join(ids[:3]) + (f" (+{len(ids) - 3} more)" if len(ids) > 3 else "") if ids else "no models listed"
    return [result("serving", Level.OK, f"{endpoint} answers: {served}")]
