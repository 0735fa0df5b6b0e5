"""Posterior predictive checks: a well-specified model passes, a misspecified one is flagged; the replicates are
made, scored and summarized in blocks of bounded size without changing the numbers."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from inference.diagnostics import guide_draws, log_likelihood_draws, posterior_predictive_check, replicate
from inference.diagnostics.ppc import CHUNK_FLOATS
from pyro_vae.linear_gaussian import linear_gaussian_vae, set_exact_posterior

from ppca_reference import D, SIGMA, d, ppca_data


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


def _exact_ppca(n: int):
    W, mu, x = ppca_data(n, seed=7)
    vae = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    set_exact_posterior(vae)
    return vae, x


def _mid_p(rep: np.ndarray, obs: np.ndarray) -> np.ndarray:
    return (rep > obs).mean(0) + 0.5 * (rep == obs).mean(0)


@pytest.mark.parametrize("max_floats", [CHUNK_FLOATS, 3 * 40 * D, 7 * D, D], ids=["one-block", "3-draws", "7-rows", "1-row"])
def test_ppc_in_blocks_equals_the_ppc_of_all_replicates_at_once(max_floats):
    """The reference takes the same replicates all at once (replicate() with the same seed and max_floats cuts
    the same random stream) and computes T_j, U_j and the log-likelihoods on the whole (S, N, D) array. Blocks
    of whole draws give the same numbers bit for bit; a draw split over row blocks combines its means and sums
    of squared deviations exactly, up to rounding."""
    n, S = 40, 30
    vae, x = _exact_ppca(n)
    z = guide_draws(vae.guide, x, S, seed=2)
    res = posterior_predictive_check(vae, x, z, seed=0, max_floats=max_floats)
    x_rep = replicate(vae, z, seed=1, max_floats=max_floats)
    xr, xo = x_rep.numpy(), x.numpy()
    with torch.no_grad():
        ll_rep = vae.decode(z.reshape(-1, d)).log_prob(x_rep.reshape(-1, D)).reshape(S, n).numpy()
    same = np.testing.assert_array_equal if max_floats >= n * D else partial(np.testing.assert_allclose, rtol=1e-12)
    same(res.replicated_mean, xr.mean(1))
    same(res.replicated_sd, xr.std(1, ddof=1))
    np.testing.assert_allclose(res.loglik_replicated, ll_rep, rtol=1e-12)
    np.testing.assert_allclose(res.loglik_observed, log_likelihood_draws(vae, x, z).numpy(), rtol=1e-12)
    np.testing.assert_array_equal(res.p_mean, _mid_p(xr.mean(1), xo.mean(0)))
    np.testing.assert_array_equal(res.p_sd, _mid_p(xr.std(1, ddof=1), xo.std(0, ddof=1)))
    np.testing.assert_array_equal(res.p_loglik, _mid_p(-ll_rep, -res.loglik_observed))
    torch.testing.assert_close(res.replicated, x_rep, rtol=0, atol=0)


def test_ppc_decodes_at_most_max_floats_values_at_once_and_keeps_the_replicates_of_a_few_rows(monkeypatch):
    """Peak memory is bounded: the decoder never sees more than max_floats / D rows, and only the replicates of
    the first K rows (S K D <= max_kept) are kept, those of replicate() with the same stream."""
    n, S = 40, 30
    vae, x = _exact_ppca(n)
    z = guide_draws(vae.guide, x, S, seed=2)
    expected = replicate(vae, z, seed=1, max_floats=7 * D)
    rows = []
    decode = vae.decode
    monkeypatch.setattr(vae, "decode", lambda codes: rows.append(codes.shape[0]) or decode(codes))
    res = posterior_predictive_check(vae, x, z, seed=0, max_floats=7 * D, max_kept=S * 10 * D)
    assert max(rows) == 7 and sum(rows) == 2 * S * n  # replicates and their scores, then the observed scores
    assert res.replicated.shape == (S, 10, D) and res.loglik_observed.shape == (S, n)
    assert res.replicated_mean.shape == res.replicated_sd.shape == (S, D)
    torch.testing.assert_close(res.replicated, expected[:, :10], rtol=0, atol=0)
