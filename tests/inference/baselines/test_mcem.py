"""Monte Carlo EM on probabilistic PCA, where the exact E-step, log p(x) and ML solution are known.

Tolerances:
* exact EM must reach the closed-form ML log-likelihood to 1e-4 nats per datapoint (the brief's
  target; EM converges linearly, so this is a matter of iterations) and never decrease it
  (float64 rounding of a mean of N log-densities allows ~1e-12).
* MCEM's theta is accepted when the likelihood-ratio test against the ML fit does not reject it
  at the 1% level: 2 N (l_ML - l_MCEM) < chi2_{k, 0.99}, k = 15 free parameters (W: D d, mu: D,
  sigma: 1, minus d(d-1)/2 = 1 for the rotation of W), i.e. a gap < 30.58 / 1000 = 0.031 nats
  per datapoint. This is the gap ML itself has to the true parameters at this N: a fit inside it
  is statistically as good as ML.
* Moments of chain states: 4 Monte Carlo standard errors (the states are independent draws).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from torch import nn

from inference.evaluate import log_likelihood
from inference.baselines import (
    Chains, EMResult, LocalGaussianGuide, chain_proposal, e_step, exact_em, fit_mcem, initial_chains, mcem_proposal,
    search_step_size,
)
from inference.mcmc import GaussianProposal
from pyro_vae import build_vae
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.linear_gaussian import (
    linear_gaussian_vae, log_marginal, marginal_covariance, ml_solution, pca_parameters, posterior,
)

D, d, N, SIGMA = 5, 2, 500, 0.5
F64 = torch.float64
K_FREE = D * d + D + 1 - d * (d - 1) // 2  # free parameters of pPCA with a learned sigma
CHI2_15_99 = 30.578  # 0.99 quantile of chi-squared with 15 degrees of freedom
LRT_GAP = CHI2_15_99 / (2 * N)  # largest log-likelihood gap per datapoint the LR test accepts at 1%


@pytest.fixture(scope="module")
def ppca():
    """N rows of pPCA with a known W, mu and sigma = 0.5."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(D, d, generator=g, dtype=F64)
    mu = torch.randn(D, generator=g, dtype=F64)
    x = torch.randn(N, d, generator=g, dtype=F64) @ W.T + mu + SIGMA * torch.randn(N, D, generator=g, dtype=F64)
    return x, W, mu


def learned_sigma_vae(seed: int) -> nn.Module:
    """pPCA as a VAE with random W (entries N(0, 0.3^2)), mu = 0 and one learned sigma starting at 1."""
    vae = build_vae(
        data_dim=D, latent_dim=d, prior="normal", likelihood={"name": "gaussian_learned", "shared": True, "init_sigma": 1.0},
        encoder="linear", decoder="linear", guide="full_normal", seed=seed,
    ).to(F64)
    g = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        vae.decoder.weight.copy_(0.3 * torch.randn(D, d, generator=g, dtype=F64))
        vae.decoder.bias.zero_()
    return vae


def mean_log_lik(x, vae) -> float:
    return float(log_marginal(x, *pca_parameters(vae)).mean())


# -- exact EM: the ground truth ---------------------------------------------------------------------------------
def test_exact_em_reaches_the_ml_log_likelihood_monotonically(ppca):
    x, _, _ = ppca
    W_ml, mu_ml, sigma_ml = ml_solution(x, d)
    ml = float(log_marginal(x, W_ml, mu_ml, sigma_ml).mean())
    result = exact_em(x, d, seed=0)
    assert isinstance(result, EMResult) and result.converged
    ll = torch.tensor(result.log_likelihood, dtype=F64)
    assert len(ll) == result.iterations + 1
    assert ll[-1] - ll[0] > 1.0  # a random start is far from the optimum
    assert bool((ll[1:] - ll[:-1] >= -1e-12).all()), (ll[1:] - ll[:-1]).min()
    assert abs(float(ll[-1]) - ml) < 1e-4
    assert float(ll[-1]) <= ml + 1e-9  # nothing beats the ML solution
    # the same model up to a rotation of W: the marginal covariance is the ML one
    C, C_ml = marginal_covariance(result.W, result.sigma), marginal_covariance(W_ml, sigma_ml)
    assert torch.allclose(C, C_ml, atol=1e-4) and torch.allclose(result.mu, mu_ml)


def test_exact_em_respects_init_and_iteration_cap(ppca):
    x, W, _ = ppca
    result = exact_em(x, d, init=(W, SIGMA), iterations=3, tol=0.0)
    assert result.iterations == 3 and not result.converged and len(result.log_likelihood) == 4
    assert result.log_likelihood[0] == pytest.approx(float(log_marginal(x, W, x.mean(0), SIGMA).mean()))
    with pytest.raises(ConfigError, match="latent_dim"):
        exact_em(x, D)
    with pytest.raises(ConfigError, match="init"):
        exact_em(x, d, init=(W[:, :1], SIGMA))


