r"""Posterior draws of z, data replicated from p(x | z), and posterior predictive checks.

For draws z_i^(s), s = 1..S, from a posterior of each datapoint's code (the guide q(z | x_i),
or MCMC's p(z | x_i)), the replicated data and the discrepancies compared here are::

    x_i^rep(s) ~ p_theta(x | z_i^(s))                                  replicated datapoint
    T_j(x) = (1/N) sum_i x_ij,   U_j(x) = sd_i(x_ij)                   per-feature mean and sd
    l_i^obs(s) = log p_theta(x_i | z_i^(s))                            realized log-likelihood
    l_i^rep(s) = log p_theta(x_i^rep(s) | z_i^(s))                     replicated log-likelihood

and the posterior predictive p-values (Gelman, Meng & Stern 1996), with half the ties counted
(mid-p: discrete features tie often)::

    p_j^mean   = Pr_s[T_j(x^rep(s)) > T_j(x)] + 1/2 Pr_s[T_j(x^rep(s)) = T_j(x)]
    p_j^sd     = the same with U_j
    p_i^loglik = Pr_s[l_i^rep(s) < l_i^obs(s)] + 1/2 Pr_s[l_i^rep(s) = l_i^obs(s)]

A p-value near 0 or 1 marks a discrepancy the model does not reproduce; p_i^loglik near 0 means
datapoint i is much less likely under the model than the model's own replicates of it. Under a
well-specified model p-values are roughly uniform or concentrated near 1/2, so a fraction of
extreme p-values (below alpha/2 or above 1 - alpha/2) well above alpha flags misfit.

Nothing here calls ArviZ: :mod:`inference.diagnostics.convert` turns these tensors into InferenceData.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pyro
import torch
from pyro import poutine

from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.vae import VAE

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
CHUNK_FLOATS = 2e7  # rows x features decoded at once when computing log-likelihoods / replicates
ALPHA = 0.05


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _rows_per_chunk(data_dim: int, budget: float = CHUNK_FLOATS) -> int:
    return max(1, int(budget // max(1, data_dim)))


# -- draws of z from a guide -----------------------------------------------------------------------
def guide_draws(
    guide: Callable, x: Tensor, num_samples: int, *, site: str = "z", seed: int = 0, **kwargs: Any
) -> Tensor:
    """z_i^(s) ~ q(z | x_i), s = 1..S, for every row of x: shape (S, N, d).

    The guide is traced once under ``pyro.plate("particles", S, dim=-2)`` (its data plate is
    dim -1), so any guide with the VAE's interface works: ``vae.guide``, a per-datapoint local
    guide, a Gaussian fitted to MCMC draws. ``seed`` fixes the draws; the global RNG is left
    untouched. ``kwargs`` go to the guide.
    """
    _check_count("num_samples", num_samples)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        with pyro.plate("particles", num_samples, dim=-2):
            trace = poutine.trace(guide).get_trace(x, **kwargs)
    if site not in trace.nodes or trace.nodes[site]["type"] != "sample":
        raise UnsupportedModelError(
            f"the guide has no sample site {site!r}; pass site=<the latent site's name>"
        )
    z = trace.nodes[site]["value"].detach()
    if z.dim() == 2:  # a guide without a data plate for this site: one code shared by all rows
        raise UnsupportedModelError(f"site {site!r} is not inside the guide's data plate; draws per datapoint need it")
    return z.expand(num_samples, *z.shape[-2:]).clone()


# -- log-likelihoods and replicates ----------------------------------------------------------------
def _flat_chunks(z: Tensor, data_dim: int) -> Iterator[tuple[int, Tensor]]:
    """(start, block) over the draws of z (..., N, d) flattened to (S', N, d), chunks of <= CHUNK_FLOATS values."""
    n, d = z.shape[-2:]
    flat = z.reshape(-1, n, d)
    per_chunk = max(1, _rows_per_chunk(data_dim) // max(1, n))
    for s0 in range(0, flat.shape[0], per_chunk):
        yield s0, flat[s0:s0 + per_chunk]


@torch.no_grad()
def log_likelihood_draws(vae: VAE, x: Tensor, z: Tensor) -> Tensor:
    """l_i^(s) = log p_theta(x_i | z_i^(s)) for draws z of shape (..., N, d); returns shape (..., N).

    The decoder sees (rows, d) blocks (any network works), in chunks of at most
    ``CHUNK_FLOATS`` decoded values.
    """
    n, d = z.shape[-2:]
    if x.dim() != 2 or x.shape[0] != n:
        raise ConfigError(f"x must hold the {n} datapoints of z, shape ({n}, D); got {tuple(x.shape)}")
    x = x.to(z.dtype)
    out = [z.new_zeros(0, n)]
    for _, block in _flat_chunks(z, x.shape[1]):
        px = vae.decode(block.reshape(-1, d))
        out.append(px.log_prob(x.repeat(block.shape[0], 1)).reshape(block.shape[0], n))
    return torch.cat(out).reshape(*z.shape[:-1])


@torch.no_grad()
def replicate(vae: VAE, z: Tensor, *, seed: int = 0) -> Tensor:
    """x_i^rep(s) ~ p_theta(x | z_i^(s)) for draws z of shape (..., N, d); returns (..., N, D).

    ``seed`` fixes the draws; the global RNG is left untouched.
    """
    n, d = z.shape[-2:]
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _, block in _flat_chunks(z, vae.data_dim):
            out.append(vae.decode(block.reshape(-1, d)).sample().reshape(block.shape[0], n, -1))
    return torch.cat(out).reshape(*z.shape[:-1], -1)


# -- the checks ---------------------------------------------------------------------------------------
def _mid_p(replicated: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Pr_s[rep > obs] + 1/2 Pr_s[rep = obs] over the first axis of ``replicated``."""
    return (replicated > observed).mean(0) + 0.5 * (replicated == observed).mean(0)


def _extreme(p: np.ndarray, alpha: float) -> float:
    return float(((p < alpha / 2) | (p > 1 - alpha / 2)).mean()) if p.size else float("nan")


@dataclass(frozen=True)
class PPCResult:
    """Posterior predictive check of N datapoints with S replicates (module docstring for the math).

    Arrays (numpy): ``observed_mean``/``observed_sd`` (D,) = T(x), U(x); ``replicated_mean``/
    ``replicated_sd`` (S, D) = T(x^rep(s)), U(x^rep(s)); ``p_mean``/``p_sd`` (D,);
    ``loglik_observed``/``loglik_replicated`` (S, N) = l^obs, l^rep; ``p_loglik`` (N,).
    ``replicated`` keeps the replicates x^rep (S, N, D) for plotting; ``alpha`` sets "extreme".
    """

    observed_mean: np.ndarray
    observed_sd: np.ndarray
    replicated_mean: np.ndarray
    replicated_sd: np.ndarray
    p_mean: np.ndarray
    p_sd: np.ndarray
    loglik_observed: np.ndarray
    loglik_replicated: np.ndarray
    p_loglik: np.ndarray
    replicated: Tensor
    alpha: float = ALPHA

    @property
    def num_draws(self) -> int:
        return int(self.replicated_mean.shape[0])

    @property
    def fraction_extreme_mean(self) -> float:
        """Fraction of features whose mean has p_j^mean < alpha/2 or > 1 - alpha/2."""
        return _extreme(self.p_mean, self.alpha)

    @property
    def fraction_extreme_sd(self) -> float:
        """Fraction of features whose sd has p_j^sd < alpha/2 or > 1 - alpha/2."""
        return _extreme(self.p_sd, self.alpha)

    @property
    def fraction_low_loglik(self) -> float:
        """Fraction of datapoints with p_i^loglik < alpha: less likely than their own replicates."""
        return float((self.p_loglik < self.alpha).mean())

    def summary(self) -> str:
        return (
            f"PPC ({self.loglik_observed.shape[1]} datapoints x {self.num_draws} replicates): features with an "
            f"extreme mean {self.fraction_extreme_mean:.1%}, extreme sd {self.fraction_extreme_sd:.1%} "
            f"(nominal {self.alpha:.0%}); datapoints less likely than their replicates (p < {self.alpha}) "
            f"{self.fraction_low_loglik:.1%}"
        )


@torch.no_grad()
def posterior_predictive_check(
    vae: VAE,
    x: Tensor,
    z: Tensor | None = None,
    *,
    num_draws: int = 100,
    seed: int = 0,
    alpha: float = ALPHA,
) -> PPCResult:
    """Replicate x from p_theta(x | z), z ~ posterior, and compare (module docstring).

    ``z``: posterior draws of shape (S, N, d) or (chains, draws, N, d) (pooled); by default
    S = ``num_draws`` draws of the amortized guide q_phi(z | x) (:func:`guide_draws`).
    The VAE is put in eval mode for the duration.
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if x.dim() != 2 or x.shape[0] < 2:
        raise ConfigError(f"a posterior predictive check needs an (N, D) tensor with N >= 2 (it compares sds over rows); got {tuple(x.shape)}")
    if hasattr(vae, "check_data"):
        vae.check_data(x)
    was_training = getattr(vae, "training", False)
    vae.eval()
    try:
        if z is None:
            z = guide_draws(vae.guide, x, _check_count("num_draws", num_draws), seed=seed)
        z = z.reshape(-1, *z.shape[-2:])
        if z.shape[-2] != x.shape[0]:
            raise ConfigError(f"z holds draws for {z.shape[-2]} datapoints but x has {x.shape[0]} rows")
        x_rep = replicate(vae, z, seed=seed + 1)
        ll_obs = log_likelihood_draws(vae, x, z).cpu().numpy()
        ll_rep = _self_log_likelihood(vae, x_rep, z).cpu().numpy()
    finally:
        vae.train(was_training)
    xo = x.detach().cpu().double().numpy()
    xr = x_rep.detach().cpu().double().numpy()
    obs_mean, obs_sd = xo.mean(0), xo.std(0, ddof=1)
    rep_mean = xr.mean(1)
    rep_sd = xr.std(1, ddof=1)
    result = PPCResult(
        observed_mean=obs_mean, observed_sd=obs_sd, replicated_mean=rep_mean, replicated_sd=rep_sd,
        p_mean=_mid_p(rep_mean, obs_mean), p_sd=_mid_p(rep_sd, obs_sd),
        loglik_observed=ll_obs, loglik_replicated=ll_rep,
        p_loglik=(ll_rep < ll_obs).mean(0) + 0.5 * (ll_rep == ll_obs).mean(0),
        replicated=x_rep, alpha=float(alpha),
    )
    logger.info("%s", result.summary())
    return result


def _self_log_likelihood(vae: VAE, x_rep: Tensor, z: Tensor) -> Tensor:
    """log p_theta(x_i^rep(s) | z_i^(s)): each replicate under the code that generated it; (S, N)."""
    s, n, d = z.shape
    out = []
    for s0, block in _flat_chunks(z, x_rep.shape[-1]):
        px = vae.decode(block.reshape(-1, d))
        out.append(px.log_prob(x_rep[s0:s0 + block.shape[0]].reshape(-1, x_rep.shape[-1])).reshape(block.shape[0], n))
    return torch.cat(out)


__all__ = [
    "PPCResult", "guide_draws", "log_likelihood_draws", "replicate", "posterior_predictive_check", "ALPHA",
]
