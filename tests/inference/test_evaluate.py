"""Tests for inference.evaluate on probabilistic PCA, where every quantity has a closed form.

Model: D = 5, d = 2, sigma = 0.5, N = 200, float64 (pyro_vae.linear_gaussian). Guides:
- the exact posterior (full_normal): log w_ik = log p(x_i) for every particle;
- ``under``: exact posterior loc shifted by (0.3, -0.3), covariance 0.1 x exact (full_normal) —
  narrower than p(z|x), the usual failure of reverse-KL VI;
- ``over``: exact loc shifted by (0.3, -0.3), covariance 2 x exact (full_normal): over-dispersed;
- ``meanfield``: exact loc shifted by (0.3, -0.3), the optimal mean-field variances 1 / Lambda_jj
  (diag_normal).
Tolerances: 4 standard errors computed from the samples themselves, or float64 round-off where
the estimator has zero variance.
"""

from __future__ import annotations

import functools
import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import inference.evaluate as ev
from inference.evaluate import (
    Estimate,
    Evaluation,
    active_units,
    elbo,
    elbo_samples,
    evaluate_vae,
    kl_per_dimension,
    log_importance_weights,
    log_likelihood,
    plan_particle_batch,
)
from pyro_vae import build_vae
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.linear_gaussian import (
    simulate,
    elbo_estimator_variance,
    elbo_gaussian,
    linear_gaussian_vae,
    log_marginal,
    posterior,
    set_exact_posterior,
    set_gaussian_posterior,
)

F64 = torch.float64
D, d, N, SIGMA = 5, 2, 200, 0.5
SHIFT = torch.tensor([0.3, -0.3], dtype=F64)




@pytest.fixture(scope="module")
def ppca():
    x, W, mu = simulate(N, D, d, SIGMA, seed=0)
    return W, mu, x


def _affine(W, mu):
    M = W.T @ W + SIGMA**2 * torch.eye(d, dtype=F64)
    A = torch.linalg.solve(M, W.T)
    return A, -A @ mu


def make_guide(ppca, kind: str):
    """(vae, q_loc (N, d), q_cov (d, d)) with q(z|x) set to the named guide (see module docstring)."""
    W, mu, x = ppca
    loc, cov = posterior(x, W, mu, SIGMA)
    A, b = _affine(W, mu)
    if kind == "exact":
        vae = linear_gaussian_vae(W, mu, SIGMA, guide="full_normal", seed=0)
        set_exact_posterior(vae)
        return vae, loc, cov
    if kind == "under":
        q_cov, family = 0.1 * cov, "full_normal"
    elif kind == "over":
        q_cov, family = 2.0 * cov, "full_normal"
    elif kind == "meanfield":
        q_cov, family = torch.diag(1 / torch.linalg.inv(cov).diagonal()), "diag_normal"
    else:
        raise ValueError(kind)
    vae = linear_gaussian_vae(W, mu, SIGMA, guide=family, seed=0)
    set_gaussian_posterior(vae, A, b + SHIFT, q_cov)
    return vae, loc + SHIFT, q_cov


# -- importance weights and the ELBO estimators --------------------------------------------------
def test_log_importance_weights_exact_guide_are_log_marginal(ppca):
    W, mu, x = ppca
    vae, _, _ = make_guide(ppca, "exact")
    pyro.set_rng_seed(0)
    log_w = log_importance_weights(vae.model, vae.guide, x, 7)
    assert log_w.shape == (7, N)
    torch.testing.assert_close(log_w, log_marginal(x, W, mu, SIGMA).expand(7, N), rtol=0, atol=1e-8)


