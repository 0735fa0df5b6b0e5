r"""The importance-weighted bound (IWAE, Burda et al. 2015), per datapoint, as a plain loss.

With log w_ik from :func:`inference.log_weights.log_weights` (K vectorized particles
z_ik ~ q(z | x_i), reparameterized; c = 1 at the observation, beta at an annealed latent) and
s = N / B the minibatch scale::

    L_K = s sum_i [ logsumexp_k log w_ik - log K ],         loss = -L_K.

E[L_K] <= log p(x) and grows with K; with K = 1 it is estimator A with the same draws. The
scale s multiplies the per-datapoint bound *outside* the logsumexp (logsumexp_k(s a_k) !=
s logsumexp_k a_k), which is why Pyro's ``RenyiELBO(alpha=0)`` is not used as it is.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from inference.log_weights import LogWeights, data_frame, latent_sites, log_weights
from inference.objectives.registry import OBJECTIVES, require_reparam
from pyro_vae.checks import positive_int


class ImportanceWeightedLoss:
    """A loss on K per-datapoint importance weights, with Pyro's ELBO calling convention.

    ``differentiable_loss(model, guide, *args, **kwargs)`` returns a scalar tensor;
    ``loss`` its value without gradients; ``loss_and_grads`` calls ``backward()`` on it (so
    ``pyro.infer.SVI`` can drive it too).
    """

    detach_guide = False
    needs_reparam = False
    vectorize_particles = True

    def __init__(self, num_particles: int = 1) -> None:
        self.num_particles = positive_int("num_particles", num_particles)

    def weights(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> tuple[LogWeights, float]:
        """(the K x B log-weights, s = N / B)."""
        lw = log_weights(model, guide, self.num_particles, *args, detach_guide=self.detach_guide, **kwargs)
        return lw, data_frame(lw.model_trace)[1]

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """The value of :meth:`differentiable_loss` (no gradients)."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """:meth:`differentiable_loss` with ``backward()``."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


class IWAE(ImportanceWeightedLoss):
    """-L_K, the negative importance-weighted bound (module docstring); every latent guide site needs rsample."""

    needs_reparam = True

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """-s sum_i [logsumexp_k log w_ik - log K]."""
        lw, scale = self.weights(model, guide, args, kwargs)
        if torch.is_grad_enabled():
            require_reparam(list(latent_sites(lw.guide_trace).values()), "iwae")
        return -scale * (lw.log_w.logsumexp(0) - math.log(self.num_particles)).sum()


@OBJECTIVES.register("iwae")
def iwae_objective(num_particles: int = 1) -> IWAE:
    """Importance-weighted bound (IWAE, Burda et al. 2015) with K = num_particles; K = 1 is estimator A."""
    return IWAE(num_particles=num_particles)


__all__ = ["ImportanceWeightedLoss", "IWAE", "iwae_objective"]
