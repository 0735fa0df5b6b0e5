"""The vectorized HMC transition (inference.mcmc.hmc): invariance of a Gaussian per row, the
acceptance rate's response to the step size, and step-size adaptation per row and globally.
"""

from __future__ import annotations

import math

import torch

from inference.mcmc import adapt_step_size, vectorized_hmc_step

F64 = torch.float64
S_TRUE = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=F64)


def _gaussian_rows(n, seed):
    g = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(n, 2, generator=g, dtype=F64)
    prec = torch.linalg.inv(S_TRUE)

    def potential(z):
        r = z - means
        return 0.5 * ((r @ prec) * r).sum(-1)

    return means, potential, g


def test_vectorized_hmc_leaves_a_gaussian_invariant():
    """Rows start at exact draws of N(m_i, S); after 200 transitions they must still be exact draws:
    whitened r_i = L^-1 (z_i - m_i) has mean 0 (se 1/sqrt(n)) and E[r_a r_b] = delta_ab (se sqrt((1+delta)/n))."""
    n = 4000
    means, potential, g = _gaussian_rows(n, seed=0)
    L = torch.linalg.cholesky(S_TRUE)
    z = means + torch.randn(n, 2, generator=g, dtype=F64) @ L.T
    accepted = torch.zeros(n, dtype=F64)
    for _ in range(200):
        z, mask, prob = vectorized_hmc_step(potential, z, 0.45, 5, generator=g)
        accepted += mask.to(F64)
    assert 0.3 < float(accepted.mean()) / 200 < 0.999  # the chains moved, and some proposals were rejected
    r = torch.linalg.solve_triangular(L, (z - means).T, upper=False).T
    assert (r.mean(0).abs() < 4 / math.sqrt(n)).all(), r.mean(0)
    second = r.T @ r / n
    se = torch.sqrt((1 + torch.eye(2, dtype=F64)) / n)
    assert ((second - torch.eye(2, dtype=F64)).abs() < 4 * se).all(), second


def test_vectorized_hmc_accept_rate_responds_to_step_size():
    n = 2000
    means, potential, g = _gaussian_rows(n, seed=1)
    z = means.clone()
    rates = []
    for eps in (0.01, 0.3, 0.9):
        _, mask, prob = vectorized_hmc_step(potential, z, eps, 10, generator=g)
        assert mask.shape == prob.shape == (n,) and mask.dtype == torch.bool
        rates.append(float(prob.mean()))
    assert rates[0] > 0.999 and rates[0] > rates[1] > rates[2], rates
    # per-row step sizes: the rows with a huge step reject, the others accept
    eps = torch.where(torch.arange(n) % 2 == 0, 0.01, 5.0).to(F64)
    _, mask, prob = vectorized_hmc_step(potential, z, eps, 10, generator=g)
    assert float(prob[0::2].mean()) > 0.99 and float(prob[1::2].mean()) < 0.05


def test_adapt_step_size_reaches_the_target_per_row_and_globally():
    n = 600
    scales = torch.tensor([0.1, 1.0, 3.0], dtype=F64).repeat_interleave(n // 3)
    g = torch.Generator().manual_seed(2)

    def potential(z):
        return 0.5 * (z / scales.unsqueeze(-1)).pow(2).sum(-1)

    z = scales.unsqueeze(-1) * torch.randn(n, 2, generator=g, dtype=F64)
    eps = torch.ones(n, dtype=F64)
    late = []
    for t in range(400):
        z, _, prob = vectorized_hmc_step(potential, z, eps, 3, generator=g)
        eps = adapt_step_size(eps, prob, target=0.9, rate=0.1)
        if t >= 300:
            late.append(prob)
    late = torch.stack(late).mean(0)
    group_eps = eps.reshape(3, -1).median(1).values
    assert group_eps[0] < group_eps[1] < group_eps[2], group_eps  # steps scale with the posterior width
    assert (late.reshape(3, -1).mean(1) - 0.9).abs().max() < 0.05
    new = adapt_step_size(0.5, torch.tensor([1.0, 1.0]), target=0.9, rate=0.1)
    assert isinstance(new, float) and new > 0.5
    assert adapt_step_size(0.5, torch.tensor([0.0]), target=0.9) < 0.5