@pytest.mark.parametrize("kind", ["under", "meanfield"])
def test_estimators_a_and_b_are_unbiased(ppca, kind):
    """Mean of S single-sample estimates = closed-form ELBO within 4 SE, per datapoint and for the data mean."""
    W, mu, x = ppca
    vae, q_loc, q_cov = make_guide(ppca, kind)
    exact = elbo_gaussian(x, W, mu, SIGMA, q_loc, q_cov)
    assert (exact < log_marginal(x, W, mu, SIGMA) - 0.1).all()  # the guide really is not exact
    pyro.set_rng_seed(1)
    for estimator in ("A", "B"):
        few = elbo_samples(vae.model, vae.guide, x[:5], estimator, 20000)  # (S, 5)
        se = few.std(0) / math.sqrt(few.shape[0])
        z_scores = (few.mean(0) - exact[:5]) / se
        assert z_scores.abs().max() < 4, (estimator, z_scores)

        all_points = elbo_samples(vae.model, vae.guide, x, estimator, 2000)  # (S, N)
        dataset_mean = all_points.mean()
        dataset_se = all_points.var(0).sum().sqrt() / math.sqrt(all_points.shape[0]) / N
        z_score = (dataset_mean - exact.mean()) / dataset_se
        assert abs(z_score) < 4, (estimator, float(z_score))


def test_estimator_b_has_lower_variance_for_an_under_dispersed_guide(ppca):
    """Var B < Var A when q is narrower than p(z|x) (closed form: Var B / Var A <= 0.53 for every
    datapoint here); the sample variances match the closed forms within 4 SE."""
    W, mu, x = ppca
    vae, q_loc, q_cov = make_guide(ppca, "under")
    var_exact = {e: elbo_estimator_variance(x, W, mu, SIGMA, q_loc, q_cov, e) for e in "AB"}
    assert (var_exact["B"] < 0.6 * var_exact["A"]).all()
    pyro.set_rng_seed(2)
    S = 4000
    sample_var = {}
    for e in "AB":
        samples = elbo_samples(vae.model, vae.guide, x, e, S)
        c2 = (samples - samples.mean(0)) ** 2
        sample_var[e] = c2.mean(0)
        se_total = c2.var(0).sum().sqrt() / math.sqrt(S)
        assert abs(sample_var[e].sum() - var_exact[e].sum()) < 4 * se_total, e
    assert sample_var["B"].mean() < 0.6 * sample_var["A"].mean()
    assert (sample_var["B"] < sample_var["A"]).all()


def test_estimator_a_has_lower_variance_near_the_exact_posterior(ppca):
    """The ordering is not universal: for the mean-field guide, whose only error is a small shift
    and dropped correlation, A's log p(x,z) - log q(z) nearly cancels (closed form)."""
    W, mu, x = ppca
    vae, q_loc, q_cov = make_guide(ppca, "meanfield")
    var_a = elbo_estimator_variance(x, W, mu, SIGMA, q_loc, q_cov, "A")
    var_b = elbo_estimator_variance(x, W, mu, SIGMA, q_loc, q_cov, "B")
    pyro.set_rng_seed(3)
    a = elbo_samples(vae.model, vae.guide, x, "A", 2000).var(0)
    b = elbo_samples(vae.model, vae.guide, x, "B", 2000).var(0)
    assert a.mean() < b.mean() and var_a.mean() < var_b.mean()


def test_elbo_with_exact_guide_equals_log_marginal(ppca):
    W, mu, x = ppca
    vae, loc, cov = make_guide(ppca, "exact")
    lm = log_marginal(x, W, mu, SIGMA)
    torch.testing.assert_close(elbo_gaussian(x, W, mu, SIGMA, loc, cov), lm, rtol=0, atol=1e-10)
    pyro.set_rng_seed(4)
    est = elbo(vae.model, vae.guide, x, estimator="A", num_particles=10)
    assert isinstance(est, Estimate) and est.n == N and est.num_samples == 10
    torch.testing.assert_close(est.values, lm, rtol=0, atol=1e-4)
    assert est.mean == pytest.approx(float(lm.mean()), abs=1e-4)
    assert est.stderr == pytest.approx(float(lm.std() / math.sqrt(N)), rel=1e-6)
    # estimator B is unbiased but not zero-variance at the exact posterior
    est_b = elbo(vae.model, vae.guide, x, estimator="B", num_particles=400)
    per_sample_sd = math.sqrt(float(elbo_estimator_variance(x, W, mu, SIGMA, loc, cov, "B").mean()))
    assert abs(est_b.mean - float(lm.mean())) < 4 * per_sample_sd / math.sqrt(400 * N)


