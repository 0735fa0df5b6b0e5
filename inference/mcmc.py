r"""Markov chain Monte Carlo for a VAE's latent variables, and for small fully Bayesian models.

**1. Latents given a trained decoder** (:func:`sample_latents`). For data x_1..x_N and fixed
decoder parameters theta the posterior over all codes factorizes over datapoints::

    p(z_1, ..., z_N | x, theta) = prod_i p(z_i | x_i, theta),
    U(z) = -sum_i [ log p(z_i) + log p_theta(x_i | z_i) ]        (potential energy of the (N, d) block)

so ONE NUTS/HMC chain on the whole (N, d) block of z, with one potential over the data plate
and one vectorized gradient per leapfrog step, targets every datapoint's exact posterior at
once. That is exact, and much faster than N separate runs (``benchmarks/mcmc_speed.py``).
The datapoints are coupled only through the sampler's tuning: one step size, one trajectory
length (tree depth) and a diagonal mass matrix adapted over all N*d coordinates. theta is
frozen (``requires_grad_(False)``) while sampling, so no gradient is spent on it; the flags
are restored afterwards. Chains run one after another in this process (two cores do not pay
for Pyro's multiprocessing), each with its own kernel and warm-up adaptation.

The draws serve two purposes: Monte Carlo estimates of posterior expectations, and a proposal
for the one importance-sampling yardstick (:mod:`inference.evaluate`):
:meth:`LatentPosterior.gaussian_proposal` fits N(m_i, s^2 Sigma_i) to each datapoint's draws.

**2. Fully Bayesian small models** (:func:`fit_bayesian`): NUTS over theta AND z of any Pyro
model with continuous latent sites, e.g. :func:`bayesian_linear_gaussian_model`. It returns
the draws grouped by chain and the per-datapoint log-likelihood draws
log p(x_i | theta^(s), z_i^(s)) that PSIS-LOO needs.

**3. A vectorized HMC transition** (:func:`vectorized_hmc_step`): N independent chains, one per
datapoint, each with its own Metropolis accept/reject, for persistent per-datapoint chains
(Monte Carlo EM, AEVB appendix E), with :func:`adapt_step_size`.

Latent sites must be continuous: a discrete latent site raises
:class:`~pyro_vae.errors.UnsupportedModelError`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer.mcmc import HMC, MCMC, NUTS
from pyro.infer.mcmc.util import initialize_model
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

from pyro_vae.errors import ConfigError, UnsupportedModelError

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
KERNELS = ("nuts", "hmc")
INITS = ("prior", "encoder")
PROPOSAL_SCALE = 1.2  # standard-deviation inflation of the Gaussian fitted to MCMC draws

# sample_stats keys (each a (chains, draws) numpy array)
STAT_KEYS = ("diverging", "accept_prob", "step_size", "num_steps", "lp")


# -- results -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GaussianProposal:
    r"""A per-datapoint Gaussian guide q(z | x_i) = N(loc_i, L_i L_i^T), usable as an IS proposal.

    Called as ``guide(x, num_data=None, **kwargs)`` it samples site ``"z"`` under
    ``pyro.plate("data", B, dim=-1)``, like :meth:`pyro_vae.vae.VAE.guide`. Each row of ``x`` is
    looked up (by exact value) among the rows it was fitted to, so any subset or reordering of
    those rows works (identical rows have identical posteriors); an unknown row raises
    ConfigError.
    """

    loc: Tensor  # (N, d)
    scale_tril: Tensor  # (N, d, d)
    x: Tensor  # (N, D), the rows the Gaussians belong to

    def rows(self, x: Tensor) -> Tensor:
        """Index into ``self.x`` of each row of ``x`` (a LongTensor of shape (B,))."""
        if x.dim() != 2 or x.shape[1] != self.x.shape[1]:
            raise ConfigError(f"expected rows of shape (B, {self.x.shape[1]}), got {tuple(x.shape)}")
        x = x.detach().to(self.x.dtype)
        if x.shape == self.x.shape and torch.equal(x, self.x):
            return torch.arange(x.shape[0])
        index = {row.tobytes(): i for i, row in enumerate(self.x.cpu().numpy())}
        out = []
        for j, row in enumerate(x.cpu().numpy()):
            i = index.get(row.tobytes())
            if i is None:
                raise ConfigError(
                    f"row {j} of x is not among the {self.x.shape[0]} datapoints this proposal was fitted to; "
                    "sample the latents of those rows (sample_latents) and fit a proposal to them"
                )
            out.append(i)
        return torch.tensor(out, dtype=torch.long)

    def distribution(self, x: Tensor) -> dist.MultivariateNormal:
        """q(z | x_i) for the rows of x: batch_shape (B,), event_shape (d,)."""
        idx = self.rows(x)
        return dist.MultivariateNormal(self.loc[idx], scale_tril=self.scale_tril[idx])

    def __call__(self, x: Tensor, *, num_data: int | None = None, **kwargs: Any) -> Tensor:
        """z_i ~ q(z | x_i) for every row, site ``"z"`` in the ``"data"`` plate (extra kwargs ignored)."""
        q = self.distribution(x)
        batch = x.shape[0]
        if num_data is None or num_data == batch:
            plate = pyro.plate("data", batch, dim=-1)
        else:
            plate = pyro.plate("data", num_data, subsample=torch.arange(batch), dim=-1)
        with plate:
            return pyro.sample("z", q)


@dataclass(frozen=True)
class LatentPosterior:
    """Draws of z_i ~ p(z | x_i, theta) for every row of ``x``, from :func:`sample_latents`.

    ``z`` has shape (chains, draws, N, d) (constrained space: the values the model sees).
    ``sample_stats`` maps each of :data:`STAT_KEYS` to a (chains, draws) numpy array:
    ``diverging`` (bool), ``accept_prob`` (the transition's mean Metropolis acceptance
    probability; for NUTS the average over the trajectory), ``step_size`` (the adapted
    leapfrog step), ``num_steps`` (leapfrog steps = gradient evaluations of that transition)
    and ``lp`` (log p(x, z) of the state, up to the Jacobian of any support transform).
    ``wall_time`` (seconds) and ``num_gradient_evals`` cover warm-up and sampling of all chains.
    """

    z: Tensor
    sample_stats: dict[str, np.ndarray]
    wall_time: float
    num_gradient_evals: int
    kernel: str
    x: Tensor
    warmup: int

    @property
    def num_chains(self) -> int:
        return int(self.z.shape[0])

    @property
    def num_draws(self) -> int:
        return int(self.z.shape[1])

    @property
    def num_divergences(self) -> int:
        return int(self.sample_stats["diverging"].sum())

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
        ``jitter`` x tr(Sigma_i)/d keeps the covariance positive definite.
        """
        if not scale > 0:
            raise ConfigError(f"scale must be > 0, got {scale}")
        mean, cov = self.posterior_mean(), self.posterior_cov()
        d = cov.shape[-1]
        eye = torch.eye(d, dtype=cov.dtype)
        eps = jitter * cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(torch.finfo(cov.dtype).tiny)
        cov = scale**2 * 0.5 * (cov + cov.transpose(-1, -2)) + eps[:, None, None] * eye
        return GaussianProposal(mean, torch.linalg.cholesky(cov), self.x)


