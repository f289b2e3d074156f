"""The one YAML loader: duplicate keys, alias bombs and syntax errors as one line with line/column."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import ConfigError, SuiteError
from daemon.yamlfile import MAX_EXPANDED_NODES, load_yaml_file, parse_yaml


def alias_bomb(levels: int = 9) -> str:
    """The classic "billion laughs": each level is 9 aliases of the one before (~1.5 KB at 9 levels)."""
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for i in range(1, levels):
        name = f"l{i}"
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return text


def test_duplicate_key_is_an_error_with_both_lines() -> None:
    """A second `training:` section used to replace the first silently (last wins)."""
    text = "training:\n  iters: 10\nschedule:\n  cron: '0 1 * * *'\ntraining:\n  rank: 4\n"
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "nightshift.yaml", error=ConfigError)
    assert str(info.value) == (
        "nightshift.yaml line 5, column 1 is not valid YAML: duplicate key 'training' (first given on line 1); "
        "give each key once (merge the two sections)"
    )


def test_a_duplicated_single_value_says_keep_one_not_merge() -> None:
    """Reviewer defect: a duplicated `batch_size` (a scalar) was told to "merge the two sections"."""
    text = "training:\n  batch_size: 4\n  iters: 10\n  batch_size: 8\n"
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "nightshift.yaml", error=ConfigError)
    assert str(info.value) == (
        "nightshift.yaml line 4, column 3 is not valid YAML: duplicate key 'batch_size' (first given on line 2); "
        "give each key once (keep one of the two)"
    )


def test_merge_keys_may_override() -> None:
    text = "base: &b {rank: 8, dropout: 0.1}\nlora:\n  <<: *b\n  rank: 16\n"
    assert parse_yaml(text, "x")["lora"] == {"rank": 16, "dropout": 0.1}


def test_alias_bomb_is_refused_quickly_and_briefly() -> None:
    """A 1.5 KB alias bomb produced a 3.85 MB error line (the repr of the expanded value)."""
    with pytest.raises(SuiteError) as info:
        parse_yaml(alias_bomb(), "suite.yaml", error=SuiteError)
    message = str(info.value)
    assert message.startswith("suite.yaml: its aliases (*name) expand to more than")
    assert len(message) < 200 and f"{MAX_EXPANDED_NODES:,}" in message


def test_syntax_error_is_one_line_with_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml("paths:\n  dataset: [a, b\n", "c.yaml", error=ConfigError)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("c.yaml line 3, column 1 is not valid YAML: while parsing a flow sequence")


def test_binary_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(SuiteError, match=r"Eval suite .*suite.yaml is not UTF-8 text \(byte 0 .*binary file\?"):
        load_yaml_file(path, what="Eval suite", error=SuiteError)


def test_python_tags_are_refused() -> None:
    with pytest.raises(ConfigError, match="line 1, column 4 is not valid YAML: could not determine a constructor"):
        parse_yaml("a: !!python/object/apply:os.system ['true']\n", "c.yaml", error=ConfigError)


def test_config_quotes_only_an_excerpt_of_a_huge_value(tmp_path: Path) -> None:
    """A YAML alias bomb under the node limit still made the error line the repr of the whole value."""
    from daemon.config import load_config

    bomb = alias_bomb(levels=4).replace("\n", "\n  ").rstrip()  # 9**4 = 6,561 strings (a 50 KB repr)
    path = tmp_path / "nightshift.yaml"
    path.write_text(f"bombs:\n  {bomb}\ntraining:\n  lora:\n    keys: *l3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(str(info.value)) < 2_000
    assert "training.lora.keys[0]: must be a string, got [[[" in str(info.value)


def test_duplicate_training_section_in_a_config_file(tmp_path: Path) -> None:
    """A duplicate `training:` section was silently last-wins."""
    from daemon.config import load_config

    path = tmp_path / "nightshift.yaml"
    path.write_text("training:\n  iters: 10\ntraining:\n  iters: 20\n")
    with pytest.raises(ConfigError, match=r"nightshift.yaml line 3, column 1 is not valid YAML: duplicate key 'training' \(first given on line 1\)"):
        load_config(path)


def test_a_binary_items_file_is_blamed_not_the_suite(tmp_path: Path) -> None:
    """A binary items file was reported as a problem with suite.yaml."""
    from daemon.suite import load_suite

    (tmp_path / "items.jsonl").write_bytes(b"\x1f\x8b\x08\x00binary\xff\xfe")
    suite = tmp_path / "suite.yaml"
    suite.write_text("categories:\n  - name: a\n    kind: label\n    labels: [x, y]\n    items_file: items.jsonl\n")
    with pytest.raises(SuiteError) as info:
        load_suite(suite)
    assert info.value.problems == [
        f"categories[0].items_file: {tmp_path / 'items.jsonl'} is not UTF-8 text (byte 1 cannot be decoded); is it a binary file?"
    ]


def test_one_yaml_loader() -> None:
    """Config, suite and preflight each parsed YAML themselves (three loaders, different errors)."""
    import daemon

    package = Path(daemon.__file__).resolve().parent
    users = sorted(
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.name != "yamlfile.py" and any(f"yaml.{fn}(" in p.read_text(encoding="utf-8") for fn in ("safe_load", "load", "full_load"))
    )
    assert users == []


def test_no_base_60_numbers() -> None:
    """Defect: YAML 1.1 read `6:30` as 390 and `1:30.5` as 90.5; YAML 1.2 (and we) keep them strings."""
    value = parse_yaml("a: 6:30\nb: 1:30.5\nc: 3600\nd: 1.5\ne: 0x1f\nf: -3\ng: .inf\n", "test")
    assert value["a"] == "6:30" and value["b"] == "1:30.5"
    assert (value["c"], value["d"], value["e"], value["f"]) == (3600, 1.5, 31, -3) and value["g"] == float("inf")
