r"""Observation models composed with a trained VAE, for completion by inference (no retraining).

Given a VAE p(z) p_theta(x | z), what is observed of a datapoint x defines a new program over the
same latent z:

- :class:`ObservedPart` (inpainting, mask m, True = observed): the masked likelihood

      log p(x_obs | z) = sum_{d : m_d} log p_theta(x_d | z),

  the VAE's per-feature likelihood with the missing features masked out (``.mask`` on the
  factorized distribution: exact, since the features are independent given z). Missing entries
  of the rows passed in are ignored (replaced by an observed value of the row, so that support
  checks see valid values).
- :class:`LowResolution` (super-resolution, factor f): x_lr ~ N(pool_f(E[x | z]), sigma^2 I), the
  decoder's mean average-pooled by f, observed with Gaussian noise of sd ``sigma``.

Each is a program (``model``, ``guide``, ``latents = ("z",)``, ``prior``, ``decode``,
``latent_dim``, ``check_data``), so the one log-weight function, the yardstick and NUTS over
latents (:mod:`inference.mcmc.latents`) apply unchanged; p(z | x_obs) is their posterior. The guide
is the VAE's encoder on the naive fill: q_phi(z | x_fill) with the missing features set to 0
(inpainting) or the low-resolution image upsampled by repetition (super-resolution).
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.checks import positive_float
from pyro_vae.errors import DataError
from pyro_vae.masks import average_pool, check_factor, check_mask
from pyro_vae.plates import data_plate


class _Observed(nn.Module):
    """The latent half of a VAE (prior, encoder, decoder) with an observation model of its own."""

    latents = ("z",)
    inputs = ("x",)

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.prior, self.latent_dim = vae.prior, vae.latent_dim

    def fill(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> dist.Distribution:  # pragma: no cover
        raise NotImplementedError

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q_phi(z | fill(x)): the VAE's encoder on the naively filled datapoint."""
        return self.vae.posterior(self.fill(x))

    def model(self, x: torch.Tensor | None = None, *, num_data: int | None = None, beta: float = 1.0,
              num_samples: int | None = None) -> torch.Tensor:
        """z ~ p(z); the observed part of x ~ the observation model given z (``x=None``: ``num_samples`` draws)."""
        if x is None and num_samples is None:
            raise ValueError("model(x=None) needs num_samples, the number of datapoints to generate")
        with data_plate(x.shape[0] if x is not None else num_samples, num_data):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.decode(z), obs=None if x is None else self.observed_value(x))

    def guide(self, x: torch.Tensor, *, num_data: int | None = None, beta: float = 1.0) -> torch.Tensor:
        """z ~ q_phi(z | fill(x))."""
        with data_plate(x.shape[0], num_data):
            return pyro.sample("z", self.posterior(x))

    def observed_value(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ObservedPart(_Observed):
    """p(z) prod_{d observed} p_theta(x_d | z): a VAE conditioned on the features its mask observes."""

    def __init__(self, vae: nn.Module, mask: torch.Tensor) -> None:
        super().__init__(vae)
        mask = check_mask(mask, "mask")
        if mask.shape != (vae.data_dim,):
            raise DataError(f"the mask has shape {tuple(mask.shape)} but the VAE's data have {vae.data_dim} features")
        self.register_buffer("mask", mask.clone())
        self.data_dim = vae.data_dim

    def fill(self, x: torch.Tensor) -> torch.Tensor:
        """x with the missing features set to 0 (the naive imputation the encoder sees)."""
        return torch.where(self.mask, x, torch.zeros_like(x))

    def observed_value(self, x: torch.Tensor) -> torch.Tensor:
        """x with each missing entry replaced by the row's first observed value (masked out of every density)."""
        first = x[..., self.mask][..., :1]
        return torch.where(self.mask, x, first.expand_as(x))

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        """p_theta(x_obs | z): the VAE's likelihood with the missing features masked out."""
        full = self.vae.decode(z)
        return full.base_dist.mask(self.mask).to_event(1)

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        """The VAE's checks on the observed features (missing entries are never read)."""
        self.vae.check_data(self.observed_value(x), name)


class LowResolution(_Observed):
    """x_lr ~ N(pool_f(E[x | z]), sigma^2 I): a VAE seen through average pooling by ``factor``."""

    def __init__(self, vae: nn.Module, image_shape: Sequence[int] | None, factor: int, sigma: float = 0.05) -> None:
        super().__init__(vae)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.factor = check_factor(image_shape, factor)
        self.sigma = positive_float("sigma (noise sd of the low-resolution observation)", sigma)
        self.data_dim = vae.data_dim // self.factor**2

    def upsample(self, x_lr: torch.Tensor) -> torch.Tensor:
        """Each low-resolution pixel repeated over its f x f block: (..., D/f^2) -> (..., D)."""
        shape = self.image_shape if len(self.image_shape) == 3 else (1, *self.image_shape)
        c, h, w = shape
        f = self.factor
        small = x_lr.reshape(*x_lr.shape[:-1], c, h // f, 1, w // f, 1)
        return small.expand(*small.shape[:-4], h // f, f, w // f, f).reshape(*x_lr.shape[:-1], -1)

    def fill(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)

    def mean_image(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z], the decoder's mean at full resolution."""
        return self.vae.decode(z).mean

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        """N(pool_f(E[x | z]), sigma^2 I) over the D / f^2 low-resolution pixels."""
        loc = average_pool(self.mean_image(z), self.image_shape, self.factor)
        return dist.Normal(loc, torch.full_like(loc, self.sigma)).to_event(1)

    def check_data(self, x: torch.Tensor, name: str = "data") -> None:
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != self.data_dim or not x.is_floating_point():
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise DataError(f"{name} must be low-resolution float rows (N, {self.data_dim}) (images pooled by "
                            f"{self.factor}), got {shape}")
        if not bool(torch.isfinite(x).all()):
            raise DataError(f"{name} holds non-finite values; remove or impute them")


__all__ = ["ObservedPart", "LowResolution"]
