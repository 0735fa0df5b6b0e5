"""Fully Bayesian NUTS (inference.mcmc.bayesian): a conjugate posterior through a constrained site,
Bayesian pPCA with its per-datapoint log-likelihood, and the refusal of discrete latents.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference.mcmc import (
    STAT_KEYS,
    BayesianPosterior,
    bayesian_linear_gaussian_model,
    check_continuous,
    fit_bayesian,
)
from pyro_vae.errors import UnsupportedModelError

F64 = torch.float64


def _precision_model(x, a=2.0, b=1.0):
    """tau ~ Gamma(a, b); x_i ~ N(0, 1/tau). Conjugate: tau | x ~ Gamma(a + N/2, b + sum x_i^2 / 2)."""
    tau = pyro.sample("tau", dist.Gamma(torch.tensor(a, dtype=x.dtype), torch.tensor(b, dtype=x.dtype)))
    with pyro.plate("data", x.shape[0], dim=-1):
        pyro.sample("x", dist.Normal(0.0, tau.rsqrt()), obs=x)


def test_fit_bayesian_matches_a_conjugate_posterior_through_a_constrained_site(ess_mean):
    x = torch.randn(12, generator=torch.Generator().manual_seed(3), dtype=F64) * 0.7
    res = fit_bayesian(_precision_model, x, num_samples=200, warmup=100, num_chains=2, seed=0, progress=False)
    assert isinstance(res, BayesianPosterior)
    tau = res.samples["tau"]
    assert tau.shape == (2, 200) and bool((tau > 0).all())
    shape, rate = 2.0 + x.numel() / 2, 1.0 + float(x.pow(2).sum()) / 2
    exact_mean, exact_sd = shape / rate, math.sqrt(shape) / rate
    se = exact_sd / math.sqrt(float(ess_mean(tau.numpy())))
    assert abs(float(tau.mean()) - exact_mean) < 4 * se
    # per-datapoint log-likelihood: log N(x_i; 0, 1/tau^(s))
    assert res.log_likelihood.shape == (2, 200, 12)
    expected = dist.Normal(0.0, tau.rsqrt().unsqueeze(-1)).log_prob(x)
    torch.testing.assert_close(res.log_likelihood, expected)
    for key in STAT_KEYS:
        assert res.sample_stats[key].shape == (2, 200)


def test_fit_bayesian_linear_gaussian_returns_draws_and_pointwise_log_likelihood():
    g = torch.Generator().manual_seed(4)
    n, dim, k, sigma = 8, 3, 1, 0.5
    x = torch.randn(n, k, generator=g, dtype=F64) @ torch.randn(k, dim, generator=g, dtype=F64)
    x = x + sigma * torch.randn(n, dim, generator=g, dtype=F64)
    res = fit_bayesian(
        bayesian_linear_gaussian_model, x, model_kwargs=dict(latent_dim=k, sigma=sigma),
        num_samples=30, warmup=30, num_chains=2, max_tree_depth=4, seed=0, progress=False,
    )
    S = res.samples
    assert S["W"].shape == (2, 30, dim, k) and S["mu"].shape == (2, 30, dim) and S["z"].shape == (2, 30, n, k)
    assert res.log_likelihood.shape == (2, 30, n)
    mean = S["z"] @ S["W"].transpose(-1, -2) + S["mu"].unsqueeze(-2)  # (chains, draws, n, dim)
    expected = dist.Normal(mean, sigma).log_prob(x).sum(-1)
    torch.testing.assert_close(res.log_likelihood, expected)


def test_discrete_latents_are_refused_by_fit_bayesian():
    def tiny(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    with pytest.raises(UnsupportedModelError, match="continuous"):
        fit_bayesian(tiny, torch.zeros(3), progress=False)
    with pytest.raises(UnsupportedModelError):
        check_continuous(tiny, torch.zeros(3))
