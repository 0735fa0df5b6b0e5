r"""A completion task: how a datapoint x splits into the observed part c and the part y to complete.

- ``inpaint`` with a mask m (True = observed, :mod:`pyro_vae.masks`): c = x[m] (the observed
  features), y = x[~m] (the missing ones); completing puts a y back: x_hat[m] = x[m], x_hat[~m] = y.
- ``superres`` with a factor f: c = pool_f(x) (the image average-pooled by f), y = x (the full
  image); completing returns y itself.

The task is a module whose mask is a buffer, so a trained conditional program keeps the exact
mask it was trained with (checkpoints and exported files carry it).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pyro_vae.checks import choice
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.masks import MaskSpec, average_pool, check_factor, check_mask

TASKS = ("inpaint", "superres")


class CompletionTask(nn.Module):
    """c(x) and y(x) of a datapoint, and x_hat from (x, y) (module docstring)."""

    def __init__(self, kind: str, data_dim: int, image_shape: Sequence[int] | None, *,
                 mask: torch.Tensor | None = None, factor: int | None = None, label: str = "") -> None:
        super().__init__()
        self.kind = choice("task", kind, TASKS)
        self.data_dim, self.image_shape = int(data_dim), None if image_shape is None else tuple(image_shape)
        self.factor, self.label = factor, label
        if self.kind == "inpaint":
            mask = check_mask(mask, "task mask")
            if mask.numel() != data_dim:
                raise DataError(f"the mask has {mask.numel()} features but the data have {data_dim}")
            self.register_buffer("mask", mask.clone())
            self.c_dim, self.y_dim = int(mask.sum()), int((~mask).sum())
        else:
            self.factor = check_factor(self.image_shape, factor)  # type: ignore[arg-type]
            self.register_buffer("mask", torch.zeros(data_dim, dtype=torch.bool))
            self.c_dim, self.y_dim = data_dim // self.factor**2, data_dim

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """c = x[..., m] (inpaint) or pool_f(x) (superres)."""
        if self.kind == "inpaint":
            return x[..., self.mask]
        return average_pool(x, self.image_shape, self.factor)  # type: ignore[arg-type]

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """y = x[..., ~m] (inpaint) or x (superres)."""
        return x[..., ~self.mask] if self.kind == "inpaint" else x

    def complete(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x_hat: the observed features of x (..., D) with y (..., y_dim) in the missing ones; y itself for superres."""
        if self.kind == "superres":
            return y
        full = y.new_zeros(*y.shape[:-1], self.data_dim)
        full[..., ~self.mask] = y
        return torch.where(self.mask, x.expand_as(full), full)

    def matches(self, other: "CompletionTask") -> bool:
        """Whether ``other`` is the same task: same kind, factor and mask."""
        return (self.kind == other.kind and self.factor == other.factor
                and torch.equal(self.mask.cpu(), other.mask.cpu()))

    def extra_repr(self) -> str:
        return self.label


def build_task(kind: str, data_dim: int, image_shape: Sequence[int] | None, *, mask: str = "quadrants",
               observed: int = 1, fraction: float = 0.5, factor: int = 2, seed: int = 0) -> CompletionTask:
    """The task ``kind`` ('inpaint' with ``mask`` and its ``observed`` / ``fraction`` / ``seed``, or 'superres' with ``factor``)."""
    kind = choice("task", kind, TASKS)
    if kind == "superres":
        return CompletionTask(kind, data_dim, image_shape, factor=factor, label=f"superres downsample:{factor}")
    spec = MaskSpec(mask, observed=observed, fraction=fraction, seed=seed)
    arg = {"quadrants": f":{observed}", "random": f":{fraction}", "rows": f":{fraction}"}.get(mask, "")
    return CompletionTask(kind, data_dim, image_shape, mask=spec.build(data_dim, image_shape),
                          label=f"inpaint {mask}{arg}")


def same_task(trained: CompletionTask, asked: CompletionTask) -> None:
    """ConfigError when a conditional program trained for ``trained`` is asked for another task ``asked``."""
    if not trained.matches(asked):
        raise ConfigError(f"this conditional program was trained for {trained.label!r} and cannot complete "
                          f"{asked.label!r}; ask for --mask matching its task, or complete with an unconditional "
                          "VAE run by inference (--method naive|sir|nuts|mwg|pseudo_gibbs)")


__all__ = ["TASKS", "CompletionTask", "build_task", "same_task"]
