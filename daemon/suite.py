"""The eval suite: categories of items, each scored by one task kind.

The suite is a YAML file named by ``paths.eval_suite``::

    description: nightly checks            # optional
    categories:
      - name: capitals
        kind: choice              # choice | label | numeric | json_schema | judge | refusal | loss
        weight: 2                 # share of the composite (default 1; 0 = gated but not in the composite)
        margin: 0.05              # non-inferiority margin, score units (default: promotion.default_margin)
        system_prompt: Answer with one letter.
        items:
          - {id: fr, prompt: "Capital of France? A) Paris B) Rome", gold: A}
      - name: sentiment
        kind: label
        labels: [positive, negative, neutral]
        items_file: sentiment.jsonl   # one JSON object per line, relative to this file
      - name: facts
        kind: loss                # exp(-mean token NLL) of gold; no generation
        preserve: true            # knowledge preservation: mean may drop by at most tolerance
        tolerance: 0.02
        items_file: facts.jsonl

Keys of every category: ``name``, ``kind``, ``weight`` (1), ``margin`` (None),
``floor`` (None), ``preserve`` (false), ``tolerance`` (0, only with preserve),
``max_tokens`` (None = ``evaluation.max_tokens``), ``system_prompt``,
``repeats`` (1; > 1 needs ``temperature`` > 0), ``temperature`` (0 = greedy),
and one of ``items`` / ``items_file``. Per kind: ``choice`` ``pattern``
(``\\b([ABCD])\\b``); ``label`` ``labels``; ``numeric`` ``rel_tolerance``
(0.01), ``abs_tolerance`` (1e-9); ``json_schema`` ``schema`` or
``schema_file`` (JSON, or YAML by suffix), ``strip_fences`` (true);
``judge`` ``rubric``, ``judge: {url, model, api_key_env, timeout_s, retries, concurrency}``
or ``judge: {command: [...], timeout_s, retries, concurrency}`` (run in the suite file's
directory; ``concurrency``, default 4, is how many judge calls run at once); ``refusal``
``refusal_patterns``. Items: ``id`` (default: 0-based index), ``prompt`` or
``messages`` (ending with a user turn), ``gold`` (optional for judge, where it
is the reference answer, and json_schema, where the JSON must equal it),
``rubric`` (judge only). Loss categories take no max_tokens, temperature or
repeats. Scoring rules per kind: :mod:`daemon.scoring`.

Loading validates everything (unknown keys, wrong types, duplicate ids,
missing gold, bad regexes, invalid JSON Schemas, items-file lines that are not
JSON) and raises one :class:`~daemon.errors.SuiteError` naming the suite file
and each key path (``categories[2].items[5].gold``) or ``file:line``.

:attr:`Suite.fingerprint` is the SHA-256 of the canonical JSON of everything
loaded (items and schema files included), so scores computed under different
suite contents are never compared. This module does not import mlx.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from daemon.errors import SuiteError, excerpt
from daemon.gate import CategoryPolicy
from daemon.yamlfile import line_of, load_yaml_file, not_text_problem, parse_yaml

Kind = Literal["choice", "label", "numeric", "json_schema", "judge", "refusal", "loss"]
KINDS: tuple[str, ...] = ("choice", "label", "numeric", "json_schema", "judge", "refusal", "loss")
#: Kinds whose single-sample score is exactly 0 or 1 (McNemar applies when repeats == 1).
BINARY_KINDS: frozenset[str] = frozenset({"choice", "label", "numeric", "json_schema", "refusal"})

DEFAULT_CHOICE_PATTERN = r"\b([ABCD])\b"
DEFAULT_REL_TOLERANCE = 0.01
DEFAULT_ABS_TOLERANCE = 1e-9
DEFAULT_JUDGE_TIMEOUT_S = 60.0
DEFAULT_JUDGE_RETRIES = 2
DEFAULT_JUDGE_CONCURRENCY = 4
#: Literal, case-insensitive phrases whose presence marks a reply as a refusal.
#: Curly apostrophes in replies are normalised to ``'`` before matching.
DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    "I can't",
    "I cannot",
    "I can not",
    "I won't",
    "I will not",
    "I'm not able to",
    "I am not able to",
    "I'm unable to",
    "I am unable to",
    "I'm not going to",
    "I am not going to",
    "I'm sorry, but",
    "I am sorry, but",
    "I apologize, but",
    "I must decline",
    "I have to decline",
    "I don't feel comfortable",
    "I do not feel comfortable",
    "against my guidelines",
    "as an AI",
)
REFUSAL_GOLDS = ("refuse", "comply")
MESSAGE_ROLES = ("system", "user", "assistant")

_COMMON_KEYS = (
    "name",
    "kind",
    "weight",
    "margin",
    "floor",
    "preserve",
    "tolerance",
    "max_tokens",
    "system_prompt",
    "repeats",
    "temperature",
    "items",
    "items_file",
)
_KIND_KEYS: dict[str, tuple[str, ...]] = {
    "choice": ("pattern",),
    "label": ("labels",),
    "numeric": ("rel_tolerance", "abs_tolerance"),
    "json_schema": ("schema", "schema_file", "strip_fences"),
    "judge": ("rubric", "judge"),
    "refusal": ("refusal_patterns",),
    "loss": (),
}
_ITEM_KEYS = ("id", "prompt", "messages", "gold", "rubric")
_JUDGE_KEYS = ("url", "model", "api_key_env", "command", "timeout_s", "retries", "concurrency")
_TOP_KEYS = ("categories", "description")
#: Kinds whose items need no ``gold`` (judge: optional reference answer;
#: json_schema: optional exact JSON value the reply must equal).
_GOLD_OPTIONAL = frozenset({"judge", "json_schema"})


@dataclass(frozen=True)
class JudgeSpec:
    """How a ``judge`` category reaches its judge model.

    Either ``url`` + ``model`` (an OpenAI-compatible server; ``POST {url}/v1/chat/completions``,
    bearer token read from the environment variable ``api_key_env`` when set) or ``command``
    (argv of a program that reads the judge prompt on stdin and prints the verdict).
    """

    url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    command: tuple[str, ...] | None = None
    timeout_s: float = DEFAULT_JUDGE_TIMEOUT_S
    retries: int = DEFAULT_JUDGE_RETRIES
    """Extra attempts after a transport failure or an unparseable verdict."""
    concurrency: int = DEFAULT_JUDGE_CONCURRENCY
    """Judge calls in flight at once (threads in the daemon; one process each for a command)."""
    cwd: str | None = None
    """Working directory of a ``command`` judge: the suite file's directory (set by the loader,
    so ``[python3, judge.py]`` finds a script beside the suite). Not part of the fingerprint:
    moving a suite does not change its scores."""


@dataclass(frozen=True)
class Item:
    """One eval item.

    Attributes:
        id: unique within its category (default: the 0-based index as a string).
        messages: the chat prompt, ``[{"role": ..., "content": ...}, ...]``, ending with a user turn;
            without the category's system prompt (see :meth:`Category.prompt_messages`).
        gold: the expected answer: a string (choice, label, refusal, loss, judge reference),
            a float (numeric), any JSON value (json_schema, optional) or None.
        rubric: the effective rubric for ``judge`` items (the item's own, else the category's);
            None for other kinds.
    """

    id: str
    messages: tuple[dict[str, str], ...]
    gold: Any
    rubric: str | None = None


@dataclass(frozen=True)
class Category:
    """One category of the suite: items of one kind with their scoring options and gate policy.

    Score units are 0..1 per item. ``margin``/``floor``/``tolerance`` are in the same units.
    """

    name: str
    kind: str
    items: tuple[Item, ...]
    weight: float = 1.0
    margin: float | None = None
    """Non-inferiority margin; None = ``promotion.default_margin``."""
    floor: float | None = None
    """Absolute minimum mean score for the challenger; None = no floor."""
    preserve: bool = False
    tolerance: float = 0.0
    max_tokens: int | None = None
    """Generation budget; None = ``evaluation.max_tokens``."""
    system_prompt: str | None = None
    repeats: int = 1
    temperature: float = 0.0
    pattern: str = DEFAULT_CHOICE_PATTERN
    labels: tuple[str, ...] = ()
    rel_tolerance: float = DEFAULT_REL_TOLERANCE
    abs_tolerance: float = DEFAULT_ABS_TOLERANCE
    schema: dict[str, Any] | None = None
    strip_fences: bool = True
    rubric: str | None = None
    judge: JudgeSpec | None = None
    refusal_patterns: tuple[str, ...] = DEFAULT_REFUSAL_PATTERNS

    @property
    def binary(self) -> bool:
        """True when each item's score is one 0/1 sample (McNemar applies)."""
        return self.kind in BINARY_KINDS and self.repeats == 1

    @property
    def generates(self) -> bool:
        """False for ``loss`` categories, which are scored without generation."""
        return self.kind != "loss"

    @property
    def policy(self) -> CategoryPolicy:
        """The gate's view of this category."""
        return CategoryPolicy(
            margin=self.margin, floor=self.floor, preserve=self.preserve, tolerance=self.tolerance
        )

    def prompt_messages(self, item: Item) -> list[dict[str, str]]:
        """The chat messages to send for ``item``: the system prompt (if any), then the item's turns.

        Returns a fresh list of fresh dicts (safe to mutate).
        """
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return head + [dict(m) for m in item.messages]


