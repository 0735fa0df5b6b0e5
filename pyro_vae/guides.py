r"""Amortized variational families q_phi(z | x).

The encoder network g_phi maps x to ``family.param_size`` raw numbers eta; the family turns
them into a Gaussian distribution over z in R^D with ``batch_shape == x.shape[:-1]`` and
``event_shape == (D,)``. All families are reparameterizable (z = mu + L eps, eps ~ N(0, I)),
which SGVB needs.

Registered families (``GUIDES.names()``):

- ``diag_normal``: q(z | x) = N(mu(x), diag sigma(x)^2), the AEVB guide; 2D parameters.
- ``lowrank_normal``: q(z | x) = N(mu(x), F(x) F(x)^T + diag d(x)), F of shape D x r; (2 + r) D.
- ``full_normal``: q(z | x) = N(mu(x), L(x) L(x)^T), L lower-triangular with positive
  diagonal; D + D(D + 1)/2 parameters.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import Independent, LowRankMultivariateNormal, MultivariateNormal, Normal
from torch.distributions.kl import kl_divergence, register_kl
from torch.nn.functional import softplus

from pyro_vae.checks import integer
from pyro_vae.registry import BuildContext, Registry

GUIDES: Registry[nn.Module] = Registry("guide")

_MIN_SCALE = 1e-4


class DiagonalNormal(nn.Module):
    """eta = (mu, rho) -> N(mu, diag softplus(rho)^2)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.param_size = 2 * latent_dim

    def forward(self, eta: torch.Tensor) -> dist.Distribution:
        loc, rho = eta.split(self.latent_dim, dim=-1)
        return dist.Normal(loc, softplus(rho) + _MIN_SCALE).to_event(1)


class LowRankNormal(nn.Module):
    """eta = (mu, F, rho) -> N(mu, F F^T + diag softplus(rho))."""

    def __init__(self, latent_dim: int, rank: int) -> None:
        super().__init__()
        self.latent_dim, self.rank = latent_dim, rank
        self.param_size = (2 + rank) * latent_dim

    def forward(self, eta: torch.Tensor) -> dist.Distribution:
        d, r = self.latent_dim, self.rank
        loc, factor, rho = eta.split([d, d * r, d], dim=-1)
        factor = factor.reshape(*eta.shape[:-1], d, r)
        return dist.LowRankMultivariateNormal(loc, factor, softplus(rho) + _MIN_SCALE)


class FullNormal(nn.Module):
    """eta = (mu, l) -> N(mu, L L^T), L = tril(l) with softplus on the diagonal."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.param_size = latent_dim + latent_dim * (latent_dim + 1) // 2
        rows, cols = torch.tril_indices(latent_dim, latent_dim)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, eta: torch.Tensor) -> dist.Distribution:
        d = self.latent_dim
        loc, entries = eta.split([d, self.param_size - d], dim=-1)
        tril = eta.new_zeros(*eta.shape[:-1], d, d)
        tril[..., self.rows, self.cols] = entries
        diag = softplus(tril.diagonal(dim1=-2, dim2=-1)) + _MIN_SCALE
        tril = tril.tril(-1) + torch.diag_embed(diag)
        return dist.MultivariateNormal(loc, scale_tril=tril)


@GUIDES.register("diag_normal")
def diag_normal(latent_dim: int, *, context: BuildContext) -> nn.Module:
    """Diagonal Gaussian q(z|x) = N(mu(x), diag sigma(x)^2) (AEVB)."""
    return DiagonalNormal(latent_dim)


@GUIDES.register("lowrank_normal")
def lowrank_normal(latent_dim: int, *, context: BuildContext, rank: int = 2) -> nn.Module:
    """Low-rank-plus-diagonal Gaussian q(z|x) = N(mu, F F^T + diag d), rank 1 .. latent_dim."""
    return LowRankNormal(latent_dim, integer(f"lowrank_normal guide: rank (latent_dim = {latent_dim})", rank,
                                             minimum=1, maximum=latent_dim))


@GUIDES.register("full_normal")
def full_normal(latent_dim: int, *, context: BuildContext) -> nn.Module:
    """Full-covariance Gaussian q(z|x) = N(mu(x), L(x) L(x)^T)."""
    return FullNormal(latent_dim)


@register_kl(MultivariateNormal, Independent)
@register_kl(LowRankMultivariateNormal, Independent)
def _kl_gaussian_diagonal(q: torch.distributions.Distribution, p: Independent) -> torch.Tensor:
    """KL(N(mu_q, S_q) || N(mu_p, diag s_p^2)) in closed form, so that estimator B stays
    analytic for the richer guides under a diagonal-normal prior (torch registers only
    MVN -> MVN). Other Independent priors raise NotImplementedError (Monte Carlo fallback)."""
    if not (isinstance(p.base_dist, Normal) and p.reinterpreted_batch_ndims == 1):
        raise NotImplementedError
    p_mvn = MultivariateNormal(p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale))
    return kl_divergence(q, p_mvn)
