r"""A vectorized HMC kernel: N independent chains, one per row, each with its own Metropolis
accept/reject, for persistent per-datapoint chains (Monte Carlo EM, AEVB appendix E).

Row i of the positions z (any batch shape (...) before the last dimension d) is a chain
targeting pi_i(z_i) proportional to exp(-U_i(z_i)), with identity mass matrix and Hamiltonian::

    H_i(z, p) = U_i(z) + |p|^2 / 2

One transition draws p ~ N(0, I), runs L leapfrog steps of size eps_i from (z, p)::

    p <- p - eps/2 grad U(z);  [z <- z + eps p;  p <- p - eps grad U(z)] x (L-1);  z <- z + eps p;  p <- p - eps/2 grad U(z)

and accepts the end point (z', p') with probability a_i = min(1, exp(-dH_i)),
dH_i = H_i(z', p') - H_i(z, p), independently per row; a NaN/inf energy is a rejection.
The transition is divergent when dH_i exceeds a threshold or is not finite.

The kernel has the shape of BlackJAX's: :func:`init` turns positions into an
:class:`HMCState` (position, U, grad U), and :func:`build_kernel` returns a pure
``kernel(state, potential_fn, step_size, num_steps, generator=...) -> (HMCState, HMCInfo)``:
no state is kept between calls and all randomness comes from ``generator``.
:func:`vectorized_hmc_step` is one transition from bare positions.

The step size adapts by stochastic approximation towards a target acceptance rate
(:func:`adapt_step_size`): log eps <- log eps + rate (a - target).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Protocol

import torch

from pyro_vae.checks import positive_int
from pyro_vae.errors import ConfigError

Tensor = torch.Tensor
PotentialFn = Callable[[Tensor], Tensor]  # z (..., d) -> U(z) (...), one energy per row


class HMCState(NamedTuple):
    """Positions z (..., d) of the chains, their potential energies U(z) (...) and gradients grad U(z) (..., d)."""

    position: Tensor
    potential_energy: Tensor
    potential_energy_grad: Tensor


class HMCInfo(NamedTuple):
    """What one transition did, per row (batch shape (...)).

    ``momentum``: p drawn at the start (..., d); ``acceptance_rate``: a = min(1, exp(-dH));
    ``is_accepted``: bool; ``is_divergent``: bool, dH above the divergence threshold or not
    finite; ``energy``: H(z', p') of the proposal; ``proposal``: the :class:`HMCState` at the
    end of the trajectory; ``num_integration_steps``: L, the leapfrog steps (gradient
    evaluations) of the transition.
    """

    momentum: Tensor
    acceptance_rate: Tensor
    is_accepted: Tensor
    is_divergent: Tensor
    energy: Tensor
    proposal: HMCState
    num_integration_steps: int


class HMCStep(NamedTuple):
    """One :func:`vectorized_hmc_step`: new states (N, d), accepted (N,) bool, acceptance probability (N,)."""

    z: Tensor
    accept_mask: Tensor
    accept_prob: Tensor


class HMCKernel(Protocol):
    """The transition returned by :func:`build_kernel`."""

    def __call__(
        self,
        state: HMCState,
        potential_fn: PotentialFn,
        step_size: float | Tensor,
        num_steps: int,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[HMCState, HMCInfo]: ...


# -- helpers ------------------------------------------------------------------------------------------
def energy_and_grad(potential_fn: PotentialFn, z: Tensor) -> tuple[Tensor, Tensor]:
    """U(z) (...) and grad_z U(z) (..., d), detached; ConfigError unless U has one energy per row."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        energy = potential_fn(z)
        if energy.shape != z.shape[:-1]:
            raise ConfigError(
                f"potential_fn must return one energy per row, shape {tuple(z.shape[:-1])}, got {tuple(energy.shape)}"
            )
        (grad,) = torch.autograd.grad(energy.sum(), z)
    return energy.detach(), grad.detach()


def _check_num_steps(num_steps: int) -> None:
    positive_int("num_steps", num_steps)


def _step_sizes(step_size: float | Tensor, z: Tensor) -> Tensor:
    """eps as a tensor that broadcasts against z: a scalar, or the per-row steps with a trailing unit dimension."""
    eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    if eps.dim() > 0:
        if eps.shape != z.shape[:-1]:
            raise ConfigError(f"a per-row step_size must have shape {tuple(z.shape[:-1])}, got {tuple(eps.shape)}")
        eps = eps.unsqueeze(-1)
    if not bool((eps > 0).all()):
        raise ConfigError("step_size must be > 0")
    return eps


