"""The objective registry: a name in ``train.elbo`` -> a loss with ``differentiable_loss(model, guide, ...)``.

A registered factory takes the number of particles K and returns an object with Pyro's ELBO
interface (``differentiable_loss``, ``loss``, ``loss_and_grads``); the training loop calls
``differentiable_loss(program.model, program.guide, **batch, num_data=N, beta=beta)``.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO, TraceMeanField_ELBO

from inference.log_weights import latent_sites
from pyro_vae.errors import UnsupportedModelError
from pyro_vae.registry import Registry

OBJECTIVES: Registry[ELBO] = Registry("objective")


def make_objective(name: str, num_particles: int = 1) -> ELBO:
    """The objective registered as ``name`` with K = ``num_particles`` (ConfigError listing the valid names otherwise)."""
    return OBJECTIVES.build(name, num_particles)


def require_reparam(sites: list[dict], objective: str) -> None:
    """Refuse latent sites without ``rsample`` for an objective that differentiates through z = g(eps, x)."""
    for site in sites:
        if not getattr(site["fn"], "has_rsample", False):
            raise UnsupportedModelError(
                f"objective {objective!r} differentiates through reparameterized draws z = g(eps, x), but the guide's "
                f"site {site['name']!r} ({type(site['fn']).__name__}) has no rsample. Use elbo='trace' "
                "(score-function gradients) or 'rws' (reweighted wake-sleep needs no reparameterization)"
            )


def check_objective(objective: ELBO, name: str, guide, *args, **kwargs) -> None:
    """Raise UnsupportedModelError when ``objective`` cannot fit a program with this ``guide``.

    "meanfield" (``TraceMeanField_ELBO`` drops score-function terms) and "iwae" differentiate
    through reparameterized draws: every latent site of the guide needs ``rsample``. The guide
    is traced once on the given batch (without gradients or validation).
    """
    if not (isinstance(objective, TraceMeanField_ELBO) or getattr(objective, "needs_reparam", False)):
        return
    with torch.no_grad(), pyro.validation_enabled(False):
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
    require_reparam(list(latent_sites(trace).values()), name)


__all__ = ["OBJECTIVES", "make_objective", "check_objective", "require_reparam"]
