r"""Pyro's NUTS/HMC run chain by chain on a potential, with per-draw sample statistics.

Both :func:`inference.mcmc.latents.sample_latents` and :func:`inference.mcmc.bayesian.fit_bayesian`
sample a target p(q) proportional to exp(-U(q)) in unconstrained coordinates q, with a potential
U given as a function of a dict of named tensors. :func:`run_chains` runs one Pyro ``MCMC`` per
chain, one after another in this process (two cores do not pay for Pyro's multiprocessing),
each chain with its own kernel and its own warm-up adaptation of the step size (towards a
target acceptance probability) and of the mass matrix, and returns the draws mapped back to
constrained space together with the sample statistics of :data:`STAT_KEYS`.

Latent sites must be continuous: :func:`check_continuous` raises
:class:`~pyro_vae.errors.UnsupportedModelError` for a discrete one.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np
import torch
from pyro import poutine
from pyro.infer.mcmc import HMC, MCMC, NUTS
from pyro.poutine.util import site_is_subsample

from pyro_vae.checks import fraction, positive_float
from pyro_vae.errors import ConfigError, UnsupportedModelError

Tensor = torch.Tensor
KERNELS = ("nuts", "hmc")

# sample_stats keys (each a (chains, draws) numpy array)
STAT_KEYS = ("diverging", "accept_prob", "step_size", "num_steps", "lp")


# -- model checks --------------------------------------------------------------------------------
class ChainCounts:
    """``num_chains``, ``num_draws`` and ``num_divergences`` of a sampler's result.

    A result with draws laid out (chains, draws, ...) says which tensor holds them
    (:meth:`_draw_shape`) and keeps its per-draw ``sample_stats`` (with ``"diverging"``).
    """

    sample_stats: dict[str, np.ndarray]

    def _draw_shape(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def num_chains(self) -> int:
        return int(self._draw_shape()[0])

    @property
    def num_draws(self) -> int:
        return int(self._draw_shape()[1])

    @property
    def num_divergences(self) -> int:
        return int(self.sample_stats["diverging"].sum())


def latent_sites(trace) -> dict[str, dict]:
    """The latent sample sites of a Pyro trace: not observed, not a subsample site; name -> site."""
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


def check_continuous(model: Callable, *args: Any, **kwargs: Any):
    """Trace ``model(*args, **kwargs)`` and raise UnsupportedModelError for any discrete latent site.

    A site is discrete when its distribution's ``support.is_discrete`` or
    ``has_enumerate_support`` holds (Bernoulli, Categorical, Poisson, ...). Returns the trace.
    """
    trace = poutine.trace(model).get_trace(*args, **kwargs)
    for name, site in latent_sites(trace).items():
        fn = site["fn"]
        if fn.support.is_discrete or fn.has_enumerate_support:
            raise UnsupportedModelError(
                f"latent site {name!r} is discrete ({type(fn).__name__}, support {fn.support}); NUTS/HMC need "
                "continuous latent variables. Marginalize it out (sum over its values in the model), give it a "
                "continuous relaxation, or fit this model by SVI with enumeration (TraceEnum_ELBO)."
            )
    return trace


def check_settings(kernel: str, num_samples: int, warmup: int, num_chains: int,
                   kernels: tuple[str, ...] = KERNELS, **tuning: Any) -> None:
    """Raise ConfigError for a ``kernel`` not in ``kernels``, a count that is not an integer in range, or a bad
    ``tuning`` value: ``step_size`` (> 0), ``target_accept`` (in (0, 1)), ``max_tree_depth``, ``num_steps`` (>= 1)."""
    if kernel not in kernels:
        raise ConfigError(f"unknown MCMC kernel {kernel!r}; choose one of: {', '.join(kernels)}")
    for name, value, low in (("num_samples", num_samples, 1), ("warmup", warmup, 0), ("num_chains", num_chains, 1),
                             *((key, tuning[key], 1) for key in ("max_tree_depth", "num_steps") if key in tuning)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if "step_size" in tuning:
        positive_float("step_size", tuning["step_size"])
    if "target_accept" in tuning:
        fraction("target_accept", tuning["target_accept"], closed=False, below_one=True)


# -- the chain runner ---------------------------------------------------------------------------
class _Counted:
    """A potential function that counts its calls (each call is one gradient evaluation in HMC/NUTS)."""

    def __init__(self, fn: Callable[[dict[str, Tensor]], Tensor]) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, params: dict[str, Tensor]) -> Tensor:
        self.calls += 1
        return self.fn(params)


class _StatsHook:
    """MCMC ``hook_fn`` recording per-draw sample statistics of one chain.

    Pyro's HMC/NUTS expose no per-transition statistics, so they are recovered from the kernel:
    divergences from ``kernel.diagnostics()``, the step size from ``kernel.step_size``, the
    number of leapfrog steps from the potential's call count, the acceptance probability a_n
    from Pyro's running mean m_n = m_{n-1} + (a_n - m_{n-1}) / n (so a_n = n m_n - (n-1) m_{n-1};
    the mean restarts at the first draw after warm-up), and lp = -U from the kernel's cache.
    """

    def __init__(self, counter: _Counted, num_samples: int) -> None:
        self.counter = counter
        self.stats = {
            "diverging": np.zeros(num_samples, dtype=bool),
            "accept_prob": np.full(num_samples, np.nan),
            "step_size": np.full(num_samples, np.nan),
            "num_steps": np.zeros(num_samples, dtype=np.int64),
            "lp": np.full(num_samples, np.nan),
        }
        self._calls = 0
        self._mean_accept = 0.0
        self._divergences = 0

    def __call__(self, kernel, params, stage: str, i: int) -> None:
        calls, self._calls = self._calls, self.counter.calls
        if not stage.startswith("Sample"):
            return
        n = i + 1
        mean_accept = float(getattr(kernel, "_mean_accept_prob", float("nan")))
        self.stats["accept_prob"][i] = min(1.0, max(0.0, n * mean_accept - (n - 1) * self._mean_accept))
        self._mean_accept = mean_accept
        divergences = len(kernel.diagnostics()["divergences"])
        self.stats["diverging"][i] = divergences > self._divergences
        self._divergences = divergences
        self.stats["step_size"][i] = float(kernel.step_size)
        self.stats["num_steps"][i] = self.counter.calls - calls
        energy = getattr(kernel, "_potential_energy_last", None)
        if energy is not None:
            self.stats["lp"][i] = -float(energy)


def _make_kernel(
    kernel: str,
    potential_fn: Callable,
    step_size: float,
    max_tree_depth: int,
    num_steps: int,
    target_accept: float,
    full_mass: bool,
    adapt: bool = True,
):
    """NUTS/HMC on ``potential_fn``; step size and mass matrix adapt only when there is warm-up
    (``adapt``), so that with ``warmup=0`` the given ``step_size`` is the one used."""
    common = dict(
        potential_fn=potential_fn, step_size=step_size, adapt_step_size=adapt, adapt_mass_matrix=adapt,
        full_mass=full_mass, target_accept_prob=target_accept,
    )
    if kernel == "nuts":
        return NUTS(max_tree_depth=max_tree_depth, **common)
    return HMC(num_steps=num_steps, **common)


def run_chains(
    potential_fn: Callable[[dict[str, Tensor]], Tensor],
    inits: list[dict[str, Tensor]],
    transforms: Mapping[str, Any],
    *,
    kernel: str,
    num_samples: int,
    warmup: int,
    step_size: float,
    max_tree_depth: int,
    num_steps: int,
    target_accept: float,
    full_mass: bool,
    progress: bool,
) -> tuple[dict[str, Tensor], dict[str, np.ndarray], float, int]:
    """Run one Pyro MCMC per chain (sequentially) from the unconstrained ``inits``.

    ``potential_fn`` maps unconstrained values {name: q} to U(q) = -log p(q) (up to a constant);
    ``transforms`` maps each name to the transform q -> constrained value. ``kernel`` is
    ``"nuts"`` (``max_tree_depth``) or ``"hmc"`` (``num_steps`` leapfrog steps); warm-up
    (``warmup`` > 0) adapts the step size towards ``target_accept`` and a diagonal (or with
    ``full_mass`` dense) mass matrix.

    Returns (samples name -> (chains, draws, ...) in constrained space, sample stats name ->
    (chains, draws), wall seconds, gradient evaluations). Uses the current torch RNG.
    """
    counter = _Counted(potential_fn)
    samples: dict[str, list[Tensor]] = {}
    stats: dict[str, list[np.ndarray]] = {key: [] for key in STAT_KEYS}
    start = time.perf_counter()
    for init in inits:
        hook = _StatsHook(counter, num_samples)
        mcmc = MCMC(
            _make_kernel(kernel, counter, step_size, max_tree_depth, num_steps, target_accept, full_mass, adapt=warmup > 0),
            num_samples=num_samples, warmup_steps=warmup, initial_params={k: v.detach() for k, v in init.items()},
            num_chains=1, hook_fn=hook, disable_progbar=not progress, transforms=dict(transforms),
        )
        with torch.enable_grad():  # NUTS differentiates the potential even if the caller is in no_grad
            mcmc.run()
        for name, value in mcmc.get_samples().items():
            samples.setdefault(name, []).append(value.detach())
        for key in STAT_KEYS:
            stats[key].append(hook.stats[key])
    wall = time.perf_counter() - start
    return (
        {name: torch.stack(v) for name, v in samples.items()},
        {key: np.stack(v) for key, v in stats.items()},
        wall,
        counter.calls,
    )


__all__ = ["KERNELS", "STAT_KEYS", "latent_sites", "check_continuous", "check_settings", "run_chains"]
