"""The exception tree lives in one module (issue 14: exceptions all in daemon/errors.py)."""

from __future__ import annotations

import ast
import builtins
import subprocess
import sys
from pathlib import Path

import daemon

PACKAGE = Path(daemon.__file__).parent
ERRORS = PACKAGE / "errors.py"
BUILTIN_EXCEPTIONS = {
    name
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, BaseException)
}


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _looks_like_exception(name: str, known: set[str]) -> bool:
    return name in known or name.endswith(("Error", "Exception", "Exit", "Interrupt"))


def exception_classes(root: Path) -> list[tuple[Path, int, str]]:
    """Every class under ``root`` that derives (by name, through any module) from an exception."""
    classes: list[tuple[Path, int, str, list[str]]] = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ClassDef):
                classes.append((path, node.lineno, node.name, [_base_name(b) for b in node.bases]))
    known = set(BUILTIN_EXCEPTIONS)
    while True:  # fixpoint: a class deriving from one of ours is an exception too
        grown = {
            name
            for _, _, name, bases in classes
            if any(_looks_like_exception(b, known) for b in bases)
        }
        if grown <= known:
            break
        known |= grown
    return [
        (p, line, name)
        for p, line, name, bases in classes
        if any(_looks_like_exception(b, known) for b in bases)
    ]


def test_every_exception_class_is_defined_in_errors_py() -> None:
    """Strays (ModelFileError, TemplateError, DuplicateNight, StopTraining, _BadJSON, ...) lived in their modules."""
    found = exception_classes(PACKAGE)
    assert any(p == ERRORS for p, _, _ in found), (
        "the scan found no exception in errors.py: the scan is broken"
    )
    strays = [
        f"{p.relative_to(PACKAGE.parent)}:{line} {name}" for p, line, name in found if p != ERRORS
    ]
    assert strays == [], "exception classes outside daemon/errors.py:\n" + "\n".join(strays)


def test_scan_catches_a_stray(tmp_path: Path) -> None:
    """The scan itself finds an exception defined elsewhere, also one derived from ours or nested in a function."""
    (tmp_path / "a.py").write_text("class Mine(Exception):\n    pass\nclass Sub(Mine):\n    pass\n")
    (tmp_path / "b.py").write_text(
        "def f():\n    class Inner(errors.Sub):\n        pass\nclass Plain:\n    pass\n"
    )
    assert sorted(name for _, _, name in exception_classes(tmp_path)) == ["Inner", "Mine", "Sub"]


def test_errors_module_imports_nothing_heavy() -> None:
    """Worker children import daemon.errors: it must not pull in the registry, mlx or third-party packages."""
    code = (
        "import sys, daemon.errors; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'mlx', 'mlx_lm', 'click', 'structlog', 'yaml', 'jinja2', 'numpy')]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
