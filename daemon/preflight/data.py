"""Dataset checks: format, roles, leakage, size, token lengths, duplicates, overlap,
eval-suite contamination. Every finding names its file and line."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daemon.config import Config
from daemon.dataset import (
    Example,
    Finding,
    FindingKind,
    find_duplicates,
    find_overlap,
    normalise_prompt,
    normalise_record,
    read_chat_jsonl,
)
from daemon.preflight.report import CheckResult, Level

TRAIN_FILE = "train.jsonl"
VALID_FILE = "valid.jsonl"

MAX_DETAILS = 200
"""Individual findings kept per result (the message gives the total)."""

LEVEL_BY_KIND: dict[FindingKind, Level] = {
    FindingKind.BLANK_LINE: Level.WARN,
    FindingKind.TYPED_BLOCKS: Level.WARN,
    FindingKind.THINK_BLOCK: Level.WARN,
    FindingKind.LEAKED_TOKEN: Level.FAIL,
}
"""Level of each finding kind; kinds not listed (the ones that reject a record) fail."""


def _result(name: str, level: Level, message: str, details: Iterable[str] = ()) -> CheckResult:
    return CheckResult(name, level, message, 0.0, tuple(details)[:MAX_DETAILS])


def _grouped(name: str, level: Level, lines: list[str]) -> CheckResult:
    """One result for several findings of a kind: the first in full, then a count."""
    message = lines[0] if len(lines) == 1 else f"{lines[0]} (+{len(lines) - 1} more)"
    return _result(name, level, message, lines)


def check_dataset(cfg: Config) -> tuple[list[CheckResult], dict[str, list[Example]]]:
    """Format, size, duplicate, overlap and contamination checks of ``paths.dataset``.

    Returns:
        The results and the usable examples per file name (for the token check).
    """
    data_dir = cfg.paths.dataset
    out: list[CheckResult] = []
    examples: dict[str, list[Example]] = {}
    findings: list[Finding] = []
    for name in (TRAIN_FILE, VALID_FILE):
        path = data_dir / name
        if not path.is_file():
            out.append(
                _result("dataset.files", Level.FAIL, f"{path} is missing; paths.dataset must hold {TRAIN_FILE} and {VALID_FILE}")
            )
            continue
        try:
            examples[name], found = read_chat_jsonl(path)
        except UnicodeDecodeError as exc:
            out.append(_result("dataset.files", Level.FAIL, f"{path} is not UTF-8 (byte {exc.start}); re-save it as UTF-8"))
            continue
        findings.extend(found)
    by_kind: dict[FindingKind, list[str]] = {}
    for finding in findings:
        by_kind.setdefault(finding.kind, []).append(str(finding))
    for kind in FindingKind:
        if kind in by_kind:
            out.append(_grouped(f"dataset.{kind.value}", LEVEL_BY_KIND.get(kind, Level.FAIL), by_kind[kind]))
    if examples and not findings:
        counts = ", ".join(f"{name} {len(exs)}" for name, exs in examples.items())
        out.append(_result("dataset.format", Level.OK, f"every line is valid chat JSON ({counts} examples)"))
    out.append(_size_result(cfg, examples))
    train, valid = examples.get(TRAIN_FILE, []), examples.get(VALID_FILE, [])
    out.append(_duplicates_result(train + valid))
    out.append(_overlap_result(train, valid))
    out.append(_contamination_result(cfg.paths.eval_suite, train))
    return out, examples


def _size_result(cfg: Config, examples: dict[str, list[Example]]) -> CheckResult:
    p, batch = cfg.preflight, cfg.training.batch_size
    problems = []
    for name, minimum, key in (
        (TRAIN_FILE, p.min_train_examples, "preflight.min_train_examples"),
        (VALID_FILE, p.min_valid_examples, "preflight.min_valid_examples"),
    ):
        if name not in examples:
            continue
        n = len(examples[name])
        if n < minimum:
            problems.append(f"{name} has {n} usable examples, fewer than {key} ({minimum}); add data or lower {key}")
        elif n < batch:
            problems.append(
                f"{name} has {n} usable examples, fewer than training.batch_size ({batch}); "
                "mlx-lm needs at least one full batch"
            )
    if problems:
        return _grouped("dataset.size", Level.FAIL, problems)
    counts = ", ".join(f"{name} {len(exs)}" for name, exs in examples.items()) or "no files"
    return _result("dataset.size", Level.OK, f"usable examples: {counts}")


def _duplicates_result(examples: list[Example]) -> CheckResult:
    dups = [
        f"{dup.path.name} line {dup.line} repeats {first.path.name} line {first.line} exactly; "
        "delete one (a duplicate weighs an example twice)"
        for dup, first in find_duplicates([e for e in examples if e.path.name == TRAIN_FILE])
        + find_duplicates([e for e in examples if e.path.name == VALID_FILE])
    ]
    if dups:
        return _grouped("dataset.duplicates", Level.WARN, dups)
    return _result("dataset.duplicates", Level.OK, "no exact duplicates")


def _overlap_result(train: list[Example], valid: list[Example]) -> CheckResult:
    lines = [
        f"{v.path.name} line {v.line} is also {t.path.name} line {t.line}; remove it from one file "
        "(validation loss would look better than it is)"
        for v, t in find_overlap(train, valid)
    ]
    if lines:
        return _grouped("dataset.overlap", Level.WARN, lines)
    return _result("dataset.overlap", Level.OK, "no validation example appears in training")


# ---------------------------------------------------------------- eval suite


class SuiteError(Exception):
    """The eval suite cannot be read; ``str(e)`` names the file, key and fix."""


@dataclass(frozen=True)
class EvalPrompt:
    """One eval item's prompt (the last user message when the item gives ``messages``)."""

    category: str
    item_id: str
    prompt: str


