"""Inference gaps against the exact pPCA ELBOs and log p(x), and the comparison of two posteriors' draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference.diagnostics import amortization_gaps, compare_draws, guide_draws, plot_gaps, plot_gaps_by_family
from pyro_vae.errors import ConfigError
from pyro_vae.linear_gaussian import elbo_gaussian, linear_gaussian_vae, log_marginal, posterior, set_gaussian_posterior

from ppca_reference import N, SIGMA, d, is_png, posterior_map, scaled_guide


def test_amortized_elbo_below_optimized_elbo_below_log_px(ppca, tmp_path):
    """A diagonal guide with a shrunk mean (0.8 m_i) and the marginal variances: both gaps are positive.

    Exact references: L[q] and L[q*] by elbo_gaussian (q* from its fitted moments), log p(x) by
    log_marginal. Differences of per-datapoint estimates from the exact values have mean 0
    (ELBOs: unbiased estimators) or <= 0 (IS: Jensen), tested at 4 standard errors.
    """
    _, x, W, mu = ppca
    vae = linear_gaussian_vae(W, mu, SIGMA, guide="diag_normal", seed=0)
    A, cov = posterior_map(W, mu)
    marginal = torch.diag_embed(cov.diagonal())
    set_gaussian_posterior(vae, 0.8 * A, -0.8 * A @ mu, marginal)
    gaps = amortization_gaps(vae, x, is_samples=2000, local_steps=300, elbo_particles=200, seed=0)

    def z(values, exact):  # mean difference in units of its standard error
        diff = values.numpy() - exact.numpy()
        return diff.mean() / (diff.std(ddof=1) / math.sqrt(diff.size))

    loc, _ = posterior(x, W, mu, SIGMA)
    l_amortized = elbo_gaussian(x, W, mu, SIGMA, 0.8 * loc, marginal)
    q_loc, q_cov = gaps.local_guide.moments()
    l_optimized = elbo_gaussian(x, W, mu, SIGMA, q_loc, q_cov)
    log_px = log_marginal(x, W, mu, SIGMA)
    assert abs(z(gaps.elbo_amortized.values, l_amortized)) < 4
    assert abs(z(gaps.elbo_optimized.values, l_optimized)) < 4
    assert z(gaps.log_px.values, log_px) < 4
    # the ordering, within the reported standard errors
    assert gaps.amortization_gap.mean > -3 * gaps.amortization_gap.stderr
    assert gaps.approximation_gap.mean > -3 * gaps.approximation_gap.stderr
    np.testing.assert_allclose(gaps.inference_gap.mean, gaps.approximation_gap.mean + gaps.amortization_gap.mean, atol=1e-9)
    # the mean-field optimum q*_opt = N(m_i, diag(1 / Lambda_jj)), Lambda = Sigma^-1: the fitted q* cannot beat it
    opt_cov = torch.diag_embed(1 / torch.linalg.inv(cov).diagonal())
    best = elbo_gaussian(x, W, mu, SIGMA, loc, opt_cov)
    assert (l_optimized <= best + 1e-9).all()
    assert gaps.amortization_gap.mean > 0 and gaps.approximation_gap.mean > 0
    assert "amortization gap" in gaps.summary()
    assert is_png(plot_gaps(gaps, tmp_path / "gaps.png"))
    assert is_png(plot_gaps_by_family({"diag_normal": gaps, "again": gaps}, tmp_path / "families.png"))
    with pytest.raises(ConfigError, match="gaps is empty"):
        plot_gaps_by_family({}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_compare_draws_measures_a_too_narrow_posterior(ppca):
    """Two iid samples: the sd ratio has relative s.e. sqrt(1/(2 S1) + 1/(2 S2)) around sqrt(0.05)."""
    _, x, W, mu = ppca
    exact = guide_draws(scaled_guide(W, mu, 1.0).guide, x, 2000, seed=0).numpy()
    narrow = guide_draws(scaled_guide(W, mu, 0.05).guide, x, 2000, seed=1).numpy()
    cmp = compare_draws(narrow, exact)
    target = math.sqrt(0.05)
    assert (np.abs(cmp.sd_ratio - target) < 4 * target * math.sqrt(1 / 4000 + 1 / 4000)).all()
    assert cmp.ks.mean() > 0.3 and cmp.energy.shape == (N, d)
    same = compare_draws(guide_draws(scaled_guide(W, mu, 1.0).guide, x, 2000, seed=2).numpy(), exact)
    assert (np.abs(same.mean_difference) < 4 * math.sqrt(2 / 2000)).all()
    with pytest.raises(ConfigError):
        compare_draws(exact, exact[:, :5])
