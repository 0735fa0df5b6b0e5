"""The CVAE on digits: trained by the one SVI loop, it beats the deterministic baseline's conditional NLL."""

from __future__ import annotations

import math

import pytest
import torch

from inference import svi
from inference.completion.yardstick import score_conditional
from pyro_vae import build_program, load_dataset

NETS = {"latent_dim": 4, "encoder": {"name": "mlp", "hidden": [128]}, "decoder": {"name": "mlp", "hidden": [128]}}
TRAIN = {"epochs": 30, "lr": 3e-3, "batch_size": 64, "seed": 0}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", binarize="dynamic", seed=0)


def fitted(name, data):
    program = build_program({"program": {"name": name, "observed": 1}, **NETS}, data_dim=64, image_shape=(8, 8), seed=0)
    svi.fit(program, data, TRAIN, progress=False)
    return program


def test_a_cvae_beats_the_deterministic_baseline_on_one_observed_quadrant(digits):
    """Same data, networks, loop and seed; completing 3 quadrants from 1 is ambiguous, which a latent
    variable models and a point prediction cannot. The paired per-datapoint difference of the conditional
    log-likelihoods must exceed 4 of its standard errors."""
    cvae, base = fitted("cvae", digits), fitted("cvae_baseline", digits)
    ll_cvae = score_conditional(cvae, digits.test, num_samples=500).log_likelihood.values
    ll_base = score_conditional(base, digits.test, num_samples=2).log_likelihood.values  # exact: no latent
    diff = ll_cvae - ll_base
    se = float(diff.std() / math.sqrt(len(diff)))
    assert float(diff.mean()) > 4 * se, (float(diff.mean()), se)
    comps = cvae.complete(digits.test[:5], 6, mean=False)
    assert comps.shape == (6, 5, 64) and torch.equal(comps[:, :, cvae.task.mask], digits.test[:5, cvae.task.mask].expand(6, 5, -1))


@pytest.mark.parametrize("program", ["cvae_baseline", "cvae"])
def test_the_method_interface_fits_and_scores_conditional_programs(program):
    """methods.fit / score take a spec naming a conditional program like any other, so comparison tables can hold
    the deterministic baseline and the CVAE; the score is the one yardstick, here log p(y | c)."""
    from inference.methods import fit, score

    data = load_dataset("digits", binarize="threshold", max_train=300)
    spec = {"model": {"program": {"name": program, "observed": 2}, "latent_dim": 2,
                      "encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}}}
    result = fit(spec, data, method="svi-trace", budget="1epochs", progress=False)
    est = score(result, data.test[:20], num_samples=10)
    assert math.isfinite(est.mean)
    if program == "cvae_baseline":  # no latent: both estimates are the exact log p(y | c)
        direct = score_conditional(result.vae, data.test[:20], num_samples=10)
        assert est.mean == pytest.approx(direct.log_likelihood.mean, abs=1e-5)
