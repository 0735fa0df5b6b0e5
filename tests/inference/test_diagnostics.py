"""ArviZ diagnostics, PSIS k-hat, inference gaps, VI-vs-MCMC, PPC and the `diagnose` command.

Reference model: probabilistic PCA, whose posterior p(z | x) = N(m_i, Sigma) and log p(x) are
known in closed form. Tolerances are 4 standard errors: of per-datapoint differences (Monte
Carlo estimates against exact values), of a median of k-hats, or of an importance-weighted
moment (from the PSIS effective sample size). One-sided tests are used where the math only
bounds a quantity (an IS estimate of log p(x) is a stochastic lower bound; the ELBO of a fitted
q* cannot exceed that of the optimal one).
"""

from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import pytest
import torch

from inference import diagnostics as dg
from inference.diagnostic_plots import plot_gaps, plot_khat_histogram, plot_kl_per_dimension, plot_posterior_overlay
from inference.local_vi import initial_guide
from inference.mcmc import BayesianPosterior, sample_latents
from inference.ppc import guide_draws, log_likelihood_draws, posterior_predictive_check
from inference.vi_quality import amortization_gaps, compare_draws, compare_to_mcmc
from pyro_vae.errors import ConfigError
from pyro_vae.linear_gaussian import (
    elbo_gaussian, linear_gaussian_vae, log_marginal, posterior, set_exact_posterior, set_gaussian_posterior,
)

F64 = torch.float64
D, d, N, SIGMA = 5, 2, 20, 0.5


def _data(n: int, seed: int = 0, sigma: float = SIGMA, correlated: bool = True):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, d, generator=g, dtype=F64)
    if correlated:  # the posterior covariance is then far from diagonal (a mean-field q cannot hold it)
        W[:, 1] += 0.8 * W[:, 0]
    mu = torch.randn(D, generator=g, dtype=F64)
    z = torch.randn(n, d, generator=g, dtype=F64)
    x = z @ W.T + mu + sigma * torch.randn(n, D, generator=g, dtype=F64)
    return W, mu, x


def _posterior_map(W, mu):
    """A = M^-1 W^T (the posterior mean is A (x - mu)) and the exact posterior covariance."""
    M = W.T @ W + SIGMA**2 * torch.eye(d, dtype=F64)
    A = torch.linalg.solve(M, W.T)
    return A, SIGMA**2 * torch.linalg.inv(M)


@pytest.fixture(scope="module")
def ppca():
    W, mu, x = _data(N)
    vae = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    set_exact_posterior(vae)
    return vae, x, W, mu


def _scaled_guide(W, mu, factor: float):
    """pPCA whose guide has the exact posterior mean and ``factor`` x the exact covariance."""
    vae = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    A, cov = _posterior_map(W, mu)
    set_gaussian_posterior(vae, A, -A @ mu, factor * cov)
    return vae


@pytest.fixture(scope="module")
def short_nuts(ppca):
    """Chains that did not mix: started at z = +5 and z = -5, no warm-up, 50 short (depth-2) NUTS transitions."""
    vae, x, _, _ = ppca
    init = torch.stack([torch.full((N, d), 5.0, dtype=F64), torch.full((N, d), -5.0, dtype=F64)])
    return sample_latents(vae, x, num_samples=50, warmup=0, num_chains=2, max_tree_depth=2, init=init, seed=0,
                          progress=False)


# -- conversion and netCDF ----------------------------------------------------------------------------------
def test_guide_and_mcmc_inference_data_share_dims_and_coords(ppca, short_nuts):
    vae, x, _, _ = ppca
    labels = np.arange(N) + 100
    ll = log_likelihood_draws(vae, x, short_nuts.z)
    mcmc = dg.latents_to_inference_data(short_nuts, log_likelihood=ll, datapoints=labels)
    guide = dg.guide_to_inference_data(vae, x, 30, datapoints=labels)
    local = dg.guide_to_inference_data(initial_guide(vae, x, "encoder"), x, 30, vae=vae, datapoints=labels)
    for idata in (mcmc, guide, local):
        z = idata.posterior["z"]
        assert z.dims == ("chain", "draw", "datapoint", "latent")
        assert list(z.coords["datapoint"].values) == list(labels)
        assert list(z.coords["latent"].values) == ["z0", "z1"]
        assert idata.log_likelihood["x"].dims == ("chain", "draw", "datapoint")
        assert idata.observed_data["x"].dims == ("datapoint", "feature")
    assert mcmc.posterior["z"].shape == (2, 50, N, d) and guide.posterior["z"].shape == (1, 30, N, d)
    assert guide.posterior_predictive["x"].dims == ("chain", "draw", "datapoint", "feature")
    assert set(mcmc.sample_stats.data_vars) == {"diverging", "acceptance_rate", "step_size", "n_steps", "lp"}
    # the log-likelihood group holds log p(x_i | z_i) of each draw
    z0 = torch.as_tensor(mcmc.posterior["z"].values[1, 7])
    expected = vae.decode(z0).log_prob(x).detach().numpy()
    np.testing.assert_allclose(mcmc.log_likelihood["x"].values[1, 7], expected, rtol=1e-12)


