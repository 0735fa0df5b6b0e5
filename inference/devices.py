"""Devices: ``train.device`` / ``--device`` / ``device=`` resolved to a ``torch.device`` this machine has.

Accepted forms (:data:`pyro_vae.spec.DEVICE_FORMS`): ``cpu``, ``cuda`` (the current CUDA device;
under torchrun the rank's ``cuda:LOCAL_RANK``), ``cuda:N``, ``mps`` and ``auto`` (CUDA, then
MPS, then CPU). A device this machine lacks is refused with one line naming what it has.

Placement rule of the library: the modules live on the resolved device; batches and evaluation
chunks are moved there (floating tensors also cast to the module's dtype) right before use; every
tensor library code creates during a step takes the device and dtype of the tensors it combines
with. The batch generator (shuffling, dynamic binarization) stays on the CPU, so a run draws the
same minibatches on every device; Pyro's draws use the device's own RNG stream.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn

from pyro_vae.errors import ConfigError
from pyro_vae.spec import check_device_form


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """The devices this machine has: ``cpu``, then ``cuda:0`` ... ``cuda:(n-1)``, then ``mps``."""
    cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu", *cuda, *(["mps"] if _mps_available() else [])]


def _local_rank() -> int | None:
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None and value.isdigit() else None


def resolve_device(device: str | torch.device | None = "cpu", *, name: str = "device") -> torch.device:
    """The ``torch.device`` meant by ``device`` (module docstring), checked against this machine.

    ``None`` is the CPU. A ``torch.device`` passes through after the same availability check
    (``meta`` is allowed, for shape-only checks). Raises ConfigError naming ``name``, the value
    and :func:`available_devices` for a malformed name, CUDA or MPS that this machine lacks, or a
    CUDA index out of range.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        text = str(device)
    else:
        text = check_device_form(name, device)
    if text == "auto":
        if torch.cuda.is_available():
            return resolve_device("cuda", name=name)
        return torch.device("mps" if _mps_available() else "cpu")
    dev = torch.device(text)
    have = ", ".join(available_devices())
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
            raise ConfigError(f"{name}={text!r}: this machine has no CUDA device (torch {torch.__version__}, {built}); "
                              f"available: {have}; use --device cpu or auto")
        index = dev.index if dev.index is not None else (_local_rank() or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{name}={text!r}: CUDA device index {index} is out of range, this machine has "
                              f"{torch.cuda.device_count()} (available: {have})")
        return torch.device("cuda", index)
    if dev.type == "mps" and not _mps_available():
        raise ConfigError(f"{name}={text!r}: MPS (Apple GPU) is not available here; available: {have}")
    return dev


def module_placement(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of ``module``'s first floating parameter or buffer (CPU, float32 without one)."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def to_placement(batch: Mapping[str, Any], device: torch.device, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """``batch`` with every tensor on ``device`` and every floating tensor of ``dtype`` (when given)."""
    out = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            value = value.to(device=device, dtype=dtype if dtype is not None and value.is_floating_point() else None,
                             non_blocking=device.type == "cuda")
        out[key] = value
    return out


def on_module(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on ``module``'s device and floating dtype (:func:`module_placement`): rows that meet its parameters."""
    return x.to(*module_placement(module))


def place(module: nn.Module, device: str | torch.device | None, *, name: str = "device") -> torch.device:
    """Move ``module`` (in place) to the resolved ``device``; returns it. ``None`` leaves it where it is."""
    if device is None:
        return module_placement(module)[0]
    dev = resolve_device(device, name=name)
    module.to(dev)
    return dev


def device_record(device: torch.device) -> dict[str, Any]:
    """What a run folder records of the device it used: its name, and the GPU's model where there is one."""
    out: dict[str, Any] = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        out["name"] = torch.cuda.get_device_name(device)
    return out


__all__ = ["available_devices", "resolve_device", "module_placement", "to_placement", "on_module", "place", "device_record"]