def read_eval_prompts(suite_path: Path) -> list[EvalPrompt]:
    """The prompts of every item in an eval suite YAML file.

    Reads only ``categories[].name`` and ``items`` (inline, or ``items_file``:
    JSONL relative to the suite file) with ``prompt`` or ``messages``.

    Raises:
        SuiteError: the file is missing, not YAML, or not shaped as above.
    """
    if not suite_path.is_file():
        raise SuiteError(f"eval suite {suite_path} is missing; fix paths.eval_suite (evaluation would fail after training)")
    try:
        raw = yaml.safe_load(suite_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SuiteError(f"eval suite {suite_path.name}{where} is not valid YAML: {exc}") from exc
    categories = raw.get("categories") if isinstance(raw, dict) else None
    if not isinstance(categories, list):
        raise SuiteError(f"eval suite {suite_path.name} has no 'categories' list")
    prompts: list[EvalPrompt] = []
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict):
            raise SuiteError(f"eval suite {suite_path.name}: categories[{i}] is not a mapping")
        name = str(cat.get("name", f"categories[{i}]"))
        items: Any = cat.get("items")
        if items is None and cat.get("items_file"):
            items = _read_items_file(suite_path.parent / str(cat["items_file"]), name)
        if not isinstance(items, list):
            raise SuiteError(f"eval suite {suite_path.name}: category {name} has no 'items' list or 'items_file'")
        for j, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            prompt = _item_prompt(item)
            if prompt:
                prompts.append(EvalPrompt(name, str(item.get("id", j)), prompt))
    return prompts


def _read_items_file(path: Path, category: str) -> list[Any]:
    if not path.is_file():
        raise SuiteError(f"eval suite category {category}: items_file {path} is missing")
    items = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SuiteError(f"{path.name} line {number} is not valid JSON ({exc.msg})") from exc
    return items


def _item_prompt(item: dict[str, Any]) -> str:
    if isinstance(item.get("prompt"), str):
        return str(item["prompt"])
    messages = item.get("messages")
    if isinstance(messages, list):
        # An eval item ends with the user turn: add a stand-in reply so it validates like training data.
        normalised, _ = normalise_record({"messages": messages + [{"role": "assistant", "content": "-"}]})
        source = normalised if normalised is not None else [m for m in messages if isinstance(m, dict)]
        for m in reversed(source):
            if m.get("role") == "user" and isinstance(m.get("content"), str):
                return str(m["content"])
    return ""


