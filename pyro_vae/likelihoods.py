r"""Likelihoods p_theta(x | z) of a datapoint x in R^D given the decoder output f_theta(z).

A likelihood is a small ``torch.nn.Module``: the decoder emits ``params_per_feature * D``
numbers per datapoint, and ``forward(raw)`` turns them into a Pyro distribution with
``event_shape == (D,)``. Each likelihood declares its ``support`` and ``check(x)`` refuses
data outside it with a message that says how to fix the data or which likelihood to use.
Validation stays on: we never hide bad data with ``validate_args=False``.

Registered likelihoods (``LIKELIHOODS.names()``), with eta = decoder output:

- ``bernoulli``: x_d ~ Bernoulli(sigmoid(eta_d)), x in {0, 1}.
- ``continuous_bernoulli``: x_d ~ CB(sigmoid(eta_d)) (Loaiza-Ganem & Cunningham 2019), x in [0, 1].
- ``gaussian``: x_d ~ N(eta_d, sigma^2), sigma fixed.
- ``gaussian_learned``: x_d ~ N(eta_d, sigma_d^2), sigma learned (shared or per feature).
- ``laplace``: x_d ~ Laplace(eta_d, b_d), b learned per feature (or fixed).
- ``beta``: x_d ~ Beta(softplus(eta_d1), softplus(eta_d2)), x in (0, 1).
- ``poisson``: x_d ~ Poisson(softplus(eta_d)), x in {0, 1, 2, ...}.
"""

from __future__ import annotations


import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints
from torch.nn.functional import softplus

from pyro_vae.checks import number, positive_float
from pyro_vae.errors import DataError
from pyro_vae.numerics import inverse_softplus
from pyro_vae.registry import BuildContext, Registry

LIKELIHOODS: Registry[nn.Module] = Registry("likelihood")

_MIN_SCALE = 1e-3




def _first_bad(x: torch.Tensor, bad: torch.Tensor) -> str:
    count = int(bad.sum())
    row, col = (int(i) for i in bad.nonzero()[0]) if x.dim() == 2 else (int(bad.nonzero()[0][0]), 0)
    return f"{count} value(s) (first: {float(x[row, col]):.4g} at row {row}, feature {col})"


class Likelihood(nn.Module):
    """Base class: subclasses set ``name``, ``support``, ``params_per_feature`` and ``forward``."""

    name = "likelihood"
    support: constraints.Constraint = constraints.real
    params_per_feature = 1
    advice = ""

    def check(self, x: torch.Tensor, name: str = "data") -> None:
        """Raise DataError (naming ``name``) if ``x`` is not a float tensor of finite values inside this likelihood's support."""
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise DataError(f"{name} must be a float tensor for the {self.name} likelihood, got "
                            f"{getattr(x, 'dtype', type(x).__name__)}; convert it with x.float()")
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            raise DataError(f"{name} holds non-finite {_first_bad(x, ~finite)}; remove or impute them")
        inside = self.support.check(x)
        if not bool(inside.all()):
            raise DataError(
                f"{name} lies outside the {self.name} likelihood's support {self.support_text()}: "
                f"{_first_bad(x, ~inside)}. {self.advice}"
            )

    def support_text(self) -> str:
        return str(self.support)


