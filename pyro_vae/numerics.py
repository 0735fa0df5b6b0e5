"""Small numerical helpers shared by components and inference: the softplus inverse and row chunks."""

from __future__ import annotations

import math
from typing import Iterator, overload

import torch


@overload
def inverse_softplus(y: float) -> float: ...
@overload
def inverse_softplus(y: torch.Tensor) -> torch.Tensor: ...
def inverse_softplus(y):
    """softplus^-1(y) = y + log(1 - exp(-y)) for y > 0 (clamped to 1e-8 from below); floats stay floats."""
    if torch.is_tensor(y):
        y = y.clamp_min(1e-8)
        return y + torch.log(-torch.expm1(-y))
    y = max(float(y), 1e-8)
    return y + math.log(-math.expm1(-y))


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, length) of consecutive chunks of ``size`` rows covering ``range(n)``."""
    for start in range(0, n, size):
        yield start, min(size, n - start)


__all__ = ["inverse_softplus", "chunks"]
