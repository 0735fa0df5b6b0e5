"""The layering rule: ``inference`` imports ``pyro_vae``, never the reverse (read from the source)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, at any depth (imports inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_the_scan_sees_nested_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from inference import svi\n    import inference.evaluate\n")
    assert [m for _, m in imported_modules(probe)] == ["inference", "inference.evaluate"]


@pytest.mark.parametrize("path", sorted((ROOT / "pyro_vae").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_pyro_vae_never_imports_inference(path):
    offending = [(line, m) for line, m in imported_modules(path) if m == "inference" or m.startswith("inference.")]
    assert not offending, f"{path.relative_to(ROOT)} imports the inference side at {offending}"