def test_estimator_b_falls_back_to_monte_carlo_without_a_registered_kl(ppca):
    """With a mixture prior (no analytic KL) B's term is log p(z) - log q(z): same draws, same values as A."""
    _, _, x = ppca
    vae = build_vae(
        data_dim=D, latent_dim=d, prior={"name": "mixture", "components": 3}, likelihood="gaussian",
        encoder="linear", decoder="linear", guide="diag_normal", seed=0,
    ).double()
    assert not vae.analytic_kl()
    pyro.set_rng_seed(5)
    a = elbo_samples(vae.model, vae.guide, x[:20], "A", 50)
    pyro.set_rng_seed(5)
    b = elbo_samples(vae.model, vae.guide, x[:20], "B", 50)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


# -- importance-sampled log p(x) -----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["over", "meanfield"])
def test_is_log_likelihood_converges_and_does_not_decrease_with_k(ppca, kind):
    """IS needs a proposal at least as wide as p(z|x): the under-dispersed guide is left out on purpose
    (its K = 1000 estimate is still ~1.9 nats low on this data)."""
    W, mu, x = ppca
    vae, _, _ = make_guide(ppca, kind)
    lm = log_marginal(x, W, mu, SIGMA)
    pyro.set_rng_seed(6)
    estimates = {k: log_likelihood(vae.model, vae.guide, x, num_samples=k, progress=False) for k in (10, 100, 1000)}
    assert abs(estimates[1000].mean - float(lm.mean())) < 0.5
    assert estimates[1000].mean <= float(lm.mean()) + 4 * float((estimates[1000].values - lm).std()) / math.sqrt(N)
    for small, large in ((10, 100), (100, 1000)):
        diff = estimates[large].values - estimates[small].values  # paired over datapoints
        assert diff.mean() > -2 * diff.std() / math.sqrt(N), (small, large)


@pytest.mark.parametrize("num_samples,particle_batch", [(1, None), (7, 3), (1000, None), (100, 16)])
def test_is_with_exact_guide_is_exact_for_any_k(ppca, num_samples, particle_batch):
    W, mu, x = ppca
    vae, _, _ = make_guide(ppca, "exact")
    est = log_likelihood(
        vae.model, vae.guide, x, num_samples=num_samples, batch_size=64, particle_batch=particle_batch, progress=False
    )
    assert est.num_samples == num_samples and est.n == N
    torch.testing.assert_close(est.values, log_marginal(x, W, mu, SIGMA), rtol=0, atol=1e-4)


def test_chunks_are_combined_with_a_running_logsumexp(ppca, monkeypatch):
    """Fake weights, recorded per call: the result must be logsumexp over all chunks of a row - log K."""
    _, _, x = ppca
    calls = []
    g = torch.Generator().manual_seed(7)

    def fake(model, guide, x_chunk, num_particles, **kwargs):
        log_w = 5 * torch.randn(num_particles, x_chunk.shape[0], generator=g, dtype=F64)
        calls.append((x_chunk, log_w))
        return log_w

    monkeypatch.setattr(ev, "log_importance_weights", fake)
    est = log_likelihood(None, None, x[:50], num_samples=23, batch_size=20, particle_batch=5, progress=False)
    assert len(calls) == 3 * 5  # ceil(50 / 20) row chunks x ceil(23 / 5) particle chunks
    assert sorted(c[1].shape[0] for c in calls) == sorted([5, 5, 5, 5, 3] * 3)
    expected = torch.empty(50, dtype=F64)
    for start in (0, 20, 40):
        rows = [lw for xc, lw in calls if torch.equal(xc, x[start : start + xc.shape[0]]) and xc.shape[0] == min(20, 50 - start)]
        expected[start : start + rows[0].shape[1]] = torch.cat(rows).logsumexp(0) - math.log(23)
    torch.testing.assert_close(est.values, expected)


