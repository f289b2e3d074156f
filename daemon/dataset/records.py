"""Reading and validating chat JSONL records: findings with file and line, normalised examples."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from daemon.dataset.leakage import THINK_FAMILY, find_leaked_tokens
from daemon.errors import note_reading

ROLES = ("system", "user", "assistant", "tool")
"""Roles a training example may use."""

ROLE_ALIASES = {
    "human": "user",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "developer": "system",
    "function": "tool",
    "observation": "tool",
    "ipython": "tool",
}
"""Other datasets' role names and the role ``nightshift data clean`` maps them to."""

TEXT_BLOCK_TYPES = ("text", "input_text", "output_text")
"""Typed content blocks that carry plain text (OpenAI chat and responses APIs)."""

BLOCK_JOINER = "\n"
"""Separator used when several text blocks of one message are joined."""
class FindingKind(StrEnum):
    """What is wrong with a dataset line."""

    BLANK_LINE = "blank_line"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    NO_MESSAGES = "no_messages"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_ROLE = "unknown_role"
    ROLE_ORDER = "role_order"
    NO_FINAL_ASSISTANT = "no_final_assistant"
    EMPTY_ASSISTANT = "empty_assistant"
    TYPED_BLOCKS = "typed_blocks"
    NON_TEXT_BLOCK = "non_text_block"
    LEAKED_TOKEN = "leaked_token"
    THINK_BLOCK = "think_block"

    @property
    def rejects_record(self) -> bool:
        """True when a record with this finding cannot be trained on at all."""
        return self in _REJECTING


_REJECTING = frozenset(
    {
        FindingKind.INVALID_JSON,
        FindingKind.NOT_AN_OBJECT,
        FindingKind.NO_MESSAGES,
        FindingKind.BAD_MESSAGE,
        FindingKind.UNKNOWN_ROLE,
        FindingKind.ROLE_ORDER,
        FindingKind.NO_FINAL_ASSISTANT,
        FindingKind.EMPTY_ASSISTANT,
        FindingKind.NON_TEXT_BLOCK,
    }
)


@dataclass(frozen=True)
class Issue:
    """A problem with one record, before it is tied to a file and line."""

    kind: FindingKind
    message: str


@dataclass(frozen=True)
class Finding:
    """A problem with one line of a dataset file.

    Attributes:
        path: the JSONL file.
        line: 1-based line number.
        kind: what is wrong.
        message: what is wrong and how to fix it, without the location.
    """

    path: Path
    line: int
    kind: FindingKind
    message: str

    def __str__(self) -> str:
        return f"{self.path.name} line {self.line}: {self.message}"


