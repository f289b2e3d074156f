"""What a night trained on: examples per source (or category) and what changed since the last night.

An example names where it came from with a top-level ``"source"`` key (or
``"category"``; mlx-lm reads only ``messages`` and ``tools`` and ignores both),
e.g. ``{"source": "jailbreak-refusals", "messages": [...]}``. Examples without
one are counted as :data:`UNTAGGED`.

The data stage (:meth:`daemon.pipeline._Night.preflight`) records the
composition in the run directory as ``dataset.json``: the examples per split and
source, a short digest per example, and the examples added and removed per
source since the newest earlier run that recorded one. The report reads it back
with :func:`load_composition` (the digests stay in the file).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMPOSITION_FILE = "dataset.json"
"""File name of a run's recorded composition (in its run directory)."""
SPLITS = ("train", "valid")
"""The dataset files (``<split>.jsonl``) counted."""
TAG_KEYS = ("source", "category")
"""Top-level keys naming an example's source, first match wins."""
UNTAGGED = "(untagged)"
"""The source of examples that name none."""
DIGEST_CHARS = 16
"""Hex characters kept of each example's SHA-256 (64 bits: no collision among millions)."""
LOOKBACK_RUNS = 50
"""Earlier runs searched for the previous recorded composition."""


@dataclass(frozen=True)
class SourceRow:
    """One source's examples tonight and the change since the previous recorded night.

    Attributes:
        train, valid: examples in ``train.jsonl`` / ``valid.jsonl``.
        added, removed: examples (either split, by content) new tonight / gone since
            the previous night; 0 when there is nothing to compare with.
    """

    source: str
    train: int
    valid: int
    added: int
    removed: int


@dataclass(frozen=True)
class Composition:
    """A night's training data by source.

    Attributes:
        rows: one per source seen tonight or removed since the previous night, sorted by name.
        previous_run: the run compared with (None: first recorded night).
    """

    rows: list[SourceRow]
    previous_run: int | None

    @property
    def added(self) -> int:
        """Examples added since the previous night, all sources."""
        return sum(r.added for r in self.rows)

    @property
    def removed(self) -> int:
        """Examples removed since the previous night, all sources."""
        return sum(r.removed for r in self.rows)

    @property
    def untagged_only(self) -> bool:
        """No example names a source."""
        return all(r.source == UNTAGGED for r in self.rows)


def _tag(record: Any) -> str:
    if isinstance(record, dict):
        for key in TAG_KEYS:
            value = record.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return UNTAGGED


def _digest(record: Any, line: bytes) -> str:
    """The example's content digest: its messages and tools, not its tag or key order."""
    if isinstance(record, dict) and "messages" in record:
        body = json.dumps({"messages": record["messages"], "tools": record.get("tools")}, sort_keys=True, ensure_ascii=False)
        data = body.encode("utf-8")
    else:
        data = line.strip()
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]


def scan(dataset_dir: Path) -> dict[str, Any]:
    """Count the examples of ``train.jsonl`` and ``valid.jsonl`` per source and digest each.

    Blank lines are skipped (as :func:`daemon.fingerprint.dataset_fingerprint` counts);
    a line that is not JSON counts as :data:`UNTAGGED` (preflight rejects such a file first).

    Returns:
        ``{"splits": {split: {source: examples}}, "digests": {source: [digest, ...]}}``.

    Raises:
        OSError: a file cannot be read.
    """
    splits: dict[str, dict[str, int]] = {}
    digests: dict[str, list[str]] = {}
    for split in SPLITS:
        counts: Counter[str] = Counter()
        path = dataset_dir / f"{split}.jsonl"
        if not path.exists():
            splits[split] = {}
            continue
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            source = _tag(record)
            counts[source] += 1
            digests.setdefault(source, []).append(_digest(record, line))
        splits[split] = dict(sorted(counts.items()))
    return {"splits": splits, "digests": {k: sorted(v) for k, v in sorted(digests.items())}}


def compare(previous: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Examples added and removed per source (multisets of digests: a duplicate counts twice).

    An example whose source changed is removed from the old source and added to the new one.

    Returns:
        ``{source: {"added": n, "removed": n}}`` for every source with a change.
    """
    if previous is None:
        return {}
    before = previous.get("digests") or {}
    after = current.get("digests") or {}
    out: dict[str, dict[str, int]] = {}
    for source in sorted(set(before) | set(after)):
        a, b = Counter(before.get(source, [])), Counter(after.get(source, []))
        added, removed = sum((b - a).values()), sum((a - b).values())
        if added or removed:
            out[source] = {"added": added, "removed": removed}
    return out


def _read(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / COMPOSITION_FILE
    if path.is_symlink():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("splits"), dict) else None


def record_composition(dataset_dir: Path, run_dir: Path, earlier: Iterable[tuple[int, str | None]]) -> dict[str, Any]:
    """Scan tonight's data, compare it with the newest earlier recorded night, write ``dataset.json``.

    Args:
        dataset_dir: the directory holding ``train.jsonl`` and ``valid.jsonl``.
        run_dir: tonight's run directory (the file is written there, 0600, no link followed).
        earlier: ``(run id, run directory)`` of earlier runs, newest first.

    Returns:
        What was written.

    Raises:
        OSError: the data cannot be read or the file cannot be written.
        StateDirError: a link is planted at the file's name.
    """
    from daemon.statedir import write_private

    current = scan(dataset_dir)
    previous_run, previous = None, None
    for run_id, directory in earlier:
        if directory and (found := _read(Path(directory))) is not None:
            previous_run, previous = run_id, found
            break
    record = {**current, "previous_run": previous_run, "changes": compare(previous, current)}
    write_private(run_dir / COMPOSITION_FILE, json.dumps(record).encode("utf-8"))
    return record


def load_composition(run_dir: str | Path | None) -> Composition | None:
    """A run's recorded composition, or None when it recorded none (older runs, failed preflight)."""
    data = _read(Path(run_dir)) if run_dir else None
    if data is None:
        return None
    splits = data["splits"]
    changes = data.get("changes") or {}
    names = set(changes)
    for counts in splits.values():
        names |= set(counts)
    rows = [
        SourceRow(
            source=str(name),
            train=int(splits.get("train", {}).get(name, 0)),
            valid=int(splits.get("valid", {}).get(name, 0)),
            added=int(changes.get(name, {}).get("added", 0)),
            removed=int(changes.get(name, {}).get("removed", 0)),
        )
        for name in sorted(names)
    ]
    prev = data.get("previous_run")
    return Composition(rows=rows, previous_run=int(prev) if prev is not None else None)
