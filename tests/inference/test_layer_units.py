"""Active units and KL per unit of every latent site, by Monte Carlo over the guide's draws."""

from __future__ import annotations

import pyro
import pytest
import torch

from inference.evaluate import active_units, evaluate_vae, kl_per_dimension
from inference.layer_units import layer_units
from pyro_vae import build_program, build_vae
from pyro_vae.errors import ConfigError
from pyro_vae.spec import ModelSpec

SMALL = dict(latent_dim=3, encoder={"name": "mlp", "hidden": [16]}, decoder={"name": "mlp", "hidden": [16]})


def test_one_layer_matches_the_analytic_kl_per_dimension_within_monte_carlo_error():
    """Diagonal q against N(0, I): the per-unit KL is analytic (kl_per_dimension); the Monte Carlo one of
    S x N draws is within 5 standard errors, the s.e. from the spread of the single-draw terms."""
    torch.manual_seed(0)
    vae = build_vae(data_dim=6, seed=0, **SMALL)
    x = torch.rand(20, 6).round()
    S = 2000
    pyro.set_rng_seed(0)
    units = layer_units(vae, x, num_samples=S, threshold=0.0)["z"]
    exact = kl_per_dimension(vae, x)
    with torch.no_grad():
        q = vae.posterior(x)
        z = q.sample((S,))
        terms = q.base_dist.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)
    se = terms.reshape(-1, 3).std(0) / (S * 20) ** 0.5
    assert ((units.kl_per_unit - exact).abs() < 5 * se).all()
    count, variances = active_units(vae, x, threshold=0.0)
    assert units.active == count == 3
    assert torch.allclose(units.variances, variances, rtol=0.2)  # E_q[z|x] by S draws: relative MC error ~ 1 / sqrt(S)


def test_two_layers_report_each_site_and_sum_to_the_elbo_kl():
    program = build_program(ModelSpec(program={"name": "hierarchical", "top_hidden": [8]}, latent_dim=4,
                                      encoder={"name": "mlp", "hidden": [16]}, decoder={"name": "mlp", "hidden": [16]}),
                            data_dim=6, seed=0)
    x = torch.rand(10, 6).round()
    units = layer_units(program, x, num_samples=50)
    assert set(units) == {"z1", "z2"}
    assert units["z1"].kl_per_unit.shape == (4,) and units["z2"].kl_per_unit.shape == (2,)
    assert torch.isfinite(units["z1"].kl_per_unit).all() and torch.isfinite(units["z2"].kl_per_unit).all()
    ev = evaluate_vae(program, x, num_samples=20, elbo_particles=10, kl_samples=20, progress=False, seed=0)
    assert len(ev.kl_per_dim) == 6  # z1's units, then z2's


def test_flow_guides_have_no_per_unit_kl_and_bad_arguments_are_named():
    vae = build_vae(data_dim=6, seed=0, guide="iaf", **SMALL)
    units = layer_units(vae, torch.rand(5, 6).round(), num_samples=10)["z"]
    assert torch.isnan(units.kl_per_unit).all() and units.variances.shape == (3,)
    with pytest.raises(ConfigError, match="num_samples"):
        layer_units(vae, torch.rand(5, 6).round(), num_samples=0)
    with pytest.raises(ConfigError, match="at least 2 rows"):
        layer_units(vae, torch.rand(1, 6).round())


def test_a_discrete_latent_has_no_units_and_is_left_out():
    """M2's class label y is a latent site without units: only z is reported, with its own latent size."""
    m2 = build_program({"program": {"name": "m2", "classes": 3}, "latent_dim": 2,
                        "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]}},
                       data_dim=6, seed=0)
    units = layer_units(m2, torch.rand(10, 6).round(), num_samples=5)
    assert list(units) == ["z"] and units["z"].variances.shape == (2,)
