"""Helpers shared by the benchmark scripts: where the real data lives, and how a script ends on bad input."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, NoReturn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the scripts run from a checkout, with the package installed or not
    sys.path.insert(0, str(REPO))

from pyro_vae.errors import REFUSALS  # noqa: E402


def default_data_dir() -> Path:
    """$PYRO_VAE_DATA if set, else ../shared/data next to the repository (our machines)."""
    env = os.environ.get("PYRO_VAE_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def run_main(main: Callable[[], object]) -> NoReturn:
    """Run a benchmark's ``main`` and exit with its status (an int it returns; anything else: 0); a refused input or a stopped run (ConfigError,
    DataError, TrainingError, UnsupportedModelError: each names the argument and the fix) ends the script with
    that one line on stderr and status 2, as ``pyro-vae`` does, instead of a traceback."""
    try:
        code = main()
    except REFUSALS as err:
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
