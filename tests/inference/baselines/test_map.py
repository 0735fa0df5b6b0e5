"""MAP / MLE baseline: posterior modes on pPCA, the closed-form joint MAP, MAP-then-IS scoring, errors.

For pPCA (z ~ N(0, I), x | z ~ N(W z + mu, sigma^2 I)) the posterior is Gaussian, so its mode
is its mean M^-1 W^T (x - mu), M = W^T W + sigma^2 I. The joint MAP over (W, Z) with penalty
lambda ||W||^2 has a closed form too: minimizing

    1/(2 sigma^2) ||X_c - Z W^T||^2 + 1/2 ||Z||^2 + lambda ||W||^2

over factorizations is (since min a||W||^2 + b||Z||^2 over W Z^T = P is 2 sqrt(ab) ||P||_*)
singular-value soft-thresholding of the centred data X_c = U diag(s) V^T at
tau = sigma^2 sqrt(2 lambda), with the balance lambda w_k^2 = z_k^2 / 2, so the eigenvalues
of W W^T are (s_k - tau)_+ / sqrt(2 lambda).
"""

from __future__ import annotations

import copy
import functools
import math

import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from inference.evaluate import log_likelihood
from inference.baselines import (
    PointGuide, encode_map, fit_map, map_objective, map_proposal, theta_parameters,
)
from pyro_vae import build_vae
from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.linear_gaussian import linear_gaussian_vae, log_marginal, ml_solution, pca_parameters, posterior

D, d, SIGMA = 5, 2, 0.7
LAMBDA = 50.0  # weight_decay of the pPCA MAP fit (see test_fit_map_reaches_the_closed_form_joint_map)