def test_guide_to_inference_data_needs_the_model_for_a_bare_guide(ppca):
    vae, x, _, _ = ppca
    local = initial_guide(vae, x, "encoder")
    with pytest.raises(ConfigError, match="vae="):
        dg.guide_to_inference_data(local.guide, x, 10)
    idata = dg.guide_to_inference_data(local.guide, x, 10, log_likelihood=False, posterior_predictive=False)
    assert set(idata.groups()) == {"posterior", "observed_data"}


def test_netcdf_round_trip_keeps_dims_coords_and_values(ppca, short_nuts, tmp_path):
    vae, x, _, _ = ppca
    idata = dg.latents_to_inference_data(
        short_nuts, log_likelihood=log_likelihood_draws(vae, x, short_nuts.z), datapoints=np.arange(N) * 3
    )
    path = dg.save_netcdf(idata, tmp_path / "sub" / "mcmc.nc")
    back = dg.load_netcdf(path)
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        a, b = idata[group], back[group]
        assert dict(a.sizes) == dict(b.sizes), group
        for name in a.data_vars:
            assert a[name].dims == b[name].dims
            assert a[name].dtype == b[name].dtype, (group, name)
            np.testing.assert_array_equal(a[name].values, b[name].values)
        for name in a.coords:
            np.testing.assert_array_equal(a[name].values, b[name].values)
    with pytest.raises(ConfigError, match="does not exist"):
        dg.load_netcdf(tmp_path / "missing.nc")


# -- convergence -------------------------------------------------------------------------------------------------
def test_rhat_flags_chains_that_did_not_mix(short_nuts):
    report = dg.convergence_checks(dg.latents_to_inference_data(short_nuts))
    assert not report.ok
    assert report.max_rhat > 1.1 and report.num_rhat_high > N * d // 2
    assert report.warnings[0].startswith(f"R-hat: {report.num_rhat_high} of {N * d} parameters")


def test_rhat_does_not_flag_well_mixed_chains(ppca):
    """Perfectly mixed chains: 2 x 1000 independent draws of the exact posterior. Split R-hat - 1 (bulk and
    folded) is then ~ (chi2_3 / 3 - 1) / (2 n) with n = 500 draws per split half: below 0.005 for each of the
    40 codes except with probability ~1e-3, so 1.01 must not be exceeded; ESS ~ 2000 >= 400."""
    vae, x, _, _ = ppca
    z = guide_draws(vae.guide, x, 2000, seed=4).reshape(2, 1000, N, d)
    report = dg.convergence_checks(dg.draws_to_inference_data(z))
    assert report.ok, str(report)
    assert report.max_rhat < 1.01 and report.min_ess_bulk > 400 and report.num_divergences == 0


@pytest.mark.slow
def test_nuts_inference_data_against_the_exact_posterior_guide():
    """NUTS draws vs draws of the exact-posterior guide through compare_to_mcmc. The standardized mean
    difference has s.e. sqrt(1/S + (mcse_mean/sd)^2), the sd ratio a relative s.e. sqrt(1/(2 S) + (mcse_sd/sd)^2),
    with the MCMC standard errors from ArviZ's summary. Uncorrelated columns of W keep NUTS cheap (about 7
    leapfrog steps per draw, vs 22 with the correlated posterior of the other tests).
    """
    W, mu, x = _data(N, correlated=False)
    vae = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    set_exact_posterior(vae)
    post = sample_latents(vae, x, num_samples=500, warmup=200, num_chains=2, seed=1, progress=False)
    mcmc = dg.latents_to_inference_data(post)
    report = dg.convergence_checks(mcmc)
    assert report.num_divergences == 0 and report.min_ess_bulk >= 400, str(report)
    summary = dg.mcmc_summary(mcmc, round_to="none")
    assert {"mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"} <= set(summary.columns)
    assert len(summary) == N * d
    S = 4000
    cmp = compare_to_mcmc(dg.guide_to_inference_data(vae, x, S, seed=3), mcmc)
    sd = summary["sd"].to_numpy().reshape(N, d)
    se_mean = np.sqrt(1 / S + (summary["mcse_mean"].to_numpy().reshape(N, d) / sd) ** 2)
    se_ratio = np.sqrt(1 / (2 * S) + (summary["mcse_sd"].to_numpy().reshape(N, d) / sd) ** 2)
    assert (np.abs(cmp.mean_difference) < 4 * se_mean).all(), np.abs(cmp.mean_difference / se_mean).max()
    assert (np.abs(cmp.sd_ratio - 1) < 4 * se_ratio).all(), np.abs((cmp.sd_ratio - 1) / se_ratio).max()


