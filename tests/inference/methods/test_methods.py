"""One interface to every method (inference.methods): budgets, the method registry, scoring, and the
linear-Gaussian ground truth for every method.

Ground truth (probabilistic PCA, D = 5, d = 2, N = 500): the ML log-likelihood is closed form,
l_ML = (1/N) sum_i log N(x_i; mu_ML, W_ML W_ML^T + sigma_ML^2 I) (``ml_solution`` + ``log_marginal``),
and for ANY learned theta the exact l(theta) is closed form too, so

    gap(method) = l_ML - l(theta_method) >= 0              must be < 0.5 nats per datapoint, and
    score(result, x) - log p_theta(x)   (IS minus exact)    must be ~0: at most 4 standard errors above
                                                            (IS is a lower bound in expectation) and
                                                            at most 4 s.e. + the delta-method bias
                                                            E[relvar_i] / (2K) (twice it) below.

Exact EM (Tipping & Bishop, ``inference.baselines.exact_em``) reaching l_ML to 1e-4 is tested in
tests/inference/baselines/test_mcem.py::test_exact_em_reaches_the_ml_log_likelihood_monotonically
(not repeated here).
"""

from __future__ import annotations

import dataclasses
import math

import pyro
import pytest
import torch

import inference.evaluate as evaluate_module
from inference import methods, svi
from inference.methods import Budget, METHODS, fit, score
from inference.run import new_program
from pyro_vae.data import DataSplits, load_dataset
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.linear_gaussian import log_marginal, ml_solution, pca_parameters
from pyro_vae.spec import load_spec

SMALL_SPEC = {
    "model": {"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}},
    "train": {"lr": 1e-2, "batch_size": 100, "seed": 0},
}
D, d, SIGMA = 5, 2, 0.5


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", binarize="dynamic")


def ppca_splits(n=500, n_val=100, n_test=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    W, mu = torch.randn(D, d, generator=g), torch.linspace(-1, 1, D)
    draw = lambda m: torch.randn(m, d, generator=g) @ W.T + mu + SIGMA * torch.randn(m, D, generator=g)  # noqa: E731
    return DataSplits("ppca", draw(n), draw(n_val), draw(n_test), None, None, None, None, "none")


def ppca_spec(likelihood=None, **train):
    likelihood = likelihood or {"name": "gaussian_learned", "shared": True, "init_sigma": 1.0}
    return {
        "model": {"latent_dim": d, "prior": "normal", "likelihood": likelihood, "encoder": "linear",
                  "decoder": "linear", "guide": "full_normal"},
        "data": {"binarize": "none"},
        "train": {"lr": 0.03, "batch_size": 50, "seed": 0, **train},
    }


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# -- budgets ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, want", [
    ("60s", Budget(seconds=60.0)), ("2min", Budget(seconds=120.0)), ("20epochs", Budget(epochs=20)),
    ("1epoch", Budget(epochs=1)), ("1e6samples", Budget(samples=1_000_000)), (" 0.5 s ", Budget(seconds=0.5)),
    ("60s,20epochs", Budget(epochs=20, seconds=60.0)),
])
def test_budget_parses_units(text, want):
    assert Budget.parse(text) == want


@pytest.mark.parametrize("text, match", [
    ("60", "number and a unit"), ("fast", "number and a unit"), ("", "empty"), ("0s", "seconds must be > 0"),
    ("1.5epochs", "whole number"), ("60s,30s", "twice"), ("10 hours", "number and a unit"),
])
def test_budget_errors_say_how_to_write_one(text, match):
    with pytest.raises(ConfigError, match=match):
        Budget.parse(text)


def test_budget_needs_a_limit_and_turns_samples_into_epochs():
    with pytest.raises(ConfigError, match="needs epochs, seconds or samples"):
        Budget()
    assert Budget(samples=1000).max_epochs(300) == 4  # ceil(1000 / 300)
    assert Budget(epochs=3, samples=10_000).max_epochs(300) == 3
    assert Budget(seconds=1.0).max_epochs(300) is None


# -- the registry -------------------------------------------------------------------------------------
def test_every_method_is_registered_and_unknown_names_list_them(digits):
    assert set(METHODS.names()) == {"svi-trace", "svi-meanfield", "iwae", "rws", "map", "local-vi", "mcem", "mcmc"}
    with pytest.raises(ConfigError, match=r"unknown inference method 'em'.*valid inference methods are: .*svi-trace"):
        fit(SMALL_SPEC, digits, method="em", budget="1epochs")


def test_method_options_are_checked(digits):
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['weight_dcay'\].*weight_decay"):
        fit(SMALL_SPEC, digits, method="map", budget="1epochs", options={"weight_dcay": 1.0})
    with pytest.raises(ConfigError, match="set by the budget"):
        fit(SMALL_SPEC, digits, method="mcem", budget="1epochs", options={"epochs": 3})
    with pytest.raises(ConfigError, match="not accepted"):
        fit(SMALL_SPEC, digits, method="svi-trace", budget="1epochs", options={"num_particles": 3})


