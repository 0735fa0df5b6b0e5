r"""The conditional VAE (Sohn, Lee & Yan 2015) and its deterministic baseline, as programs (``cvae``, ``cvae_baseline``).

The program takes a batch's ``x`` and splits each row by its declared task
(:mod:`pyro_vae.completion`) into the observed part c and the part y to complete. For rows
i = 1..B in the data plate::

    z_i ~ p_theta(z | c_i)                    site "z"   (prior network, or a fixed prior p(z))
    y_i | z_i, c_i ~ p_theta(y | f_theta(z_i, c_i))   site "y"   (likelihood, decoder on [z, c])

with the guide q_phi(z | c_i, y_i) = family(g_phi([c_i, y_i])). The ELBO bounds the conditional
log-likelihood,

    log p(y | c) >= E_q[log p(y | z, c)] - KL(q(z | c, y) || p(z | c)),

so the program's IS log-weights (:mod:`inference.log_weights`) estimate log p(y | c). With
``conditional_prior=False`` p(z | c) = p(z), the spec's prior. The prior network is the
spec's encoder network kind (c -> the diagonal Gaussian's 2 d parameters).

The deterministic baseline (``cvae_baseline``) has no latent: y_i ~ p_theta(y | f_theta(c_i)),
a network c -> the likelihood's parameters of y trained on the same log-likelihood; its
log p(y | c) is exact.

Networks see vectors ([z, c], [c, y], c), so the CVAE's networks are MLP-like (``mlp``).
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import kl_divergence

from pyro_vae.completion import CompletionTask, build_task
from pyro_vae.errors import DataError
from pyro_vae.guides import GUIDES
from pyro_vae.likelihoods import LIKELIHOODS
from pyro_vae.networks import NETWORKS
from pyro_vae.plates import data_plate
from pyro_vae.priors import PRIORS
from pyro_vae.programs import PROGRAMS, check_build_args
from pyro_vae.rng import seeded
from pyro_vae.registry import BuildContext
from pyro_vae.spec import ModelSpec
from pyro_vae.vae import _kl_weight


def _cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[a, b] along the last axis, broadcasting the leading (particle, row) axes."""
    lead = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*lead, a.shape[-1]), b.expand(*lead, b.shape[-1])], dim=-1)


class _Conditional(nn.Module):
    """The task split and the checks shared by the CVAE and its baseline."""

    inputs = ("x",)  # the batch tensor taken; c and y are derived from it by the task
    observed = ("y",)  # the observed site: the part to complete

    task: CompletionTask
    likelihood: nn.Module
    data_dim: int

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        """Refuse data of the wrong shape or outside the likelihood's support (DataError)."""
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != self.data_dim:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise DataError(f"{name} must be a float tensor of shape (N, {self.data_dim}) for this model, got {shape}; "
                            "flatten images to rows, and build the model for the data's feature count")
        self.likelihood.check(x, name)

    def analytic_kl(self) -> bool:
        return True


