r"""A classifier's scores on the labelled validation split, the numbers M2 and its floor are kept by.

Two scores, both higher-is-better, nats or fractions per validation row:

    accuracy = (1 / N_val) sum_i [argmax_y q(y | x_i) = y_i]
    log_q    = (1 / N_val) sum_i log q(y_i | x_i)

``train.monitor`` names the one that keeps the best epoch and drives early stopping (default
``accuracy``, the error every table reports). Each epoch scores the classifier once: ``validate``
computes both and ``report`` hands the same pair to the epoch's stats.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn

from inference.training.settings import monitor_name
from pyro_vae.spec import TrainSpec

CHUNK = 1000
MONITORS = ("accuracy", "log_q")  # the validation scores of a classifier (module docstring)
DEFAULT_MONITOR = "accuracy"
STAT_NAMES = {"accuracy": "val_accuracy", "log_q": "val_log_q"}


@torch.no_grad()
def class_log_likelihood(program: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """((1/N) sum_i log q(y_i | x_i), accuracy of argmax q(y | x)) over the rows of x, in chunks of CHUNK rows."""
    total, right = 0.0, 0
    for start in range(0, x.shape[0], CHUNK):
        q = program.classify(x[start:start + CHUNK])
        yy = y[start:start + CHUNK]
        total += float(q.log_prob(yy).sum())
        right += int((q.probs.argmax(-1) == yy).sum())
    return total / x.shape[0], right / x.shape[0]


class ClassifierValidation(NamedTuple):
    """What a classifier's training task validates with: ``monitor`` names the score ``validate`` returns."""

    monitor: str
    validate: Callable[[], float]
    report: Callable[[], dict[str, float]]


def classifier_validation(program: nn.Module, x: torch.Tensor, y: torch.Tensor, train: TrainSpec,
                          what: str) -> ClassifierValidation:
    """Score ``program.classify`` on the rows (x, y) once per epoch, by the score ``train.monitor`` names.

    ``validate()`` computes ``val_accuracy`` and ``val_log_q`` (module docstring) and returns the
    monitored one; ``report()`` returns both, reusing that pass (or scoring afresh when ``validate``
    has not run since the last report). ``what`` names the fit in the error an unknown monitor gets.
    """
    monitor = monitor_name(train, MONITORS, DEFAULT_MONITOR, what)
    fresh: dict[str, float] = {}

    def score() -> dict[str, float]:
        log_q, accuracy = class_log_likelihood(program, x, y)
        fresh.clear()
        fresh.update(val_accuracy=accuracy, val_log_q=log_q)
        return fresh

    def validate() -> float:
        return score()[STAT_NAMES[monitor]]

    def report() -> dict[str, float]:
        scores = dict(fresh) if fresh else dict(score())
        fresh.clear()
        return scores

    return ClassifierValidation(monitor, validate, report)


__all__ = ["MONITORS", "DEFAULT_MONITOR", "class_log_likelihood", "ClassifierValidation", "classifier_validation"]