@dataclass(frozen=True)
class Example:
    """One usable training example: normalised messages plus where it came from.

    ``messages`` hold plain-string (or None, for tool-call turns) ``content``;
    other message keys (``tool_calls``, ``name``, ...) are kept as they were.
    """

    path: Path
    line: int
    messages: tuple[dict[str, Any], ...]
    tools: list[Any] | None = None
    key: str = field(default="", compare=False)
    """Canonical JSON of the record, for exact-duplicate detection."""

    @property
    def prompt(self) -> str:
        """The content of the last user message ('' when there is none)."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message.get("content") or ""
        return ""

    def record(self) -> dict[str, Any]:
        """The example as a JSONL record (``{"messages": [...]}``, plus ``tools``)."""
        out: dict[str, Any] = {"messages": [dict(m) for m in self.messages]}
        if self.tools is not None:
            out["tools"] = self.tools
        return out


def _flatten_blocks(content: list[Any], where: str) -> tuple[str | None, list[Issue]]:
    texts: list[str] = []
    for j, block in enumerate(content, start=1):
        if isinstance(block, str):
            texts.append(block)
            continue
        if not isinstance(block, dict):
            return None, [
                Issue(
                    FindingKind.BAD_MESSAGE,
                    f"{where}: content block {j} is {type(block).__name__}, not an object "
                    '({"type": "text", "text": ...})',
                )
            ]
        kind = block.get("type")
        if kind in TEXT_BLOCK_TYPES and isinstance(block.get("text"), str):
            texts.append(block["text"])
            continue
        if kind in TEXT_BLOCK_TYPES:
            return None, [
                Issue(FindingKind.BAD_MESSAGE, f'{where}: text block {j} has no string "text"')
            ]
        return None, [
            Issue(
                FindingKind.NON_TEXT_BLOCK,
                f"{where} has a {kind!r} content block; nightshift trains on text only: "
                "remove the block or the example",
            )
        ]
    return BLOCK_JOINER.join(texts), []


def normalise_record(record: Any) -> tuple[list[dict[str, Any]] | None, list[Issue]]:
    """Validate one parsed JSONL record and return its messages with string content.

    Typed content blocks of text (``[{"type": "text", "text": ...}]``) are
    joined with :data:`BLOCK_JOINER`; any other block type rejects the record.
    Roles must be system (first only), then user and assistant alternating,
    with tool messages only after an assistant turn, ending in a non-empty
    assistant turn (or one with ``tool_calls``).

    Returns:
        ``(messages, issues)``; ``messages`` is None when an issue rejects the
        record (see :attr:`FindingKind.rejects_record`). Leaked template
        tokens and ``<think>`` blocks are reported but not removed.
    """
    if not isinstance(record, dict):
        return None, [
            Issue(
                FindingKind.NOT_AN_OBJECT,
                f'expected a JSON object, got {json_type_name(record)}; each line must be {{"messages": [...]}}',
            )
        ]
    raw = record.get("messages")
    if raw is None:
        return None, [Issue(FindingKind.NO_MESSAGES, describe_missing_messages(record))]
    if not isinstance(raw, list) or not raw:
        return None, [
            Issue(FindingKind.NO_MESSAGES, '"messages" must be a non-empty list of {"role", "content"} objects')
        ]
    issues: list[Issue] = []
    messages: list[dict[str, Any]] = []
    for i, msg in enumerate(raw, start=1):
        if not isinstance(msg, dict):
            issues.append(Issue(FindingKind.BAD_MESSAGE, f"message {i} is {json_type_name(msg)}, not an object"))
            continue
        role = msg.get("role")
        if not isinstance(role, str):
            issues.append(Issue(FindingKind.BAD_MESSAGE, f'message {i} has no "role" string'))
            continue
        where = f"message {i} ({role})"
        if role not in ROLES:
            hint = ""
            if role.lower() in ROLE_ALIASES:
                hint = f" (`nightshift data clean` renames {role!r} to {ROLE_ALIASES[role.lower()]!r})"
            issues.append(
                Issue(
                    FindingKind.UNKNOWN_ROLE,
                    f"{where}: unknown role {role!r}; use system, user, assistant or tool{hint}",
                )
            )
            continue
        content = msg.get("content")
        if isinstance(content, list):
            text, block_issues = _flatten_blocks(content, where)
            if block_issues:
                issues.extend(block_issues)
                continue
            issues.append(
                Issue(
                    FindingKind.TYPED_BLOCKS,
                    f"{where} uses typed content blocks; read as plain text, "
                    "rewrite them as strings with `nightshift data clean`",
                )
            )
            content = text
        elif content is None and not (role == "assistant" and msg.get("tool_calls")):
            issues.append(Issue(FindingKind.BAD_MESSAGE, f'{where} has no "content"'))
            continue
        elif content is not None and not isinstance(content, str):
            issues.append(
                Issue(
                    FindingKind.BAD_MESSAGE,
                    f"{where}: content must be a string or a list of content blocks, "
                    f"got {json_type_name(content)}",
                )
            )
            continue
        out = dict(msg)
        out["content"] = content
        messages.append(out)
        if isinstance(content, str):
            issues.extend(_leak_issues(content, where))
    if any(issue.kind.rejects_record for issue in issues):
        return None, issues
    issues.extend(_order_issues(messages))
    if any(issue.kind.rejects_record for issue in issues):
        return None, issues
    return messages, issues


def _order_issues(messages: list[dict[str, Any]]) -> list[Issue]:
    issues: list[Issue] = []
    prev: str | None = None
    for i, msg in enumerate(messages, start=1):
        role = msg["role"]
        where = f"message {i} ({role})"
        if role == "system":
            if i != 1:
                issues.append(
                    Issue(FindingKind.ROLE_ORDER, f"{where}: only the first message may be a system message")
                )
                continue  # judge the next message against the turn before this one
        elif prev in (None, "system"):
            if role != "user":
                issues.append(
                    Issue(
                        FindingKind.ROLE_ORDER,
                        f"{where}: the conversation must start with a user message "
                        "(after an optional system message)",
                    )
                )
        elif role == "user" and prev == "user":
            issues.append(
                Issue(
                    FindingKind.ROLE_ORDER,
                    f"{where} follows another user message; turns must alternate user/assistant "
                    "(merge the two messages)",
                )
            )
        elif role == "assistant" and prev == "assistant":
            issues.append(
                Issue(
                    FindingKind.ROLE_ORDER,
                    f"{where} follows another assistant message; turns must alternate "
                    "user/assistant (merge the two messages)",
                )
            )
        elif role == "tool" and prev not in ("assistant", "tool"):
            issues.append(
                Issue(FindingKind.ROLE_ORDER, f"{where} must follow an assistant message or another tool message")
            )
        elif role == "user" and prev == "tool":
            issues.append(
                Issue(
                    FindingKind.ROLE_ORDER,
                    f"{where} follows a tool result; the assistant must answer the tool result first",
                )
            )
        prev = role
    if issues:
        return issues
    last = messages[-1]
    if last["role"] != "assistant":
        return [
            Issue(
                FindingKind.NO_FINAL_ASSISTANT,
                f"the last message is {last['role']}, not assistant: nothing to train on "
                "(end each example with the assistant's reply)",
            )
        ]
    content = last.get("content")
    if not (content or "").strip() and not last.get("tool_calls"):
        return [
            Issue(
                FindingKind.EMPTY_ASSISTANT,
                f"the final assistant message (message {len(messages)}) is empty; "
                "write the reply or drop the example",
            )
        ]
    return []


def _leak_issues(text: str, where: str) -> list[Issue]:
    leaks = find_leaked_tokens(text)
    issues = []
    think = [t for t in leaks if t.family == THINK_FAMILY]
    control = [t for t in leaks if t.family != THINK_FAMILY]
    if control:
        tokens = list(dict.fromkeys(t.token for t in control))
        families = list(dict.fromkeys(t.family for t in control))
        issues.append(
            Issue(
                FindingKind.LEAKED_TOKEN,
                f"{where} contains chat-template token{'s' if len(tokens) > 1 else ''} "
                f"{', '.join(tokens)} ({'; '.join(families)}); strip with `nightshift data clean` "
                "so only the model's own template adds them",
            )
        )
    if think:
        issues.append(
            Issue(
                FindingKind.THINK_BLOCK,
                f"{where} contains a <think> block; remove it with `nightshift data clean` "
                "unless you train a reasoning model on purpose",
            )
        )
    return issues


def describe_missing_messages(record: dict[str, Any]) -> str:
    """Why a record has no usable ``messages``, and which converter fixes it."""
    if "conversations" in record:
        return 'no "messages" key (ShareGPT-style "conversations" found); convert with `nightshift data clean`'
    if "text" in record:
        return 'no "messages" key (a raw "text" record); convert with `nightshift data clean`'
    if "prompt" in record and "completion" in record:
        return 'no "messages" key (a "prompt"/"completion" record); convert with `nightshift data clean`'
    keys = ", ".join(sorted(record)) or "none"
    return f'no "messages" key (keys: {keys}); each line must be {{"messages": [...]}}'


def json_type_name(value: Any) -> str:
    """A JSON value's type in words: ``an object``, ``a list``, ``null``..."""
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def canonical_key(messages: Iterable[dict[str, Any]], tools: Any = None) -> str:
    """Canonical JSON of a conversation: equal strings mean an exact duplicate."""
    return json.dumps({"messages": list(messages), "tools": tools}, sort_keys=True, ensure_ascii=False)


