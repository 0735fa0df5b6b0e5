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
    is traced once on the given batch (without gradients or validation). Objectives that score
    z the guide did not just draw (``detach_guide``: "rws") need an invertible q at every site.
    """
    reparam = isinstance(objective, TraceMeanField_ELBO) or getattr(objective, "needs_reparam", False)
    rescores = getattr(objective, "detach_guide", False)
    if not (reparam or rescores):
        return
    with torch.no_grad(), pyro.validation_enabled(False):
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
    if reparam:
        require_reparam(list(latent_sites(trace).values()), name)
    if rescores:
        require_inverse(list(latent_sites(trace).values()), name)
    if isinstance(objective, TraceMeanField_ELBO):
        require_parents_first(guide, trace, name, args, kwargs)


def require_parents_first(guide, guide_trace, objective: str, args: tuple, kwargs: dict) -> None:
    """Refuse a guide that samples a latent site before that site's model parents, for an objective taking
    KL(q || p) in closed form (TraceMeanField_ELBO): p(z | parents) is then evaluated at parents drawn
    after, and depending on, z, and the closed form is biased (the bottom-up guide of a z2 -> z1 -> x model).
    Checked when ``guide`` is a program's bound method, whose ``model`` is replayed on the guide's draws."""
    model = getattr(getattr(guide, "__self__", None), "model", None)
    if not callable(model):
        return
    with torch.no_grad(), pyro.validation_enabled(False):
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    model_order, guide_order = list(latent_sites(model_trace)), list(latent_sites(guide_trace))
    for i, site in enumerate(model_order):
        if site in guide_order and not set(model_order[:i]) <= set(guide_order[:guide_order.index(site)]):
            raise UnsupportedModelError(
                f"objective {objective!r} takes KL(q || p) of site {site!r} in closed form given its model parents "
                f"{model_order[:i]}, but the guide samples {site!r} before them, so that closed form is biased. "
                "Use elbo='trace', 'iwae' or 'rws' (or a guide in the model's order, e.g. the hierarchical "
                "program's inference: top_down)"
            )


def require_inverse(sites: list[dict], objective: str) -> None:
    """Refuse latent sites whose q scores only its own draws (no inverse: planar, Sylvester flows) for an
    objective that scores z the guide did not just draw (reweighted wake-sleep: detached draws, sleep fantasies)."""
    for site in sites:
        if getattr(site["fn"], "invertible", True) is False:
            raise UnsupportedModelError(
                f"objective {objective!r} scores log q(z | x) at points the guide did not draw, but the guide's site "
                f"{site['name']!r} ({type(site['fn']).__name__}) has no inverse and scores only its own draws. "
                "Use elbo='trace', 'meanfield' or 'iwae', or an invertible flow guide (iaf, householder, spline)"
            )


__all__ = ["OBJECTIVES", "make_objective", "check_objective", "require_reparam", "require_inverse", "require_parents_first"]
