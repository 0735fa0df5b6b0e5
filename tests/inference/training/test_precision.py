"""Mixed precision: the networks run in bfloat16 under autocast, their outputs and every density in float32."""

from __future__ import annotations

import math

import torch

from inference import svi
from inference.log_weights import log_weights
from inference.training.precision import networks_autocast
from pyro_vae import build_vae
from pyro_vae.data import load_dataset
from pyro_vae.spec import TrainSpec

SMALL = dict(latent_dim=2, encoder={"name": "mlp", "hidden": [32]}, decoder={"name": "mlp", "hidden": [32]})
BF16_UNIT = 2.0**-8  # bfloat16 keeps 8 significant bits


def test_networks_compute_in_bfloat16_and_hand_float32_to_the_densities():
    vae = build_vae(data_dim=64, seed=0, **SMALL)
    seen = []
    first = next(m for m in vae.encoder.modules() if isinstance(m, torch.nn.Linear))
    first.register_forward_hook(lambda module, inputs, out: seen.append(out.dtype))
    x = torch.bernoulli(load_dataset("digits", max_train=200).train, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    full = log_weights(vae.model, vae.guide, 1, x=x, site_scales=False)
    with networks_autocast(vae, True) as names:
        assert names == ["encoder", "decoder"] and vae.encoder(x).dtype == torch.float32
        torch.manual_seed(0)
        mixed = log_weights(vae.model, vae.guide, 1, x=x, site_scales=False)
    assert seen == [torch.float32, torch.bfloat16, torch.bfloat16]  # outside, inside (direct call), inside
    assert mixed.log_p.dtype == torch.float32 and "forward" not in vars(vae.encoder)  # restored
    a, b = (full.log_p - full.log_q).detach(), (mixed.log_p - mixed.log_q).detach()
    assert float(((a - b).abs() / a.abs()).max()) < BF16_UNIT  # one bfloat16 rounding, at most, per row's ELBO


def test_a_mixed_precision_fit_trains_float32_parameters():
    data = load_dataset("digits", binarize="dynamic", max_train=300)
    vae = build_vae(data_dim=data.feature_dim, seed=0, **SMALL)
    result = svi.fit(vae, data, TrainSpec(epochs=2, batch_size=50, lr=1e-2, mixed_precision=True), progress=False)
    assert all(p.dtype == torch.float32 for p in vae.parameters())
    assert all(math.isfinite(r.train_elbo) for r in result.history)
    assert result.history[1].train_elbo > result.history[0].train_elbo  # it learns


def test_m2s_networks_given_x_and_onehot_apart_run_under_autocast_too():
    """M2 hands an mlp x and onehot(y) as two inputs (pyro_vae.m2.through); the call still goes through the
    module, so the autocast wrapper and hooks see it."""
    from pyro_vae import build_program
    from pyro_vae.spec import ModelSpec

    m2 = build_program(ModelSpec(program={"name": "m2", "classes": 3}, **SMALL), data_dim=64, seed=0)
    seen, called = [], []
    m2.encoder[1].register_forward_hook(lambda module, inputs, out: seen.append(out.dtype))  # the hidden activation
    m2.encoder.register_forward_hook(lambda module, inputs, out: called.append(len(inputs)))
    x = torch.rand(5, 64).round()
    with networks_autocast(m2, True):
        q = m2.posterior_given(x, torch.arange(3).reshape(3, 1))
    m2.posterior_given(x, torch.zeros(5, dtype=torch.long))
    assert seen == [torch.bfloat16, torch.float32] and called == [2, 2]  # two inputs: x and onehot(y), apart
    assert q.batch_shape == (3, 5) and q.mean.dtype == torch.float32
