r"""A vectorized HMC transition: N independent chains, one per datapoint, each with its own
Metropolis accept/reject, for persistent per-datapoint chains (Monte Carlo EM, AEVB appendix E),
with a stochastic-approximation step-size adaptation (:func:`adapt_step_size`).

Each row i of z is a chain targeting exp(-U_i(z_i)), with H_i(z, p) = U_i(z) + |p|^2 / 2.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from pyro_vae.errors import ConfigError

Tensor = torch.Tensor


class HMCStep(NamedTuple):
    """One :func:`vectorized_hmc_step`: new states (N, d), accepted (N,) bool, acceptance probability (N,)."""

    z: Tensor
    accept_mask: Tensor
    accept_prob: Tensor


def _energy_and_grad(potential_fn: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        energy = potential_fn(z)
        if energy.shape != z.shape[:-1]:
            raise ConfigError(
                f"potential_fn must return one energy per row, shape {tuple(z.shape[:-1])}, got {tuple(energy.shape)}"
            )
        (grad,) = torch.autograd.grad(energy.sum(), z)
    return energy.detach(), grad.detach()


def vectorized_hmc_step(
    potential_fn: Callable[[Tensor], Tensor],
    z: Tensor,
    step_size: float | Tensor,
    num_steps: int,
    generator: torch.Generator | None = None,
) -> HMCStep:
    r"""One HMC transition for each row of z (N independent chains), identity mass matrix.

    ``potential_fn(z)`` returns U_i(z_i), shape (N,), the energy of row i alone (e.g.
    -log p(z_i) - log p_theta(x_i | z_i)); the rows must not interact, since grad of sum_i U_i
    is taken as each row's gradient. For each row: p ~ N(0, I), ``num_steps`` leapfrog steps of
    size eps_i (``step_size``: a float, or a tensor of shape (N,) for per-row steps)::

        p <- p - eps/2 grad U(z);  [z <- z + eps p;  p <- p - eps grad U(z)] x (L-1);  z <- z + eps p;  p <- p - eps/2 grad U(z)

    then accept row i with probability a_i = min(1, exp(H_i(z, p) - H_i(z', p'))),
    H = U + |p|^2 / 2, independently per row (a NaN/inf energy is a rejection). Leaves each
    row's density exp(-U_i) invariant. Pure: draws come from ``generator`` (or the global RNG),
    no state is kept; gradients flow only to z (freeze model parameters to avoid building
    graphs through them).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ConfigError(f"num_steps must be a positive integer, got {num_steps!r}")
    z = z.detach()
    eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    if eps.dim() > 0:
        if eps.shape != z.shape[:-1]:
            raise ConfigError(f"a per-row step_size must have shape {tuple(z.shape[:-1])}, got {tuple(eps.shape)}")
        eps = eps.unsqueeze(-1)
    if not bool((eps > 0).all()):
        raise ConfigError("step_size must be > 0")
    energy0, grad = _energy_and_grad(potential_fn, z)
    p0 = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    z_new = z
    p = p0 - 0.5 * eps * grad
    for step in range(num_steps):
        z_new = z_new + eps * p
        energy, grad = _energy_and_grad(potential_fn, z_new)
        p = p - (eps if step < num_steps - 1 else 0.5 * eps) * grad
    delta = (energy + 0.5 * p.pow(2).sum(-1)) - (energy0 + 0.5 * p0.pow(2).sum(-1))
    delta = torch.where(torch.isfinite(delta), delta, torch.full_like(delta, math.inf))
    accept_prob = torch.exp(-delta.clamp_min(0.0))
    u = torch.rand(accept_prob.shape, generator=generator, dtype=z.dtype, device=z.device)
    accept = u < accept_prob
    z_out = torch.where(accept.unsqueeze(-1), z_new, z)
    return HMCStep(z_out, accept, accept_prob)


def adapt_step_size(
    step_size: float | Tensor,
    accept_prob: Tensor,
    target: float = 0.9,
    rate: float = 0.05,
    bounds: tuple[float, float] = (1e-4, 10.0),
) -> float | Tensor:
    r"""Stochastic-approximation step-size update towards an acceptance rate ``target``:

        log eps <- log eps + rate (a - target),   clipped to ``bounds``

    With a float ``step_size`` (one global step) a is the mean of ``accept_prob`` and a float is
    returned; with a tensor of shape (N,) (one step per datapoint chain) a is each row's own
    acceptance probability and a tensor is returned. target = 0.9 is the acceptance rate AEVB
    appendix E tunes its HMC to. Adapting a step size from the chain's own history breaks the
    Markov property: adapt during burn-in (or with a vanishing ``rate``) and then hold it fixed
    when the draws must be exact.
    """
    accept_prob = torch.as_tensor(accept_prob).detach()
    low, high = bounds
    if torch.is_tensor(step_size) and step_size.dim() > 0:
        if step_size.shape != accept_prob.shape:
            raise ConfigError(f"per-row step_size {tuple(step_size.shape)} and accept_prob {tuple(accept_prob.shape)} differ")
        update = torch.exp(rate * (accept_prob.to(step_size.dtype) - target))
        return (step_size * update).clamp(low, high)
    mean = float(accept_prob.float().mean())
    return float(min(high, max(low, float(step_size) * math.exp(rate * (mean - target)))))


__all__ = ["HMCStep", "vectorized_hmc_step", "adapt_step_size"]
