"""The importance-weighted objectives: IWAE and reweighted wake-sleep (inference.objectives).

Math checked here, per datapoint i of a minibatch of B rows out of N (s = N / B):

    IWAE_K = s sum_i [logsumexp_k log w_ik - log K],  log w_ik = log p(x_i, z_ik) - log q(z_ik | x_i)

E[IWAE_K] >= ELBO (Jensen), IWAE_1 is estimator A with the same draws, and the per-datapoint
bound is the yardstick's estimator (inference.evaluate.log_likelihood). RWS's one surrogate has
the IWAE value, the wake-theta gradient for theta (z and log q detached) and the wake-phi
gradient -s sum_ik wbar_ik grad log q(z_ik | x_i) for phi.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from inference import evaluate
from inference.objectives import IWAE, OBJECTIVES, ReweightedWakeSleep, make_objective
from inference.svi import fit
from pyro_vae import build_vae
from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.spec import TrainSpec

SMALL = dict(latent_dim=2, encoder={"name": "mlp", "hidden": [32]}, decoder={"name": "mlp", "hidden": [32]})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", binarize="dynamic")


def small_vae(data_dim=64, seed=0, **overrides):
    return build_vae(data_dim=data_dim, seed=seed, **{**SMALL, **overrides})


def binary_rows(data, n=200, seed=0):
    return torch.bernoulli(data.test[:n], generator=torch.Generator().manual_seed(seed))


def grads(vae):
    return {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for k, p in vae.named_parameters()}


# -- registry ------------------------------------------------------------------------------------
def test_registry_builds_iwae_and_rws_with_the_spec_particle_count():
    assert {"trace", "meanfield", "iwae", "rws"} <= set(OBJECTIVES.names())
    iw = make_objective("iwae", 7)
    assert isinstance(iw, IWAE) and iw.num_particles == 7 and iw.vectorize_particles
    rws = make_objective("rws", 3)
    assert isinstance(rws, ReweightedWakeSleep) and rws.num_particles == 3 and rws.insomnia == 1.0
    assert make_objective("rws", 1).insomnia == 0.0  # K = 1: classic wake-sleep (sleep-phi)
    assert TrainSpec(elbo="iwae").elbo == "iwae" and TrainSpec(elbo="rws", num_particles=5).num_particles == 5


def test_rws_refuses_wake_phi_with_one_particle_and_bad_insomnia():
    with pytest.raises(ConfigError, match="num_particles >= 2"):
        ReweightedWakeSleep(num_particles=1, insomnia=1.0)
    with pytest.raises(ConfigError, match="insomnia"):
        ReweightedWakeSleep(num_particles=2, insomnia=1.5)


# -- IWAE -------------------------------------------------------------------------------------------
def test_iwae_with_one_particle_is_estimator_a_value_and_gradient(digits):
    """Same seed -> same draw z_i -> IWAE_1 = Trace_ELBO exactly, with minibatch scaling and KL weight."""
    vae = small_vae()
    x = binary_rows(digits, 30)
    out = []
    for name in ("trace", "iwae"):
        vae.zero_grad()
        pyro.set_rng_seed(5)
        loss = make_objective(name, 1).differentiable_loss(vae.model, vae.guide, x, num_data=300, beta=0.4)
        loss.backward()
        out.append((loss.item(), grads(vae)))
    (a, ga), (b, gb) = out
    assert b == pytest.approx(a, rel=1e-6)
    for k in ga:
        torch.testing.assert_close(gb[k], ga[k], rtol=1e-5, atol=1e-6)


def test_iwae_per_datapoint_bound_is_the_yardstick_estimator(digits):
    """-IWAE_K loss on unscaled data = sum_i of evaluate.log_likelihood's values with the same draws."""
    vae = small_vae()
    x = binary_rows(digits, 40)
    pyro.set_rng_seed(3)
    loss = make_objective("iwae", 16).loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    est = evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=16, batch_size=40, progress=False)
    assert -loss == pytest.approx(float(est.values.sum()), rel=1e-5)


def test_iwae_minibatch_scaling_is_outside_the_logsumexp(digits):
    """With num_data = N the loss is (N / B) x the unscaled loss (same draws), not logsumexp of scaled weights."""
    vae = small_vae()
    x = binary_rows(digits, 25)
    objective = make_objective("iwae", 8)
    pyro.set_rng_seed(9)
    scaled = objective.loss(vae.model, vae.guide, x, num_data=1000)
    pyro.set_rng_seed(9)
    plain = objective.loss(vae.model, vae.guide, x)
    assert scaled == pytest.approx(plain * 1000 / 25, rel=1e-5)


def test_iwae_bound_is_above_the_elbo_at_fixed_parameters(digits):
    """E[IWAE_K] >= E[IWAE_1] = ELBO; replicate R times and compare means against their standard errors."""
    vae = small_vae(seed=1)
    x = binary_rows(digits, 100)
    R = 40
    pyro.set_rng_seed(0)
    with torch.no_grad():
        elbo = torch.tensor([-make_objective("trace").loss(vae.model, vae.guide, x) for _ in range(R)])
        iw10 = torch.tensor([-make_objective("iwae", 10).loss(vae.model, vae.guide, x) for _ in range(R)])
        iw50 = torch.tensor([-make_objective("iwae", 50).loss(vae.model, vae.guide, x) for _ in range(R)])

    def gap(a, b):  # mean(a) - mean(b) and its standard error (independent replicates)
        return float(a.mean() - b.mean()), float((a.var() / R + b.var() / R).sqrt())

    d, se = gap(iw10, elbo)
    assert d > 4 * se, (d, se)  # strictly above, by much more than the noise
    d, se = gap(iw50, iw10)
    assert d > -3 * se, (d, se)  # non-decreasing in K


