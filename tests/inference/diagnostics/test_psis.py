"""PSIS k-hat of a guide against the known pPCA posterior, and PSIS-LOO against the exact leave-one-out predictive."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference import diagnostics as dg
from inference.mcmc import BayesianPosterior
from pyro_vae.errors import ConfigError
from pyro_vae.linear_gaussian import posterior

from ppca_reference import N, SIGMA, scaled_guide

S_IS = 2000


def test_khat_is_good_for_the_exact_posterior(ppca):
    vae, x, _, _ = ppca
    res = dg.psis_khat(vae.model, vae.guide, x, S_IS)
    assert res.khat.shape == (N,)
    assert (res.khat < 0.5).all() and res.fraction_good == 1.0  # weights constant to rounding: k-hat = -inf


def test_khat_of_a_wider_guide_is_good_and_its_psis_moments_are_the_posterior_moments(ppca):
    """q = N(m, 2 Sigma): the weights are bounded, Pareto shape k = 1 - 2 = -1 (Gaussian proposal with variance
    ratio r gives k = 1 - r, per direction). PSIS moments have s.e. sd / sqrt(ESS) (mean) and sd / sqrt(2 ESS) (sd)."""
    _, x, W, mu = ppca
    vae = scaled_guide(W, mu, 2.0)
    res = dg.psis_khat(vae.model, vae.guide, x, S_IS)
    assert (res.khat < 0.5).all(), res.khat
    loc, cov = posterior(x, W, mu, SIGMA)
    sd = cov.diagonal().sqrt().numpy()
    ess = res.ess[:, None]
    assert (np.abs(res.mean - loc.numpy()) < 4 * sd / np.sqrt(ess)).all()
    assert (np.abs(res.sd - sd) < 4 * sd / np.sqrt(2 * ess)).all()  # unweighted draws would give sqrt(2) sd


def test_khat_is_unreliable_for_a_too_narrow_guide(ppca):
    """q = N(m, 0.05 Sigma): k = 1 - 0.05 = 0.95. The k-hat of one datapoint has s.d. ~ (1 + k) / sqrt(M) ~ 0.17 with
    M = 3 sqrt(S) = 134 tail draws, so the median of 20 has s.d. ~ 0.05: 0.7 is more than 4 s.d. below 0.95."""
    _, x, W, mu = ppca
    vae = scaled_guide(W, mu, 0.05)
    res = dg.psis_khat(vae.model, vae.guide, x, S_IS)
    assert np.median(res.khat) > 0.7, res.khat
    assert res.fraction_bad > 0.5 and "unreliable" in res.summary()


def test_pareto_smooth_rejects_invalid_weights():
    with pytest.raises(ConfigError, match="NaN"):
        dg.pareto_smooth(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ConfigError, match="S >= 2"):
        dg.pareto_smooth(np.zeros((3, 1)))


def test_loo_matches_the_exact_leave_one_out_predictive():
    """x_i ~ N(mu, s^2), mu ~ N(0, t^2): p(x_i | x_-i) = N(x_i; m_-i, s^2 + v_-i) exactly. With S exact posterior
    draws, the IS estimate of log p(x_i | x_-i) has delta-method s.e. sd(1/p_s) / (mean(1/p_s) sqrt(S))."""
    rng = np.random.default_rng(0)
    n, s, t, S = 15, 1.0, 2.0, 4000
    x = rng.normal(1.0, s, size=n)
    v_n = 1 / (1 / t**2 + n / s**2)
    mu = rng.normal(v_n * x.sum() / s**2, math.sqrt(v_n), size=(2, S // 2))
    ll = -0.5 * math.log(2 * math.pi * s**2) - (x - mu[..., None]) ** 2 / (2 * s**2)  # (2, S/2, n)
    post = BayesianPosterior(
        samples={"mu": torch.as_tensor(mu)}, sample_stats={"diverging": np.zeros((2, S // 2), bool)},
        log_likelihood=torch.as_tensor(ll), wall_time=0.0, num_gradient_evals=0, kernel="exact", x=torch.as_tensor(x),
        warmup=0,
    )
    idata = dg.bayesian_to_inference_data(post)
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "datapoint")
    res = dg.loo(idata)
    v_loo = 1 / (1 / t**2 + (n - 1) / s**2)
    m_loo = v_loo * (x.sum() - x) / s**2
    exact = -0.5 * np.log(2 * np.pi * (s**2 + v_loo)) - (x - m_loo) ** 2 / (2 * (s**2 + v_loo))
    inv = np.exp(-ll.reshape(S, n))
    se = inv.std(0) / (inv.mean(0) * math.sqrt(S))
    assert abs(res.elpd_loo - exact.sum()) < 4 * math.sqrt((se**2).sum())
    assert (np.abs(res.loo_i - exact) < 4 * se + 1e-3).all()
    assert res.khat.shape == (n,) and res.fraction_bad == 0.0
    np.testing.assert_allclose(res.lppd - res.elpd_loo, res.p_loo, rtol=1e-6)