def test_memory_plan_chunks_particles_for_a_big_data_dim(monkeypatch):
    assert plan_particle_batch(5000, 100, 1000) == 500  # 500 * 100 * 1000 = 5e7 floats
    assert plan_particle_batch(5000, 100, 5) == 5000
    assert plan_particle_batch(5000, 100, 10**9) == 1
    planned, seen = [], []
    real_plan = ev.plan_particle_batch

    def spy_plan(*args, **kwargs):
        planned.append(real_plan(*args, **kwargs))
        return planned[-1]

    def fake(model, guide, x_chunk, num_particles, **kwargs):
        seen.append((num_particles, x_chunk.shape[0]))
        return torch.zeros(num_particles, x_chunk.shape[0])

    monkeypatch.setattr(ev, "plan_particle_batch", spy_plan)
    monkeypatch.setattr(ev, "log_importance_weights", fake)
    x = torch.zeros(200, 1000)
    est = log_likelihood(None, None, x, num_samples=5000, batch_size=100, progress=False)
    assert planned == [500]
    assert max(k for k, _ in seen) == 500 and max(k * b * 1000 for k, b in seen) <= 5e7
    assert sum(k for k, _ in seen) == 2 * 5000
    torch.testing.assert_close(est.values, torch.zeros(200))  # logsumexp of 5000 zeros - log 5000


# -- scaling, generic guides, errors ---------------------------------------------------------------
def test_values_are_per_datapoint_whatever_num_data_and_beta(ppca):
    W, mu, x = ppca
    vae, _, _ = make_guide(ppca, "exact")
    lm = log_marginal(x, W, mu, SIGMA)
    for kwargs in ({}, {"num_data": 60000}, {"beta": 0.3}):
        est = log_likelihood(vae.model, vae.guide, x, num_samples=3, batch_size=50, progress=False, **kwargs)
        torch.testing.assert_close(est.values, lm, rtol=0, atol=1e-6)
        est_b = elbo(vae.model, vae.guide, x, estimator="A", num_particles=3, batch_size=50, **kwargs)
        torch.testing.assert_close(est_b.values, lm, rtol=0, atol=1e-6)


def test_a_per_datapoint_guide_is_scored_like_the_amortized_one(ppca):
    """A plain-function guide with one q_i per datapoint (as local VI produces) goes through unchanged."""
    W, mu, x = ppca
    vae, loc, cov = make_guide(ppca, "exact")

    def local_guide(x_batch, **kwargs):
        with pyro.plate("data", x_batch.shape[0], dim=-1):
            pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=cov))

    est = log_likelihood(vae.model, local_guide, x, num_samples=10, batch_size=N, progress=False)
    torch.testing.assert_close(est.values, log_marginal(x, W, mu, SIGMA), rtol=0, atol=1e-6)


def _two_level_model(x, s=SIGMA):
    """z1 ~ N(0, 1), z2 | z1 ~ N(z1, 1), x | z2 ~ N(z2, s^2): x ~ N(0, 2 + s^2)."""
    with pyro.plate("data", x.shape[0], dim=-1):
        z1 = pyro.sample("z1", dist.Normal(torch.zeros_like(x[:, 0]), 1.0))
        z2 = pyro.sample("z2", dist.Normal(z1, 1.0))
        pyro.sample("x", dist.Normal(z2, s), obs=x[:, 0])


def _two_level_guide(x, shift=0.0, s=SIGMA):
    """Exact posterior, sampled against the model's order: z2 | x ~ N(2x / (2 + s^2), 2 s^2 / (2 + s^2)),
    then z1 | z2 ~ N(z2 / 2, 1/2) (z2's mean moved by ``shift``)."""
    with pyro.plate("data", x.shape[0], dim=-1):
        v2 = 2 * s**2 / (2 + s**2)
        z2 = pyro.sample("z2", dist.Normal(2 * x[:, 0] / (2 + s**2) + shift, math.sqrt(v2)))
        pyro.sample("z1", dist.Normal(z2 / 2, math.sqrt(0.5)))


