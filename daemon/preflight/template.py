"""Token counts without transformers: the chat template rendered with jinja2, tokenised
with the ``tokenizers`` library on ``tokenizer.json``.

This mirrors what mlx-lm's ``ChatDataset`` does through transformers'
``apply_chat_template``: the same sandboxed jinja2 environment (``trim_blocks``,
``lstrip_blocks``, ``loopcontrols``, the ``tojson`` filter, ``raise_exception``,
``strftime_now``, the ``{% generation %}`` tag), the special tokens from
``tokenizer_config.json`` as template variables, and the rendered text encoded
without adding special tokens. It keeps the scheduler process free of mlx and
transformers and costs milliseconds per thousand examples. Counts can differ
from transformers' by a token for tokenizers whose Python class adds its own
processing; ``preflight --smoke`` uses the real tokenizer.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox

from daemon.errors import TemplateError
from daemon.preflight.model import load_chat_template

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


class _Generation(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: transformers marks trained spans with it; we render the body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return str(caller())


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def compile_template(source: str) -> jinja2.Template:
    """Compile a chat template in transformers' sandboxed environment.

    Raises:
        TemplateError: a syntax error, with its line number.
    """
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error at line {exc.lineno}: {exc.message}") from exc


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]  # an AddedToken serialised as {"content": ..., ...}
    return None


class TemplateTokenizer:
    """Renders conversations with a model's chat template and counts their tokens.

    Raises (constructor):
        FileNotFoundError: no ``tokenizer.json`` or no chat template in ``model_dir``.
        TemplateError: the template does not compile.
        Exception: whatever ``tokenizers`` raises on a malformed ``tokenizer.json``.
    """

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        tok_path = model_dir / "tokenizer.json"
        if not tok_path.is_file():
            raise FileNotFoundError(f"{tok_path} is missing")
        source, _ = load_chat_template(model_dir)
        if source is None:
            raise FileNotFoundError(f"no chat template in {model_dir}")
        self._template = compile_template(source)
        self._tokenizer = Tokenizer.from_file(str(tok_path))
        self._special: dict[str, str] = {}
        cfg_path = model_dir / "tokenizer_config.json"
        if cfg_path.is_file():
            tok_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            for key in SPECIAL_TOKEN_KEYS:
                text = _token_text(tok_cfg.get(key))
                if text is not None:
                    self._special[key] = text

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = False,
               tools: list[Any] | None = None) -> str:
        """The conversation as the template renders it.

        Raises:
            TemplateError: the template refuses the conversation (``raise_exception``)
                or fails while rendering.
        """
        try:
            return self._template.render(
                messages=messages, tools=tools, add_generation_prompt=add_generation_prompt, **self._special
            )
        except TemplateError:
            raise
        except Exception as exc:  # jinja2 runtime errors of any type: report, never crash
            raise TemplateError(f"template failed: {type(exc).__name__}: {exc}") from exc

    def count(self, texts: list[str]) -> list[int]:
        """Token counts of rendered texts (special tokens in the text are matched, none added)."""
        if not texts:
            return []
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]
