"""The reload-command hook: tells a server nightshift does not own to load a release.

``serving.reload_command`` is run with ``/bin/sh -c`` (so ``$UID`` and pipes
work), in its own process group, with a hard timeout, and with the release in
its environment:

- ``NIGHTSHIFT_RELEASE``: the resolved release directory (adapter files, manifest),
  empty when the base model alone is to be served;
- ``NIGHTSHIFT_FUSED_MODEL``: ``<release>/model`` when the release carries a fused model, else empty;
- ``NIGHTSHIFT_BASE_MODEL``: the base model directory;
- ``NIGHTSHIFT_RUN_ID``: the run that trained the release (empty for the base).

Examples: ``launchctl kickstart -k gui/$UID/com.example.mlx-server``,
``lms unload --all && lms load "$NIGHTSHIFT_FUSED_MODEL"``,
``ollama create nightshift -f "$NIGHTSHIFT_RELEASE/Modelfile"``.
A non-zero exit or a timeout is a failed hand-off.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from daemon import shutdown
from daemon.child import stop_process_group
from daemon.config import Config
from daemon.errors import HandoffFailed, Interrupted
from daemon.serving.server import FUSED_DIR, serving_dir

HOOK_LOG = "hook.log"


def hook_env(cfg: Config, release: str, run_id: int | None) -> dict[str, str]:
    """The hook's environment: ours plus the ``NIGHTSHIFT_*`` variables (see the module docstring)."""
    fused = Path(release) / FUSED_DIR if release else None
    return {
        **os.environ,
        "NIGHTSHIFT_RELEASE": release,
        "NIGHTSHIFT_FUSED_MODEL": str(fused) if fused is not None and fused.is_dir() else "",
        "NIGHTSHIFT_BASE_MODEL": str(cfg.paths.base_model),
        "NIGHTSHIFT_RUN_ID": "" if run_id is None else str(run_id),
    }


def run_reload_hook(cfg: Config, release: str, run_id: int | None) -> float:
    """Run ``serving.reload_command`` for ``release``; output goes to ``<state_dir>/serving/hook.log``.

    Args:
        release: resolved release directory ('' for the base model alone).
        run_id: the run that trained the release, or None.

    Returns:
        How long the hook ran (seconds).

    Raises:
        HandoffFailed: the hook is not configured, cannot start, exits non-zero or
            runs past ``serving.reload_timeout_s`` (it is then stopped, group and all).
    """
    command = cfg.serving.reload_command
    if not command:
        raise HandoffFailed("serving.reload_command is not set")
    log_path = serving_dir(cfg.paths.state_dir) / HOOK_LOG
    started = time.monotonic()
    with open(log_path, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} release={release or 'base'}: {command}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=hook_env(cfg, release, run_id),
            )
        except OSError as exc:
            raise HandoffFailed(f"cannot run serving.reload_command {command!r}: {exc}") from exc
        deadline = started + cfg.serving.reload_timeout_s
        try:
            while (code := proc.poll()) is None:
                if shutdown.stop_requested():
                    raise Interrupted(f"{shutdown.stop_reason()} while serving.reload_command ran")
                if time.monotonic() > deadline:
                    raise HandoffFailed(
                        f"serving.reload_command {command!r} did not finish within "
                        f"{cfg.serving.reload_timeout_s:g} s and was stopped (log: {log_path})"
                    )
                shutdown.wait(0.05)
        except BaseException:
            stop_process_group(proc, cfg.serving.stop_grace_s)  # type: ignore[arg-type]
            raise
    if code != 0:
        raise HandoffFailed(f"serving.reload_command {command!r} exited with status {code} (log: {log_path})")
    return time.monotonic() - started
