"""MCMC: exact latent posteriors of pPCA, sample stats, the fitted-Gaussian IS proposal, frozen
parameters, discrete-latent refusal, fully Bayesian runs, and the vectorized HMC transition.

Tolerances are 4 Monte Carlo standard errors, the standard errors coming from the sample
standard deviation and ArviZ's (mean) effective sample size of the draws.
"""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from inference.mcmc import (
    STAT_KEYS,
    BayesianPosterior,
    adapt_step_size,
    bayesian_linear_gaussian_model,
    check_continuous,
    fit_bayesian,
    sample_latents,
    vectorized_hmc_step,
)
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.linear_gaussian import simulate, linear_gaussian_vae, log_marginal, posterior

D, d, N, SIGMA = 4, 2, 20, 0.5
CHAINS, WARMUP, DRAWS = 2, 150, 250
F64 = torch.float64


def ess_mean(draws: np.ndarray) -> np.ndarray:
    """ArviZ's ESS for the mean of each coordinate of (chains, draws, ...) draws."""
    return az.ess(az.convert_to_dataset(np.asarray(draws)), method="mean")["x"].values




@pytest.fixture(scope="module")
def ppca():
    x, W, mu = simulate(N, D, d, SIGMA, seed=0)
    vae = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    return vae, x, W, mu


@pytest.fixture(scope="module")
def nuts_run(ppca):
    vae, x, _, _ = ppca
    return sample_latents(vae, x, num_samples=DRAWS, warmup=WARMUP, num_chains=CHAINS, seed=0, progress=False)


# -- exact posterior of pPCA ----------------------------------------------------------------------
def test_nuts_posterior_mean_matches_the_exact_posterior(ppca, nuts_run):
    _, x, W, mu = ppca
    loc, cov = posterior(x, W, mu, SIGMA)
    z = nuts_run.z.numpy()
    assert nuts_run.z.shape == (CHAINS, DRAWS, N, d)
    se = cov.diagonal().sqrt().numpy() / np.sqrt(ess_mean(z))  # (N, d): sd / sqrt(ESS)
    err = (nuts_run.posterior_mean() - loc).abs().numpy()
    assert (err < 4 * se).all(), (err / se).max()


def test_nuts_posterior_covariance_matches_the_exact_posterior(ppca, nuts_run):
    """Whiten with the exact posterior, r = L^-1 (z - m_i): E[r_a r_b] = delta_ab, pooled over datapoints."""
    _, x, W, mu = ppca
    loc, cov = posterior(x, W, mu, SIGMA)
    r = torch.linalg.solve_triangular(
        torch.linalg.cholesky(cov), (nuts_run.z - loc).unsqueeze(-1), upper=False
    ).squeeze(-1).numpy()  # (chains, draws, N, d)
    for a in range(d):
        for b in range(a, d):
            q = r[..., a] * r[..., b]  # (chains, draws, N)
            per_point_var = q.reshape(-1, N).var(0, ddof=1) / ess_mean(q)
            se = np.sqrt(per_point_var.sum()) / N
            assert abs(q.mean() - float(a == b)) < 4 * se, (a, b, q.mean(), se)
    # the per-datapoint covariance helper agrees with the pooled draws
    emp = nuts_run.posterior_cov()
    assert emp.shape == (N, d, d)
    torch.testing.assert_close(emp.mean(0), cov, atol=0.2 * float(cov.diagonal().max()), rtol=0)


def test_sample_stats_are_per_chain_and_draw(nuts_run):
    stats = nuts_run.sample_stats
    assert set(stats) == set(STAT_KEYS)
    for key in STAT_KEYS:
        assert stats[key].shape == (CHAINS, DRAWS), key
    assert stats["diverging"].dtype == bool
    assert ((stats["accept_prob"] >= 0) & (stats["accept_prob"] <= 1)).all()
    # mean acceptance after warm-up sits near NUTS's target 0.8 (loose: it is a tuning target, not a law)
    assert 0.6 < stats["accept_prob"].mean() < 0.98
    assert (stats["step_size"] > 0).all() and (stats["step_size"] == stats["step_size"][:, :1]).all()
    assert (stats["num_steps"] >= 1).all()
    assert nuts_run.num_gradient_evals >= stats["num_steps"].sum()
    assert np.isfinite(stats["lp"]).all()
    assert nuts_run.wall_time > 0 and nuts_run.kernel == "nuts"


