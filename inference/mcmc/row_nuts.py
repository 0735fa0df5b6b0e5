r"""The No-U-Turn sampler as N independent chains in lockstep, one chain per row.

Row i of the positions z (N, d) is a chain targeting pi_i(z_i) proportional to exp(-U_i(z_i)), with
its own step size eps_i and diagonal inverse mass matrix m_i (M_i^-1 = diag(m_i))::

    H_i(z, p) = U_i(z) + 1/2 sum_j m_ij p_j^2,        p ~ N(0, M_i)

One transition is Stan's multinomial NUTS (Betancourt 2017, "A conceptual introduction to Hamiltonian
Monte Carlo", appendix A): the trajectory doubles in a random direction, 1, 2, 4, ... leapfrog steps,
until the generalized no-U-turn criterion fails on the whole trajectory or on any of its binary
sub-trees, with rho the sum of the momenta over a (sub-)tree and p^# = M^-1 p at its two ends::

    continue  <=>  p^#_minus . rho > 0  and  p^#_plus . rho > 0

checked also across the seam of every merge (the two extra checks Stan added in 2.23). A new
sub-tree with a U-turn or a divergence (H - H_0 > 1000, or not finite) is discarded and ends the
trajectory. The state is drawn in proportion to w = exp(-H): uniformly within a sub-tree
(progressive multinomial sampling) and biased towards the new sub-tree at each doubling
(accept its draw with probability min(1, W_new / W_old)). This leaves each row's pi_i invariant.

Each row builds its own tree: the rows take their leapfrog steps together, but a row whose
trajectory has ended takes no more, and the potential is evaluated only on the rows still moving
(``potential_fn(z_rows, rows)``), so the cost is the sum of the rows' trajectory lengths, not N
times the longest. The kernel has the shape of BlackJAX's (``init``, ``build_kernel``): pure, all
randomness from ``generator``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Protocol

import torch

from inference.mcmc.hmc import HMCState
from inference.mcmc.hmc import energy_and_grad as hmc_energy_and_grad
from pyro_vae.checks import positive_int

Tensor = torch.Tensor
RowPotential = Callable[[Tensor, Tensor], Tensor]  # (z (n, d), rows (n,) long) -> U_rows(z) (n,)

DIVERGENCE = 1000.0  # H - H_0 above this ends the trajectory as divergent (Stan's and Pyro's threshold)


class NUTSInfo(NamedTuple):
    """What one transition did, per row (N,).

    ``acceptance_rate``: the mean over the trajectory's new states of min(1, exp(H_0 - H)) (Stan's
    statistic, what step-size adaptation targets); ``is_divergent``: bool; ``tree_depth``: the
    doublings kept (as Stan counts: a last doubling discarded for a U-turn or a divergence is not); ``num_integration_steps``: leapfrog steps (= gradient evaluations of the row).
    """

    acceptance_rate: Tensor
    is_divergent: Tensor
    tree_depth: Tensor
    num_integration_steps: Tensor


class RowNUTSKernel(Protocol):
    """The transition returned by :func:`build_kernel`."""

    def __call__(self, state: HMCState, potential_fn: RowPotential, step_size: Tensor, inverse_mass: Tensor, *,
                 generator: torch.Generator | None = None) -> tuple[HMCState, NUTSInfo]: ...


def energy_and_grad(potential_fn: RowPotential, z: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """U_rows(z) (n,) and its gradient (n, d), detached (:func:`inference.mcmc.hmc.energy_and_grad` on the rows)."""
    return hmc_energy_and_grad(lambda z_rows: potential_fn(z_rows, rows), z)


def init(position: Tensor, potential_fn: RowPotential) -> HMCState:
    """The state (z, U(z), grad U(z)) at ``position`` (N, d), every row evaluated."""
    rows = torch.arange(position.shape[0], device=position.device)
    energy, grad = energy_and_grad(potential_fn, position, rows)
    return HMCState(position.detach(), energy, grad)


def _persists(inverse_mass: Tensor, p_a: Tensor, p_b: Tensor, rho: Tensor) -> Tensor:
    """The no-U-turn criterion (M^-1 p_a) . rho > 0 and (M^-1 p_b) . rho > 0, per row."""
    return ((inverse_mass * p_a * rho).sum(-1) > 0) & ((inverse_mass * p_b * rho).sum(-1) > 0)


def _kinetic(p: Tensor, inverse_mass: Tensor) -> Tensor:
    return 0.5 * (inverse_mass * p * p).sum(-1)


class _Subtree(NamedTuple):
    valid: Tensor          # (m,) no U-turn inside, no divergence
    log_weight: Tensor     # (m,) log sum over its states of exp(H_0 - H)
    sample: HMCState       # the state drawn from it in proportion to exp(-H)
    end: HMCState          # its last state, and the momentum there
    end_momentum: Tensor
    first_momentum: Tensor  # the momentum at its first state (the seam with the trajectory)
    rho: Tensor            # the sum of its momenta (m, d)
    accept_sum: Tensor     # sum over its states of min(1, exp(H_0 - H))
    steps: Tensor          # leapfrog steps taken (m,)
    divergent: Tensor


class _Checkpoints(NamedTuple):
    """What the U-turn checks of the binary sub-trees of a sub-tree need, per level k = 1..depth (a block of
    2^k steps starting at s, its halves meeting at mid), each (depth + 1, rows, d): the momentum at s and
    the running sum of momenta before s; the momenta at mid and mid - 1 and the running sum before mid.
    O(depth) memory per row instead of the 2^depth momenta of the sub-tree."""

    first: Tensor
    before_first: Tensor
    mid: Tensor
    before_mid: Tensor
    mid_prev: Tensor


def _checkpoint(i: int, depth: int, ck: _Checkpoints, live: Tensor, p: Tensor, before: Tensor, prev: Tensor) -> None:
    """Record step i (momentum ``p``, running sum ``before`` it, previous momentum ``prev``) where it opens a
    block of some level, or the second half of one."""
    for k in range(1, depth + 1):
        if i % (1 << k) == 0:
            ck.first[k, live], ck.before_first[k, live] = p, before
        elif i % (1 << (k - 1)) == 0:
            ck.mid[k, live], ck.before_mid[k, live], ck.mid_prev[k, live] = p, before, prev


def _uturn_inside(i: int, depth: int, ck: _Checkpoints, live: Tensor, p: Tensor, cum: Tensor, m: Tensor) -> Tensor:
    """No U-turn in any sub-tree of size 2^k (1 <= k <= depth) ending at step i (momentum ``p``, running sum
    ``cum`` through it), with the two seam checks of its halves, for the ``live`` rows."""
    ok = torch.ones(live.shape[0], dtype=torch.bool, device=p.device)
    k = 1
    while k <= depth and (i + 1) % (1 << k) == 0:
        first, before = ck.first[k, live], ck.before_first[k, live]
        ok &= _persists(m, first, p, cum - before)
        if k > 1:  # for k = 1 the seam checks are the criterion itself
            mid, before_mid, mid_prev = ck.mid[k, live], ck.before_mid[k, live], ck.mid_prev[k, live]
            ok &= _persists(m, first, mid, before_mid - before + mid)
            ok &= _persists(m, mid_prev, p, cum - before_mid + mid_prev)
        k += 1
    return ok


def _subtree(potential_fn: RowPotential, rows: Tensor, start: HMCState, momentum: Tensor, H0: Tensor,
             eps: Tensor, inverse_mass: Tensor, depth: int, generator: torch.Generator | None) -> _Subtree:
    """2^depth leapfrog steps of signed size ``eps`` (m, 1) from ``start`` for the m ``rows``; each row stops at
    its first divergence or inner U-turn (then ``valid`` is False)."""
    n, (m_rows, d) = 1 << depth, start.position.shape
    z, p, g = start.position.clone(), momentum.clone(), start.potential_energy_grad.clone()
    U = start.potential_energy.clone()
    sample = HMCState(z.clone(), U.clone(), g.clone())
    log_w = torch.full((m_rows,), -math.inf, dtype=z.dtype, device=z.device)
    alive = torch.ones(m_rows, dtype=torch.bool, device=z.device)
    accept_sum, divergent = torch.zeros_like(log_w), torch.zeros_like(alive)
    steps = torch.zeros(m_rows, dtype=torch.long, device=z.device)
    ck = _Checkpoints(*(z.new_zeros((depth + 1, m_rows, d)) for _ in range(5)))
    cum, p_prev = z.new_zeros((m_rows, d)), z.new_zeros((m_rows, d))  # sum of the momenta so far, the last one
    for i in range(n):
        live = alive.nonzero().squeeze(-1)
        if live.numel() == 0:
            break
        e, m = eps[live], inverse_mass[live]
        p_half = p[live] - 0.5 * e * g[live]
        z_new = z[live] + e * m * p_half
        U_new, g_new = energy_and_grad(potential_fn, z_new, rows[live])
        p_new = p_half - 0.5 * e * g_new
        z[live], p[live], g[live], U[live] = z_new, p_new, g_new, U_new
        delta = U_new + _kinetic(p_new, m) - H0[live]
        delta = torch.where(torch.isfinite(delta), delta, torch.full_like(delta, math.inf))  # NaN, +-inf: divergent
        div = delta > DIVERGENCE
        accept_sum[live] += torch.exp(-delta.clamp_min(0.0))
        steps[live] += 1
        divergent[live] |= div
        lw = -delta
        total = torch.logaddexp(log_w[live], lw)
        u = torch.rand(live.shape[0], generator=generator, dtype=z.dtype, device=z.device)
        take = live[u < torch.exp(lw - total)]
        sample.position[take], sample.potential_energy[take] = z[take], U[take]
        sample.potential_energy_grad[take] = g[take]
        log_w[live] = total
        before = cum[live]
        _checkpoint(i, depth, ck, live, p_new, before, p_prev[live])
        cum[live], p_prev[live] = before + p_new, p_new
        if i == 0:
            first = p_new.clone()
        alive[live] = ~div & _uturn_inside(i, depth, ck, live, p_new, cum[live], m)
    valid = alive  # a row still alive after n steps finished its sub-tree cleanly
    return _Subtree(valid, log_w, sample, HMCState(z, U, g), p, first, cum, accept_sum, steps, divergent)


def build_kernel(max_tree_depth: int = 10) -> RowNUTSKernel:
    r"""A multinomial NUTS transition for independent chains in the rows of the state (module docstring).

    ``kernel(state, potential_fn, step_size, inverse_mass, *, generator=None) -> (HMCState, NUTSInfo)``:
    ``step_size`` eps (N,) and ``inverse_mass`` m (N, d) per row; at most 2^max_tree_depth - 1 leapfrog
    steps per row. ``potential_fn(z, rows)`` returns U_i(z_i) for the given rows (a long index into the
    N rows) and must be the one ``state`` was built with. Leaves each row's exp(-U_i) invariant.

    Parameters
    ----------
    max_tree_depth : int
        The most doublings of a trajectory.

    Returns
    -------
    RowNUTSKernel
        Pure: the same state and generator state give the same result; gradients flow only to z.
    """
    positive_int("max_tree_depth", max_tree_depth)

    def kernel(state: HMCState, potential_fn: RowPotential, step_size: Tensor, inverse_mass: Tensor, *,
               generator: torch.Generator | None = None) -> tuple[HMCState, NUTSInfo]:
        z0 = state.position
        N = z0.shape[0]
        like = dict(dtype=z0.dtype, device=z0.device)
        p0 = torch.randn(z0.shape, generator=generator, **like) / inverse_mass.sqrt()
        H0 = state.potential_energy + _kinetic(p0, inverse_mass)
        minus, plus = state, state  # the trajectory's two ends, and their momenta
        p_minus, p_plus, rho = p0, p0, p0.clone()
        chosen = HMCState(z0.clone(), state.potential_energy.clone(), state.potential_energy_grad.clone())
        log_w = torch.zeros(N, **like)
        running = torch.ones(N, dtype=torch.bool, device=z0.device)
        depth = torch.zeros(N, dtype=torch.long, device=z0.device)
        steps, accept_sum, divergent = torch.zeros_like(depth), torch.zeros(N, **like), torch.zeros_like(running)
        for j in range(max_tree_depth):
            forward_all = torch.rand(N, generator=generator, **like) < 0.5
            rows = running.nonzero().squeeze(-1)
            if rows.numel() == 0:
                break
            fw = forward_all[rows]
            f1 = fw.unsqueeze(-1)
            start = HMCState(torch.where(f1, plus.position[rows], minus.position[rows]),
                             torch.where(fw, plus.potential_energy[rows], minus.potential_energy[rows]),
                             torch.where(f1, plus.potential_energy_grad[rows], minus.potential_energy_grad[rows]))
            p_start = torch.where(f1, p_plus[rows], p_minus[rows])
            eps = torch.where(fw, step_size[rows], -step_size[rows]).unsqueeze(-1)
            sub = _subtree(potential_fn, rows, start, p_start, H0[rows], eps, inverse_mass[rows], j, generator)
            steps[rows] += sub.steps
            accept_sum[rows] += sub.accept_sum
            divergent[rows] |= sub.divergent
            depth[rows] = torch.where(sub.valid, j + 1, depth[rows])  # Stan's: the doublings kept
            u = torch.rand(rows.shape[0], generator=generator, **like)
            pick = sub.valid & (u < torch.exp(sub.log_weight - log_w[rows]))  # biased progressive sampling
            take = rows[pick]
            chosen.position[take] = sub.sample.position[pick]
            chosen.potential_energy[take] = sub.sample.potential_energy[pick]
            chosen.potential_energy_grad[take] = sub.sample.potential_energy_grad[pick]
            log_w[rows] = torch.where(sub.valid, torch.logaddexp(log_w[rows], sub.log_weight), log_w[rows])
            # the merged trajectory: left part | right part, in time order
            old_minus_p, old_plus_p, old_rho = p_minus[rows], p_plus[rows], rho[rows]
            new_rho = old_rho + sub.rho
            new_minus_p = torch.where(f1, old_minus_p, sub.end_momentum)
            new_plus_p = torch.where(f1, sub.end_momentum, old_plus_p)
            left_rho, right_rho = torch.where(f1, old_rho, sub.rho), torch.where(f1, sub.rho, old_rho)
            left_last = torch.where(f1, old_plus_p, sub.first_momentum)
            right_first = torch.where(f1, sub.first_momentum, old_minus_p)
            m = inverse_mass[rows]
            persist = (_persists(m, new_minus_p, new_plus_p, new_rho)
                       & _persists(m, new_minus_p, right_first, left_rho + right_first)
                       & _persists(m, left_last, new_plus_p, right_rho + left_last))
            plus, minus = _replace_end(plus, rows, fw, sub.end), _replace_end(minus, rows, ~fw, sub.end)
            p_plus, p_minus, rho = p_plus.clone(), p_minus.clone(), rho.clone()
            p_plus[rows], p_minus[rows], rho[rows] = new_plus_p, new_minus_p, new_rho
            running[rows] = sub.valid & persist
        info = NUTSInfo(accept_sum / steps.clamp_min(1), divergent, depth, steps)
        return chosen, info

    return kernel


def _replace_end(end: HMCState, rows: Tensor, where: Tensor, new: HMCState) -> HMCState:
    """``end`` with the rows ``rows[where]`` set to ``new[where]`` (a copy)."""
    idx = rows[where]
    position, energy, grad = end.position.clone(), end.potential_energy.clone(), end.potential_energy_grad.clone()
    position[idx], energy[idx], grad[idx] = new.position[where], new.potential_energy[where], new.potential_energy_grad[where]
    return HMCState(position, energy, grad)


def find_step_size(state: HMCState, potential_fn: RowPotential, step_size: Tensor, inverse_mass: Tensor, *,
                   target: float = 0.8, max_doublings: int = 30,
                   generator: torch.Generator | None = None) -> Tensor:
    r"""A first step size per row by Stan's heuristic: from eps, double (or halve) it while one leapfrog
    step's acceptance probability exp(H_0 - H_1) stays above (below) ``target``; the rows move independently
    and only the rows still searching are evaluated.
    """
    eps = step_size.clone()
    z = state.position
    rows = torch.arange(z.shape[0], device=z.device)
    grow = None  # per row: True, the step grows; False, it shrinks
    for _ in range(max_doublings):
        e, m = eps[rows].unsqueeze(-1), inverse_mass[rows]
        p = torch.randn((rows.shape[0], z.shape[1]), generator=generator, dtype=z.dtype, device=z.device) / m.sqrt()
        p_half = p - 0.5 * e * state.potential_energy_grad[rows]
        U1, g1 = energy_and_grad(potential_fn, z[rows] + e * m * p_half, rows)
        p1 = p_half - 0.5 * e * g1
        log_a = state.potential_energy[rows] + _kinetic(p, m) - U1 - _kinetic(p1, m)
        above = torch.nan_to_num(log_a, nan=-math.inf) > math.log(target)
        if grow is None:
            grow = above
        keep = above == grow[rows]  # rows that have not crossed the target yet
        rows = rows[keep]
        if rows.numel() == 0:
            break
        eps[rows] = torch.where(grow[rows], eps[rows] * 2.0, eps[rows] / 2.0)
    return eps


__all__ = ["NUTSInfo", "RowNUTSKernel", "RowPotential", "init", "build_kernel", "find_step_size", "energy_and_grad"]
