"""One NUTS chain per row (inference.mcmc.row_nuts, row_warmup): invariance of a non-Gaussian target
started at exact draws, per-row adaptation, the work done only on moving rows, Stan's windows,
reproducibility. The exact-posterior checks on pPCA are in test_mcmc_latents.py (kernel row_nuts).

Tolerances are 4 standard errors of the statistic under independent exact draws.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference.mcmc import sample_latents
from inference.mcmc.row_nuts import _checkpoint, _Checkpoints, _uturn_inside, build_kernel, init
from inference.mcmc.row_warmup import mass_windows, run_row_nuts
from pyro_vae.errors import ConfigError

F64 = torch.float64


def _sech_potential(z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The hyperbolic secant law, density 1/2 sech(pi z / 2) per coordinate: U = sum log cosh(pi z / 2)."""
    a = 0.5 * math.pi * z
    return (a.abs() + torch.log1p(torch.exp(-2 * a.abs())) - math.log(2.0)).sum(-1)


def _sech_draws(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    u = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return (2 / math.pi) * torch.log(torch.tan(0.5 * math.pi * u))


def test_a_non_gaussian_target_stays_exact_under_long_steps():
    """Start 4000 rows at exact draws of the secant law (variance 1, kurtosis 5) and take five transitions
    with a long fixed step (no adaptation): the draws keep its variance and its tail mass P(|z| > 2)."""
    N, d = 4000, 2
    out = run_row_nuts(_sech_potential, _sech_draws((N, d), 0), num_samples=5, warmup=0, step_size=1.3,
                       generator=torch.Generator().manual_seed(1))
    z = out.z[-1].flatten()
    n = z.numel()
    assert abs(float(z.var()) - 1.0) < 4 * math.sqrt((5 - 1) / n), float(z.var())  # Var(s^2) = (kappa - 1) / n
    tail = 2 * (1 - (2 / math.pi) * math.atan(math.exp(math.pi)))  # P(|z| > 2) = 2 (1 - F(2))
    frac = float((z.abs() > 2).double().mean())
    assert abs(frac - tail) < 4 * math.sqrt(tail * (1 - tail) / n), (frac, tail)
    assert out.stats["diverging"].sum() == 0 and (out.stats["accept_prob"] < 1).any()


def _stan_subtree(ps: np.ndarray, depth: int, used: list[int]) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray]:
    """Stan's recursive build_tree, the criterion only (unit mass): (valid, rho, first p, last p); ``used[0]``
    counts the steps taken before it stops."""
    if depth == 0:
        p = ps[used[0]]
        used[0] += 1
        return True, p.copy(), p, p
    ok, rho_a, first_a, last_a = _stan_subtree(ps, depth - 1, used)
    if not ok:
        return False, rho_a, first_a, last_a
    ok, rho_b, first_b, last_b = _stan_subtree(ps, depth - 1, used)
    if not ok:
        return False, rho_b, first_b, last_b
    rho = rho_a + rho_b

    def persists(a, b, r):
        return a @ r > 0 and b @ r > 0

    ok = persists(first_a, last_b, rho) and persists(first_a, first_b, rho_a + first_b) and \
        persists(last_a, last_b, rho_b + last_a)
    return ok, rho, first_a, last_b


def test_the_step_by_step_u_turn_checks_are_stans_recursion():
    """On 400 random momentum sequences (depth 1-7, d 1-3, most of them turning somewhere), the checks made step
    by step from O(depth) checkpoints stop at the same step as Stan's recursive sub-tree, or both never stop."""
    rng = np.random.default_rng(0)
    stopped = 0
    for _ in range(400):
        depth, d = int(rng.integers(1, 8)), int(rng.integers(1, 4))
        n, pull, v = 1 << depth, rng.uniform(0.05, 1.5), rng.standard_normal(d)
        ps = np.zeros((n, d))
        for i in range(n):
            v = v + rng.standard_normal(d) * rng.uniform(0, 1.5) - 0.3 * pull * v
            ps[i] = v
        used = [0]
        ok, *_ = _stan_subtree(ps, depth, used)
        ck = _Checkpoints(*(torch.zeros(depth + 1, 1, d, dtype=F64) for _ in range(5)))
        live, mass = torch.tensor([0]), torch.ones(1, d, dtype=F64)
        cum, prev, steps, still = torch.zeros(1, d, dtype=F64), torch.zeros(1, d, dtype=F64), n, True
        for i in range(n):
            p = torch.as_tensor(ps[i : i + 1])
            _checkpoint(i, depth, ck, live, p, cum, prev)
            cum, prev = cum + p, p
            if not bool(_uturn_inside(i, depth, ck, live, p, cum, mass)[0]):
                steps, still = i + 1, False
                break
        assert (still, steps) == (ok, used[0]), (depth, d)
        stopped += not ok
    assert 100 < stopped < 380  # both outcomes are exercised


