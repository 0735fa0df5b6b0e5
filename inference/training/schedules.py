r"""Per-epoch learning-rate schedules and the per-step KL weight, registered by name (``train.lr_schedule``).

Epoch e of E runs at lr_e, with t = (e - 1) / (E - 1) (t = 0 for a single epoch) and lr_E =
``lr_final`` (default lr / 100)::

    constant      lr_e = lr
    exponential   lr_e = lr (lr_final / lr)^t
    cosine        lr_e = lr_final + (lr - lr_final) (1 + cos(pi t)) / 2

lr_e depends only on (e, E), so a resumed run follows the same schedule as long as E is unchanged.

KL warm-up: at global step t (1-based) of a run with W = ``kl_warmup_epochs`` x steps per
epoch warm-up steps, beta_t = min(1, t / W); beta_t = 1 when W = 0.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from pyro_vae.registry import Registry
from pyro_vae.spec import TrainSpec

Schedule = Callable[[float, float, float], float]  # (lr, lr_final, t in [0, 1]) -> lr_e
SCHEDULES: Registry[float] = Registry("lr_schedule")


@SCHEDULES.register("constant")
def constant(lr: float, final: float, t: float) -> float:
    """lr at every epoch (lr_final has no effect)."""
    return lr


@SCHEDULES.register("exponential")
def exponential(lr: float, final: float, t: float) -> float:
    """lr (lr_final / lr)^t: geometric decay from lr to lr_final."""
    return lr * (final / lr) ** t


@SCHEDULES.register("cosine")
def cosine(lr: float, final: float, t: float) -> float:
    """lr_final + (lr - lr_final) (1 + cos(pi t)) / 2: cosine annealing from lr to lr_final."""
    return final + (lr - final) * 0.5 * (1.0 + math.cos(math.pi * t))


def learning_rate(train: TrainSpec, epoch: int) -> float:
    """Learning rate of epoch ``epoch`` (1-based) of ``train.epochs`` under ``train.lr_schedule`` (module docstring)."""
    final = train.lr_final if train.lr_final is not None else train.lr / 100
    t = 0.0 if train.epochs <= 1 else min(1.0, max(0.0, (epoch - 1) / (train.epochs - 1)))
    return SCHEDULES.get(train.lr_schedule)(train.lr, final, t)


def set_learning_rate(optimizers: torch.optim.Optimizer | Iterable[torch.optim.Optimizer] | None,
                      train: TrainSpec, epoch: int) -> float:
    """Set every parameter group of ``optimizers`` to :func:`learning_rate` (train, epoch); returns it."""
    lr = learning_rate(train, epoch)
    if isinstance(optimizers, torch.optim.Optimizer):
        optimizers = (optimizers,)
    for optimizer in optimizers or ():
        for group in optimizer.param_groups:
            group["lr"] = lr
    return lr


def kl_beta(step: int, warmup_steps: int) -> float:
    """KL weight at global step ``step`` (1-based): beta = min(1, step / warmup_steps); 1 if no warm-up."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)


__all__ = ["SCHEDULES", "learning_rate", "set_learning_rate", "kl_beta"]
