r"""A VAE with two stochastic layers (Burda et al. 2015, section 5): program ``hierarchical``.

Generative model, for datapoints i = 1..N (``pyro_vae.plates.data_plate``)::

    z2_i ~ p(z2)                                      site "z2"  (the spec's prior, top_latent_dim units)
    z1_i | z2_i ~ N(mu(z2_i), diag sigma(z2_i)^2)     site "z1"  (latent_dim units; an MLP of top_hidden widths)
    x_i | z1_i ~ p_theta(x | f_theta(z1_i))           site "x"   (the spec's likelihood and decoder)

Guide (the spec's ``guide`` family for both layers, Gaussian or flow), by ``inference``:

* ``bottom_up`` (Burda et al.): q(z1 | x) q(z2 | z1): the spec's encoder maps x to q(z1 | x),
  an MLP of ``top_hidden`` widths maps z1 to q(z2 | z1);
* ``top_down``: q(z2 | x) q(z1 | x, z2), the inference network follows the generative order:
  the spec's encoder network maps x to q(z2 | x) and (x, z2) to q(z1 | x, z2).

Importance weights cover both latents, log w = log p(z2) + log p(z1 | z2) + log p(x | z1) -
log q(z1, z2 | x), so :mod:`inference.log_weights` and the yardstick need nothing else. Burda et al.'s
784-200-200-100-100-50 network is ``latent_dim: 100``, encoder and decoder ``{name: mlp, hidden:
[200, 200]}``, ``program: {name: hierarchical, top_latent_dim: 50, top_hidden: [100, 100]}``.
Estimator B (``meanfield``) takes both KL terms analytically only with ``top_down``; with
``bottom_up`` the guide samples z1 before its model parent z2, so training by ``meanfield`` is
refused (train bottom-up models with ``trace``, ``iwae`` or ``rws``) and the evaluator's ELBO B
uses the Monte Carlo term for z1.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.distributions import kl_divergence

from pyro_vae.checks import choice, integer, positive_ints
from pyro_vae.errors import DataError
from pyro_vae.guides import GUIDES, DiagonalNormal
from pyro_vae.likelihoods import LIKELIHOODS
from pyro_vae.networks import NETWORKS
from pyro_vae.plates import data_plate
from pyro_vae.priors import PRIORS
from pyro_vae.programs import PROGRAMS, check_build_args
from pyro_vae.rng import seeded
from pyro_vae.registry import BuildContext
from pyro_vae.spec import ModelSpec

Tensor = torch.Tensor
INFERENCE = ("bottom_up", "top_down")


def _kl_weight(beta: float):
    return contextlib.nullcontext() if beta == 1.0 else poutine.scale(scale=beta)


class HierarchicalVAE(nn.Module):
    """z2 -> z1 -> x with a bottom-up or top-down amortized guide (module docstring)."""

    inputs = ("x",)
    latents = ("z1", "z2")

    def __init__(self, parts: dict[str, nn.Module], latent_dims: tuple[int, int], data_dim: int,
                 inference: str, image_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.prior, self.likelihood = parts["prior"], parts["likelihood"]
        self.decoder, self.top_decoder, self.conditional = parts["decoder"], parts["top_decoder"], parts["conditional"]
        self.encoder, self.top_encoder = parts["encoder"], parts["top_encoder"]
        self.family1, self.family2 = parts["family1"], parts["family2"]
        self.latent_dims, self.latent_dim = latent_dims, latent_dims[0]
        self.data_dim, self.inference, self.image_shape = data_dim, inference, image_shape

    # -- densities -------------------------------------------------------------------------------
    def decode(self, z1: Tensor) -> dist.Distribution:
        """p_theta(x | z1), batch_shape z1.shape[:-1]."""
        return self.likelihood(self.decoder(z1))

    def layer_prior(self, z2: Tensor) -> dist.Distribution:
        """p(z1 | z2) = N(mu(z2), diag sigma(z2)^2), batch_shape z2.shape[:-1]."""
        return self.conditional(self.top_decoder(z2))

    # -- the Pyro program --------------------------------------------------------------------------
    def model(self, x: Tensor | None = None, *, num_data: int | None = None, beta: float = 1.0,
              num_samples: int | None = None) -> Tensor:
        """z2 ~ p(z2); z1 ~ p(z1 | z2); x ~ p_theta(x | z1). With ``x=None`` draws ``num_samples`` datapoints."""
        batch = x.shape[0] if x is not None else num_samples
        if batch is None:
            raise ValueError("model(x=None) needs num_samples, the number of datapoints to generate")
        with data_plate(batch, num_data):
            with _kl_weight(beta):
                z2 = pyro.sample("z2", self.prior())
                z1 = pyro.sample("z1", self.layer_prior(z2))
            return pyro.sample("x", self.decode(z1), obs=x)

    def guide(self, x: Tensor, *, num_data: int | None = None, beta: float = 1.0,
              num_samples: int | None = None) -> tuple[Tensor, Tensor]:
        """(z1, z2) ~ q(z1 | x) q(z2 | z1) (bottom_up) or q(z2 | x) q(z1 | x, z2) (top_down)."""
        with data_plate(x.shape[0], num_data):
            with _kl_weight(beta):
                if self.inference == "bottom_up":
                    z1 = pyro.sample("z1", self.family1(self.encoder(x)))
                    z2 = pyro.sample("z2", self.family2(self.top_encoder(z1)))
                else:
                    z2 = pyro.sample("z2", self.family2(self.top_encoder(x)))
                    xz = torch.cat([x.expand(*z2.shape[:-1], x.shape[-1]), z2], dim=-1)
                    z1 = pyro.sample("z1", self.family1(self.encoder(xz)))
        return z1, z2

    # -- conveniences ----------------------------------------------------------------------------
    def check_data(self, x: Tensor, name: str = "data") -> None:
        """Refuse data of the wrong shape or outside the likelihood's support (DataError)."""
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != self.data_dim:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise DataError(f"{name} must be a float tensor of shape (N, {self.data_dim}) for this model, got {shape}; "
                            "flatten images to rows, and build the model for the data's feature count")
        self.likelihood.check(x, name)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True) -> Tensor:
        """n draws x ~ p(x | z1), z1 ~ p(z1 | z2), z2 ~ p(z2); ``mean=True`` returns E[x | z1]."""
        z1 = self.layer_prior(self.prior().sample((n,))).sample()
        px = self.decode(z1)
        return px.mean if mean else px.sample()

    def posterior(self, x: Tensor) -> dist.Distribution:
        """The first layer's q(z1 | x) (bottom_up), or q(z1 | x, z2 = E_q[z2 | x]) (top_down): for plots and reconstructions.

        Per-layer summaries of both latents come from :func:`inference.layer_units.layer_units`.
        """
        if self.inference == "bottom_up":
            return self.family1(self.encoder(x))
        z2 = self.family2(self.top_encoder(x)).mean
        return self.family1(self.encoder(torch.cat([x, z2], dim=-1)))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x | z1 = m1], m1 the mean of :meth:`posterior`."""
        return self.decode(self.posterior(x).mean).mean

    def analytic_kl(self) -> bool:
        """Whether estimator B takes both KL terms in closed form: top_down order and KL registered for
        (q(z2 | x), p(z2)) and (q(z1 | x, z2), p(z1 | z2)); bottom_up never (module docstring)."""
        if self.inference == "bottom_up":
            return False
        with torch.no_grad():
            q1, q2 = (f(torch.zeros(1, f.param_size)) for f in (self.family1, self.family2))
            p1 = self.conditional(torch.zeros(1, self.conditional.param_size))
            try:
                kl_divergence(q2, self.prior().expand([1]))
                kl_divergence(q1, p1)
            except NotImplementedError:
                return False
        return True


def _mlp(in_dim: int, out_dim: int, ctx: BuildContext, role: str, hidden: Sequence[int], activation: str) -> nn.Module:
    return NETWORKS.build("mlp", in_dim, out_dim, context=ctx.with_role(role), hidden=list(hidden), activation=activation)


@PROGRAMS.register("hierarchical")
def hierarchical_program(
    spec: ModelSpec, *, data_dim: int, image_shape: tuple[int, ...] | None = None,
    data_sample: Tensor | None = None, seed: int | None = None,
    top_latent_dim: int | None = None, top_hidden: list[int] | None = None, top_activation: str = "tanh",
    inference: str = "bottom_up",
) -> HierarchicalVAE:
    """Two stochastic layers z2 -> z1 -> x (Burda et al. 2015), bottom-up or top-down inference."""
    check_build_args(data_dim, image_shape, data_sample, seed)
    d1 = spec.latent_dim
    d2 = max(1, d1 // 2) if top_latent_dim is None else integer("hierarchical program: top_latent_dim", top_latent_dim, minimum=1)
    widths = [100, 100] if top_hidden is None else positive_ints("hierarchical program: top_hidden", top_hidden, example="[100, 100]")
    choice("hierarchical program: inference", inference, INFERENCE)
    with seeded(seed):  # the weights drawn from seed; the caller's torch RNG untouched
        ctx1 = BuildContext(d1, data_dim, image_shape, data_sample=data_sample)
        ctx2 = BuildContext(d2, data_dim, image_shape, data_sample=data_sample)
        family1 = GUIDES.build(spec.guide.name, d1, context=ctx1, **spec.guide.options)
        family2 = GUIDES.build(spec.guide.name, d2, context=ctx2, **spec.guide.options)
        likelihood = LIKELIHOODS.build(spec.likelihood.name, data_dim, context=ctx1, **spec.likelihood.options)
        conditional = DiagonalNormal(d1)
        enc = spec.encoder
        if inference == "bottom_up":
            encoder = NETWORKS.build(enc.name, data_dim, family1.param_size, context=ctx1.with_role("encoder"), **enc.options)
            top_encoder = _mlp(d1, family2.param_size, ctx2, "encoder", widths, top_activation)
        else:
            encoder = NETWORKS.build(enc.name, data_dim + d2, family1.param_size, context=BuildContext(d1, data_dim + d2, None, "encoder"), **enc.options)
            top_encoder = NETWORKS.build(enc.name, data_dim, family2.param_size, context=ctx2.with_role("encoder"), **enc.options)
        parts = {
            "prior": PRIORS.build(spec.prior.name, d2, context=ctx2, **spec.prior.options),
            "likelihood": likelihood, "conditional": conditional, "family1": family1, "family2": family2,
            "decoder": NETWORKS.build(spec.decoder.name, d1, likelihood.params_per_feature * data_dim,
                                      context=ctx1.with_role("decoder"), **spec.decoder.options),
            "top_decoder": _mlp(d2, conditional.param_size, ctx2, "decoder", widths, top_activation),
            "encoder": encoder, "top_encoder": top_encoder,
        }
        return HierarchicalVAE(parts, (d1, d2), data_dim, inference, image_shape)


__all__ = ["HierarchicalVAE", "hierarchical_program", "INFERENCE"]