def ppca_data(n, seed=0, mu=None):
    """Rows of a pPCA with strongly correlated columns of W (posterior correlation ~ -0.87)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, d, generator=g)
    W[:, 1] = 0.8 * W[:, 0] + 0.6 * W[:, 1]
    mu = torch.zeros(D) if mu is None else mu
    draw = lambda m: torch.randn(m, d, generator=g) @ W.T + mu + SIGMA * torch.randn(m, D, generator=g)  # noqa: E731
    return W, draw(n), draw(200)


def posterior_mean(vae, x):
    W, mu, sigma = pca_parameters(vae)
    return posterior(x, W, mu, sigma)[0]


# -- the MAP code of a datapoint is the posterior mode ---------------------------------------------
def test_encode_map_is_the_exact_posterior_mode():
    W, x, _ = ppca_data(40, mu=torch.linspace(-1, 1, D))
    vae = linear_gaussian_vae(W, torch.linspace(-1, 1, D), SIGMA, seed=0)
    before = copy.deepcopy(vae.state_dict())
    z = encode_map(vae, x)
    assert z.shape == (40, d)
    assert float((z.double() - posterior_mean(vae, x)).abs().max()) < 1e-3
    assert all(torch.equal(v, before[k]) for k, v in vae.state_dict().items())
    assert all(p.requires_grad for p in vae.parameters())
    # Adam gets there too on this problem with enough steps (it is slow along correlated valleys).
    z_adam = encode_map(vae, x, optimizer="adam", lr=0.1, steps=300, batch_size=16)
    assert float((z_adam.double() - posterior_mean(vae, x)).abs().max()) < 2e-2


def test_z_table_with_theta_frozen_is_the_exact_posterior_mode():
    W, x, _ = ppca_data(40, mu=torch.linspace(-1, 1, D))
    vae = linear_gaussian_vae(W, torch.linspace(-1, 1, D), SIGMA, seed=0)
    for p in vae.parameters():
        p.requires_grad_(False)
    before = copy.deepcopy(vae.state_dict())
    result = fit_map(vae, x, epochs=600, lr=0.1, batch_size=40, seed=0, progress=False)
    assert float((result.modules["local"].z.detach().double() - posterior_mean(vae, x)).abs().max()) < 1e-3
    assert all(torch.equal(v, before[k]) for k, v in vae.state_dict().items())
    assert not any(p.requires_grad for p in vae.parameters())
    assert len(result.history) == 600 and result.samples_evaluated == 600 * 40


def test_the_pyro_loss_is_the_log_joint():
    W, x, _ = ppca_data(12)
    vae = linear_gaussian_vae(W, torch.zeros(D), SIGMA, seed=0)
    z = torch.randn(12, d, generator=torch.Generator().manual_seed(1))
    guide = PointGuide(z, data=x)
    loss = Trace_ELBO(max_plate_nesting=1).differentiable_loss
    with torch.no_grad():
        exact = vae.log_joint(z, x)
    assert math.isclose(-loss(vae.model, guide.guide, x).item(), float(exact.sum()), rel_tol=1e-6)
    # A minibatch of rows idx standing for 120 datapoints carries weight 120 / 4.
    idx = torch.tensor([3, 0, 7, 11])
    scaled = -loss(vae.model, functools.partial(guide.guide, idx=idx), x[idx], num_data=120).item()
    assert math.isclose(scaled, 30 * float(exact[idx].sum()), rel_tol=1e-6)
    assert math.isclose(map_objective(vae, z, x, weight_decay=0.5),
                        (float(exact.sum()) - 0.5 * sum(p.detach().pow(2).sum().item() for p in theta_parameters(vae))) / 12,
                        rel_tol=1e-6)


# -- learned theta: pPCA ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ppca_map():
    W, x_train, x_test = ppca_data(500)
    vae = linear_gaussian_vae(0.1 * torch.randn(D, d, generator=torch.Generator().manual_seed(2)), torch.zeros(D), SIGMA)
    z0 = torch.zeros(500, d)
    start = map_objective(vae, z0, x_train, LAMBDA)
    result = fit_map(vae, x_train, epochs=300, lr=0.05, batch_size=500, seed=0, weight_decay=LAMBDA, progress=False)
    return x_train, x_test, result, start


def test_fit_map_reaches_the_closed_form_joint_map(ppca_map):
    x_train, _, result, start = ppca_map
    Xc = (x_train - x_train.mean(0)).double()
    s = torch.linalg.svdvals(Xc)[:d]
    tau = SIGMA**2 * math.sqrt(2 * LAMBDA)
    expected = ((s - tau).clamp_min(0) / math.sqrt(2 * LAMBDA)).sort().values
    W, _, _ = pca_parameters(result.vae)
    got = torch.linalg.eigvalsh(W @ W.T)[-d:]
    assert torch.allclose(got, expected, rtol=1e-2), (got, expected)
    # The objective is exact (no sampling): it rose, and the history records it per epoch.
    end = map_objective(result.vae, result.modules["local"].z.detach(), x_train, LAMBDA)
    assert end > start + 1.0
    assert result.history[-1].train_elbo > result.history[0].train_elbo
    assert abs(result.history[-1].train_elbo - end) < 1e-2 * abs(end)


def test_map_then_importance_sampling_is_within_half_a_nat_of_ml(ppca_map):
    x_train, x_test, result, _ = ppca_map
    vae = result.vae
    guide = map_proposal(vae, x_test, full_cov=True)
    est = log_likelihood(vae.model, guide, x_test, num_samples=500, progress=False)
    exact = log_marginal(x_test, *pca_parameters(vae))
    diff = est.values.double() - exact
    # The proposal holds the posterior (fit to within ~0.01 nats), so E[IS_i] lies in
    # [log p(x_i) - 0.01, log p(x_i)]; the paired differences have standard error sd / sqrt(n).
    se = float(diff.std()) / math.sqrt(len(diff))
    assert -0.01 - 4 * se <= float(diff.mean()) <= 4 * se + 1e-5, (float(diff.mean()), se)
    ml = float(log_marginal(x_test, *ml_solution(x_train, d)).mean())
    assert abs(ml - est.mean) < 0.5, (ml, est.mean)


# -- learned theta: a neural decoder on digits ---------------------------------------------------------
def test_fit_map_objective_rises_on_digits():
    data = load_dataset("digits", binarize="threshold", max_train=300)
    vae = build_vae(data_dim=data.feature_dim, latent_dim=2, decoder={"name": "mlp", "hidden": [32]},
                    encoder={"name": "mlp", "hidden": [8]}, seed=0)
    before = copy.deepcopy(vae)
    encoder_state = copy.deepcopy(vae.encoder.state_dict())
    result = fit_map(vae, data, {"epochs": 20, "lr": 1e-2, "batch_size": 50, "seed": 0}, weight_decay=1e-3, progress=False)
    x = data.train
    start = map_objective(before, torch.zeros(x.shape[0], 2), x, 1e-3)
    end = map_objective(result.vae, result.modules["local"].z.detach(), x, 1e-3)
    assert end > start + 1.0, (start, end)  # exact objectives: no Monte Carlo noise to allow for
    assert result.history[-1].train_elbo > result.history[0].train_elbo
    assert all(torch.equal(v, encoder_state[k]) for k, v in vae.encoder.state_dict().items())  # not theta
    # The table's codes are a starting point that encode_map (theta fixed) can only improve.
    again = encode_map(result.vae, x[:20], init=result.modules["local"].z.detach()[:20])
    with torch.no_grad():
        gain = result.vae.log_joint(again, x[:20]).sum() - result.vae.log_joint(result.modules["local"].z.detach()[:20], x[:20]).sum()
    assert float(gain) >= -1e-3


# -- errors ---------------------------------------------------------------------------------------------
class _BernoulliPrior(nn.Module):
    def forward(self):
        return dist.Bernoulli(probs=torch.full((2,), 0.5)).to_event(1)


class _GammaPrior(nn.Module):
    def forward(self):
        return dist.Gamma(torch.ones(2), torch.ones(2)).to_event(1)


@pytest.mark.parametrize("prior, message", [(_BernoulliPrior, "discrete"), (_GammaPrior, "support")])
def test_latents_map_cannot_handle_are_refused(prior, message):
    W, x, _ = ppca_data(10)
    vae = linear_gaussian_vae(W, torch.zeros(D), SIGMA)
    vae.prior = prior()
    with pytest.raises(UnsupportedModelError, match=message):
        fit_map(vae, x, epochs=1, progress=False)
    with pytest.raises(UnsupportedModelError, match=message):
        encode_map(vae, x)


def test_bad_settings_are_refused():
    W, x, _ = ppca_data(10)
    vae = linear_gaussian_vae(W, torch.zeros(D), SIGMA)
    with pytest.raises(ConfigError, match="weight_decay"):
        fit_map(vae, x, epochs=1, weight_decay=-1.0, progress=False)
    with pytest.raises(ConfigError, match="optimizer"):
        encode_map(vae, x, optimizer="sgd")
    with pytest.raises(ConfigError, match="init"):
        encode_map(vae, x, init=torch.zeros(3, d))


def test_theta_follows_the_learning_rate_schedule(monkeypatch):
    """train.lr_schedule applies to theta's optimizer as in svi.fit."""
    from inference.training import learning_rate
    from pyro_vae.spec import TrainSpec

    seen, step = [], torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    W, x, _ = ppca_data(120)
    vae = linear_gaussian_vae(W, torch.zeros(D), SIGMA)
    train = TrainSpec(epochs=3, lr=1e-2, lr_schedule="exponential", lr_final=1e-4, batch_size=40, seed=0)
    fit_map(vae, x, train, progress=False)
    assert seen == [learning_rate(train, e) for e in (1, 2, 3) for _ in range(3)]
    assert seen[0] == pytest.approx(1e-2) and seen[-1] == pytest.approx(1e-4)
