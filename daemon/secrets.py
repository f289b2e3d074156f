"""Secrets: the values of API-key environment variables never reach a record.

A secret is the value of an environment variable that the config names (a
judge's ``api_key_env``, registered with :func:`protect` when the judge is
built) or whose name ends in ``API_KEY``, ``TOKEN``, ``SECRET`` or
``PASSWORD``. :func:`redact` replaces such values with ``[$NAME]`` in failure
reasons (the registry does it on write), log events and error lines;
:func:`without_secrets` drops them from the environment of the mlx children,
which never need them (judge commands keep theirs: they may need a key).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

SECRET_NAME = re.compile(r"(API_KEY|APIKEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
MIN_SECRET_CHARS = 6
"""Shorter values are not redacted (they would match ordinary words and numbers)."""

_protected: set[str] = set()


def protect(names: Iterable[str | None]) -> None:
    """Treat these environment variables as secrets from now on (None entries are ignored)."""
    _protected.update(n for n in names if n)


def secret_names(environ: Mapping[str, str] | None = None) -> set[str]:
    """Names of the variables of ``environ`` (default ``os.environ``) that hold secrets."""
    env = os.environ if environ is None else environ
    return {n for n in env if n in _protected or SECRET_NAME.search(n)}


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret value replaced by ``[$NAME]``."""
    env = os.environ if environ is None else environ
    for name in sorted(secret_names(env), key=lambda n: -len(env.get(n, ""))):
        value = env.get(name, "")
        if len(value) >= MIN_SECRET_CHARS and value in text:
            text = text.replace(value, f"[${name}]")
    return text


def without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` without the secret variables."""
    drop = secret_names(environ)
    return {k: v for k, v in environ.items() if k not in drop}
