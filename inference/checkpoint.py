"""Atomic save and resume of a training run's state.

A checkpoint is one ``torch.save`` file holding a plain dict. Writing is atomic: the dict is
saved to a temporary file in the target's own folder, flushed and ``fsync``-ed, then moved
over the target with ``os.replace`` (an atomic rename on POSIX and Windows). A crash or an
exception mid-write therefore never leaves a half-written checkpoint: the previous file stays
intact until the replace, and the temporary file is removed.

``vae_state(state, "best" | "last")`` picks the VAE parameters to load from such a dict.

Everything stored is plain data (tensors, numbers, strings, lists, dicts, tuples), so
:func:`load_checkpoint` reads with ``torch.load(weights_only=True)`` and never unpickles code.

Layout written by :func:`inference.svi.fit` (``run_dir/checkpoints/last.pt``; ``best.pt`` has
the same layout, written at the epoch the validation ELBO last improved)::

    {
      "format": "pyro_vae.checkpoint/1",
      "epoch": int,                     # completed epochs
      "vae": state_dict,                # module parameters and buffers at the end of `epoch`
      "param_store": dict,              # pyro.get_param_store().get_state(), normally empty
      "optimizer": state_dict,          # torch optimizer (Adam / ClippedAdam) state
      "rng": capture_rng(),             # global torch / python / numpy RNG states
      "batch_generator": ByteTensor,    # state of the torch.Generator that shuffles and binarizes
      "history": [dict, ...],           # one dict per EpochRecord
      "best": {"epoch": int | None, "val_elbo": float | None, "vae": state_dict | None},
      "spec": dict,                     # the TrainSpec as plain data
      "data": dict,                     # name, n_train, n_val, feature_dim, binarize of the data
      "samples_evaluated": int,         # cumulative rows x particles
      "wall_time": float,               # cumulative seconds spent in fit()
    }
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from pyro_vae.errors import ConfigError, TrainingError

FORMAT = "pyro_vae.checkpoint/1"


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``.

    Creates the parent folder if needed. If anything fails while writing, the temporary file
    is deleted, an existing ``path`` is left untouched, and the exception propagates.
    Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as fh:
            torch.save(dict(state), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``torch.load``, weights only).

    Raises ConfigError if the file does not exist and TrainingError if it cannot be read
    (truncated, corrupt, or not a checkpoint); both name the file and say to start a fresh
    run (without ``--resume``) instead.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"no checkpoint to resume from: {str(path)!r} does not exist; "
            "start the run without --resume (resume=False), or point at the run folder that holds it"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged zip / pickle
        detail = (str(err).strip().splitlines() or [""])[0][:160]
        raise TrainingError(
            f"checkpoint {str(path)!r} is corrupt or not a pyro-vae checkpoint "
            f"({type(err).__name__}: {detail}); delete it and start without --resume (resume=False)"
        ) from err
    if not isinstance(state, dict):
        raise TrainingError(
            f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a checkpoint dict; "
            "start without --resume (resume=False)"
        )
    return state


def vae_state(state: Mapping[str, Any], which: str = "best") -> dict[str, torch.Tensor]:
    """The VAE state_dict in a checkpoint: ``"last"`` (end of its epoch) or ``"best"`` (best validation ELBO).

    ``"best"`` falls back to the last parameters when the run had no validation split.
    """
    if which not in ("best", "last"):
        raise ConfigError(f"which={which!r} is not valid; choose 'best' or 'last'")
    if "vae" not in state:
        raise TrainingError("this checkpoint holds no VAE parameters ('vae' key); was it written by inference.svi.fit?")
    best = state.get("best") or {}
    if which == "best" and best.get("vae") is not None:
        return best["vae"]
    return state["vae"]


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """States of torch's global RNG, Python's ``random``, numpy's global RNG (and ``generator``).

    Returns plain data: ``{"torch": ByteTensor, "python": tuple, "numpy": dict[, "generator":
    ByteTensor]}``; :func:`restore_rng` puts them back, so the random streams continue exactly.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: Mapping[str, Any], generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng`; ``generator`` receives ``state["generator"]`` if both exist."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npy = state["numpy"]
    keys = np.asarray(npy["keys"].numpy() if torch.is_tensor(npy["keys"]) else npy["keys"], dtype=np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "vae_state", "capture_rng", "restore_rng"]
