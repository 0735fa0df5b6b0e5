"""Build the program a model spec names (``model.program``): the one entry point from a spec to a fresh program."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from pyro_vae.programs import PROGRAMS, Program, check_build_args
from pyro_vae.spec import ModelSpec, as_section


def build_program(
    spec: ModelSpec | Mapping[str, Any] | None,
    *,
    data_dim: int,
    image_shape: tuple[int, ...] | None = None,
    data_sample: torch.Tensor | None = None,
    seed: int | None = None,
) -> Program:
    """A fresh program of the kind ``spec.program`` names, with its options, for data of ``data_dim`` features (weights fixed by ``seed``).

    ``spec`` is a :class:`~pyro_vae.spec.ModelSpec` or a mapping of its keys (None: the defaults).
    """
    spec = as_section(ModelSpec, spec, "model spec")
    check_build_args(data_dim, image_shape, data_sample, seed)
    factory = PROGRAMS.get(spec.program.name)
    return factory(spec, data_dim=data_dim, image_shape=image_shape, data_sample=data_sample, seed=seed,
                   **spec.program.options)


__all__ = ["build_program"]
