"""A trained program as one file, usable without its run folder or the inference package.

``export_program`` writes the model spec, the data recipe (which data, how binarized and split,
feature count, image shape) and the program's parameters to one ``torch.save`` file, with a
SHA-256 checksum of the parameters; ``load_program`` rebuilds the program from the spec and
loads them (``torch.load(weights_only=True)``: nothing but plain data is unpickled)::

    program, recipe = load_program("digits_vae.pt")
    program.sample(16)                       # or program.model / program.guide in any Pyro inference
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch

from pyro_vae.errors import ConfigError, DataError
from pyro_vae.files import atomic_write
from pyro_vae.build import build_program
from pyro_vae.programs import Program
from pyro_vae.spec import ModelSpec, spec_from_dict, spec_to_dict

FORMAT = "pyro_vae.export/1"


class Exported(NamedTuple):
    """A loaded export: the program (eval mode) and the recipe of the data it was trained on."""

    program: Program
    recipe: dict[str, Any]


def _digest(state: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def export_program(program: torch.nn.Module, spec: ModelSpec, recipe: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``program``'s parameters with its ``spec`` and data ``recipe`` (needs ``feature_dim``) to ``path`` atomically."""
    if "feature_dim" not in recipe:
        raise ConfigError("the data recipe must hold feature_dim, the number of features the program was built for")
    state = {k: v.detach().cpu() for k, v in program.state_dict().items()}
    payload = {"format": FORMAT, "model": spec_to_dict(spec), "recipe": dict(recipe), "state": state,
               "checksum": _digest(state)}
    return atomic_write(path, lambda fh: torch.save(payload, fh), binary=True)


def load_program(path: str | os.PathLike) -> Exported:
    """Rebuild the program exported to ``path`` (eval mode); DataError for a missing, damaged or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{str(path)!r} does not exist; export a run first (inference.run.export_run or `pyro-vae export`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise DataError(f"{str(path)!r} is not a readable pyro-vae export ({type(err).__name__}); export the run again") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{str(path)!r} is not a {FORMAT} file; export the run again with this version")
    if _digest(payload["state"]) != payload["checksum"]:
        raise DataError(f"{str(path)!r} is corrupt (checksum mismatch); export the run again")
    recipe = dict(payload["recipe"])
    shape = recipe.get("image_shape")
    model = spec_from_dict({"model": payload["model"]}).model
    program = build_program(model, data_dim=int(recipe["feature_dim"]), image_shape=tuple(shape) if shape else None)
    program.load_state_dict(payload["state"])
    program.eval()
    return Exported(program, recipe)


__all__ = ["Exported", "export_program", "load_program", "FORMAT"]
