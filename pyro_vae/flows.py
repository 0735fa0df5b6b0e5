r"""Amortized normalizing-flow guide families q_phi(z | x), registered in :data:`pyro_vae.guides.GUIDES`.

The encoder g_phi maps x to ``param_size = 2 D + C`` raw numbers eta = (mu, rho, h): a diagonal
Gaussian base and a context h in R^C. K conditional transforms f_1..f_K (Pyro's
``pyro.distributions.transforms``), each conditioned on h, push the base forward::

    eps ~ N(mu(x), diag sigma(x)^2),  sigma = softplus(rho) + 1e-4,
    z = f_K(... f_1(eps; h(x)) ...; h(x)),
    log q(z | x) = log N(eps; mu, diag sigma^2) - sum_k log |det d f_k / d z_{k-1}|.

Registered families (``GUIDES.names()``), options ``num_flows`` (K), ``hidden`` (widths of each
transform's network) and ``context_dim`` (C, default D):

- ``iaf``: inverse autoregressive flow (Kingma et al. 2016), Pyro's conditional affine
  autoregressive transform; ``stable`` uses z' = s z + (1 - s) m, s = sigmoid(.).
- ``householder``: z' = (I - 2 v v^T / |v|^2) z (Tomczak & Welling 2016), v from the context;
  volume-preserving, so it only rotates the base (logdet 0).
- ``planar``: z' = z + u tanh(w^T z + b) (Rezende & Mohamed 2015), u, w, b from the context.
- ``sylvester``: z' = z + Q R tanh(R~ Q^T z + b) (van den Berg et al. 2018), Q a product of
  ``reflections`` Householder matrices, R, R~ upper triangular with diagonals in (-1, 1), all from
  the context; log |det| = sum_i log(1 + tanh'(.)_i R_ii R~_ii).
- ``spline``: neural spline flow (Durkan et al. 2019), Pyro's conditional autoregressive
  rational-quadratic spline with ``count_bins`` bins on [-bound, bound].

All are reparameterizable and vectorized over any batch shape (particles x datapoints): the
context (B, C) broadcasts against z (..., B, D). No KL to a prior has a closed form, so
estimator B falls back to Monte Carlo for them. ``planar`` and ``sylvester`` have no inverse:
they score their own draws (Pyro caches each transform's last input and output) but not other
points, so objectives that score z they did not draw (reweighted wake-sleep) refuse them
(:attr:`FlowPosterior.invertible`).
"""

from __future__ import annotations

from typing import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.transforms import (
    conditional_affine_autoregressive, conditional_householder, conditional_planar, conditional_spline_autoregressive,
)
from pyro.distributions.transforms.planar import ConditionedPlanar
from pyro.nn import DenseNN
from torch import nn
from torch.distributions import Transform
from torch.nn.functional import softplus

from pyro_vae.checks import integer, positive_float, positive_ints
from pyro_vae.guides import GUIDES, _MIN_SCALE
from pyro_vae.registry import BuildContext

Tensor = torch.Tensor
MOMENT_DRAWS = 256  # draws behind FlowPosterior.mean and .variance


class FlowPosterior(dist.TransformedDistribution):
    """A base Gaussian pushed through conditioned transforms (module docstring).

    ``mean`` and ``variance`` have no closed form: they are Monte Carlo estimates from
    :data:`MOMENT_DRAWS` draws (without gradients), for reconstructions, latent plots, active
    units and KL per unit. Taking them leaves the transforms' caches as they were, so the
    distribution's own draws can still be scored afterwards.
    """

    @property
    def mean(self) -> Tensor:
        return self._moments()[0]

    @property
    def variance(self) -> Tensor:
        return self._moments()[1]

    def _moments(self) -> tuple[Tensor, Tensor]:
        saved = [dict(t.__dict__) for t in self.transforms]
        try:
            with torch.no_grad():
                z = self.rsample((MOMENT_DRAWS,))
        finally:
            for t, state in zip(self.transforms, saved):
                t.__dict__.update(state)
        return z.mean(0), z.var(0)

    @property
    def invertible(self) -> bool:
        """Whether log_prob works at any z, not only at this distribution's own latest draws."""
        return not any(isinstance(t, (ConditionedPlanar, ConditionedSylvester)) for t in self.transforms)