def _leapfrog(
    potential_fn: PotentialFn, state: HMCState, momentum: Tensor, eps: Tensor, num_steps: int
) -> tuple[HMCState, Tensor]:
    """``num_steps`` leapfrog steps of size eps from (state, momentum): the end state and momentum."""
    z, grad = state.position, state.potential_energy_grad
    p = momentum - 0.5 * eps * grad
    for step in range(num_steps):
        z = z + eps * p
        energy, grad = energy_and_grad(potential_fn, z)
        p = p - (eps if step < num_steps - 1 else 0.5 * eps) * grad
    return HMCState(z, energy, grad), p


def _select(accept: Tensor, new: HMCState, old: HMCState) -> HMCState:
    keep = accept.unsqueeze(-1)
    return HMCState(
        torch.where(keep, new.position, old.position),
        torch.where(accept, new.potential_energy, old.potential_energy),
        torch.where(keep, new.potential_energy_grad, old.potential_energy_grad),
    )


# -- the kernel -------------------------------------------------------------------------------------------
def init(position: Tensor, potential_fn: PotentialFn) -> HMCState:
    r"""The HMC state at ``position``: (z, U(z), grad_z U(z)), all detached.

    Parameters
    ----------
    position : Tensor
        z of shape (..., d), one chain per row.
    potential_fn : Callable
        z -> U(z) of shape (...), the energy of each row alone (rows must not interact:
        grad of sum_i U_i is taken as each row's gradient).

    Returns
    -------
    HMCState
    """
    position = position.detach()
    energy, grad = energy_and_grad(potential_fn, position)
    return HMCState(position, energy, grad)


def build_kernel(divergence_threshold: float = 1000.0) -> HMCKernel:
    r"""An HMC transition with identity mass matrix, for independent chains in the rows of the state.

    ``kernel(state, potential_fn, step_size, num_steps, *, generator=None) -> (HMCState, HMCInfo)``
    draws p ~ N(0, I), runs ``num_steps`` = L leapfrog steps of size eps (``step_size``: a
    float, or a tensor of the state's batch shape (...) for per-row steps) and accepts each
    row's end point with probability a_i = min(1, exp(-(H_i(z', p') - H_i(z, p)))),
    H = U + |p|^2 / 2. It leaves each row's density exp(-U_i) invariant. ``potential_fn``
    must be the one ``state`` was built with (its energies and gradients are reused).

    Parameters
    ----------
    divergence_threshold : float
        A transition is divergent where dH = H(z', p') - H(z, p) exceeds this, or is not finite.

    Returns
    -------
    HMCKernel
        Pure: the same state and generator state give the same result; the input state is
        not modified; gradients flow only to z (freeze model parameters to avoid building
        graphs through them).
    """

    def kernel(
        state: HMCState,
        potential_fn: PotentialFn,
        step_size: float | Tensor,
        num_steps: int,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[HMCState, HMCInfo]:
        _check_num_steps(num_steps)
        z = state.position
        eps = _step_sizes(step_size, z)
        p0 = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        proposal, p = _leapfrog(potential_fn, state, p0, eps, num_steps)
        energy = proposal.potential_energy + 0.5 * p.pow(2).sum(-1)
        delta = energy - (state.potential_energy + 0.5 * p0.pow(2).sum(-1))
        finite = torch.isfinite(delta)
        divergent = ~finite | (delta > divergence_threshold)
        delta = torch.where(finite, delta, torch.full_like(delta, math.inf))
        accept_prob = torch.exp(-delta.clamp_min(0.0))
        u = torch.rand(accept_prob.shape, generator=generator, dtype=z.dtype, device=z.device)
        accept = u < accept_prob
        info = HMCInfo(p0, accept_prob, accept, divergent, energy, proposal, num_steps)
        return _select(accept, proposal, state), info

    return kernel


_KERNEL = build_kernel()


def vectorized_hmc_step(
    potential_fn: PotentialFn,
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
    graphs through them). Equal to ``build_kernel()(init(z, potential_fn), potential_fn,
    step_size, num_steps, generator=generator)``, which costs L + 1 gradient evaluations.
    """
    _check_num_steps(num_steps)
    _step_sizes(step_size, z)  # settings are checked before any energy is computed
    state, info = _KERNEL(init(z, potential_fn), potential_fn, step_size, num_steps, generator=generator)
    return HMCStep(state.position, info.is_accepted, info.acceptance_rate)


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


__all__ = [
    "HMCState", "HMCInfo", "HMCStep", "HMCKernel", "init", "build_kernel", "vectorized_hmc_step", "adapt_step_size",
]
