r"""Theta fitted jointly with per-datapoint parameters: the :class:`~inference.training.Task` MAP and local VI run.

For a minibatch I of B of the N training rows, with a per-datapoint guide q_i (rows ``idx`` of
its tables) and KL weight beta, each step minimizes

    loss = objective.differentiable_loss(program.model, q_I, x_I, num_data=N, beta=beta)
           + weight_decay * ||theta||^2,

the minibatch estimate of -sum_i ELBO_i(theta, q_i) + penalty (for a point guide the "ELBO" is
the log joint). Theta (:func:`~inference.baselines.theta.theta_parameters`) moves with the
optimizer of ``train`` at ``train.lr`` under ``train.lr_schedule``; the rows of the guide in
the minibatch move with SparseAdam at ``local_lr`` (sparse gradients: the other rows keep their
Adam moments), once per epoch.
"""

from __future__ import annotations

import functools
from typing import Mapping

import torch
from pyro.infer import ELBO
from torch import nn

from inference.baselines.local_guides import RowTable
from inference.baselines.theta import theta_parameters, theta_penalty
from inference.training import Task, gradient_step, make_optimizer
from pyro_vae.spec import TrainSpec


def joint_task(
    program: nn.Module,
    guide: RowTable,
    objective: ELBO,
    *,
    num_data: int,
    local_lr: float,
    weight_decay: float = 0.0,
    samples_per_row: int = 1,
    label: str,
) -> Task:
    """The Task of the module docstring; modules ``program`` and ``local`` (the guide), optimizers ``theta`` and ``local``."""
    theta = theta_parameters(program)

    def loss(batch: Mapping[str, torch.Tensor], beta: float) -> torch.Tensor:
        rows = functools.partial(guide.guide, idx=batch["idx"])
        value = objective.differentiable_loss(program.model, rows, batch["x"], num_data=num_data, beta=beta)
        return value + theta_penalty(theta, weight_decay)

    def optimizers(train: TrainSpec) -> dict[str, torch.optim.Optimizer]:
        out = {"theta": make_optimizer(theta, train)} if theta else {}
        out["local"] = torch.optim.SparseAdam(list(guide.parameters()), lr=local_lr)
        return out

    return Task(
        modules={"program": program, "local": guide},
        make_optimizers=optimizers,
        step=gradient_step(loss, samples_per_row=samples_per_row),
        label=label,
    )


__all__ = ["joint_task"]