def _synthetic(offset: float, draws: int, divergent: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(2, draws, 3, 2))
    z[1] += offset
    stats = {"diverging": np.zeros((2, draws), bool)}
    stats["diverging"][0, :divergent] = True
    return dg.draws_to_inference_data(z, sample_stats=stats)


def test_convergence_report_warnings_name_the_problem_and_the_fix():
    good = dg.convergence_checks(_synthetic(0.0, 1000, 0))
    assert good.ok and good.warnings == () and "all checks passed" in str(good)
    bad = dg.convergence_checks(_synthetic(3.0, 100, 3))
    assert not bad.ok and len(bad.warnings) == 3
    rhat, ess, div = bad.warnings
    assert rhat.startswith("R-hat: 6 of 6 parameters have rank-normalized split R-hat > 1.01") and "run longer" in rhat
    assert ess.startswith("ESS: 6 of 6 parameters have bulk or tail ESS < 400") and "of 200 draws" in ess
    assert div.startswith("divergences: 3 of 200 transitions diverged") and "target_accept" in div
    assert bad.num_divergences == 3 and bad.num_parameters == 6 and "WARNING" in str(bad)
    strict = dg.convergence_checks(_synthetic(0.0, 1000, 0), ess_min=5000)
    assert not strict.ok and strict.warnings[0].startswith("ESS:")


# -- PSIS k-hat -------------------------------------------------------------------------------------------------
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
    vae = _scaled_guide(W, mu, 2.0)
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
    vae = _scaled_guide(W, mu, 0.05)
    res = dg.psis_khat(vae.model, vae.guide, x, S_IS)
    assert np.median(res.khat) > 0.7, res.khat
    assert res.fraction_bad > 0.5 and "unreliable" in res.summary()


def test_pareto_smooth_rejects_invalid_weights():
    with pytest.raises(ConfigError, match="NaN"):
        dg.pareto_smooth(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ConfigError, match="S >= 2"):
        dg.pareto_smooth(np.zeros((3, 1)))


# -- inference gaps ----------------------------------------------------------------------------------------------
def test_amortized_elbo_below_optimized_elbo_below_log_px(ppca, tmp_path):
    """A diagonal guide with a shrunk mean (0.8 m_i) and the marginal variances: both gaps are positive.

    Exact references: L[q] and L[q*] by elbo_gaussian (q* from its fitted moments), log p(x) by
    log_marginal. Differences of per-datapoint estimates from the exact values have mean 0
    (ELBOs: unbiased estimators) or <= 0 (IS: Jensen), tested at 4 standard errors.
    """
    _, x, W, mu = ppca
    vae = linear_gaussian_vae(W, mu, SIGMA, guide="diag_normal", seed=0)
    A, cov = _posterior_map(W, mu)
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
    assert _png(plot_gaps(gaps, tmp_path / "gaps.png"))


# -- VI vs MCMC, PPC ---------------------------------------------------------------------------------------------
def test_compare_draws_measures_a_too_narrow_posterior(ppca):
    """Two iid samples: the sd ratio has relative s.e. sqrt(1/(2 S1) + 1/(2 S2)) around sqrt(0.05)."""
    _, x, W, mu = ppca
    exact = guide_draws(_scaled_guide(W, mu, 1.0).guide, x, 2000, seed=0).numpy()
    narrow = guide_draws(_scaled_guide(W, mu, 0.05).guide, x, 2000, seed=1).numpy()
    cmp = compare_draws(narrow, exact)
    target = math.sqrt(0.05)
    assert (np.abs(cmp.sd_ratio - target) < 4 * target * math.sqrt(1 / 4000 + 1 / 4000)).all()
    assert cmp.ks.mean() > 0.3 and cmp.energy.shape == (N, d)
    same = compare_draws(guide_draws(_scaled_guide(W, mu, 1.0).guide, x, 2000, seed=2).numpy(), exact)
    assert (np.abs(same.mean_difference) < 4 * math.sqrt(2 / 2000)).all()
    with pytest.raises(ConfigError):
        compare_draws(exact, exact[:, :5])


