"""The size rules of the library: no file over 500 lines, no function over 80 (read from the source)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted([*(ROOT / "pyro_vae").rglob("*.py"), *(ROOT / "inference").rglob("*.py")])
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
ALGORITHM = "one self-contained algorithm"  # the docstring phrase that allows a longer function


def long_functions(source: str) -> list[tuple[str, int]]:
    """(name, lines) of every function longer than MAX_FUNCTION_LINES whose docstring does not claim ALGORITHM."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES and ALGORITHM not in (ast.get_docstring(node) or ""):
                out.append((node.name, length))
    return out


def test_the_rules_see_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n{body}\n") == [("f", MAX_FUNCTION_LINES + 1)]
    assert long_functions(f'def f():\n    """{ALGORITHM}."""\n{body}\n') == []


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_library_files_and_functions_stay_small(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_FILE_LINES, f"{path.name}: split it by concept"
    assert not long_functions(source), f"{path.name}: split these into small helpers: {long_functions(source)}"
