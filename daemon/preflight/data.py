"""Dataset checks: format, roles, leakage, size, token lengths, duplicates, overlap,
eval-suite contamination. Every finding names its file and line."""

from __future__ import annotations

import statistics

from daemon.config import Config
from daemon.dataset import (
    Example,
    Finding,
    FindingKind,
    find_duplicates,
    find_overlap,
    normalise_prompt,
    read_chat_jsonl,
)
from daemon.errors import TemplateError, reading
from daemon.preflight.report import CheckResult, Level, grouped, result
from daemon.suite import Suite

TRAIN_FILE = "train.jsonl"
VALID_FILE = "valid.jsonl"

LEVEL_BY_KIND: dict[FindingKind, Level] = {
    FindingKind.BLANK_LINE: Level.WARN,
    FindingKind.TYPED_BLOCKS: Level.WARN,
    FindingKind.THINK_BLOCK: Level.WARN,
    FindingKind.LEAKED_TOKEN: Level.FAIL,
}
"""Level of each finding kind; kinds not listed (the ones that reject a record) fail."""




def check_dataset(cfg: Config, suite: Suite | None) -> tuple[list[CheckResult], dict[str, list[Example]]]:
    """Format, size, duplicate, overlap and contamination checks of ``paths.dataset``.

    ``suite``: the loaded eval suite (None when it does not load), for the contamination check.

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
                result("dataset.files", Level.FAIL, f"{path} is missing; paths.dataset must hold {TRAIN_FILE} and {VALID_FILE}")
            )
            continue
        try:
            examples[name], found = read_chat_jsonl(path)
        except UnicodeDecodeError as exc:
            out.append(result("dataset.files", Level.FAIL, f"{path} is not UTF-8 (byte {exc.start}); re-save it as UTF-8"))
            continue
        findings.extend(found)
    by_kind: dict[FindingKind, list[str]] = {}
    for finding in findings:
        by_kind.setdefault(finding.kind, []).append(str(finding))
    for kind in FindingKind:
        if kind in by_kind:
            out.append(grouped(f"dataset.{kind.value}", LEVEL_BY_KIND.get(kind, Level.FAIL), by_kind[kind]))
    if examples and not findings:
        counts = ", ".join(f"{name} {len(exs)}" for name, exs in examples.items())
        out.append(result("dataset.format", Level.OK, f"every line is valid chat JSON ({counts} examples)"))
    out.append(_size_result(cfg, examples))
    train, valid = examples.get(TRAIN_FILE, []), examples.get(VALID_FILE, [])
    out.append(_duplicates_result(train + valid))
    out.append(_overlap_result(train, valid))
    out.append(_contamination_result(suite, train))
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
        return grouped("dataset.size", Level.FAIL, problems)
    counts = ", ".join(f"{name} {len(exs)}" for name, exs in examples.items()) or "no files"
    return result("dataset.size", Level.OK, f"usable examples: {counts}")


def _duplicates_result(examples: list[Example]) -> CheckResult:
    dups = [
        f"{dup.path.name} line {dup.line} repeats {first.path.name} line {first.line} exactly; "
        "delete one (a duplicate weighs an example twice)"
        for dup, first in find_duplicates([e for e in examples if e.path.name == TRAIN_FILE])
        + find_duplicates([e for e in examples if e.path.name == VALID_FILE])
    ]
    if dups:
        return grouped("dataset.duplicates", Level.WARN, dups)
    return result("dataset.duplicates", Level.OK, "no exact duplicates")


def _overlap_result(train: list[Example], valid: list[Example]) -> CheckResult:
    lines = [
        f"{v.path.name} line {v.line} is also {t.path.name} line {t.line}; remove it from one file "
        "(validation loss would look better than it is)"
        for v, t in find_overlap(train, valid)
    ]
    if lines:
        return grouped("dataset.overlap", Level.WARN, lines)
    return result("dataset.overlap", Level.OK, "no validation example appears in training")


# ---------------------------------------------------------------- eval suite


def _contamination_result(suite: Suite | None, train: list[Example]) -> CheckResult:
    if suite is None:
        return result("dataset.contamination", Level.WARN, "not checked: the eval suite did not load (see suite)")
    by_prompt: dict[str, tuple[str, str]] = {}
    for cat in suite.categories:
        for item in cat.items:
            prompt = item.messages[-1]["content"]  # the loader guarantees a final user turn
            by_prompt.setdefault(normalise_prompt(prompt), (cat.name, item.id))
    lines = []
    for ex in train:
        hit = by_prompt.get(normalise_prompt(ex.prompt))
        if hit is not None:
            lines.append(
                f"{ex.path.name} line {ex.line}: its prompt is eval item {hit[0]}/{hit[1]}'s prompt; "
                "remove the example (training on eval prompts makes the promotion gate meaningless)"
            )
    if lines:
        return grouped("dataset.contamination", Level.FAIL, lines)
    n = sum(len(c.items) for c in suite.categories)
    return result("dataset.contamination", Level.OK, f"no training prompt matches any of {n} eval prompts")


# ---------------------------------------------------------------- token lengths


def check_token_lengths(cfg: Config, examples: dict[str, list[Example]]) -> list[CheckResult]:
    """Render every usable example with the model's chat template and count its tokens.

    Results: ``dataset.template`` (fail: the template refuses an example) and
    ``dataset.tokens`` (warn when more than ``preflight.max_truncated_share``
    of the examples exceed ``training.max_seq_len_tokens``, or when an
    example's prompt alone fills the window so its answer is cut off).
    """
    from daemon.preflight.template import TemplateTokenizer

    all_examples = [ex for exs in examples.values() for ex in exs]
    if not all_examples:
        return [result("dataset.tokens", Level.WARN, "token lengths not measured: no usable examples")]
    try:
        tokenizer = TemplateTokenizer(cfg.paths.base_model)
    except (FileNotFoundError, TemplateError) as exc:
        return [
            result(
                "dataset.tokens",
                Level.WARN,
                f"token lengths not measured: {exc} (preflight --smoke tokenises with the real tokenizer)",
            )
        ]
    except Exception as exc:  # the tokenizers library's own errors on a malformed tokenizer.json
        return [
            result(
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
            with reading(ex.path, ex.line):
                texts.append(tokenizer.render(list(ex.messages), tools=ex.tools))
            rendered.append(ex)
        except TemplateError as exc:
            refused.append(f"{ex.path.name} line {ex.line}: the chat template refuses this example ({exc}); fix it")
    out: list[CheckResult] = []
    if refused:
        out.append(grouped("dataset.template", Level.FAIL, refused))
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
        out.append(grouped("dataset.tokens", Level.WARN, lost + details))
    elif share > cfg.preflight.max_truncated_share:
        out.append(
            result(
                "dataset.tokens",
                Level.WARN,
                f"{stats}; above preflight.max_truncated_share ({cfg.preflight.max_truncated_share:.0%}): "
                "raise training.max_seq_len_tokens or split long examples",
                details,
            )
        )
    else:
        out.append(result("dataset.tokens", Level.OK, stats, details))
    return out
