"""Every prior and every likelihood trains: a short SVI run improves the validation ELBO.

The improvement must exceed 4 standard errors of the difference of the two per-datapoint
validation ELBO estimates (each estimated with many particles), so noise cannot pass it.
"""

from __future__ import annotations

import math

import pytest
import torch

from inference import evaluate, svi
from pyro_vae import PRIORS, LIKELIHOODS, build_vae
from pyro_vae.data import DataSplits, load_dataset
from pyro_vae.spec import TrainSpec

SMALL = {"encoder": {"name": "mlp", "hidden": [32]}, "decoder": {"name": "mlp", "hidden": [32]}}


def digits_for(likelihood: str) -> DataSplits:
    """The digits, transformed into each likelihood's support."""
    if likelihood == "bernoulli":
        return load_dataset("digits", binarize="threshold", seed=0)
    d = load_dataset("digits", seed=0)
    f = {
        "beta": lambda x: x * 0.98 + 0.01,
        "poisson": lambda x: torch.round(x * 16),
    }.get(likelihood, lambda x: x)
    return DataSplits(d.name, f(d.train), f(d.val), f(d.test), d.train_labels, d.val_labels, d.test_labels, d.image_shape, "none")


def val_elbo(vae, x) -> evaluate.Estimate:
    torch.manual_seed(123)
    return evaluate.elbo(vae.model, vae.guide, x, estimator="A", num_particles=20)


def improves(vae, data, epochs=4, **train) -> None:
    before = val_elbo(vae, data.val)
    svi.fit(vae, data, TrainSpec(epochs=epochs, batch_size=64, lr=3e-3, seed=0, **train), progress=False)
    after = val_elbo(vae, data.val)
    diff = after.values - before.values
    se = float(diff.std() / math.sqrt(len(diff)))
    assert after.mean - before.mean > 4 * se, (before.mean, after.mean, se)


@pytest.mark.parametrize("prior", PRIORS.names())
def test_every_prior_trains(prior):
    data = digits_for("bernoulli")
    vae = build_vae(data_dim=data.feature_dim, latent_dim=3, prior=prior, data_sample=data.train[:100], seed=0, **SMALL)
    improves(vae, data)


@pytest.mark.parametrize("likelihood", LIKELIHOODS.names())
def test_every_likelihood_trains(likelihood):
    data = digits_for(likelihood)
    vae = build_vae(data_dim=data.feature_dim, latent_dim=3, likelihood=likelihood, seed=0, **SMALL)
    improves(vae, data)


@pytest.mark.parametrize("guide", ["lowrank_normal", "full_normal"])
@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_richer_guides_train_under_both_estimators(guide, elbo):
    data = digits_for("bernoulli")
    vae = build_vae(data_dim=data.feature_dim, latent_dim=3, guide=guide, seed=0, **SMALL)
    improves(vae, data, elbo=elbo)


def test_conv_networks_train():
    data = digits_for("bernoulli")
    vae = build_vae(
        data_dim=data.feature_dim, image_shape=data.image_shape, latent_dim=3, seed=0,
        encoder={"name": "conv", "channels": [8, 16]}, decoder={"name": "conv", "channels": [8, 16]},
    )
    improves(vae, data, epochs=3)
