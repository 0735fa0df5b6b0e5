"""The data plate every program and per-datapoint guide shares."""

from __future__ import annotations

import pyro
import torch


def data_plate(batch: int, num_data: int | None, device: torch.device | None = None) -> pyro.plate:
    """``pyro.plate("data", B, dim=-1)``, or of size N holding a minibatch of B rows (log-densities scaled by N / B).

    The rows are passed in, so the subsample indices only fix the minibatch size; they are
    created on ``device`` (the rows' device: pass ``x.device``).
    """
    if num_data is None or num_data == batch:
        return pyro.plate("data", batch, dim=-1, device=device)
    return pyro.plate("data", num_data, subsample=torch.arange(batch, device=device), dim=-1, device=device)


__all__ = ["data_plate"]
