"""Tests for pyro_vae.linear_gaussian: pPCA closed forms and pPCA as a VAE.

The closed forms are checked against independent computations (scipy's Gaussian density, the
conditional of the joint Gaussian of (z, x), the Gaussian KL between q and the posterior,
direct Monte Carlo); tolerances are float64 round-off or standard errors of the Monte Carlo.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

import pyro_vae
from pyro_vae.errors import ConfigError
from pyro_vae.linear_gaussian import (
    simulate,
    elbo_estimator_variance,
    elbo_gaussian,
    em_step,
    linear_gaussian_vae,
    log_marginal,
    ml_solution,
    pca_parameters,
    posterior,
    set_exact_posterior,
    set_gaussian_posterior,
)
from pyro_vae.networks import NETWORKS
from pyro_vae.spec import ModelSpec

F64 = torch.float64
D, d, N, SIGMA = 5, 2, 200, 0.5




@pytest.fixture(scope="module")
def ppca():
    x, W, mu = simulate(N, D, d, SIGMA, seed=0)
    return W, mu, x


def total_loglik(x, W, mu, sigma) -> float:
    return float(log_marginal(x, W, mu, sigma).sum())


# -- closed forms ------------------------------------------------------------------------------
def test_log_marginal_matches_scipy(ppca):
    W, mu, x = ppca
    C = (W @ W.T + SIGMA**2 * torch.eye(D, dtype=F64)).numpy()
    expected = scipy.stats.multivariate_normal(mu.numpy(), C).logpdf(x.numpy())
    got = log_marginal(x, W, mu, SIGMA)
    assert got.shape == (N,) and got.dtype == F64
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)


def test_posterior_matches_joint_gaussian_conditional(ppca):
    """(z, x) is jointly Gaussian with Cov(z, x) = W^T, Cov(x) = C: E[z|x] = W^T C^-1 (x - mu), Cov = I - W^T C^-1 W."""
    W, mu, x = ppca
    C = W @ W.T + SIGMA**2 * torch.eye(D, dtype=F64)
    expected_loc = (W.T @ torch.linalg.solve(C, (x - mu).T)).T
    expected_cov = torch.eye(d, dtype=F64) - W.T @ torch.linalg.solve(C, W)
    loc, cov = posterior(x, W, mu, SIGMA)
    assert loc.shape == (N, d) and cov.shape == (d, d)
    torch.testing.assert_close(loc, expected_loc, rtol=0, atol=1e-12)
    torch.testing.assert_close(cov, expected_cov, rtol=0, atol=1e-12)


def test_elbo_gaussian_gap_is_kl_to_the_posterior(ppca):
    """log p(x) - ELBO(q) = KL(q || p(z | x)) for any q; zero at the exact posterior."""
    W, mu, x = ppca
    loc, cov = posterior(x, W, mu, SIGMA)
    lm = log_marginal(x, W, mu, SIGMA)
    torch.testing.assert_close(elbo_gaussian(x, W, mu, SIGMA, loc, cov), lm, rtol=0, atol=1e-10)

    q_loc = loc + torch.tensor([0.3, -0.2], dtype=F64)
    q_cov = torch.tensor([[0.05, 0.01], [0.01, 0.02]], dtype=F64)
    q = torch.distributions.MultivariateNormal(q_loc, q_cov)
    p = torch.distributions.MultivariateNormal(loc, cov)
    gap = lm - elbo_gaussian(x, W, mu, SIGMA, q_loc, q_cov)
    torch.testing.assert_close(gap, torch.distributions.kl_divergence(q, p), rtol=0, atol=1e-10)
    # a per-datapoint (N, d, d) covariance gives the same as the shared one
    per_point = elbo_gaussian(x, W, mu, SIGMA, q_loc, q_cov.expand(N, d, d))
    torch.testing.assert_close(per_point, lm - gap, rtol=0, atol=1e-10)


def test_ml_solution_beats_em_iterates_and_random_parameters(ppca):
    W0, mu0, x = ppca
    W_ml, mu_ml, s_ml = ml_solution(x, d)
    torch.testing.assert_close(mu_ml, x.mean(0))
    ll_ml = total_loglik(x, W_ml, mu_ml, s_ml)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        W_rand = torch.randn(D, d, generator=g, dtype=F64)
        assert total_loglik(x, W_rand, mu_ml, 0.1 + torch.rand(1, generator=g, dtype=F64)) < ll_ml
    assert total_loglik(x, W0, mu0, SIGMA) <= ll_ml  # the generating parameters are not better either
    # the ML solution is a fixed point of EM (up to a rotation of W, which leaves the likelihood unchanged)
    W1, s1 = em_step(x, W_ml, mu_ml, s_ml)
    assert total_loglik(x, W1, mu_ml, s1) == pytest.approx(ll_ml, abs=1e-8)
    torch.testing.assert_close(W1 @ W1.T, W_ml @ W_ml.T, rtol=0, atol=1e-8)


def test_em_log_likelihood_never_decreases_and_stays_below_ml(ppca):
    _, _, x = ppca
    mu = x.mean(0)
    W = torch.randn(D, d, generator=torch.Generator().manual_seed(2), dtype=F64)
    sigma = torch.tensor(2.0, dtype=F64)
    W_ml, _, s_ml = ml_solution(x, d)
    ll_ml = total_loglik(x, W_ml, mu, s_ml)
    history = [total_loglik(x, W, mu, sigma)]
    for _ in range(30):
        W, sigma = em_step(x, W, mu, sigma)
        history.append(total_loglik(x, W, mu, sigma))
    steps = np.diff(history)
    assert (steps >= -1e-9).all(), f"EM decreased the log-likelihood: {steps.min()}"
    assert history[-1] > history[0] + 1.0
    assert max(history) <= ll_ml + 1e-8


def test_elbo_estimator_variance_matches_direct_monte_carlo(ppca):
    """Closed-form Var_q of the single-sample estimators A and B vs their sample variance (4 SE)."""
    W, mu, x = ppca
    x = x[:4]
    loc, cov = posterior(x, W, mu, SIGMA)
    q_loc, q_cov = loc + 0.3, 0.5 * cov
    S = 20000
    g = torch.Generator().manual_seed(3)
    chol = torch.linalg.cholesky(q_cov)
    z = q_loc + torch.randn(S, *q_loc.shape, generator=g, dtype=F64) @ chol.T  # (S, n, d)
    log_lik = torch.distributions.Normal(z @ W.T + mu, SIGMA).log_prob(x).sum(-1)
    log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    q = torch.distributions.MultivariateNormal(q_loc, q_cov)
    est_a = log_lik + log_prior - q.log_prob(z)
    est_b = log_lik - torch.distributions.kl_divergence(q, torch.distributions.MultivariateNormal(torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64)))
    for name, est in (("A", est_a), ("B", est_b)):
        centered2 = (est - est.mean(0)) ** 2
        sample_var, se = centered2.mean(0), centered2.std(0) / math.sqrt(S)
        exact = elbo_estimator_variance(x, W, mu, SIGMA, q_loc, q_cov, name)
        z_scores = (sample_var - exact) / se
        assert z_scores.abs().max() < 4, (name, z_scores)
    # at the exact posterior estimator A has zero variance: log w = log p(x) for every z
    assert elbo_estimator_variance(x, W, mu, SIGMA, loc, cov, "A").abs().max() < 1e-9


def test_closed_forms_validate_shapes(ppca):
    W, mu, x = ppca
    with pytest.raises(ConfigError, match="features"):
        log_marginal(x[:, :3], W, mu, SIGMA)
    with pytest.raises(ConfigError, match="mu"):
        posterior(x, W, mu[:3], SIGMA)
    with pytest.raises(ConfigError, match="latent_dim"):
        ml_solution(x, D)
    with pytest.raises(ConfigError, match="estimator"):
        elbo_estimator_variance(x, W, mu, SIGMA, torch.zeros(N, d), torch.eye(d), "C")


# -- pPCA as a VAE -------------------------------------------------------------------------------
def test_linear_network_is_registered_and_usable_in_specs():
    assert "linear" in NETWORKS and "linear" in pyro_vae.REGISTRIES["network"]
    net = NETWORKS.build("linear", 3, 4, context=None, bias=False)
    assert isinstance(net, torch.nn.Linear) and net.bias is None
    assert net(torch.randn(7, 2, 3)).shape == (7, 2, 4)
    spec = ModelSpec(latent_dim=2, encoder={"name": "linear", "bias": True}, decoder="linear")
    assert spec.encoder.name == "linear"
    with pytest.raises(ConfigError, match="bias"):
        ModelSpec(encoder={"name": "linear", "hidden": 3})


def test_linear_gaussian_vae_is_the_ppca_model(ppca):
    W, mu, x = ppca
    vae = linear_gaussian_vae(W, mu, SIGMA)
    assert vae.decoder.weight.dtype == F64
    z = torch.randn(6, d, dtype=F64)
    px = vae.decode(z)
    torch.testing.assert_close(px.mean, z @ W.T + mu)
    assert float(vae.likelihood.sigma) == pytest.approx(SIGMA, abs=1e-12)  # exactly sigma, no floor added
    W2, mu2, s2 = pca_parameters(vae)
    torch.testing.assert_close(W2, W)
    torch.testing.assert_close(mu2, mu)
    assert float(s2) == pytest.approx(SIGMA, abs=1e-12)
    expected = torch.distributions.Normal(z @ W.T + mu, SIGMA).log_prob(x[:6]).sum(-1)
    torch.testing.assert_close(px.log_prob(x[:6]), expected)


@pytest.mark.parametrize("explicit", [True, False])
def test_set_exact_posterior_gives_the_exact_posterior(ppca, explicit):
    W, mu, x = ppca
    vae = linear_gaussian_vae(W, mu, SIGMA, guide="full_normal", seed=0)
    if explicit:
        set_exact_posterior(vae, W, mu, SIGMA)
    else:
        set_exact_posterior(vae)  # reads W, mu, sigma from the VAE
    loc, cov = posterior(x, W, mu, SIGMA)
    with torch.no_grad():
        q = vae.posterior(x)
    torch.testing.assert_close(q.mean, loc, rtol=0, atol=1e-5)
    torch.testing.assert_close(q.covariance_matrix, cov.expand(N, d, d), rtol=0, atol=1e-5)


def test_set_exact_posterior_in_float32(ppca):
    W, mu, x = ppca
    vae = linear_gaussian_vae(W.float(), mu.float(), SIGMA, seed=0)
    assert vae.decoder.weight.dtype == torch.float32
    set_exact_posterior(vae)
    loc, cov = posterior(x, W, mu, SIGMA)
    with torch.no_grad():
        q = vae.posterior(x.float())
    torch.testing.assert_close(q.mean.double(), loc, rtol=0, atol=1e-4)
    torch.testing.assert_close(q.covariance_matrix.double(), cov.expand(N, d, d), rtol=0, atol=1e-5)


def test_set_gaussian_posterior_diag_guide_and_refusals(ppca):
    W, mu, x = ppca
    vae = linear_gaussian_vae(W, mu, SIGMA, guide="diag_normal", seed=0)
    A = torch.randn(d, D, dtype=F64)
    b = torch.randn(d, dtype=F64)
    var = torch.tensor([0.3, 0.05], dtype=F64)
    set_gaussian_posterior(vae, A, b, torch.diag(var))
    with torch.no_grad():
        q = vae.posterior(x)
    torch.testing.assert_close(q.mean, x @ A.T + b, rtol=0, atol=1e-10)
    torch.testing.assert_close(q.variance, var.expand(N, d), rtol=0, atol=1e-10)
    with pytest.raises(ConfigError, match="full_normal"):
        set_exact_posterior(vae)  # the exact posterior covariance is not diagonal
    mlp_vae = pyro_vae.build_vae(data_dim=D, latent_dim=d, likelihood="gaussian", guide="full_normal", seed=0)
    with pytest.raises(ConfigError, match="linear"):
        set_exact_posterior(mlp_vae, W, mu, SIGMA)
