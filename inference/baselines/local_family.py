r"""Per-datapoint members of the amortized family: q_i(z) = family(eta_i), one free eta_i per datapoint.

An amortized guide is q_phi(z | x) = family(g_phi(x)); its family is every distribution
family(eta) for some raw parameter vector eta. :class:`LocalFamilyGuide` holds one eta_i per
datapoint (started at the encoder's g_phi(x_i)), so that optimizing it with the family's own
weights fixed (the flows' conditional networks included) finds

    q*_i = argmax_{eta} ELBO_i(family(eta)),

the best member of the same family, the q* of the approximation gap (Cremer et al. 2018) for any
family, flows among them. It is a :class:`~inference.baselines.local_guides.RowTable`, so it
samples site "z" in the program's data plate and refines by :func:`inference.baselines.fit_local`
(``init=`` this guide).
"""

from __future__ import annotations

from typing import Sequence

import pyro.distributions as dist
import torch
from torch import nn

from inference.baselines.local_guides import RowTable
from pyro_vae.errors import ConfigError
from pyro_vae.numerics import chunks
from pyro_vae.vae import VAE

Tensor = torch.Tensor


class LocalFamilyGuide(RowTable):
    """q_i(z) = family(eta_i) with the rows eta_i (N, param_size) as parameters; the family is not a submodule (it stays the VAE's)."""

    def __init__(self, family: nn.Module, eta: Tensor, *, data: Tensor | None = None) -> None:
        eta = torch.as_tensor(eta)
        size = getattr(family, "param_size", None)
        if eta.dim() != 2 or eta.shape[1] != size or not eta.is_floating_point():
            raise ConfigError(f"eta must be a float (N, {size}) tensor of the family's raw parameters, got {tuple(eta.shape)}")
        super().__init__(eta.shape[0], None)
        self._family = (family,)  # a tuple: the family's weights are not this guide's parameters
        self.eta = nn.Parameter(eta.detach().clone())
        self.latent_dim = getattr(family, "latent_dim", None)
        if data is not None:
            self.remember(data)

    def distribution(self, idx: Tensor | Sequence[int] | None = None) -> dist.Distribution:
        """family(eta_i) for rows ``idx`` (all rows for None): batch_shape (B,)."""
        if idx is not None:
            idx = torch.as_tensor(idx, dtype=torch.long, device=self.eta.device)
        return self._family[0](self.gather(self.eta, idx))


@torch.no_grad()
def encoder_family_guide(vae: VAE, x: Tensor, batch_size: int = 1000) -> LocalFamilyGuide:
    """A :class:`LocalFamilyGuide` for the rows of x started at the encoder: eta_i = g_phi(x_i)."""
    eta = torch.cat([vae.encoder(x[r0:r0 + nr]) for r0, nr in chunks(x.shape[0], batch_size)])
    return LocalFamilyGuide(vae.family, eta, data=x)


__all__ = ["LocalFamilyGuide", "encoder_family_guide"]
