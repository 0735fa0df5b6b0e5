"""The names in a :class:`~pyro_vae.spec.TrainSpec`, resolved against the inference side's registries, and the
arguments every fit shares, checked once before it trains (:func:`check_fit_inputs`)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from inference.objectives import OBJECTIVES
from inference.training.optimizers import OPTIMIZERS
from inference.training.schedules import SCHEDULES
from pyro_vae.checks import got
from pyro_vae.data import DataSplits, check_data_splits
from pyro_vae.errors import ConfigError
from pyro_vae.programs import check_program
from pyro_vae.spec import TrainSpec, as_section

# TrainSpec fields that may change between a run and its resumption (they do not change the maths
# of the epochs already done).
# device: the maths is the same anywhere; monitor: null and its default name the same score, and a change of score is
# refused against the checkpoint's best epoch (inference.training.resume.check_best_monitor)
RESUMABLE_CHANGES = ("epochs", "patience", "validate_every_step", "device", "monitor")


def check_train_spec(train: TrainSpec) -> TrainSpec:
    """``train`` if its objective, optimizer and learning-rate schedule are registered, else ConfigError listing the valid names."""
    if not isinstance(train, TrainSpec):
        raise ConfigError(f"train must be a TrainSpec (pyro_vae.spec.TrainSpec(...)), {got(train)}")
    for key, registry in (("elbo", OBJECTIVES), ("optimizer", OPTIMIZERS), ("lr_schedule", SCHEDULES)):
        name = getattr(train, key)
        if name not in registry:
            raise ConfigError(f"train.{key}={name!r} is not valid; choose one of: {', '.join(registry.names())}")
    if train.lr_final is not None and train.lr_schedule == "constant":
        others = ", ".join(n for n in SCHEDULES.names() if n != "constant")
        raise ConfigError(
            f"train.lr_final={train.lr_final!r} has no effect with lr_schedule='constant'; "
            f"set lr_schedule to one of: {others}, or drop lr_final"
        )
    return train


def as_train_spec(train: Any) -> TrainSpec:
    """``train`` (a TrainSpec or a mapping of its keys) as a checked TrainSpec; ConfigError naming what is wrong."""
    if not isinstance(train, (TrainSpec, Mapping)):
        raise ConfigError(f"train must be a TrainSpec or a mapping of its keys (e.g. {{'epochs': 10}}), {got(train)}")
    return check_train_spec(as_section(TrainSpec, train, "train"))


def check_batch_size(train: TrainSpec, data: DataSplits) -> None:
    """ConfigError when ``train.batch_size`` is larger than the training rows.

    Refused rather than shrunk: a batch larger than the data would silently be the whole data, so
    the steps per epoch, the gradient noise and the learning rate that suits them would not be
    what the spec says.
    """
    n = int(data.train.shape[0])
    if train.batch_size > n:
        raise ConfigError(f"train.batch_size={train.batch_size} is larger than the {n} training rows; set batch_size "
                          f"(--batch-size) to at most {n}, or train on more rows")


def check_fit_inputs(program: Any, data: Any, train: Any, *, program_name: str = "vae") -> TrainSpec:
    """The inputs every fit shares, checked once before training; returns the TrainSpec.

    ``program``: a program (model, guide, check_data); ``data``: the DataSplits of
    :func:`pyro_vae.data.load_dataset` (DataError otherwise); ``train``: a TrainSpec or mapping
    whose names are registered (:func:`as_train_spec`), with a batch no larger than the training rows.
    """
    train = as_train_spec(train)
    check_program(program, program_name)
    check_batch_size(train, check_data_splits(data))
    return train


def refuse_labelled_batch(train: TrainSpec, program: str) -> None:
    """ConfigError when ``train.labelled_batch_size`` is set for a fit with no labelled rows to batch."""
    if train.labelled_batch_size is not None:
        raise ConfigError(f"train.labelled_batch_size={train.labelled_batch_size} sets the labelled rows of each "
                          f"semi-supervised step, but {program} trains on unlabelled rows only; drop it "
                          "(--labelled-batch-size), or use model.program: m2 with data.labels")


def monitor_name(train: TrainSpec, names: Sequence[str], default: str, what: str) -> str:
    """The validation score ``train.monitor`` names among ``names`` (None: ``default``).

    ConfigError naming the valid ones when ``what`` (the method, for the message) offers no
    score of that name; every score is higher-is-better.
    """
    name = default if train.monitor is None else train.monitor
    if name not in names:
        raise ConfigError(f"train.monitor={train.monitor!r} is not a validation score of {what}; use one of: "
                          f"{', '.join(names)} (--monitor; or null for {default})")
    return name


__all__ = ["RESUMABLE_CHANGES", "monitor_name", "refuse_labelled_batch", "check_train_spec", "as_train_spec", "check_batch_size", "check_fit_inputs"]
