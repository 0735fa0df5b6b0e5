r"""The one yardstick: every inference method is scored with these estimators.

All estimators take a ``model`` and a ``guide`` callable (``vae.model``, ``vae.guide``, a
per-datapoint q_i, a Gaussian fitted to MCMC draws, ...) that share a data plate
``pyro.plate("data", B, dim=-1)`` and whose latent sites are local to a datapoint. For K
particles z_ik ~ q(z | x_i), vectorized with ``pyro.plate("particles", K, dim=-2)``, the
log importance weights are

    log w_ik = log p(x_i, z_ik) - log q(z_ik | x_i)      (summed over every sample site)

and the estimators, per datapoint i, are

    IS / IWAE bound   log p(x_i) ~= logsumexp_k log w_ik - log K       (-> log p(x_i) as K grows)
    ELBO, estimator A (1/K) sum_k log w_ik                              (Trace_ELBO's)
    ELBO, estimator B (1/K) sum_k log p(x_i | z_ik) - KL(q(z | x_i) || p(z))
                      with the KL analytic where torch registers it, else Monte Carlo
                      (log q(z_ik | x_i) - log p(z_ik)), site by site.

Both ELBO estimators are unbiased for E_q[log w]; the IS estimate is a lower bound in
expectation that does not decrease with K (Burda et al. 2015). Values are in nats per
datapoint; an :class:`Estimate` also carries the standard error of the mean over datapoints.

Per-datapoint values are never scaled: whatever keywords the model and guide get, site scales
(subsampling N/B, KL annealing beta) are set aside by using each site's unscaled log-density.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pyro
import torch
from pyro.distributions.util import scale_and_mask
from torch.distributions import kl_divergence

from inference.log_weights import latent_sites, log_weights, per_datapoint, sample_sites, site_log_prob, traces
from inference.layer_units import layer_units
from inference.progress import bar
from pyro_vae.checks import boolean, float_rows, number, positive_int, seed as check_seed
from pyro_vae.errors import ConfigError
from pyro_vae.programs import check_program
from pyro_vae.rng import seeded
from pyro_vae.vae import VAE

logger = logging.getLogger(__name__)

ESTIMATORS = ("A", "B")
MAX_FLOATS = 5e7  # default memory budget: particle_batch * batch_size * D floats per chunk


@dataclass(frozen=True)
class Estimate:
    """A per-datapoint quantity estimated on n datapoints (nats per datapoint).

    mean = (1/n) sum_i values_i;  stderr = std(values) / sqrt(n) (NaN for n = 1).
    """

    mean: float
    stderr: float
    n: int
    values: torch.Tensor
    num_samples: int

    @classmethod
    def from_values(cls, values: torch.Tensor, num_samples: int) -> "Estimate":
        values = values.detach().reshape(-1)
        n = values.numel()
        stderr = float(values.std() / math.sqrt(n)) if n > 1 else float("nan")
        return cls(float(values.mean()), stderr, n, values, int(num_samples))

    def __str__(self) -> str:
        return f"{self.mean:.4f} +- {self.stderr:.4f} (n={self.n}, K={self.num_samples})"


@dataclass(frozen=True)
class Evaluation:
    """Everything :func:`evaluate_vae` measures on one data set."""

    log_likelihood: Estimate
    elbo_a: Estimate
    elbo_b: Estimate
    active_units: int
    kl_per_dim: list[float]
    num_samples: int

    def metrics(self) -> dict[str, float | int | list[float]]:
        """Plain numbers for metrics.json (means and standard errors, no tensors)."""
        out: dict[str, float | int | list[float]] = {}
        for name in ("log_likelihood", "elbo_a", "elbo_b"):
            est = getattr(self, name)
            out[name], out[f"{name}_stderr"] = est.mean, est.stderr
        out.update(active_units=self.active_units, kl_per_dim=list(self.kl_per_dim), num_samples=self.num_samples)
        return out


# -- per-datapoint log-densities (inference.log_weights) -------------------------------------------
def log_importance_weights(
    model: Callable, guide: Callable, x: torch.Tensor, num_particles: int, **kwargs: Any
) -> torch.Tensor:
    """log w_ik = log p(x_i, z_ik) - log q(z_ik | x_i), z_ik ~ q(z | x_i); shape (K, B).

    :func:`inference.log_weights.log_weights` with every site's scale set aside
    (``site_scales=False``: minibatch N / B and KL weight beta do not enter, whatever ``kwargs``
    the program gets): the K particles are drawn in one vectorized pass, and each site
    contributes its unscaled, masked ``log_prob``.
    """
    return log_weights(model, guide, int(num_particles), x, site_scales=False, **kwargs).log_w


def _kl_sites(model_trace, guide_trace) -> set[str]:
    """Latent sites whose KL may be taken analytically: those whose model predecessors were all
    sampled before them in the guide too. Then p(z_j | model parents) does not depend on z_j's
    own draw, and E_q[log q(z_j | .) - log p(z_j | .)] given the earlier draws is the KL. (A
    guide that samples in another order than the model, e.g. z2 then z1 | z2 for a model
    z1 -> z2, needs the Monte Carlo term for z2.)"""
    model_order = list(latent_sites(model_trace))
    guide_order = list(latent_sites(guide_trace))
    return {
        name
        for i, name in enumerate(model_order)
        if set(model_order[:i]) <= set(guide_order[: guide_order.index(name)])
    }


def elbo_samples(
    model: Callable, guide: Callable, x: torch.Tensor, estimator: str = "A", num_particles: int = 1, **kwargs: Any
) -> torch.Tensor:
    """K single-sample ELBO estimates per datapoint, shape (K, B); z_ik ~ q(z | x_i).

    "A": log p(x_i, z_ik) - log q(z_ik | x_i).
    "B": log p(x_i | z_ik) - sum over latent sites of KL(q || p) (analytic where
    ``kl_divergence`` is registered for the site's pair of distributions and the guide samples
    the site's model parents before it, else the single-sample Monte Carlo term
    log q(z_ik) - log p(z_ik)). With one latent site B is TraceMeanField_ELBO's estimator.
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown ELBO estimator {estimator!r}; choose one of: {', '.join(ESTIMATORS)}")
    if estimator == "A":
        return log_importance_weights(model, guide, x, num_particles, **kwargs)
    shape = (int(num_particles), x.shape[0])
    model_trace, guide_trace = traces(model, guide, shape[0], x, **kwargs)
    guide_sites = sample_sites(guide_trace)
    analytic_ok = _kl_sites(model_trace, guide_trace)
    out = x.new_zeros(shape)
    for name, site in sample_sites(model_trace).items():
        if site["is_observed"]:
            out = out + site_log_prob(site, shape)
            continue
        q_site = guide_sites[name]
        try:
            if name not in analytic_ok:
                raise NotImplementedError
            kl = kl_divergence(q_site["fn"], site["fn"])
        except NotImplementedError:
            out = out + site_log_prob(site, shape) - site_log_prob(q_site, shape)
            continue
        kl = scale_and_mask(kl, 1.0, q_site["mask"])
        out = out - per_datapoint(kl, shape, name, "KL")
    return out


