"""The up-front cost estimate of an IS evaluation."""

from __future__ import annotations

import pytest
import torch

from inference.cost import estimate_log_likelihood_cost
from pyro_vae import build_vae
from pyro_vae.errors import ConfigError


def test_the_estimate_extrapolates_a_pilot_linearly_in_rows():
    vae = build_vae(data_dim=6, latent_dim=2, encoder={"name": "mlp", "hidden": [8]}, decoder={"name": "mlp", "hidden": [8]}, seed=0)
    x = torch.rand(40, 6).round()
    state = torch.get_rng_state()
    est = estimate_log_likelihood_cost(vae.model, vae.guide, x, num_samples=10, batch_size=10)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was
    assert (est.pilot_rows, est.rows, est.num_samples) == (10, 40, 10)
    assert est.seconds == pytest.approx(est.pilot_seconds * 4)
    assert "estimated IS evaluation: 40 rows x K=10" in est.summary()
    with pytest.raises(ConfigError, match="num_samples"):
        estimate_log_likelihood_cost(vae.model, vae.guide, x, num_samples=0)
