"""Environment for the mlx worker children (imported by the parent: no mlx here).

On Linux the ``mlx[cpu]`` wheel sends matrix multiplies to a bundled reference
BLAS (about 8 GFLOP/s measured on a 2-core x86-64 box, against about 250 for
OpenBLAS). Preloading an installed OpenBLAS into the worker makes its
``cblas_sgemm`` win symbol resolution: a 100-iteration LoRA run went from 78 s
to 6.5 s with the same losses.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

#: Where Debian/Ubuntu/Fedora put OpenBLAS (libopenblas0-pthread, openblas).
_OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)

NO_BLAS_ENV = "NIGHTSHIFT_NO_OPENBLAS"
"""Set to 1 to keep mlx's own BLAS (for benchmarks that compare the two)."""


def find_openblas() -> str | None:
    """Path of an installed OpenBLAS shared library on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    for cand in _OPENBLAS_CANDIDATES:
        if Path(cand).exists():
            return cand
    found = ctypes.util.find_library("openblas")
    return found


def blas_description() -> str:
    """Which BLAS the workers use, for ``status`` and preflight."""
    if sys.platform == "darwin":
        return "Accelerate (mlx on Metal/CPU, macOS)"
    if os.environ.get(NO_BLAS_ENV) == "1":
        return "mlx bundled reference BLAS (OpenBLAS disabled by NIGHTSHIFT_NO_OPENBLAS=1)"
    lib = find_openblas()
    if lib:
        return f"OpenBLAS ({lib}, preloaded into workers)"
    return "mlx bundled reference BLAS (slow; install libopenblas0-pthread)"


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment for a worker child, with OpenBLAS preloaded on Linux,
    without secrets (API keys: :func:`daemon.secrets.without_secrets`)."""
    from daemon.secrets import without_secrets

    env = without_secrets(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    env["HF_HUB_OFFLINE"] = "1"  # never download weights at run time
    lib = None if env.get(NO_BLAS_ENV) == "1" else find_openblas()
    if lib:
        preload = env.get("LD_PRELOAD", "")
        if lib not in preload.split(":"):
            env["LD_PRELOAD"] = f"{lib}:{preload}" if preload else lib
    if extra:
        env.update(extra)
    return env
