"""Completion by inference on pPCA, where p(x_miss | x_obs) is the Gaussian conditional of N(mu, W W^T + sigma^2 I).

One row is completed n times in parallel (n copies in the data plate, whose posteriors are independent);
one draw per copy gives n independent draws. With exact moments m, Sigma the Monte Carlo standard
errors are sqrt(Sigma_jj / n) for a mean and sqrt((Sigma_jj Sigma_kk + Sigma_jk^2) / n) for a
covariance entry; each check is within 5 of them.
"""

from __future__ import annotations

import pytest
import torch

from inference.completion.samplers import complete_by_inference
from pyro_vae import ConfigError
from pyro_vae.linear_gaussian import linear_gaussian_vae, marginal_covariance, posterior, set_exact_posterior, simulate
from pyro_vae.masks import average_pool
from pyro_vae.observation import LowResolution, ObservedPart

D, d, SIGMA = 6, 2, 0.5
MASK = torch.tensor([True, True, False, True, False, False])


@pytest.fixture(scope="module")
def ppca():
    x, W, mu = simulate(5, D, d, SIGMA, seed=3)
    vae = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    set_exact_posterior(vae)  # q(z | x) exact for complete x: a good but not exact proposal given x_obs
    C = marginal_covariance(W, SIGMA)
    o, m = MASK, ~MASK
    gain = C[m][:, o] @ torch.linalg.inv(C[o][:, o])
    row = x[0]
    mean = mu[m] + gain @ (row[o] - mu[o])
    cov = C[m][:, m] - gain @ C[o][:, m]
    return vae, row, mean, cov


def check_moments(draws, mean, cov):
    n = draws.shape[0]
    sd_mean = (cov.diagonal() / n).sqrt()
    assert ((draws.mean(0) - mean).abs() <= 5 * sd_mean).all(), (draws.mean(0), mean, sd_mean)
    sd_cov = ((torch.outer(cov.diagonal(), cov.diagonal()) + cov**2) / n).sqrt()
    assert ((torch.cov(draws.T) - cov).abs() <= 5 * sd_cov).all(), (torch.cov(draws.T), cov, sd_cov)


@pytest.mark.parametrize("method", ["mwg", "nuts", "row_nuts", "sir", "sir in blocks", "local_vi"])
def test_completion_matches_the_exact_gaussian_conditional(ppca, method, monkeypatch):
    """'sir in blocks': the rows resampled in 6 blocks of 100 (the memory bound of sir on many rows)."""
    if method == "sir in blocks":
        import inference.completion.samplers as samplers

        monkeypatch.setattr(samplers, "SIR_FLOATS", 2000 * D * 100)
        method = "sir"
    vae, row, mean, cov = ppca
    n = 600
    x = row.expand(n, D).clone()
    x[:, ~MASK] = 99.0  # missing entries are never read
    obs = ObservedPart(vae, MASK)
    out = complete_by_inference(obs, x, method=method, num_samples=1, burn_in=30, warmup=150, proposals=2000, seed=1)
    assert torch.equal(out.draws[0][:, MASK], x[:, MASK])
    check_moments(out.draws[0][:, ~MASK], mean, cov)
    if method == "mwg":
        assert 0.05 < out.accept_rate <= 1.0


def test_the_naive_fill_is_biased_on_the_same_problem(ppca):
    """Guard on the check: the encoder on zero-filled rows is not p(z | x_obs), and the moment check sees it."""
    vae, row, mean, cov = ppca
    x = row.expand(600, D).clone()
    out = complete_by_inference(ObservedPart(vae, MASK), x, method="naive", num_samples=1, seed=1)
    with pytest.raises(AssertionError):
        check_moments(out.draws[0][:, ~MASK], mean, cov)


def test_gibbs_methods_need_a_mask_and_bad_settings_are_named():
    x, W, mu = simulate(4, 16, 2, 0.1, seed=0)
    vae = linear_gaussian_vae(W, mu, 0.1, seed=0)
    low = LowResolution(vae, (4, 4), 2)
    with pytest.raises(ConfigError, match="method 'mwg' completes missing features of a mask"):
        complete_by_inference(low, torch.zeros(3, 4, dtype=torch.float64), method="mwg")
    with pytest.raises(ConfigError, match="method='gibbs' is not valid"):
        complete_by_inference(low, torch.zeros(3, 4, dtype=torch.float64), method="gibbs")
    out = complete_by_inference(low, torch.zeros(3, 4, dtype=torch.float64), method="sir", num_samples=2, proposals=50)
    assert out.draws.shape == (2, 3, 16)


@pytest.mark.parametrize("method", ["sir", "local_vi", "nuts", "row_nuts", "naive"])
def test_super_resolution_matches_the_exact_gaussian_conditional(method):
    """pPCA seen through 2 x 2 average pooling, x_lr = A^T (W z + mu) + s eps, is linear-Gaussian again
    (W' = A^T W, mu' = A^T mu, noise s): p(z | x_lr) = N(m, S) in closed form, and a completion
    x ~ p(x | z) has mean W m + mu and covariance W S W^T + sigma^2 I. 600 copies of one low-resolution
    row, one completion each, match these within 5 Monte Carlo standard errors (module docstring). Guard: the
    naive method (the encoder on the upsampled image, not p(z | x_lr)) fails the same check."""
    _, W, mu = simulate(4, 16, 2, 0.3, seed=0)
    vae = linear_gaussian_vae(W, mu, 0.3, seed=0)
    set_exact_posterior(vae)  # exact for a full image; the encoder sees the upsampled x_lr here
    s = 0.2
    low = LowResolution(vae, (4, 4), 2, sigma=s)
    A = average_pool(torch.eye(16, dtype=torch.float64), (4, 4), 2)  # (16, 4): x_lr = x @ A
    g = torch.Generator().manual_seed(5)
    z0 = torch.randn(1, 2, generator=g, dtype=torch.float64)
    x_lr = (z0 @ W.T + mu) @ A + s * torch.randn(1, 4, generator=g, dtype=torch.float64)
    m, S = posterior(x_lr, A.T @ W, A.T @ mu, s)
    mean, cov = (W @ m[0] + mu), W @ S @ W.T + 0.3**2 * torch.eye(16, dtype=torch.float64)
    out = complete_by_inference(low, x_lr.expand(600, 4).clone(), method=method, num_samples=1, warmup=150,
                                proposals=2000, seed=1)
    if method == "naive":
        with pytest.raises(AssertionError):
            check_moments(out.draws[0], mean, cov)
    else:
        check_moments(out.draws[0], mean, cov)
