r"""Completion of data by a trained VAE, by inference over its latent z (no retraining).

The observation program ``obs`` (:class:`pyro_vae.observation.ObservedPart` for a mask,
:class:`~pyro_vae.observation.LowResolution` for a pooling factor) defines p(z | x_obs). Each method
draws S latent values per row, z_s ~ (approximately) p(z | x_obs), and completes the row from
p(x | z_s): the missing features (inpainting; the observed ones are kept) or the whole image
(super-resolution). Methods:

- ``naive``: z_s ~ q_phi(z | x_fill), the encoder on the naively filled row (missing = 0, or the
  low-resolution image upsampled by repetition).
- ``sir``: sampling-importance-resampling: K proposals z_k ~ r(z | x) from the defensive mixture
  r = 1/2 q_phi(z | x_fill) + 1/2 p(z) (:mod:`inference.completion.proposals`; bounded weights),
  weights w_k = p(x_obs | z_k) p(z_k) / r(z_k | x) (the one log-weight function,
  :mod:`inference.log_weights`), S draws resampled with probabilities w_k / sum w.
- ``local_vi``: sir with the proposal r = 9/10 q*_i + 1/10 p(z), q*_i the full-covariance Gaussian
  fitted to p(z | x_obs,i) by per-row VI (:func:`inference.completion.proposals.local_vi_proposal`):
  near the posterior, so far fewer resampled draws repeat; cost linear in the rows.
- ``nuts``: the vectorized NUTS over latents (:func:`inference.mcmc.sample_latents`) on ``obs``: Pyro's
  NUTS on the whole block of rows' latents, one step size and one trajectory for all.
- ``row_nuts``: the same target, one NUTS chain per row (``kernel="row_nuts"``), each with its own step
  size, diagonal mass and trajectory; the rows' leapfrog steps vectorized.
- ``mwg``: Metropolis-within-Gibbs (Mattei & Frellsen 2018), chain on (z, x_miss): propose
  z' ~ q_phi(z | x_hat), accept with probability
  min(1, p(x_hat | z') p(z') q(z | x_hat) / [p(x_hat | z) p(z) q(z' | x_hat)]), then
  x_miss ~ p(x_miss | z). Its stationary law is p(z, x_miss | x_obs). Inpainting only.
- ``pseudo_gibbs``: Rezende et al. (2014): z ~ q_phi(z | x_hat) always accepted, then
  x_miss ~ p(x_miss | z); exact only if q_phi is the exact posterior.

The chains (mwg, pseudo_gibbs) start at the naive fill, run ``burn_in`` steps, then keep every
``thin``-th state until S are kept.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import torch

from inference.completion.proposals import defensive_guide, local_vi_guide
from inference.log_weights import log_weights
from inference.mcmc import sample_latents
from pyro_vae.checks import boolean, choice, positive_int, seed as check_seed
from pyro_vae.errors import ConfigError
from pyro_vae.observation import LowResolution, ObservedPart
from pyro_vae.rng import seeded

METHODS = ("naive", "sir", "local_vi", "nuts", "row_nuts", "mwg", "pseudo_gibbs")


class Completions(NamedTuple):
    """S completions of each of B rows: ``draws`` x ~ p(x | z_s) and ``means`` E[x | z_s] (both (S, B, D), the
    observed features kept for inpainting), the latents ``z`` (S, B, d), the method, its wall time,
    (for mwg) the acceptance rate and (for local_vi) ``proposal``, the importance-sampling guide it
    fitted to these rows, which scores them too (``score_vae_completion(..., proposal=out.proposal)``)."""

    draws: torch.Tensor
    means: torch.Tensor
    z: torch.Tensor
    method: str
    seconds: float
    accept_rate: float | None = None
    proposal: Callable | None = None


def _fill(obs: Any, x: torch.Tensor, px: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(draws, means) of complete rows from p(x | z) = ``px``: the observed features of x kept (inpainting)."""
    draw, mean = px.sample(), px.mean
    if isinstance(obs, ObservedPart):
        return torch.where(obs.mask, x, draw), torch.where(obs.mask, x, mean)
    return draw, mean


def _naive(obs: Any, x: torch.Tensor, S: int) -> torch.Tensor:
    return obs.posterior(x).sample((S,))


SIR_FLOATS = 2e7  # decoded values (proposals x rows x features) per block of rows in sir


