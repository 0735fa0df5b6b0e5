"""Posterior predictive checks: a well-specified model passes, a misspecified one is flagged."""

from __future__ import annotations

from inference.diagnostics import posterior_predictive_check
from pyro_vae.linear_gaussian import linear_gaussian_vae, set_exact_posterior

from ppca_reference import D, SIGMA, ppca_data


def test_ppc_passes_a_well_specified_model_and_flags_a_misspecified_one():
    """Data from pPCA with sigma = 0.5. Under the true model p_i^loglik is roughly uniform, so the count of
    p < 0.05 is at most the 99% quantile of Binomial(n, 0.05); a model with sigma = 0.1 finds the data much
    less likely than its replicates (the residuals are 5x too large), so nearly every p is ~0."""
    from scipy import stats

    n = 200
    W, mu, x = ppca_data(n, seed=5)
    right = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    set_exact_posterior(right)
    res = posterior_predictive_check(right, x, num_draws=100, seed=0)
    assert res.replicated.shape == (100, n, D) and res.loglik_observed.shape == (100, n)
    assert (res.p_loglik < 0.05).sum() <= stats.binom.ppf(0.99, n, 0.05)
    wrong = linear_gaussian_vae(W, mu, 0.1, seed=0)
    set_exact_posterior(wrong)
    bad = posterior_predictive_check(wrong, x, num_draws=100, seed=0)
    assert bad.fraction_low_loglik > 0.9
    assert "less likely" in bad.summary()
