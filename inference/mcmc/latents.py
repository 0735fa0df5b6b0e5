r"""NUTS (or HMC) over the latents of many datapoints at once, given a trained decoder.

For data x_1..x_N and fixed decoder parameters theta the posterior over all codes factorizes
over datapoints::

    p(z_1, ..., z_N | x, theta) = prod_i p(z_i | x_i, theta),
    U(z) = -sum_i [ log p(z_i) + log p_theta(x_i | z_i) ]        (potential energy of the (N, d) block)

so ONE NUTS/HMC chain on the whole (N, d) block of z, with one potential over the data plate
and one vectorized gradient per leapfrog step, targets every datapoint's exact posterior at
once. That is exact, and much faster than N separate runs (``benchmarks/mcmc_speed.py``).
The datapoints are coupled only through the sampler's tuning: one step size, one trajectory
length (tree depth) and a diagonal mass matrix adapted over all N*d coordinates. theta is
frozen (``requires_grad_(False)``) while sampling, so no gradient is spent on it; the flags
are restored afterwards. Chains run one after another (:func:`inference.mcmc.runner.run_chains`).

For a prior with constrained support, z = T(u) with T = ``biject_to(support)`` and the chain
runs on u, with U(u) = -sum_i [ log p(T(u_i)) + log p_theta(x_i | T(u_i)) + log|J_T(u_i)| ].

The draws serve two purposes: Monte Carlo estimates of posterior expectations, and a proposal
for the importance-sampling yardstick (:mod:`inference.evaluate`):
:meth:`LatentPosterior.gaussian_proposal` fits N(m_i, s^2 Sigma_i) to each datapoint's draws.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch.distributions import biject_to

from inference.mcmc.proposal import PROPOSAL_SCALE, GaussianProposal
from inference.mcmc.row_warmup import ROW_STAT_KEYS, run_row_nuts
from inference.mcmc.runner import KERNELS, ChainCounts, check_continuous, check_settings, latent_sites, run_chains
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.rng import seeded

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
INITS = ("prior", "encoder")
LATENT_KERNELS = KERNELS + ("row_nuts",)


@dataclass(frozen=True)
class LatentPosterior(ChainCounts):
    """Draws of z_i ~ p(z | x_i, theta) for every row of ``x``, from :func:`sample_latents`.

    ``z`` has shape (chains, draws, N, d) (constrained space: the values the model sees).
    ``sample_stats`` maps each of :data:`~inference.mcmc.runner.STAT_KEYS` to a (chains, draws)
    numpy array: ``diverging`` (bool), ``accept_prob`` (the transition's mean Metropolis
    acceptance probability; for NUTS the average over the trajectory), ``step_size`` (the adapted
    leapfrog step), ``num_steps`` (leapfrog steps = gradient evaluations of that transition)
    and ``lp`` (log p(x, z) of the state, up to the Jacobian of any support transform).
    ``wall_time`` (seconds) and ``num_gradient_evals`` cover warm-up and sampling of all chains.

    With ``kernel="row_nuts"`` (one chain per row) each transition's statistics are over the rows:
    ``diverging`` counts the divergent rows (so :attr:`num_divergences` counts row transitions),
    ``accept_prob`` and ``num_steps`` are the rows' means, ``step_size`` their median and ``lp`` their
    sum; ``row_stats`` keeps each row's (``diverging``, ``accept_prob``, ``tree_depth``, ``num_steps``,
    ``lp``: (chains, draws, N)) and ``num_gradient_evals`` is the rows' leapfrog steps divided by N
    (gradients of the whole block, the unit of the other kernels).
    """

    z: Tensor
    sample_stats: dict[str, np.ndarray]
    wall_time: float
    num_gradient_evals: int
    kernel: str
    x: Tensor
    warmup: int
    row_stats: dict[str, np.ndarray] | None = None

    def _draw_shape(self) -> tuple[int, int]:
        return tuple(self.z.shape[:2])

    def draws(self) -> Tensor:
        """All chains pooled: shape (chains * draws, N, d)."""
        return self.z.reshape(-1, *self.z.shape[2:])

    def posterior_mean(self) -> Tensor:
        """E[z_i | x_i] ~= (1/S) sum_s z_i^(s), pooled over chains; shape (N, d)."""
        return self.draws().mean(0)

    def posterior_cov(self) -> Tensor:
        """Cov[z_i | x_i] ~= (1/(S-1)) sum_s (z_i^(s) - m_i)(z_i^(s) - m_i)^T, pooled over chains; (N, d, d)."""
        z = self.draws()
        if z.shape[0] < 2:
            raise ConfigError("a covariance needs at least 2 draws; sample more (num_samples * num_chains >= 2)")
        centered = z - z.mean(0)
        return torch.einsum("sni,snj->nij", centered, centered) / (z.shape[0] - 1)

    def gaussian_proposal(self, scale: float = PROPOSAL_SCALE, jitter: float = 1e-6) -> GaussianProposal:
        r"""The IS proposal "Gaussian fitted to the MCMC draws": q(z | x_i) = N(m_i, scale^2 Sigma_i + eps_i I).

        m_i, Sigma_i are :meth:`posterior_mean` and :meth:`posterior_cov`. The standard deviations
        are inflated by ``scale`` (default 1.2, covariance x 1.44) because an importance
        proposal narrower than the target in any direction gives importance weights of
        unbounded variance, while a slightly wider one costs little efficiency. eps_i =
        ``jitter`` x tr(Sigma_i)/d keeps the covariance positive definite
        (:meth:`GaussianProposal.from_moments`).
        """
        return GaussianProposal.from_moments(
            self.posterior_mean(), self.posterior_cov(), self.x, scale=scale, jitter=jitter
        )


# -- the model, the potential, the starting points ------------------------------------------------------
def _check_vae(vae) -> None:
    for attr in ("model", "decode", "prior", "latent_dim"):
        if not hasattr(vae, attr):
            raise UnsupportedModelError(f"sample_latents needs a VAE (model, decode, prior, latent_dim); {type(vae).__name__} has no {attr!r}")


def _z_support(vae, x: Tensor) -> torch.distributions.constraints.Constraint:
    """Support of the model's "z" site, after checking that it is the only latent site and continuous."""
    trace = check_continuous(vae.model, x)
    latent = latent_sites(trace)
    if set(latent) != {"z"}:
        raise UnsupportedModelError(
            f"sample_latents samples the VAE's 'z' site only, but this model's latent sites are {sorted(latent)}; "
            "use fit_bayesian for a model with other latent variables"
        )
    shape = tuple(latent["z"]["value"].shape)
    if shape != (x.shape[0], vae.latent_dim):
        raise UnsupportedModelError(
            f"site 'z' has shape {shape}, expected (N, latent_dim) = {(x.shape[0], vae.latent_dim)}: "
            "sample_latents needs one latent vector per datapoint in the data plate"
        )
    return latent["z"]["fn"].support