class LogitBernoulli(dist.Bernoulli):
    """Bernoulli(logits=l) with log p(x) = x l - softplus(l): torch's value in three elementwise passes instead of
    binary_cross_entropy_with_logits's five, into two new tensors (the likelihood is most of a VAE's scoring time)."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return (value * self.logits).sub_(softplus(self.logits))  # in place: mul's backward keeps its inputs, not its output


class Bernoulli(Likelihood):
    name = "bernoulli"
    support = constraints.boolean
    advice = (
        "Bernoulli needs binary 0/1 data: binarize it (--binarize dynamic or threshold), or use "
        "the 'continuous_bernoulli' or 'beta' likelihood for grey levels in [0, 1]."
    )

    def support_text(self) -> str:
        return "{0, 1}"

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        return LogitBernoulli(logits=raw).to_event(1)


class ContinuousBernoulli(Likelihood):
    name = "continuous_bernoulli"
    support = constraints.unit_interval
    advice = "Rescale the data to [0, 1] (e.g. divide pixels by 255) or use a 'gaussian' likelihood."

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        return dist.ContinuousBernoulli(logits=raw).to_event(1)


class Gaussian(Likelihood):
    """N(eta, sigma^2): sigma fixed (``learn=None``), one learned sigma, or one per feature."""

    name = "gaussian"
    support = constraints.real

    def __init__(self, data_dim: int, sigma: float, learn: str | None) -> None:
        super().__init__()
        self.learn = learn
        if learn is None:
            self.register_buffer("fixed_sigma", torch.tensor(float(sigma)))
        else:  # sigma = softplus(rho) + min_scale, initialized at exactly `sigma`
            shape = (1,) if learn == "shared" else (data_dim,)
            self.rho = nn.Parameter(torch.full(shape, inverse_softplus(sigma - _MIN_SCALE)))

    @property
    def sigma(self) -> torch.Tensor:
        return self.fixed_sigma if self.learn is None else softplus(self.rho) + _MIN_SCALE

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        return dist.Normal(raw, self.sigma.expand_as(raw)).to_event(1)


class Laplace(Likelihood):
    name = "laplace"
    support = constraints.real

    def __init__(self, data_dim: int, scale: float | None, init_scale: float) -> None:
        super().__init__()
        self.learned = scale is None
        if self.learned:  # b = softplus(rho) + min_scale, initialized at exactly init_scale
            self.rho = nn.Parameter(torch.full((data_dim,), inverse_softplus(init_scale - _MIN_SCALE)))
        else:
            self.register_buffer("fixed_scale", torch.tensor(float(scale)))

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        scale = softplus(self.rho) + _MIN_SCALE if self.learned else self.fixed_scale
        return dist.Laplace(raw, scale.expand_as(raw)).to_event(1)


class Beta(Likelihood):
    name = "beta"
    support = constraints.interval(0.0, 1.0)  # refined in check(): 0 and 1 themselves are refused
    params_per_feature = 2
    advice = (
        "Beta needs values strictly inside (0, 1): squeeze the data, e.g. x * (1 - 2e) + e with "
        "e = 1e-3, or use the 'continuous_bernoulli' likelihood, which allows 0 and 1."
    )

    def support_text(self) -> str:
        return "(0, 1)"

    def check(self, x: torch.Tensor, name: str = "data") -> None:
        super().check(x, name)
        edge = (x <= 0) | (x >= 1)
        if bool(edge.any()):
            raise DataError(f"{name} lies outside the beta likelihood's support (0, 1): {_first_bad(x, edge)}. {self.advice}")

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        a, b = raw.reshape(*raw.shape[:-1], 2, -1).unbind(-2)
        return dist.Beta(softplus(a) + 1e-4, softplus(b) + 1e-4).to_event(1)


class Poisson(Likelihood):
    name = "poisson"
    support = constraints.nonnegative_integer
    advice = "Poisson needs counts 0, 1, 2, ...: round count data, or use 'gaussian' for real values."

    def support_text(self) -> str:
        return "{0, 1, 2, ...}"

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        return dist.Poisson(softplus(raw) + 1e-6).to_event(1)


@LIKELIHOODS.register("bernoulli")
def bernoulli(data_dim: int, *, context: BuildContext) -> nn.Module:
    """Bernoulli(logits) for binary data (the AEVB MNIST likelihood)."""
    return Bernoulli()


@LIKELIHOODS.register("continuous_bernoulli")
def continuous_bernoulli(data_dim: int, *, context: BuildContext) -> nn.Module:
    """Continuous Bernoulli for data in [0, 1] (normalized Bernoulli density)."""
    return ContinuousBernoulli()


@LIKELIHOODS.register("gaussian")
def gaussian(data_dim: int, *, context: BuildContext, sigma: float = 0.1) -> nn.Module:
    """Gaussian with fixed standard deviation sigma."""
    return Gaussian(data_dim, positive_float("gaussian likelihood: sigma", sigma), learn=None)


@LIKELIHOODS.register("gaussian_learned")
def gaussian_learned(data_dim: int, *, context: BuildContext, shared: bool = False, init_sigma: float = 0.1) -> nn.Module:
    """Gaussian with learned sigma: one shared (shared=true) or one per feature."""
    init_sigma = number("gaussian_learned likelihood: init_sigma (above the floor on sigma)", init_sigma, above=_MIN_SCALE)
    return Gaussian(data_dim, init_sigma, learn="shared" if shared else "feature")


@LIKELIHOODS.register("laplace")
def laplace(data_dim: int, *, context: BuildContext, scale: float | None = None, init_scale: float = 0.1) -> nn.Module:
    """Laplace with learned per-feature scale (or a fixed scale)."""
    scale = None if scale is None else positive_float("laplace likelihood: scale", scale)
    init_scale = number("laplace likelihood: init_scale (above the floor on the scale)", init_scale, above=_MIN_SCALE)
    return Laplace(data_dim, scale, init_scale)


@LIKELIHOODS.register("beta")
def beta(data_dim: int, *, context: BuildContext) -> nn.Module:
    """Beta for data strictly inside (0, 1); two decoder outputs per feature."""
    return Beta()


@LIKELIHOODS.register("poisson")
def poisson(data_dim: int, *, context: BuildContext) -> nn.Module:
    """Poisson for count data, rate = softplus(decoder output)."""
    return Poisson()
