"""Chat JSONL: reading, validating, normalising and cleaning training data.

A dataset line is ``{"messages": [{"role": ..., "content": ...}, ...]}`` (the
format mlx-lm's ``ChatDataset`` takes). :func:`read_chat_jsonl` reads a file and
returns the usable examples plus a :class:`Finding` (file, line, kind, message
with the fix) for every problem, all of them, not just the first.
:func:`clean_record` is what ``nightshift data clean`` applies: it converts
ShareGPT ``conversations``, ``prompt``/``completion`` pairs, chat transcripts
pasted as strings (ChatML, Gemma, Gemma 4, Llama 3) and typed content blocks
into plain ``messages``, and strips leaked chat-template tokens.

No mlx here: the scheduler process and the workers both import this module.
"""

from daemon.dataset.clean import (
    CleanChange,
    CleanReport,
    CleanResult,
    clean_file,
    clean_record,
    split_transcript,
)
from daemon.dataset.leakage import (
    TEMPLATE_TOKENS,
    LeakedToken,
    find_leaked_tokens,
    strip_template_tokens,
)
from daemon.dataset.records import (
    BLOCK_JOINER,
    ROLE_ALIASES,
    ROLES,
    TEXT_BLOCK_TYPES,
    Example,
    Finding,
    FindingKind,
    Issue,
    canonical_key,
    find_duplicates,
    find_overlap,
    iter_jsonl_lines,
    normalise_prompt,
    normalise_record,
    read_chat_jsonl,
)

__all__ = [
    "BLOCK_JOINER",
    "ROLES",
    "ROLE_ALIASES",
    "TEMPLATE_TOKENS",
    "TEXT_BLOCK_TYPES",
    "CleanChange",
    "CleanReport",
    "CleanResult",
    "Example",
    "Finding",
    "FindingKind",
    "Issue",
    "LeakedToken",
    "canonical_key",
    "clean_file",
    "clean_record",
    "find_duplicates",
    "find_leaked_tokens",
    "find_overlap",
    "iter_jsonl_lines",
    "normalise_prompt",
    "normalise_record",
    "read_chat_jsonl",
    "split_transcript",
    "strip_template_tokens",
]