@dataclass(frozen=True)
class BayesianPosterior:
    """Draws of every latent site of a small Bayesian model, from :func:`fit_bayesian`.

    ``samples[name]`` has shape (chains, draws, *site shape) (constrained space);
    ``log_likelihood`` has shape (chains, draws, N): log p(x_i | theta^(s), z_i^(s)) summed over
    the observed sites of datapoint i (the input of PSIS-LOO). ``sample_stats`` as in
    :class:`LatentPosterior`.
    """

    samples: dict[str, Tensor]
    sample_stats: dict[str, np.ndarray]
    log_likelihood: Tensor
    wall_time: float
    num_gradient_evals: int
    kernel: str
    x: Tensor
    warmup: int

    @property
    def num_chains(self) -> int:
        return int(self.log_likelihood.shape[0])

    @property
    def num_draws(self) -> int:
        return int(self.log_likelihood.shape[1])

    @property
    def num_divergences(self) -> int:
        return int(self.sample_stats["diverging"].sum())


class HMCStep(NamedTuple):
    """One :func:`vectorized_hmc_step`: new states (N, d), accepted (N,) bool, acceptance probability (N,)."""

    z: Tensor
    accept_mask: Tensor
    accept_prob: Tensor


# -- model checks --------------------------------------------------------------------------------
def _latent_sites(trace) -> dict[str, dict]:
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
    for name, site in _latent_sites(trace).items():
        fn = site["fn"]
        if fn.support.is_discrete or fn.has_enumerate_support:
            raise UnsupportedModelError(
                f"latent site {name!r} is discrete ({type(fn).__name__}, support {fn.support}); NUTS/HMC need "
                "continuous latent variables. Marginalize it out (sum over its values in the model), give it a "
                "continuous relaxation, or fit this model by SVI with enumeration (TraceEnum_ELBO)."
            )
    return trace


