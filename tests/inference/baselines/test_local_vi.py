"""Local (non-amortized) VI: exact answers on pPCA, semi-amortized refinement, training on digits.

On pPCA the posterior p(z | x_i) = N(m_i, S) and log p(x_i) are known in closed form, and so
is the ELBO of any Gaussian q (``linear_gaussian.elbo_gaussian``), so the fitted q_i are
checked without Monte Carlo error: the gap log p(x_i) - ELBO_i is exactly KL(q_i || p(z | x_i)).
"""

from __future__ import annotations

import copy
import functools
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO

from inference.evaluate import elbo_samples, log_likelihood
from inference.baselines import (
    LocalGaussianGuide, final_elbo, fit_local, fit_local_vi, initial_guide,
)
from pyro_vae import build_vae
from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.rng import seeded
from pyro_vae.linear_gaussian import (
    elbo_gaussian, linear_gaussian_vae, log_marginal, pca_parameters, posterior, set_gaussian_posterior,
)

D, d, N, SIGMA = 5, 2, 40, 0.7
STEPS = 500  # fit_local's default
GAP_TOL = 0.01  # nats: the target for the gap KL(q_i || p(z | x_i)) when the family holds the posterior


def ppca_problem(seed=0):
    """pPCA with strongly correlated columns of W (posterior correlation ~ -0.87), N rows drawn from it."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, d, generator=g)
    W[:, 1] = 0.8 * W[:, 0] + 0.6 * W[:, 1]
    mu = torch.randn(D, generator=g)
    x = torch.randn(N, d, generator=g) @ W.T + mu + SIGMA * torch.randn(N, D, generator=g)
    vae = linear_gaussian_vae(W, mu, SIGMA, guide="diag_normal", seed=0)
    return vae, x


def exact(vae, x):
    W, mu, sigma = pca_parameters(vae)
    m, S = posterior(x, W, mu, sigma)
    return (W, mu, sigma), log_marginal(x, W, mu, sigma), m, S


def exact_elbo(vae, x, q_loc, q_cov):
    W, mu, sigma = pca_parameters(vae)
    return elbo_gaussian(x, W, mu, sigma, q_loc, q_cov)


def best_diagonal_kl(S):
    """min over diagonal Gaussians q of KL(q || N(m, S)) = 1/2 [log|S| + sum_j log (S^-1)_jj]."""
    P = torch.linalg.inv(S)
    return 0.5 * (torch.logdet(S) + P.diagonal().log().sum())


def mc_sd_of_history(vae, guide, x, num_particles):
    """Monte Carlo sd of (1/N) sum_i (1/K) sum_k L^B_ik, the quantity recorded in elbo_history."""
    with torch.no_grad():
        var = elbo_samples(vae.model, functools.partial(guide.guide, idx=torch.arange(x.shape[0])), x, "B", 256).var(0)
    return float(var.sum().div(num_particles).sqrt() / x.shape[0])


@pytest.fixture(scope="module")
def full_fit():
    vae, x = ppca_problem()
    vae.encoder.weight.requires_grad_(False)  # mixed flags: both values must come back
    flags = [p.requires_grad for p in vae.parameters()]
    state = copy.deepcopy(vae.state_dict())
    fit = fit_local(vae, x, full_cov=True, seed=0, progress=False)
    return vae, x, fit, flags, state


# -- full covariance: the family holds the posterior ------------------------------------------------
def test_full_cov_recovers_the_exact_posterior(full_fit):
    vae, x, fit, _, _ = full_fit
    _, lp, m, S = exact(vae, x)
    loc, cov = fit.guide.moments()
    gap = lp - exact_elbo(vae, x, loc, cov)  # = KL(q_i || p(z | x_i)) exactly
    assert float(gap.min()) > -1e-6
    assert float(gap.max()) < GAP_TOL, gap.max()
    # KL <= eps bounds each part: 1/2 (m_q - m)^T S^-1 (m_q - m) <= eps and, for the eigenvalues
    # r of S^-1/2 S_q S^-1/2, 1/2 (r - 1 - log r) <= eps, i.e. |r - 1| < 2 sqrt(eps) (to first order).
    P = torch.linalg.inv(S)
    err = loc.double() - m
    assert float(torch.einsum("ni,ij,nj->n", err, P, err).max()) <= 2 * GAP_TOL
    white = torch.linalg.cholesky(P)
    ratios = torch.linalg.eigvalsh(white.T @ cov.double() @ white)
    assert float((ratios - 1).abs().max()) < 2 * math.sqrt(GAP_TOL) * 1.1
    # In absolute terms (posterior sds here ~ 0.45): means and covariances to ~1e-2.
    assert float(err.abs().max()) < 0.05 and float((cov.double() - S).abs().max()) < 0.03


def test_reported_elbo_and_history_are_unbiased_per_datapoint_estimates(full_fit):
    vae, x, fit, _, _ = full_fit
    loc, cov = fit.guide.moments()
    truth = exact_elbo(vae, x, loc, cov)
    diff = fit.elbo.values.double() - truth  # independent Monte Carlo errors, one per datapoint
    assert fit.elbo.n == N and fit.elbo.num_samples == 100
    assert abs(float(diff.mean())) <= 4 * float(diff.std()) / math.sqrt(N) + 1e-6
    # history[t] is the mean ELBO at step t with 8 particles: step 0 is the prior q_i = N(0, I).
    assert len(fit.elbo_history) == STEPS + 1 and fit.steps == STEPS
    start = initial_guide(vae, x, "prior", full_cov=True)
    start_truth = exact_elbo(vae, x, torch.zeros(N, d), torch.eye(d)).mean()
    sd0 = mc_sd_of_history(vae, start, x, 8)
    assert abs(fit.elbo_history[0] - float(start_truth)) < 5 * sd0, (fit.elbo_history[0], float(start_truth), sd0)
    sd_end = mc_sd_of_history(vae, fit.guide, x, 8)
    assert abs(fit.elbo_history[-1] - float(truth.mean())) < 5 * sd_end + 1e-4
    assert fit.samples_evaluated == STEPS * N * 8 and fit.wall_time > 0


def test_decoder_is_frozen_and_requires_grad_restored(full_fit):
    vae, _, _, flags, state = full_fit
    assert [p.requires_grad for p in vae.parameters()] == flags
    assert not vae.encoder.weight.requires_grad and vae.decoder.weight.requires_grad
    for key, value in vae.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert vae.training


def test_guide_pairs_with_the_model_and_the_yardstick(full_fit):
    vae, x, fit, _, _ = full_fit
    guide = fit.guide
    # Same sites and plate as the amortized guide.
    tr = poutine.trace(guide.guide).get_trace(x)
    assert [n for n, s in tr.nodes.items() if s["type"] == "sample"] == ["data", "z"]
    assert [(f.name, f.dim, f.size) for f in tr.nodes["z"]["cond_indep_stack"]] == [("data", -1, N)]
    # Minibatch scaling: 10 rows standing for a data set of 100 carry weight 100 / 10.
    idx = torch.arange(5, 15)
    elbo = TraceMeanField_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    g = functools.partial(guide.guide, idx=idx)
    pyro.set_rng_seed(1)
    small = elbo.differentiable_loss(vae.model, g, x[idx]).item()
    pyro.set_rng_seed(1)
    scaled = elbo.differentiable_loss(vae.model, g, x[idx], num_data=100).item()
    assert math.isclose(scaled, 10 * small, rel_tol=1e-5)
    # The yardstick slices x into chunks without idx: rows are found by value.
    _, lp, _, _ = exact(vae, x)
    est = log_likelihood(vae.model, guide, x, num_samples=200, batch_size=7, progress=False)
    diff = est.values.double() - lp
    # The proposal is within GAP_TOL of the posterior: E[IS_i] lies in [log p - GAP_TOL, log p].
    se = float(diff.std()) / math.sqrt(N)
    assert -GAP_TOL - 4 * se <= float(diff.mean()) <= 4 * se + 1e-5
    with pytest.raises(ConfigError, match="not one of the"):
        guide.guide(x[:3] + 100.0)
    with pytest.raises(ConfigError, match="idx"):
        LocalGaussianGuide(torch.zeros(N, d)).guide(x[:3])


# -- diagonal covariance: the gap is the KL of the best diagonal approximation -------------------
def test_diagonal_gap_is_the_kl_of_the_best_diagonal_gaussian():
    vae, x = ppca_problem()
    _, lp, m, S = exact(vae, x)
    kl_star = float(best_diagonal_kl(S))
    assert kl_star > 0.5  # correlated posterior: a diagonal q must pay a visible price
    fit = fit_local(vae, x, steps=STEPS, batch_size=20, seed=0, progress=False)  # 2 chunks of rows
    loc, cov = fit.guide.moments()
    gap = lp - exact_elbo(vae, x, loc, cov)
    assert float(gap.min()) >= kl_star - 1e-6  # no diagonal q beats the optimum
    assert float(gap.max()) <= kl_star + GAP_TOL, (float(gap.max()), kl_star)
    start_gap = lp - exact_elbo(vae, x, torch.zeros(N, d), torch.eye(d))
    assert bool((gap <= start_gap).all())


# -- semi-amortized: start at the encoder, refine per datapoint ---------------------------------------
def mediocre_encoder(vae, x, mean_gain=1.3, var_gain=3.0):
    """Set the linear encoder to q(z | x) = N(1.3 m(x) + b, 3 diag(1 / (S^-1)_jj)): amortized but off."""
    (W, mu, sigma), _, _, S = exact(vae, x)
    M = W.T @ W + sigma**2 * torch.eye(d, dtype=torch.float64)
    A = mean_gain * torch.linalg.solve(M, W.T)
    best_var = 1 / torch.linalg.inv(S).diagonal()  # the optimal diagonal q: exact mean, precision diagonal
    set_gaussian_posterior(vae, A, -A @ mu, torch.diag(var_gain * best_var))


def test_semi_amortized_starts_at_the_encoder_and_only_improves():
    vae, x = ppca_problem()
    mediocre_encoder(vae, x)
    q = vae.posterior(x)
    enc_loc, enc_cov = q.mean.detach(), torch.diag_embed(q.variance.detach())
    start = initial_guide(vae, x, "encoder")
    loc0, cov0 = start.moments()
    assert torch.allclose(loc0, enc_loc, atol=1e-5) and torch.allclose(cov0, enc_cov, rtol=1e-4, atol=1e-7)
    amortized = exact_elbo(vae, x, enc_loc, enc_cov)
    _, lp, _, S = exact(vae, x)
    kl_star = float(best_diagonal_kl(S))
    assert float((lp - amortized).mean()) > kl_star + 0.5  # an amortization gap worth closing
    fit = fit_local(vae, x, init="encoder", seed=0, progress=False)
    sd0 = mc_sd_of_history(vae, start, x, 8)
    assert abs(fit.elbo_history[0] - float(amortized.mean())) < 5 * sd0, (fit.elbo_history[0], float(amortized.mean()), sd0)
    loc, cov = fit.guide.moments()
    refined = exact_elbo(vae, x, loc, cov)
    assert bool((refined >= amortized).all())
    assert float((lp - refined).max()) <= kl_star + GAP_TOL


def test_semi_amortized_from_the_best_encoder_does_not_get_worse():
    vae, x = ppca_problem()
    mediocre_encoder(vae, x, mean_gain=1.0, var_gain=1.0)  # the best diagonal q for every x
    _, lp, _, S = exact(vae, x)
    q = vae.posterior(x)
    amortized = exact_elbo(vae, x, q.mean.detach(), torch.diag_embed(q.variance.detach()))
    assert float((lp - amortized).max()) < float(best_diagonal_kl(S)) + 1e-4
    fit = fit_local(vae, x, init="encoder", seed=1, progress=False)
    loc, cov = fit.guide.moments()
    refined = exact_elbo(vae, x, loc, cov)
    assert float((amortized - refined).max()) <= GAP_TOL  # stays at the optimum, up to the optimizer's precision


def test_bad_settings_are_refused():
    vae, x = ppca_problem()
    with pytest.raises(ConfigError, match="init"):
        fit_local(vae, x, init="posterior", progress=False)
    with pytest.raises(ConfigError, match="elbo"):
        fit_local(vae, x, elbo="iwae", progress=False)
    with pytest.raises(ConfigError, match="lr_decay"):
        fit_local(vae, x, lr_decay=0.0, progress=False)
    with pytest.raises(ConfigError, match="patience"):
        fit_local_vi(vae, x, epochs=1, patience=2, progress=False)


# -- fit_local_vi: joint training of theta and the q_i ------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", binarize="threshold", max_train=300)


def test_fit_local_vi_training_raises_the_elbo(digits):
    x = digits.train
    vae = build_vae(data_dim=digits.feature_dim, latent_dim=2, decoder={"name": "mlp", "hidden": [32]},
                    encoder={"name": "mlp", "hidden": [8]}, seed=0)
    before = copy.deepcopy(vae)
    result = fit_local_vi(vae, digits, epochs=15, lr=1e-2, batch_size=50, seed=0, progress=False)
    assert len(result.history) == 15 and result.history[-1].val_elbo is None
    assert result.samples_evaluated == 15 * x.shape[0]
    assert result.vae is vae and result.modules["local"].num_rows == x.shape[0]
    # Per-datapoint ELBO at the start (initial theta, q_i = p(z)) and at the end, same rows:
    # the paired differences are independent across datapoints, so their mean has standard
    # error sd / sqrt(n); demand an improvement far beyond it.
    torch.manual_seed(0)
    start = final_elbo(before, initial_guide(before, x, "prior"), x, num_particles=50)
    end = final_elbo(result.vae, result.modules["local"], x, num_particles=50)
    diff = end.values - start.values
    se = float(diff.std()) / math.sqrt(len(diff))
    assert float(diff.mean()) > 10 * se and float(diff.mean()) > 1.0, (start, end, se)
    assert result.history[-1].train_elbo > result.history[0].train_elbo


def test_fit_local_vi_builds_a_vae_from_a_spec(digits):
    spec = {"latent_dim": 2, "likelihood": "bernoulli", "decoder": {"name": "mlp", "hidden": [8]},
            "encoder": {"name": "mlp", "hidden": [8]}}
    result = fit_local_vi(spec, digits, {"epochs": 1, "batch_size": 100, "seed": 3}, full_cov=True, progress=False)
    assert result.vae.latent_dim == 2 and result.modules["local"].full_cov
    assert math.isfinite(result.history[0].train_elbo)


def test_theta_follows_the_learning_rate_schedule(digits, monkeypatch):
    """train.lr_schedule applies to theta's optimizer as in svi.fit (the q_i keep local_lr)."""
    from inference.training import learning_rate
    from pyro_vae.spec import TrainSpec

    seen, step = [], torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    train = TrainSpec(epochs=3, lr=1e-2, lr_schedule="cosine", lr_final=1e-3, batch_size=100, seed=0)
    fit_local_vi(build_vae(data_dim=digits.feature_dim, latent_dim=2, seed=0), digits, train, progress=False)
    steps = math.ceil(digits.train.shape[0] / 100)
    assert seen == [learning_rate(train, e) for e in (1, 2, 3) for _ in range(steps)]
    assert seen[0] == pytest.approx(1e-2) and seen[-1] == pytest.approx(1e-3)


def test_the_seed_fixes_the_fit_and_what_is_drawn_after_it_is_not_the_fits_noise():
    """A proposal fitted with seed s, then importance samples drawn in a block seeded with s: the samples must
    not repeat the fit's draws (fit_local moves the global streams on past them)."""
    vae, x = ppca_problem()
    fits, after = [], []
    for caller in (1, 2):
        torch.manual_seed(caller)
        fits.append(fit_local(vae, x, steps=20, seed=3, progress=False))
        after.append(torch.randn(8))
    assert fits[0].elbo_history == fits[1].elbo_history and torch.equal(after[0], after[1])
    with seeded(3):
        fit_local(vae, x, steps=20, seed=3, progress=False)
        nested = torch.randn(8)
    torch.manual_seed(3)
    assert torch.equal(nested, after[0]) and not torch.equal(nested, torch.randn(8))
