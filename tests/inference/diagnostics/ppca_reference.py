"""The reference case of the diagnostics tests: probabilistic PCA, whose posterior p(z | x) = N(m_i, Sigma)
and log p(x) are known in closed form.

Tolerances are 4 standard errors: of per-datapoint differences (Monte Carlo estimates against exact
values), of a median of k-hats, or of an importance-weighted moment (from the PSIS effective sample
size). One-sided tests are used where the math only bounds a quantity (an IS estimate of log p(x) is
a stochastic lower bound; the ELBO of a fitted q* cannot exceed that of the optimal one).
"""

from __future__ import annotations

import torch

from pyro_vae.linear_gaussian import linear_gaussian_vae, set_gaussian_posterior

F64 = torch.float64
D, d, N, SIGMA = 5, 2, 20, 0.5


def ppca_data(n: int, seed: int = 0, sigma: float = SIGMA, correlated: bool = True):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, d, generator=g, dtype=F64)
    if correlated:  # the posterior covariance is then far from diagonal (a mean-field q cannot hold it)
        W[:, 1] += 0.8 * W[:, 0]
    mu = torch.randn(D, generator=g, dtype=F64)
    z = torch.randn(n, d, generator=g, dtype=F64)
    x = z @ W.T + mu + sigma * torch.randn(n, D, generator=g, dtype=F64)
    return W, mu, x


def posterior_map(W, mu):
    """A = M^-1 W^T (the posterior mean is A (x - mu)) and the exact posterior covariance."""
    M = W.T @ W + SIGMA**2 * torch.eye(d, dtype=F64)
    A = torch.linalg.solve(M, W.T)
    return A, SIGMA**2 * torch.linalg.inv(M)


def scaled_guide(W, mu, factor: float):
    """pPCA whose guide has the exact posterior mean and ``factor`` x the exact covariance."""
    vae = linear_gaussian_vae(W, mu, SIGMA, seed=0)
    A, cov = posterior_map(W, mu)
    set_gaussian_posterior(vae, A, -A @ mu, factor * cov)
    return vae


def is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"