def test_ppc_passes_a_well_specified_model_and_flags_a_misspecified_one():
    """Data from pPCA with sigma = 0.5. Under the true model p_i^loglik is roughly uniform, so the count of
    p < 0.05 is at most the 99% quantile of Binomial(n, 0.05); a model with sigma = 0.1 finds the data much
    less likely than its replicates (the residuals are 5x too large), so nearly every p is ~0."""
    from scipy import stats

    n = 200
    W, mu, x = _data(n, seed=5)
    right = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    set_exact_posterior(right)
    res = posterior_predictive_check(right, x, num_draws=100, seed=0)
    assert res.replicated.shape == (100, n, D) and res.loglik_observed.shape == (100, n)
    assert (res.p_loglik < 0.05).sum() <= stats.binom.ppf(0.99, n, 0.05)
    wrong = linear_gaussian_vae(W, mu, 0.1, seed=0)
    set_exact_posterior(wrong)
    bad = posterior_predictive_check(wrong, x, num_draws=100, seed=0)
    assert bad.fraction_low_loglik > 0.9
    assert "less likely" in bad.summary()


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


# -- figures -----------------------------------------------------------------------------------------------------
def _png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_figures_are_written_without_pyplot_state(ppca, short_nuts, tmp_path):
    import matplotlib.pyplot as plt

    vae, x, W, mu = ppca
    before = plt.get_fignums()
    mcmc = dg.latents_to_inference_data(short_nuts, datapoints=np.arange(N) + 10)
    guide = dg.guide_to_inference_data(vae, x, 40, datapoints=np.arange(N) + 10)
    paths = [
        dg.plot_trace(mcmc, tmp_path / "trace.png"),
        dg.plot_rank(mcmc, tmp_path / "rank.png", datapoints=[11, 12], latents=["z1"]),
        dg.plot_ppc(guide, tmp_path / "ppc.png", num_pp_samples=10),
        plot_khat_histogram(np.array([-np.inf, 0.2, 0.6, 0.9]), tmp_path / "khat.png"),
        plot_kl_per_dimension([0.5, 0.0], [True, False], tmp_path / "kl.png"),
        plot_posterior_overlay(guide.posterior["z"].values[0, :, :2], mcmc.posterior["z"].values[0, :40, :2],
                               tmp_path / "overlay.png"),
    ]
    assert all(p.is_file() and _png(p) for p in paths)
    assert plt.get_fignums() == before
    assert matplotlib.get_backend()  # untouched, whatever it is
    with pytest.raises(ConfigError, match="not in the InferenceData"):
        dg.plot_trace(mcmc, tmp_path / "t.png", datapoints=[999])


# -- the command --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_diagnose_writes_the_report_and_the_netcdf_files(tmp_path, capsys):
    from inference.run import train
    from inference.cli import main

    run_dir = tmp_path / "digits"
    spec = {"model": {"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}},
            "train": {"epochs": 2}}
    train(spec, run_dir, eval_samples=20, progress=False)
    argv = ["diagnose", str(run_dir), "--mcmc-points", "3", "--samples", "40", "--warmup", "40", "--gap-points", "5",
            "--is-samples", "50", "--local-steps", "20", "--ppc-draws", "10", "-q"]
    assert main(argv) == 0
    out = run_dir / "diagnostics"
    for name in ["report.md", "guide.nc", "mcmc.nc", "mcmc_summary.csv", "diagnostics.json", "trace.png", "rank.png",
                 "khat.png", "gaps.png", "vi_vs_mcmc.png", "kl_per_dim.png", "ppc_moments.png", "ppc_loglik.png",
                 "ppc_arviz.png"]:
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    for text in ["R-hat", "ESS", "divergences", "k-hat", "approximation gap", "amortization gap", "active", "PPC"]:
        assert text in report, text
    assert "](trace.png)" in report and "](khat.png)" in report
    numbers = json.loads((out / "diagnostics.json").read_text())
    assert len(numbers["mcmc_datapoints"]) == 3 and numbers["convergence"]["num_transitions"] == 2 * 40
    mcmc, guide = dg.load_netcdf(out / "mcmc.nc"), dg.load_netcdf(out / "guide.nc")
    assert mcmc.posterior["z"].dims == guide.posterior["z"].dims
    assert mcmc.posterior["z"].shape == (2, 40, 3, 2) and guide.posterior["z"].shape == (1, 80, 3, 2)
    np.testing.assert_array_equal(mcmc.posterior["datapoint"].values, numbers["mcmc_datapoints"])
    printed = capsys.readouterr().out
    assert "report:" in printed and ("PASS" in printed or "FAIL" in printed)
    assert main(["diagnose", str(tmp_path / "nothing")]) == 2
