r"""Semi-supervised training of M2 (:mod:`pyro_vae.m2`) on the one training loop.

Each step takes a mixed minibatch (:mod:`inference.semisup.batches`: ~U / S unlabelled rows and
m labelled rows) and minimizes

    loss = enum(x_u; num_data = U) + enum(x_l, y_l; num_data = L) - (alpha / L) (L / m) sum_{labelled in batch} log q(y | x)

where ``enum`` is the registered objective ``train.elbo`` (``"enum"``: Pyro's TraceEnum_ELBO, y
summed out on the unlabelled rows; y observed on the labelled ones) and the last term is
:class:`~inference.objectives.ClassificationLoss`. The three terms are unbiased for the full
data objective J^alpha = sum_l L(x, y) + sum_u U(x) - alpha E_labelled[log q(y | x)], alpha
= the program's ``alpha`` (None: 0.1 N). The train objective the loop reports is -J^alpha / N.

The kept epoch and early stopping read the labelled validation split, by ``train.monitor``:
``accuracy`` (the default: the fraction of validation rows with argmax q(y | x) = y, the error
every table reports) or ``log_q`` (the classifier's held-out log-likelihood
(1 / N_val) sum_val log q(y_i | x_i), nats per datapoint). The two can part ways: a classifier
growing confident on its mistakes loses log q while it gains accuracy. Every epoch's stats hold
both (``val_accuracy``, ``val_log_q``) and ``val_elbo`` (the enumerated ELBO with y unobserved).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from inference.objectives import ClassificationLoss, make_objective
from inference.semisup.batches import mixed_batches, split_rows
from inference.semisup.validation import DEFAULT_MONITOR, MONITORS, classifier_validation
from inference.svi import mean_elbo
from inference.training import EpochRecord, FitResult, Task, TrainState, gradient_step, make_optimizer
from inference.training import fit as run_loop
from inference.training.checks import check_splits
from inference.training.settings import check_fit_inputs, monitor_name
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.labels import check_label_range
from pyro_vae.spec import TrainSpec

logger = logging.getLogger(__name__)


def is_semi_supervised(program: Any) -> bool:
    """Whether ``program`` observes a class label when given one (M2: it declares ``labels``)."""
    return isinstance(getattr(program, "labels", None), str) and callable(getattr(program, "classify", None))


def alpha_of(program: nn.Module, n_train: int) -> float:
    """The classification weight alpha: the program's, else 0.1 N (Kingma et al. 2014)."""
    return float(program.alpha) if getattr(program, "alpha", None) is not None else 0.1 * n_train


def m2_task(program: nn.Module, data: DataSplits, train: TrainSpec) -> Task:
    """The :class:`~inference.training.Task` of semi-supervised M2 (module docstring)."""
    objective = make_objective(train.elbo, train.num_particles)
    unlabelled, labelled = split_rows(data)
    n_u, n_l = int(unlabelled.numel()), int(labelled.numel())
    classification = ClassificationLoss(alpha_of(program, int(data.train.shape[0])) / n_l)
    val, val_y = data.val, data.val_labels

    def loss(batch: Mapping[str, torch.Tensor], beta: float) -> torch.Tensor:
        total = torch.zeros((), device=batch["x"].device)
        if batch["x"].shape[0]:
            total = total + objective.differentiable_loss(program.model, program.guide, x=batch["x"], num_data=n_u,
                                                          beta=beta)
        if batch["y"].numel():
            labelled_batch = dict(x=batch["x_labelled"], y=batch["y"], num_data=n_l)
            total = total + objective.differentiable_loss(program.model, program.guide, beta=beta, **labelled_batch)
            total = total + classification.differentiable_loss(program.model, program.guide, **labelled_batch)
        return total

    scores = classifier_validation(program, val, val_y, train, "M2")

    def report() -> dict[str, float]:
        return {**scores.report(), "val_elbo": mean_elbo(program, val, objective)}

    return Task(
        modules={"program": program},
        make_optimizers=lambda t: {"theta": make_optimizer(program, t)},
        step=gradient_step(loss, samples_per_row=train.num_particles),
        validate=scores.validate,
        monitor=scores.monitor,
        report=report,
        label=f"m2 {train.elbo}",
        batches=mixed_batches,
    )


def check_semi_supervised(program: nn.Module, data: DataSplits, train: TrainSpec) -> None:
    """What M2 training refuses before it starts (DataError/ConfigError naming the fix)."""
    if not is_semi_supervised(program):
        raise ConfigError(f"semi-supervised training needs a program with a class label (model.program: m2), got "
                          f"{type(program).__name__}")
    check_splits(program, data)
    if data.train_labels is None or data.val_labels is None or data.val.shape[0] == 0:
        raise DataError(f"{data.name}: semi-supervised training needs training labels and a labelled validation "
                        "split; load labelled data (digits, mnist, .npz with 'y', .csv with a 'label' column), "
                        "set data.labels and data.val_fraction > 0")
    for split, y in (("train_labels", data.train_labels), ("val_labels", data.val_labels),
                     ("test_labels", data.test_labels)):
        if y is not None:
            check_label_range(y, program.num_classes, split)
    monitor_name(train, MONITORS, DEFAULT_MONITOR, "M2")
    n_l = int(split_rows(data)[1].numel())
    if n_l < program.num_classes:
        raise DataError(f"{data.name} has {n_l} labelled training rows, fewer than the "
                        f"{program.num_classes} classes; set data.labels (--labels) to at least {program.num_classes}")
    if train.labelled_batch_size is not None and train.labelled_batch_size > n_l:
        raise ConfigError(f"train.labelled_batch_size={train.labelled_batch_size} is more than the {n_l} labelled "
                          f"training rows; set labelled_batch_size (--labelled-batch-size) to at most {n_l}")


def fit(program: nn.Module, data: DataSplits, train: TrainSpec | Mapping[str, Any], *,
        run_dir: str | Path | None = None, resume: bool = False, state: TrainState | None = None,
        max_seconds: float | None = None, allow_data_change: bool = False,
        callbacks: Sequence[Callable[[TrainState, EpochRecord], None]] = (), progress: bool = True) -> FitResult:
    """Fit M2 to ``data`` (labels hidden as :data:`pyro_vae.labels.UNLABELLED` where unknown), module docstring.

    Arguments as :func:`inference.svi.fit`; every input is checked first (ConfigError/DataError).
    At the end the program holds the parameters of the best validation epoch.
    """
    train = check_fit_inputs(program, data, train, program_name="program")
    check_semi_supervised(program, data, train)
    if train.elbo != "enum":
        logger.warning("M2 with train.elbo=%r samples the label of unlabelled rows (score-function gradients); "
                       "train.elbo='enum' sums it out exactly", train.elbo)
    task = m2_task(program, data, train)
    return run_loop(task, data, train, state=state, run_dir=run_dir, resume=resume, max_seconds=max_seconds,
                    allow_data_change=allow_data_change, callbacks=callbacks, progress=progress)


__all__ = ["fit", "m2_task", "check_semi_supervised", "is_semi_supervised", "alpha_of"]
