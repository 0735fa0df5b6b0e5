r"""Priors p(z) over the latent code z in R^D.

Every prior is a small ``torch.nn.Module`` whose ``forward()`` returns a Pyro distribution
with ``event_shape == (D,)`` and ``batch_shape == ()``; learnable priors keep their
parameters as module parameters, so they train with the rest of the VAE. ``marginals()``
returns the D one-dimensional marginals p(z_d) as a distribution of ``batch_shape (D,)``
(used for KL per latent dimension).

Registered priors (``PRIORS.names()``):

- ``normal``: p(z) = N(z; 0, I).
- ``learnable_normal``: p(z) = N(z; mu, diag(sigma^2)) with mu, sigma learned.
- ``laplace``: p(z) = prod_d Laplace(z_d; 0, b).
- ``student_t``: p(z) = prod_d StudentT(z_d; nu, 0, 1).
- ``mixture``: p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)), pi, mu, sigma learned.
- ``vamp``: VampPrior (Tomczak & Welling 2018), p(z) = (1/K) sum_k q_phi(z | u_k) with
  learnable pseudo-inputs u_k pushed through the encoder (``flow_base``: with a flow guide, its
  base Gaussians at the u_k).
"""

from __future__ import annotations

import math


import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from pyro_vae.checks import boolean, positive_float, positive_int
from pyro_vae.errors import ConfigError
from pyro_vae.numerics import inverse_softplus
from pyro_vae.registry import BuildContext, Registry

PRIORS: Registry[nn.Module] = Registry("prior")