def _latent_potential(vae, x: Tensor, transform, prior: dist.Distribution) -> Callable[[dict[str, Tensor]], Tensor]:
    """U(u) = sum_i U_i(u_i) (:func:`_row_potential` over every row), z = T(u), of the (N, d) block."""
    row_potential = _row_potential(vae, x, transform, prior)

    def potential(p: dict[str, Tensor]) -> Tensor:
        return row_potential(p["z"], None).sum()

    return potential


def _row_potential(vae, x: Tensor, transform, prior: dist.Distribution
                   ) -> Callable[[Tensor, Tensor | None], Tensor]:
    """U_i(u_i) = -[log p(z_i) + log p_theta(x_i | z_i) + log|J_T(u_i)|], z_i = T(u_i), for the rows asked
    (``None``: every row of x)."""

    def per_row(term: Tensor, n: int) -> Tensor:
        return term.reshape(n, -1).sum(-1)

    def potential(u: Tensor, rows: Tensor | None) -> Tensor:
        z, n = transform(u), u.shape[0]
        x_rows = x if rows is None else x[rows]
        log_joint = per_row(prior.log_prob(z), n) + per_row(vae.decode(z).log_prob(x_rows), n)
        return -(log_joint + per_row(transform.log_abs_det_jacobian(u, z), n))

    return potential


