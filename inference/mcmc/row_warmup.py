r"""Warm-up and sampling for the per-row NUTS kernel (:mod:`inference.mcmc.row_nuts`): each row adapts its own
step size and diagonal mass matrix, as Stan adapts one chain.

Warm-up follows Stan's schedule. The step size of row i adapts by dual averaging (Hoffman & Gelman 2014,
Pyro's :class:`~pyro.ops.dual_averaging.DualAveraging` run on a vector) towards the target acceptance
statistic delta::

    g_t = delta - a_t,   log eps_t = mu - sqrt(t) / gamma * mean(g_1..g_t),   mu = log(10 eps_0)

and ends at the weighted average of log eps_t. The inverse mass m_i is the variance of the row's draws in
windows of 25, 50, 100, ... transitions between an initial buffer of 75 and a terminal buffer of 50 (15 %,
75 % and 10 % of a warm-up shorter than 150; a window whose doubled successor would not fit before the
terminal buffer runs to it, the first window included, where Stan keeps the first at 25 and may leave a
last window of a few transitions), regularized as Stan does,
m = n / (n + 5) Var + 1e-3 * 5 / (n + 5) (Pyro's :class:`~pyro.ops.welford.WelfordCovariance`); after each
window the step size is searched again and its averaging restarts.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from pyro.ops.dual_averaging import DualAveraging
from pyro.ops.welford import WelfordCovariance

from inference.mcmc.row_nuts import RowPotential, build_kernel, find_step_size, init
from inference.progress import bar

Tensor = torch.Tensor
ROW_STAT_KEYS = ("diverging", "accept_prob", "tree_depth", "num_steps", "lp")
STEP_BOUNDS = (1e-8, 1e3)  # a step size outside these is clipped (a flat or a degenerate row)


class RowChain(NamedTuple):
    """One chain per row from :func:`run_row_nuts`.

    ``z``: draws (S, N, d) in the coordinates the potential takes; ``stats``: each of
    :data:`ROW_STAT_KEYS` as an (S, N) numpy array (``lp`` = -U); ``step_size`` (N,) and
    ``inverse_mass`` (N, d): the adapted values the draws used; ``row_gradient_evals``: the rows'
    gradients evaluated in all, warm-up and step-size searches included.
    """

    z: Tensor
    stats: dict[str, np.ndarray]
    step_size: Tensor
    inverse_mass: Tensor
    row_gradient_evals: int


def mass_windows(warmup: int) -> list[tuple[int, int]]:
    """Stan's mass-matrix windows [start, end) of transitions within ``warmup`` (module docstring); none
    below 20 transitions, where only the step size adapts."""
    if warmup < 20:
        return []
    first, last, size = 75, 50, 25
    if first + last + size > warmup:
        first, last = int(0.15 * warmup), int(0.1 * warmup)
        size = warmup - first - last
    end_slow, start, windows = warmup - last, first, []
    while start < end_slow:
        end = start + size
        if end + 2 * size > end_slow:  # the next, doubled window would not fit: this one runs to the buffer
            end = end_slow
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


def _from_log(log_eps: Tensor) -> Tensor:
    """exp(log eps) within STEP_BOUNDS, clipped before the exponential (no overflow); NaN gives 1."""
    low, high = (math.log(bound) for bound in STEP_BOUNDS)
    return torch.exp(log_eps.nan_to_num(0.0).clamp(low, high))


def _clip(eps: Tensor) -> Tensor:
    return _from_log(torch.log(eps))


def run_row_nuts(potential_fn: RowPotential, position: Tensor, *, num_samples: int, warmup: int,
                 step_size: float = 1.0, max_tree_depth: int = 10, target_accept: float = 0.8,
                 generator: torch.Generator | None = None, progress: bool = False) -> RowChain:
    r"""Warm up and run one NUTS chain per row of ``position`` (N, d), all rows in lockstep.

    Row i targets exp(-U_i(z_i)), ``potential_fn(z, rows)`` giving U for the rows indexed by ``rows``.
    With ``warmup`` > 0 the step sizes and diagonal inverse masses adapt per row (module docstring),
    from ``step_size`` and unit masses; with ``warmup`` = 0 they stay there. The draws are the states
    after each of the ``num_samples`` transitions that follow.

    Returns
    -------
    RowChain
    """
    kernel, evals = build_kernel(max_tree_depth), [0]

    def counted(z: Tensor, rows: Tensor) -> Tensor:  # every row gradient, step-size searches included
        evals[0] += rows.shape[0]
        return potential_fn(z, rows)

    state = init(position, counted)
    N, d = position.shape
    like = dict(dtype=position.dtype, device=position.device)
    inverse_mass = torch.ones(N, d, **like)
    eps = torch.full((N,), float(step_size), **like)
    if warmup > 0:
        eps = _clip(find_step_size(state, counted, eps, inverse_mass, target=target_accept, generator=generator))
    averaging = DualAveraging(prox_center=torch.log(10 * eps))
    windows = {end: start for start, end in mass_windows(warmup)}
    starts = set(windows.values())
    variance = WelfordCovariance(diagonal=True)
    collecting = False
    draws, stats = [], {key: [] for key in ROW_STAT_KEYS}
    for t in bar(range(warmup + num_samples), enabled=progress, desc="per-row NUTS", unit="transition"):
        state, info = kernel(state, counted, eps, inverse_mass, generator=generator)
        if t < warmup:
            averaging.step(target_accept - info.acceptance_rate)
            eps = _from_log(averaging.get_state()[0])
            collecting = collecting or t in starts
            if collecting:
                variance.update(state.position)
            if t + 1 in windows:
                inverse_mass, collecting = variance.get_covariance(regularize=True), False
                variance.reset()
                eps = _clip(find_step_size(state, counted, eps, inverse_mass, target=target_accept,
                                           generator=generator))
                averaging = DualAveraging(prox_center=torch.log(10 * eps))
            if t + 1 == warmup:
                eps = _from_log(averaging.get_state()[1])
            continue
        draws.append(state.position.clone())
        for key, value in zip(ROW_STAT_KEYS, (info.is_divergent, info.acceptance_rate, info.tree_depth,
                                              info.num_integration_steps, -state.potential_energy)):
            stats[key].append(value.detach().cpu().numpy())
    return RowChain(torch.stack(draws), {key: np.stack(v) for key, v in stats.items()}, eps, inverse_mass, evals[0])


__all__ = ["ROW_STAT_KEYS", "RowChain", "mass_windows", "run_row_nuts"]
