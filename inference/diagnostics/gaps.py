r"""How good is a variational posterior? Inference gaps, and agreement with MCMC.

**Inference gaps** (Cremer, Li & Duvenaud 2018). For a datapoint x with decoder theta fixed,
amortized guide q_phi(z | x) and q* = argmax_{q in the same family} L[q], the locally optimized
member of the family::

    log p(x) - L[q] = (log p(x) - L[q*])  +  (L[q*] - L[q])
       inference gap    approximation gap     amortization gap
                        = min_q KL(q || p(z|x))  (the family is too poor)
                                                 = what the encoder loses by sharing one network

L[q] = E_q[log p(x, z) - log q(z)] is estimated with :func:`inference.evaluate.elbo` (estimator
B by default: analytic KL), log p(x) by importance sampling with many samples
(:func:`inference.evaluate.log_likelihood`, a stochastic lower bound that tightens as K grows),
and q* by :func:`inference.baselines.refine_encoder` (fit_local started from the encoder), so that
L[q*] >= L[q] by construction up to Monte Carlo noise. Each gap is the mean over N datapoints of
the per-datapoint differences, with the standard error of that mean.

**VI vs MCMC** (:func:`compare_to_mcmc`): for datapoint i and latent dimension j, with MCMC taken
as the reference posterior::

    mean difference  (E_q[z_ij] - E_mcmc[z_ij]) / sd_mcmc[z_ij]     (in posterior sds)
    sd ratio         sd_q[z_ij] / sd_mcmc[z_ij]                     (< 1: q too narrow)
    KS statistic     sup_t |F_q(t) - F_mcmc(t)|                     (two-sample, marginal)
    energy distance  (2 E|X - Y| - E|X - X'| - E|Y - Y'|)^(1/2)     (scipy's, marginal)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from inference.diagnostics.convert import LATENT_VAR, InferenceData, latent_names, posterior_draws
from inference.evaluate import Estimate, elbo, log_likelihood
from inference.baselines import LocalFamilyGuide, LocalGaussianGuide, frozen, refine_encoder
from pyro_vae.errors import ConfigError
from pyro_vae.vae import VAE
from pyro_vae.rng import seeded

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
PROPOSALS = ("optimized", "amortized")


# -- inference gaps -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gaps:
    """Inference gaps of an amortized guide on N datapoints (module docstring), nats per datapoint.

    ``log_px`` (IS, ``proposal``), ``elbo_optimized`` = L[q*], ``elbo_amortized`` = L[q];
    ``approximation_gap`` = log p(x) - L[q*], ``amortization_gap`` = L[q*] - L[q] and
    ``inference_gap`` = log p(x) - L[q], each from per-datapoint differences (mean, s.e.).
    ``local_guide`` holds the fitted q*_i (for k-hat or draws of q*).
    """

    log_px: Estimate
    elbo_optimized: Estimate
    elbo_amortized: Estimate
    approximation_gap: Estimate
    amortization_gap: Estimate
    inference_gap: Estimate
    local_guide: LocalGaussianGuide | LocalFamilyGuide
    proposal: str
    local_steps: int

    def summary(self) -> str:
        return (
            f"on {self.log_px.n} datapoints: log p(x) {self.log_px.mean:.3f} +- {self.log_px.stderr:.3f} "
            f"(IS, K={self.log_px.num_samples}, {self.proposal} proposal); L[q*] {self.elbo_optimized.mean:.3f}, "
            f"L[q] {self.elbo_amortized.mean:.3f}; approximation gap {self.approximation_gap.mean:.3f} +- "
            f"{self.approximation_gap.stderr:.3f}, amortization gap {self.amortization_gap.mean:.3f} +- "
            f"{self.amortization_gap.stderr:.3f} nats"
        )


def _difference(a: Estimate, b: Estimate) -> Estimate:
    return Estimate.from_values(a.values - b.values, min(a.num_samples, b.num_samples))


def amortization_gaps(
    vae: VAE,
    x: Tensor,
    *,
    is_samples: int = 1000,
    local_steps: int = 300,
    local_lr: float | None = None,
    local_particles: int = 8,
    elbo_particles: int = 100,
    estimator: str = "B",
    full_cov: bool | None = None,
    proposal: str = "optimized",
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> Gaps:
    """Approximation and amortization gaps of ``vae``'s guide on the rows of x (module docstring).

    q*: :func:`inference.baselines.refine_encoder` (fit_local from the encoder) for
    ``local_steps`` Adam steps at ``local_lr`` (default: fit_local's schedule) with ``local_particles`` particles; a diagonal
    Gaussian q_i when the VAE's guide is ``diag_normal``, a full-covariance one otherwise (or as
    ``full_cov`` says); for a flow guide (:mod:`pyro_vae.flows`) q*_i = family(eta_i) with eta_i
    refined from the encoder's output and the flow's weights fixed (``LocalFamilyGuide``). Both ELBOs use the same ``estimator`` and ``elbo_particles``; log p(x)
    uses ``is_samples`` importance samples from q* (``proposal="optimized"``, closer to the
    posterior) or from q (``"amortized"``). Seeds are fixed from ``seed``; the VAE is left in the
    mode it came in.
    """
    if proposal not in PROPOSALS:
        raise ConfigError(f"proposal={proposal!r} is not valid; choose one of: {', '.join(PROPOSALS)}")
    vae.check_data(x)
    with frozen(vae):
        fit = refine_encoder(
            vae, x, steps=local_steps, num_particles=local_particles, lr=local_lr, full_cov=full_cov,
            elbo="meanfield" if estimator == "B" else "trace", eval_particles=elbo_particles, seed=seed, progress=progress,
        )
        local = fit.guide
        common = dict(estimator=estimator, num_particles=elbo_particles, batch_size=batch_size, progress=progress)
        with seeded(seed + 1):
            l_amortized = elbo(vae.model, vae.guide, x, **common)
            l_optimized = elbo(vae.model, local.guide, x, **common)
            q = local.guide if proposal == "optimized" else vae.guide
            log_px = log_likelihood(vae.model, q, x, num_samples=is_samples, batch_size=batch_size, progress=progress)
    gaps = Gaps(
        log_px=log_px, elbo_optimized=l_optimized, elbo_amortized=l_amortized,
        approximation_gap=_difference(log_px, l_optimized), amortization_gap=_difference(l_optimized, l_amortized),
        inference_gap=_difference(log_px, l_amortized), local_guide=local, proposal=proposal, local_steps=local_steps,
    )
    logger.info("inference gaps %s", gaps.summary())
    return gaps


# -- VI vs MCMC ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PosteriorComparison:
    """An approximate posterior against MCMC, per datapoint and latent dimension (arrays (N, d)).

    See the module docstring for ``mean_difference`` (in MCMC posterior sds), ``sd_ratio``,
    ``ks`` and ``energy``. ``datapoints`` are the shared datapoint labels, ``latents`` the
    latent labels.
    """

    datapoints: np.ndarray
    latents: tuple[str, ...]
    mean_difference: np.ndarray
    sd_ratio: np.ndarray
    ks: np.ndarray
    energy: np.ndarray

    @property
    def max_abs_mean_difference(self) -> float:
        return float(np.abs(self.mean_difference).max())

    @property
    def median_sd_ratio(self) -> float:
        return float(np.median(self.sd_ratio))

    @property
    def mean_ks(self) -> float:
        return float(self.ks.mean())

    def summary(self) -> str:
        return (
            f"VI vs MCMC on {self.datapoints.size} datapoints x {len(self.latents)} dims: |mean difference| "
            f"median {np.median(np.abs(self.mean_difference)):.2f}, max {self.max_abs_mean_difference:.2f} posterior sds; "
            f"sd ratio median {self.median_sd_ratio:.2f} (range {self.sd_ratio.min():.2f}-{self.sd_ratio.max():.2f}); "
            f"KS mean {self.mean_ks:.3f}"
        )


def compare_draws(
    approx: np.ndarray, mcmc: np.ndarray, *, datapoints: np.ndarray | None = None, latents: tuple[str, ...] | None = None
) -> PosteriorComparison:
    """:class:`PosteriorComparison` of two sets of draws (draws, N, d) over the same datapoints (chains pooled)."""
    approx, mcmc = np.asarray(approx, dtype=np.float64), np.asarray(mcmc, dtype=np.float64)
    if approx.ndim != 3 or mcmc.ndim != 3 or approx.shape[1:] != mcmc.shape[1:]:
        raise ConfigError(f"expected (draws, N, d) arrays over the same datapoints, got {approx.shape} and {mcmc.shape}")
    if approx.shape[0] < 2 or mcmc.shape[0] < 2:
        raise ConfigError("need at least 2 draws of each posterior")
    n, d = approx.shape[1:]
    sd_ref = mcmc.std(0, ddof=1)
    sd_ref = np.where(sd_ref > 0, sd_ref, np.nan)
    mean_diff = (approx.mean(0) - mcmc.mean(0)) / sd_ref
    sd_ratio = approx.std(0, ddof=1) / sd_ref
    ks = np.empty((n, d))
    energy = np.empty((n, d))
    for i in range(n):
        for j in range(d):
            ks[i, j] = stats.ks_2samp(approx[:, i, j], mcmc[:, i, j]).statistic
            energy[i, j] = stats.energy_distance(approx[:, i, j], mcmc[:, i, j])
    return PosteriorComparison(
        np.arange(n) if datapoints is None else np.asarray(datapoints),
        tuple(latents) if latents is not None else tuple(latent_names(d)),
        mean_diff, sd_ratio, ks, energy,
    )


def compare_to_mcmc(vi_idata: InferenceData, mcmc_idata: InferenceData, *, var: str = LATENT_VAR) -> PosteriorComparison:
    """Compare the posterior draws of ``var`` in two InferenceData (VI and MCMC) on their shared datapoints.

    Both must have ``var`` with dims (chain, draw, datapoint, latent) (the layout of
    :mod:`inference.diagnostics.convert`); chains are pooled, datapoints matched by label.
    """
    a, b = posterior_draws(vi_idata, var), posterior_draws(mcmc_idata, var)
    if a.dims != b.dims or len(a.dims) != 4:
        raise ConfigError(f"both posteriors need {var!r} with the same 4 dims (chain, draw, datapoint, latent); got {a.dims} and {b.dims}")
    point_dim, latent_dim = a.dims[2], a.dims[3]
    if not np.array_equal(a.coords[latent_dim], b.coords[latent_dim]):
        raise ConfigError("the two posteriors have different latent dimensions")
    shared = [p for p in a.coords[point_dim].tolist() if p in set(b.coords[point_dim].tolist())]
    if not shared:
        raise ConfigError("the two posteriors share no datapoint; run them on the same rows")
    ia = [a.coords[point_dim].tolist().index(p) for p in shared]
    ib = [b.coords[point_dim].tolist().index(p) for p in shared]
    approx = a.values[:, :, ia].reshape(-1, len(shared), a.values.shape[-1])
    mcmc = b.values[:, :, ib].reshape(-1, len(shared), b.values.shape[-1])
    result = compare_draws(approx, mcmc, datapoints=np.asarray(shared), latents=tuple(map(str, a.coords[latent_dim])))
    logger.info("%s", result.summary())
    return result


__all__ = ["Gaps", "amortization_gaps", "PosteriorComparison", "compare_draws", "compare_to_mcmc", "PROPOSALS"]
