"""Content hashes: base model, adapter, dataset.

Hashing tens of GB of weights every night would cost about a minute, so file
digests are cached in ``<state_dir>/hash-cache.json`` keyed by (path, size,
mtime_ns) and recomputed only when a file changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

CHUNK_BYTES = 8 * 1024 * 1024
CACHE_FILENAME = "hash-cache.json"


def file_sha256(path: Path, cache: dict[str, dict] | None = None) -> str:
    """SHA-256 hex digest of a file, using ``cache`` when (size, mtime_ns) match."""
    st = path.stat()
    key = str(path.resolve())
    if cache is not None:
        hit = cache.get(key)
        if hit and hit["size"] == st.st_size and hit["mtime_ns"] == st.st_mtime_ns:
            return str(hit["sha256"])
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            h.update(chunk)
    digest = h.hexdigest()
    if cache is not None:
        cache[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    return digest


def dir_sha256(directory: Path, state_dir: Path | None = None, patterns: tuple[str, ...] = ("*",)) -> str:
    """SHA-256 over the sorted (relative name, file digest) pairs of a directory's files.

    Args:
        directory: a model or adapter directory (not recursive).
        state_dir: where the digest cache lives; None disables caching.
        patterns: glob patterns of the files to include.
    """
    cache_path = state_dir / CACHE_FILENAME if state_dir else None
    cache: dict[str, dict] | None = None
    if cache_path is not None:
        try:
            cache = {} if cache_path.is_symlink() else json.loads(cache_path.read_text())
        except (OSError, ValueError):
            cache = {}
    files = sorted({p for pat in patterns for p in directory.glob(pat) if p.is_file()})
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0" + file_sha256(p, cache).encode() + b"\n")
    if cache_path is not None and cache is not None:
        from daemon.statedir import write_private

        write_private(cache_path, json.dumps(cache).encode("utf-8"))
    return h.hexdigest()


def dataset_fingerprint(dataset_dir: Path) -> tuple[str, int]:
    """(sha256 of train.jsonl + valid.jsonl, number of non-blank example lines)."""
    h = hashlib.sha256()
    count = 0
    for name in ("train.jsonl", "valid.jsonl"):
        data = (dataset_dir / name).read_bytes()
        h.update(name.encode() + b"\0" + data + b"\0")
        count += sum(1 for line in data.splitlines() if line.strip())
    return h.hexdigest(), count