@torch.no_grad()
def _sir(obs: Any, x: torch.Tensor, S: int, proposals: int, guide: Any = None) -> torch.Tensor:
    """z (S, N, d): S draws per row, resampled from its K proposals drawn from ``guide`` (default: the defensive
    mixture); rows in blocks of at most SIR_FLOATS decoded values."""
    guide = guide or defensive_guide(obs)
    rows = max(1, int(SIR_FLOATS // (proposals * obs.vae.data_dim)))
    return torch.cat([_sir_rows(obs, x[r0:r0 + rows], S, proposals, guide) for r0 in range(0, x.shape[0], rows)],
                     dim=1)


def _local_vi(obs: Any, x: torch.Tensor, S: int, proposals: int, seed: int, progress: bool
              ) -> tuple[torch.Tensor, Callable]:
    x_in = obs.observed_value(x)  # the rows as the observation model reads them: what the proposal is fitted to
    guide = local_vi_guide(obs, x_in, seed, progress=progress)
    return _sir(obs, x_in, S, proposals, guide), guide


def _sir_rows(obs: Any, x: torch.Tensor, S: int, proposals: int, guide: Any) -> torch.Tensor:
    lw = log_weights(obs.model, guide, proposals, x, site_scales=False)
    z = lw.guide_trace.nodes["z"]["value"]  # (K, B, d)
    idx = torch.multinomial(torch.softmax(lw.log_w, 0).T, S, replacement=True)  # (B, S)
    return z.permute(1, 0, 2).gather(1, idx.unsqueeze(-1).expand(-1, -1, z.shape[-1])).permute(1, 0, 2)


def _nuts(obs: Any, x: torch.Tensor, S: int, warmup: int, seed: int, kernel: str, progress: bool) -> torch.Tensor:
    x_in = obs.observed_value(x)
    post = sample_latents(obs, x_in, num_samples=S, warmup=warmup, num_chains=1, init="encoder", seed=seed,
                          kernel=kernel, progress=progress)
    return post.draws()


def _gibbs(obs: ObservedPart, x: torch.Tensor, S: int, *, metropolis: bool, burn_in: int, thin: int
           ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(z (S, B, d), x_hat (S, B, D), acceptance rate) of the mwg / pseudo-Gibbs chain (module docstring)."""
    vae, mask = obs.vae, obs.mask
    x_hat = obs.fill(x)
    q = vae.posterior(x_hat)
    z = q.sample()
    prior = vae.prior()
    kept_z, kept_x, accepted, steps = [], [], 0.0, 0
    for t in range(burn_in + S * thin):
        q = vae.posterior(x_hat)
        z_new = q.sample()
        if metropolis:
            log_ratio = (vae.decode(z_new).log_prob(x_hat) + prior.log_prob(z_new) + q.log_prob(z)
                         - vae.decode(z).log_prob(x_hat) - prior.log_prob(z) - q.log_prob(z_new))
            accept = torch.rand_like(log_ratio).log() < log_ratio
            z = torch.where(accept.unsqueeze(-1), z_new, z)
            accepted, steps = accepted + float(accept.float().mean()), steps + 1
        else:
            z = z_new
        x_hat = torch.where(mask, x, vae.decode(z).sample())
        if t >= burn_in and (t - burn_in) % thin == thin - 1:
            kept_z.append(z)
            kept_x.append(x_hat)
    return torch.stack(kept_z), torch.stack(kept_x), (accepted / steps if steps else float("nan"))


@torch.no_grad()
def complete_by_inference(obs: ObservedPart | LowResolution, x: torch.Tensor, *, method: str = "sir",
                          num_samples: int = 10, proposals: int = 1000, warmup: int = 200, burn_in: int = 100,
                          thin: int = 1, seed: int = 0, progress: bool = False) -> Completions:
    """S = ``num_samples`` completions of every row of ``x`` by ``method`` (module docstring); seeded, global RNG untouched.

    ``x``: full rows (N, D) for a mask (missing entries are never read) or low-resolution rows for
    super-resolution. ``proposals``: K of sir and local_vi; ``warmup``: NUTS warm-up; ``burn_in``, ``thin``: the
    Gibbs chains'. ``progress``: the progress of the methods that take long (``local_vi``'s fit, NUTS's chains;
    :func:`inference.progress.bar`).
    """
    method = choice("method", method, METHODS)
    S = positive_int("num_samples", num_samples)
    for name, value in (("proposals", proposals), ("warmup", warmup), ("burn_in", burn_in), ("thin", thin)):
        positive_int(name, value)
    check_seed("seed", seed)
    boolean("progress", progress)
    obs.check_data(x, "x")
    if method in ("mwg", "pseudo_gibbs") and not isinstance(obs, ObservedPart):
        raise ConfigError(f"method {method!r} completes missing features of a mask (a Gibbs step over x_miss); "
                          "for super-resolution use method 'naive', 'sir', 'local_vi', 'nuts' or 'row_nuts'")
    t0 = time.perf_counter()
    accept, guide = None, None
    with seeded(seed):
        if method == "naive":
            z = _naive(obs, x, S)
        elif method == "sir":
            z = _sir(obs, x, S, proposals)
        elif method == "local_vi":
            z, guide = _local_vi(obs, x, S, proposals, seed, progress)
        elif method in ("nuts", "row_nuts"):
            z = _nuts(obs, x, S, warmup, seed, kernel=method, progress=progress)
        else:
            z, _, accept = _gibbs(obs, x, S, metropolis=method == "mwg", burn_in=burn_in, thin=thin)
        draws, means = _fill(obs, x, obs.vae.decode(z.to(x.dtype)))
    return Completions(draws, means, z, method, time.perf_counter() - t0, accept, guide)


__all__ = ["METHODS", "Completions", "complete_by_inference"]
