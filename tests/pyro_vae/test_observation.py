"""The observation models of completion as generative programs: model(x=None) draws from p(z) p(x_obs | z).

On pPCA the observed features are marginally N(mu_o, C_oo), C = W W^T + sigma^2 I; n draws put each sample mean
within 5 standard errors sqrt(C_jj / n) of mu_j.
"""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae.linear_gaussian import linear_gaussian_vae, marginal_covariance, simulate
from pyro_vae.observation import ObservedPart

D, d, SIGMA = 6, 2, 0.5
MASK = torch.tensor([True, True, False, True, False, False])


def test_the_observed_part_generates_rows_with_the_marginal_mean_of_the_observed_features():
    _, W, mu = simulate(5, D, d, SIGMA, seed=3)
    part = ObservedPart(linear_gaussian_vae(W, mu, SIGMA, seed=0), MASK)
    pyro.set_rng_seed(0)
    n = 4000
    trace = poutine.trace(part.model).get_trace(None, num_samples=n)
    x, z = trace.nodes["x"]["value"], trace.nodes["z"]["value"]
    assert x.shape == (n, D) and z.shape == (n, d)
    se = (marginal_covariance(W, SIGMA).diagonal() / n).sqrt()
    assert ((x.mean(0) - mu).abs()[MASK] <= 5 * se[MASK]).all()
    assert trace.nodes["x"]["fn"].log_prob(x).shape == (n,)  # the missing features are masked out, not dropped


def test_generating_needs_a_number_of_rows():
    _, W, mu = simulate(5, D, d, SIGMA, seed=3)
    part = ObservedPart(linear_gaussian_vae(W, mu, SIGMA, seed=0), MASK)
    with pytest.raises(ValueError, match="num_samples"):
        part.model(None)
