"""NUTS over the latents of many datapoints (inference.mcmc.latents): the exact latent posteriors
of pPCA, per-draw sample statistics, frozen parameters, starting points, bad settings and the
refusal of discrete latents.
"""

from __future__ import annotations

import numpy as np
import pyro.distributions as dist
import pytest
import torch

from inference.mcmc import STAT_KEYS, sample_latents
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.linear_gaussian import linear_gaussian_vae, posterior

F64 = torch.float64


# -- exact posterior of pPCA ----------------------------------------------------------------------
def test_nuts_posterior_mean_matches_the_exact_posterior(ppca, nuts_run, nuts_settings, ess_mean):
    _, x, W, mu, sigma = ppca
    N, d = x.shape[0], W.shape[1]
    loc, cov = posterior(x, W, mu, sigma)
    z = nuts_run.z.numpy()
    assert nuts_run.z.shape == (nuts_settings["num_chains"], nuts_settings["num_samples"], N, d)
    se = cov.diagonal().sqrt().numpy() / np.sqrt(ess_mean(z))  # (N, d): sd / sqrt(ESS)
    err = (nuts_run.posterior_mean() - loc).abs().numpy()
    assert (err < 4 * se).all(), (err / se).max()


def test_nuts_posterior_covariance_matches_the_exact_posterior(ppca, nuts_run, ess_mean):
    """Whiten with the exact posterior, r = L^-1 (z - m_i): E[r_a r_b] = delta_ab, pooled over datapoints."""
    _, x, W, mu, sigma = ppca
    N, d = x.shape[0], W.shape[1]
    loc, cov = posterior(x, W, mu, sigma)
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


def test_sample_stats_are_per_chain_and_draw(nuts_run, nuts_settings):
    stats = nuts_run.sample_stats
    assert set(stats) == set(STAT_KEYS)
    for key in STAT_KEYS:
        assert stats[key].shape == (nuts_settings["num_chains"], nuts_settings["num_samples"]), key
    if nuts_run.kernel == "row_nuts":  # the rows' statistics, and per transition their count / mean / median / sum
        N = nuts_run.x.shape[0]
        for key, value in nuts_run.row_stats.items():
            assert value.shape == (nuts_settings["num_chains"], nuts_settings["num_samples"], N), key
        np.testing.assert_array_equal(stats["diverging"], nuts_run.row_stats["diverging"].sum(-1))
        np.testing.assert_allclose(stats["lp"], nuts_run.row_stats["lp"].sum(-1), rtol=1e-6)
        assert (nuts_run.row_stats["num_steps"] <= 2 ** (nuts_run.row_stats["tree_depth"] + 1) - 1).all()
    else:
        assert stats["diverging"].dtype == bool and nuts_run.row_stats is None
    assert ((stats["accept_prob"] >= 0) & (stats["accept_prob"] <= 1)).all()
    # mean acceptance after warm-up sits near NUTS's target 0.8 (loose: it is a tuning target, not a law)
    assert 0.6 < stats["accept_prob"].mean() < 0.98
    assert (stats["step_size"] > 0).all() and (stats["step_size"] == stats["step_size"][:, :1]).all()
    assert (stats["num_steps"] >= 1).all()
    assert nuts_run.num_gradient_evals >= stats["num_steps"].sum()
    assert np.isfinite(stats["lp"]).all()
    assert nuts_run.wall_time > 0 and nuts_run.kernel in ("nuts", "row_nuts")


# -- frozen parameters, settings, unsupported models ---------------------------------------------------
def test_parameters_are_frozen_during_sampling_and_restored(ppca):
    vae, x, W = ppca.vae, ppca.x, ppca.W
    d = W.shape[1]
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
    vae, x, d = ppca.vae, ppca.x, ppca.W.shape[1]
    # with no warm-up and one leapfrog step of size 1e-3 every draw stays next to its start
    start = torch.stack([torch.full((2, d), -30.0), torch.full((2, d), 30.0)]).to(F64)
    res = sample_latents(
        vae, x[:2], num_samples=3, warmup=0, num_chains=2, kernel="hmc", step_size=1e-3, num_steps=1,
        init=start, progress=False,
    )
    torch.testing.assert_close(res.z, start.unsqueeze(1).expand_as(res.z), atol=0.1, rtol=0)


def test_bad_settings_raise_config_errors(ppca):
    vae, x = ppca.vae, ppca.x
    with pytest.raises(ConfigError, match="kernel"):
        sample_latents(vae, x, kernel="gibbs", progress=False)
    with pytest.raises(ConfigError, match="num_samples"):
        sample_latents(vae, x, num_samples=0, progress=False)
    with pytest.raises(ConfigError, match="init"):
        sample_latents(vae, x, init="posterior", progress=False)
    for kernel in ("nuts", "row_nuts"):  # tuning values are named before any sampling
        for bad, match in ((dict(max_tree_depth=0), "max_tree_depth must be an integer >= 1, got 0"),
                           (dict(step_size=-1.0), "step_size must be a positive number"),
                           (dict(target_accept=1.5), r"target_accept must be in \(0, 1\), got 1.5"),
                           (dict(num_steps=2.5), "num_steps must be an integer")):
            with pytest.raises(ConfigError, match=match):
                sample_latents(vae, x, kernel=kernel, num_samples=2, warmup=2, progress=False, **bad)


class _BernoulliPrior(torch.nn.Module):
    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self):
        return dist.Bernoulli(probs=torch.full((self.latent_dim,), 0.5, dtype=F64)).to_event(1)


def test_discrete_latents_are_refused(ppca):
    _, x, W, mu, sigma = ppca
    vae = linear_gaussian_vae(W, mu, sigma, seed=0)
    vae.prior = _BernoulliPrior(W.shape[1])
    with pytest.raises(UnsupportedModelError, match="continuous"):
        sample_latents(vae, x, progress=False)
