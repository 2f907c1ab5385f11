"""Public functions say what they take and give (shapes, units), what they raise and where borrowed facts
come from: at least 90 % of them have a docstring, and every one that raises a project error names it.

Public: no leading underscore, a module-level function or a method of a public class (nested functions
are not API). Skipped: tests, `main` entry points, dunder methods and property setters.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "include" / "flightdeck", ROOT / "serving", ROOT / "plugins"]
MIN_SHARE = 0.90
FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def _files() -> list[Path]:
    files = [p for src in SOURCES for p in src.rglob("*.py")]
    return sorted(p for p in files if "__pycache__" not in p.parts and not p.name.startswith("test_"))


def _is_setter(fn: FunctionNode) -> bool:
    return any(isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter") for d in fn.decorator_list)


def public_functions(tree: ast.Module) -> Iterator[tuple[str, FunctionNode]]:
    """(qualified name, node) for each public function of a module (see the module docstring)."""

    def wanted(fn: FunctionNode) -> bool:
        return not fn.name.startswith("_") and fn.name != "main" and not _is_setter(fn)

    for node in tree.body:
        if isinstance(node, FunctionNode) and wanted(node):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, FunctionNode) and wanted(item):
                    yield f"{node.name}.{item.name}", item


def _all_public() -> list[tuple[str, FunctionNode]]:
    out = []
    for path in _files():
        rel = path.relative_to(ROOT)
        for name, fn in public_functions(ast.parse(path.read_text(), str(path))):
            out.append((f"{rel}:{fn.lineno} {name}", fn))
    return out


def _project_errors() -> set[str]:
    """Names of the exception classes the project defines (anything deriving, by name, from a known root)."""
    known = {"FlightdeckError", "ServingError"}
    classes: dict[str, list[str]] = {}
    for path in _files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                classes[node.name] = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
    grew = True
    while grew:
        grew = False
        for name, bases in classes.items():
            if name not in known and known.intersection(bases):
                known.add(name)
                grew = True
    return known


def _raised_names(fn: FunctionNode) -> set[str]:
    """Exception class names raised directly in `fn`'s own body (not in nested functions or classes)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, FunctionNode | ast.ClassDef | ast.Lambda):
                continue
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                names.add(ast.unparse(exc).rsplit(".", 1)[-1])
            visit(child)

    visit(fn)
    return names


def test_most_public_functions_have_a_docstring() -> None:
    functions = _all_public()
    missing = [name for name, fn in functions if not ast.get_docstring(fn)]
    share = 1 - len(missing) / len(functions)
    assert share >= MIN_SHARE, (
        f"{share:.0%} of {len(functions)} public functions have a docstring (need {MIN_SHARE:.0%}); "
        f"{len(missing)} without: " + ", ".join(missing)
    )


def test_public_functions_document_the_project_errors_they_raise() -> None:
    errors = _project_errors()
    undocumented = []
    for name, fn in _all_public():
        raised = _raised_names(fn) & errors
        doc = ast.get_docstring(fn) or ""
        silent = sorted(e for e in raised if e not in doc and "Raises:" not in doc)
        if silent:
            undocumented.append(f"{name} raises {', '.join(silent)}")
    assert not undocumented, "say what these raise in their docstrings: " + "; ".join(undocumented)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n    pass\n", ["f"]),
        ("def _f():\n    pass\ndef main():\n    pass\n", []),
        ("class A:\n    def __init__(self):\n        pass\n    def g(self):\n        pass\n", ["A.g"]),
        ("class _A:\n    def g(self):\n        pass\n", []),
        ("class A:\n    @x.setter\n    def x(self, v):\n        pass\n", []),
        ("def f():\n    def inner():\n        pass\n", ["f"]),
    ],
)
def test_what_counts_as_public(source: str, expected: list[str]) -> None:
    assert [name for name, _ in public_functions(ast.parse(source))] == expected
