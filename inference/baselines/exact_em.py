r"""Ground truth for Monte Carlo EM on the linear-Gaussian model (pPCA): Tipping & Bishop's EM, E-step in closed form.

For x = W z + mu + eps, z ~ N(0, I), eps ~ N(0, sigma^2 I), each step (W, sigma) <- em_step(X, W, mu,
sigma) (:func:`pyro_vae.linear_gaussian.em_step`) never decreases
l = (1/N) sum_i log N(x_i; mu, W W^T + sigma^2 I), and the iterates converge to the ML solution
(:func:`pyro_vae.linear_gaussian.ml_solution`) up to a rotation of W.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pyro_vae.checks import positive_int
from pyro_vae.errors import ConfigError
from pyro_vae.linear_gaussian import em_step, log_marginal

logger = logging.getLogger(__name__)

Tensor = torch.Tensor


@dataclass(frozen=True)
class EMResult:
    """Outcome of :func:`exact_em` (float64).

    ``log_likelihood[t]``: (1/N) sum_i log N(x_i; mu, W_t W_t^T + sigma_t^2 I) after t EM steps
    (t = 0 is the initialization); ``iterations``: EM steps taken; ``converged``: whether the last
    step raised the per-datapoint log-likelihood by less than ``tol``.
    """

    W: Tensor
    mu: Tensor
    sigma: Tensor
    log_likelihood: tuple[float, ...]
    iterations: int
    converged: bool


def exact_em(
    X: Tensor,
    latent_dim: int,
    *,
    iterations: int = 10_000,
    tol: float = 1e-12,
    init: tuple[Tensor, Tensor | float] | None = None,
    seed: int = 0,
) -> EMResult:
    r"""Tipping & Bishop's EM for pPCA, E-step in closed form (:func:`pyro_vae.linear_gaussian.em_step`).

    mu = the sample mean (its ML value, fixed); from (W_0, sigma_0), repeat
    (W, sigma) <- em_step(X, W, mu, sigma) and record
    l_t = (1/N) sum_i log N(x_i; mu, W_t W_t^T + sigma_t^2 I), which never decreases, until
    l_{t+1} - l_t < ``tol`` or ``iterations`` steps. ``init``: (W_0, sigma_0); default W_0 with
    N(0, s^2) entries and sigma_0 = s, s^2 = tr(S) / D (S the sample covariance), from ``seed``.
    The limit is the ML solution (:func:`pyro_vae.linear_gaussian.ml_solution`) up to a rotation of W.
    """
    X = torch.as_tensor(X, dtype=torch.float64)
    if X.dim() != 2:
        raise ConfigError(f"X must be an (N, D) matrix, got shape {tuple(X.shape)}")
    D = X.shape[1]
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or not 1 <= latent_dim < D:
        raise ConfigError(f"latent_dim must be an integer with 1 <= latent_dim < D = {D}, got {latent_dim!r}")
    positive_int("iterations", iterations)
    if not tol >= 0:
        raise ConfigError(f"tol must be >= 0, got {tol!r}")
    mu = X.mean(0)
    if init is None:
        s = float(((X - mu).pow(2).sum(1).mean() / D).sqrt())
        g = torch.Generator().manual_seed(seed)
        W, sigma = s * torch.randn(D, latent_dim, generator=g, dtype=torch.float64), torch.tensor(s, dtype=torch.float64)
    else:
        W, sigma = (torch.as_tensor(v, dtype=torch.float64) for v in init)
        if W.shape != (D, latent_dim) or not float(sigma) > 0:
            raise ConfigError(f"init must be (W of shape {(D, latent_dim)}, sigma > 0), got W {tuple(W.shape)}, sigma {float(sigma)}")
    history = [float(log_marginal(X, W, mu, sigma).mean())]
    converged = False
    t = 0
    for t in range(1, iterations + 1):
        W, sigma = em_step(X, W, mu, sigma)
        history.append(float(log_marginal(X, W, mu, sigma).mean()))
        if history[-1] - history[-2] < tol:
            converged = True
            break
    logger.info("exact_em: %d iterations, log-likelihood %.6f -> %.6f per datapoint%s", t, history[0], history[-1],
                "" if converged else f" (not converged to tol {tol})")
    return EMResult(W, mu, sigma, tuple(history), t, converged)



__all__ = ["EMResult", "exact_em"]