class StandardNormalPrior(nn.Module):
    """p(z) = N(z; 0, I)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)

    def marginals(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale)


class LearnableNormalPrior(nn.Module):
    """p(z) = N(z; mu, diag(sigma^2)), sigma = softplus(rho)."""

    def __init__(self, latent_dim: int, init_scale: float = 1.0) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.rho = nn.Parameter(torch.full((latent_dim,), inverse_softplus(init_scale)))

    def forward(self) -> dist.Distribution:
        return self.marginals().to_event(1)

    def marginals(self) -> dist.Distribution:
        return dist.Normal(self.loc, softplus(self.rho) + 1e-5)


class FactorizedPrior(nn.Module):
    """p(z) = prod_d p_0(z_d) for a fixed one-dimensional p_0 (Laplace, Student-t)."""

    def __init__(self, base: dist.Distribution) -> None:
        super().__init__()
        # the parameters as buffers, so that .to(device) / .double() move them with the module; not in the
        # state_dict (they are fixed by the spec), so checkpoints written before keep loading
        self._family, self._names = type(base), tuple(base.arg_constraints)
        for name in self._names:
            self.register_buffer(name, getattr(base, name).detach().clone(), persistent=False)

    @property
    def base(self) -> dist.Distribution:
        return self._family(**{name: getattr(self, name) for name in self._names})

    def forward(self) -> dist.Distribution:
        return self.base.to_event(1)

    def marginals(self) -> dist.Distribution:
        return self.base


class MixtureOfGaussiansPrior(nn.Module):
    """p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)); pi = softmax(a), sigma = softplus(rho)."""

    def __init__(self, latent_dim: int, components: int, init_spread: float = 2.0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)  # means spread deterministically
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(init_spread * torch.randn(components, latent_dim, generator=generator))
        self.rho = nn.Parameter(torch.full((components, latent_dim), inverse_softplus(1.0)))

    def forward(self) -> dist.Distribution:
        return diagonal_normal_mixture(self.logits, self.loc, softplus(self.rho) + 1e-5)

    def marginals(self) -> dist.Distribution:
        scale = softplus(self.rho) + 1e-5
        d = self.loc.shape[-1]
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits.expand(d, -1)),
            dist.Normal(self.loc.T, scale.T),
        )


class DiagonalNormalMixture(dist.MixtureSameFamily):
    """sum_k pi_k N(z; mu_k, diag sigma_k^2), scored without a (..., K, D) intermediate.

    log N(z; mu_k, sigma_k) = -1/2 [z^2 . s_k - 2 z . (mu_k s_k) + mu_k^2 . s_k] - sum_d log sigma_kd - D/2 log 2 pi,
    s_k = sigma_k^-2: two matrix products (in float64: the expanded square cancels) give all K
    components of every z at once. Build it with :func:`diagonal_normal_mixture`; expanded copies
    (a data plate) keep the K x D parameters. Sampling and everything else are ``MixtureSameFamily``'s.
    """

    _flat: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (logits (K,), loc (K, D), scale (K, D))

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new._flat = self._flat
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._flat is None:
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        logits, loc, scale = (t.double() for t in self._flat)
        prec = scale.pow(-2)  # (K, D)
        z = value.reshape(-1, loc.shape[-1]).double()
        quad = z.pow(2) @ prec.T - 2 * z @ (loc * prec).T + (loc.pow(2) * prec).sum(-1)  # (N, K)
        log_norm = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)
        out = torch.logsumexp(torch.log_softmax(logits, -1) - 0.5 * quad - log_norm, dim=-1)
        out = out.reshape(value.shape[:-1]).to(value.dtype)
        return out.expand(torch.broadcast_shapes(out.shape, self.batch_shape))


def diagonal_normal_mixture(logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> DiagonalNormalMixture:
    """p(z) = sum_k softmax(logits)_k N(z; loc_k, diag scale_k^2), loc and scale (K, D): batch_shape (), event (D,)."""
    mixture = DiagonalNormalMixture(dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1))
    mixture._flat = (logits, loc, scale)
    return mixture


class VampPrior(nn.Module):
    """p(z) = (1/K) sum_k q_phi(z | u_k), u_k learnable pseudo-inputs (Tomczak & Welling 2018).

    ``flow_base``: with a flow guide (a Gaussian base N(mu_phi(x), diag sigma_phi(x)^2) pushed
    through flows) the components are the base Gaussians N(mu_phi(u_k), diag sigma_phi(u_k)^2)
    instead of the flows: a mixture of Gaussians placed by the encoder. Scoring a z under K
    conditioned flows needs inverses that IAF and the spline flow compute one coordinate at a
    time and planar and Sylvester flows do not have.
    """

    def __init__(self, posterior, pseudo_inputs: torch.Tensor, flow_base: bool = False) -> None:
        super().__init__()
        self._posterior = posterior  # a function, not a submodule: the VAE owns the encoder
        self.pseudo_inputs = nn.Parameter(pseudo_inputs)
        self.flow_base = flow_base

    def components(self) -> dist.Distribution:
        q = self._posterior(self.pseudo_inputs)
        return q.base_dist if self.flow_base and isinstance(q, dist.TransformedDistribution) else q

    def forward(self) -> dist.Distribution:
        q = self.components()
        k = self.pseudo_inputs.shape[0]
        logits = torch.zeros(k, device=self.pseudo_inputs.device)
        normal = q.base_dist if isinstance(q, dist.Independent) else None
        if isinstance(normal, dist.Normal) and normal.loc.dim() == 2:  # diagonal components: the fast mixture
            return diagonal_normal_mixture(logits, normal.loc, normal.scale)
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), q)

    def marginals(self) -> dist.Distribution:
        q = self.components()
        loc, scale = q.mean, q.variance.sqrt()  # q is Gaussian: its marginals are exact
        k, d = loc.shape
        return dist.MixtureSameFamily(
            dist.Categorical(logits=torch.zeros(d, k, device=loc.device)),
            dist.Normal(loc.T, scale.T),
        )


@PRIORS.register("normal")
def normal(latent_dim: int, *, context: BuildContext) -> nn.Module:
    """Standard normal N(0, I) (the AEVB prior)."""
    return StandardNormalPrior(latent_dim)


@PRIORS.register("learnable_normal")
def learnable_normal(latent_dim: int, *, context: BuildContext, init_scale: float = 1.0) -> nn.Module:
    """Diagonal normal N(mu, diag sigma^2) with learned mu and sigma."""
    return LearnableNormalPrior(latent_dim, positive_float("learnable_normal prior: init_scale", init_scale))


@PRIORS.register("laplace")
def laplace(latent_dim: int, *, context: BuildContext, scale: float = 1.0) -> nn.Module:
    """Factorized Laplace(0, b) with fixed scale b."""
    scale = positive_float("laplace prior: scale", scale)
    return FactorizedPrior(dist.Laplace(torch.zeros(latent_dim), torch.full((latent_dim,), scale)))


@PRIORS.register("student_t")
def student_t(latent_dim: int, *, context: BuildContext, df: float = 3.0, scale: float = 1.0) -> nn.Module:
    """Factorized Student-t(nu, 0, s) with fixed degrees of freedom nu."""
    df, scale = positive_float("student_t prior: df", df), positive_float("student_t prior: scale", scale)
    return FactorizedPrior(
        dist.StudentT(torch.full((latent_dim,), df), torch.zeros(latent_dim), torch.full((latent_dim,), scale))
    )


@PRIORS.register("mixture")
def mixture(latent_dim: int, *, context: BuildContext, components: int = 10, init_spread: float = 2.0) -> nn.Module:
    """Mixture of K diagonal Gaussians with learned weights, means and scales."""
    return MixtureOfGaussiansPrior(latent_dim, positive_int("mixture prior: components", components), float(init_spread))


@PRIORS.register("vamp")
def vamp(latent_dim: int, *, context: BuildContext, components: int = 50, flow_base: bool = False) -> nn.Module:
    """VampPrior: mixture of q(z|u_k) over K learned pseudo-inputs u_k (``flow_base``: of a flow guide's base Gaussians)."""
    k = positive_int("vamp prior: components", components)
    flow_base = boolean("vamp prior: flow_base", flow_base)
    if context.posterior is None:
        raise ConfigError("vamp prior needs the encoder: build it through pyro_vae.build_vae")
    sample = context.data_sample
    if sample is not None and len(sample) > 0:
        g = torch.Generator().manual_seed(0)
        idx = torch.randint(len(sample), (k,), generator=g)
        init = sample[idx].float() + 0.01 * torch.randn(k, context.data_dim, generator=g)
    else:
        init = 0.5 + 0.01 * torch.randn(k, context.data_dim, generator=torch.Generator().manual_seed(0))
    prior = VampPrior(context.posterior, init, flow_base)
    _check_scores(prior, latent_dim)
    return prior


def _check_scores(prior: VampPrior, latent_dim: int) -> None:
    """ConfigError when the guide family cannot score a point under its K components (a flow without a batched inverse)."""
    try:
        with torch.no_grad():
            prior().log_prob(torch.zeros(1, latent_dim))
    except (RuntimeError, KeyError, NotImplementedError) as err:
        raise ConfigError(f"vamp prior: this guide family cannot score z under q(z | u_k) for its pseudo-inputs "
                          f"({type(err).__name__}); set the prior option flow_base: true (components = the flow's "
                          "base Gaussians), or use guide diag_normal, lowrank_normal, full_normal or householder") from err
