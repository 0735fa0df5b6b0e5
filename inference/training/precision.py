"""Mixed precision for the networks only (``train.mixed_precision``, off by default): densities stay in float32.

While :func:`networks_autocast` is active, each network of the program (its ``encoder`` and
``decoder`` modules, where it has them) runs under ``torch.autocast(device, bfloat16)`` and its
output is cast back to the module's dtype, so the distributions built from it (q(z | x),
p(x | z)), their log-densities and the ELBO are computed in full precision. bfloat16 has
float32's range, so no loss scaling is needed. Off by default: it is only worth turning on where
it was measured to pay (large networks on a GPU with bfloat16 units; benchmarks/gpu_check.py).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

NETWORKS = ("encoder", "decoder")


def _wrapped(forward: Any, device_type: str, dtype: torch.dtype) -> Any:
    def forward_autocast(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return out.to(dtype) if torch.is_tensor(out) and out.is_floating_point() else out

    return forward_autocast


@contextlib.contextmanager
def networks_autocast(program: nn.Module, enabled: bool) -> Iterator[list[str]]:
    """Run the program's networks under bfloat16 autocast while active (module docstring); yields their names."""
    nets = [(name, getattr(program, name)) for name in NETWORKS if isinstance(getattr(program, name, None), nn.Module)]
    if not enabled or not nets:
        yield []
        return
    param = next(program.parameters())
    for _, net in nets:
        net.forward = _wrapped(net.forward, param.device.type, param.dtype)  # instance attribute: shadows the method
    try:
        yield [name for name, _ in nets]
    finally:
        for _, net in nets:
            del net.forward


__all__ = ["networks_autocast", "NETWORKS"]
