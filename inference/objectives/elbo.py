r"""The SGVB estimators of the ELBO (Kingma & Welling 2014), as Pyro's own ``Trace_ELBO`` and ``TraceMeanField_ELBO``.

For a minibatch x_1..x_B of the N training rows, L particles z_il ~ q_phi(z | x_i)
(reparameterized: z_il = mu_phi(x_i) + L_phi(x_i) eps_il) and a KL weight beta in (0, 1]:

* estimator A, objective ``"trace"`` (``Trace_ELBO``)::

    L^A = (N / B) sum_i (1/L) sum_l [ log p_theta(x_i | z_il) + beta (log p(z_il) - log q_phi(z_il | x_i)) ]

* estimator B, objective ``"meanfield"`` (``TraceMeanField_ELBO``)::

    L^B = (N / B) sum_i [ (1/L) sum_l log p_theta(x_i | z_il) - beta KL(q_phi(z | x_i) || p(z)) ]

  with the KL in closed form where torch registers one for (guide, prior), and the Monte Carlo
  term of A otherwise (:func:`kl_mode` says which).

Both are unbiased for the full-data ELBO at beta = 1. The loss is -L, from
``objective.differentiable_loss(program.model, program.guide, **batch, num_data=N, beta=beta)``.
Particles are vectorized (``vectorize_particles=True``, ``max_plate_nesting=1``); one particle
needs no particle plate.
"""

from __future__ import annotations

import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import Distribution, Independent

from inference.objectives.registry import OBJECTIVES
from pyro_vae.vae import VAE


@OBJECTIVES.register("trace")
def trace_objective(num_particles: int = 1) -> ELBO:
    """SGVB estimator A: log p(x, z) - log q(z | x) at z ~ q(z | x) (Pyro's Trace_ELBO)."""
    return Trace_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1)


@OBJECTIVES.register("meanfield")
def meanfield_objective(num_particles: int = 1) -> ELBO:
    """SGVB estimator B: E_q[log p(x | z)] - KL(q || p), KL analytic where registered (Pyro's TraceMeanField_ELBO)."""
    return TraceMeanField_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1)


def kl_mode(vae: VAE) -> str:
    """How estimator B gets KL(q(z|x) || p(z)): ``"analytic"`` (closed form registered) or ``"monte_carlo"``."""
    return "analytic" if vae.analytic_kl() else "monte_carlo"


def describe_kl(vae: VAE) -> str:
    """Human-readable :func:`kl_mode`, naming the distributions when no closed form exists."""
    if kl_mode(vae) == "analytic":
        return "analytic KL"
    if not hasattr(vae, "family"):  # several latent layers (hierarchical): no single q to name
        return "Monte Carlo KL (for the latent sites without a closed form given their parents)"
    with torch.no_grad():
        param = next(vae.parameters())
        q = vae.family(torch.zeros(1, vae.family.param_size, device=param.device, dtype=param.dtype))
        p = vae.prior()
    return f"Monte Carlo KL (no closed form registered for {_dist_name(q)} -> {_dist_name(p)})"


def _dist_name(d: Distribution) -> str:
    if isinstance(d, Independent):
        return f"{_dist_name(d.base_dist)}.to_event({d.reinterpreted_batch_ndims})"
    return type(d).__name__


__all__ = ["trace_objective", "meanfield_objective", "kl_mode", "describe_kl"]
