r"""Did the inference work? Diagnostics of MCMC and variational posteriors of a VAE's codes.

- :mod:`~inference.diagnostics.convert`: draws to ArviZ InferenceData (dims chain, draw, datapoint,
  latent) and netCDF; the only module that imports ArviZ.
- :mod:`~inference.diagnostics.convergence`: rank-normalized split R-hat, bulk/tail ESS, divergences.
- :mod:`~inference.diagnostics.psis`: k-hat of log w = log p(x, z) - log q(z | x), z ~ q, per datapoint; PSIS-LOO.
- :mod:`~inference.diagnostics.gaps`: log p(x) - L[q] = (log p(x) - L[q*]) + (L[q*] - L[q]); q against MCMC.
- :mod:`~inference.diagnostics.ppc`: x^rep ~ p(x | z), z ~ posterior; posterior predictive p-values.
- :mod:`~inference.diagnostics.checks`: pass/fail rules, e.g. counts of extreme p-values against a Binomial(n, alpha) quantile.
- :mod:`~inference.diagnostics.plots`: every figure; :mod:`~inference.diagnostics.report`: ``pyro-vae diagnose``.
"""

from inference.diagnostics.checks import CHECK_QUANTILE, KHAT_TOLERANCE, Check, verdicts
from inference.diagnostics.convergence import ESS_MIN, RHAT_MAX, ConvergenceReport, convergence_checks, mcmc_summary
from inference.diagnostics.convert import (
    DATAPOINT, FEATURE, LATENT, LATENT_VAR, OBSERVED_VAR, STAT_NAMES, PosteriorDraws, bayesian_to_inference_data,
    draws_to_inference_data, guide_to_inference_data, latent_names, latents_to_inference_data, load_netcdf,
    posterior_draws, predictive_to_inference_data, save_netcdf,
)
from inference.diagnostics.gaps import PROPOSALS, Gaps, PosteriorComparison, amortization_gaps, compare_draws, compare_to_mcmc
from inference.diagnostics.plots import (
    new_figure, plot_gaps, plot_gaps_by_family, plot_khat_histogram, plot_kl_per_dimension, plot_posterior_overlay, plot_ppc,
    plot_ppc_loglik, plot_ppc_moments, plot_rank, plot_trace, save_figure,
)
from inference.diagnostics.ppc import ALPHA, PPCResult, guide_draws, log_likelihood_draws, posterior_predictive_check, replicate
from inference.diagnostics.psis import KHAT_BAD, KHAT_GOOD, LooResult, PSISResult, loo, pareto_smooth, psis_khat
from inference.diagnostics.report import FILES, Diagnosis, diagnose_run, write_report

__all__ = [
    # convert
    "LATENT_VAR", "OBSERVED_VAR", "DATAPOINT", "LATENT", "FEATURE", "STAT_NAMES", "latent_names",
    "draws_to_inference_data", "latents_to_inference_data", "guide_to_inference_data", "bayesian_to_inference_data",
    "predictive_to_inference_data", "save_netcdf", "load_netcdf", "PosteriorDraws", "posterior_draws",
    # convergence
    "RHAT_MAX", "ESS_MIN", "mcmc_summary", "ConvergenceReport", "convergence_checks",
    # psis
    "KHAT_GOOD", "KHAT_BAD", "pareto_smooth", "PSISResult", "psis_khat", "LooResult", "loo",
    # gaps
    "PROPOSALS", "Gaps", "amortization_gaps", "PosteriorComparison", "compare_draws", "compare_to_mcmc",
    # ppc
    "ALPHA", "PPCResult", "guide_draws", "log_likelihood_draws", "replicate", "posterior_predictive_check",
    # plots
    "new_figure", "save_figure", "plot_khat_histogram", "plot_kl_per_dimension", "plot_ppc_moments", "plot_ppc_loglik",
    "plot_posterior_overlay", "plot_gaps", "plot_gaps_by_family", "plot_trace", "plot_rank", "plot_ppc",
    # checks, report
    "KHAT_TOLERANCE", "CHECK_QUANTILE", "Check", "verdicts", "FILES", "Diagnosis", "diagnose_run", "write_report",
]
