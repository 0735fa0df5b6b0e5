"""The teaching notebooks run, ship the outputs of a full run, and are listed in the README in order.

Every ``notebooks/*.ipynb`` is picked up automatically. Each is executed top to bottom in a
fresh ``python3`` kernel with ``PYRO_VAE_SMOKE=1`` (short training and sampling budgets); a
notebook checks its own claims with ``assert`` cells, so one that stops showing what its text
says fails here with the failing cell's source (nbclient's ``CellExecutionError``).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(Path(__file__).parents[2].glob("notebooks/*.ipynb"))
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _load(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch, record_property) -> None:
    nbformat = pytest.importorskip("nbformat", reason="install the dev extras: pip install -e '.[dev]'")
    nbclient = pytest.importorskip("nbclient", reason="install the dev extras: pip install -e '.[dev]'")
    nb = nbformat.read(str(path), as_version=4)
    # The kernel is a subprocess: it inherits os.environ as it is when the kernel starts.
    # monkeypatch restores both variables after the test.
    monkeypatch.setenv("PYRO_VAE_SMOKE", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError (with the cell's source) on any error
    seconds = time.perf_counter() - start
    record_property("smoke_seconds", round(seconds, 1))
    print(f"{path.name}: {seconds:.1f} s in smoke mode")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_notebook_carries_the_outputs_of_a_full_run(path: Path) -> None:
    """Readers see the figures without running anything: every code cell of a committed notebook was run, in
    order, by ``python notebooks/execute.py`` in full mode (not the tests' smoke mode), and none failed."""
    nb = _load(path)
    assert nb.get("nbformat") == 4, f"{path.name}: write notebooks in nbformat v4"
    assert nb.get("metadata", {}).get("kernelspec") == KERNELSPEC, (
        f"{path.name}: metadata.kernelspec must be {KERNELSPEC}"
    )
    assert nb["metadata"].get("pyro_vae", {}).get("mode") == "full", (
        f"{path.name}: run `python notebooks/execute.py {path.stem}` and commit the notebook with its outputs"
    )
    counts = [c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: cells were not run top to bottom once"
    for i, cell in enumerate(nb["cells"]):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}, cell {i}: the committed run failed here"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_reads_smoke_flag(path: Path) -> None:
    """Every notebook shortens its budgets under the tests, and checks its claims with asserts."""
    code = "\n".join(_source(c) for c in _load(path)["cells"] if c["cell_type"] == "code")
    assert "PYRO_VAE_SMOKE" in code, (
        f'{path.name}: read the smoke flag, SMOKE = os.environ.get("PYRO_VAE_SMOKE", "0") == "1"'
    )
    assert re.search(r"^\s*assert\b", code, flags=re.MULTILINE), f"{path.name}: check its claims with assert"


def test_readme_links_notebooks_in_order() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    heading = re.search(r"^#+\s*Notebooks\s*$", readme, flags=re.MULTILINE)
    assert heading, "README.md needs a 'Notebooks' section"
    section = readme[heading.end():]
    links = re.findall(r"\]\((notebooks/[^)\s]+\.ipynb)\)", section)
    on_disk = [f"notebooks/{p.name}" for p in NOTEBOOKS]
    missing = [p for p in on_disk if p not in links]
    assert not missing, f"README.md's Notebooks section does not link {missing}"
    dangling = [p for p in links if not (ROOT / p).is_file()]
    assert not dangling, f"README.md links notebooks that do not exist: {dangling}"
    positions = [links.index(p) for p in on_disk]
    assert positions == sorted(positions), f"README.md lists the notebooks out of order: {links}"
