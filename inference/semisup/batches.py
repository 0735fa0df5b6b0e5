r"""Minibatches for semi-supervised training: every step mixes unlabelled and labelled rows.

With N training rows of which L are labelled (``train_labels != UNLABELLED``, see
:mod:`pyro_vae.labels`) and U = N - L unlabelled, batch size B, an epoch has the loop's
S = ceil(N / B) steps. Each epoch

* the U unlabelled rows are shuffled and cut into S nearly equal parts (sizes differ by at most 1);
* the L labelled rows are shuffled and laid end to end (a fresh shuffle each time round) until
  S m rows fill S parts of m rows, m = ``train.labelled_batch_size`` (at most L), by default
  ceil(L / S),

so every step sees ~U / S unlabelled and m labelled rows, and every labelled row is seen at
least once per epoch (L <= S m; with few labels they recur, a fresh order each pass). The
default m spreads the labelled rows thinly: with 100 labels and 500 steps a step holds one of
them, and the classification term's gradient arrives in rare large pieces. A larger m keeps the
expected gradient (the loss scales the labelled terms by L / m) and lowers its variance, at the
cost of m more rows per step. When m does not divide L, a step that spans two passes may hold a
row twice; each position is still a uniform draw over the labelled rows, so the labelled terms
stay unbiased. A batch
holds ``x``/``idx`` (unlabelled rows and their row numbers) and ``x_labelled``/``y``/``idx_labelled``.
Under dynamic binarization every row is a fresh Bernoulli draw, as in :func:`pyro_vae.data.batches`;
with ``data.train_sd`` (M1+M2 on draws of M1's z, :mod:`inference.semisup.m1`) every row is a fresh
Gaussian draw x = train + train_sd * eps, eps ~ N(0, I).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from pyro_vae.data import DataSplits
from pyro_vae.labels import UNLABELLED
from pyro_vae.spec import TrainSpec

Batch = dict[str, torch.Tensor]


def split_rows(data: DataSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices of the unlabelled training rows, indices of the labelled ones)."""
    if data.train_labels is None:
        return torch.arange(data.train.shape[0]), torch.zeros(0, dtype=torch.long)
    known = data.train_labels != UNLABELLED
    return (~known).nonzero().flatten(), known.nonzero().flatten()


def _labelled_order(labelled: torch.Tensor, total: int, generator: torch.Generator) -> torch.Tensor:
    """``total`` labelled row indices: shuffles of ``labelled`` laid end to end."""
    passes = math.ceil(total / labelled.numel())
    return torch.cat([labelled[torch.randperm(labelled.numel(), generator=generator)] for _ in range(passes)])[:total]


def labelled_per_step(train: TrainSpec, n_labelled: int, steps: int) -> int:
    """m: ``train.labelled_batch_size``, by default ceil(L / S); 0 without labelled rows."""
    if not n_labelled:
        return 0
    return train.labelled_batch_size or math.ceil(n_labelled / steps)


def mixed_batches(data: DataSplits, train: TrainSpec, generator: torch.Generator) -> Iterator[Batch]:
    """One epoch of S = ceil(N / B) mixed minibatches (module docstring)."""
    unlabelled, labelled = split_rows(data)
    steps = math.ceil(data.train.shape[0] / train.batch_size)
    parts_u = unlabelled[torch.randperm(unlabelled.numel(), generator=generator)].tensor_split(steps)
    per_step = labelled_per_step(train, labelled.numel(), steps)
    order_l = (_labelled_order(labelled, steps * per_step, generator).reshape(steps, per_step) if per_step
               else torch.zeros(steps, 0, dtype=torch.long))
    dynamic = data.binarize == "dynamic"
    for idx_u, idx_l in zip(parts_u, order_l):
        x_u, x_l = data.train.index_select(0, idx_u), data.train.index_select(0, idx_l)
        if dynamic:
            x_u, x_l = torch.bernoulli(x_u, generator=generator), torch.bernoulli(x_l, generator=generator)
        elif data.train_sd is not None:
            x_u, x_l = (x + data.train_sd.index_select(0, i) * torch.randn(x.shape, generator=generator)
                        for x, i in ((x_u, idx_u), (x_l, idx_l)))
        yield {"x": x_u, "idx": idx_u, "x_labelled": x_l, "y": data.train_labels[idx_l] if per_step else idx_l,
               "idx_labelled": idx_l}


__all__ = ["labelled_per_step", "mixed_batches", "split_rows"]
