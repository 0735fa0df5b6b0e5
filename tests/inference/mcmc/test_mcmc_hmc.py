"""The vectorized HMC kernel (inference.mcmc.hmc): invariance of a Gaussian per row, the
acceptance rate's response to the step size, step-size adaptation per row and globally, and the
kernel's shape: a pure transition of an HMCState that leaves N(0, I) invariant.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from inference.mcmc import adapt_step_size, hmc, vectorized_hmc_step

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


# -- the kernel: init / build_kernel ----------------------------------------------------------------------
def _quartic(z):
    """A non-Gaussian potential, one energy per row: U(z) = |z|^2 / 2 + |z|_4^4 / 10."""
    return 0.5 * z.pow(2).sum(-1) + 0.1 * z.pow(4).sum(-1)


def test_kernel_is_pure_same_state_same_seed_same_next_state():
    z = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    state = hmc.init(z, _quartic)
    before = [t.clone() for t in state]
    kernel = hmc.build_kernel()
    a, info_a = kernel(state, _quartic, 0.4, 5, generator=torch.Generator().manual_seed(7))
    b, info_b = kernel(state, _quartic, 0.4, 5, generator=torch.Generator().manual_seed(7))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    for x, y in zip(info_a[:5], info_b[:5]):
        assert torch.equal(x, y)
    assert all(torch.equal(t, u) for t, u in zip(state, before))  # the input state is not modified
    c, _ = kernel(state, _quartic, 0.4, 5, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(a.position, c.position)
    # the next state carries the energies and gradients of its own positions
    fresh = hmc.init(a.position, _quartic)
    torch.testing.assert_close(a.potential_energy, fresh.potential_energy)
    torch.testing.assert_close(a.potential_energy_grad, fresh.potential_energy_grad)
    # info: per row, and the accepted rows moved to the proposal
    assert info_a.acceptance_rate.shape == info_a.is_accepted.shape == info_a.is_divergent.shape == (50,)
    assert info_a.momentum.shape == (50, 3) and info_a.num_integration_steps == 5
    assert 0 < int(info_a.is_accepted.sum()) < 50 and not bool(info_a.is_divergent.any())
    moved = info_a.is_accepted
    assert torch.equal(a.position[moved], info_a.proposal.position[moved]) and torch.equal(a.position[~moved], z[~moved])
    # vectorized_hmc_step is one kernel transition from init(z)
    step = vectorized_hmc_step(_quartic, z, 0.4, 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(step.z, a.position) and torch.equal(step.accept_mask, info_a.is_accepted)
    assert torch.equal(step.accept_prob, info_a.acceptance_rate)


def test_kernel_flags_divergent_trajectories_and_rejects_them():
    z = torch.randn(20, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    state = hmc.init(z, _quartic)
    new, info = hmc.build_kernel()(state, _quartic, 5.0, 10, generator=torch.Generator().manual_seed(2))
    assert bool(info.is_divergent.all()) and not bool(info.is_accepted.any())
    assert torch.equal(new.position, z)


def test_kernel_leaves_the_standard_normal_invariant(ess_mean):
    """n chains start at exact draws of N(0, I_3) and make T transitions each: all n T draws must still
    follow N(0, I). Per coordinate k, the pooled mean has se 1/sqrt(ESS(z_k)) and the pooled E[z_k^2]
    (= 1) has se sqrt(Var(z_k^2) / ESS(z_k^2)) = sqrt(2 / ESS(z_k^2)), with ArviZ's ESS over the
    (n chains, T draws) array; each must lie within 4 se."""
    n, T, d = 200, 400, 3
    g = torch.Generator().manual_seed(0)
    kernel = hmc.build_kernel()

    def potential(z):
        return 0.5 * z.pow(2).sum(-1)

    state = hmc.init(torch.randn(n, d, generator=g, dtype=F64), potential)
    draws, accepted = [], 0.0
    for _ in range(T):
        state, info = kernel(state, potential, 0.3, 5, generator=g)
        draws.append(state.position)
        accepted += float(info.acceptance_rate.mean()) / T
    assert 0.9 < accepted < 1.0  # the chains moved, and some proposals were rejected
    z = torch.stack(draws, dim=1).numpy()  # (n chains, T draws, d)
    ess_first, ess_second = ess_mean(z), ess_mean(z**2)
    assert (ess_first > 0.1 * n * T).all() and (ess_second > 0.1 * n * T).all()  # the chains mix
    mean, second = z.mean((0, 1)), (z**2).mean((0, 1))
    assert (np.abs(mean) < 4 / np.sqrt(ess_first)).all(), (mean, ess_first)
    assert (np.abs(second - 1) < 4 * np.sqrt(2 / ess_second)).all(), (second, ess_second)