# -- SVI methods: budgets through resume are exact ----------------------------------------------------
def test_svi_epoch_budget_equals_one_uninterrupted_run_and_checkpoints_are_its_prefixes(digits):
    result = fit(SMALL_SPEC, digits, method="svi-trace", budget="4epochs", checkpoints=(0.5,))
    spec = load_spec(SMALL_SPEC)
    direct = {}
    for epochs in (2, 4):
        vae = new_program(spec, digits)
        direct[epochs] = svi.fit(vae, digits, dataclasses.replace(spec.train, epochs=epochs), progress=False)
    assert [c.epochs for c in result.checkpoints] == [2, 4] and result.checkpoints[-1].fraction == 1.0
    assert_same_state(result.checkpoints[0].vae, direct[2].vae)
    assert_same_state(result.vae, direct[4].vae)
    assert result.samples_evaluated == 4 * len(digits.train) and result.elbo_defined
    assert [r.train_elbo for r in result.history] == [r.train_elbo for r in direct[4].history]
    assert result.proposal(digits.test[:5]) == result.vae.guide  # amortized: the encoder


def test_iwae_sample_budget_rounds_up_to_whole_epochs_with_default_particles(digits):
    result = fit(SMALL_SPEC, digits, method="iwae", budget="20000samples")
    per_epoch = len(digits.train) * methods.IW_PARTICLES  # train.num_particles = 1 -> K = IW_PARTICLES
    assert result.epochs == math.ceil(20000 / per_epoch)
    assert 20000 <= result.samples_evaluated < 20000 + per_epoch
    assert result.notes == f"K={methods.IW_PARTICLES}"


def test_seconds_budget_stops_near_the_budget(digits):
    budget = 1.5
    result = fit(SMALL_SPEC, digits, method="svi-meanfield", budget=f"{budget}s", checkpoints=(0.5,))
    epoch = max(r.seconds for r in result.history)
    assert result.epochs >= 2
    # ends at the epoch boundary nearest the budget; slack: one epoch plus per-call overhead on a busy machine
    assert budget - 2 * epoch - 0.5 < result.wall_time < budget + 2 * epoch + 0.5, (result.wall_time, epoch)
    assert result.checkpoints[0].wall_time < result.wall_time


def test_map_and_local_vi_run_whole_epochs_with_per_row_proposals(digits):
    for method in ("map", "local-vi"):
        result = fit(SMALL_SPEC, digits, method=method, budget="2epochs", checkpoints=(0.5,))
        assert [c.epochs for c in result.checkpoints] == [1, 2] and result.elbo_defined
        x = torch.bernoulli(digits.test[:20], generator=torch.Generator().manual_seed(0))
        est = score(result, x, 20, seed=0)
        assert est.n == 20 and math.isfinite(est.mean)


# -- scoring: one yardstick ---------------------------------------------------------------------------
def test_score_is_evaluate_log_likelihood_with_the_method_proposal(digits, monkeypatch):
    result = fit(SMALL_SPEC, digits, method="rws", budget="1epochs")
    x = torch.bernoulli(digits.test[:30], generator=torch.Generator().manual_seed(0))
    calls = []
    real = evaluate_module.log_likelihood

    def spy(model, guide, xs, **kwargs):
        out = real(model, guide, xs, **kwargs)
        calls.append((model, guide, kwargs["num_samples"], out))
        return out

    monkeypatch.setattr(evaluate_module, "log_likelihood", spy)
    est = score(result, x, 40, seed=1)
    (model, guide, k, out), = calls
    assert model == result.vae.model and guide == result.vae.guide and k == 40 and out is est
    pyro.set_rng_seed(1)
    again = real(result.vae.model, result.vae.guide, x, num_samples=40, progress=False)
    assert torch.equal(again.values, est.values)


