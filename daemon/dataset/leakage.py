"""Chat-template control tokens in message text: the catalogue, detection and stripping."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Chat-template control tokens per model family, matched literally in message text.
#: ``<s>``/``</s>`` are left out on purpose: they are also HTML strike-through tags.
TEMPLATE_TOKENS: dict[str, tuple[str, ...]] = {
    "ChatML (Qwen, Hermes, Phi-4)": ("<|im_start|>", "<|im_end|>", "<|im_sep|>", "<|endoftext|>"),
    "Gemma 2/3": ("<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>"),
    "Gemma 4": ("<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|image|>"),
    "Llama 3": (
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|eom_id|>",
        "<|python_tag|>",
    ),
    "Llama 2 / Mistral": (
        "[INST]",
        "[/INST]",
        "<<SYS>>",
        "<</SYS>>",
        "[SYSTEM_PROMPT]",
        "[/SYSTEM_PROMPT]",
        "[AVAILABLE_TOOLS]",
        "[/AVAILABLE_TOOLS]",
        "[TOOL_CALLS]",
        "[TOOL_RESULTS]",
        "[/TOOL_RESULTS]",
    ),
    "Phi-3": ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
    "DeepSeek": (
        "<\uff5cbegin\u2581of\u2581sentence\uff5c>",
        "<\uff5cend\u2581of\u2581sentence\uff5c>",
        "<\uff5cUser\uff5c>",
        "<\uff5cAssistant\uff5c>",
    ),
    "GPT-OSS harmony": ("<|start|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>"),
}

THINK_FAMILY = "reasoning block"
GENERIC_FAMILY = "special token"

_TOKEN_FAMILY: dict[str, str] = {}
for _family, _tokens in TEMPLATE_TOKENS.items():
    for _tok in _tokens:
        _TOKEN_FAMILY.setdefault(_tok, _family)

_THINK_TOKENS = ("<think>", "</think>")
_LEAK_RE = re.compile(
    "|".join(re.escape(t) for t in sorted([*_TOKEN_FAMILY, *_THINK_TOKENS], key=len, reverse=True))
    # Any other ``<|name|>`` token: the ChatML-style shape most families use.
    + r"|<\|[A-Za-z0-9_]{1,40}\|>"
)
_THINK_BLOCK_RE = re.compile(r"<think>.*?(?:</think>|$)\s*", re.DOTALL)


@dataclass(frozen=True)
class LeakedToken:
    """A chat-template control token found in message text.

    Attributes:
        token: the token as written, e.g. ``<|im_start|>``.
        family: the model family it belongs to, e.g. ``ChatML (Qwen, Hermes, Phi-4)``.
        offset: character offset in the text.
    """

    token: str
    family: str
    offset: int


# ---------------------------------------------------------------- leakage


def find_leaked_tokens(text: str) -> list[LeakedToken]:
    """Every chat-template control token in ``text``, in order of appearance.

    Knows the tokens of ChatML (Qwen), Gemma 2/3, Gemma 4, Llama 2/3, Mistral,
    Phi-3, DeepSeek and GPT-OSS templates, ``<think>``/``</think>``, and any
    other ``<|name|>``-shaped token.
    """
    out = []
    for match in _LEAK_RE.finditer(text):
        token = match.group(0)
        if token in _THINK_TOKENS:
            family = THINK_FAMILY
        else:
            family = _TOKEN_FAMILY.get(token, GENERIC_FAMILY)
        out.append(LeakedToken(token, family, match.start()))
    return out


def strip_template_tokens(text: str, *, keep_think: bool = False) -> tuple[str, int, int]:
    """Remove leaked control tokens (and, unless ``keep_think``, whole ``<think>`` blocks).

    Returns:
        ``(text, tokens_removed, think_blocks_removed)``; the text is stripped
        of surrounding whitespace.
    """
    think_removed = 0
    if not keep_think:
        text, think_removed = _THINK_BLOCK_RE.subn("", text)
    removed = 0

    def _drop(match: re.Match[str]) -> str:
        nonlocal removed
        if match.group(0) in _THINK_TOKENS and keep_think:
            return match.group(0)
        removed += 1
        return ""

    text = _LEAK_RE.sub(_drop, text)
    return text.strip(), removed, think_removed
