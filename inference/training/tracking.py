"""Experiment tracking: each epoch's numbers (and sample grids) to TensorBoard, PyTorch's standard viewer.

A tracker is a callback ``tracker(state, record)`` that the training loop calls after every
epoch (``fit(..., callbacks=[...])``). :class:`TensorBoardTracker` writes, under tag groups

* ``elbo/train``, ``elbo/validation``: the record's objective and validation ELBO (nats per datapoint);
  a task keeping its epoch by another score writes it as ``validation/<train.monitor>`` (M2: accuracy);
* ``schedule/lr``, ``schedule/beta``: the learning rate and KL weight;
* ``stats/<name>``: everything in the record's ``stats`` (e.g. ``val_reconstruction``, ``val_kl``);
* ``samples``: every ``image_every`` epochs, a grid of decoder means E[x | z], z ~ p(z), for
  image data (drawn with a fixed seed inside ``fork_rng``: the run's random streams are untouched).

It needs the ``tensorboard`` package (``pip install 'pyro-vae[tensorboard]'``); view with
``tensorboard --logdir RUN_DIR/tensorboard``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from inference.training.state import EpochRecord, TrainState
from pyro_vae.errors import ConfigError
from pyro_vae.rng import seeded


def require_tensorboard() -> Any:
    """torch's SummaryWriter class, or ConfigError saying how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # the optional dependency is missing
        raise ConfigError(
            "TensorBoard logging needs the tensorboard package: pip install 'pyro-vae[tensorboard]' "
            f"(or drop --tensorboard); {err}"
        ) from None
    return SummaryWriter


class TensorBoardTracker:
    """Write each epoch to a TensorBoard event file in ``log_dir`` (module docstring); call :meth:`close` at the end."""

    def __init__(self, log_dir: str | os.PathLike, *, image_shape: Sequence[int] | None = None,
                 image_every: int = 10, num_images: int = 16) -> None:
        self.writer = require_tensorboard()(log_dir=str(Path(log_dir)))
        self.image_shape = tuple(image_shape) if image_shape else None
        self.image_every, self.num_images = int(image_every), int(num_images)

    def __call__(self, state: TrainState, record: EpochRecord) -> None:
        w, e = self.writer, record.epoch
        w.add_scalar("elbo/train", record.train_elbo, e)
        if record.val_elbo is not None:  # the task's validation score: the ELBO unless train.monitor names another
            monitor = state.best.monitor if state.best is not None else None
            w.add_scalar("elbo/validation" if monitor in (None, "elbo") else f"validation/{monitor}", record.val_elbo, e)
        if record.lr is not None:
            w.add_scalar("schedule/lr", record.lr, e)
        w.add_scalar("schedule/beta", record.beta, e)
        for name, value in record.stats.items():
            w.add_scalar(f"stats/{name}", value, e)
        program = state.program
        if self.image_shape is not None and hasattr(program, "sample") and (e == 1 or e % self.image_every == 0):
            w.add_images("samples", self._samples(program), e)
        w.flush()

    def _samples(self, program: Any) -> torch.Tensor:
        with seeded(0), torch.no_grad():  # the fit's streams, CUDA's included, stay as they were
            was = program.training
            program.eval()
            x = program.sample(self.num_images)
            program.train(was)
        shape = self.image_shape if len(self.image_shape) == 3 else (1, *self.image_shape)
        return x.reshape(-1, *shape).clamp(0, 1).cpu()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


__all__ = ["TensorBoardTracker", "require_tensorboard"]