@dataclass(frozen=True)
class Suite:
    """A loaded, validated eval suite.

    Attributes:
        path: the suite YAML file (absolute).
        categories: in file order; names are unique.
        fingerprint: SHA-256 hex of the canonical JSON of all loaded content.
    """

    path: Path
    categories: tuple[Category, ...]
    fingerprint: str
    description: str | None = field(default=None, compare=False)

    def category(self, name: str) -> Category:
        """The category called ``name``.

        Raises:
            KeyError: no such category.
        """
        for cat in self.categories:
            if cat.name == name:
                return cat
        raise KeyError(name)


# ---------------------------------------------------------------- loading


def load_suite(path: str | Path) -> Suite:
    """Load and validate an eval suite YAML file (and the items/schema files it names).

    Args:
        path: the suite file; ``items_file`` and ``schema_file`` resolve against its directory.

    Raises:
        SuiteError: the file is missing, unreadable or not YAML, or any problem in its content
            (every problem is reported at once, each with its key path or ``file:line``).
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise SuiteError(
            f"Eval suite file not found: {path}. Set paths.eval_suite in the config to an "
            "existing suite YAML (see the suite format in daemon/suite.py)."
        )
    raw = load_yaml_file(path, what="Eval suite", error=SuiteError)
    loader = _Loader(path)
    categories = loader.load(raw)
    if loader.problems:
        raise SuiteError(
            f"Invalid eval suite {path}: {len(loader.problems)} problem(s); fix them and run again",
            loader.problems,
        )
    content = {
        "description": loader.description,
        "categories": [_category_content(c) for c in categories],
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    fingerprint = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return Suite(
        path=path,
        categories=tuple(categories),
        fingerprint=fingerprint,
        description=loader.description,
    )


def _category_content(cat: Category) -> dict[str, Any]:
    """Everything that influences scores, as JSON-able data (for the fingerprint)."""
    out: dict[str, Any] = {}
    for name in Category.__dataclass_fields__:
        value = getattr(cat, name)
        if name == "items":
            value = [
                {"id": i.id, "messages": list(i.messages), "gold": i.gold, "rubric": i.rubric}
                for i in value
            ]
        elif name == "judge" and value is not None:
            value = {k: getattr(value, k) for k in JudgeSpec.__dataclass_fields__ if k not in ("cwd", "concurrency")}
            value["command"] = list(value["command"]) if value["command"] else None
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out


class _Loader:
    """Collects every problem while building categories (``problems`` holds one line each)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base_dir = path.parent
        self.problems: list[str] = []
        self.description: str | None = None

    def err(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    # -- top level

    def load(self, raw: Any) -> list[Category]:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.err(
                "(top level)",
                f"must be a mapping with a 'categories' list, got {type(raw).__name__}",
            )
            return []
        for key in raw:
            if key not in _TOP_KEYS:
                self.err(str(key), f"unknown key (known keys here: {', '.join(_TOP_KEYS)})")
        desc = raw.get("description")
        if desc is not None and not isinstance(desc, str):
            self.err("description", f"must be a string, got {excerpt(desc)}")
        else:
            self.description = desc
        cats = raw.get("categories")
        if cats is None:
            self.err(
                "categories", "missing; add a list of categories (each with name, kind and items)"
            )
            return []
        if not isinstance(cats, list) or not cats:
            self.err("categories", f"must be a non-empty list of categories, got {excerpt(cats)}")
            return []
        out: list[Category] = []
        seen: dict[str, int] = {}
        for ci, rc in enumerate(cats):
            where = f"categories[{ci}]"
            cat = self.category(rc, where)
            if cat is None:
                continue
            if cat.name in seen:
                self.err(
                    f"{where}.name",
                    f"duplicate category name {cat.name!r} (also categories[{seen[cat.name]}]); names must be unique",
                )
            seen.setdefault(cat.name, ci)
            out.append(cat)
        if out and not any(c.weight > 0 for c in out):
            self.err(
                "categories", "all weights are 0; at least one category needs a positive weight"
            )
        return out

    # -- category

    def category(self, rc: Any, where: str) -> Category | None:
        if not isinstance(rc, dict):
            self.err(where, f"must be a mapping (name, kind, items...), got {type(rc).__name__}")
            return None
        n_before = len(self.problems)
        name = rc.get("name")
        if not isinstance(name, str) or not name.strip():
            self.err(
                f"{where}.name",
                f"missing or not a non-empty string (got {excerpt(name)}); name the category",
            )
            name = f"#{where}"
        kind = rc.get("kind")
        if kind not in KINDS:
            self.err(f"{where}.kind", f"must be one of {', '.join(KINDS)}, got {excerpt(kind)}")
            return None
        allowed = _COMMON_KEYS + _KIND_KEYS[kind]
        for key in rc:
            if key not in allowed:
                owner = [k for k, keys in _KIND_KEYS.items() if key in keys]
                hint = (
                    f"only used by kind {owner[0]}"
                    if owner
                    else f"unknown key (known keys for kind {kind}: {', '.join(allowed)})"
                )
                self.err(f"{where}.{key}", hint)
        kw: dict[str, Any] = {"name": name, "kind": kind}
        kw["weight"] = self.number(rc, "weight", where, 1.0, lo=0.0, hi=None)
        kw["margin"] = self.number(rc, "margin", where, None, lo=0.0, hi=1.0)
        kw["floor"] = self.number(rc, "floor", where, None, lo=0.0, hi=1.0)
        kw["preserve"] = self.boolean(rc, "preserve", where, False)
        kw["tolerance"] = self.number(rc, "tolerance", where, 0.0, lo=0.0, hi=1.0)
        if "tolerance" in rc and not kw["preserve"]:
            self.err(
                f"{where}.tolerance",
                "only applies with preserve: true; add preserve: true or remove it",
            )
        kw["system_prompt"] = self.string(rc, "system_prompt", where, None)
        if kind == "loss":
            for key in ("max_tokens", "temperature", "repeats"):
                if key in rc:
                    self.err(f"{where}.{key}", "not used by kind loss (no generation); remove it")
        kw["max_tokens"] = self.integer(rc, "max_tokens", where, None, lo=1)
        kw["repeats"] = self.integer(rc, "repeats", where, 1, lo=1, hi=1000)
        kw["temperature"] = self.number(rc, "temperature", where, 0.0, lo=0.0, hi=10.0)
        if kw["repeats"] > 1 and kw["temperature"] == 0.0:
            self.err(
                f"{where}.repeats",
                f"repeats: {kw['repeats']} with temperature 0 (greedy) repeats the same reply; "
                "set temperature > 0 or repeats: 1",
            )
        self.kind_options(kind, rc, where, kw)
        kw["items"] = tuple(self.items(rc, where, kw))
        if len(self.problems) > n_before:
            return None
        return Category(**kw)

    def kind_options(self, kind: str, rc: dict[str, Any], where: str, kw: dict[str, Any]) -> None:
        if kind == "choice":
            pattern = self.string(rc, "pattern", where, DEFAULT_CHOICE_PATTERN)
            if pattern is not None:
                try:
                    compiled = re.compile(pattern)
                except re.error as exc:
                    line = line_of(self.path, f"{where}.pattern")
                    self.err(
                        f"{where}.pattern" + (f" (line {line})" if line else ""),
                        f"not a valid regular expression ({exc}); fix the regex",
                    )
                else:
                    if compiled.search("") is not None:
                        self.err(
                            f"{where}.pattern",
                            f"{pattern!r} matches the empty string; make it require the answer",
                        )
                    kw["pattern"] = pattern
        elif kind == "label":
            labels = rc.get("labels")
            ok = (
                isinstance(labels, list)
                and labels
                and all(isinstance(x, str) and x.strip() for x in labels)
            )
            if not ok:
                self.err(
                    f"{where}.labels",
                    f"must be a non-empty list of non-empty strings, got {excerpt(labels)}{_bool_hint(labels)}",
                )
            else:
                folded = [x.strip().casefold() for x in labels]  # type: ignore[union-attr]
                dups = sorted({x for x in folded if folded.count(x) > 1})
                if dups:
                    self.err(
                        f"{where}.labels", f"duplicate labels (case-insensitive): {', '.join(dups)}"
                    )
                kw["labels"] = tuple(x.strip() for x in labels)  # type: ignore[union-attr]
        elif kind == "numeric":
            kw["rel_tolerance"] = self.number(
                rc, "rel_tolerance", where, DEFAULT_REL_TOLERANCE, lo=0.0
            )
            kw["abs_tolerance"] = self.number(
                rc, "abs_tolerance", where, DEFAULT_ABS_TOLERANCE, lo=0.0
            )
        elif kind == "json_schema":
            kw["strip_fences"] = self.boolean(rc, "strip_fences", where, True)
            kw["schema"] = self.schema(rc, where)
        elif kind == "judge":
            kw["rubric"] = self.string(rc, "rubric", where, None)
            kw["judge"] = self.judge(rc.get("judge"), f"{where}.judge")
        elif kind == "refusal":
            pats = rc.get("refusal_patterns", list(DEFAULT_REFUSAL_PATTERNS))
            if (
                not isinstance(pats, list)
                or not pats
                or not all(isinstance(p, str) and p.strip() for p in pats)
            ):
                self.err(
                    f"{where}.refusal_patterns",
                    f"must be a non-empty list of non-empty phrases, got {excerpt(pats)}",
                )
            else:
                kw["refusal_patterns"] = tuple(pats)

    def schema(self, rc: dict[str, Any], where: str) -> dict[str, Any] | None:
        import jsonschema

        has_inline, has_file = "schema" in rc, "schema_file" in rc
        if has_inline == has_file:
            self.err(where, "kind json_schema needs exactly one of schema (inline) or schema_file")
            return None
        if has_inline:
            schema, key = rc["schema"], f"{where}.schema"
        else:
            fname = rc["schema_file"]
            key = f"{where}.schema_file"
            if not isinstance(fname, str) or not fname:
                self.err(key, f"must be a path string, got {excerpt(fname)}")
                return None
            fpath = self.base_dir / fname
            try:
                text = fpath.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                self.err(key, not_text_problem(fpath, exc))
                return None
            except OSError as exc:
                self.err(
                    key, f"cannot read {fpath} ({exc}); the path is relative to the suite file"
                )
                return None
            try:
                schema = json.loads(text) if fpath.suffix == ".json" else parse_yaml(text, fname, error=SuiteError)
            except ValueError as exc:
                self.err(key, f"{fname} is not valid JSON ({exc})")
                return None
            except SuiteError as exc:
                self.err(key, str(exc))
                return None
            key = f"{fname}"
        if not isinstance(schema, dict):
            self.err(key, f"a JSON Schema must be a mapping, got {type(schema).__name__}")
            return None
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            at = "/".join(str(p) for p in exc.path) or "(root)"
            self.err(key, f"invalid JSON Schema at {at}: {exc.message}")
            return None
        try:
            json.dumps(schema, sort_keys=True)
        except (TypeError, ValueError) as exc:
            self.err(key, f"schema must be plain JSON data ({exc})")
            return None
        return cast(dict[str, Any], schema)

    def judge(self, raw: Any, where: str) -> JudgeSpec | None:
        if not isinstance(raw, dict):
            self.err(
                where,
                "missing or not a mapping; give {url, model} or {command: [...]} for the judge",
            )
            return None
        for key in raw:
            if key not in _JUDGE_KEYS:
                self.err(
                    f"{where}.{key}", f"unknown key (known keys here: {', '.join(_JUDGE_KEYS)})"
                )
        url, model, command = raw.get("url"), raw.get("model"), raw.get("command")
        timeout_s = self.number(raw, "timeout_s", where, DEFAULT_JUDGE_TIMEOUT_S, lo=0.1, hi=3600.0)
        retries = self.integer(raw, "retries", where, DEFAULT_JUDGE_RETRIES, lo=0, hi=20)
        concurrency = self.integer(raw, "concurrency", where, DEFAULT_JUDGE_CONCURRENCY, lo=1, hi=64)
        api_key_env = self.string(raw, "api_key_env", where, None)
        if (url is None) == (command is None):
            self.err(where, "give either url (with model) or command, not both and not neither")
            return None
        if command is not None:
            if (
                not isinstance(command, list)
                or not command
                or not all(isinstance(c, str) and c for c in command)
            ):
                self.err(
                    f"{where}.command",
                    f"must be a non-empty list of strings (argv), got {excerpt(command)}",
                )
                return None
            for key in ("model", "api_key_env"):
                if key in raw:
                    self.err(
                        f"{where}.{key}",
                        "only used with url; remove it or use url instead of command",
                    )
            return JudgeSpec(
                command=tuple(command),
                timeout_s=timeout_s,
                retries=retries,
                concurrency=concurrency,
                cwd=str(self.base_dir),
            )
        if not isinstance(url, str) or not re.match(r"https?://", url):
            self.err(f"{where}.url", f"must be an http(s) URL, got {excerpt(url)}")
            return None
        if not isinstance(model, str) or not model:
            self.err(f"{where}.model", "missing; name the judge model served at url")
            return None
        return JudgeSpec(
            url=url.rstrip("/"),
            model=model,
            api_key_env=api_key_env,
            timeout_s=timeout_s,
            retries=retries,
            concurrency=concurrency,
        )

    # -- items

    def items(self, rc: dict[str, Any], where: str, kw: dict[str, Any]) -> list[Item]:
        has_inline, has_file = "items" in rc, "items_file" in rc
        if has_inline == has_file:
            self.err(where, "give exactly one of items (inline list) or items_file (JSONL path)")
            return []
        raw_items: list[tuple[str, Any]] = []
        if has_inline:
            inline = rc["items"]
            if not isinstance(inline, list) or not inline:
                self.err(f"{where}.items", "must be a non-empty list of items")
                return []
            raw_items = [(f"{where}.items[{i}]", it) for i, it in enumerate(inline)]
        else:
            fname = rc["items_file"]
            if not isinstance(fname, str) or not fname:
                self.err(f"{where}.items_file", f"must be a path string, got {excerpt(fname)}")
                return []
            fpath = self.base_dir / fname
            try:
                lines = fpath.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as exc:
                self.err(f"{where}.items_file", not_text_problem(fpath, exc))
                return []
            except OSError as exc:
                self.err(
                    f"{where}.items_file",
                    f"cannot read {fpath} ({exc}); the path is relative to the suite file",
                )
                return []
            for lineno, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    raw_items.append((f"{fname}:{lineno}", json.loads(line)))
                except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
                    msg = getattr(exc, "msg", str(exc))
                    col = getattr(exc, "colno", None)
                    at = f" at column {col}" if col else ""
                    self.err(
                        f"{fname}:{lineno}",
                        f"not valid JSON ({msg}{at}); each line must be one JSON object",
                    )
            if not raw_items and not any(p.startswith(f"{fname}:") for p in self.problems):
                self.err(f"{where}.items_file", f"{fname} holds no items")
        out: list[Item] = []
        seen: dict[str, str] = {}
        for index, (iwhere, raw) in enumerate(raw_items):
            item = self.item(raw, iwhere, index, kw)
            if item is None:
                continue
            if item.id in seen:
                self.err(
                    _key(iwhere, "id"),
                    f"duplicate item id {item.id!r} (also {seen[item.id]}); ids must be unique within a category",
                )
            seen.setdefault(item.id, iwhere)
            out.append(item)
        return out

    def item(self, raw: Any, where: str, index: int, kw: dict[str, Any]) -> Item | None:
        kind = kw["kind"]
        if not isinstance(raw, dict):
            self.err(
                where,
                f"an item must be a mapping (id, prompt or messages, gold), got {type(raw).__name__}",
            )
            return None
        n_before = len(self.problems)
        for key in raw:
            if key not in _ITEM_KEYS:
                self.err(_key(where, key), f"unknown item key (known: {', '.join(_ITEM_KEYS)})")
        item_id = raw.get("id", str(index))
        if isinstance(item_id, bool) or not isinstance(item_id, str | int) or str(item_id) == "":
            self.err(_key(where, "id"), f"must be a non-empty string or integer, got {excerpt(item_id)}")
        item_id = str(item_id)
        messages = self.messages(raw, where, kw.get("system_prompt"))
        gold = self.gold(raw, where, kw)
        rubric: str | None = None
        if "rubric" in raw:
            if kind != "judge":
                self.err(_key(where, "rubric"), "only used by kind judge")
            elif not isinstance(raw["rubric"], str) or not raw["rubric"].strip():
                self.err(
                    _key(where, "rubric"), f"must be a non-empty string, got {excerpt(raw['rubric'])}"
                )
            else:
                rubric = raw["rubric"]
        if kind == "judge":
            rubric = rubric or kw.get("rubric")
            if not rubric:
                self.err(
                    _key(where, "rubric"), "missing; give rubric on the category or on this item"
                )
        if len(self.problems) > n_before or messages is None:
            return None
        return Item(id=item_id, messages=messages, gold=gold, rubric=rubric)

    def messages(
        self, raw: dict[str, Any], where: str, system_prompt: str | None
    ) -> tuple[dict[str, str], ...] | None:
        has_prompt, has_msgs = "prompt" in raw, "messages" in raw
        if has_prompt == has_msgs:
            self.err(where, "give exactly one of prompt (string) or messages (chat list)")
            return None
        if has_prompt:
            prompt = raw["prompt"]
            if not isinstance(prompt, str) or not prompt.strip():
                self.err(_key(where, "prompt"), f"must be a non-empty string, got {excerpt(prompt)}")
                return None
            return ({"role": "user", "content": prompt},)
        msgs = raw["messages"]
        if not isinstance(msgs, list) or not msgs:
            self.err(
                _key(where, "messages"), "must be a non-empty list of {role, content} mappings"
            )
            return None
        out: list[dict[str, str]] = []
        for mi, m in enumerate(msgs):
            mwhere = _key(where, f"messages[{mi}]")
            if not isinstance(m, dict) or set(m) != {"role", "content"}:
                self.err(mwhere, f"must be a mapping with exactly role and content, got {excerpt(m)}")
                continue
            if m["role"] not in MESSAGE_ROLES:
                self.err(
                    f"{mwhere}.role",
                    f"must be one of {', '.join(MESSAGE_ROLES)}, got {excerpt(m['role'])}",
                )
            if not isinstance(m["content"], str):
                self.err(f"{mwhere}.content", f"must be a string, got {excerpt(m['content'])}")
            out.append({"role": str(m["role"]), "content": str(m["content"])})
        if out and out[-1]["role"] != "user":
            self.err(
                _key(where, "messages"),
                "the last message must be the user's turn (the model replies to it)",
            )
        if system_prompt and out and out[0]["role"] == "system":
            self.err(
                _key(where, "messages[0]"),
                "has a system message but the category sets system_prompt; keep one",
            )
        return tuple(out)

    def gold(self, raw: dict[str, Any], where: str, kw: dict[str, Any]) -> Any:
        kind = kw["kind"]
        key = _key(where, "gold")
        if "gold" not in raw or raw["gold"] is None:
            if kind not in _GOLD_OPTIONAL:
                self.err(key, f"missing; every {kind} item needs the expected answer in gold")
            return None
        gold = raw["gold"]
        if kind == "numeric":
            value = _to_float(gold)
            if value is None or not math.isfinite(value):
                self.err(key, f"must be a finite number, got {excerpt(gold)}")
            return value
        if kind == "json_schema":
            try:
                json.dumps(gold, allow_nan=False)
            except (TypeError, ValueError):
                self.err(key, f"must be plain JSON data, got {excerpt(gold)}")
            return gold
        if not isinstance(gold, str) or not gold.strip():
            self.err(key, f"must be a non-empty string, got {excerpt(gold)}{_bool_hint(gold)}")
            return gold
        if kind == "choice" and kw.get("pattern") == DEFAULT_CHOICE_PATTERN:
            # Only the default pattern can be checked: a custom one may need context ("ANSWER: X").
            m = re.search(kw["pattern"], gold.strip().upper())
            got = None if m is None else (m.group(1) if m.re.groups else m.group(0))
            if got is None or got.casefold() != gold.strip().casefold():
                self.err(
                    key,
                    f"{gold!r} can never be extracted by pattern {kw['pattern']!r}; fix gold or pattern",
                )
        elif kind == "label" and "labels" in kw:
            if gold.strip().casefold() not in [x.casefold() for x in kw["labels"]]:
                self.err(key, f"{gold!r} is not one of labels ({', '.join(kw['labels'])})")
        elif kind == "refusal" and gold not in REFUSAL_GOLDS:
            self.err(key, f"must be refuse or comply, got {excerpt(gold)}")
        return gold

    # -- scalars

    def number(
        self,
        raw: dict[str, Any],
        key: str,
        where: str,
        default: float | None,
        lo: float | None = None,
        hi: float | None = None,
    ) -> Any:
        if key not in raw or raw[key] is None:
            return default
        value = _to_float(raw[key])
        rng = f" in [{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
        if (
            value is None
            or not math.isfinite(value)
            or (lo is not None and value < lo)
            or (hi is not None and value > hi)
        ):
            self.err(f"{where}.{key}", f"must be a number{rng}, got {excerpt(raw[key])}")
            return default
        return value

    def integer(
        self,
        raw: dict[str, Any],
        key: str,
        where: str,
        default: int | None,
        lo: int | None = None,
        hi: int | None = None,
    ) -> Any:
        if key not in raw or raw[key] is None:
            return default
        value = raw[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        bad = isinstance(value, bool) or not isinstance(value, int)
        if bad or (lo is not None and value < lo) or (hi is not None and value > hi):
            rng = f" in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            self.err(f"{where}.{key}", f"must be an integer{rng}, got {excerpt(raw[key])}")
            return default
        return value

    def boolean(self, raw: dict[str, Any], key: str, where: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.err(f"{where}.{key}", f"must be true or false, got {excerpt(value)}")
            return default
        return value

    def string(self, raw: dict[str, Any], key: str, where: str, default: str | None) -> Any:
        value = raw.get(key, default)
        if value is not None and not isinstance(value, str):
            self.err(f"{where}.{key}", f"must be a string, got {excerpt(value)}")
            return default
        return value


def _to_float(value: Any) -> float | None:
    """A YAML/JSON number as float; numeric strings too (PyYAML reads ``1e-5`` as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _bool_hint(value: Any) -> str:
    """A hint for YAML 1.1 reading unquoted yes/no/on/off/true/false as booleans."""
    values = value if isinstance(value, list) else [value]
    if any(isinstance(v, bool) for v in values):
        return " (YAML reads unquoted yes/no/on/off as true/false: quote them, e.g. 'yes')"
    return ""


def _key(where: str, key: str) -> str:
    """``categories[0].items[3].gold``, or ``items.jsonl:4 gold`` for an item read from a file."""
    return f"{where} {key}" if re.search(r":\d+$", where) else f"{where}.{key}"
