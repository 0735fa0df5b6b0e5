r"""A defensive importance-sampling proposal (Hesterberg 1995) for p(z | x_obs).

    r(z | x) = alpha q_phi(z | x_fill) + (1 - alpha) p(z),

the VAE's encoder on the naively filled row (or a Gaussian fitted to NUTS draws of z | x_obs) mixed
with the prior. The weights
p(x_obs | z) p(z) / r(z | x) <= p(x_obs | z) / (1 - alpha) are bounded, so importance sampling and
resampling stay consistent even where the encoder on a filled row is too narrow or off-centre.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import pyro
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from pyro_vae.checks import fraction
from pyro_vae.plates import data_plate


class DefensiveMixture(TorchDistribution):
    """alpha q + (1 - alpha) p over the same event shape; q's batch shape (p broadcast to it)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, q: Any, p: Any, alpha: float) -> None:
        self.q, self.p, self.alpha = q, p, float(alpha)
        super().__init__(q.batch_shape, q.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return DefensiveMixture(self.q.expand(batch_shape), self.p, self.alpha)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        zq = self.q.sample(sample_shape)
        zp = self.p.expand(self.q.batch_shape).sample(sample_shape).to(zq.dtype)
        pick = torch.rand(zq.shape[: zq.dim() - len(self.event_shape)], device=zq.device) < self.alpha
        return torch.where(pick.reshape(*pick.shape, *([1] * len(self.event_shape))), zq, zp)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.logaddexp(math.log(self.alpha) + self.q.log_prob(value),
                               math.log1p(-self.alpha) + self.p.log_prob(value))


def defensive_guide(obs: Any, alpha: float = 0.5, posterior: Callable[[torch.Tensor], Any] | None = None):
    """A guide ``guide(x)`` sampling site "z" from r(z | x) = alpha q(z | x) + (1 - alpha) p(z), with
    q = ``posterior`` (default: the encoder on the filled row, ``obs.posterior``)."""
    alpha = fraction("alpha (the encoder's share of the defensive proposal)", alpha, closed=False, below_one=True)
    posterior = posterior or obs.posterior

    def guide(x: torch.Tensor, **_: Any) -> torch.Tensor:
        with data_plate(x.shape[0], None):
            return pyro.sample("z", DefensiveMixture(posterior(x), obs.prior(), alpha))

    return guide


__all__ = ["DefensiveMixture", "defensive_guide"]
