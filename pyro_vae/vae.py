r"""The variational auto-encoder as a Pyro model and guide (Kingma & Welling 2014).

Generative model, for datapoints i = 1..N (``pyro.plate("data", N)``)::

    z_i ~ p(z)                                  site "z"   (prior)
    x_i | z_i ~ p_theta(x | eta = f_theta(z_i))  site "x"   (likelihood, decoder f_theta)

Recognition model (the guide), amortized over datapoints::

    z_i | x_i ~ q_phi(z | x_i) = family(g_phi(x_i))   site "z"   (encoder g_phi)

Training maximizes the evidence lower bound, per datapoint

    L(theta, phi; x) = E_q[log p_theta(x | z)] - KL(q_phi(z | x) || p(z)) <= log p_theta(x),

estimated by ``Trace_ELBO`` (SGVB estimator A: log p(x, z) - log q(z | x) at z ~ q) or
``TraceMeanField_ELBO`` (estimator B: the KL term in closed form where torch registers it).
With a minibatch of B rows out of N, the plate scales log-densities by N / B, so the loss is
an unbiased estimate of the full-data ELBO. KL annealing multiplies the ``z`` site of both
model and guide by beta in (0, 1] (the KL term, and only it, is scaled).

A VAE is a ``torch.nn.Module``: its parameters live in the modules (not in Pyro's global
param store), so two VAEs in one process never share parameters, and any optimizer loop can
drive ``elbo.differentiable_loss(vae.model, vae.guide, x)``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.distributions import kl_divergence

from pyro_vae.checks import positive_int
from pyro_vae.errors import DataError
from pyro_vae.guides import GUIDES
from pyro_vae.likelihoods import LIKELIHOODS
from pyro_vae.networks import NETWORKS
from pyro_vae.priors import PRIORS
from pyro_vae.programs import PROGRAMS, check_build_args
from pyro_vae.rng import seeded
from pyro_vae.plates import data_plate
from pyro_vae.registry import BuildContext
from pyro_vae.spec import ModelSpec, as_section


def _kl_weight(beta: float):
    """poutine.scale(beta) on the z site; no handler at all when beta = 1 (the common case)."""
    return contextlib.nullcontext() if beta == 1.0 else poutine.scale(scale=beta)


class VAE(nn.Module):
    """p(z) p_theta(x | z) with amortized q_phi(z | x); see the module docstring for the math.

    As a program it takes batches with the named tensor ``x`` (:attr:`inputs`) and has one
    per-datapoint latent site ``z`` (:attr:`latents`) in its data plate.
    """

    inputs = ("x",)  # the named tensors model and guide take from a batch
    latents = ("z",)  # per-datapoint latent sites (inside the data plate)

    def __init__(
        self,
        prior: nn.Module,
        likelihood: nn.Module,
        encoder: nn.Module,
        decoder: nn.Module,
        family: nn.Module,
        latent_dim: int,
        data_dim: int,
        image_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.prior, self.likelihood = prior, likelihood
        self.encoder, self.decoder, self.family = encoder, decoder, family
        self.latent_dim, self.data_dim = latent_dim, data_dim
        self.image_shape = image_shape

    # -- the densities, as plain functions of tensors ---------------------------------
    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q_phi(z | x), batch_shape x.shape[:-1], event_shape (latent_dim,)."""
        return self.family(self.encoder(x))

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        """p_theta(x | z), batch_shape z.shape[:-1], event_shape (data_dim,)."""
        return self.likelihood(self.decoder(z))

    def log_joint(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(z) + log p_theta(x | z) per row: z (..., d) and x broadcastable to (..., D); shape z.shape[:-1]."""
        return self.prior().log_prob(z) + self.decode(z).log_prob(x)

    def prior_distribution(self) -> dist.Distribution:
        """p(z), batch_shape (), event_shape (latent_dim,)."""
        return self.prior()

    # -- the Pyro program ---------------------------------------------------------------
    def model(
        self,
        x: torch.Tensor | None = None,
        *,
        num_data: int | None = None,
        beta: float = 1.0,
        num_samples: int | None = None,
    ) -> torch.Tensor:
        """z ~ p(z); x ~ p_theta(x | z). With ``x=None`` draws ``num_samples`` new datapoints."""
        batch = x.shape[0] if x is not None else num_samples
        if batch is None:
            raise ValueError("model(x=None) needs num_samples, the number of datapoints to generate")
        with data_plate(batch, num_data, device=x.device if x is not None else self._placement()[0]):
            with _kl_weight(beta):
                z = pyro.sample("z", self.prior())  # the plate broadcasts p(z) over the batch
            return pyro.sample("x", self.decode(z), obs=x)

    def guide(
        self,
        x: torch.Tensor,
        *,
        num_data: int | None = None,
        beta: float = 1.0,
        num_samples: int | None = None,
    ) -> torch.Tensor:
        """z ~ q_phi(z | x), the amortized posterior of each row of x."""
        with data_plate(x.shape[0], num_data, device=x.device):
            with _kl_weight(beta):
                return pyro.sample("z", self.posterior(x))

    # -- conveniences ---------------------------------------------------------------------
    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        """Refuse data of the wrong shape or outside the likelihood's support (DataError)."""
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != self.data_dim:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise DataError(
                f"{name} must be a float tensor of shape (N, {self.data_dim}) for this model, got {shape}; "
                "flatten images to rows, and build the model for the data's feature count"
            )
        self.likelihood.check(x, name)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True) -> torch.Tensor:
        """n draws x ~ p_theta(x | z), z ~ p(z); ``mean=True`` returns E[x | z] instead of x."""
        z = self.prior().sample((positive_int("n", n),))
        px = self.decode(z)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = E_q[z | x]]: the decoder's mean at the posterior mean."""
        return self.decode(self.posterior(x).mean).mean

    def _placement(self) -> tuple[torch.device, torch.dtype]:
        """The device and dtype of the program's first floating parameter (CPU, float32 without one)."""
        p = next((t for t in self.parameters() if t.is_floating_point()), None)
        return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.get_default_dtype())

    def analytic_kl(self) -> bool:
        """Whether KL(q(z|x) || p(z)) has a closed form (estimator B uses it; else Monte Carlo)."""
        device, dtype = self._placement()
        with torch.no_grad():
            q = self.family(torch.zeros(1, self.family.param_size, device=device, dtype=dtype))
            try:
                kl_divergence(q, self.prior().expand([1]))
            except NotImplementedError:
                return False
        return True


