"""What one inference method produced: the fitted program and an importance-sampling proposal for any rows."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

from pyro_vae.vae import VAE

Tensor = torch.Tensor
Proposal = Callable[[Tensor], Callable[..., Any]]  # rows x -> a guide for them (model-compatible)


@dataclass(frozen=True)
class MethodResult:
    """What one inference method produced.

    ``vae``: the trained model (theta; and phi for amortized methods); ``proposal``: x -> a
    guide for the rows x (the IS proposal of :func:`score`); ``history``: the method's per-epoch
    records; ``wall_time``: training seconds; ``samples_evaluated``: the method's own count of
    training-sample evaluations; ``epochs``: epochs run (transitions for ``mcmc``);
    ``elbo_defined``: whether the proposal is a variational q fitted by maximizing an ELBO (then
    :func:`test_elbo` reports its ELBO); ``checkpoints``: the states reached at fractions of the
    budget (each a MethodResult, the last one this result itself); ``fraction``: this state's
    fraction of the budget; ``notes``: settings worth reporting (particles, ...).
    """

    method: str
    vae: VAE
    proposal: Proposal
    history: tuple[Any, ...]
    wall_time: float
    samples_evaluated: int
    epochs: int
    elbo_defined: bool
    checkpoints: tuple["MethodResult", ...] = ()
    fraction: float = 1.0
    notes: str = ""


def snapshot(
    method: str,
    vae: VAE,
    make_proposal: Callable[[VAE], Proposal],
    history: tuple[Any, ...],
    wall_time: float,
    samples_evaluated: int,
    *,
    epochs: int,
    elbo_defined: bool,
    fraction: float,
    notes: str,
    checkpoints: tuple[MethodResult, ...] = (),
    copy_vae: bool = True,
) -> MethodResult:
    """The state a method reached, as a MethodResult (a deep copy of ``vae`` unless ``copy_vae=False``)."""
    held = copy.deepcopy(vae) if copy_vae else vae
    return MethodResult(
        method, held, make_proposal(held), tuple(history), float(wall_time), int(samples_evaluated), int(epochs),
        elbo_defined, checkpoints, fraction, notes,
    )


def with_final(points: list[MethodResult]) -> MethodResult:
    """The last point, carrying all points (itself included) as its checkpoints."""
    final = points[-1]
    return dataclasses.replace(final, checkpoints=tuple(points[:-1]) + (dataclasses.replace(final, checkpoints=()),))



def fit_snapshot(method: str, vae: VAE, make_proposal: Callable[[VAE], Proposal], fit: Any, **kwargs: Any) -> MethodResult:
    """:func:`snapshot` of a :class:`~inference.training.FitResult` (its history, wall time and samples)."""
    return snapshot(method, vae, make_proposal, fit.history, fit.wall_time, fit.samples_evaluated, **kwargs)


__all__ = ["MethodResult", "Proposal", "snapshot", "fit_snapshot", "with_final"]
