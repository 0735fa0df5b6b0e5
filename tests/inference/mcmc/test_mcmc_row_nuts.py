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
from inference.mcmc.row_nuts import build_kernel, init
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


def test_each_row_adapts_its_own_mass_and_step():
    """Rows whose posterior sds differ by 10^4: the inverse masses follow each row's variance and the
    adapted steps stay of order one, where one shared step would have to fit the narrowest row."""
    N, d = 40, 2
    sd = torch.logspace(-2, 2, N, dtype=F64).unsqueeze(-1) * torch.tensor([1.0, 2.0], dtype=F64)

    def potential(z, rows):
        return 0.5 * ((z / sd[rows]) ** 2).sum(-1)

    out = run_row_nuts(potential, torch.zeros(N, d, dtype=F64), num_samples=200, warmup=300,
                       generator=torch.Generator().manual_seed(0))
    ratio = (out.inverse_mass / sd**2).numpy()
    assert ((ratio > 0.5) & (ratio < 2.0)).all(), ratio  # a variance from >= 50 draws is within a factor 2
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
    assert (info.num_integration_steps <= 2 ** info.tree_depth - 1).all()
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
