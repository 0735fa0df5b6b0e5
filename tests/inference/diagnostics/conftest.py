"""Fixtures of the diagnostics tests: the pPCA reference model (ppca_reference.py) and chains that did not mix."""

from __future__ import annotations

import pytest
import torch

from inference.mcmc import sample_latents
from pyro_vae.linear_gaussian import linear_gaussian_vae, set_exact_posterior

from ppca_reference import F64, N, SIGMA, d, ppca_data


@pytest.fixture(scope="module")
def ppca():
    W, mu, x = ppca_data(N)
    vae = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    set_exact_posterior(vae)
    return vae, x, W, mu


@pytest.fixture(scope="module")
def short_nuts(ppca):
    """Chains that did not mix: started at z = +5 and z = -5, no warm-up, 50 short (depth-2) NUTS transitions."""
    vae, x, _, _ = ppca
    init = torch.stack([torch.full((N, d), 5.0, dtype=F64), torch.full((N, d), -5.0, dtype=F64)])
    return sample_latents(vae, x, num_samples=50, warmup=0, num_chains=2, max_tree_depth=2, init=init, seed=0,
                          progress=False)
