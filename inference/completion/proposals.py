r"""Importance-sampling proposals for p(z | x_obs), the posterior of a VAE given the observed part of a row.

A defensive mixture (Hesterberg 1995)

    r(z | x) = alpha q(z | x) + (1 - alpha) p(z),

of a per-row proposal q and the prior: the VAE's encoder on the naively filled row, a Gaussian
fitted to NUTS draws of z | x_obs, or the Gaussian of per-row VI (:func:`local_vi_proposal`). The
weights p(x_obs | z) p(z) / r(z | x) <= p(x_obs | z) / (1 - alpha) are bounded, so importance
sampling and resampling stay consistent even where q is too narrow or off-centre.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import pyro
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from inference.baselines.local_vi import fit_local
from inference.mcmc.proposal import GaussianProposal
from pyro_vae.checks import fraction
from pyro_vae.plates import data_plate


class DefensiveMixture(TorchDistribution):
    """alpha q + (1 - alpha) p over the same event shape; q's batch shape (p broadcast to it)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, q: Any, p: Any, alpha: float) -> None:
        self.q, self.p, self.alpha = q, p, float(alpha)
        super().__init__(q.batch_shape, q.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return DefensiveMixture(self.q.expand(batch_shape), self.p, self.alpha)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        zq = self.q.sample(sample_shape)
        zp = self.p.expand(self.q.batch_shape).sample(sample_shape).to(zq.dtype)
        pick = torch.rand(zq.shape[: zq.dim() - len(self.event_shape)], device=zq.device) < self.alpha
        return torch.where(pick.reshape(*pick.shape, *([1] * len(self.event_shape))), zq, zp)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.logaddexp(math.log(self.alpha) + self.q.log_prob(value),
                               math.log1p(-self.alpha) + self.p.log_prob(value))


def defensive_guide(obs: Any, alpha: float = 0.5, posterior: Callable[[torch.Tensor], Any] | None = None):
    """A guide ``guide(x)`` sampling site "z" from r(z | x) = alpha q(z | x) + (1 - alpha) p(z), with
    q = ``posterior`` (default: the encoder on the filled row, ``obs.posterior``)."""
    alpha = fraction("alpha (the encoder's share of the defensive proposal)", alpha, closed=False, below_one=True)
    posterior = posterior or obs.posterior

    def guide(x: torch.Tensor, **_: Any) -> torch.Tensor:
        with data_plate(x.shape[0], None):
            return pyro.sample("z", DefensiveMixture(posterior(x), obs.prior(), alpha))

    return guide


LOCAL_VI_STEPS = 1000  # Adam steps of the per-row VI of local_vi_proposal
LOCAL_VI_PARTICLES = 4  # its particles per row and step


def local_vi_proposal(part: Any, x_obs: torch.Tensor, seed: int = 0, *, steps: int = LOCAL_VI_STEPS,
                      num_particles: int = LOCAL_VI_PARTICLES, progress: bool = False) -> GaussianProposal:
    r"""Per row, the Gaussian q*_i = argmax_q E_q[log p(x_obs,i | z) + log p(z) - log q(z)] over full-covariance q.

    Non-amortized VI (:func:`inference.baselines.local_vi.fit_local`, estimator A, started at the
    encoder on the filled row) on the observation program ``part`` (a mask's
    :class:`~pyro_vae.observation.ObservedPart`, or :class:`~pyro_vae.observation.LowResolution`),
    whose posterior is p(z | x_obs,i); the fitted
    N(m_i, S_i) is returned as N(m_i, s^2 S_i), s = ``PROPOSAL_SCALE`` (1.2): VI's KL(q || p) makes q
    narrower than p, and an IS proposal narrower than its target has unbounded weights. Its cost is
    rows x ``num_particles`` x ``steps`` decoder passes, linear in the rows (NUTS's proposal is not).
    ``progress``: the fit's progress (:func:`inference.progress.bar`).
    """
    fit = fit_local(part, x_obs, steps=steps, num_particles=num_particles, init="encoder", full_cov=True,
                    elbo="trace", eval_particles=1, seed=seed, progress=progress)
    mean, cov = fit.guide.moments()
    return GaussianProposal.from_moments(mean, cov, x_obs)


def local_vi_guide(part: Any, x_obs: torch.Tensor, seed: int = 0, **budget: Any):
    """The guide r = 9/10 q*_i + 1/10 p(z) over site "z": :func:`local_vi_proposal` (``budget``: its ``steps`` and
    ``num_particles``, and ``progress``) mixed with the prior by :func:`defensive_guide`; what proposal and method ``local_vi`` use."""
    return defensive_guide(part, 0.9, local_vi_proposal(part, x_obs, seed, **budget).distribution)


__all__ = ["DefensiveMixture", "defensive_guide", "local_vi_proposal", "local_vi_guide", "LOCAL_VI_STEPS",
           "LOCAL_VI_PARTICLES"]