class CVAE(_Conditional):
    """p(z | c) p_theta(y | z, c) with amortized q_phi(z | c, y) (module docstring)."""

    latents = ("z",)

    def __init__(self, task: CompletionTask, prior: nn.Module, prior_net: nn.Module | None, likelihood: nn.Module,
                 encoder: nn.Module, decoder: nn.Module, family: nn.Module, latent_dim: int,
                 image_shape: tuple[int, ...] | None) -> None:
        super().__init__()
        self.task, self.prior, self.prior_net, self.likelihood = task, prior, prior_net, likelihood
        self.encoder, self.decoder, self.family = encoder, decoder, family
        self.latent_dim, self.data_dim, self.image_shape = latent_dim, task.data_dim, image_shape

    def prior_given(self, c: torch.Tensor) -> dist.Distribution:
        """p(z | c), batch_shape c.shape[:-1] (the prior network), or p(z) broadcast over the rows."""
        if self.prior_net is None:
            return self.prior().expand(c.shape[:-1])
        return self.prior(self.prior_net(c))

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q_phi(z | c, y) of each row of x."""
        return self.family(self.encoder(_cat(self.task.condition(x), self.task.target(x))))

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> dist.Distribution:
        """p_theta(y | z, c), batch_shape broadcast(z, c).shape[:-1], event_shape (y_dim,)."""
        return self.likelihood(self.decoder(_cat(z, c)))

    def model(self, x: torch.Tensor, *, num_data: int | None = None, beta: float = 1.0) -> torch.Tensor:
        """z ~ p(z | c); y ~ p_theta(y | z, c), observed at y = y(x)."""
        c, y = self.task.condition(x), self.task.target(x)
        with data_plate(x.shape[0], num_data):
            with _kl_weight(beta):
                z = pyro.sample("z", self.prior_given(c))
            return pyro.sample("y", self.decode(z, c), obs=y)

    def guide(self, x: torch.Tensor, *, num_data: int | None = None, beta: float = 1.0) -> torch.Tensor:
        """z ~ q_phi(z | c, y)."""
        with data_plate(x.shape[0], num_data):
            with _kl_weight(beta):
                return pyro.sample("z", self.posterior(x))

    @torch.no_grad()
    def complete(self, x: torch.Tensor, num_samples: int, *, mean: bool = True) -> torch.Tensor:
        """S completions of each row, (S, B, D): z ~ p(z | c), y = E[y | z, c] (``mean``) or y ~ p(y | z, c)."""
        c = self.task.condition(x)
        z = self.prior_given(c).sample((num_samples,))
        py = self.decode(z, c)
        return self.task.complete(x, py.mean if mean else py.sample())

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x with y replaced by E[y | z = E_q[z | c, y], c]."""
        return self.task.complete(x, self.decode(self.posterior(x).mean, self.task.condition(x)).mean)

    def analytic_kl(self) -> bool:
        """Whether KL(q(z | c, y) || p(z | c)) has a closed form."""
        with torch.no_grad():
            x = torch.zeros(1, self.data_dim)
            try:
                kl_divergence(self.posterior(x), self.prior_given(self.task.condition(x)))
            except NotImplementedError:
                return False
        return True


class DeterministicBaseline(_Conditional):
    """y ~ p_theta(y | f_theta(c)): a network c -> E[y], no latent (Sohn et al.'s baseline)."""

    latents: tuple[str, ...] = ()

    def __init__(self, task: CompletionTask, likelihood: nn.Module, network: nn.Module,
                 image_shape: tuple[int, ...] | None) -> None:
        super().__init__()
        self.task, self.likelihood, self.network = task, likelihood, network
        self.data_dim, self.image_shape = task.data_dim, image_shape

    def predict(self, x: torch.Tensor) -> dist.Distribution:
        """p_theta(y | f_theta(c(x)))."""
        return self.likelihood(self.network(self.task.condition(x)))

    def model(self, x: torch.Tensor, *, num_data: int | None = None, beta: float = 1.0) -> torch.Tensor:
        """y ~ p_theta(y | f_theta(c)), observed at y = y(x)."""
        with data_plate(x.shape[0], num_data):
            return pyro.sample("y", self.predict(x), obs=self.task.target(x))

    def guide(self, x: torch.Tensor, *, num_data: int | None = None, beta: float = 1.0) -> None:
        """No latent variable: nothing to sample."""

    @torch.no_grad()
    def complete(self, x: torch.Tensor, num_samples: int, *, mean: bool = True) -> torch.Tensor:
        """S completions (S, B, D): the mean E[y | c] repeated, or S draws y ~ p(y | c)."""
        py = self.predict(x)
        y = py.mean.expand(num_samples, *py.mean.shape) if mean else py.sample((num_samples,))
        return self.task.complete(x, y)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.task.complete(x, self.predict(x).mean)