def test_gaussian_proposal_scores_the_exact_log_marginal(ppca, nuts_run):
    """IS with the Gaussian fitted to the draws: log p_hat(x_i) within 4 IS standard errors of the exact value.

    Delta method: se_i = sd(w) / (mean(w) sqrt(K)). For q = N(m, 1.2^2 Sigma) and target N(m, Sigma)
    in d = 2, E_q[w^2] / E_q[w]^2 = (1.44 / sqrt(1.88))^2 = 1.10, so the relative ESS is about 0.91.
    """
    evaluate = pytest.importorskip("inference.evaluate", reason="inference/evaluate.py (the IS yardstick) is not there yet")
    vae, x, W, mu = ppca
    proposal = nuts_run.gaussian_proposal()
    K = 4000
    pyro.set_rng_seed(1)
    with torch.no_grad():
        log_w = evaluate.log_importance_weights(vae.model, proposal, x, K)  # (K, N)
    estimate = log_w.logsumexp(0) - math.log(K)
    w = (log_w - log_w.max(0).values).exp()
    se = w.std(0) / (w.mean(0) * math.sqrt(K))
    exact = log_marginal(x, W, mu, SIGMA)
    assert ((estimate - exact).abs() < 4 * se).all(), ((estimate - exact).abs() / se).max()
    rel_ess = (w.sum(0) ** 2 / (w**2).sum(0)) / K
    assert (rel_ess > 0.8).all(), rel_ess.min()
    # the yardstick itself, in chunks of rows (the proposal finds each row by value)
    ll = evaluate.log_likelihood(vae.model, proposal, x, num_samples=500, batch_size=7, progress=False)
    assert abs(ll.mean - float(exact.mean())) < 4 * float(se.max()) + 1e-3


def test_gaussian_proposal_site_plate_and_unknown_rows(ppca, nuts_run):
    _, x, _, _ = ppca
    proposal = nuts_run.gaussian_proposal(scale=1.0)
    torch.testing.assert_close(proposal.loc, nuts_run.posterior_mean())
    cov = proposal.scale_tril @ proposal.scale_tril.transpose(-1, -2)
    torch.testing.assert_close(cov, nuts_run.posterior_cov(), atol=1e-5, rtol=1e-4)
    trace = pyro.poutine.trace(proposal).get_trace(x[[3, 1, 3]])
    site = trace.nodes["z"]
    assert site["value"].shape == (3, d)
    assert [(f.name, f.dim, f.size) for f in site["cond_indep_stack"]] == [("data", -1, 3)]
    torch.testing.assert_close(site["fn"].mean, nuts_run.posterior_mean()[[3, 1, 3]])
    with pytest.raises(ConfigError, match="not among"):
        proposal(x[:2] + 0.123)


# -- frozen parameters, settings, unsupported models ---------------------------------------------------
def test_parameters_are_frozen_during_sampling_and_restored(ppca):
    vae, x, _, _ = ppca
    params = list(vae.parameters())
    params[0].requires_grad_(False)  # a mixed state must come back exactly
    before = [p.requires_grad for p in params]
    seen = []
    decode = vae.decode

    def spy(z):
        seen.append([p.requires_grad for p in params])
        return decode(z)

    vae.decode = spy
    try:
        res = sample_latents(vae, x[:3], num_samples=5, warmup=5, num_chains=1, kernel="hmc", num_steps=3, progress=False)
    finally:
        del vae.decode
    assert seen and not any(any(flags) for flags in seen)
    assert [p.requires_grad for p in params] == before
    assert res.kernel == "hmc" and res.z.shape == (1, 5, 3, d)
    assert (res.sample_stats["num_steps"] >= 1).all()
    # restored on an error too
    with pytest.raises(ConfigError, match="init tensor"):
        sample_latents(vae, x[:3], init=torch.zeros(5, 3, d, dtype=F64), progress=False)
    assert [p.requires_grad for p in params] == before
    params[0].requires_grad_(True)


def test_init_tensor_starts_each_chain_where_asked(ppca):
    vae, x, _, _ = ppca
    # with no warm-up and one leapfrog step of size 1e-3 every draw stays next to its start
    start = torch.stack([torch.full((2, d), -30.0), torch.full((2, d), 30.0)]).to(F64)
    res = sample_latents(
        vae, x[:2], num_samples=3, warmup=0, num_chains=2, kernel="hmc", step_size=1e-3, num_steps=1,
        init=start, progress=False,
    )
    torch.testing.assert_close(res.z, start.unsqueeze(1).expand_as(res.z), atol=0.1, rtol=0)


def test_bad_settings_raise_config_errors(ppca):
    vae, x, _, _ = ppca
    with pytest.raises(ConfigError, match="kernel"):
        sample_latents(vae, x, kernel="gibbs", progress=False)
    with pytest.raises(ConfigError, match="num_samples"):
        sample_latents(vae, x, num_samples=0, progress=False)
    with pytest.raises(ConfigError, match="init"):
        sample_latents(vae, x, init="posterior", progress=False)


class _BernoulliPrior(torch.nn.Module):
    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self):
        return dist.Bernoulli(probs=torch.full((self.latent_dim,), 0.5, dtype=F64)).to_event(1)


