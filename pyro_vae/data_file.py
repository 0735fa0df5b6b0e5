"""The rows of one user data file in file order, unsplit and unshuffled (e.g. new rows to classify)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pyro_vae.data import FILE_EXTENSIONS, _read_user_file, validate_array
from pyro_vae.errors import DataError
from pyro_vae.labels import class_labels


def read_rows(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x float32 (N, D), labels int64 (N,) or None) of a ``.npy``/``.npz``/``.csv`` file, read as
    :func:`pyro_vae.data.load_dataset` reads it (``.npz`` key ``x``/``X``/``data`` with ``y``/``labels``, a CSV
    column named ``label``) and checked the same way, but neither split nor shuffled."""
    path = Path(path).expanduser()
    if not path.is_file() or path.suffix.lower() not in FILE_EXTENSIONS:
        raise DataError(f"{str(path)!r} is not a {'/'.join(FILE_EXTENSIONS)} file; give the path of one")
    arrays, _ = _read_user_file(path)
    if "x" not in arrays:
        raise DataError(f"{path} holds fixed splits ('train'/'test'); save the rows to classify under 'x'")
    x = validate_array(arrays["x"], name=str(path))
    labels = arrays.get("labels")
    return x, None if labels is None else class_labels(labels, x.shape[0], f"{path} labels")


__all__ = ["read_rows"]
