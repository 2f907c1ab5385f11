"""One exception root per package: flightdeck.errors.FlightdeckError, serving.errors.ServingError.

Every exception class a module defines derives from its package's root, and library code raises those
(never a bare RuntimeError, and never SystemExit outside a `main()` entry point or `__main__` block).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import flightdeck
import serving
from flightdeck.errors import FlightdeckError
from serving.errors import ServingError

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted((ROOT / "plugins").glob("*.py"))


def _modules(package) -> list[str]:
    names = [package.__name__]
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.endswith(".__main__"):  # importing it would run the command line
            names.append(info.name)
    return names


def _exception_classes(module_name: str) -> list[type]:
    module = importlib.import_module(module_name)
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module_name
    ]


@pytest.mark.parametrize(
    ("package", "root", "extra"),
    [(flightdeck, FlightdeckError, [p.stem for p in PLUGINS]), (serving, ServingError, [])],
    ids=["flightdeck", "serving"],
)
def test_every_exception_class_derives_from_the_package_root(package, root, extra) -> None:
    strays = [
        f"{cls.__module__}.{cls.__qualname__}{tuple(b.__name__ for b in cls.__bases__)}"
        for name in _modules(package) + extra
        for cls in _exception_classes(name)
        if not issubclass(cls, root)
    ]
    assert not strays, f"exception classes not derived from {root.__name__}: {strays}"


def _library_files() -> list[Path]:
    files = [*(ROOT / "include" / "flightdeck").rglob("*.py"), *(ROOT / "serving").rglob("*.py"), *PLUGINS]
    return sorted(p for p in files if "__pycache__" not in p.parts)


def _forbidden_raises(tree: ast.AST, entry_module: bool = False) -> list[tuple[int, str]]:
    """(line, what) for `raise RuntimeError/SystemExit` and `sys.exit(...)` outside main(), `__main__` blocks
    and `__main__.py` files (`entry_module`)."""
    found: list[tuple[int, str]] = []

    def is_main_guard(node: ast.AST) -> bool:
        return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)

    def visit(node: ast.AST, in_entry_point: bool) -> None:
        for child in ast.iter_child_nodes(node):
            entry = in_entry_point or is_main_guard(child)
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and child.name == "main":
                entry = True
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                name = ast.unparse(exc)
                if name == "RuntimeError" or (name == "SystemExit" and not entry):
                    found.append((child.lineno, f"raise {name}"))
            if isinstance(child, ast.Call) and ast.unparse(child.func) == "sys.exit" and not entry:
                found.append((child.lineno, "sys.exit()"))
            visit(child, entry)

    visit(tree, entry_module)
    return found


def test_library_code_raises_named_errors_not_runtime_error_or_system_exit() -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in _library_files()
        for line, what in _forbidden_raises(ast.parse(path.read_text(), str(path)), path.name == "__main__.py")
    ]
    assert not offences, "raise a FlightdeckError (ServingError in serving/) subclass instead: " + "; ".join(offences)


def test_the_checker_sees_what_it_forbids() -> None:
    source = (
        "import sys\n"
        "def f():\n    raise RuntimeError('x')\n"
        "def g():\n    raise SystemExit(1)\n"
        "def h():\n    sys.exit(2)\n"
        "def main():\n    raise SystemExit(main_inner())\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n"
    )
    assert [what for _, what in _forbidden_raises(ast.parse(source))] == [
        "raise RuntimeError",
        "raise SystemExit",
        "sys.exit()",
    ]
