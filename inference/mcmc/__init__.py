r"""Markov chain Monte Carlo for a VAE's latent variables, and for small fully Bayesian models.

- :mod:`~inference.mcmc.latents`: NUTS over the latents z_1..z_N of many datapoints at once,
  given the decoder: one chain on the (N, d) block, U(z) = -sum_i [log p(z_i) + log p_theta(x_i | z_i)],
  or (``kernel="row_nuts"``) one chain per datapoint.
- :mod:`~inference.mcmc.row_nuts`, :mod:`~inference.mcmc.row_warmup`: NUTS as N independent chains in
  lockstep, each row with its own step size, mass matrix and trajectory, and their warm-up.
- :mod:`~inference.mcmc.bayesian`: NUTS over theta and z of a small model, p(theta, z | x), and
  the per-datapoint log-likelihood draws log p(x_i | theta^(s), z_i^(s)) for PSIS-LOO.
- :mod:`~inference.mcmc.proposal`: the Gaussian N(m_i, s^2 Sigma_i) fitted to draws, an
  importance-sampling proposal.
- :mod:`~inference.mcmc.hmc`: a vectorized HMC kernel (one independent chain per row) and
  step-size adaptation, the E-step of Monte Carlo EM.
- :mod:`~inference.mcmc.runner`: Pyro's NUTS/HMC run chain by chain with per-draw sample statistics.
"""

from inference.mcmc.bayesian import (
    BayesianPosterior,
    bayesian_linear_gaussian_model,
    fit_bayesian,
    pointwise_log_likelihood,
)
from inference.mcmc.hmc import HMCInfo, HMCState, HMCStep, adapt_step_size, vectorized_hmc_step
from inference.mcmc.latents import INITS, LATENT_KERNELS, LatentPosterior, sample_latents
from inference.mcmc.row_warmup import RowChain, run_row_nuts
from inference.mcmc.proposal import PROPOSAL_SCALE, GaussianProposal
from inference.mcmc.runner import KERNELS, STAT_KEYS, check_continuous

__all__ = [
    "LatentPosterior", "BayesianPosterior", "GaussianProposal", "HMCStep", "STAT_KEYS", "KERNELS",
    "check_continuous", "sample_latents", "bayesian_linear_gaussian_model", "pointwise_log_likelihood",
    "fit_bayesian", "vectorized_hmc_step", "adapt_step_size", "INITS", "PROPOSAL_SCALE", "HMCState", "HMCInfo",
    "LATENT_KERNELS", "RowChain", "run_row_nuts",
]