def _two_level_guide_model_order(x, shift=0.0, s=SIGMA):
    """Exact posterior in the model's order: z1 | x ~ N(x / (2 + s^2), 1 - 1 / (2 + s^2)),
    z2 | z1, x ~ N((z1 + x / s^2) / (1 + 1 / s^2), 1 / (1 + 1 / s^2)) (z1's mean moved by ``shift``)."""
    with pyro.plate("data", x.shape[0], dim=-1):
        z1 = pyro.sample("z1", dist.Normal(x[:, 0] / (2 + s**2) + shift, math.sqrt(1 - 1 / (2 + s**2))))
        prec = 1 + 1 / s**2
        pyro.sample("z2", dist.Normal((z1 + x[:, 0] / s**2) / prec, math.sqrt(1 / prec)))


@pytest.mark.parametrize("guide", [_two_level_guide, _two_level_guide_model_order])
def test_several_latent_sites_sharing_the_data_plate(guide):
    x = math.sqrt(2 + SIGMA**2) * torch.randn(100, 1, generator=torch.Generator().manual_seed(8), dtype=F64)
    exact = dist.Normal(torch.zeros(100, dtype=F64), math.sqrt(2 + SIGMA**2)).log_prob(x[:, 0])
    pyro.set_rng_seed(9)
    est = log_likelihood(_two_level_model, guide, x, num_samples=5, progress=False)
    torch.testing.assert_close(est.values, exact, rtol=0, atol=1e-10)
    # A (exact guide): zero variance; B: unbiased (an analytic KL only where the site's model
    # parents are sampled before it in the guide, else Monte Carlo)
    samples_a = elbo_samples(_two_level_model, guide, x, "A", 10)
    torch.testing.assert_close(samples_a, exact.expand(10, -1), rtol=0, atol=1e-10)
    samples_b = elbo_samples(_two_level_model, guide, x, "B", 4000)
    se = samples_b.var(0).sum().sqrt() / math.sqrt(4000) / x.shape[0]
    assert abs(samples_b.mean() - exact.mean()) < 4 * se
    # a shifted guide: the IS estimate still converges to log p(x)
    shifted = log_likelihood(_two_level_model, functools.partial(guide, shift=0.5), x, num_samples=2000, progress=False)
    assert abs(shifted.mean - float(exact.mean())) < 0.05


def test_errors_name_the_problem(ppca):
    _, _, x = ppca
    vae, _, _ = make_guide(ppca, "exact")

    def guide_without_z1(x, **kwargs):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z2", dist.Normal(torch.zeros(x.shape[0]), 1.0))

    x1 = x[:, :1]
    with pytest.raises(UnsupportedModelError, match="z1"):
        log_likelihood(_two_level_model, guide_without_z1, x1, num_samples=2, progress=False)

    def global_model(x, **kwargs):
        g = pyro.sample("g", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(g, 1.0), obs=x[:, 0])

    def global_guide(x, **kwargs):
        pyro.sample("g", dist.Normal(0.0, 1.0))

    with pytest.raises(UnsupportedModelError, match="data plate"):
        log_likelihood(global_model, global_guide, x1, num_samples=2, progress=False)
    with pytest.raises(ConfigError, match="estimator"):
        elbo(vae.model, vae.guide, x, estimator="C")
    with pytest.raises(ConfigError, match="num_samples"):
        log_likelihood(vae.model, vae.guide, x, num_samples=0, progress=False)


