r"""Reweighted wake-sleep (Bornschein & Bengio 2015), per datapoint, as ONE surrogate loss.

Draws z_ik ~ q(z | x_i) are detached (no reparameterization: any guide works). With log w_ik
from :func:`inference.log_weights.log_weights` computed with log q detached, normalized
weights wbar_ik = softmax_k(log w_ik) (detached) and s = N / B::

    wake-theta  l_theta = -s sum_i [ logsumexp_k log w_ik - log K ]     (the IWAE bound)
    wake-phi    l_wake  = -s sum_i sum_k wbar_ik log q(z_ik | x_i)
    sleep-phi   l_sleep = -s sum_i (1/K) sum_k log q(z'_ik | x'_ik),   (z', x') ~ p(z) p_theta(x | z)
    l_phi       = insomnia * l_wake + (1 - insomnia) * l_sleep

The loss is l_theta + (l_phi - stop_grad(l_phi)): its value is the IWAE loss (train and
validation "ELBOs" are the K-sample IWAE bound) and its gradient is d l_theta / d theta for the
model's parameters and d l_phi / d phi for the guide's (l_theta does not depend on phi: z and
log q are detached in it; l_phi does not depend on theta: weights and fantasies are
detached). With K = 1 and insomnia = 0 it is Hinton et al.'s (1995) wake-sleep; wake-phi needs
K >= 2 (one normalized weight is 1: its expected gradient is zero).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import pyro
import torch
from pyro import poutine

from inference.objectives.iwae import ImportanceWeightedLoss
from inference.objectives.registry import OBJECTIVES
from pyro_vae.checks import fraction
from pyro_vae.errors import ConfigError, UnsupportedModelError

logger = logging.getLogger(__name__)


class ReweightedWakeSleep(ImportanceWeightedLoss):
    """The RWS surrogate (module docstring). Sleep-phi needs a guide called as ``guide(x, ...)`` with one observed site x."""

    detach_guide = True

    def __init__(self, num_particles: int = 2, insomnia: float = 1.0) -> None:
        super().__init__(num_particles)
        if not (isinstance(insomnia, (int, float)) and 0.0 <= insomnia <= 1.0):
            raise ConfigError(f"insomnia must be in [0, 1] (1 = wake-phi, 0 = sleep-phi), got {insomnia!r}")
        if insomnia > 0 and num_particles < 2:
            raise ConfigError(
                "reweighted wake-sleep's wake-phi update needs num_particles >= 2 (with one particle the "
                "normalized weight is 1 and the guide's expected gradient is zero); set train.num_particles >= 2, "
                "or insomnia=0 (sleep-phi: classic wake-sleep)"
            )
        self.insomnia = fraction("insomnia", insomnia)

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Value: -IWAE_K bound; gradient: wake-theta for theta, (wake|sleep)-phi for phi."""
        lw, scale = self.weights(model, guide, args, kwargs)
        log_q = lw.log_q
        log_w = lw.log_p - log_q.detach()
        log_sum = log_w.logsumexp(0)
        wake_theta = -scale * (log_sum - math.log(self.num_particles)).sum()
        if not torch.is_grad_enabled():
            return wake_theta
        phi_loss = torch.zeros((), dtype=wake_theta.dtype, device=wake_theta.device)
        if self.insomnia > 0:
            weights = (log_w - log_sum).exp().detach()
            phi_loss = phi_loss + self.insomnia * (-scale * (weights * log_q).sum())
        if self.insomnia < 1:
            phi_loss = phi_loss + (1.0 - self.insomnia) * self._sleep_phi(model, guide, args, kwargs)
        return wake_theta + (phi_loss - phi_loss.detach())

    def _sleep_phi(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
        """-s sum_i (1/K) sum_k log q(z'_ik | x'_ik) for K fantasies (z', x') ~ p per row of the batch."""
        x = args[0] if args else kwargs.get("x")
        if not torch.is_tensor(x) or x.dim() != 2:
            raise UnsupportedModelError("sleep-phi (insomnia < 1) needs a guide called as guide(x, ...) with x of shape (B, D)")
        rest = {k: v for k, v in kwargs.items() if k != "x"}
        K, B = self.num_particles, x.shape[0]
        with torch.no_grad(), pyro.plate("num_sleep_particles_vectorized", K, dim=-2):
            fantasy = poutine.trace(poutine.uncondition(model)).get_trace(x, *args[1:], **rest)
        sites = [s for s in fantasy.nodes.values() if s["type"] == "sample" and not s["is_observed"]]
        observed = [s for s in sites if s["infer"].get("was_observed")]
        if len(observed) != 1 or observed[0]["value"].shape[-1] != x.shape[-1]:
            raise UnsupportedModelError(
                f"sleep-phi (insomnia < 1) needs exactly one observed site shaped like the guide's data; the model has "
                f"{[s['name'] for s in observed]}. Use insomnia=1 (wake-phi)"
            )
        x_fantasy = observed[0]["value"].detach().reshape(K * B, x.shape[-1])
        latents = {s["name"]: s["value"].detach() for s in sites if not s["infer"].get("was_observed")}
        latents = {k: v.reshape(K * B, *v.shape[2:]) for k, v in latents.items()}
        if rest.get("num_data") is not None:  # keep the scale s = N / B: N K rows stand for K B fantasies
            rest["num_data"] = int(rest["num_data"]) * K
        trace = poutine.trace(poutine.condition(guide, data=latents)).get_trace(x_fantasy, *args[1:], **rest)
        trace.compute_log_prob()
        log_q = sum(s["log_prob"].sum() for s in trace.nodes.values() if s["type"] == "sample" and s["name"] in latents)
        return -log_q / K


@OBJECTIVES.register("rws")
def rws_objective(num_particles: int = 1) -> ReweightedWakeSleep:
    """Reweighted wake-sleep: wake-theta on the IWAE bound, wake-phi (K >= 2) or sleep-phi (K = 1: classic wake-sleep)."""
    insomnia = 1.0 if num_particles >= 2 else 0.0
    if num_particles < 2:
        logger.info("rws with num_particles=1: classic wake-sleep (sleep-phi, insomnia=0); K >= 2 gives wake-phi")
    return ReweightedWakeSleep(num_particles=num_particles, insomnia=insomnia)


__all__ = ["ReweightedWakeSleep", "rws_objective"]
