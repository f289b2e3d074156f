"""``nightshift data clean``: any common chat format in, clean ``messages`` records out."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from daemon.dataset.composition import TAG_KEYS
from daemon.dataset.leakage import strip_template_tokens
from daemon.dataset.records import (
    BLOCK_JOINER,
    ROLE_ALIASES,
    ROLES,
    TEXT_BLOCK_TYPES,
    describe_missing_messages,
    iter_jsonl_lines,
    json_type_name,
    normalise_record,
)


class CleanChange(StrEnum):
    """What :func:`clean_record` changed in a record."""

    CONVERSATIONS = "conversations_converted"
    PROMPT_COMPLETION = "prompt_completion_converted"
    TRANSCRIPT = "transcript_split"
    ROLES = "roles_renamed"
    TYPED_BLOCKS = "typed_blocks_flattened"
    TOKENS = "template_tokens_stripped"
    THINK = "think_blocks_removed"


@dataclass(frozen=True)
class CleanResult:
    """The outcome of cleaning one record.

    Attributes:
        record: the clean ``{"messages": [...]}`` record, or None when dropped.
        changes: the kinds of change made (each at most once).
        drop_reason: why the record was dropped (with ``record`` None).
    """

    record: dict[str, Any] | None
    changes: frozenset[CleanChange]
    drop_reason: str | None = None


# A turn opener of a chat transcript pasted into a string, and the role it names.
_TRANSCRIPT_FORMATS = (
    re.compile(r"<\|im_start\|>\s*(\w+)[ \t]*\n?(.*?)(?:<\|im_end\|>|(?=<\|im_start\|>)|\Z)", re.DOTALL),
    re.compile(r"<start_of_turn>\s*(\w+)[ \t]*\n?(.*?)(?:<end_of_turn>|(?=<start_of_turn>)|\Z)", re.DOTALL),
    re.compile(r"<\|turn>\s*(\w+)[ \t]*\n?(.*?)(?:<turn\|>|(?=<\|turn>)|\Z)", re.DOTALL),
    re.compile(
        r"<\|start_header_id\|>\s*(\w+)\s*<\|end_header_id\|>\s*(.*?)(?:<\|eot_id\|>|(?=<\|start_header_id\|>)|\Z)",
        re.DOTALL,
    ),
)


def split_transcript(text: str) -> list[dict[str, str]] | None:
    """Split a chat transcript pasted as one string into messages.

    Understands ChatML (``<|im_start|>role ... <|im_end|>``), Gemma 2/3
    (``<start_of_turn>``), Gemma 4 (``<|turn>``) and Llama 3 header tokens.
    Roles go through :data:`ROLE_ALIASES` (``model`` -> ``assistant``).

    Returns:
        The messages (content still unstripped of other tokens), or None when
        ``text`` holds no transcript of these formats.
    """
    for pattern in _TRANSCRIPT_FORMATS:
        turns = pattern.findall(text)
        if not turns:
            continue
        messages = []
        for role, content in turns:
            role = ROLE_ALIASES.get(role.lower(), role.lower())
            messages.append({"role": role, "content": content.strip()})
        return messages
    return None


def clean_record(record: Any, *, keep_think: bool = False) -> CleanResult:
    """Convert a record of any common chat format into a clean ``messages`` record.

    Accepts ``messages``, ShareGPT ``conversations`` (``from``/``value``),
    ``prompt``/``completion`` pairs and raw ``text`` transcripts. Transcript
    strings inside a message are split into messages; role aliases are
    renamed; typed text blocks are joined; leaked template tokens are removed
    and, unless ``keep_think``, whole ``<think>...</think>`` blocks too. The
    result must then pass :func:`normalise_record` without a rejecting issue,
    else the record is dropped with the reason.
    """
    changes: set[CleanChange] = set()
    if not isinstance(record, dict):
        return CleanResult(None, frozenset(), f"not a JSON object ({json_type_name(record)})")
    raw: Any
    from_text = False
    if "messages" in record:
        raw = record["messages"]
    elif isinstance(record.get("conversations"), list):
        raw = []
        for turn in record["conversations"]:
            if not isinstance(turn, dict):
                return CleanResult(None, frozenset(), "a conversations entry is not an object")
            raw.append({"role": turn.get("from", turn.get("role")), "content": turn.get("value", turn.get("content"))})
        changes.add(CleanChange.CONVERSATIONS)
    elif isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
        raw = [
            {"role": "user", "content": record["prompt"]},
            {"role": "assistant", "content": record["completion"]},
        ]
        changes.add(CleanChange.PROMPT_COMPLETION)
    elif isinstance(record.get("text"), str):
        raw = [{"role": "user", "content": record["text"]}]
        from_text = True
    else:
        return CleanResult(None, frozenset(), describe_missing_messages(record))
    if not isinstance(raw, list):
        return CleanResult(None, frozenset(changes), '"messages" is not a list')

    messages: list[dict[str, Any]] = []
    for msg in raw:
        if not isinstance(msg, dict):
            return CleanResult(None, frozenset(changes), f"a message is {json_type_name(msg)}, not an object")
        msg = dict(msg)
        role = msg.get("role")
        if isinstance(role, str) and role not in ROLES and role.lower() in ROLE_ALIASES:
            msg["role"] = ROLE_ALIASES[role.lower()]
            changes.add(CleanChange.ROLES)
        content = msg.get("content")
        if isinstance(content, list) and all(
            isinstance(b, str) or (isinstance(b, dict) and b.get("type") in TEXT_BLOCK_TYPES) for b in content
        ):
            texts = [b if isinstance(b, str) else b.get("text") for b in content]
            if all(isinstance(t, str) for t in texts):
                content = BLOCK_JOINER.join(t for t in texts if isinstance(t, str))
                changes.add(CleanChange.TYPED_BLOCKS)
        if isinstance(content, str):
            parts = split_transcript(content)
            if parts is not None:
                changes.add(CleanChange.TRANSCRIPT)
                for part in parts:
                    messages.append(_strip_message(part, keep_think, changes))
                continue
        msg["content"] = content
        messages.append(_strip_message(msg, keep_think, changes))
    if from_text and CleanChange.TRANSCRIPT not in changes:
        return CleanResult(None, frozenset(changes), 'a "text" record without a chat transcript to split')

    # A system turn that held only template tokens is left empty by stripping: drop it.
    messages = [m for m in messages if not (m.get("role") == "system" and m.get("content") == "")]
    out: dict[str, Any] = {"messages": messages}
    if "tools" in record:
        out["tools"] = record["tools"]
    for key in TAG_KEYS:  # the source tag the report counts examples by
        if isinstance(record.get(key), str):
            out[key] = record[key]
    normalised, issues = normalise_record(out)
    if normalised is None:
        reason = next(i.message for i in issues if i.kind.rejects_record)
        return CleanResult(None, frozenset(changes), reason)
    out["messages"] = normalised
    return CleanResult(out, frozenset(changes))


def _strip_message(msg: dict[str, Any], keep_think: bool, changes: set[CleanChange]) -> dict[str, Any]:
    content = msg.get("content")
    if not isinstance(content, str):
        return msg
    text, removed, think = strip_template_tokens(content, keep_think=keep_think)
    if removed:
        changes.add(CleanChange.TOKENS)
    if think:
        changes.add(CleanChange.THINK)
    if removed or think:
        msg = {**msg, "content": text}
    return msg


@dataclass
class CleanReport:
    """What ``nightshift data clean`` did to one file.

    Attributes:
        lines_read: non-blank lines read.
        records_written: clean records written.
        changes: records changed, per kind of change.
        dropped: ``(line, reason)`` for each line not written.
    """

    lines_read: int = 0
    records_written: int = 0
    changes: dict[str, int] = field(default_factory=dict)
    dropped: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "lines_read": self.lines_read,
            "records_written": self.records_written,
            "changes": dict(self.changes),
            "dropped": [{"line": line, "reason": reason} for line, reason in self.dropped],
        }


def clean_file(src: Path, dst: Path, *, keep_think: bool = False) -> CleanReport:
    """Clean a JSONL file into ``dst`` (written atomically: temp file, then rename).

    Blank lines are skipped silently; unparseable or unusable lines are
    dropped and listed in the report.

    Raises:
        OSError: ``src`` cannot be read or ``dst`` cannot be written.
        UnicodeDecodeError: ``src`` is not UTF-8.
    """
    report = CleanReport()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for number, text in iter_jsonl_lines(src):
            if not text.strip():
                continue
            report.lines_read += 1
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                report.dropped.append((number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
                continue
            result = clean_record(record, keep_think=keep_think)
            for change in result.changes:
                report.changes[change.value] = report.changes.get(change.value, 0) + 1
            if result.record is None:
                report.dropped.append((number, result.drop_reason or "unusable"))
                continue
            out.write(json.dumps(result.record, ensure_ascii=False) + "\n")
            report.records_written += 1
    tmp.replace(dst)
    return report
