"""Programs: a Pyro model and its guide over batches of named tensors, registered by name (``model.program``).

A program is a ``torch.nn.Module`` with

* ``model(**inputs, num_data=None, beta=1.0)`` and ``guide(**inputs, num_data=None, beta=1.0)``,
  where ``inputs`` are the named tensors of a batch the program declares in :attr:`Program.inputs`
  (``x``; later programs also ``y``, ``mask``, ``condition``);
* its per-datapoint latent sites in :attr:`Program.latents` (the evaluator, MCMC and the local
  baselines find them there), all inside the data plate :func:`pyro_vae.plates.data_plate`,
  which scales a minibatch of B rows by N / B when ``num_data = N`` and the KL terms by ``beta``;
* ``data_dim`` and ``check_data(x, name)``, which refuses data outside its likelihood's support.
* optionally ``observed``, its observed sites when they are not its inputs (a conditional program
  takes ``x`` and observes the part ``y`` it completes, :mod:`pyro_vae.cvae`).

The training loop, the evaluator, diagnostics and the command line never special-case a
program. A program registers a factory ``factory(spec, *, data_dim, image_shape, data_sample,
seed, **options)`` with ``@PROGRAMS.register("name")``: its keyword-only parameters other than
these build arguments are the program's options, declared and type-checked like any component's
(``model.program: {name: ..., option: value}``); :func:`pyro_vae.build.build_program` builds the
one a spec names.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from pyro_vae.checks import got, positive_int, positive_ints, seed as check_seed
from pyro_vae.errors import ConfigError, DataError
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


# the build arguments every program factory takes (check_build_args); its other keyword-only
# parameters are the program's options, declared in the spec: ``program: {name: cvae, task: superres}``
BUILD_ARGS = ("data_dim", "image_shape", "data_sample", "seed")
PROGRAMS: Registry[Program] = Registry("program", reserved=BUILD_ARGS)


def check_build_args(data_dim: Any, image_shape: Any, data_sample: Any, seed: Any) -> None:
    """The arguments every program factory takes, checked once: ConfigError or DataError naming the bad one.

    ``data_dim`` a positive integer; ``image_shape`` None or positive integers whose product is
    ``data_dim``; ``data_sample`` None or a float tensor (N, data_dim); ``seed`` None or in [0, 2**32).
    """
    positive_int("data_dim", data_dim)
    if image_shape is not None:
        positive_ints("image_shape (or None)", image_shape, at_least_one=True, example="(28, 28)")
        if math.prod(image_shape) != data_dim:
            raise DataError(f"image_shape {tuple(image_shape)} has {math.prod(image_shape)} pixels but data_dim is "
                            f"{data_dim}; give the shape of one datapoint, or image_shape=None")
    if data_sample is not None and not (
        torch.is_tensor(data_sample) and data_sample.dim() == 2 and data_sample.shape[1] == data_dim
        and data_sample.is_floating_point()
    ):
        raise DataError(f"data_sample must be None or a float tensor of training rows (N, {data_dim}), {got(data_sample)}")
    check_seed("seed", seed, optional=True)


def check_program(program: Any, name: str = "program") -> Any:
    """``program`` if it has what the inference side relies on (model, guide, check_data), else ConfigError."""
    if not all(callable(getattr(program, attr, None)) for attr in ("model", "guide", "check_data")):
        raise ConfigError(f"{name} must be a program with model, guide and check_data (build one with "
                          f"pyro_vae.build_vae or build_program), {got(program)}")
    return program


__all__ = ["Program", "PROGRAMS", "NamesProgram", "check_build_args", "check_program", "BUILD_ARGS"]
