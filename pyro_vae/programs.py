"""Programs: a Pyro model and its guide over batches of named tensors, registered by name (``model.program``).

A program is a ``torch.nn.Module`` with

* ``model(**inputs, num_data=None, beta=1.0)`` and ``guide(**inputs, num_data=None, beta=1.0)``,
  where ``inputs`` are the named tensors of a batch the program declares in :attr:`Program.inputs`
  (``x``; later programs also ``y``, ``mask``, ``condition``);
* its per-datapoint latent sites in :attr:`Program.latents` (the evaluator, MCMC and the local
  baselines find them there), all inside the data plate :func:`pyro_vae.plates.data_plate`,
  which scales a minibatch of B rows by N / B when ``num_data = N`` and the KL terms by ``beta``;
* ``data_dim`` and ``check_data(x, name)``, which refuses data outside its likelihood's support.

The training loop, the evaluator, diagnostics and the command line never special-case a
program. A program registers a factory ``factory(spec, *, data_dim, image_shape, data_sample,
seed)`` with ``@PROGRAMS.register("name")``; :func:`build_program` builds the one a spec names.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from pyro_vae.registry import Registry


class Program(Protocol):
    """What the inference side relies on (module docstring)."""

    inputs: tuple[str, ...]
    latents: tuple[str, ...]
    data_dim: int

    def model(self, *args: Any, **kwargs: Any) -> Any: ...

    def guide(self, *args: Any, **kwargs: Any) -> Any: ...

    def check_data(self, x: torch.Tensor, name: str = "data") -> None: ...


class NamesProgram(Protocol):
    """A model spec (:class:`pyro_vae.spec.ModelSpec`) as far as :func:`build_program` reads it: the program's name."""

    program: str


PROGRAMS: Registry[Program] = Registry("program")


def build_program(
    spec: NamesProgram,
    *,
    data_dim: int,
    image_shape: tuple[int, ...] | None = None,
    data_sample: torch.Tensor | None = None,
    seed: int | None = None,
) -> Program:
    """A fresh program of the kind ``spec.program`` names, for data of ``data_dim`` features (weights fixed by ``seed``)."""
    factory = PROGRAMS.get(spec.program)
    return factory(spec, data_dim=data_dim, image_shape=image_shape, data_sample=data_sample, seed=seed)


__all__ = ["Program", "PROGRAMS", "build_program"]