def normalise_prompt(text: str) -> str:
    """Case-folded, whitespace-collapsed text: how prompts are compared for contamination."""
    return " ".join(text.split()).casefold()


# ---------------------------------------------------------------- files


def iter_jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` for each line of a UTF-8 file (1-based, newline removed).

    Raises:
        OSError: the file cannot be read.
        UnicodeDecodeError: the file is not UTF-8.
    """
    with open(path, encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            yield number, text.rstrip("\n").rstrip("\r")


def read_chat_jsonl(path: str | Path) -> tuple[list[Example], list[Finding]]:
    """Read a chat JSONL file: the usable examples and every problem found.

    Records with a rejecting finding are left out of the examples; records
    with only warnings (typed blocks, leaked tokens, ``<think>``) are kept,
    normalised to string content.

    Raises:
        OSError: the file is missing or unreadable.
        UnicodeDecodeError: the file is not UTF-8.
    """
    path = Path(path)
    examples: list[Example] = []
    findings: list[Finding] = []
    number = 0
    try:
        for number, text in iter_jsonl_lines(path):
            if not text.strip():
                findings.append(
                    Finding(path, number, FindingKind.BLANK_LINE, "blank line; delete it (mlx-lm's own loader fails on it)")
                )
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                findings.append(
                    Finding(
                        path,
                        number,
                        FindingKind.INVALID_JSON,
                        f"not valid JSON ({exc.msg} at column {exc.colno}); fix or delete the line",
                    )
                )
                continue
            except RecursionError:
                findings.append(
                    Finding(path, number, FindingKind.INVALID_JSON, "JSON nested too deeply to read; fix or delete the line")
                )
                continue
            messages, issues = normalise_record(record)
            findings.extend(Finding(path, number, issue.kind, issue.message) for issue in issues)
            if messages is None:
                continue
            tools = record.get("tools") if isinstance(record, dict) else None
            examples.append(Example(path, number, tuple(messages), tools, canonical_key(messages, tools)))
    except Exception as exc:  # name the line in whatever a check reports about it
        note_reading(exc, path, number or None)
        raise
    return examples, findings


def find_duplicates(examples: Iterable[Example]) -> list[tuple[Example, Example]]:
    """Exact duplicates (after normalisation) as ``(duplicate, first occurrence)`` pairs."""
    seen: dict[str, Example] = {}
    out = []
    for ex in examples:
        first = seen.setdefault(ex.key, ex)
        if first is not ex:
            out.append((ex, first))
    return out


def find_overlap(train: Iterable[Example], valid: Iterable[Example]) -> list[tuple[Example, Example]]:
    """Validation examples that also appear verbatim in training, as ``(valid, train)`` pairs."""
    by_key: dict[str, Example] = {}
    for ex in train:
        by_key.setdefault(ex.key, ex)
    return [(ex, by_key[ex.key]) for ex in valid if ex.key in by_key]