# -- latent-space summaries -------------------------------------------------------------------------
def test_active_units_reports_exactly_the_ignored_dimensions():
    g = torch.Generator().manual_seed(10)
    Dx, dz = 8, 4
    W = torch.randn(Dx, dz, generator=g, dtype=F64)
    mu = torch.randn(Dx, generator=g, dtype=F64)
    x = torch.randn(300, dz, generator=g, dtype=F64) @ W.T + mu + SIGMA * torch.randn(300, Dx, generator=g, dtype=F64)
    vae = linear_gaussian_vae(W, mu, SIGMA, guide="diag_normal", seed=0)
    M = W.T @ W + SIGMA**2 * torch.eye(dz, dtype=F64)
    A = torch.linalg.solve(M, W.T)
    b = -A @ mu
    A[[1, 3]] = 0.0  # the encoder ignores x for dimensions 1 and 3
    set_gaussian_posterior(vae, A, b, torch.diag(SIGMA**2 / M.diagonal()))
    count, variances = active_units(vae, x)
    assert count == 2
    assert variances[[1, 3]].abs().max() < 1e-20 and (variances[[0, 2]] > 0.01).all()
    torch.testing.assert_close(variances, (x @ A.T).var(0), rtol=1e-10, atol=1e-14)
    assert active_units(vae, x, threshold=float(variances.max()) + 1)[0] == 0


def test_kl_per_dimension_is_analytic_for_a_diagonal_guide_and_normal_prior(ppca):
    _, _, x = ppca
    vae, q_loc, q_cov = make_guide(ppca, "meanfield")
    var = q_cov.diagonal()
    expected = (0.5 * (q_loc**2 + var - 1 - var.log())).mean(0)
    torch.testing.assert_close(kl_per_dimension(vae, x), expected, rtol=0, atol=1e-10)


def test_kl_per_dimension_monte_carlo_for_a_mixture_prior(ppca):
    """No analytic KL(Normal || mixture): the MC estimate matches 1-D quadrature within 4 SE."""
    _, _, x = ppca
    vae = build_vae(
        data_dim=D, latent_dim=d, prior={"name": "mixture", "components": 3}, likelihood="gaussian",
        encoder="linear", decoder="linear", guide="diag_normal", seed=0,
    ).double()
    S = 500
    torch.manual_seed(11)
    mc = kl_per_dimension(vae, x, num_samples=S)
    with torch.no_grad():
        q = vae.posterior(x)
        m, s = q.mean, q.variance.sqrt()  # (N, d)
        prior = vae.prior.marginals()
        t = torch.linspace(-10, 10, 4001, dtype=F64)
        weights = torch.distributions.Normal(0.0, 1.0).log_prob(t).exp() * (t[1] - t[0])  # int phi(t) f dt
        z = m + s * t[:, None, None]  # (G, N, d)
        f = torch.distributions.Normal(m, s).log_prob(z) - prior.log_prob(z)
        first = torch.einsum("g,gnd->nd", weights, f)
        second = torch.einsum("g,gnd->nd", weights, f**2)
    exact = first.mean(0)
    se = (second - first**2).sum(0).sqrt() / math.sqrt(S) / x.shape[0]
    assert (exact > 0).all()
    assert ((mc - exact).abs() < 4 * se).all(), ((mc - exact) / se)


# -- the whole evaluation ----------------------------------------------------------------------------
def test_evaluate_vae_on_the_exact_posterior(ppca):
    W, mu, x = ppca
    vae, loc, cov = make_guide(ppca, "exact")
    vae.train()
    result = evaluate_vae(vae, x, num_samples=50, elbo_particles=20, seed=0, progress=False)
    assert isinstance(result, Evaluation) and vae.training
    lm = float(log_marginal(x, W, mu, SIGMA).mean())
    assert result.log_likelihood.mean == pytest.approx(lm, abs=1e-4)
    assert result.elbo_a.mean == pytest.approx(lm, abs=1e-4)
    assert abs(result.elbo_b.mean - lm) < 4 * result.elbo_b.stderr
    assert result.active_units == 2 and result.num_samples == 50
    kl_exact = (0.5 * (loc**2 + cov.diagonal() - 1 - cov.diagonal().log())).mean(0)
    assert result.kl_per_dim == pytest.approx(kl_exact.tolist(), abs=1e-8)
    metrics = json.loads(json.dumps(result.metrics()))
    assert metrics["log_likelihood"] == pytest.approx(lm, abs=1e-4) and len(metrics["kl_per_dim"]) == d