@PROGRAMS.register("vae")
def vae_program(
    spec: ModelSpec, *, data_dim: int, image_shape: tuple[int, ...] | None = None,
    data_sample: torch.Tensor | None = None, seed: int | None = None,
) -> VAE:
    """The VAE (Kingma & Welling 2014): z ~ p(z), x ~ p_theta(x | z), amortized q_phi(z | x)."""
    return build_vae(spec, data_dim=data_dim, image_shape=image_shape, data_sample=data_sample, seed=seed)


def build_vae(
    spec: ModelSpec | Mapping[str, Any] | None = None,
    *,
    data_dim: int,
    image_shape: tuple[int, ...] | None = None,
    data_sample: torch.Tensor | None = None,
    seed: int | None = None,
    **overrides: Any,
) -> VAE:
    """Build a fresh VAE from a spec (or keyword overrides such as ``prior="laplace"``).

    ``data_dim`` is D, the number of features of a flattened datapoint; ``image_shape`` lets
    conv networks and plots see images; ``data_sample`` (a few training rows) initializes
    data-dependent components such as VampPrior pseudo-inputs. ``seed`` fixes the initial
    weights.
    """
    spec = as_section(ModelSpec, spec, "model spec", **overrides)
    check_build_args(data_dim, image_shape, data_sample, seed)
    with seeded(seed):  # the weights drawn from seed; the caller's torch RNG untouched
        ctx = BuildContext(spec.latent_dim, data_dim, image_shape, data_sample=data_sample)
        family = GUIDES.build(spec.guide.name, spec.latent_dim, context=ctx, **spec.guide.options)
        likelihood = LIKELIHOODS.build(spec.likelihood.name, data_dim, context=ctx, **spec.likelihood.options)
        encoder = NETWORKS.build(spec.encoder.name, data_dim, family.param_size, context=ctx.with_role("encoder"), **spec.encoder.options)
        decoder = NETWORKS.build(
            spec.decoder.name, spec.latent_dim, likelihood.params_per_feature * data_dim,
            context=ctx.with_role("decoder"), **spec.decoder.options,
        )
        ctx.posterior = lambda u: family(encoder(u))
        prior = PRIORS.build(spec.prior.name, spec.latent_dim, context=ctx, **spec.prior.options)
        return VAE(prior, likelihood, encoder, decoder, family, spec.latent_dim, data_dim, image_shape)