def test_discrete_latents_are_refused(ppca):
    _, x, W, mu = ppca
    vae = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    vae.prior = _BernoulliPrior(d)
    with pytest.raises(UnsupportedModelError, match="continuous"):
        sample_latents(vae, x, progress=False)

    def tiny(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    with pytest.raises(UnsupportedModelError, match="continuous"):
        fit_bayesian(tiny, torch.zeros(3), progress=False)
    with pytest.raises(UnsupportedModelError):
        check_continuous(tiny, torch.zeros(3))


# -- fully Bayesian -----------------------------------------------------------------------------------------
def _precision_model(x, a=2.0, b=1.0):
    """tau ~ Gamma(a, b); x_i ~ N(0, 1/tau). Conjugate: tau | x ~ Gamma(a + N/2, b + sum x_i^2 / 2)."""
    tau = pyro.sample("tau", dist.Gamma(torch.tensor(a, dtype=x.dtype), torch.tensor(b, dtype=x.dtype)))
    with pyro.plate("data", x.shape[0], dim=-1):
        pyro.sample("x", dist.Normal(0.0, tau.rsqrt()), obs=x)


def test_fit_bayesian_matches_a_conjugate_posterior_through_a_constrained_site():
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


# -- the vectorized HMC transition -------------------------------------------------------------------------
S_TRUE = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=F64)


def _gaussian_rows(n, seed):
    g = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(n, 2, generator=g, dtype=F64)
    prec = torch.linalg.inv(S_TRUE)

    def potential(z):
        r = z - means
        return 0.5 * ((r @ prec) * r).sum(-1)

    return means, potential, g


def test_vectorized_hmc_leaves_a_gaussian_invariant():
    """Rows start at exact draws of N(m_i, S); after 200 transitions they must still be exact draws:
    whitened r_i = L^-1 (z_i - m_i) has mean 0 (se 1/sqrt(n)) and E[r_a r_b] = delta_ab (se sqrt((1+delta)/n))."""
    n = 4000
    means, potential, g = _gaussian_rows(n, seed=0)
    L = torch.linalg.cholesky(S_TRUE)
    z = means + torch.randn(n, 2, generator=g, dtype=F64) @ L.T
    accepted = torch.zeros(n, dtype=F64)
    for _ in range(200):
        z, mask, prob = vectorized_hmc_step(potential, z, 0.45, 5, generator=g)
        accepted += mask.to(F64)
    assert 0.3 < float(accepted.mean()) / 200 < 0.999  # the chains moved, and some proposals were rejected
    r = torch.linalg.solve_triangular(L, (z - means).T, upper=False).T
    assert (r.mean(0).abs() < 4 / math.sqrt(n)).all(), r.mean(0)
    second = r.T @ r / n
    se = torch.sqrt((1 + torch.eye(2, dtype=F64)) / n)
    assert ((second - torch.eye(2, dtype=F64)).abs() < 4 * se).all(), second


def test_vectorized_hmc_accept_rate_responds_to_step_size():
    n = 2000
    means, potential, g = _gaussian_rows(n, seed=1)
    z = means.clone()
    rates = []
    for eps in (0.01, 0.3, 0.9):
        _, mask, prob = vectorized_hmc_step(potential, z, eps, 10, generator=g)
        assert mask.shape == prob.shape == (n,) and mask.dtype == torch.bool
        rates.append(float(prob.mean()))
    assert rates[0] > 0.999 and rates[0] > rates[1] > rates[2], rates
    # per-row step sizes: the rows with a huge step reject, the others accept
    eps = torch.where(torch.arange(n) % 2 == 0, 0.01, 5.0).to(F64)
    _, mask, prob = vectorized_hmc_step(potential, z, eps, 10, generator=g)
    assert float(prob[0::2].mean()) > 0.99 and float(prob[1::2].mean()) < 0.05


def test_adapt_step_size_reaches_the_target_per_row_and_globally():
    n = 600
    scales = torch.tensor([0.1, 1.0, 3.0], dtype=F64).repeat_interleave(n // 3)
    g = torch.Generator().manual_seed(2)

    def potential(z):
        return 0.5 * (z / scales.unsqueeze(-1)).pow(2).sum(-1)

    z = scales.unsqueeze(-1) * torch.randn(n, 2, generator=g, dtype=F64)
    eps = torch.ones(n, dtype=F64)
    late = []
    for t in range(400):
        z, _, prob = vectorized_hmc_step(potential, z, eps, 3, generator=g)
        eps = adapt_step_size(eps, prob, target=0.9, rate=0.1)
        if t >= 300:
            late.append(prob)
    late = torch.stack(late).mean(0)
    group_eps = eps.reshape(3, -1).median(1).values
    assert group_eps[0] < group_eps[1] < group_eps[2], group_eps  # steps scale with the posterior width
    assert (late.reshape(3, -1).mean(1) - 0.9).abs().max() < 0.05
    new = adapt_step_size(0.5, torch.tensor([1.0, 1.0]), target=0.9, rate=0.1)
    assert isinstance(new, float) and new > 0.5
    assert adapt_step_size(0.5, torch.tensor([0.0]), target=0.9) < 0.5
