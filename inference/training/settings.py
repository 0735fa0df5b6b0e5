"""The names in a :class:`~pyro_vae.spec.TrainSpec`, resolved against the inference side's registries."""

from __future__ import annotations

from inference.objectives import OBJECTIVES
from inference.training.optimizers import OPTIMIZERS
from inference.training.schedules import SCHEDULES
from pyro_vae.errors import ConfigError
from pyro_vae.spec import TrainSpec

# TrainSpec fields that may change between a run and its resumption (they do not change the maths
# of the epochs already done).
RESUMABLE_CHANGES = ("epochs", "patience", "validate_every_step")


def check_train_spec(train: TrainSpec) -> TrainSpec:
    """``train`` if its objective, optimizer and learning-rate schedule are registered, else ConfigError listing the valid names."""
    if not isinstance(train, TrainSpec):
        raise ConfigError(f"train must be a TrainSpec (pyro_vae.spec.TrainSpec(...)), got {type(train).__name__}")
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


__all__ = ["RESUMABLE_CHANGES", "check_train_spec"]
