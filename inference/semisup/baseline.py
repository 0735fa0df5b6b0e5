r"""The floor every semi-supervised table shows: the same classifier network trained on the labelled rows alone.

The classifier h_phi (the M2 program's ``classifier`` network, freshly built from the same model
spec and seed, or any module mapping x to C logits) is fitted by maximum likelihood on the L
labelled training rows,

    loss = -(L / B) sum_{i in batch} log Cat(y_i | softmax(h_phi(x_i))),

on the one training loop (its ``Task.batches`` yields minibatches of labelled rows only: an
epoch is ceil(L / B) steps), keeping the epoch and stopping early by the same labelled
validation score as M2 (``train.monitor``: accuracy by default, or log q(y | x)). Dynamic
binarization applies as in M2.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Iterator, Mapping

import pyro.distributions as dist
import torch
from torch import nn

from inference.semisup.batches import split_rows
from inference.semisup.validation import classifier_validation
from inference.training import FitResult, Task, gradient_step, make_optimizer
from inference.training import fit as run_loop
from pyro_vae.data import DataSplits
from pyro_vae.errors import DataError
from pyro_vae.rng import seeded
from pyro_vae.spec import TrainSpec


class Classifier(nn.Module):
    """q(y | x) = Cat(softmax(network(x))): a bare classifier with M2's ``classify`` interface."""

    def __init__(self, network: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.network, self.num_classes = network, num_classes

    def classify(self, x: torch.Tensor) -> dist.Categorical:
        """q(y | x), batch_shape x.shape[:-1]."""
        return dist.Categorical(logits=self.network(x))


def labelled_batches(data: DataSplits, train: TrainSpec, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch over the labelled training rows only, shuffled, in minibatches of ``train.batch_size``."""
    _, labelled = split_rows(data)
    order = labelled[torch.randperm(labelled.numel(), generator=generator)]
    for idx in order.split(train.batch_size):
        x = data.train.index_select(0, idx)
        if data.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        yield {"x": x, "y": data.train_labels[idx], "idx": idx}


def classifier_task(classifier: Classifier, data: DataSplits, train: TrainSpec) -> Task:
    """The :class:`~inference.training.Task` of the labelled-only classifier (module docstring)."""
    n_l = int(split_rows(data)[1].numel())

    def loss(batch: Mapping[str, torch.Tensor], beta: float) -> torch.Tensor:
        return -(n_l / batch["y"].numel()) * classifier.classify(batch["x"]).log_prob(batch["y"]).sum()

    scores = classifier_validation(classifier, data.val, data.val_labels, train, "the labelled-only classifier")
    return Task(
        modules={"program": classifier},
        make_optimizers=lambda t: {"theta": make_optimizer(classifier, t)},
        step=gradient_step(loss),
        validate=scores.validate,
        monitor=scores.monitor,
        report=scores.report,
        label="labelled-only classifier",
        batches=labelled_batches,
    )


def fit_classifier(classifier: Classifier, data: DataSplits, train: TrainSpec, **fit_options: Any) -> FitResult:
    """Fit ``classifier`` on the labelled rows of ``data`` (module docstring); ``fit_options`` go to the loop.

    The loop reports the train objective per training row (-loss / N); its steps per epoch count is
    the loop's ceil(N / B) for KL warm-up only, which this task does not use.
    """
    n_l = int(split_rows(data)[1].numel())
    if n_l == 0 or data.val_labels is None:
        raise DataError(f"{data.name}: the labelled-only classifier needs labelled training rows and validation labels")
    if train.batch_size > n_l:
        train = _smaller_batch(train, n_l)
    return run_loop(classifier_task(classifier, data, train), data, train, **fit_options)


def _smaller_batch(train: TrainSpec, n_l: int) -> TrainSpec:
    """``train`` with its batch cut to the labelled rows (few labels: one full batch per epoch)."""
    return dataclasses.replace(train, batch_size=n_l)


def baseline_for(program: nn.Module, *, seed: int = 0) -> Classifier:
    """A fresh copy of ``program``'s classifier network (same architecture, re-initialized from ``seed``)."""
    network = copy.deepcopy(program.classifier)
    with seeded(seed):  # the caller's torch RNG untouched
        for module in network.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return Classifier(network, program.num_classes)


__all__ = ["Classifier", "labelled_batches", "classifier_task", "fit_classifier", "baseline_for"]
