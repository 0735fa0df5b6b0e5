r"""The encoder's q refined per datapoint, and importance-sampled log p(x) with it as the proposal.

An amortized guide gives every datapoint q_phi(z | x_i) = family(g_phi(x_i)) from one shared
network. With the model fixed, refining it row by row finds

    q*_i = argmax_{q in F} L_i[q],    L_i[q] = E_q[log p(x_i, z) - log q(z)],

started at q_phi(z | x_i) (semi-amortized VI, Kim et al. 2018; the q* of Cremer et al. 2018's
gaps). F is the guide's own family for a flow guide (family(eta_i) with the flows' weights kept,
:class:`~inference.baselines.LocalFamilyGuide`) and a Gaussian for a Gaussian guide (diagonal or
full covariance, ``full_cov``).

Importance sampling with q*_i as the proposal,

    log p(x_i) ~= log (1/K) sum_k p(x_i, z_k) / q*_i(z_k),    z_k ~ q*_i,

estimates p(x_i) without bias for any proposal whose support covers the posterior's; its log is a
stochastic lower bound (Jensen), tighter the closer the proposal is to p(z | x_i). An encoder
fitted to its training rows can be far from the posterior of a held-out row (the amortization
gap), which loosens IS with q_phi; q*_i closes that gap, so on the same model and rows the two
estimates bound the same log p(x) and the larger is the better estimate of it.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import torch

from inference.baselines.local_family import encoder_family_guide
from inference.baselines.local_vi import LocalFit, fit_local
from inference.baselines.theta import check_continuous_latents, frozen
from inference.evaluate import Estimate, log_likelihood
from pyro_vae.checks import boolean, positive_int, seed as check_seed
from pyro_vae.flows import FlowFamily
from pyro_vae.guides import DiagonalNormal
from pyro_vae.vae import VAE
from pyro_vae.rng import seeded

Tensor = torch.Tensor
REFINE_STEPS = 300  # Adam steps per row of the refinement, as in the gaps benchmarks (benchmarks/README.md)
REFINE_PARTICLES = 8  # particles per row and step


def refine_encoder(
    vae: VAE,
    x: Tensor,
    *,
    steps: int = REFINE_STEPS,
    num_particles: int = REFINE_PARTICLES,
    full_cov: bool | None = None,
    elbo: str = "trace",
    lr: float | None = None,
    eval_particles: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> LocalFit:
    r"""q*_i = argmax_{q in F} L_i[q] for each row x_i, started at the encoder's q_phi(z | x_i) (module docstring).

    Parameters
    ----------
    vae : the program, fixed meanwhile (its encoder gives the starting point).
    x : (N, D) rows.
    steps, num_particles, lr : :func:`~inference.baselines.fit_local`'s Adam steps, particles per row and
        step, and starting learning rate (default: fit_local's).
    full_cov : for a Gaussian guide, refine a full-covariance Gaussian (True) or one like the guide's own
        (None: diagonal for ``diag_normal``, full otherwise). Ignored for a flow guide, refined in its family.
    elbo : "trace" (estimator A) or "meanfield" (estimator B) for the refinement's objective.
    eval_particles : particles of the final per-row ELBO L_i[q*_i] (``LocalFit.final``).

    Returns
    -------
    LocalFit
        ``guide`` holds the q*_i and samples site "z" for rows found by value, so it can be the
        proposal of :func:`inference.evaluate.log_likelihood`.
    """
    check_continuous_latents(vae, "refine_encoder")
    if full_cov is None:
        full_cov = not isinstance(vae.family, DiagonalNormal)
    init = encoder_family_guide(vae, x) if isinstance(vae.family, FlowFamily) else "encoder"
    options = {} if lr is None else {"lr": lr}
    return fit_local(vae, x, steps=steps, num_particles=num_particles, init=init, full_cov=full_cov, elbo=elbo,
                     eval_particles=eval_particles, seed=seed, progress=progress, **options)


class RefinedLogLikelihood(NamedTuple):
    """log p(x) by importance sampling from the refined q*_i (``log_likelihood``), and the refinement (``fit``)."""

    log_likelihood: Estimate
    fit: LocalFit
    steps: int
    seconds: float


def refined_log_likelihood(
    vae: VAE,
    x: Tensor,
    *,
    num_samples: int = 1000,
    steps: int = REFINE_STEPS,
    num_particles: int = REFINE_PARTICLES,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> RefinedLogLikelihood:
    r"""log p(x_i) ~= log (1/K) sum_k p(x_i, z_k) / q*_i(z_k), z_k ~ q*_i, K = ``num_samples`` (module docstring).

    q*_i is :func:`refine_encoder`'s with ``steps`` and ``num_particles`` (for a Gaussian guide the
    ELBO-optimal full-covariance Gaussian, whatever the guide's covariance: it minimizes KL(q || p), so it
    may be narrower than the posterior; the PSIS k-hat of the proposal says how far that matters), scored
    by :func:`inference.evaluate.log_likelihood` in chunks of ``batch_size`` rows. The VAE is frozen
    (eval mode, no gradients) for the duration and restored after. ``seed`` fixes the refinement and the importance samples; like
    :func:`~inference.baselines.fit_local`, the refinement reseeds the global RNGs (``pyro.set_rng_seed``).
    """
    for name, value in (("num_samples", num_samples), ("steps", steps), ("num_particles", num_particles),
                        ("batch_size", batch_size)):
        positive_int(name, value)
    check_seed("seed", seed)
    boolean("progress", progress)
    t0 = time.perf_counter()
    with frozen(vae):
        fit = refine_encoder(vae, x, steps=steps, num_particles=num_particles, full_cov=True, eval_particles=10,
                             seed=seed, progress=progress)
        with seeded(seed + 1):  # importance samples: a stream apart from the refinement's
            ll = log_likelihood(vae.model, fit.guide.guide, x, num_samples=num_samples, batch_size=batch_size,
                                progress=progress)
    return RefinedLogLikelihood(ll, fit, steps, time.perf_counter() - t0)


__all__ = ["refine_encoder", "refined_log_likelihood", "RefinedLogLikelihood", "REFINE_STEPS", "REFINE_PARTICLES"]