# -- mcmc: fully Bayesian NUTS, small pPCA only --------------------------------------------------------
def test_mcmc_refuses_a_vae_and_a_large_ppca(digits):
    with pytest.raises(UnsupportedModelError, match="mcem"):
        fit(SMALL_SPEC, digits, method="mcmc", budget="10epochs")
    big = ppca_splits(n=methods.MCMC_MAX_LATENTS // d + 1, n_val=10, n_test=10)
    with pytest.raises(UnsupportedModelError, match="latent coordinates"):
        fit(ppca_spec({"name": "gaussian", "sigma": SIGMA}), big, method="mcmc", budget="10epochs")


@pytest.mark.slow
def test_mcmc_on_small_ppca_is_scored_exactly_by_the_yardstick():
    data = ppca_splits(n=60, n_val=10, n_test=60, seed=1)
    result = fit(ppca_spec({"name": "gaussian", "sigma": SIGMA}), data, method="mcmc", budget="100epochs")
    assert result.epochs == 100 and not result.elbo_defined and methods.test_elbo(result, data.test) is None
    check_is_matches_exact(result, data.test)


# -- the linear-Gaussian ground truth -------------------------------------------------------------------
def ml_gap(result, x):
    W, mu, sigma = ml_solution(x, d)
    Wl, mul, sl = pca_parameters(result.vae)
    return float(log_marginal(x, W, mu, sigma).mean() - log_marginal(x, Wl, mul, sl).mean())


def check_is_matches_exact(result, x, K=1000):
    """IS log p(x_i) (K samples, the method's proposal) against the closed form at the learned theta."""
    q = methods.proposal_for(result, x)
    est = score(result, x, K, proposal=q, seed=0)
    Wl, mul, sl = pca_parameters(result.vae)
    diff = est.values.double() - log_marginal(x, Wl, mul, sl)
    se = float(diff.std() / math.sqrt(len(diff)))
    with torch.no_grad():
        pyro.set_rng_seed(1)
        log_w = evaluate_module.log_importance_weights(result.vae.model, q, x, K).double()
    relvar = (K * torch.exp(torch.logsumexp(2 * log_w, 0) - 2 * torch.logsumexp(log_w, 0)) - 1).clamp_min(0)
    bias = float(relvar.mean()) / (2 * K)
    assert -4 * se - 2 * bias - 1e-6 < float(diff.mean()) < 4 * se + 1e-6, (float(diff.mean()), se, bias)


@pytest.fixture(scope="module")
def ppca():
    return ppca_splits()


@pytest.mark.parametrize("method", ["svi-trace", "svi-meanfield", "iwae"])
def test_svi_methods_reach_the_ml_log_likelihood_of_ppca(ppca, method):
    result = fit(ppca_spec(), ppca, method=method, budget="40epochs")
    gap = ml_gap(result, ppca.train)
    assert -1e-6 < gap < 0.5, gap  # l_ML is the maximum: gap >= 0
    check_is_matches_exact(result, ppca.test)


def test_map_then_is_reaches_the_ml_log_likelihood_of_ppca(ppca):
    """Joint MAP over (theta, z_i) inflates W and shrinks sigma unless W is penalized; the penalty
    lambda ||W||^2 whose closed-form joint MAP has W W^T eigenvalues s_k / sqrt(2 lambda) - sigma^2
    (test_map.py's soft-thresholding) matches ML's lambda_k - sigma^2 (s_k^2 = N lambda_k) on
    average at sqrt(2 lambda) = N / s_bar, i.e. lambda = N / (2 lambda_bar), lambda_bar the mean of
    the top-d eigenvalues of the sample covariance."""
    x = ppca.train
    evals = torch.linalg.eigvalsh(torch.cov(x.T.double(), correction=0))
    weight_decay = len(x) / (2 * float(evals[-d:].mean()))
    result = fit(ppca_spec(), ppca, method="map", budget="40epochs", options={"weight_decay": weight_decay})
    gap = ml_gap(result, x)
    assert -1e-6 < gap < 0.5, gap
    check_is_matches_exact(result, ppca.test)


# -- devices: every method trains and scores where its program lives ----------------------------------------
@pytest.mark.parametrize("method", ["svi-trace", "iwae", "map", "local-vi", "mcem"])
def test_every_method_trains_and_scores_in_its_programs_dtype(digits, method, monkeypatch):
    """No GPU here: placement is proven in float64. The program is built in float64 and the data stay
    float32, so a per-datapoint table, chain or scoring row made from the data rather than beside the
    program would meet a float64 layer and fail."""
    from inference.devices import module_placement
    from inference.methods import baseline_methods, svi_methods

    def float64_program(spec, data):
        return new_program(spec, data).double()

    for module in (svi_methods, baseline_methods):
        monkeypatch.setattr(module, "new_program", float64_program)
    sub = dataclasses.replace(digits, train=digits.train[:200], train_labels=None)
    result = fit(SMALL_SPEC, sub, method=method, budget="1epochs")
    assert module_placement(result.vae) == (torch.device("cpu"), torch.float64)
    held_out = score(result, digits.test[:20], 10, seed=0)
    assert held_out.n == 20 and math.isfinite(held_out.mean)


@pytest.mark.parametrize("method", ["mcem", "mcmc"])
def test_the_cpu_only_methods_refuse_another_device_before_training(digits, method):
    """The runner itself (methods.fit would first refuse CUDA on a machine without it)."""
    spec = load_spec(SMALL_SPEC)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, device="cuda:0"))
    with pytest.raises(UnsupportedModelError, match=f"{method} runs on the CPU only, not on cuda:0"):
        METHODS.get(method)(spec, digits, Budget(epochs=1), fractions=(1.0,), options={}, progress=False)