# -- RWS ----------------------------------------------------------------------------------------------
def test_rws_surrogate_has_the_iwae_value_and_the_wake_gradients(digits):
    """Value = -IWAE_K; theta gets d(wake-theta), phi gets d(wake-phi), computed by hand from the same draws."""
    vae = small_vae(seed=2)
    x = binary_rows(digits, 20)
    K, N = 6, 200
    s = N / x.shape[0]
    vae.zero_grad()
    pyro.set_rng_seed(11)
    loss = make_objective("rws", K).differentiable_loss(vae.model, vae.guide, x, num_data=N)
    loss.backward()
    got = grads(vae)

    def by_hand():
        pyro.set_rng_seed(11)
        q = vae.posterior(x)
        z = q.rsample((K,)).detach()
        log_q = q.log_prob(z)
        log_w = vae.decode(z).log_prob(x) + vae.prior().log_prob(z) - log_q.detach()
        wake_theta = -s * (log_w.logsumexp(0) - math.log(K)).sum()
        wake_phi = -s * (torch.softmax(log_w, 0).detach() * log_q).sum()
        return wake_theta, wake_phi

    wake_theta, wake_phi = by_hand()
    assert loss.item() == pytest.approx(wake_theta.item(), rel=1e-5)
    vae.zero_grad()
    (wake_theta + wake_phi).backward()
    want = grads(vae)
    theta_names = {f"decoder.{k}" for k, _ in vae.decoder.named_parameters()}
    phi_names = {f"encoder.{k}" for k, _ in vae.encoder.named_parameters()}
    assert theta_names and phi_names
    for k in theta_names | phi_names:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-4)
    # and the split is clean: wake-theta alone moves no encoder weight
    vae.zero_grad()
    by_hand()[0].backward()
    assert all(float(p.grad.abs().max()) == 0.0 for p in vae.encoder.parameters() if p.grad is not None)


def test_rws_sleep_phi_moves_only_the_guide(digits):
    """Classic wake-sleep (K=1, insomnia=0): wake-theta reaches theta, sleep-phi reaches phi, nothing crosses."""
    vae = small_vae(seed=3)
    x = binary_rows(digits, 20)
    pyro.set_rng_seed(0)
    loss = make_objective("rws", 1).differentiable_loss(vae.model, vae.guide, x, num_data=100)
    loss.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in vae.encoder.parameters())
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in vae.decoder.parameters())


# -- training ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("elbo, k", [("iwae", 5), ("rws", 5), ("rws", 1)])
def test_iwae_and_rws_train_on_digits(digits, elbo, k):
    """The held-out IS log p(x) (K=100) improves by more than 4 paired standard errors in 4 epochs."""
    x = binary_rows(digits, 200, seed=1)
    vae = small_vae(seed=4)
    pyro.set_rng_seed(0)
    before = evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=100, progress=False).values
    result = fit(vae, digits, TrainSpec(elbo=elbo, num_particles=k, epochs=4, lr=1e-2, seed=0), progress=False)
    pyro.set_rng_seed(0)
    after = evaluate.log_likelihood(vae.model, vae.guide, x, num_samples=100, progress=False).values
    diff = after - before
    assert float(diff.mean()) > 4 * float(diff.std() / math.sqrt(len(diff))), float(diff.mean())
    vals = [r.val_elbo for r in result.history]
    assert all(math.isfinite(v) for v in vals) and vals[-1] > vals[0]
    assert result.samples_evaluated == 4 * len(digits.train) * k


# -- what an objective cannot do --------------------------------------------------------------------------
class _NormalWithoutRsample(dist.Normal):
    has_rsample = False  # draws come from .sample(): no reparameterized gradient


class _NoRsample(nn.Module):
    """The diagonal-normal family with rsample switched off (a score-function-only guide)."""

    def __init__(self, family: nn.Module) -> None:
        super().__init__()
        self.inner, self.param_size = family, family.param_size

    def forward(self, eta):
        q = self.inner(eta).base_dist
        return _NormalWithoutRsample(q.loc, q.scale).to_event(1)


@pytest.mark.parametrize("elbo", ["meanfield", "iwae"])
def test_reparameterization_objectives_refuse_a_guide_without_rsample(digits, elbo):
    vae = small_vae()
    vae.family = _NoRsample(vae.family)
    with pytest.raises(UnsupportedModelError, match=r"no rsample.*elbo='trace'"):
        fit(vae, digits, TrainSpec(elbo=elbo, num_particles=2, epochs=1), progress=False)


def test_rws_trains_a_guide_without_rsample(digits):
    vae = small_vae()
    vae.family = _NoRsample(vae.family)
    before = [p.detach().clone() for p in vae.encoder.parameters()]
    fit(vae, digits, TrainSpec(elbo="rws", num_particles=3, epochs=1, lr=1e-2), progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, vae.encoder.parameters()))


def test_per_datapoint_objectives_refuse_a_global_latent():
    def model(x, num_data=None, beta=1.0):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(torch.zeros(x.shape[1]), scale.unsqueeze(-1)).to_event(1), obs=x)

    loc = nn.Parameter(torch.zeros(()))

    def guide(x, num_data=None, beta=1.0):
        pyro.sample("scale", dist.LogNormal(loc, 1.0))

    with pytest.raises(UnsupportedModelError, match="inside the data plate"):
        make_objective("iwae", 4).differentiable_loss(model, guide, torch.randn(6, 3))
    with pytest.raises(UnsupportedModelError, match="inside the data plate"):
        make_objective("rws", 4).differentiable_loss(model, guide, torch.randn(6, 3))
