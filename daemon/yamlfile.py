"""The one YAML loader: safe, strict about duplicate keys, errors with line and column.

Config, eval suite and schema files all go through :func:`load_yaml_file` (or
:func:`parse_yaml` for text already read), so every YAML mistake reads the same:
``<file> line L, column C is not valid YAML: <what is wrong>``, one line, no echo of the document.

Stricter than ``yaml.safe_load`` in two ways:

* a key given twice in one mapping is an error (``safe_load`` keeps the last
  one silently, so a second ``training:`` section would replace the first);
* a document whose aliases expand to more than :data:`MAX_EXPANDED_NODES`
  nodes is refused (a "billion laughs" alias bomb is a few hundred bytes of
  YAML that every later walk over the value, and its repr, multiplies).

And closer to YAML 1.2 in one way: no base-60 numbers. YAML 1.1 reads ``6:30``
as the integer 390 (and ``1:30.5`` as a float); YAML 1.2 dropped sexagesimals,
so here ``deadline: 6:30`` stays the string ``"6:30"``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

from daemon.errors import NightshiftError

MAX_EXPANDED_NODES = 100_000
"""Most YAML nodes a document may hold once its aliases are expanded (a config
or suite holds hundreds; 100k leaves room for large inline suites)."""

MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys in a mapping (merge keys ``<<`` excepted)."""

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: dict[Any, Node] = {}
            values: dict[Any, Node] = {}
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeConstructor reports it below
                    continue
                if first is not None:
                    line = first.start_mark.line + 1
                    sections = isinstance(values[key], MappingNode) and isinstance(value_node, MappingNode)
                    advice = "merge the two sections" if sections else "keep one of the two"
                    raise ConstructorError(
                        None,
                        None,
                        f"duplicate key {excerpt_key(key)} (first given on line {line}); give each key once ({advice})",
                        key_node.start_mark,
                    )
                seen[key] = key_node
                values[key] = value_node
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"

# PyYAML's int and float patterns (yaml/resolver.py) without their base-60 branches.
_INT_12 = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""",
    re.X,
)
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, _INT_12 if tag == INT_TAG else _FLOAT_12 if tag == FLOAT_TAG else rx) for tag, rx in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def excerpt_key(key: Any) -> str:
    """A mapping key for an error message, quoted and cut to 40 characters."""
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _expanded_size(root: Node, limit: int) -> int:
    """Nodes in ``root`` counting every alias as a full copy; stops counting past ``limit``."""
    count = 0
    stack = [root]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(node, SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                stack.append(key_node)
                stack.append(value_node)
    return count


def _where(source: str, exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return source
    return f"{source} line {mark.line + 1}, column {mark.column + 1}"


def _describe(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        return "; ".join(parts) or "invalid YAML"
    return str(exc).splitlines()[0] if str(exc) else "invalid YAML"


def line_of(path: Path, key_path: str) -> int | None:
    """The 1-based line of ``key_path`` (``categories[2].pattern``) in the YAML file ``path``, or None.

    For an error found after loading (the loaded value is plain data without
    positions): the file is composed again (nodes keep their marks) and walked.
    None when the file cannot be read or parsed, or the path is not in it.
    """
    try:
        node: Node | None = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", key_path):
        if isinstance(node, MappingNode) and name:
            node = next((v for k, v in node.value if getattr(k, "value", None) == name), None)
        elif isinstance(node, SequenceNode) and index and int(index) < len(node.value):
            node = node.value[int(index)]
        else:
            return None
        if node is None:
            return None
    return None if node is None else node.start_mark.line + 1


def not_text_problem(path: Path, exc: UnicodeDecodeError) -> str:
    """``<path> is not UTF-8 text (byte N cannot be decoded); is it a binary file?``"""
    return f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded); is it a binary file?"


def parse_yaml(
    text: str,
    source: str,
    *,
    error: type[NightshiftError] = NightshiftError,
    max_nodes: int = MAX_EXPANDED_NODES,
) -> Any:
    """Parse one YAML document strictly (see the module docstring).

    Args:
        text: the document.
        source: what to call it in messages (a file path).
        error: the exception class to raise (``ConfigError``, ``SuiteError``...).
        max_nodes: the most nodes the document may expand to.

    Returns:
        The plain Python value (``None`` for an empty document).

    Raises:
        error: not valid YAML, a duplicate key, or an alias bomb; one line
            naming ``source``, line and column.
    """
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, max_nodes) > max_nodes:
            raise error(
                f"{source}: its aliases (*name) expand to more than {max_nodes:,} values; "
                "write the values out or use fewer nested aliases"
            )
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise error(f"{_where(source, exc)} is not valid YAML: {_describe(exc)}") from None
    except yaml.YAMLError as exc:
        raise error(f"{source} is not valid YAML: {_describe(exc)}") from None
    finally:
        loader.dispose()


def load_yaml_file(
    path: Path,
    *,
    what: str,
    error: type[NightshiftError] = NightshiftError,
    max_nodes: int = MAX_EXPANDED_NODES,
) -> Any:
    """Read and parse a YAML file with :func:`parse_yaml`.

    Args:
        path: the file.
        what: what the file is, for messages ("Config file", "Eval suite").
        error: the exception class to raise.

    Raises:
        error: the file is unreadable, not UTF-8 text, or not valid YAML (see
            :func:`parse_yaml`); the message names ``path``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {not_text_problem(path, exc)}") from None
    except OSError as exc:
        raise error(f"Cannot read {what.lower()} {path}: {exc.strerror or exc}") from None
    return parse_yaml(text, f"{what} {path}", error=error, max_nodes=max_nodes)