def _run_rows(vae, x: Tensor, init: str | Tensor, num_chains: int, settings: dict[str, Any]
              ) -> tuple[Tensor, dict[str, np.ndarray], dict[str, np.ndarray], float, int]:
    """One NUTS chain per row (:func:`inference.mcmc.row_warmup.run_row_nuts`), ``num_chains`` times."""
    transform = biject_to(_z_support(vae, x))
    prior = vae.prior()
    potential = _row_potential(vae, x, transform, prior)
    z0 = _initial_latents(vae, x, init, num_chains, prior)
    starts = [transform.inv(z0[c]) for c in range(num_chains)]
    _check_finite_starts(lambda p: potential(p["z"], None).sum(), [{"z": u0} for u0 in starts])
    start, chains = time.perf_counter(), []
    for u0 in starts:
        with pyro.validation_enabled(False):  # the data were checked; validating every leapfrog step costs ~20 %
            chains.append(run_row_nuts(
                potential, u0, num_samples=settings["num_samples"], warmup=settings["warmup"],
                step_size=settings["step_size"], max_tree_depth=settings["max_tree_depth"],
                target_accept=settings["target_accept"], progress=settings["progress"]))
    wall = time.perf_counter() - start
    row_stats = {key: np.stack([chain.stats[key] for chain in chains]) for key in ROW_STAT_KEYS}
    steps = np.stack([np.full(chain.z.shape[0], float(chain.step_size.median())) for chain in chains])
    stats = {"diverging": row_stats["diverging"].sum(-1), "accept_prob": row_stats["accept_prob"].mean(-1),
             "step_size": steps, "num_steps": row_stats["num_steps"].mean(-1), "lp": row_stats["lp"].sum(-1)}
    evals = round(sum(chain.row_gradient_evals for chain in chains) / x.shape[0])
    return torch.stack([transform(chain.z) for chain in chains]), stats, row_stats, wall, evals


def _initial_latents(vae, x: Tensor, init: str | Tensor, num_chains: int, prior: dist.Distribution) -> Tensor:
    """Starting values (chains, N, d) in the constrained space of z."""
    N, d = x.shape[0], vae.latent_dim
    if isinstance(init, str):
        if init == "prior":
            return prior.sample((num_chains, N)).to(x.dtype)
        if init == "encoder":
            if not hasattr(vae, "posterior"):
                raise ConfigError("init='encoder' needs a VAE with an encoder (vae.posterior); use init='prior'")
            return vae.posterior(x).mean.detach().expand(num_chains, N, d).clone()
        raise ConfigError(f"unknown init {init!r}; use one of {', '.join(INITS)} or a tensor of shape (chains, N, d)")
    init = torch.as_tensor(init, dtype=x.dtype, device=x.device)
    if init.shape == (N, d):
        init = init.expand(num_chains, N, d)
    if init.shape != (num_chains, N, d):
        raise ConfigError(
            f"init tensor must have shape (num_chains, N, d) = {(num_chains, N, d)} or (N, d) = {(N, d)}, "
            f"got {tuple(init.shape)}"
        )
    if not bool(torch.isfinite(init).all()):
        raise ConfigError("init tensor holds NaN or inf values; pass finite starting points")
    return init.clone()


def _check_finite_starts(potential: Callable[[dict[str, Tensor]], Tensor], inits: list[dict[str, Tensor]]) -> None:
    for c, start in enumerate(inits):
        with torch.no_grad():
            if not bool(torch.isfinite(potential(start))):
                raise ConfigError(
                    f"chain {c}: log p(x, z) is not finite at the starting point; start inside the prior's "
                    "support and where the likelihood is finite (init='prior' or 'encoder')"
                )


@contextmanager
def _frozen(params: list[torch.nn.Parameter]) -> Iterator[None]:
    """``requires_grad_(False)`` on every parameter inside the block; each flag restored on exit."""
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _run_on_latents(
    vae, x: Tensor, init: str | Tensor, num_chains: int, settings: dict[str, Any]
) -> tuple[dict[str, Tensor], dict[str, np.ndarray], float, int]:
    """Build U over the (N, d) block of z, start each chain, and run them (current torch RNG)."""
    transform = biject_to(_z_support(vae, x))  # unconstrained -> constrained
    prior = vae.prior()  # theta is frozen: build p(z) once
    potential = _latent_potential(vae, x, transform, prior)
    z0 = _initial_latents(vae, x, init, num_chains, prior)
    inits = [{"z": transform.inv(z0[c])} for c in range(num_chains)]
    _check_finite_starts(potential, inits)
    return run_chains(potential, inits, {"z": transform.inv}, **settings)


