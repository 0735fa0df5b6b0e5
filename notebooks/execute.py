"""Run every teaching notebook in full (not smoke) mode and save it with its outputs, so readers see the figures.

    python notebooks/execute.py [NAME ...]       # all notebooks, or those whose file names contain NAME

Each notebook runs top to bottom in a fresh ``python3`` kernel from the notebooks folder; its
outputs are written back in place, with ``metadata.pyro_vae`` recording the mode, the wall time
and the date. A notebook that fails is left untouched and the script exits non-zero.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent


def execute(path: Path) -> float:
    """Run ``path`` in full mode and write it back with its outputs; returns the seconds it took."""
    nb = nbformat.read(str(path), as_version=4)
    env_before = os.environ.pop("PYRO_VAE_SMOKE", None)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
    try:
        start = time.perf_counter()
        nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3",
                                resources={"metadata": {"path": str(HERE)}}).execute()
        seconds = time.perf_counter() - start
    finally:
        if env_before is not None:
            os.environ["PYRO_VAE_SMOKE"] = env_before
    nb.metadata["pyro_vae"] = {"mode": "full", "seconds": round(seconds, 1), "date": time.strftime("%Y-%m-%d")}
    nbformat.write(nb, str(path))
    return seconds


def main(names: list[str]) -> int:
    paths = sorted(p for p in HERE.glob("*.ipynb") if not names or any(n in p.name for n in names))
    failed = []
    for path in paths:
        try:
            print(f"{path.name}: {execute(path):.0f} s", flush=True)
        except Exception as err:  # report and go on with the others
            print(f"{path.name}: FAILED ({type(err).__name__}: {str(err).splitlines()[0][:200]})", flush=True)
            failed.append(path.name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