def _contamination_result(suite_path: Path, train: list[Example]) -> CheckResult:
    try:
        prompts = read_eval_prompts(suite_path)
    except SuiteError as exc:
        return _result("dataset.contamination", Level.FAIL, str(exc))
    except (OSError, UnicodeDecodeError) as exc:
        return _result("dataset.contamination", Level.FAIL, f"eval suite {suite_path} cannot be read: {exc}")
    by_prompt: dict[str, EvalPrompt] = {}
    for p in prompts:
        by_prompt.setdefault(normalise_prompt(p.prompt), p)
    lines = []
    for ex in train:
        hit = by_prompt.get(normalise_prompt(ex.prompt))
        if hit is not None:
            lines.append(
                f"{ex.path.name} line {ex.line}: its prompt is eval item {hit.category}/{hit.item_id}'s prompt; "
                "remove the example (training on eval prompts makes the promotion gate meaningless)"
            )
    if lines:
        return _grouped("dataset.contamination", Level.FAIL, lines)
    return _result(
        "dataset.contamination", Level.OK, f"no training prompt matches any of {len(prompts)} eval prompts"
    )


# ---------------------------------------------------------------- token lengths


def check_token_lengths(cfg: Config, examples: dict[str, list[Example]]) -> list[CheckResult]:
    """Render every usable example with the model's chat template and count its tokens.

    Results: ``dataset.template`` (fail: the template refuses an example) and
    ``dataset.tokens`` (warn when more than ``preflight.max_truncated_share``
    of the examples exceed ``training.max_seq_len_tokens``, or when an
    example's prompt alone fills the window so its answer is cut off).
    """
    from daemon.preflight.template import TemplateError, TemplateTokenizer

    all_examples = [ex for exs in examples.values() for ex in exs]
    if not all_examples:
        return [_result("dataset.tokens", Level.WARN, "token lengths not measured: no usable examples")]
    try:
        tokenizer = TemplateTokenizer(cfg.paths.base_model)
    except (FileNotFoundError, TemplateError) as exc:
        return [
            _result(
                "dataset.tokens",
                Level.WARN,
                f"token lengths not measured: {exc} (preflight --smoke tokenises with the real tokenizer)",
            )
        ]
    except Exception as exc:  # the tokenizers library's own errors on a malformed tokenizer.json
        return [
            _result(
                "dataset.tokens",
                Level.FAIL,
                f"{cfg.paths.base_model / 'tokenizer.json'} cannot be loaded ({exc}); re-download the tokenizer files",
            )
        ]
    texts: list[str] = []
    rendered: list[Example] = []
    refused: list[str] = []
    for ex in all_examples:
        try:
            texts.append(tokenizer.render(list(ex.messages), tools=ex.tools))
            rendered.append(ex)
        except TemplateError as exc:
            refused.append(f"{ex.path.name} line {ex.line}: the chat template refuses this example ({exc}); fix it")
    out: list[CheckResult] = []
    if refused:
        out.append(_grouped("dataset.template", Level.FAIL, refused))
    counts = tokenizer.count(texts)
    limit = cfg.training.max_seq_len_tokens
    over = [(ex, n) for ex, n in zip(rendered, counts, strict=True) if n > limit]
    lost: list[str] = []
    if cfg.training.mask_prompt and over:
        prompts = [tokenizer.render(list(ex.messages[:-1]), add_generation_prompt=True, tools=ex.tools) for ex, _ in over]
        for (ex, _), p in zip(over, tokenizer.count(prompts), strict=True):
            if p >= limit:
                lost.append(
                    f"{ex.path.name} line {ex.line}: the prompt alone is {p} tokens, so none of the answer fits "
                    f"in training.max_seq_len_tokens ({limit}); shorten it or raise the limit"
                )
    if not counts:
        return out
    share = len(over) / len(counts)
    stats = (
        f"{len(over)} of {len(counts)} examples ({share:.1%}) exceed {limit} tokens and will be truncated; "
        f"longest {max(counts)}, median {int(statistics.median(counts))} tokens"
    )
    details = [f"{ex.path.name} line {ex.line}: {n} tokens" for ex, n in over]
    if lost:
        out.append(_grouped("dataset.tokens", Level.WARN, lost + details))
    elif share > cfg.preflight.max_truncated_share:
        out.append(
            _result(
                "dataset.tokens",
                Level.WARN,
                f"{stats}; above preflight.max_truncated_share ({cfg.preflight.max_truncated_share:.0%}): "
                "raise training.max_seq_len_tokens or split long examples",
                details,
            )
        )
    else:
        out.append(_result("dataset.tokens", Level.OK, stats, details))
    return out
