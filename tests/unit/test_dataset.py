"""daemon.dataset: reading, validation, leakage detection and cleaning of chat JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon.commands.data_cmd import data
from daemon.dataset import (
    CleanChange,
    Example,
    FindingKind,
    clean_file,
    clean_record,
    find_duplicates,
    find_leaked_tokens,
    find_overlap,
    normalise_record,
    read_chat_jsonl,
    split_transcript,
    strip_template_tokens,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "preflight" / "datasets"


def findings_of(name: str) -> list[tuple[int, FindingKind, str]]:
    _, findings = read_chat_jsonl(FIXTURES / name)
    return [(f.line, f.kind, f.message) for f in findings]


# ---------------------------------------------------------------- fixtures, finding by finding


def test_good_dataset_has_no_findings() -> None:
    for name in ("train.jsonl", "valid.jsonl"):
        examples, findings = read_chat_jsonl(FIXTURES / "good" / name)
        assert findings == []
        assert examples and all(ex.messages[-1]["role"] == "assistant" for ex in examples)
    train, _ = read_chat_jsonl(FIXTURES / "good" / "train.jsonl")
    assert len(train) == 12
    assert train[0].prompt == "what is 1 plus 1"
    assert train[0].line == 1


def test_broken_line_and_non_object_are_reported_and_skipped() -> None:
    examples, _ = read_chat_jsonl(FIXTURES / "broken_json.jsonl")
    assert [ex.line for ex in examples] == [1, 4]
    assert findings_of("broken_json.jsonl") == [
        (2, FindingKind.INVALID_JSON, "not valid JSON (Expecting ',' delimiter at column 92); fix or delete the line"),
        (3, FindingKind.NOT_AN_OBJECT, 'expected a JSON object, got a list; each line must be {"messages": [...]}'),
    ]


def test_leaked_template_tokens_of_several_families() -> None:
    fix = "strip with `nightshift data clean` so only the model's own template adds them"
    assert findings_of("leaked_tokens.jsonl") == [
        (
            1,
            FindingKind.LEAKED_TOKEN,
            f"message 1 (user) contains chat-template tokens <|im_start|>, <|im_end|> (ChatML (Qwen, Hermes, Phi-4)); {fix}",
        ),
        (2, FindingKind.LEAKED_TOKEN, f"message 2 (assistant) contains chat-template token <end_of_turn> (Gemma 2/3); {fix}"),
        (3, FindingKind.LEAKED_TOKEN, f"message 1 (user) contains chat-template tokens [INST], [/INST] (Llama 2 / Mistral); {fix}"),
        (3, FindingKind.LEAKED_TOKEN, f"message 2 (assistant) contains chat-template token <|eot_id|> (Llama 3); {fix}"),
    ]
    # Leakage is reported but does not make the record unreadable.
    examples, _ = read_chat_jsonl(FIXTURES / "leaked_tokens.jsonl")
    assert len(examples) == 4


def test_think_block_is_its_own_finding() -> None:
    assert findings_of("think_block.jsonl") == [
        (
            1,
            FindingKind.THINK_BLOCK,
            "message 2 (assistant) contains a <think> block; remove it with `nightshift data clean` "
            "unless you train a reasoning model on purpose",
        )
    ]


def test_empty_final_assistant_turn_but_tool_call_turn_is_fine() -> None:
    examples, _ = read_chat_jsonl(FIXTURES / "empty_assistant.jsonl")
    assert [ex.line for ex in examples] == [1, 3]
    assert findings_of("empty_assistant.jsonl") == [
        (
            2,
            FindingKind.EMPTY_ASSISTANT,
            "the final assistant message (message 2) is empty; write the reply or drop the example",
        )
    ]


def test_typed_text_blocks_are_normalised_and_image_blocks_rejected() -> None:
    examples, _ = read_chat_jsonl(FIXTURES / "typed_blocks.jsonl")
    assert [ex.line for ex in examples] == [1]
    assert examples[0].messages[0]["content"] == "Describe\nbriefly"
    assert examples[0].messages[1]["content"] == "A cat."
    warn = "uses typed content blocks; read as plain text, rewrite them as strings with `nightshift data clean`"
    assert findings_of("typed_blocks.jsonl") == [
        (1, FindingKind.TYPED_BLOCKS, f"message 1 (user) {warn}"),
        (1, FindingKind.TYPED_BLOCKS, f"message 2 (assistant) {warn}"),
        (
            2,
            FindingKind.NON_TEXT_BLOCK,
            "message 1 (user) has a 'image_url' content block; nightshift trains on text only: "
            "remove the block or the example",
        ),
    ]


def test_role_order_problems_each_named() -> None:
    examples, _ = read_chat_jsonl(FIXTURES / "role_order.jsonl")
    assert [ex.line for ex in examples] == [7]  # the tool-call conversation is valid
    assert findings_of("role_order.jsonl") == [
        (
            1,
            FindingKind.ROLE_ORDER,
            "message 2 (user) follows another user message; turns must alternate user/assistant "
            "(merge the two messages)",
        ),
        (
            2,
            FindingKind.ROLE_ORDER,
            "message 1 (assistant): the conversation must start with a user message "
            "(after an optional system message)",
        ),
        (3, FindingKind.ROLE_ORDER, "message 2 (system): only the first message may be a system message"),
        (4, FindingKind.ROLE_ORDER, "message 2 (tool) must follow an assistant message or another tool message"),
        (
            5,
            FindingKind.NO_FINAL_ASSISTANT,
            "the last message is user, not assistant: nothing to train on "
            "(end each example with the assistant's reply)",
        ),
        (
            6,
            FindingKind.UNKNOWN_ROLE,
            "message 1 (human): unknown role 'human'; use system, user, assistant or tool "
            "(`nightshift data clean` renames 'human' to 'user')",
        ),
        (
            6,
            FindingKind.UNKNOWN_ROLE,
            "message 2 (gpt): unknown role 'gpt'; use system, user, assistant or tool "
            "(`nightshift data clean` renames 'gpt' to 'assistant')",
        ),
    ]


def test_blank_line_is_a_warning_and_skipped() -> None:
    examples, _ = read_chat_jsonl(FIXTURES / "blank_line.jsonl")
    assert [ex.line for ex in examples] == [1, 3]
    assert findings_of("blank_line.jsonl") == [
        (2, FindingKind.BLANK_LINE, "blank line; delete it (mlx-lm's own loader fails on it)")
    ]


def test_other_formats_point_to_data_clean() -> None:
    got = {line: msg for line, kind, msg in findings_of("other_formats.jsonl") if kind is FindingKind.NO_MESSAGES}
    assert got == {
        1: 'no "messages" key (ShareGPT-style "conversations" found); convert with `nightshift data clean`',
        2: 'no "messages" key (a raw "text" record); convert with `nightshift data clean`',
        3: 'no "messages" key (a "prompt"/"completion" record); convert with `nightshift data clean`',
        10: 'no "messages" key (keys: input); each line must be {"messages": [...]}',
    }


def test_rejecting_kinds() -> None:
    assert FindingKind.INVALID_JSON.rejects_record
    assert FindingKind.EMPTY_ASSISTANT.rejects_record
    assert not FindingKind.LEAKED_TOKEN.rejects_record
    assert not FindingKind.TYPED_BLOCKS.rejects_record


# ---------------------------------------------------------------- normalise_record


@pytest.mark.parametrize(
    ("record", "kind", "message"),
    [
        ({"messages": []}, FindingKind.NO_MESSAGES, '"messages" must be a non-empty list of {"role", "content"} objects'),
        ({"messages": ["hi"]}, FindingKind.BAD_MESSAGE, "message 1 is a string, not an object"),
        ({"messages": [{"content": "hi"}]}, FindingKind.BAD_MESSAGE, 'message 1 has no "role" string'),
        (
            {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]},
            FindingKind.BAD_MESSAGE,
            "message 1 (user): content must be a string or a list of content blocks, got a number",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]},
            FindingKind.BAD_MESSAGE,
            'message 2 (assistant) has no "content"',
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}, {"role": "user", "content": "q"}]},
            FindingKind.ROLE_ORDER,
            "message 2 (tool) must follow an assistant message or another tool message",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]},
            FindingKind.ROLE_ORDER,
            "message 3 (assistant) follows another assistant message; turns must alternate user/assistant "
            "(merge the two messages)",
        ),
    ],
)
def test_normalise_record_rejects(record: dict, kind: FindingKind, message: str) -> None:
    messages, issues = normalise_record(record)
    assert messages is None
    assert (issues[0].kind, issues[0].message) == (kind, message)


def test_normalise_record_keeps_tool_calls_and_extra_keys() -> None:
    record = {
        "messages": [
            {"role": "user", "content": "scan"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            {"role": "tool", "content": "ok", "tool_call_id": "1"},
            {"role": "assistant", "content": "done"},
        ]
    }
    messages, issues = normalise_record(record)
    assert issues == []
    assert messages is not None
    assert messages[1]["tool_calls"] == [{"id": "1"}]
    assert messages[2]["tool_call_id"] == "1"


# ---------------------------------------------------------------- leakage


def test_find_leaked_tokens_families_and_generic() -> None:
    text = "a [INST] b <|turn>user <|foo_bar|> <start_of_turn> <think>x</think>"
    got = [(t.token, t.family) for t in find_leaked_tokens(text)]
    assert got == [
        ("[INST]", "Llama 2 / Mistral"),
        ("<|turn>", "Gemma 4"),
        ("<|foo_bar|>", "special token"),
        ("<start_of_turn>", "Gemma 2/3"),
        ("<think>", "reasoning block"),
        ("</think>", "reasoning block"),
    ]
    assert find_leaked_tokens("plain text with <b>html</b> and a < b | c > d") == []


def test_strip_template_tokens_removes_think_blocks_unless_kept() -> None:
    text = "<think>\nplan\n</think>\nAnswer<|im_end|>"
    assert strip_template_tokens(text) == ("Answer", 1, 1)
    assert strip_template_tokens(text, keep_think=True) == ("<think>\nplan\n</think>\nAnswer", 1, 0)


# ---------------------------------------------------------------- duplicates and overlap


def test_duplicates_are_found_after_normalisation() -> None:
    examples, _ = read_chat_jsonl(FIXTURES / "duplicates.jsonl")
    pairs = [(dup.line, first.line) for dup, first in find_duplicates(examples)]
    assert pairs == [(3, 1), (4, 1)]  # line 4 differs only by key order and a typed block


def test_overlap_between_train_and_valid() -> None:
    train, _ = read_chat_jsonl(FIXTURES / "overlap" / "train.jsonl")
    valid, _ = read_chat_jsonl(FIXTURES / "overlap" / "valid.jsonl")
    assert [(v.line, t.line) for v, t in find_overlap(train, valid)] == [(2, 2)]


def test_example_prompt_is_last_user_message() -> None:
    ex = Example(
        Path("x.jsonl"),
        1,
        (
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "second"},
            {"role": "assistant", "content": "b"},
        ),
    )
    assert ex.prompt == "second"
    assert ex.record() == {"messages": [dict(m) for m in ex.messages]}


# ---------------------------------------------------------------- cleaning


def test_split_transcript_formats() -> None:
    chatml = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>"
    gemma4 = "<bos><|turn>user\nU<turn|>\n<|turn>model\nA<turn|>\n"
    llama3 = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>"
    assert split_transcript(chatml) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
    ]
    expected = [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    assert split_transcript(gemma4) == expected
    assert split_transcript(llama3) == expected
    assert split_transcript("no transcript here") is None


def test_clean_record_article_example() -> None:
    """The Qwen ChatML record from the Gemma 4 switchover write-up becomes three clean messages."""
    record = {
        "messages": [
            {
                "role": "user",
                "content": "<|im_start|>system\nYou are windu...<|im_end|>\n<|im_start|>user\nScan the network<|im_end|>\n"
                "<|im_start|>assistant\n<think>\n\n</think>\nRunning scan...<|im_end|>",
            }
        ]
    }
    result = clean_record(record)
    assert result.record == {
        "messages": [
            {"role": "system", "content": "You are windu..."},
            {"role": "user", "content": "Scan the network"},
            {"role": "assistant", "content": "Running scan..."},
        ]
    }
    assert result.changes == {CleanChange.TRANSCRIPT, CleanChange.THINK}


def test_clean_record_conversations_and_drop_reasons() -> None:
    result = clean_record({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]})
    assert result.record == {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    assert result.changes == {CleanChange.CONVERSATIONS, CleanChange.ROLES}
    dropped = clean_record({"messages": [{"role": "user", "content": "only a question"}]})
    assert dropped.record is None
    assert dropped.drop_reason == (
        "the last message is user, not assistant: nothing to train on (end each example with the assistant's reply)"
    )
    assert clean_record([1]).drop_reason == "not a JSON object (a list)"
    assert clean_record({"text": "just prose"}).drop_reason == 'a "text" record without a chat transcript to split'


def test_clean_file_report(tmp_path: Path) -> None:
    out = tmp_path / "clean.jsonl"
    report = clean_file(FIXTURES / "other_formats.jsonl", out)
    assert report.lines_read == 11
    assert report.records_written == 7
    assert report.changes == {
        "conversations_converted": 1,
        "prompt_completion_converted": 1,
        "roles_renamed": 1,
        "template_tokens_stripped": 1,
        "think_blocks_removed": 1,
        "transcript_split": 3,
        "typed_blocks_flattened": 1,
    }
    assert [line for line, _ in report.dropped] == [8, 9, 10, 11]
    assert report.dropped[0] == (8, "not valid JSON (Expecting value at column 1)")
    # The output is clean: no findings at all, and every record has string content.
    examples, findings = read_chat_jsonl(out)
    assert findings == []
    assert len(examples) == 7
    assert examples[3].record() == {
        "messages": [
            {"role": "system", "content": "You are windu..."},
            {"role": "user", "content": "Scan the network"},
            {"role": "assistant", "content": "Running scan..."},
        ]
    }


def test_data_clean_cli(tmp_path: Path) -> None:
    out = tmp_path / "clean.jsonl"
    result = CliRunner().invoke(data, ["clean", str(FIXTURES / "leaked_tokens.jsonl"), str(out)])
    assert result.exit_code == 0, result.output
    assert "4 of 4 records written" in result.output
    assert "template tokens stripped: 2 record(s)" in result.output
    assert "transcript split: 1 record(s)" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[2] == {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert all(not find_leaked_tokens(m["content"]) for r in rows for m in r["messages"])


def test_data_clean_cli_json_and_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(data, ["clean", "--json", str(FIXTURES / "overlap"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {Path(k).name: v["records_written"] for k, v in report.items()} == {"train.jsonl": 3, "valid.jsonl": 2}
    assert (tmp_path / "out" / "train.jsonl").is_file()


def test_data_clean_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_text((FIXTURES / "broken_json.jsonl").read_text())
    result = CliRunner().invoke(data, ["clean", str(src), str(src)])
    assert result.exit_code == 1
    assert "Error: OUT must differ from IN" in result.output
    assert src.read_text() == (FIXTURES / "broken_json.jsonl").read_text()
