"""Checkpoints: a :class:`~inference.training.state.TrainState` saved to one file and loaded back as it was.

A checkpoint is one ``torch.save`` file holding a plain dict, written atomically
(:mod:`pyro_vae.files`: temp file, fsync, ``os.replace``), so a crash mid-write never leaves a
half-written checkpoint. Everything stored is plain data (tensors, numbers, strings, lists,
dicts, tuples), so :func:`load_checkpoint` reads with ``torch.load(weights_only=True)`` and
never unpickles code. The training loop writes ``run_dir/checkpoints/last.pt`` every epoch
and ``best.pt`` when the validation score (the ELBO, or ``train.monitor``'s) improves; the layout::

    {
      "format": "pyro_vae.checkpoint/2",
      "epoch": int,                     # completed epochs
      "vae": state_dict,                # the program's parameters and buffers at the end of `epoch`
      "modules": {name: state_dict},    # every module of the fit ("program" and per-datapoint tables)
      "optimizers": {name: state_dict}, # their optimizers
      "param_store": dict,              # pyro.get_param_store().get_state(), normally empty
      "rng": capture_rng(),             # global torch / python / numpy RNG states (and CUDA's, where used)
      "rng_ranks": [capture_rng(), ...],  # under torchrun: every process's streams, in rank order
      "batch_generator": ByteTensor,    # the torch.Generator that shuffles and binarizes
      "history": [dict, ...],           # one dict per EpochRecord
      "best": {"epoch", "val_elbo", "vae", "modules", "monitor"},   # best-validation states (None without)
      "spec": dict,                     # the TrainSpec as plain data
      "data": dict,                     # name, n_train, n_val, feature_dim, binarize of the data
      "samples_evaluated": int,         # cumulative count of the method's datapoint evaluations
      "wall_time": float,               # cumulative seconds spent fitting
      "checksum": str,                  # SHA-256 of all of the above (checksum()), verified on load
    }

Format 1 (one "vae" and one "optimizer") is read as a program and its "theta" optimizer.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyro
import torch

from inference.training.optimizers import load_optimizer_state
from inference.training.state import PROGRAM, Best, EpochRecord, TrainState, load_modules
from pyro_vae.errors import ConfigError, TrainingError
from pyro_vae.files import atomic_write

FORMAT = "pyro_vae.checkpoint/2"
FORMATS = ("pyro_vae.checkpoint/1", FORMAT)


def checksum(state: Mapping[str, Any]) -> str:
    """SHA-256 over everything in a checkpoint dict but its ``"checksum"``: keys, values, every tensor's dtype, shape and bytes."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if torch.is_tensor(value):
            t = value.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, Mapping):
            digest.update(b"{")
            for key in sorted(value, key=str):
                if key != "checksum":
                    digest.update(repr(key).encode())
                    feed(value[key])
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                feed(item)
            digest.update(b"]")
        else:
            digest.update(repr(value).encode())

    feed(state)
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` with its :func:`checksum` to ``path`` atomically (:func:`pyro_vae.files.atomic_write`).

    Creates the parent folder if needed. If anything fails while writing, ``path`` is left
    untouched, no temporary file remains, and the exception propagates. Returns the path.
    """
    state = {**state, "checksum": checksum(state)}
    return atomic_write(path, lambda fh: torch.save(state, fh), binary=True)


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``torch.load``, weights only).

    The tensors are read onto the CPU (whatever device wrote them) and the checksum verified
    there; ``map_location`` then moves every floating-point tensor (parameters, optimizer moments)
    to that device; RNG states and counters stay on the CPU, where torch keeps them.

    Raises ConfigError if the file does not exist and TrainingError if it cannot be read
    (truncated, not a checkpoint) or its contents do not match the :func:`checksum` written
    with them; both name the file and say to start a fresh run (without ``--resume``) instead.
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
    if state.get("format") == FORMAT and "checksum" not in state:
        raise TrainingError(
            f"checkpoint {str(path)!r} has no checksum, which every {FORMAT} file carries; it was altered after "
            "it was written: delete it and start without --resume (resume=False)"
        )
    if "checksum" in state and state["checksum"] != checksum(state):
        raise TrainingError(
            f"checkpoint {str(path)!r} is corrupt (checksum mismatch: its contents changed after it was written); "
            "delete it and start without --resume (resume=False)"
        )
    return state if map_location is None else _mapped(state, torch.device(map_location))


def _mapped(value: Any, device: torch.device) -> Any:
    """``value`` with every floating-point tensor moved to ``device`` (containers rebuilt, other values kept)."""
    if torch.is_tensor(value):
        return value.to(device) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _mapped(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mapped(v, device) for v in value)
    return value


def vae_state(state: Mapping[str, Any], which: str = "best") -> dict[str, torch.Tensor]:
    """The VAE state_dict in a checkpoint: ``"last"`` (end of its epoch) or ``"best"`` (best validation ELBO).

    ``"best"`` falls back to the last parameters when the run had no validation split.
    """
    if which not in ("best", "last"):
        raise ConfigError(f"which={which!r} is not valid; choose 'best' or 'last'")
    if "vae" not in state:
        raise TrainingError("this checkpoint holds no model parameters ('vae' key); was it written by pyro-vae's training loop?")
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
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
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
    cuda = state.get("torch_cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def state_to_checkpoint(state: TrainState, *, spec: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint dict of ``state`` (layout in the module docstring), with the RNG states captured now."""
    best = state.best
    return {
        "format": FORMAT,
        "epoch": state.epoch,
        "vae": state.program.state_dict(),
        "modules": {name: m.state_dict() for name, m in state.modules.items()},
        "optimizers": {name: o.state_dict() for name, o in state.optimizers.items()},
        "param_store": pyro.get_param_store().get_state(),
        "rng": capture_rng(),
        "batch_generator": state.generator.get_state(),
        "history": [asdict(r) for r in state.history],
        "best": {
            "epoch": best.epoch if best else None,
            "val_elbo": best.val_elbo if best else None,
            "vae": best.modules[PROGRAM] if best else None,
            "modules": dict(best.modules) if best else None,
            "monitor": best.monitor if best else None,
        },
        "spec": dict(spec),
        "data": dict(data),
        "samples_evaluated": state.samples,
        "wall_time": state.wall_time,
    }


def restore_state(state: TrainState, ckpt: Mapping[str, Any], path: Path) -> TrainState:
    """Load ``ckpt`` into the modules, optimizers, RNGs and generator of ``state``; returns its progress.

    Raises TrainingError for a file of another format and ConfigError for one written for a
    different model (the fix is in the message).
    """
    missing = [k for k in ("format", "epoch", "vae", "rng", "batch_generator", "history", "best", "spec") if k not in ckpt]
    if missing or ckpt.get("format") not in FORMATS:
        raise TrainingError(
            f"{str(path)!r} is not a pyro-vae checkpoint (missing {missing or 'nothing'}, format "
            f"{ckpt.get('format')!r}); start without --resume (resume=False)"
        )
    modules = ckpt.get("modules") or {PROGRAM: ckpt["vae"]}
    optimizers = ckpt.get("optimizers") or {"theta": ckpt["optimizer"]}
    try:
        load_modules(state.modules, modules)
    except (RuntimeError, KeyError) as err:
        raise ConfigError(
            f"checkpoint {str(path)!r} was written for a different model ({str(err).splitlines()[0]}); build the "
            "model from the run's original spec, or start a new run folder"
        ) from err
    for name, optimizer in state.optimizers.items():
        load_optimizer_state(optimizer, optimizers[name])
    pyro.get_param_store().set_state(ckpt.get("param_store") or {"params": {}, "constraints": {}})
    restore_rng(ckpt["rng"])
    state.generator.set_state(ckpt["batch_generator"])
    best = ckpt["best"]
    best_modules = best.get("modules") or ({PROGRAM: best["vae"]} if best.get("vae") is not None else None)
    return state.replace(
        epoch=int(ckpt["epoch"]),
        history=tuple(EpochRecord(**r) for r in ckpt["history"]),
        best=Best(best["epoch"], best["val_elbo"], best_modules, best.get("monitor"))
        if best_modules is not None else None,
        samples=int(ckpt.get("samples_evaluated", 0)),
        wall_time=float(ckpt.get("wall_time", 0.0)),
    )


__all__ = [
    "FORMAT", "save_checkpoint", "load_checkpoint", "vae_state", "capture_rng", "restore_rng",
    "state_to_checkpoint", "restore_state", "checksum",
]
