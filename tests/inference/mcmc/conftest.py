"""Shared by the MCMC tests: a small pPCA problem with an exact posterior, one NUTS run on its
latents (sampled once per session), and ArviZ's effective sample size of the mean.

Tolerances in these tests are 4 Monte Carlo standard errors, the standard errors coming from
the sample standard deviation and the effective sample size of the draws.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import arviz as az
import numpy as np
import pytest
import torch

from inference.mcmc import LatentPosterior, sample_latents
from pyro_vae.linear_gaussian import linear_gaussian_vae, simulate


class PPCA(NamedTuple):
    """x_i ~ N(W z_i + mu, sigma^2 I), z_i ~ N(0, I): data x (N, D), W (D, d), mu (D,), and its VAE."""

    vae: Any
    x: torch.Tensor
    W: torch.Tensor
    mu: torch.Tensor
    sigma: float


def _ess_mean(draws: np.ndarray) -> np.ndarray:
    """ArviZ's ESS for the mean of each coordinate of (chains, draws, ...) draws."""
    return az.ess(az.convert_to_dataset(np.asarray(draws)), method="mean")["x"].values


@pytest.fixture(scope="session")
def ess_mean() -> Callable[[np.ndarray], np.ndarray]:
    return _ess_mean


@pytest.fixture(scope="session")
def ppca() -> PPCA:
    N, D, d, sigma = 20, 4, 2, 0.5
    x, W, mu = simulate(N, D, d, sigma, seed=0)
    return PPCA(linear_gaussian_vae(W, mu, sigma, seed=0), x, W, mu, sigma)


@pytest.fixture(scope="session")
def nuts_settings() -> dict[str, int]:
    return dict(num_samples=250, warmup=150, num_chains=2)


@pytest.fixture(scope="session", params=["nuts", "row_nuts"])
def nuts_run(request, ppca: PPCA, nuts_settings: dict[str, int]) -> LatentPosterior:
    """Pyro's NUTS on the whole block of latents, and one NUTS chain per row."""
    return sample_latents(ppca.vae, ppca.x, seed=0, progress=False, kernel=request.param, **nuts_settings)
