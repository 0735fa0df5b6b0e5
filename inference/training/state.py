"""The state of a fit, held in memory and saved by a checkpoint as it is, and the one result type of every method.

A :class:`TrainState` holds references to the trained modules, their optimizers and the batch
generator (mutable torch objects), and the progress of the fit as immutable values (epoch,
history, best state, counters) that the loop replaces after every epoch. Continuing a fit
means handing the same state back to :func:`inference.training.loop.fit` with a larger epoch
budget; nothing goes through disk unless a run folder is given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

PROGRAM = "program"  # the module key of the model being fitted (a VAE, or any program)


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of any method.

    ``train_elbo``: the training objective per datapoint, mean over the epoch's steps (the
    annealed ELBO for the SVI objectives, the log joint at the codes or chains for MAP and
    MCEM); ``val_elbo``: the task's validation score (the ELBO per datapoint unless ``train.monitor``
    names another, e.g. M2's accuracy; None without one); ``beta``: KL
    weight at the last step; ``seconds``: wall time (not reproducible); ``lr``: learning rate;
    ``stats``: what the method adds (acceptance rate, step size, minibatches done, ...).
    """

    epoch: int
    train_elbo: float
    val_elbo: float | None
    beta: float
    seconds: float
    lr: float | None = None
    stats: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Best:
    """The epoch with the best validation score so far, every module's state then, and the score's name
    (``Task.monitor``; None in checkpoints written before it was recorded)."""

    epoch: int
    val_elbo: float
    modules: Mapping[str, Mapping[str, torch.Tensor]]
    monitor: str | None = None


@dataclass(frozen=True)
class TrainState:
    """Modules, optimizers, batch generator (mutable) and the progress of a fit (immutable values).

    ``last``: the modules' states at the end of the last epoch, kept when a finished fit loaded
    the best-validation states into the modules; continuing the state starts from them.
    ``rng``: the global RNG streams at the end of the last epoch (torch, numpy, Python), restored
    when the state is continued, so that draws made in between do not change the fit.
    """

    modules: Mapping[str, nn.Module]
    optimizers: Mapping[str, torch.optim.Optimizer]
    generator: torch.Generator
    epoch: int = 0
    history: tuple[EpochRecord, ...] = ()
    best: Best | None = None
    samples: int = 0
    wall_time: float = 0.0
    last: Mapping[str, Mapping[str, torch.Tensor]] | None = None
    rng: Mapping[str, Any] | None = None

    @property
    def program(self) -> nn.Module:
        """The model being fitted (``modules["program"]``)."""
        return self.modules[PROGRAM]

    def replace(self, **changes: Any) -> "TrainState":
        """A copy with ``changes`` (the modules and optimizers are shared, not copied)."""
        return dataclasses.replace(self, **changes)


def clone_modules(modules: Mapping[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """Detached copies of every module's ``state_dict``."""
    return {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}


def load_modules(modules: Mapping[str, nn.Module], states: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Load ``states`` (from :func:`clone_modules` or a checkpoint) into ``modules``."""
    for name, sd in states.items():
        modules[name].load_state_dict(sd)


@dataclass(frozen=True)
class FitResult:
    """Outcome of a fit, for every method.

    ``state``: the final :class:`TrainState` (its modules hold the best-validation parameters
    when there was a validation split, else the last ones; hand it back to continue the fit);
    ``stopped``: "completed", "early_stopping", "budget" or "resumed_complete" (nothing left
    to train). ``wall_time`` (seconds) and ``samples_evaluated`` (the method's count of
    datapoint evaluations, e.g. rows x particles for SVI) are cumulative over the fit and its
    continuations. ``monitor``: the name of the validation score that chose the kept epoch
    (``"elbo"``, M2's ``"accuracy"`` or ``"log_q"``; None without validation).
    """

    state: TrainState
    stopped: str
    monitor: str | None = None

    @property
    def vae(self) -> nn.Module:
        """The fitted program."""
        return self.state.program

    @property
    def modules(self) -> Mapping[str, nn.Module]:
        """Every module fitted (the program, and per-datapoint tables of local methods)."""
        return self.state.modules

    @property
    def history(self) -> tuple[EpochRecord, ...]:
        return self.state.history

    @property
    def best_epoch(self) -> int:
        """The epoch whose parameters the program holds (the last epoch without a validation split)."""
        return self.state.best.epoch if self.state.best is not None else self.state.epoch

    @property
    def best_val_elbo(self) -> float | None:
        """The kept epoch's validation score (named by :attr:`monitor`), None without validation."""
        return self.state.best.val_elbo if self.state.best is not None else None

    @property
    def wall_time(self) -> float:
        return self.state.wall_time

    @property
    def samples_evaluated(self) -> int:
        return self.state.samples


__all__ = ["PROGRAM", "EpochRecord", "Best", "TrainState", "FitResult", "clone_modules", "load_modules"]