# -- chunking ------------------------------------------------------------------------------------
def plan_particle_batch(num_samples: int, batch_size: int, data_dim: int, max_floats: float = MAX_FLOATS) -> int:
    """Particles per chunk: the largest k <= num_samples with k * batch_size * data_dim <= max_floats (>= 1)."""
    per_particle = max(1, int(batch_size) * int(data_dim))
    return int(max(1, min(int(num_samples), math.floor(max_floats / per_particle))))


def _check_counts(**counts: int | None) -> None:
    for name, value in counts.items():
        if value is not None:
            positive_int(name, value)


def check_rows(model: Callable[..., Any], x: Any, name: str = "x", *, min_rows: int = 1, why: str = "") -> torch.Tensor:
    """``x`` if it is float rows (N, D), N >= ``min_rows``, all finite, else DataError naming ``name``.

    When ``model`` is a program's bound method (``vae.model``), the program checks the rows too
    (``check_data``: its feature count and its likelihood's support, e.g. grey pixels under Bernoulli).
    """
    float_rows(name, x, min_rows=min_rows, why=why)
    program = getattr(model, "__self__", None)
    if callable(getattr(program, "check_data", None)):
        program.check_data(x, name=name)
    return x


def _check_scoring(max_floats: float, progress: bool) -> None:
    number("max_floats", max_floats, above=0)
    boolean("progress", progress)


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(size, n - start)