class FlowFamily(nn.Module):
    """eta = (mu, rho, h) -> FlowPosterior(N(mu, diag softplus(rho)^2), [f_k conditioned on h])."""

    def __init__(self, latent_dim: int, context_dim: int, transforms: Sequence[ConditionalTransformModule], kind: str) -> None:
        super().__init__()
        self.latent_dim, self.context_dim, self.kind = latent_dim, context_dim, kind
        self.transforms = nn.ModuleList(transforms)
        self.param_size = 2 * latent_dim + context_dim

    def forward(self, eta: Tensor) -> FlowPosterior:
        d = self.latent_dim
        loc, rho, h = eta.split([d, d, self.context_dim], dim=-1)
        base = dist.Normal(loc, softplus(rho) + _MIN_SCALE).to_event(1)
        return FlowPosterior(base, [t.condition(h) for t in self.transforms])


# -- Sylvester flows (Pyro's Sylvester transform is not conditional: this one takes its parameters from h) --
class ConditionedSylvester(Transform):
    """z' = z + Q R tanh(R~ Q^T z + b) with per-datapoint Q (D, D), R, R~ (D, D) and b (D,) (module docstring)."""

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True

    def __init__(self, q: Tensor, r: Tensor, r_tilde: Tensor, b: Tensor) -> None:
        super().__init__(cache_size=1)
        self.q, self.r, self.r_tilde, self.b = q, r, r_tilde, b
        self._logdet: tuple[Tensor, Tensor] | None = None

    def _call(self, x: Tensor) -> Tensor:
        # row vectors: v = Q^T z is x @ Q; (R~ v)^T = v @ R~^T; (Q R h)^T = h @ R^T @ Q^T
        pre = (x.unsqueeze(-2) @ self.q).squeeze(-2)
        pre = (pre.unsqueeze(-2) @ self.r_tilde.transpose(-1, -2)).squeeze(-2) + self.b
        h = torch.tanh(pre)
        y = x + ((h.unsqueeze(-2) @ self.r.transpose(-1, -2)) @ self.q.transpose(-1, -2)).squeeze(-2)
        diag = self.r.diagonal(dim1=-2, dim2=-1) * self.r_tilde.diagonal(dim1=-2, dim2=-1)
        self._logdet = (y, torch.log1p((1 - h.pow(2)) * diag).sum(-1))
        return y

    def _inverse(self, y: Tensor) -> Tensor:
        raise NotImplementedError("a Sylvester flow has no closed-form inverse; it scores only its own draws")

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        if self._logdet is None or self._logdet[0] is not y:
            self._call(x)
        assert self._logdet is not None
        return self._logdet[1]


class ConditionalSylvester(ConditionalTransformModule):
    """Context h -> :class:`ConditionedSylvester` through a dense network (the amortized Sylvester flow)."""

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True

    def __init__(self, latent_dim: int, context_dim: int, hidden: Sequence[int], reflections: int) -> None:
        super().__init__()
        d, m = latent_dim, reflections
        self.latent_dim, self.reflections = d, m
        self.net = DenseNN(context_dim, list(hidden), param_dims=[m * d, d * d, d * d, d])
        self.register_buffer("upper", torch.triu(torch.ones(d, d), diagonal=1), persistent=False)

    def condition(self, context: Tensor) -> ConditionedSylvester:
        d, m = self.latent_dim, self.reflections
        u, r, r_tilde, b = self.net(context)
        u = u.reshape(*u.shape[:-1], m, d)
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        q = torch.eye(d, dtype=u.dtype, device=u.device).expand(*u.shape[:-2], d, d)
        for j in range(m):  # Q <- Q (I - 2 u u^T)
            uj = u[..., j, :]
            q = q - 2 * (q @ uj.unsqueeze(-1)) @ uj.unsqueeze(-2)
        r, r_tilde = r.reshape(*r.shape[:-1], d, d), r_tilde.reshape(*r_tilde.shape[:-1], d, d)
        r = r * self.upper + torch.diag_embed(torch.tanh(r.diagonal(dim1=-2, dim2=-1)))
        r_tilde = r_tilde * self.upper + torch.diag_embed(torch.tanh(r_tilde.diagonal(dim1=-2, dim2=-1)))
        return ConditionedSylvester(q, r, r_tilde, b)


