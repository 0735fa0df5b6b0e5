"""Helpers shared by the benchmark scripts: where the real data lives, thread settings."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """$PYRO_VAE_DATA if set, else ../shared/data next to the repository (our machines)."""
    env = os.environ.get("PYRO_VAE_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"
