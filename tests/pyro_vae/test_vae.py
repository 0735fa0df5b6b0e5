"""The VAE as a Pyro program: sites, plates, scaling, annealing, isolation, input checks."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae import DataError, build_vae
from pyro_vae.spec import ModelSpec

D = 16


def small_vae(**kw):
    kw.setdefault("latent_dim", 2)
    kw.setdefault("encoder", {"name": "mlp", "hidden": [8]})
    kw.setdefault("decoder", {"name": "mlp", "hidden": [8]})
    return build_vae(data_dim=D, seed=0, **kw)


def binary(n, seed=0):
    return torch.bernoulli(torch.full((n, D), 0.3), generator=torch.Generator().manual_seed(seed))


def test_sites_and_plates_follow_the_math():
    vae = small_vae()
    x = binary(5)
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    assert [n for n, s in model_tr.nodes.items() if s["type"] == "sample"] == ["data", "z", "x"]
    assert model_tr.nodes["x"]["is_observed"] and torch.equal(model_tr.nodes["x"]["value"], x)
    assert torch.equal(model_tr.nodes["z"]["value"], guide_tr.nodes["z"]["value"])
    for tr in (model_tr, guide_tr):
        frames = tr.nodes["z"]["cond_indep_stack"]
        assert [(f.name, f.dim, f.size) for f in frames] == [("data", -1, 5)]


def test_log_joint_equals_prior_plus_likelihood():
    vae = small_vae(prior="laplace", likelihood="bernoulli")
    x = binary(4)
    tr = poutine.trace(poutine.replay(vae.model, trace=poutine.trace(vae.guide).get_trace(x))).get_trace(x)
    tr.compute_log_prob()
    z = tr.nodes["z"]["value"]
    manual = vae.prior().log_prob(z) + vae.decode(z).log_prob(x)
    assert torch.allclose(tr.nodes["z"]["log_prob"] + tr.nodes["x"]["log_prob"], manual)


def test_minibatch_scaling_makes_the_loss_a_full_data_estimate():
    vae = small_vae()
    x = binary(10)
    pyro.set_rng_seed(0)
    small = Trace_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(0)
    scaled = Trace_ELBO().loss(vae.model, vae.guide, x, num_data=1000)
    assert math.isclose(scaled, small * 100, rel_tol=1e-5)


def test_beta_scales_only_the_kl_term():
    vae = small_vae()
    x = binary(6)
    elbo = TraceMeanField_ELBO()
    with torch.no_grad():
        kl = torch.distributions.kl_divergence(vae.posterior(x), vae.prior().expand([6])).sum()
    # The same seed draws the same z, so the reconstruction terms cancel: l(1) - l(b) = (1 - b) KL.
    pyro.set_rng_seed(0)
    l1 = elbo.loss(vae.model, vae.guide, x, beta=1.0)
    pyro.set_rng_seed(0)
    l2 = elbo.loss(vae.model, vae.guide, x, beta=0.25)
    assert math.isclose(l1 - l2, 0.75 * float(kl), rel_tol=1e-4)
    with pytest.raises(ValueError):
        elbo.loss(vae.model, vae.guide, x, beta=0.0)


def test_estimators_a_and_b_compute_their_formulas():
    vae = small_vae()
    x = binary(3)
    with torch.no_grad():
        q = vae.posterior(x)
        pyro.set_rng_seed(1)
        z = q.rsample()  # the draw the guide will make under the same seed
        loglik = vae.decode(z).log_prob(x).sum()
        kl = torch.distributions.kl_divergence(q, vae.prior().expand([3])).sum()
        mc = (q.log_prob(z) - vae.prior().log_prob(z)).sum()
    pyro.set_rng_seed(1)
    b = -TraceMeanField_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(1)
    a = -Trace_ELBO().loss(vae.model, vae.guide, x)
    assert math.isclose(b, float(loglik - kl), rel_tol=1e-5)  # B: closed-form KL
    assert math.isclose(a, float(loglik - mc), rel_tol=1e-5)  # A: log p(x, z) - log q(z | x)


def test_two_vaes_never_share_parameters():
    a, b = small_vae(), small_vae()
    b_before = {k: v.clone() for k, v in b.state_dict().items()}
    opt = torch.optim.Adam(a.parameters(), lr=0.1)
    for _ in range(3):
        loss = Trace_ELBO().differentiable_loss(a.model, a.guide, binary(8))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(b_before[k], v) for k, v in b.state_dict().items())
    assert not all(torch.equal(b_before[k], v) for k, v in a.state_dict().items())
    assert len(pyro.get_param_store()) == 0  # nothing hides in the global param store


def test_same_seed_same_weights_and_spec_equivalence():
    a = build_vae(ModelSpec(latent_dim=2, prior="mixture"), data_dim=D, seed=3)
    b = build_vae({"latent_dim": 2, "prior": "mixture"}, data_dim=D, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = build_vae(ModelSpec(latent_dim=2), data_dim=D, seed=3, prior="laplace")
    assert type(c.prior).__name__ == "FactorizedPrior"


def test_generation_and_reconstruction_shapes():
    vae = small_vae()
    x = vae.model(num_samples=7)
    assert x.shape == (7, D) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert vae.sample(5).shape == (5, D)
    assert vae.reconstruct(binary(3)).shape == (3, D)
    with pytest.raises(ValueError, match="num_samples"):
        vae.model()


def test_check_data_refuses_wrong_shape_and_support():
    vae = small_vae()
    with pytest.raises(DataError, match=r"shape \(N, 16\).*got \(4, 15\)"):
        vae.check_data(torch.zeros(4, 15))
    with pytest.raises(DataError, match=r"shape \(N, 16\)"):
        vae.check_data(torch.zeros(16))
    with pytest.raises(DataError, match="binarize"):
        vae.check_data(torch.full((2, D), 0.5))
    with pytest.raises(DataError, match="image_shape"):
        build_vae(data_dim=D, image_shape=(3, 3))


@pytest.mark.parametrize("prior, guide, analytic", [
    ("normal", "diag_normal", True),
    ("laplace", "diag_normal", True),
    ("normal", "full_normal", True),
    ("student_t", "diag_normal", False),
    ("mixture", "diag_normal", False),
    ("vamp", "diag_normal", False),
])
def test_analytic_kl_report(prior, guide, analytic):
    assert small_vae(prior=prior, guide=guide).analytic_kl() is analytic