def _task(data_dim, image_shape, task, mask, observed, fraction, factor, mask_seed) -> CompletionTask:
    return build_task(task, data_dim, image_shape, mask=mask, observed=observed, fraction=fraction,
                      factor=factor, seed=mask_seed)


@PROGRAMS.register("cvae")
def cvae_program(
    spec: ModelSpec, *, data_dim: int, image_shape: tuple[int, ...] | None = None,
    data_sample: torch.Tensor | None = None, seed: int | None = None,
    task: str = "inpaint", mask: str = "quadrants", observed: int = 1, fraction: float = 0.5, factor: int = 2,
    mask_seed: int = 0, conditional_prior: bool = True,
) -> CVAE:
    """Conditional VAE (Sohn et al. 2015): z ~ p(z | c), y ~ p(y | z, c), q(z | c, y); c, y from the task."""
    check_build_args(data_dim, image_shape, data_sample, seed)
    split = _task(data_dim, image_shape, task, mask, observed, fraction, factor, mask_seed)
    with seeded(seed):  # the weights drawn from seed; the caller's torch RNG untouched
        d, c_dim, y_dim = spec.latent_dim, split.c_dim, split.y_dim
        ctx = BuildContext(d, y_dim, None)
        family = GUIDES.build(spec.guide.name, d, context=ctx, **spec.guide.options)
        likelihood = LIKELIHOODS.build(spec.likelihood.name, y_dim, context=ctx, **spec.likelihood.options)
        encoder = NETWORKS.build(spec.encoder.name, c_dim + y_dim, family.param_size, context=ctx.with_role("encoder"),
                                 **spec.encoder.options)
        decoder = NETWORKS.build(spec.decoder.name, d + c_dim, likelihood.params_per_feature * y_dim,
                                 context=ctx.with_role("decoder"), **spec.decoder.options)
        if conditional_prior:
            prior = GUIDES.build("diag_normal", d, context=ctx)
            prior_net = NETWORKS.build(spec.encoder.name, c_dim, prior.param_size, context=ctx.with_role("encoder"),
                                       **spec.encoder.options)
        else:
            prior, prior_net = PRIORS.build(spec.prior.name, d, context=ctx, **spec.prior.options), None
        return CVAE(split, prior, prior_net, likelihood, encoder, decoder, family, d, image_shape)


@PROGRAMS.register("cvae_baseline")
def cvae_baseline_program(
    spec: ModelSpec, *, data_dim: int, image_shape: tuple[int, ...] | None = None,
    data_sample: torch.Tensor | None = None, seed: int | None = None,
    task: str = "inpaint", mask: str = "quadrants", observed: int = 1, fraction: float = 0.5, factor: int = 2,
    mask_seed: int = 0,
) -> DeterministicBaseline:
    """Deterministic baseline of Sohn et al.: y ~ p(y | f(c)), the spec's decoder network c -> likelihood parameters."""
    check_build_args(data_dim, image_shape, data_sample, seed)
    split = _task(data_dim, image_shape, task, mask, observed, fraction, factor, mask_seed)
    with seeded(seed):  # the weights drawn from seed; the caller's torch RNG untouched
        ctx = BuildContext(spec.latent_dim, split.y_dim, None)
        likelihood = LIKELIHOODS.build(spec.likelihood.name, split.y_dim, context=ctx, **spec.likelihood.options)
        network = NETWORKS.build(spec.decoder.name, split.c_dim, likelihood.params_per_feature * split.y_dim,
                                 context=ctx.with_role("decoder"), **spec.decoder.options)
        return DeterministicBaseline(split, likelihood, network, image_shape)


def is_conditional(program: Any) -> bool:
    """Whether ``program`` is a conditional program (it carries a completion task)."""
    return isinstance(getattr(program, "task", None), CompletionTask)


__all__ = ["CVAE", "DeterministicBaseline", "cvae_program", "cvae_baseline_program", "is_conditional"]
