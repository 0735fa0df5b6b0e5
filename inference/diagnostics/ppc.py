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

The replicates are made, scored and summarized block by block (:func:`posterior_predictive_check`):
at most ``max_floats`` decoded values at once, whole draws of all N rows when they fit, otherwise
one draw in blocks of rows. T_j and U_j of a replicate split over row blocks combine exactly
(Chan et al. 1979): for blocks a and b with n_a, n_b rows, means m_a, m_b and sums of squared
deviations M_a, M_b, with delta = m_b - m_a and n = n_a + n_b::

    m = m_a + delta n_b / n,    M = M_a + M_b + delta^2 n_a n_b / n,    U_j = sqrt(M / (n - 1))

Nothing here calls ArviZ: :mod:`inference.diagnostics.convert` turns these tensors into InferenceData.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import pyro
import torch
from pyro import poutine
from torch.distributions import Distribution

from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.vae import VAE
from pyro_vae.rng import seeded

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
CHUNK_FLOATS = 2e7  # draws x rows x features decoded at once when computing log-likelihoods / replicates
KEEP_FLOATS = 1e7  # replicates x rows x features that posterior_predictive_check keeps for figures
ALPHA = 0.05


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


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
    with seeded(seed), torch.no_grad():
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
def _blocks(z: Tensor, data_dim: int, max_floats: float) -> Iterator[tuple[int, int, Tensor]]:
    """(first draw, first row, block (k, m, d)) over the draws of z (..., N, d) flattened to (S', N, d).

    A block holds at most ``max_floats`` decoded values (k m D): k whole draws of all N rows
    when one draw fits, otherwise one draw and m rows at a time.
    """
    n, d = z.shape[-2:]
    flat = z.reshape(-1, n, d)
    rows = max(1, int(max_floats // max(1, data_dim)))
    draws, rows = (max(1, rows // max(1, n)), n) if rows >= n else (1, rows)
    for s0 in range(0, flat.shape[0], draws):
        for r0 in range(0, max(n, 1), max(rows, 1)):
            yield s0, r0, flat[s0:s0 + draws, r0:r0 + rows]


def _check_floats(name: str, value: float) -> float:
    if not value >= 1:
        raise ConfigError(f"{name} must be >= 1 (a number of values), got {value!r}")
    return value


@torch.no_grad()
def log_likelihood_draws(vae: VAE, x: Tensor, z: Tensor, *, max_floats: float = CHUNK_FLOATS) -> Tensor:
    """l_i^(s) = log p_theta(x_i | z_i^(s)) for draws z of shape (..., N, d); returns shape (..., N).

    The decoder sees (rows, d) blocks (any network works) of at most ``max_floats`` decoded values.
    """
    n, d = z.shape[-2:]
    if x.dim() != 2 or x.shape[0] != n:
        raise ConfigError(f"x must hold the {n} datapoints of z, shape ({n}, D); got {tuple(x.shape)}")
    x = x.to(z.dtype)
    num = z.reshape(-1, n, d).shape[0]
    out = None
    for s0, r0, block in _blocks(z, x.shape[1], _check_floats("max_floats", max_floats)):
        k, m = block.shape[:2]
        lp = vae.decode(block.reshape(-1, d)).log_prob(x[r0:r0 + m].repeat(k, 1)).reshape(k, m)
        if out is None:
            out = lp.new_empty(num, n, dtype=torch.promote_types(z.dtype, lp.dtype))
        out[s0:s0 + k, r0:r0 + m] = lp
    if out is None:  # no draws
        out = z.new_zeros(num, n)
    return out.reshape(*z.shape[:-1])


def _replicate_blocks(
    vae: VAE, z: Tensor, seed: int, max_floats: float
) -> Iterator[tuple[int, int, Distribution, Tensor]]:
    """(first draw, first row, p_theta(x | z) of the block, replicates (k, m, D)) over :func:`_blocks` of z.

    One random stream for all blocks, seeded with ``seed``; the global RNG is restored when the
    generator finishes, so the consumer must draw no random numbers between blocks.
    """
    d = z.shape[-1]
    with seeded(seed):
        for s0, r0, block in _blocks(z, vae.data_dim, _check_floats("max_floats", max_floats)):
            px = vae.decode(block.reshape(-1, d))
            yield s0, r0, px, px.sample().reshape(*block.shape[:2], -1)


@torch.no_grad()
def replicate(vae: VAE, z: Tensor, *, seed: int = 0, max_floats: float = CHUNK_FLOATS) -> Tensor:
    """x_i^rep(s) ~ p_theta(x | z_i^(s)) for draws z of shape (..., N, d); returns (..., N, D).

    ``seed`` fixes the draws (the global RNG is left untouched). The decoder samples blocks of
    at most ``max_floats`` values from one random stream, so the replicates of a seed also
    depend on how ``max_floats`` cuts that stream.
    """
    n = z.shape[-2]
    out = None
    for s0, r0, _, x_rep in _replicate_blocks(vae, z, seed, max_floats):
        if out is None:
            out = x_rep.new_empty(z.reshape(-1, n, z.shape[-1]).shape[0], n, x_rep.shape[-1])
        out[s0:s0 + x_rep.shape[0], r0:r0 + x_rep.shape[1]] = x_rep
    if out is None:  # no draws
        out = z.new_empty(0, n, vae.data_dim)
    return out.reshape(*z.shape[:-1], -1)


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
    ``replicated`` keeps, for figures, the replicates x^rep (S, K, D) of the first K rows of x:
    all N rows unless S N D exceeds the ``max_kept`` of :func:`posterior_predictive_check`.
    ``alpha`` sets "extreme".
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


class _RowMoments:
    """Per-draw mean T_j and sd U_j over rows of replicates that arrive in blocks (module docstring)."""

    def __init__(self, num_draws: int, data_dim: int) -> None:
        self.count = np.zeros(num_draws)
        self.mean = np.zeros((num_draws, data_dim))
        self.m2 = np.zeros((num_draws, data_dim))

    def add(self, s0: int, block: np.ndarray) -> None:
        """Add the rows of ``block`` (k, m, D) to draws s0..s0+k-1."""
        k, m = block.shape[:2]
        mean = block.mean(1)
        m2 = ((block - mean[:, None, :]) ** 2).sum(1)
        draws = slice(s0, s0 + k)
        n_a = self.count[draws][:, None]
        if not n_a.any():  # the first block of these draws: no rounding from a combination
            self.mean[draws], self.m2[draws] = mean, m2
        else:
            n = n_a + m
            delta = mean - self.mean[draws]
            self.mean[draws] += delta * m / n
            self.m2[draws] += m2 + delta**2 * n_a * m / n
        self.count[draws] += m

    def sd(self) -> np.ndarray:
        return np.sqrt(self.m2 / (self.count[:, None] - 1))


class _Replicated(NamedTuple):
    """What :func:`posterior_predictive_check` keeps of the replicates: their T_j, U_j, l^rep and a few for figures."""

    mean: np.ndarray
    sd: np.ndarray
    loglik: np.ndarray
    kept: Tensor


def _replicate_and_score(vae: VAE, z: Tensor, seed: int, max_floats: float, max_kept: float) -> _Replicated:
    """Replicate x from z (S, N, d) block by block (:func:`replicate`'s random stream), keeping only
    T_j(x^rep(s)), U_j(x^rep(s)), l^rep (S, N) and the replicates of the first K rows, K S D <= ``max_kept``."""
    s, n = z.shape[:2]
    max_kept = _check_floats("max_kept", max_kept)
    kept_rows = n if s * n * vae.data_dim <= max_kept else max(1, int(max_kept // (s * vae.data_dim)))
    moments = _RowMoments(s, vae.data_dim)
    loglik = kept = None
    for s0, r0, px, x_rep in _replicate_blocks(vae, z, seed, max_floats):
        k, m = x_rep.shape[:2]
        lp = px.log_prob(x_rep.reshape(-1, x_rep.shape[-1])).reshape(k, m)
        if loglik is None:
            loglik, kept = lp.new_empty(s, n), x_rep.new_empty(s, kept_rows, x_rep.shape[-1])
        loglik[s0:s0 + k, r0:r0 + m] = lp
        moments.add(s0, x_rep.detach().cpu().double().numpy())
        if r0 < kept_rows:
            kept[s0:s0 + k, r0:r0 + m] = x_rep[:, : kept_rows - r0]
    return _Replicated(moments.mean, moments.sd(), loglik.cpu().numpy(), kept)


@torch.no_grad()
def posterior_predictive_check(
    vae: VAE,
    x: Tensor,
    z: Tensor | None = None,
    *,
    num_draws: int = 100,
    seed: int = 0,
    alpha: float = ALPHA,
    max_floats: float = CHUNK_FLOATS,
    max_kept: float = KEEP_FLOATS,
) -> PPCResult:
    """Replicate x from p_theta(x | z), z ~ posterior, and compare (module docstring).

    ``z``: posterior draws of shape (S, N, d) or (chains, draws, N, d) (pooled); by default
    S = ``num_draws`` draws of the amortized guide q_phi(z | x) (:func:`guide_draws`).
    The replicates are those of :func:`replicate` with seed ``seed + 1``, made, scored and
    summarized in blocks of at most ``max_floats`` decoded values; only the replicates of the first
    K rows, S K D <= ``max_kept``, are kept (``PPCResult.replicated``). Memory therefore grows
    with S (N + D) and S N d (the draws of z), not with S N D.
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
        rep = _replicate_and_score(vae, z, seed + 1, max_floats, max_kept)
        ll_obs = log_likelihood_draws(vae, x, z, max_floats=max_floats).cpu().numpy()
    finally:
        vae.train(was_training)
    xo = x.detach().cpu().double().numpy()
    obs_mean, obs_sd = xo.mean(0), xo.std(0, ddof=1)
    result = PPCResult(
        observed_mean=obs_mean, observed_sd=obs_sd, replicated_mean=rep.mean, replicated_sd=rep.sd,
        p_mean=_mid_p(rep.mean, obs_mean), p_sd=_mid_p(rep.sd, obs_sd),
        loglik_observed=ll_obs, loglik_replicated=rep.loglik,
        p_loglik=(rep.loglik < ll_obs).mean(0) + 0.5 * (rep.loglik == ll_obs).mean(0),
        replicated=rep.kept, alpha=float(alpha),
    )
    logger.info("%s", result.summary())
    return result


__all__ = [
    "PPCResult", "guide_draws", "log_likelihood_draws", "replicate", "posterior_predictive_check", "ALPHA",
    "CHUNK_FLOATS", "KEEP_FLOATS",
]