# -- MCEM -----------------------------------------------------------------------------------------------------
def test_mcem_reaches_the_ml_solution_of_ppca(ppca):
    """From a random theta (about 6 nats per datapoint below ML), 60 epochs of MCEM (one HMC
    transition of 10 leapfrog steps per E-step, Adam with a decaying rate) must end inside the
    likelihood-ratio tolerance of the ML fit (module docstring). Measured gap over seeds 0-4:
    0.001-0.0055 (0.0055 for this seed); without step-size jitter up to 0.052."""
    x, _, _ = ppca
    W_ml, mu_ml, sigma_ml = ml_solution(x, d)
    ml = float(log_marginal(x, W_ml, mu_ml, sigma_ml).mean())
    vae = learned_sigma_vae(seed=0)
    start = mean_log_lik(x, vae)
    encoder = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    result = fit_mcem(vae, x, epochs=60, lr=0.05, lr_decay=0.1, transitions_per_estep=1, seed=0, progress=False)
    end = mean_log_lik(x, result.vae)
    assert ml - start > 3.0
    assert ml - end < LRT_GAP, (ml - start, ml - end)
    assert result.stopped == "completed" and len(result.history) == 60
    assert result.modules["chains"].z.shape == (N, 1, d) and isinstance(result.modules["chains"].step_size, float)
    # the history: log p(x, z) per datapoint rises; the acceptance rate is held near 0.9
    first, last = result.history[0], result.history[-1]
    assert last.train_elbo > first.train_elbo + 3.0
    assert abs(last.stats["accept_rate"] - 0.9) < 0.05
    assert all(r.stats["batches"] == N // 100 for r in result.history)
    # samples_evaluated: per minibatch row, (L + 1) gradients of the E-step + 1 of the M-step, plus
    # (L + 1) per row of one minibatch for each transition of the initial step-size search
    search = result.samples_evaluated - 60 * N * (11 + 1)
    assert search > 0 and search % (100 * 11) == 0
    # theta moved, the encoder did not
    assert all(torch.equal(v, encoder[k]) for k, v in result.vae.encoder.state_dict().items())
    assert float(pca_parameters(result.vae)[2]) == pytest.approx(float(sigma_ml), abs=0.05)


@pytest.fixture(scope="module")
def exact_chains(ppca):
    """Theta = truth; S = 4 chains per row started at exact posterior draws (2000 independent states)."""
    x, W, mu = ppca
    vae = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    m, S = posterior(x, W, mu, SIGMA)
    L = torch.linalg.cholesky(S)
    g = torch.Generator().manual_seed(7)
    z0 = m.unsqueeze(1) + torch.randn(N, 4, d, generator=g, dtype=F64) @ L.T
    return vae, x, m, L, z0


def whitened(z, m, L):
    """r = L^-1 (z - m_i) for states z (N, S, d): exactly N(0, I) under the posterior."""
    return torch.linalg.solve_triangular(L, (z - m.unsqueeze(1)).reshape(-1, d).T, upper=False).T


def test_e_steps_leave_the_exact_posterior_invariant(exact_chains):
    """E-steps only (m_steps=0), frozen step size: the chain states must stay exact posterior draws.
    Whitened states r have mean 0 (se 1/sqrt(n)) and E[r_a r_b] = delta_ab (se sqrt((1 + delta_ab)/n))."""
    vae, x, m, L, z0 = exact_chains
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    result = fit_mcem(vae, x, epochs=8, m_steps=0, step_size=0.15, adapt_rate=0.0, num_samples_per_point=4,
                      init=z0, seed=1, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in vae.state_dict().items())  # theta fixed
    assert result.modules["chains"].step_size == 0.15
    rate = sum(r.stats["accept_rate"] for r in result.history) / len(result.history)
    assert 0.5 < rate < 0.999, rate  # the chains moved, with rejections
    moved = (result.modules["chains"].z - z0).norm(dim=-1) > 0
    assert float(moved.to(F64).mean()) > 0.99
    r = whitened(result.modules["chains"].z, m, L)
    n = r.shape[0]
    assert (r.mean(0).abs() < 4 / math.sqrt(n)).all(), r.mean(0)
    second = r.T @ r / n
    se = torch.sqrt((1 + torch.eye(d, dtype=F64)) / n)
    assert ((second - torch.eye(d, dtype=F64)).abs() < 4 * se).all(), second
    # the same statistic does reject states that are not posterior draws: the start, shifted by 0.2 sd
    shifted = whitened(z0 + 0.2 * L[:, 0], m, L)
    assert (shifted.mean(0).abs() > 4 / math.sqrt(n)).any()


def test_step_size_jitter_breaks_periodic_trajectories(exact_chains):
    """On a Gaussian posterior a leapfrog trajectory of length eps L = 2 pi sd_max returns (almost) to
    its start along the widest axis: lag-1 autocorrelation cos(L theta) ~ 0.99 there (theta =
    2 asin(eps / (2 sd_max)), the leapfrog rotation per step). Drawing eps from eps [0.5, 1.5]
    averages cos over a full period of trajectory lengths, E[cos] = sin(pi) / pi = 0 (exact
    dynamics; se of the estimate ~ 1 / sqrt(2000 x 10))."""
    vae, x, m, L, z0 = exact_chains
    evals, evecs = torch.linalg.eigh(L @ L.T)
    sd_max, axis = evals[-1].sqrt(), evecs[:, -1]
    eps = float(2 * math.pi * sd_max / 10)
    autocorr = {}
    for jitter in (0.0, 0.5):
        g = torch.Generator().manual_seed(4)
        z, total = z0, 0.0
        for _ in range(10):
            out = e_step(vae, x, z, eps, adapt_rate=0.0, jitter=jitter, generator=g)
            before, after = ((z - m.unsqueeze(1)) @ axis) / sd_max, ((out.z - m.unsqueeze(1)) @ axis) / sd_max
            total += float((before * after).mean()) / 10
            z = out.z
        autocorr[jitter] = total
    assert autocorr[0.0] > 0.8 and abs(autocorr[0.5]) < 0.2, autocorr


def test_step_size_adaptation_moves_acceptance_to_the_target(exact_chains):
    """From a far too small and a far too large step (no initial search), the global eps moves to the
    same region and the last epoch's mean acceptance (20 transitions x 25 chains; at the
    adaptation's equilibrium E[a] = target) is within 0.05 of the target 0.9; measured 0.886-0.905."""
    vae, x, m, L, z0 = exact_chains
    finals = []
    for start, first_check in ((1e-3, lambda a: a > 0.99), (3.0, lambda a: a < 0.5)):
        result = fit_mcem(vae, x, epochs=20, batch_size=25, m_steps=0, step_size=start, adapt_rate=0.2,
                          step_size_search=False, init=z0[:, 0], seed=2, progress=False)
        assert first_check(result.history[0].stats["accept_rate"]), result.history[0]
        assert abs(result.history[-1].stats["accept_rate"] - 0.9) < 0.05, result.history[-1]
        finals.append(result.modules["chains"].step_size)
    assert 0.5 < finals[0] / finals[1] < 2.0, finals  # near the same eps (it keeps fluctuating: rate 0.2)
    # per-datapoint step sizes: one per row, moving the same way
    result = fit_mcem(vae, x, epochs=30, batch_size=N, m_steps=0, step_size=0.02, step_size_mode="per_datapoint",
                      adapt_rate=0.2, step_size_search=False, init=z0[:, 0], seed=2, progress=False)
    assert result.modules["chains"].step_size.shape == (N,) and bool((result.modules["chains"].step_size > 0.02).all())
    assert result.history[0].stats["accept_rate"] > 0.99 and result.history[-1].stats["accept_rate"] < result.history[0].stats["accept_rate"]
    # the initial search puts eps within a factor 2 of the crossing point, from either side
    for start in (1e-3, 3.0):
        found = search_step_size(vae, x[:100], z0[:100, :1], start, generator=torch.Generator().manual_seed(3))
        assert 0.4 < found.step_size / finals[0] < 2.5, (start, found.step_size, finals[0])


def test_e_step_counts_gradients_and_keeps_shapes(exact_chains):
    vae, x, m, L, z0 = exact_chains
    out = e_step(vae, x[:10], z0[:10], torch.full((10,), 0.1, dtype=F64), hmc_steps=4, transitions=2,
                 generator=torch.Generator().manual_seed(0))
    assert out.z.shape == (10, 4, d) and out.step_size.shape == (10,) and out.accept_prob.shape == (10,)
    assert out.gradient_evals == 2 * 5 * 10 * 4
    with pytest.raises(ConfigError, match="chain states"):
        e_step(vae, x[:10], z0[:9], 0.1)


def test_same_seed_same_result_and_different_seed_differs(ppca):
    x, _, _ = ppca

    def run(seed):
        res = fit_mcem(learned_sigma_vae(seed=0), x[:200], epochs=3, lr=0.05, num_samples_per_point=2,
                       init="encoder", seed=seed, progress=False)
        return res, [(r.train_elbo, r.stats["accept_rate"], r.stats["step_size"]) for r in res.history]

    (a, ha), (b, hb), (c, hc) = run(5), run(5), run(6)
    assert ha == hb and torch.equal(a.modules["chains"].z, b.modules["chains"].z)
    assert all(torch.equal(v, b.vae.state_dict()[k]) for k, v in a.vae.state_dict().items())
    assert ha != hc and not torch.equal(a.modules["chains"].z, c.modules["chains"].z)


def test_budget_stops_early(ppca):
    x, _, _ = ppca
    result = fit_mcem(learned_sigma_vae(seed=0), x, epochs=1000, batch_size=50, budget_seconds=0.05, progress=False)
    assert result.stopped == "budget" and len(result.history) < 1000
    assert result.history[-1].stats["batches"] >= 1
    search = result.samples_evaluated - sum(r.stats["batches"] for r in result.history) * 50 * 12
    assert search > 0 and search % (50 * 11) == 0


class _BernoulliPrior(nn.Module):
    def forward(self):
        return dist.Bernoulli(probs=torch.full((d,), 0.5, dtype=F64)).to_event(1)


class _LogNormalPrior(nn.Module):
    def forward(self):
        return dist.LogNormal(torch.zeros(d, dtype=F64), torch.ones(d, dtype=F64)).to_event(1)


def test_unsupported_models_and_bad_settings_are_refused(ppca):
    x, W, mu = ppca
    vae = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    vae.prior = _BernoulliPrior()
    with pytest.raises(UnsupportedModelError, match="continuous"):
        fit_mcem(vae, x, epochs=1, progress=False)
    vae.prior = _LogNormalPrior()
    with pytest.raises(UnsupportedModelError, match="R\\^d"):
        fit_mcem(vae, x, epochs=1, progress=False)
    vae = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    for bad in (dict(epochs=0), dict(epochs=1, m_steps=-1), dict(epochs=1, target_accept=1.0),
                dict(epochs=1, step_size_mode="local"), dict(epochs=1, init="map"), dict(epochs=1, lr_decay=0.0)):
        with pytest.raises(ConfigError):
            fit_mcem(vae, x, progress=False, **bad)
    with pytest.raises(ConfigError, match="init tensor"):
        initial_chains(vae, x, 2, init=torch.zeros(N, 3, d, dtype=F64))


# -- scoring ------------------------------------------------------------------------------------------------------
def test_proposals_score_the_exact_log_likelihood(exact_chains):
    """At the true theta both proposals make the IS estimate match log p(x_i). Each per-datapoint
    estimate is a lower bound in expectation with bias ~ chi2(p || q) / (2K) (< 0.002 for a Gaussian
    q inflated 1.2x in d = 2, K = 100); the tolerance is that plus 4 standard errors of the mean."""
    vae, x, m, L, z0 = exact_chains
    rows = x[:100]
    exact = log_marginal(rows, *pca_parameters(vae))
    chains = Chains(z0[:100], 0.15, rows, hmc_steps=10, jitter=0.0, dynamic=False)
    q_chain = chain_proposal(vae, chains, draws=50)
    q_local = mcem_proposal(vae, rows, full_cov=True, steps=300, seed=0)
    assert isinstance(q_chain, GaussianProposal) and isinstance(q_local, LocalGaussianGuide)
    for guide in (q_chain, q_local.guide):
        est = log_likelihood(vae.model, guide, rows, num_samples=100, batch_size=len(rows), progress=False)
        diff = est.values - exact
        tol = 0.002 + 4 * float(diff.std()) / math.sqrt(len(rows))
        assert abs(float(diff.mean())) < tol, (float(diff.mean()), tol)


def test_dynamically_binarized_digits_run_and_chain_proposal_refuses():
    """A Bernoulli VAE on DataSplits with dynamic binarization: the chains follow fresh binarizations,
    log p(x, z) rises over three epochs (measured: by 6 nats; the noise of an epoch mean over 200 rows
    is ~0.7), the encoder is not trained, and chain_proposal is refused."""
    from pyro_vae.data import load_dataset

    data = load_dataset("digits", binarize="dynamic", max_train=200, seed=0)
    vae = build_vae(data_dim=data.feature_dim, latent_dim=2, prior="normal", likelihood="bernoulli", seed=0)
    encoder = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    result = fit_mcem(vae, data, epochs=3, batch_size=50, lr=0.01, init="encoder", seed=0, progress=False)
    assert result.modules["chains"].dynamic and result.modules["chains"].z.shape == (200, 1, 2)
    assert result.history[-1].train_elbo > result.history[0].train_elbo
    assert all(torch.equal(v, encoder[k]) for k, v in result.vae.encoder.state_dict().items())
    with pytest.raises(ConfigError, match="binariz"):
        chain_proposal(result.vae, result.modules["chains"])