def _check_settings(kernel: str, num_samples: int, warmup: int, num_chains: int) -> None:
    if kernel not in KERNELS:
        raise ConfigError(f"unknown MCMC kernel {kernel!r}; choose one of: {', '.join(KERNELS)}")
    for name, value, low in (("num_samples", num_samples, 1), ("warmup", warmup, 0), ("num_chains", num_chains, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


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


def _run_chains(
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


# -- 1. latents of a VAE -----------------------------------------------------------------------------
def _z_support(vae, x: Tensor) -> torch.distributions.constraints.Constraint:
    """Support of the model's "z" site, after checking that it is the only latent site and continuous."""
    trace = check_continuous(vae.model, x)
    latent = _latent_sites(trace)
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
    init = torch.as_tensor(init, dtype=x.dtype)
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
    ``init``: ``"prior"`` (each chain starts from its own draws of p(z)), ``"encoder"`` (every
    chain starts at the mean of q_phi(z | x_i)), or a tensor of starting values of shape
    (chains, N, d) or (N, d) (e.g. deliberately dispersed starts, to test R-hat).
    ``seed`` fixes the run; the global torch RNG is left untouched.

    Raises UnsupportedModelError for a discrete latent site or latent sites other than "z",
    DataError for data outside the likelihood's support, ConfigError for bad settings.
    """
    _check_settings(kernel, num_samples, warmup, num_chains)
    for attr in ("model", "decode", "prior", "latent_dim"):
        if not hasattr(vae, attr):
            raise UnsupportedModelError(f"sample_latents needs a VAE (model, decode, prior, latent_dim); {type(vae).__name__} has no {attr!r}")
    if hasattr(vae, "check_data"):
        vae.check_data(x)
    params = list(vae.parameters()) if hasattr(vae, "parameters") else []
    dtype = params[0].dtype if params else x.dtype
    x = x.detach().to(dtype)
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            support = _z_support(vae, x)
            transform = biject_to(support)  # unconstrained -> constrained
            prior = vae.prior()  # theta is frozen: build p(z) once

            def potential(p: dict[str, Tensor]) -> Tensor:
                u = p["z"]
                z = transform(u)
                log_joint = prior.log_prob(z).sum() + vae.decode(z).log_prob(x).sum()
                return -(log_joint + transform.log_abs_det_jacobian(u, z).sum())

            z0 = _initial_latents(vae, x, init, num_chains, prior)
            inits = [{"z": transform.inv(z0[c])} for c in range(num_chains)]
            for c, start in enumerate(inits):
                with torch.no_grad():
                    if not bool(torch.isfinite(potential(start))):
                        raise ConfigError(
                            f"chain {c}: log p(x, z) is not finite at the starting point; start inside the prior's "
                            "support and where the likelihood is finite (init='prior' or 'encoder')"
                        )
            samples, stats, wall, evals = _run_chains(
                potential, inits, {"z": transform.inv}, kernel=kernel, num_samples=num_samples, warmup=warmup,
                step_size=step_size, max_tree_depth=max_tree_depth, num_steps=num_steps,
                target_accept=target_accept, full_mass=full_mass, progress=progress,
            )
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    result = LatentPosterior(samples["z"], stats, wall, evals, kernel, x, warmup)
    logger.info(
        "%s on the latents of %d datapoints (d=%d): %d chains x (%d warm-up + %d draws) in %.1f s, "
        "%d gradient evaluations, %d divergent transitions",
        kernel.upper(), x.shape[0], vae.latent_dim, num_chains, warmup, num_samples, wall, evals,
        result.num_divergences,
    )
    return result


# -- 2. fully Bayesian small models --------------------------------------------------------------------
def bayesian_linear_gaussian_model(x: Tensor, latent_dim: int, sigma: float, w_scale: float = 1.0) -> None:
    r"""Bayesian probabilistic PCA, a Pyro model with priors on theta = (W, mu)::

        W_jk ~ N(0, w_scale^2),  mu_j ~ N(0, 10^2)            sites "W" (D, d), "mu" (D,)
        z_i  ~ N(0, I_d)                                      site "z" (N, d), plate "data"
        x_i  ~ N(W z_i + mu, sigma^2 I_D)                     site "x" (observed)

    The posterior is invariant under z -> R^T z, W -> W R for any orthogonal R (rotations, sign
    flips): W and z are not identified and their R-hat is not meaningful, whereas W W^T, mu and
    the per-datapoint log-likelihood are identified.
    """
    N, D = x.shape
    W = pyro.sample("W", dist.Normal(x.new_zeros(D, latent_dim), w_scale).to_event(2))
    mu = pyro.sample("mu", dist.Normal(x.new_zeros(D), 10.0).to_event(1))
    with pyro.plate("data", N, dim=-1):
        z = pyro.sample("z", dist.Normal(x.new_zeros(latent_dim), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.T + mu, sigma).to_event(1), obs=x)


def _per_datapoint(site: dict, plate: str, N: int) -> Tensor:
    """log p of an observed site reduced to one value per datapoint of ``plate``: shape (N,)."""
    lp = scale_and_mask(site["fn"].log_prob(site["value"]), 1.0, site["mask"])
    frame = next((f for f in site["cond_indep_stack"] if f.name == plate), None)
    if frame is None:
        raise UnsupportedModelError(
            f"observed site {site['name']!r} is not inside the plate {plate!r}; per-datapoint log-likelihoods "
            f"need every observation in the data plate (or pass data_plate=<its name>)"
        )
    lp = torch.as_tensor(lp)
    lp = lp.reshape((1,) * max(0, -frame.dim - lp.dim()) + tuple(lp.shape))
    lp = lp.movedim(frame.dim, 0)
    return lp.expand(N, *lp.shape[1:]).reshape(N, -1).sum(-1)


def pointwise_log_likelihood(
    model_fn: Callable, x: Tensor, samples: Mapping[str, Tensor], *, data_plate: str = "data", **model_kwargs: Any
) -> Tensor:
    """log p(x_i | theta^(s), z_i^(s)) for each draw s: the model is replayed with each draw's latent
    values and the log-densities of its observed sites are summed per datapoint (the ``data_plate``
    dimension). ``samples`` hold (chains, draws, ...) tensors; returns (chains, draws, N).
    """
    names = list(samples)
    C, S = samples[names[0]].shape[:2]
    N = x.shape[0]
    out = x.new_zeros(C, S, N)
    with torch.no_grad():
        for c in range(C):
            for s in range(S):
                cond = poutine.condition(model_fn, data={k: samples[k][c, s] for k in names})
                trace = poutine.trace(cond).get_trace(x, **model_kwargs)
                observed = [
                    site for site in trace.nodes.values()
                    if site["type"] == "sample" and site["is_observed"] and site["name"] not in samples
                ]
                if not observed:
                    raise UnsupportedModelError("the model has no observed site; a log-likelihood needs obs=...")
                for site in observed:
                    out[c, s] += _per_datapoint(site, data_plate, N).to(out.dtype)
    return out


def fit_bayesian(
    model_fn: Callable,
    x: Tensor,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
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
    data_plate: str = "data",
    progress: bool = True,
) -> BayesianPosterior:
    r"""NUTS (or HMC) over every latent site of ``model_fn(x, **model_kwargs)``: theta and z jointly.

    Target p(theta, z | x) proportional to p(theta) prod_i p(z_i) p(x_i | theta, z_i), sampled in
    unconstrained coordinates (Pyro's ``biject_to`` transforms and Jacobians, potential from
    ``pyro.infer.mcmc.util.initialize_model``). Each chain starts from its own
    ``init_to_uniform`` point (uniform in (-2, 2) in unconstrained space). Also returns the
    per-datapoint log-likelihood draws (:func:`pointwise_log_likelihood`). Meant for SMALL
    models (tens of datapoints, a few parameters): the cost grows with N and the number of
    parameters, and every gradient traces the whole model.
    """
    _check_settings(kernel, num_samples, warmup, num_chains)
    model_kwargs = dict(model_kwargs or {})
    x = x.detach()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        check_continuous(model_fn, x, **model_kwargs)
        init, potential, transforms, _ = initialize_model(
            model_fn, model_args=(x,), model_kwargs=model_kwargs, num_chains=num_chains
        )
        inits = [init] if num_chains == 1 else [{k: v[c] for k, v in init.items()} for c in range(num_chains)]
        samples, stats, wall, evals = _run_chains(
            potential, inits, transforms, kernel=kernel, num_samples=num_samples, warmup=warmup,
            step_size=step_size, max_tree_depth=max_tree_depth, num_steps=num_steps,
            target_accept=target_accept, full_mass=full_mass, progress=progress,
        )
    log_lik = pointwise_log_likelihood(model_fn, x, samples, data_plate=data_plate, **model_kwargs)
    result = BayesianPosterior(samples, stats, log_lik, wall, evals, kernel, x, warmup)
    logger.info(
        "%s over %s: %d chains x (%d warm-up + %d draws) in %.1f s, %d gradient evaluations, %d divergences",
        kernel.upper(), sorted(samples), num_chains, warmup, num_samples, wall, evals, result.num_divergences,
    )
    return result


# -- 3. one vectorized HMC transition -----------------------------------------------------------------
def _energy_and_grad(potential_fn: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        energy = potential_fn(z)
        if energy.shape != z.shape[:-1]:
            raise ConfigError(
                f"potential_fn must return one energy per row, shape {tuple(z.shape[:-1])}, got {tuple(energy.shape)}"
            )
        (grad,) = torch.autograd.grad(energy.sum(), z)
    return energy.detach(), grad.detach()


def vectorized_hmc_step(
    potential_fn: Callable[[Tensor], Tensor],
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
    graphs through them).
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ConfigError(f"num_steps must be a positive integer, got {num_steps!r}")
    z = z.detach()
    eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    if eps.dim() > 0:
        if eps.shape != z.shape[:-1]:
            raise ConfigError(f"a per-row step_size must have shape {tuple(z.shape[:-1])}, got {tuple(eps.shape)}")
        eps = eps.unsqueeze(-1)
    if not bool((eps > 0).all()):
        raise ConfigError("step_size must be > 0")
    energy0, grad = _energy_and_grad(potential_fn, z)
    p0 = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    z_new = z
    p = p0 - 0.5 * eps * grad
    for step in range(num_steps):
        z_new = z_new + eps * p
        energy, grad = _energy_and_grad(potential_fn, z_new)
        p = p - (eps if step < num_steps - 1 else 0.5 * eps) * grad
    delta = (energy + 0.5 * p.pow(2).sum(-1)) - (energy0 + 0.5 * p0.pow(2).sum(-1))
    delta = torch.where(torch.isfinite(delta), delta, torch.full_like(delta, math.inf))
    accept_prob = torch.exp(-delta.clamp_min(0.0))
    u = torch.rand(accept_prob.shape, generator=generator, dtype=z.dtype, device=z.device)
    accept = u < accept_prob
    z_out = torch.where(accept.unsqueeze(-1), z_new, z)
    return HMCStep(z_out, accept, accept_prob)


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
    "LatentPosterior", "BayesianPosterior", "GaussianProposal", "HMCStep", "STAT_KEYS", "KERNELS",
    "check_continuous", "sample_latents", "bayesian_linear_gaussian_model", "pointwise_log_likelihood",
    "fit_bayesian", "vectorized_hmc_step", "adapt_step_size",
]
