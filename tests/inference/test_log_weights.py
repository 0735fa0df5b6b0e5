"""The one per-datapoint log-weight function (inference.log_weights), checked against log-densities by hand."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from inference.log_weights import log_weights
from pyro_vae import build_vae
from pyro_vae.errors import UnsupportedModelError

SMALL = dict(latent_dim=2, encoder={"name": "mlp", "hidden": [16]}, decoder={"name": "mlp", "hidden": [16]})


@pytest.fixture()
def vae_and_x():
    vae = build_vae(data_dim=12, seed=0, **SMALL)
    x = torch.bernoulli(torch.full((7, 12), 0.3), generator=torch.Generator().manual_seed(0))
    return vae, x


def by_hand(vae, x, K, seed, beta=1.0):
    """log p(x | z) + beta (log p(z) - log q(z | x)) at the draws the guide makes under the same seed."""
    pyro.set_rng_seed(seed)
    q = vae.posterior(x)
    z = q.rsample((K,))
    return vae.decode(z).log_prob(x) + beta * (vae.prior().log_prob(z) - q.log_prob(z))


@pytest.mark.parametrize("num_data, beta", [(None, 1.0), (700, 1.0), (700, 0.3)])
def test_weights_are_per_datapoint_with_the_plate_scale_divided_out(vae_and_x, num_data, beta):
    """Shape (K, B); the minibatch scale N / B never enters; beta stays at the annealed site."""
    vae, x = vae_and_x
    pyro.set_rng_seed(3)
    lw = log_weights(vae.model, vae.guide, 5, x, num_data=num_data, beta=beta)
    assert lw.log_w.shape == (5, 7)
    torch.testing.assert_close(lw.log_w, by_hand(vae, x, 5, seed=3, beta=beta), rtol=1e-5, atol=1e-5)


def test_site_scales_false_gives_the_plain_log_weights(vae_and_x):
    vae, x = vae_and_x
    pyro.set_rng_seed(4)
    lw = log_weights(vae.model, vae.guide, 3, x, num_data=700, beta=0.3, site_scales=False)
    torch.testing.assert_close(lw.log_w, by_hand(vae, x, 3, seed=4, beta=1.0), rtol=1e-5, atol=1e-5)


def test_detached_guide_keeps_only_the_score_of_log_q(vae_and_x):
    """With detached draws, log p has no gradient in the encoder (no reparameterization) but log q has."""
    vae, x = vae_and_x
    lw = log_weights(vae.model, vae.guide, 4, x, detach_guide=True)
    enc = list(vae.encoder.parameters())
    assert all(g is None for g in torch.autograd.grad(lw.log_p.sum(), enc, allow_unused=True))
    assert any(g is not None and bool(g.abs().sum() > 0) for g in torch.autograd.grad(lw.log_q.sum(), enc, allow_unused=True))
    attached = log_weights(vae.model, vae.guide, 4, x)
    assert any(g is not None for g in torch.autograd.grad(attached.log_p.sum(), enc, allow_unused=True))


def test_a_global_latent_or_a_missing_proposal_is_refused():
    def model(x):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(torch.zeros(x.shape[1]), scale.unsqueeze(-1)).to_event(1), obs=x)

    loc = nn.Parameter(torch.zeros(()))

    def guide(x):
        pyro.sample("scale", dist.LogNormal(loc, 1.0))

    with pytest.raises(UnsupportedModelError, match="inside the data plate"):
        log_weights(model, guide, 3, torch.randn(6, 2))
    with pytest.raises(UnsupportedModelError, match="does not sample the model's latent"):
        log_weights(model, lambda x: None, 3, torch.randn(6, 2))
