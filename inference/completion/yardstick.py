r"""One yardstick for completion: the conditional log-likelihood of the completed part, nats per datapoint.

For a conditional program (CVAE, its deterministic baseline: :mod:`pyro_vae.cvae`), with K
particles z_ik ~ q(z | c_i, y_i) and the one log-weight function (:mod:`inference.log_weights`),

    log p(y_i | c_i) ~= logsumexp_k [log p(y_i | z_ik, c_i) + log p(z_ik | c_i) - log q(z_ik | c_i, y_i)] - log K;

for an unconditional VAE and a mask (observed features x_obs, missing x_miss),

    log p(x_miss,i | x_obs,i) = log p(x_i) - log p(x_obs,i),

each term by importance sampling: log p(x) with the VAE's guide q(z | x), log p(x_obs) on the
masked program :class:`pyro_vae.observation.ObservedPart` with a proposal (by default the defensive
mixture of q(z | x_fill) and the prior, or any guide). Beside each value: the standard error over datapoints, the PSIS k-hat of
each proposal (Pareto-smoothed tail index of the weights; above 0.7 the IS estimate is unreliable)
and the negative ELBO with ``elbo_particles`` particles (the figure Pyro's CVAE tutorial reports;
for a VAE, -ELBO of x minus the IS log p(x_obs), i.e. the bound on -log p(x_miss | x_obs)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyro
import torch

from inference.completion.proposals import defensive_guide, local_vi_guide
from inference.diagnostics.psis import pareto_smooth
from inference.evaluate import Estimate
from inference.log_weights import log_weights
from inference.mcmc import sample_latents
from pyro_vae.checks import boolean, positive_int, seed as check_seed
from pyro_vae.cvae import is_conditional
from pyro_vae.errors import ConfigError
from pyro_vae.observation import ObservedPart
from pyro_vae.plates import data_plate
from pyro_vae.rng import seeded

MAX_FLOATS = 2e7  # rows per chunk: K * rows * D <= this
NUTS_DRAWS = 200  # warm-up and draws of the NUTS run behind proposal='nuts'


@dataclass(frozen=True)
class CompletionScore:
    """The conditional log-likelihood (``log_likelihood``), the negative ELBO, and the proposals' PSIS k-hat (per datapoint)."""

    log_likelihood: Estimate
    neg_elbo: Estimate
    khat: np.ndarray
    num_samples: int

    def metrics(self) -> dict[str, Any]:
        """Plain numbers for JSON: means, standard errors, k-hat summary."""
        finite = self.khat[np.isfinite(self.khat)]
        return {
            "conditional_nll": -self.log_likelihood.mean, "conditional_nll_stderr": self.log_likelihood.stderr,
            "neg_elbo": self.neg_elbo.mean, "neg_elbo_stderr": self.neg_elbo.stderr,
            "khat_max": float(finite.max()) if finite.size else float("-inf"),
            "khat_share_above_0.7": float((self.khat > 0.7).mean()), "n": self.log_likelihood.n,
            "num_samples": self.num_samples,
        }