def test_each_row_adapts_its_own_mass_and_step():
    """Rows whose posterior sds differ by 10^4: the inverse masses follow each row's variance and the
    adapted steps stay of order one, where one shared step would have to fit the narrowest row."""
    N, d = 40, 2
    sd = torch.logspace(-2, 2, N, dtype=F64).unsqueeze(-1) * torch.tensor([1.0, 2.0], dtype=F64)

    def potential(z, rows):
        return 0.5 * ((z / sd[rows]) ** 2).sum(-1)

    out = run_row_nuts(potential, torch.zeros(N, d, dtype=F64), num_samples=200, warmup=300,
                       generator=torch.Generator().manual_seed(0))
    # the last window's 100 draws (ESS nu ~ 30 or more) give each variance within a factor 3, where unit masses
    # would be off by up to 4e4; their log ratios average to log(100 / 105) (Stan's shrinkage) + E[log(chi2_nu /
    # nu)] ~ -1 / nu within 5 sd
    ratio = (out.inverse_mass / sd**2).numpy()
    assert ((ratio > 1 / 3) & (ratio < 3)).all(), ratio
    log_ratio = np.log(ratio)
    expected = math.log(100 / 105) - 1 / 30
    assert abs(log_ratio.mean() - expected) < 5 * math.sqrt(2 / 30 / log_ratio.size), log_ratio.mean()
    assert (out.step_size > 0.3).all() and (out.step_size < 3).all(), out.step_size
    var = (out.z.var(0) / sd**2).numpy()
    assert 0.8 < var.mean() < 1.2, var.mean()  # the 80 coordinates' pooled variance ratio


def test_only_the_rows_still_moving_are_evaluated():
    seen = []
    sd = torch.tensor([[0.1], [1.0], [10.0]], dtype=F64).expand(3, 2)

    def potential(z, rows):
        seen.append(rows.numel())
        return 0.5 * ((z / sd[rows]) ** 2).sum(-1)

    state = init(torch.ones(3, 2, dtype=F64), potential)
    seen.clear()
    kernel = build_kernel(max_tree_depth=6)
    _, info = kernel(state, potential, torch.full((3,), 0.05, dtype=F64), torch.ones(3, 2, dtype=F64),
                     generator=torch.Generator().manual_seed(0))
    assert sum(seen) == int(info.num_integration_steps.sum())  # one gradient per row and leapfrog step
    assert min(seen) < 3  # the narrow row's trajectory ends first, the others go on without it
    assert (info.num_integration_steps <= 2 ** (info.tree_depth + 1) - 1).all()  # kept doublings + a discarded one
    assert (info.tree_depth <= 6).all() and int(info.tree_depth.max()) == 6  # the wide row hits the cap


def test_stan_windows():
    assert mass_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert mass_windows(100) == [(15, 90)]  # 15 % / 75 % / 10 %
    assert mass_windows(19) == []
    for warmup in (20, 150, 151, 333, 2000):
        w = mass_windows(warmup)
        assert all(a < b for a, b in w) and all(w[i][1] == w[i + 1][0] for i in range(len(w) - 1)), w


def test_a_seed_fixes_the_chain():
    def run(seed):
        return run_row_nuts(_sech_potential, torch.zeros(5, 3, dtype=F64), num_samples=20, warmup=30,
                            generator=torch.Generator().manual_seed(seed)).z
    torch.testing.assert_close(run(3), run(3), rtol=0, atol=0)
    assert not torch.equal(run(3), run(4))


def test_full_mass_is_refused_for_the_per_row_kernel(ppca):
    with pytest.raises(ConfigError, match="full_mass"):
        sample_latents(ppca.vae, ppca.x, kernel="row_nuts", full_mass=True, num_samples=2, warmup=0, progress=False)
    with pytest.raises(ConfigError, match="row_nuts"):
        sample_latents(ppca.vae, ppca.x, kernel="nutz", num_samples=2, warmup=0, progress=False)


def test_row_draws_are_reproducible_through_sample_latents(ppca):
    a = sample_latents(ppca.vae, ppca.x, kernel="row_nuts", num_samples=5, warmup=10, num_chains=1, seed=2,
                       progress=False)
    b = sample_latents(ppca.vae, ppca.x, kernel="row_nuts", num_samples=5, warmup=10, num_chains=1, seed=2,
                       progress=False)
    torch.testing.assert_close(a.z, b.z, rtol=0, atol=0)
    assert np.isfinite(a.sample_stats["lp"]).all() and a.num_gradient_evals > 0


def test_a_non_finite_energy_ends_the_trajectory_as_a_divergence():
    """Rows 0..N-1 see U = -inf beyond |z| = 1 (an improper wall), rows N..2N-1 a NaN there: either way the step
    is a divergence and is never drawn."""
    N = 300

    def potential(z, rows):
        u = 0.5 * (z**2).sum(-1)
        wall = torch.where(rows < N, -math.inf, math.nan).to(u)
        return torch.where(z[:, 0].abs() > 1, wall, u)

    state = init(torch.full((2 * N, 1), 0.9, dtype=F64), potential)
    new, info = build_kernel(5)(state, potential, torch.full((2 * N,), 0.7, dtype=F64),
                                torch.ones(2 * N, 1, dtype=F64), generator=torch.Generator().manual_seed(0))
    assert int(info.is_divergent[:N].sum()) > 30 and int(info.is_divergent[N:].sum()) > 30  # -inf, NaN
    assert torch.isfinite(new.potential_energy).all() and (new.position.abs() <= 1).all()
