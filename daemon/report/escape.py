"""Escaping of every string that comes from outside (suite, dataset, model, judge, errors).

Category names, item ids, prompts, replies, golds, failure reasons and judge
output are written by people or models nightshift does not control. In the
Markdown report they must not open a table cell, a link, an image, raw HTML or
break out of a code block; in the HTML report they are text nodes only.

Markdown rules (CommonMark 0.31, section 2.4 "Backslash escapes", and GFM's
table and autolink extensions):

- :func:`md_inline` backslash-escapes the ASCII punctuation that starts inline
  syntax (``\\ ` [ ] < | & ~``, ``*`` except between spaces, and ``_`` except inside a word; ``!`` and
  ``>`` are inert once ``[`` and ``<`` are escaped and nothing starts a line), folds newlines to spaces (a line
  break could start a heading or end a table row) and breaks ``scheme://`` and
  ``www.`` with a backslash so GFM's extended autolinks do not fire.
- :func:`md_block` puts multi-line text in a fenced code block whose fence is
  one backtick longer than the longest backtick run inside, so no line of the
  text can close it (CommonMark 4.5: a closing fence is at least as long as the
  opening one and of the same character).
"""

from __future__ import annotations

import html
import re
from typing import Any

_MD_SPECIAL = re.compile(r"([\\`\[\]<|&~]|(?<! )\*|\*(?! |$))")
# `*` between spaces (a cron line's `1 * * *`) can neither open nor close emphasis (CommonMark 6.2:
# a delimiter run followed by whitespace is not left-flanking, one preceded by it not right-flanking),
# nor start a list item mid-line: left as is, so it reads as typed.
# `_` inside a word (`tool_use`) can neither open nor close emphasis (CommonMark 6.2,
# left/right-flanking rules): escape only the others, so names stay readable in a terminal.
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_AUTOLINK = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{1,31}):(?=//)|\b(www)\.")
_BACKTICKS = re.compile(r"`+")


def clip(text: Any, limit: int | None) -> str:
    """``text`` as a string (None -> ``""``), cut to ``limit`` characters with an ellipsis."""
    s = "" if text is None else str(text)
    if limit is not None and len(s) > limit:
        s = s[:limit] + "…"
    return s


def md_inline(text: Any, limit: int | None = 300) -> str:
    """Inert Markdown for one line of outside text (a table cell, a list item, a heading).

    Args:
        text: any value; None renders as an empty string.
        limit: maximum characters kept before escaping (None: no limit).
    """
    s = clip(text, limit)
    s = " ".join(s.split())  # newlines, tabs and runs of spaces -> one space
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = _UNDERSCORE.sub(r"\\_", s)
    # `https\://` and `www\.`: still read as the URL, never turned into a link.
    return _AUTOLINK.sub(lambda m: f"{m.group(1)}\\:" if m.group(1) else "www\\.", s)


_PLAIN_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_FENCE = re.compile(r"^(`{3,})")


def md_plain(markdown: str) -> str:
    """The report's Markdown for a terminal: the backslash escapes of :func:`md_inline` removed
    (``http\\://`` -> ``http://``, ``\\*`` -> ``*``), fenced code blocks (where a backslash is
    the text itself) left as they are. Not for a file: the result is no longer inert Markdown."""
    out, fence = [], ""
    for line in markdown.split("\n"):
        m = _FENCE.match(line)
        if fence:
            if m and len(m.group(1)) >= len(fence) and not line[len(m.group(1)):].strip():
                fence = ""
            out.append(line)
        elif m:
            fence = m.group(1)
            out.append(line)
        else:
            out.append(_PLAIN_ESCAPE.sub(r"\1", line))
    return "\n".join(out)


def md_block(text: Any, limit: int | None = 2000, info: str = "text") -> str:
    """Outside text as an inert fenced code block (multi-line replies, failure reasons).

    Returns:
        The block, fence lines included, without a trailing newline.
    """
    s = clip(text, limit).replace("\r\n", "\n").replace("\r", "\n")
    longest = max((len(m) for m in _BACKTICKS.findall(s)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{s}\n{fence}"


def h(text: Any, limit: int | None = None) -> str:
    """HTML-escaped text (``& < > " '``) for a text node or a quoted attribute value."""
    return html.escape(clip(text, limit), quote=True)