def _chunk_rows(num_samples: int, dim: int) -> int:
    return max(1, int(MAX_FLOATS // max(1, num_samples * dim)))


def _khat(log_w: torch.Tensor) -> np.ndarray:
    """PSIS k-hat of each column of (K, B) log-weights (-inf for constant weights, e.g. no latent)."""
    return pareto_smooth(log_w.T)[1] if log_w.shape[0] >= 2 else np.full(log_w.shape[1], -np.inf)


@torch.no_grad()
def importance_log_likelihood(model: Callable, guide: Callable, x: torch.Tensor, num_samples: int, **kwargs: Any
                              ) -> tuple[torch.Tensor, np.ndarray]:
    """(logsumexp_k log w_ik - log K per row (B,), PSIS k-hat per row) in chunks of rows; log w by :func:`log_weights`."""
    values, khats = [], []
    size = _chunk_rows(num_samples, x.shape[1])
    for r0 in range(0, x.shape[0], size):
        lw = log_weights(model, guide, num_samples, x[r0:r0 + size], site_scales=False, **kwargs).log_w
        values.append(lw.logsumexp(0) - math.log(num_samples))
        khats.append(_khat(lw))
    return torch.cat(values), np.concatenate(khats)


@torch.no_grad()
def _mean_log_weight(model: Callable, guide: Callable, x: torch.Tensor, particles: int) -> torch.Tensor:
    """(1/K) sum_k log w_ik per row: the ELBO estimate with K = ``particles`` particles."""
    size = _chunk_rows(particles, x.shape[1])
    return torch.cat([log_weights(model, guide, particles, x[r0:r0 + size], site_scales=False).log_w.mean(0)
                      for r0 in range(0, x.shape[0], size)])


def _check(x: Any, num_samples: int, elbo_particles: int, seed: int) -> None:
    if not torch.is_tensor(x) or x.dim() != 2 or x.shape[0] < 2:
        raise ConfigError(f"x must be rows (N, D) with N >= 2 (a standard error needs a variance), got "
                          f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    positive_int("num_samples", num_samples)
    positive_int("elbo_particles", elbo_particles)
    check_seed("seed", seed)


def score_conditional(program: Any, x: torch.Tensor, *, num_samples: int = 1000, elbo_particles: int = 10,
                      seed: int = 0) -> CompletionScore:
    """log p(y | c) of a conditional program on the rows of x (module docstring); seeded, global RNG untouched."""
    if not is_conditional(program):
        raise ConfigError(f"score_conditional needs a conditional program (cvae, cvae_baseline), got "
                          f"{type(program).__name__}; for a VAE use score_vae_completion with a mask")
    _check(x, num_samples, elbo_particles, seed)
    program.check_data(x, "x")
    with seeded(seed):
        ll, khat = importance_log_likelihood(program.model, program.guide, x, num_samples)
        elbo = _mean_log_weight(program.model, program.guide, x, elbo_particles)
    return CompletionScore(Estimate.from_values(ll, num_samples), Estimate.from_values(-elbo, elbo_particles),
                           khat, num_samples)


def score_vae_completion(vae: Any, x: torch.Tensor, mask: torch.Tensor, *, num_samples: int = 1000,
                         elbo_particles: int = 10, proposal: str | Callable = "local_vi", seed: int = 0,
                         progress: bool = False) -> CompletionScore:
    """log p(x_miss | x_obs) = log p(x) - log p(x_obs) of an unconditional VAE (module docstring).

    ``proposal`` for log p(x_obs): ``"local_vi"`` (the default: 9/10 a full-covariance Gaussian fitted
    to p(z | x_obs) by per-row VI, :func:`~inference.completion.proposals.local_vi_proposal`, + 1/10 p(z); cost linear in the rows),
    ``"defensive"`` (1/2 q(z | x with the missing features 0) + 1/2 p(z), bounded weights but far from
    p(z | x_obs) on images: :mod:`inference.completion.proposals`), ``"nuts"`` (9/10 a Gaussian fitted to
    200 NUTS draws of z | x_obs per row, sd x 1.2, + 1/10 p(z): the best proposal here, at NUTS's
    cost), ``"encoder"`` (q(z | x with the missing features 0)), ``"prior"`` (p(z)), or a guide callable ``guide(x)`` sampling site "z" in the data plate. The k-hat is the
    larger of the two proposals' per row. ``progress``: the fitting of ``local_vi`` and ``nuts`` shown.
    """
    _check(x, num_samples, elbo_particles, seed)
    boolean("progress", progress)
    vae.check_data(x, "x")
    part = ObservedPart(vae, mask)
    x_obs = part.observed_value(x)  # the rows as the observation model reads them (missing entries ignored)
    with seeded(seed):
        guide = observed_proposal(part, proposal, x_obs, seed, progress=progress)
        ll_x, k_x = importance_log_likelihood(vae.model, vae.guide, x, num_samples)
        ll_obs, k_obs = importance_log_likelihood(part.model, guide, x_obs, num_samples)
        elbo_x = _mean_log_weight(vae.model, vae.guide, x, elbo_particles)
    return CompletionScore(Estimate.from_values(ll_x - ll_obs, num_samples),
                           Estimate.from_values(ll_obs - elbo_x, elbo_particles), np.maximum(k_x, k_obs), num_samples)


def observed_proposal(part: ObservedPart, proposal: str | Callable, x_obs: torch.Tensor, seed: int = 0, *,
                      progress: bool = False) -> Callable:
    """The importance-sampling guide named ``proposal`` for log p(x_obs) on the masked program ``part``, fitted to
    the rows ``x_obs`` where it needs fitting (``local_vi``, ``nuts``, with ``progress`` shown); see
    :func:`score_vae_completion`."""
    if callable(proposal):
        return proposal
    if proposal == "nuts":  # a Gaussian fitted to NUTS draws of z | x_obs, 9:1 with the prior
        with torch.enable_grad():
            post = sample_latents(part, x_obs, num_samples=NUTS_DRAWS, warmup=NUTS_DRAWS, num_chains=1,
                                  init="encoder", seed=seed, progress=progress)
        return defensive_guide(part, 0.9, post.gaussian_proposal().distribution)
    if proposal == "local_vi":  # a full-covariance Gaussian fitted per row by VI on p(z | x_obs), 9:1 with the prior
        return local_vi_guide(part, x_obs, seed, progress=progress)
    if proposal == "encoder":
        return part.guide
    if proposal == "defensive":
        return defensive_guide(part)
    if proposal == "prior":
        def prior_guide(x: torch.Tensor, **_: Any) -> torch.Tensor:
            with data_plate(x.shape[0], None):
                return pyro.sample("z", part.prior())

        return prior_guide
    raise ConfigError(f"proposal={proposal!r} is not valid; choose 'defensive', 'local_vi', 'nuts', 'encoder', 'prior' "
                      "or a guide callable")


__all__ = ["CompletionScore", "score_conditional", "score_vae_completion", "importance_log_likelihood", "observed_proposal"]