def _chunked(
    x: torch.Tensor,
    num_particles: int,
    batch_size: int,
    particle_batch: int | None,
    max_floats: float,
    progress: bool,
    what: str,
    count_name: str = "num_particles",
) -> tuple[int, Iterator[tuple[int, int, int, int]]]:
    """(particle_batch, iterator over (row_start, rows, particle_start, particles)) with a tqdm bar."""
    _check_counts(**{count_name: num_particles}, batch_size=batch_size, particle_batch=particle_batch)
    batch_size = min(batch_size, x.shape[0])
    if particle_batch is None:
        particle_batch = plan_particle_batch(num_particles, batch_size, x.shape[1], max_floats)
    particle_batch = min(particle_batch, num_particles)
    plan = [(r0, nr, k0, nk) for r0, nr in _chunks(x.shape[0], batch_size) for k0, nk in _chunks(num_particles, particle_batch)]
    logger.debug("%s: %d datapoints x %d particles in %d chunks (particle_batch=%d)", what, x.shape[0], num_particles, len(plan), particle_batch)
    return particle_batch, iter(bar(plan, enabled=progress, desc=what, unit="chunk", leave=False))


def _validate_first(i: int):
    """Pyro's validation as it is set for chunk 0, off after (as the training loop does after its first step)."""
    return contextlib.nullcontext() if i == 0 else pyro.validation_enabled(False)


# -- the estimators ------------------------------------------------------------------------------
def log_likelihood(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_samples: int = 1000,
    batch_size: int = 100,
    particle_batch: int | None = None,
    max_floats: float = MAX_FLOATS,
    progress: bool = True,
    **kwargs: Any,
) -> Estimate:
    """Importance-sampled log p(x_i) ~= logsumexp_k log w_ik - log K, K = ``num_samples`` (the IWAE bound).

    Computed without gradients in chunks of ``batch_size`` datapoints x ``particle_batch``
    particles (by default the most that keeps particle_batch * batch_size * D <= ``max_floats``),
    combined with a running logsumexp, so memory stays bounded for any K. ``kwargs`` go to
    model and guide. The guide sees one chunk of rows at a time: a guide holding one q_i per
    datapoint (not amortized) must find its rows from their values (as
    ``local_vi.LocalGaussianGuide`` and ``mcmc.GaussianProposal`` do) or get them all at once
    (``batch_size >= N``).

    ``x`` must be float rows of finite values (:func:`check_rows`; DataError otherwise), checked
    with the counts before anything is computed; Pyro's validation runs on the first chunk only.
    """
    check_rows(model, x)
    _check_scoring(max_floats, progress)
    _, plan = _chunked(x, num_samples, batch_size, particle_batch, max_floats, progress, "log p(x)", "num_samples")
    values = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        for i, (r0, nr, _, nk) in enumerate(plan):
            # x was checked above: Pyro's validation (argument and support checks) on the first chunk only
            with _validate_first(i):
                log_w = log_importance_weights(model, guide, x[r0 : r0 + nr], nk, **kwargs)
            values[r0 : r0 + nr] = torch.logaddexp(values[r0 : r0 + nr], log_w.logsumexp(0))
    return Estimate.from_values(values - math.log(num_samples), num_samples)


def elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    estimator: str = "A",
    num_particles: int = 100,
    batch_size: int = 100,
    particle_batch: int | None = None,
    max_floats: float = MAX_FLOATS,
    progress: bool = False,
    **kwargs: Any,
) -> Estimate:
    """Per-datapoint ELBO (1/K) sum_k L_ik with L from :func:`elbo_samples` (estimator "A" or "B").

    Without gradients, chunked like :func:`log_likelihood`; ``x`` is checked like there.
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown ELBO estimator {estimator!r}; choose one of: {', '.join(ESTIMATORS)}")
    check_rows(model, x)
    _check_scoring(max_floats, progress)
    _, plan = _chunked(x, num_particles, batch_size, particle_batch, max_floats, progress, f"ELBO {estimator}")
    totals = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    with torch.no_grad():
        for r0, nr, _, nk in plan:
            totals[r0 : r0 + nr] += elbo_samples(model, guide, x[r0 : r0 + nr], estimator, nk, **kwargs).sum(0)
    return Estimate.from_values(totals / num_particles, num_particles)


# -- latent-space summaries of a VAE --------------------------------------------------------------
def _posterior_moments(vae: VAE, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    means, variances = [], []
    with torch.no_grad():
        for r0, nr in _chunks(x.shape[0], batch_size):
            q = vae.posterior(x[r0 : r0 + nr])
            means.append(q.mean)
            variances.append(q.variance)
    return torch.cat(means), torch.cat(variances)


def active_units(vae: VAE, x: torch.Tensor, threshold: float = 0.01, *, batch_size: int = 1000) -> tuple[int, torch.Tensor]:
    """Active units (Burda et al. 2015): A_u = Var_x(E_q[z_u | x]) > threshold.

    Returns (number of active units, the per-dimension variances (latent_dim,)), the variance
    over the rows of x being the sample variance (divisor n - 1).
    """
    if x.shape[0] < 2:
        raise ConfigError("active_units needs at least 2 datapoints (it is a variance over the data)")
    mean, _ = _posterior_moments(vae, x, batch_size)
    variances = mean.var(0)
    return int((variances > threshold).sum()), variances


def kl_per_dimension(vae: VAE, x: torch.Tensor, num_samples: int = 100, *, batch_size: int = 1000) -> torch.Tensor:
    """(1/N) sum_i KL(q(z_d | x_i) || p(z_d)) for each latent dimension d; shape (latent_dim,).

    q(z_d | x_i) = N(E_q[z_d | x_i], Var_q[z_d | x_i]) is the 1-D marginal of the guide,
    p(z_d) comes from ``vae.prior.marginals()`` (batch_shape (latent_dim,)). The KL is analytic
    where ``kl_divergence`` is registered for the pair, else the Monte Carlo average of
    log q(z) - log p(z) over ``num_samples`` draws z ~ q(z_d | x_i).
    """
    _check_counts(num_samples=num_samples)
    mean, var = _posterior_moments(vae, x, batch_size)
    with torch.no_grad():
        prior = vae.prior.marginals()
        q = torch.distributions.Normal(mean, var.sqrt())
        try:
            kl = kl_divergence(q, prior.expand(mean.shape))
        except NotImplementedError:
            total = torch.zeros_like(mean)
            for r0, nr in _chunks(mean.shape[0], batch_size):
                q_rows = torch.distributions.Normal(mean[r0 : r0 + nr], var[r0 : r0 + nr].sqrt())
                z = q_rows.sample((num_samples,))
                total[r0 : r0 + nr] = (q_rows.log_prob(z) - prior.log_prob(z)).mean(0)
            kl = total
    return kl.mean(0)


def evaluate_vae(
    vae: VAE,
    x: torch.Tensor,
    *,
    num_samples: int = 1000,
    elbo_particles: int = 100,
    batch_size: int = 100,
    threshold: float = 0.01,
    kl_samples: int = 100,
    seed: int | None = None,
    progress: bool = True,
) -> Evaluation:
    """Score a VAE on x: IS log p(x) (K = ``num_samples``), ELBO estimators A and B
    (``elbo_particles`` each), active units (variance > ``threshold``) and KL per dimension.

    The VAE is put in eval mode for the duration; ``seed`` (if given) fixes the draws (:func:`pyro_vae.rng.seeded`: the
    caller's random state is left as it was).
    Every argument is checked before anything is computed; ``x`` needs at least 2 rows (active
    units are a variance over the data).
    """
    check_program(vae, "vae")
    check_rows(vae.model, x, min_rows=2, why="active units are a variance over the rows")
    _check_counts(num_samples=num_samples, elbo_particles=elbo_particles, batch_size=batch_size, kl_samples=kl_samples)
    number("threshold", threshold, minimum=0)
    check_seed("seed", seed, optional=True)
    boolean("progress", progress)
    was_training = vae.training
    vae.eval()
    try:
        with seeded(seed):
            common = dict(batch_size=batch_size)
            ll = log_likelihood(vae.model, vae.guide, x, num_samples=num_samples, progress=progress, **common)
            elbo_a = elbo(vae.model, vae.guide, x, estimator="A", num_particles=elbo_particles, progress=progress, **common)
            elbo_b = elbo(vae.model, vae.guide, x, estimator="B", num_particles=elbo_particles, progress=progress, **common)
            if len(getattr(vae, "latents", ("z",))) == 1:
                count, _ = active_units(vae, x, threshold)
                kl = kl_per_dimension(vae, x, kl_samples)
            else:  # a program with several latent layers (hierarchical): Monte Carlo per site, units in site order
                layers = layer_units(vae, x, num_samples=kl_samples, threshold=threshold, batch_size=batch_size).values()
                count, kl = sum(u.active for u in layers), torch.cat([u.kl_per_unit for u in layers])
    finally:
        vae.train(was_training)
    logger.info("log p(x) = %s; ELBO A = %s; ELBO B = %s; active units %d", ll, elbo_a, elbo_b, count)
    return Evaluation(ll, elbo_a, elbo_b, count, [float(v) for v in kl], num_samples)


__all__ = [
    "Estimate", "Evaluation", "log_importance_weights", "elbo_samples", "log_likelihood", "elbo",
    "plan_particle_batch", "active_units", "kl_per_dimension", "evaluate_vae", "check_rows",
]