# -- the registered families ---------------------------------------------------------------------------
def _common(kind: str, latent_dim: int, num_flows: int, hidden: Sequence[int] | None, context_dim: int | None,
            default_hidden: int) -> tuple[int, list[int], int]:
    """(K, hidden widths, C) checked: K >= 1, widths positive (default [default_hidden * D]), C >= 1 (default D)."""
    k = integer(f"{kind} guide: num_flows", num_flows, minimum=1)
    widths = [default_hidden * latent_dim] if hidden is None else positive_ints(
        f"{kind} guide: hidden widths", hidden, at_least_one=True, example="[64, 64]")
    c = latent_dim if context_dim is None else integer(f"{kind} guide: context_dim", context_dim, minimum=1)
    return k, widths, c


@GUIDES.register("iaf")
def iaf(latent_dim: int, *, context: BuildContext, num_flows: int = 2, hidden: list[int] | None = None,
        context_dim: int | None = None, stable: bool = True) -> nn.Module:
    """Inverse autoregressive flow (Kingma et al. 2016): K conditional affine autoregressive transforms on a diagonal Gaussian."""
    k, widths, c = _common("iaf", latent_dim, num_flows, hidden, context_dim, 10)
    return FlowFamily(latent_dim, c, [conditional_affine_autoregressive(latent_dim, c, widths, stable=stable)
                                      for _ in range(k)], "iaf")


@GUIDES.register("householder")
def householder(latent_dim: int, *, context: BuildContext, num_flows: int = 2, hidden: list[int] | None = None,
                context_dim: int | None = None) -> nn.Module:
    """Householder flow (Tomczak & Welling 2016): K reflections from the context rotate a diagonal Gaussian."""
    k, widths, c = _common("householder", latent_dim, num_flows, hidden, context_dim, 4)
    integer(f"householder guide: num_flows (reflections; latent_dim = {latent_dim})", k, minimum=1, maximum=latent_dim)
    return FlowFamily(latent_dim, c, [conditional_householder(latent_dim, c, widths, count_transforms=k)], "householder")


@GUIDES.register("planar")
def planar(latent_dim: int, *, context: BuildContext, num_flows: int = 4, hidden: list[int] | None = None,
           context_dim: int | None = None) -> nn.Module:
    """Planar flow (Rezende & Mohamed 2015): K transforms z + u tanh(w^T z + b), parameters from the context."""
    k, widths, c = _common("planar", latent_dim, num_flows, hidden, context_dim, 4)
    return FlowFamily(latent_dim, c, [conditional_planar(latent_dim, c, widths) for _ in range(k)], "planar")


@GUIDES.register("sylvester")
def sylvester(latent_dim: int, *, context: BuildContext, num_flows: int = 2, hidden: list[int] | None = None,
              context_dim: int | None = None, reflections: int = 2) -> nn.Module:
    """Householder-Sylvester flow (van den Berg et al. 2018): K transforms z + Q R tanh(R~ Q^T z + b) from the context."""
    k, widths, c = _common("sylvester", latent_dim, num_flows, hidden, context_dim, 4)
    m = integer("sylvester guide: reflections", reflections, minimum=1)
    return FlowFamily(latent_dim, c, [ConditionalSylvester(latent_dim, c, widths, m) for _ in range(k)], "sylvester")


@GUIDES.register("spline")
def spline(latent_dim: int, *, context: BuildContext, num_flows: int = 1, hidden: list[int] | None = None,
           context_dim: int | None = None, count_bins: int = 8, bound: float = 3.0) -> nn.Module:
    """Neural spline flow (Durkan et al. 2019): K conditional autoregressive rational-quadratic splines."""
    k, widths, c = _common("spline", latent_dim, num_flows, hidden, context_dim, 10)
    bins = integer("spline guide: count_bins", count_bins, minimum=2)
    b = positive_float("spline guide: bound", bound)
    return FlowFamily(latent_dim, c, [conditional_spline_autoregressive(latent_dim, c, widths, count_bins=bins, bound=b)
                                      for _ in range(k)], "spline")


__all__ = ["MOMENT_DRAWS", "FlowPosterior", "FlowFamily", "ConditionalSylvester", "ConditionedSylvester"]
