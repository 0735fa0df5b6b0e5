"""R-hat, ESS and divergences: chains that did not mix are flagged, mixed ones are not; the summary table."""

from __future__ import annotations

import numpy as np
import pytest

from inference import diagnostics as dg
from inference.diagnostics import compare_to_mcmc, guide_draws
from inference.mcmc import sample_latents
from pyro_vae.linear_gaussian import linear_gaussian_vae, set_exact_posterior

from ppca_reference import N, SIGMA, d, ppca_data


def test_rhat_flags_chains_that_did_not_mix(short_nuts):
    report = dg.convergence_checks(dg.latents_to_inference_data(short_nuts))
    assert not report.ok
    assert report.max_rhat > 1.1 and report.num_rhat_high > N * d // 2
    assert report.warnings[0].startswith(f"R-hat: {report.num_rhat_high} of {N * d} parameters")


def test_rhat_does_not_flag_well_mixed_chains(ppca):
    """Perfectly mixed chains: 2 x 1000 independent draws of the exact posterior. Split R-hat - 1 (bulk and
    folded) is then ~ (chi2_3 / 3 - 1) / (2 n) with n = 500 draws per split half: below 0.005 for each of the
    40 codes except with probability ~1e-3, so 1.01 must not be exceeded; ESS ~ 2000 >= 400."""
    vae, x, _, _ = ppca
    z = guide_draws(vae.guide, x, 2000, seed=4).reshape(2, 1000, N, d)
    report = dg.convergence_checks(dg.draws_to_inference_data(z))
    assert report.ok, str(report)
    assert report.max_rhat < 1.01 and report.min_ess_bulk > 400 and report.num_divergences == 0


@pytest.mark.slow
def test_nuts_inference_data_against_the_exact_posterior_guide():
    """NUTS draws vs draws of the exact-posterior guide through compare_to_mcmc. The standardized mean
    difference has s.e. sqrt(1/S + (mcse_mean/sd)^2), the sd ratio a relative s.e. sqrt(1/(2 S) + (mcse_sd/sd)^2),
    with the MCMC standard errors from ArviZ's summary. Uncorrelated columns of W keep NUTS cheap (about 7
    leapfrog steps per draw, vs 22 with the correlated posterior of the other tests).
    """
    W, mu, x = ppca_data(N, correlated=False)
    vae = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    set_exact_posterior(vae)
    post = sample_latents(vae, x, num_samples=500, warmup=200, num_chains=2, seed=1, progress=False)
    mcmc = dg.latents_to_inference_data(post)
    report = dg.convergence_checks(mcmc)
    assert report.num_divergences == 0 and report.min_ess_bulk >= 400, str(report)
    summary = dg.mcmc_summary(mcmc, round_to="none")
    assert {"mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"} <= set(summary.columns)
    assert len(summary) == N * d
    S = 4000
    cmp = compare_to_mcmc(dg.guide_to_inference_data(vae, x, S, seed=3), mcmc)
    sd = summary["sd"].to_numpy().reshape(N, d)
    se_mean = np.sqrt(1 / S + (summary["mcse_mean"].to_numpy().reshape(N, d) / sd) ** 2)
    se_ratio = np.sqrt(1 / (2 * S) + (summary["mcse_sd"].to_numpy().reshape(N, d) / sd) ** 2)
    assert (np.abs(cmp.mean_difference) < 4 * se_mean).all(), np.abs(cmp.mean_difference / se_mean).max()
    assert (np.abs(cmp.sd_ratio - 1) < 4 * se_ratio).all(), np.abs((cmp.sd_ratio - 1) / se_ratio).max()


def _synthetic(offset: float, draws: int, divergent: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(2, draws, 3, 2))
    z[1] += offset
    stats = {"diverging": np.zeros((2, draws), bool)}
    stats["diverging"][0, :divergent] = True
    return dg.draws_to_inference_data(z, sample_stats=stats)


def test_convergence_report_warnings_name_the_problem_and_the_fix():
    good = dg.convergence_checks(_synthetic(0.0, 1000, 0))
    assert good.ok and good.warnings == () and "all checks passed" in str(good)
    bad = dg.convergence_checks(_synthetic(3.0, 100, 3))
    assert not bad.ok and len(bad.warnings) == 3
    rhat, ess, div = bad.warnings
    assert rhat.startswith("R-hat: 6 of 6 parameters have rank-normalized split R-hat > 1.01") and "run longer" in rhat
    assert ess.startswith("ESS: 6 of 6 parameters have bulk or tail ESS < 400") and "of 200 draws" in ess
    assert div.startswith("divergences: 3 of 200 transitions diverged") and "target_accept" in div
    assert bad.num_divergences == 3 and bad.num_parameters == 6 and "WARNING" in str(bad)
    strict = dg.convergence_checks(_synthetic(0.0, 1000, 0), ess_min=5000)
    assert not strict.ok and strict.warnings[0].startswith("ESS:")
