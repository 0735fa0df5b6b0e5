"""Training: the one loop every fitting method runs on, its state, checkpoints, optimizers and schedules."""

from inference.training.checkpoint import (
    FORMAT, capture_rng, load_checkpoint, restore_rng, restore_state, save_checkpoint, state_to_checkpoint, vae_state,
)
from inference.training.loop import StepResult, Task, fit, generator_seed, gradient_step, init_state
from inference.training.resume import check_best_monitor, check_resumable, data_info, fingerprint
from inference.training.optimizers import OPTIMIZERS, adam, load_optimizer_state, make_optimizer
from inference.training.schedules import SCHEDULES, kl_beta, learning_rate, set_learning_rate
from inference.training.settings import RESUMABLE_CHANGES, check_train_spec
from inference.training.state import Best, EpochRecord, FitResult, TrainState
from inference.training.subnormals import flushing_subnormals

__all__ = [
    "FORMAT", "capture_rng", "load_checkpoint", "restore_rng", "restore_state", "save_checkpoint",
    "state_to_checkpoint", "vae_state", "StepResult", "Task", "check_best_monitor", "data_info", "check_resumable", "fingerprint", "fit", "generator_seed", "gradient_step",
    "init_state", "OPTIMIZERS", "adam", "load_optimizer_state", "make_optimizer", "SCHEDULES", "kl_beta",
    "learning_rate", "set_learning_rate", "RESUMABLE_CHANGES", "check_train_spec", "Best", "EpochRecord",
    "FitResult", "TrainState", "flushing_subnormals",
]