def sample_latents(
    vae,
    x: Tensor,
    *,
    num_samples: int = 500,
    warmup: int = 500,
    num_chains: int = 2,
    kernel: str = "nuts",
    step_size: float = 1.0,
    max_tree_depth: int = 10,
    num_steps: int = 10,
    target_accept: float = 0.8,
    full_mass: bool = False,
    seed: int = 0,
    init: str | Tensor = "prior",
    progress: bool = True,
) -> LatentPosterior:
    r"""Sample z_i ~ p(z | x_i, theta) for every row of x with NUTS (or HMC), in one run over the data plate.

    Target: p(z | x, theta) proportional to exp(-U(z)), U(z) = -sum_i [log p(z_i) + log p_theta(x_i | z_i)
    + log|J(u_i)|], sampled in the unconstrained coordinates u = T^-1(z) of the prior's support
    (T the identity for real-valued z). Exact, because the posterior factorizes over datapoints.

    ``kernel``: ``"nuts"`` (``max_tree_depth``) or ``"hmc"`` (``num_steps`` leapfrog steps at the
    initial ``step_size``; the trajectory length step_size x num_steps is kept while the step
    size adapts). Warm-up adapts the step size (to ``target_accept``) and a diagonal mass
    matrix (dense over all N*d coordinates with ``full_mass=True``: only for small N*d).
    These two run Pyro's kernel on the whole (N, d) block: one step size, one trajectory per transition.
    ``"row_nuts"`` runs one NUTS chain per row instead (:mod:`inference.mcmc.row_nuts`), each with its
    own step size, diagonal mass and trajectory, the rows' leapfrog steps vectorized: the exact same
    target, without the block's step size shrinking as N grows (``full_mass`` does not apply).
    ``init``: ``"prior"`` (each chain starts from its own draws of p(z)), ``"encoder"`` (every
    chain starts at the mean of q_phi(z | x_i)), or a tensor of starting values of shape
    (chains, N, d) or (N, d) (e.g. deliberately dispersed starts, to test R-hat).
    ``seed`` fixes the run; the global torch RNG is left untouched.

    Raises UnsupportedModelError for a discrete latent site or latent sites other than "z",
    DataError for data outside the likelihood's support, ConfigError for bad settings.
    """
    check_settings(kernel, num_samples, warmup, num_chains, kernels=LATENT_KERNELS, step_size=step_size,
                   target_accept=target_accept, max_tree_depth=max_tree_depth, num_steps=num_steps)
    if kernel == "row_nuts" and full_mass:
        raise ConfigError("full_mass=True is for kernel 'nuts' or 'hmc'; 'row_nuts' adapts a diagonal mass per row: "
                          "drop full_mass")
    _check_vae(vae)
    if hasattr(vae, "check_data"):
        vae.check_data(x)
    params = list(vae.parameters()) if hasattr(vae, "parameters") else []
    dtype = params[0].dtype if params else x.dtype
    x = x.detach().to(dtype)
    settings = dict(
        kernel=kernel, num_samples=num_samples, warmup=warmup, step_size=step_size, max_tree_depth=max_tree_depth,
        num_steps=num_steps, target_accept=target_accept, full_mass=full_mass, progress=progress,
    )
    row_stats = None
    with _frozen(params), seeded(seed):
        if kernel == "row_nuts":
            z, stats, row_stats, wall, evals = _run_rows(vae, x, init, num_chains, settings)
        else:
            samples, stats, wall, evals = _run_on_latents(vae, x, init, num_chains, settings)
            z = samples["z"]
    result = LatentPosterior(z, stats, wall, evals, kernel, x, warmup, row_stats)
    logger.info(
        "%s on the latents of %d datapoints (d=%d): %d chains x (%d warm-up + %d draws) in %.1f s, "
        "%d gradient evaluations, %d divergent transitions",
        kernel.upper(), x.shape[0], vae.latent_dim, num_chains, warmup, num_samples, wall, evals,
        result.num_divergences,
    )
    return result


__all__ = ["LatentPosterior", "INITS", "sample_latents"]
