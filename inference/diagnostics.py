r"""Every ArviZ call of the project: InferenceData, R-hat/ESS, PSIS k-hat, PSIS-LOO, ArviZ plots.

Keeping ArviZ behind this one module makes the move to ArviZ 1.x (``xarray.DataTree``, no
``from_pyro``, other function names) a one-file change. The rest of the project hands tensors
in and gets tensors, numpy arrays, frozen dataclasses and PNG paths out.

**InferenceData layout.** Posteriors of the codes z_i of N datapoints, whether from MCMC
(:func:`latents_to_inference_data`) or from a guide (:func:`guide_to_inference_data`, one
chain), share one layout, so they sit side by side::

    posterior            z    (chain, draw, datapoint, latent)   coords: datapoint = row indices, latent = z0..
    sample_stats         diverging, acceptance_rate, step_size, n_steps, lp   (chain, draw)   [MCMC only]
    log_likelihood       x    (chain, draw, datapoint)            log p_theta(x_i | z_i^(s))
    posterior_predictive x    (chain, draw, datapoint, feature)   x_i^rep(s) ~ p_theta(x | z_i^(s))
    observed_data        x    (datapoint, feature)

**Convergence** (:func:`convergence_checks`): rank-normalized split R-hat and bulk/tail ESS
(Vehtari et al. 2021) of every scalar, and the divergent transitions; R-hat > 1.01, ESS < 400
or any divergence is a warning.

**PSIS k-hat** (:func:`psis_khat`): for S draws z_is ~ q(z | x_i), the log importance weights

    log w_is = log p(x_i, z_is) - log q(z_is | x_i)

are Pareto-smoothed per datapoint (ArviZ ``psislw``, Vehtari et al. 2024); the fitted shape
k-hat_i of the generalized Pareto tail of w estimates how many moments the weights have
(moments of order < 1/k exist). Yao et al. (2018): k-hat < 0.5 good, 0.5-0.7 usable (slow
convergence), > 0.7 unreliable: q misses mass of the posterior and any IS estimate built on
it (log p(x) included) is unreliable. The smoothed normalized weights w~_is give PSIS
posterior moments E[z_i] ~= sum_s w~_is z_is.

**PSIS-LOO** (:func:`loo`): elpd_loo = sum_i log p(x_i | x_-i) from the log-likelihood draws of
a fully Bayesian model, with its own k-hat per datapoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr
from matplotlib import MatplotlibDeprecationWarning
from pyro import poutine

from inference.diagnostic_plots import KHAT_BAD, KHAT_GOOD, new_figure, save_figure
from inference.evaluate import log_importance_weights
from inference.mcmc import BayesianPosterior, LatentPosterior
from inference.ppc import guide_draws, log_likelihood_draws, replicate
from pyro_vae.errors import ConfigError, UnsupportedModelError

with warnings.catch_warnings():  # arviz 0.23 announces its 1.x refactor on import
    warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*", category=FutureWarning)
    import arviz as az

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
LATENT_VAR, OBSERVED_VAR = "z", "x"
DATAPOINT, LATENT, FEATURE = "datapoint", "latent", "feature"
# LatentPosterior.sample_stats key -> ArviZ's conventional sample_stats name
STAT_NAMES = {
    "diverging": "diverging", "accept_prob": "acceptance_rate", "step_size": "step_size",
    "num_steps": "n_steps", "lp": "lp",
}
RHAT_MAX, ESS_MIN = 1.01, 400
CHUNK_FLOATS = 2e7  # psis_khat: rows per chunk so that samples x rows x D stays below this


# -- conversion ---------------------------------------------------------------------------------------
def latent_names(d: int) -> list[str]:
    """Coordinate labels of the latent dimension: z0, z1, ..."""
    return [f"z{j}" for j in range(d)]


def _np(a: Tensor | np.ndarray | Any) -> np.ndarray:
    if torch.is_tensor(a):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _datapoint_coords(datapoints: Sequence[int] | np.ndarray | Tensor | None, n: int) -> np.ndarray:
    coords = np.arange(n) if datapoints is None else _np(datapoints).reshape(-1)
    if coords.shape != (n,):
        raise ConfigError(f"datapoints must give one label per datapoint ({n}), got {coords.shape[0]}")
    if len(np.unique(coords)) != n:
        raise ConfigError("datapoints labels must be unique (they index the datapoint dimension)")
    return coords


def _dataset(data: Mapping[str, np.ndarray], dims: Mapping[str, list[str]], coords: Mapping[str, Any],
             *, sampled: bool = True, attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    used = {dim for names in dims.values() for dim in names}
    return az.dict_to_dataset(
        dict(data), coords={k: v for k, v in coords.items() if k in used}, dims=dict(dims),
        default_dims=None if sampled else [], attrs=dict(attrs or {}),
    )


def draws_to_inference_data(
    z: Tensor | np.ndarray,
    *,
    sample_stats: Mapping[str, np.ndarray] | None = None,
    observed: Tensor | np.ndarray | None = None,
    log_likelihood: Tensor | np.ndarray | None = None,
    posterior_predictive: Tensor | np.ndarray | None = None,
    datapoints: Sequence[int] | np.ndarray | Tensor | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> az.InferenceData:
    """InferenceData of code draws z (chain, draw, N, d) in the module's layout (module docstring).

    ``sample_stats``: ArviZ-named (chain, draw) arrays; ``observed`` (N, D);
    ``log_likelihood`` (chain, draw, N); ``posterior_predictive`` (chain, draw, N, D);
    ``datapoints``: the N datapoint labels (default 0..N-1), e.g. row indices in the test split.
    """
    z = _np(z)
    if z.ndim != 4:
        raise ConfigError(f"z must have shape (chain, draw, datapoint, latent), got {z.shape}")
    c, s, n, d = z.shape
    coords = {DATAPOINT: _datapoint_coords(datapoints, n), LATENT: latent_names(d)}
    groups: dict[str, xr.Dataset] = {
        "posterior": _dataset({LATENT_VAR: z}, {LATENT_VAR: [DATAPOINT, LATENT]}, coords, attrs=attrs)
    }
    if sample_stats:
        stats = {k: _np(v) for k, v in sample_stats.items()}
        for k, v in stats.items():
            if v.shape[:2] != (c, s):
                raise ConfigError(f"sample stat {k!r} has shape {v.shape}, expected ({c}, {s}) like the draws")
        groups["sample_stats"] = _dataset(stats, {}, coords, attrs=attrs)
    if log_likelihood is not None:
        ll = _np(log_likelihood)
        if ll.shape != (c, s, n):
            raise ConfigError(f"log_likelihood must have shape {(c, s, n)} (chain, draw, datapoint), got {ll.shape}")
        groups["log_likelihood"] = _dataset({OBSERVED_VAR: ll}, {OBSERVED_VAR: [DATAPOINT]}, coords, attrs=attrs)
    feature_dims = {OBSERVED_VAR: [DATAPOINT, FEATURE]}
    if observed is not None:
        obs = _np(observed)
        if obs.ndim != 2 or obs.shape[0] != n:
            raise ConfigError(f"observed must have shape ({n}, D), got {obs.shape}")
        coords[FEATURE] = np.arange(obs.shape[1])
        groups["observed_data"] = _dataset({OBSERVED_VAR: obs}, feature_dims, coords, sampled=False, attrs=attrs)
    if posterior_predictive is not None:
        pp = _np(posterior_predictive)
        if pp.ndim != 4 or pp.shape[:3] != (c, s, n):
            raise ConfigError(f"posterior_predictive must have shape ({c}, {s}, {n}, D), got {pp.shape}")
        coords.setdefault(FEATURE, np.arange(pp.shape[3]))
        groups["posterior_predictive"] = _dataset({OBSERVED_VAR: pp}, feature_dims, coords, attrs=attrs)
    return az.InferenceData(**groups)


def latents_to_inference_data(
    posterior: LatentPosterior,
    *,
    observed: Tensor | np.ndarray | None = None,
    log_likelihood: Tensor | np.ndarray | None = None,
    posterior_predictive: Tensor | np.ndarray | None = None,
    datapoints: Sequence[int] | np.ndarray | Tensor | None = None,
) -> az.InferenceData:
    """InferenceData of MCMC draws z_i ~ p(z | x_i) from :func:`inference.mcmc.sample_latents`.

    posterior z (chain, draw, datapoint, latent); sample_stats renamed to ArviZ's names
    (accept_prob -> acceptance_rate, num_steps -> n_steps); ``observed`` defaults to the rows the
    chains were run on (``posterior.x``). ``log_likelihood`` (chain, draw, N) = log p(x_i | z_i^(s))
    and ``posterior_predictive`` (chain, draw, N, D) are optional
    (:func:`inference.ppc.log_likelihood_draws`, :func:`inference.ppc.replicate`).
    """
    stats = {STAT_NAMES.get(k, k): np.asarray(v) for k, v in posterior.sample_stats.items()}
    if "diverging" in stats:
        stats["diverging"] = stats["diverging"].astype(bool)
    return draws_to_inference_data(
        posterior.z, sample_stats=stats, observed=posterior.x if observed is None else observed,
        log_likelihood=log_likelihood, posterior_predictive=posterior_predictive, datapoints=datapoints,
        attrs={"source": f"mcmc ({posterior.kernel}, {posterior.warmup} warm-up)"},
    )


def guide_to_inference_data(
    vae_or_guide: Any,
    x: Tensor,
    num_samples: int,
    *,
    vae: Any = None,
    datapoints: Sequence[int] | np.ndarray | Tensor | None = None,
    log_likelihood: bool = True,
    posterior_predictive: bool = True,
    seed: int = 0,
    site: str = LATENT_VAR,
) -> az.InferenceData:
    """InferenceData of S draws z_i ~ q(z | x_i) of any guide, as one chain (chain=1, draw=S).

    ``vae_or_guide``: a VAE (its amortized ``guide``), an object with a ``guide`` method (a
    :class:`inference.local_vi.LocalGaussianGuide`), or a guide callable (e.g. a
    :class:`inference.mcmc.GaussianProposal`). The log-likelihood log p(x_i | z_i^(s)) and the
    replicates x^rep ~ p(x | z) need the model: the VAE itself, or ``vae=``. ``seed`` fixes
    the draws (the global RNG is left untouched).
    """
    owner = vae_or_guide
    model = vae if vae is not None else (owner if hasattr(owner, "decode") and hasattr(owner, "posterior") else None)
    guide: Callable = owner.guide if hasattr(owner, "guide") else owner
    if not callable(guide):
        raise ConfigError(f"expected a VAE, an object with a guide method, or a guide callable; got {type(owner).__name__}")
    if (log_likelihood or posterior_predictive) and model is None:
        raise ConfigError("log-likelihoods and replicated data need the model: pass vae=<the VAE> with a bare guide")
    z = guide_draws(guide, x, num_samples, site=site, seed=seed)
    ll = pp = None
    if model is not None:
        was_training = model.training
        model.eval()
        try:
            if log_likelihood:
                ll = log_likelihood_draws(model, x, z).unsqueeze(0)
            if posterior_predictive:
                pp = replicate(model, z, seed=seed + 1).unsqueeze(0)
        finally:
            model.train(was_training)
    return draws_to_inference_data(
        z.unsqueeze(0), observed=x, log_likelihood=ll, posterior_predictive=pp, datapoints=datapoints,
        attrs={"source": f"guide ({type(owner).__name__})"},
    )


def bayesian_to_inference_data(
    posterior: BayesianPosterior,
    *,
    datapoints: Sequence[int] | np.ndarray | Tensor | None = None,
    dims: Mapping[str, list[str]] | None = None,
) -> az.InferenceData:
    """InferenceData of a fully Bayesian fit (:func:`inference.mcmc.fit_bayesian`): theta and z together.

    posterior: every site, (chain, draw, *shape); site "z" gets dims (datapoint, latent), other
    sites ArviZ's default dims unless ``dims`` names them (e.g. ``{"W": ["feature", "latent"]}``);
    log_likelihood x (chain, draw, datapoint) for PSIS-LOO; observed_data x (datapoint, feature)
    when the data are a matrix; sample_stats renamed as in :func:`latents_to_inference_data`.
    """
    n = int(posterior.log_likelihood.shape[-1])
    samples = {k: _np(v) for k, v in posterior.samples.items()}
    site_dims: dict[str, list[str]] = {}
    if LATENT_VAR in samples and samples[LATENT_VAR].ndim == 4 and samples[LATENT_VAR].shape[2] == n:
        site_dims[LATENT_VAR] = [DATAPOINT, LATENT]
    site_dims.update(dims or {})
    coords: dict[str, Any] = {DATAPOINT: _datapoint_coords(datapoints, n)}
    for name, names in site_dims.items():
        for axis, dim in enumerate(names):
            if dim not in coords:
                size = samples[name].shape[2 + axis]
                coords[dim] = latent_names(size) if dim == LATENT else np.arange(size)
    stats = {STAT_NAMES.get(k, k): np.asarray(v) for k, v in posterior.sample_stats.items()}
    attrs = {"source": f"mcmc ({posterior.kernel}, {posterior.warmup} warm-up), fully Bayesian"}
    groups = {
        "posterior": _dataset(samples, site_dims, coords, attrs=attrs),
        "sample_stats": _dataset(stats, {}, coords, attrs=attrs),
        "log_likelihood": _dataset({OBSERVED_VAR: _np(posterior.log_likelihood)}, {OBSERVED_VAR: [DATAPOINT]}, coords, attrs=attrs),
    }
    x = _np(posterior.x)
    if x.ndim == 2 and x.shape[0] == n:
        coords.setdefault(FEATURE, np.arange(x.shape[1]))
        groups["observed_data"] = _dataset({OBSERVED_VAR: x}, {OBSERVED_VAR: [DATAPOINT, FEATURE]}, coords, sampled=False, attrs=attrs)
    return az.InferenceData(**groups)


# -- netCDF ------------------------------------------------------------------------------------------
def save_netcdf(idata: az.InferenceData, path: str | os.PathLike) -> Path:
    """Write ``idata`` to a netCDF-4 file (h5netcdf engine), atomically (temp file, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        idata.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_netcdf(path: str | os.PathLike) -> az.InferenceData:
    """Read an InferenceData written by :func:`save_netcdf`, fully into memory (the file is closed after)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; write it with save_netcdf (or `pyro-vae diagnose`)")
    with az.rc_context({"data.load": "eager"}):
        return az.from_netcdf(str(path), engine="h5netcdf")


# -- access --------------------------------------------------------------------------------------------
class PosteriorDraws(NamedTuple):
    """Draws of one posterior variable as numpy: values (chain, draw, *dims), with the dims' coordinates."""

    values: np.ndarray
    dims: tuple[str, ...]
    coords: dict[str, np.ndarray]


def posterior_draws(idata: az.InferenceData, var: str = LATENT_VAR, group: str = "posterior") -> PosteriorDraws:
    """The draws of ``var`` in ``group`` of an InferenceData, with dims ordered (chain, draw, ...)."""
    if group not in idata.groups():
        raise ConfigError(f"the InferenceData has no {group!r} group (groups: {', '.join(idata.groups())})")
    ds = idata[group]
    if var not in ds:
        raise ConfigError(f"the {group} group has no variable {var!r} (variables: {', '.join(map(str, ds.data_vars))})")
    da = ds[var]
    return PosteriorDraws(da.values, tuple(map(str, da.dims)), {str(k): np.asarray(v.values) for k, v in da.coords.items()})


# -- MCMC diagnostics ----------------------------------------------------------------------------------
def mcmc_summary(
    idata: az.InferenceData, var_names: Sequence[str] | None = None, *, hdi_prob: float = 0.94,
    round_to: int | str | None = None,
) -> pd.DataFrame:
    """ArviZ's summary table: mean, sd, HDI (``hdi_prob``), MCSE of mean and sd, ess_bulk, ess_tail, r_hat.

    ``round_to``: decimals (ArviZ's default rounding for None; "none" keeps full precision).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*shape of the array.*", category=UserWarning)
        return az.summary(idata, var_names=list(var_names) if var_names else None, hdi_prob=hdi_prob, round_to=round_to)


@dataclass(frozen=True)
class ConvergenceReport:
    """Convergence of MCMC draws: worst rank-normalized split R-hat, lowest bulk/tail ESS, divergences.

    ``warnings`` lists each failed check in words (with what to do); ``ok`` is True when none failed.
    ESS counts effective draws over all chains together; ``num_transitions`` = chains x draws.
    """

    max_rhat: float
    worst_rhat: str
    min_ess_bulk: float
    min_ess_tail: float
    num_divergences: int
    num_transitions: int
    num_chains: int
    num_parameters: int
    num_rhat_high: int
    num_ess_low: int
    rhat_max: float
    ess_min: float
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.warnings

    def __str__(self) -> str:
        head = (
            f"{self.num_parameters} parameters, {self.num_chains} chains x {self.num_transitions // max(1, self.num_chains)} draws: "
            f"max R-hat {self.max_rhat:.3f} (at {self.worst_rhat}), min ESS bulk {self.min_ess_bulk:.0f}, "
            f"tail {self.min_ess_tail:.0f}, {self.num_divergences} divergences"
        )
        return head + ("; all checks passed" if self.ok else "".join(f"\n  WARNING {w}" for w in self.warnings))


def _flat(ds: xr.Dataset) -> list[tuple[str, float]]:
    """(label, value) for every scalar of every variable of a Dataset without sample dims."""
    out: list[tuple[str, float]] = []
    for name, da in ds.data_vars.items():
        if da.ndim == 0:
            out.append((str(name), float(da)))
            continue
        stacked = da.stack(__flat__=list(da.dims))
        labels = stacked.indexes["__flat__"]
        for label, value in zip(labels, stacked.values):
            label = label if isinstance(label, tuple) else (label,)
            out.append((f"{name}[{', '.join(map(str, label))}]", float(value)))
    return out


def convergence_checks(
    idata: az.InferenceData,
    *,
    rhat_max: float = RHAT_MAX,
    ess_min: float = ESS_MIN,
    var_names: Sequence[str] | None = None,
) -> ConvergenceReport:
    """Check every scalar of the posterior: R-hat <= ``rhat_max``, bulk and tail ESS >= ``ess_min``, no divergences.

    R-hat is ArviZ's rank-normalized split R-hat (Vehtari et al. 2021): the larger of the bulk
    R-hat (of the rank-normalized draws: do the chains agree on location?) and the folded one
    (of |z - median|: do they agree on scale?). The folded one converges like the tail ESS, so
    NUTS, whose bulk ESS can exceed the number of draws, still needs a few thousand draws for
    1.01 over hundreds of parameters. A non-finite R-hat (a chain that never moved) fails.
    ESS are the bulk and tail effective sample sizes of all chains together. Divergences come from ``sample_stats.diverging`` (none counted
    when there is no such variable).
    """
    if not rhat_max > 1 or not ess_min > 0:
        raise ConfigError(f"need rhat_max > 1 and ess_min > 0, got {rhat_max} and {ess_min}")
    if "posterior" not in idata.groups():
        raise ConfigError("the InferenceData has no posterior group to check")
    names = list(var_names) if var_names else None
    post = idata.posterior if names is None else idata.posterior[names]
    chains, draws = int(post.sizes["chain"]), int(post.sizes["draw"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        rhat = _flat(az.rhat(post, method="rank"))
        bulk = _flat(az.ess(post, method="bulk"))
        tail = _flat(az.ess(post, method="tail"))
    r = np.array([v for _, v in rhat])
    b = np.array([v for _, v in bulk])
    t = np.array([v for _, v in tail])
    r_bad = ~(r <= rhat_max)  # NaN counts as bad
    ess_bad = ~((b >= ess_min) & (t >= ess_min))
    worst = int(np.nanargmax(np.where(np.isfinite(r), r, np.inf))) if r.size else 0
    max_rhat = float(r[worst]) if r.size and np.isfinite(r[worst]) else (float("inf") if r.size else float("nan"))
    divergences = 0
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        divergences = int(np.asarray(idata.sample_stats["diverging"].values, dtype=bool).sum())
    transitions = chains * draws
    messages = []
    if r_bad.any():
        messages.append(
            f"R-hat: {int(r_bad.sum())} of {r.size} parameters have rank-normalized split R-hat > {rhat_max:g} "
            f"(max {max_rhat:.3f} at {rhat[worst][0]}); the chains disagree, they have not mixed: run longer "
            "(more warm-up and draws), start closer, or reparameterize"
        )
    if ess_bad.any():
        messages.append(
            f"ESS: {int(ess_bad.sum())} of {b.size} parameters have bulk or tail ESS < {ess_min:g} "
            f"(min bulk {np.nanmin(b):.0f}, min tail {np.nanmin(t):.0f} of {transitions} draws); draw more "
            "samples before trusting means, sds and intervals"
        )
    if divergences:
        messages.append(
            f"divergences: {divergences} of {transitions} transitions diverged; the sampler misses part of the "
            "posterior: raise target_accept (smaller steps) or reparameterize"
        )
    report = ConvergenceReport(
        max_rhat=max_rhat, worst_rhat=rhat[worst][0] if rhat else "", min_ess_bulk=float(np.nanmin(b)) if b.size else float("nan"),
        min_ess_tail=float(np.nanmin(t)) if t.size else float("nan"), num_divergences=divergences,
        num_transitions=transitions, num_chains=chains, num_parameters=int(r.size), num_rhat_high=int(r_bad.sum()),
        num_ess_low=int(ess_bad.sum()), rhat_max=float(rhat_max), ess_min=float(ess_min), warnings=tuple(messages),
    )
    logger.info("convergence: %s", report)
    return report


# -- PSIS k-hat ------------------------------------------------------------------------------------------
def pareto_smooth(log_weights: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """PSIS of each row of ``log_weights`` (N, S): (normalized smoothed log weights (N, S), k-hat (N,)).

    ArviZ's ``psislw`` (reff = 1: independent draws). A row whose weights are constant up to
    floating-point rounding (q equal to the posterior; spread <= 64 eps max(1, |log w|)) has a
    degenerate tail: its k-hat is -inf and its smoothed weights are uniform.
    """
    lw = _np(log_weights)
    if lw.ndim != 2 or lw.shape[1] < 2:
        raise ConfigError(f"log_weights must have shape (N, S) with S >= 2 samples, got {lw.shape}")
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise ConfigError("log_weights hold NaN or +inf: the model or the guide gave an invalid log-density")
    eps = np.finfo(lw.dtype if np.issubdtype(lw.dtype, np.floating) else np.float64).eps
    lw = lw.astype(np.float64)
    scale = np.maximum(1.0, np.abs(lw).max(1))
    constant = (lw.max(1) - lw.min(1)) <= 64 * eps * scale
    smoothed = np.full_like(lw, -math.log(lw.shape[1]))
    khat = np.full(lw.shape[0], -np.inf)
    rows = ~constant
    if rows.any():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            sm, k = az.psislw(lw[rows], reff=1.0)
        smoothed[rows], khat[rows] = sm, np.asarray(k).reshape(-1)
    return smoothed, khat


@dataclass(frozen=True)
class PSISResult:
    """Per-datapoint PSIS diagnostics of a guide q(z | x) (module docstring; Yao et al. 2018).

    ``khat`` (N,); ``mean``/``sd`` (N, d): PSIS estimates of E[z_i | x_i] and sd[z_i | x_i] under
    the smoothed weights; ``ess`` (N,): 1 / sum_s w~_is^2, the importance sampling effective
    sample size out of ``num_samples``.
    """

    khat: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    ess: np.ndarray
    num_samples: int

    @property
    def fraction_good(self) -> float:
        """k-hat < 0.5."""
        return float(np.mean(self.khat < KHAT_GOOD))

    @property
    def fraction_ok(self) -> float:
        """0.5 <= k-hat <= 0.7."""
        return float(np.mean((self.khat >= KHAT_GOOD) & (self.khat <= KHAT_BAD)))

    @property
    def fraction_bad(self) -> float:
        """k-hat > 0.7: importance weights (and IS estimates) unreliable for these datapoints."""
        return float(np.mean(self.khat > KHAT_BAD))

    def summary(self) -> str:
        finite = self.khat[np.isfinite(self.khat)]
        median = float(np.median(self.khat)) if self.khat.size else float("nan")
        return (
            f"PSIS k-hat over {self.khat.size} datapoints (S={self.num_samples}): median {median:.2f}, max "
            f"{float(finite.max()) if finite.size else float('-inf'):.2f}; {self.fraction_good:.1%} < 0.5 (good), "
            f"{self.fraction_ok:.1%} in 0.5-0.7 (usable), {self.fraction_bad:.1%} > 0.7 (unreliable)"
        )


class _RecordingGuide:
    """Calls a guide and keeps the value of its latent site (to weight the same draws)."""

    def __init__(self, guide: Callable, site: str) -> None:
        self.guide, self.site, self.value = guide, site, None

    def __call__(self, x: Tensor, **kwargs: Any) -> Any:
        trace = poutine.trace(self.guide).get_trace(x, **kwargs)
        if self.site not in trace.nodes:
            raise UnsupportedModelError(f"the guide has no sample site {self.site!r}; pass site=<its name>")
        self.value = trace.nodes[self.site]["value"]
        return trace.nodes["_RETURN"]["value"]


def psis_khat(
    model: Callable,
    guide: Callable,
    x: Tensor,
    num_samples: int = 1000,
    *,
    batch_size: int | None = None,
    seed: int = 0,
    site: str = LATENT_VAR,
) -> PSISResult:
    """Per-datapoint PSIS k-hat of ``guide`` as a proposal for the posterior of ``model`` (module docstring).

    log w_is = log p(x_i, z_is) - log q(z_is | x_i), S = ``num_samples`` draws per datapoint
    (:func:`inference.evaluate.log_importance_weights`), smoothed by :func:`pareto_smooth`;
    the PSIS moments weight the same draws of site ``site``. Rows go in chunks of
    ``batch_size`` (default: samples x rows x D <= 2e7 values). ``seed`` fixes the draws; the
    global RNG is left untouched.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ConfigError(f"num_samples must be an integer >= 2, got {num_samples!r}")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ConfigError(f"x must be a non-empty (N, D) tensor, got shape {tuple(x.shape)}")
    size = batch_size or max(1, int(CHUNK_FLOATS // (num_samples * x.shape[1])))
    khat, means, sds, ess = [], [], [], []
    recorder = _RecordingGuide(guide, site)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for r0 in range(0, x.shape[0], size):
            xb = x[r0:r0 + size]
            log_w = log_importance_weights(model, recorder, xb, num_samples)  # (S, B)
            z = recorder.value.expand(num_samples, xb.shape[0], -1).double().cpu().numpy()  # (S, B, d)
            smoothed, k = pareto_smooth(log_w.T)
            w = np.exp(smoothed).T[..., None]  # (S, B, 1), sums to 1 over S
            mean = (w * z).sum(0)
            var = (w * (z - mean) ** 2).sum(0)
            khat.append(k)
            means.append(mean)
            sds.append(np.sqrt(var))
            ess.append(1.0 / (w[..., 0] ** 2).sum(0))
    result = PSISResult(np.concatenate(khat), np.concatenate(means), np.concatenate(sds), np.concatenate(ess), num_samples)
    logger.info("%s", result.summary())
    return result


# -- PSIS-LOO --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LooResult:
    """PSIS-LOO of a fully Bayesian model (ArviZ ``loo``, pointwise).

    elpd_loo = sum_i log p(x_i | x_-i) ~= sum_i log sum_s w~_is p(x_i | theta^(s)) (s.e. ``se``);
    lppd = sum_i log (1/S) sum_s p(x_i | theta^(s)); p_loo = lppd - elpd_loo (effective number of
    parameters); ``khat`` (N,) per left-out datapoint, ``loo_i`` (N,) the pointwise elpd.
    """

    elpd_loo: float
    se: float
    p_loo: float
    lppd: float
    khat: np.ndarray
    loo_i: np.ndarray
    num_samples: int

    @property
    def fraction_bad(self) -> float:
        """Fraction of datapoints with k-hat > 0.7 (their LOO estimate is unreliable)."""
        return float(np.mean(self.khat > KHAT_BAD))

    def summary(self) -> str:
        return (
            f"PSIS-LOO: elpd_loo {self.elpd_loo:.2f} +- {self.se:.2f}, p_loo {self.p_loo:.2f}, "
            f"{self.fraction_bad:.1%} of {self.khat.size} datapoints with k-hat > 0.7"
        )


def loo(idata: az.InferenceData, var_name: str | None = None) -> LooResult:
    """PSIS-LOO (ArviZ ``az.loo``) from the ``log_likelihood`` group (e.g. :func:`bayesian_to_inference_data`)."""
    if "log_likelihood" not in idata.groups():
        raise ConfigError("PSIS-LOO needs a log_likelihood group (per-datapoint log p(x_i | theta^(s)) draws)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        res = az.loo(idata, pointwise=True, var_name=var_name)
    khat = np.asarray(res.pareto_k.values)
    loo_i = np.asarray(res.loo_i.values)
    ll = idata.log_likelihood[var_name or list(idata.log_likelihood.data_vars)[0]]
    ll = ll.stack(__sample__=("chain", "draw")).transpose(..., "__sample__").values
    lppd = float((np.logaddexp.reduce(ll, axis=-1) - math.log(ll.shape[-1])).sum())
    result = LooResult(float(res.elpd_loo), float(res.se), float(res.p_loo), lppd, khat, loo_i, int(res.n_samples))
    logger.info("%s", result.summary())
    return result


# -- ArviZ plots -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _arviz_plotting() -> Iterator[None]:
    """Silence the deprecation warnings ArviZ 0.23's matplotlib backend raises under matplotlib >= 3.11."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=MatplotlibDeprecationWarning)
        yield


def _pick(values: np.ndarray, chosen: Sequence[Any] | None, default_count: int) -> list[Any]:
    if chosen is None:
        return list(values[:default_count])
    missing = [v for v in chosen if v not in set(values.tolist())]
    if missing:
        raise ConfigError(f"datapoints {missing} are not in the InferenceData (it has {values.tolist()[:10]}...)")
    return list(chosen)


def _per_datapoint(idata: az.InferenceData, var: str, points: Sequence[Any]) -> xr.Dataset:
    """One variable per datapoint ("z[i]", dims chain, draw, latent), for one plot row per datapoint."""
    da = idata.posterior[var]
    return xr.Dataset({f"{var}[{p}]": da.sel({DATAPOINT: p}, drop=True) for p in points})


def plot_trace(
    idata: az.InferenceData, path: str | os.PathLike, *, datapoints: Sequence[Any] | None = None,
    var: str = LATENT_VAR, max_points: int = 3,
) -> Path:
    """ArviZ trace plot (per-chain densities and traces) of the codes of a few datapoints, one row each."""
    points = _pick(np.asarray(idata.posterior[DATAPOINT].values), datapoints, max_points)
    ds = _per_datapoint(idata, var, points)
    fig = new_figure(11.0, 2.3 * len(points))
    axes = fig.subplots(len(points), 2, squeeze=False)
    with _arviz_plotting():
        az.plot_trace(ds, axes=axes, compact=True, legend=False)
    return save_figure(fig, path, f"trace plot of {var} for datapoints {points}")


def plot_rank(
    idata: az.InferenceData, path: str | os.PathLike, *, datapoints: Sequence[Any] | None = None,
    latents: Sequence[str] | None = None, var: str = LATENT_VAR, max_points: int = 3, max_latents: int = 3,
) -> Path:
    """ArviZ rank plots (histogram of each chain's ranks among all draws: flat when chains mix)."""
    points = _pick(np.asarray(idata.posterior[DATAPOINT].values), datapoints, max_points)
    names = _pick(np.asarray(idata.posterior[LATENT].values), latents, max_latents)
    ds = _per_datapoint(idata, var, points).sel({LATENT: names})
    fig = new_figure(3.2 * len(names), 2.4 * len(points))
    axes = fig.subplots(len(points), len(names), squeeze=False)
    with _arviz_plotting():
        az.plot_rank(ds, ax=axes)
    for ax in axes.ravel():
        ax.title.set_fontsize(9)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
    return save_figure(fig, path, f"rank plot of {var} for datapoints {points}")


def predictive_to_inference_data(
    observed: Tensor | np.ndarray,
    replicated: Tensor | np.ndarray,
    *,
    datapoints: Sequence[int] | np.ndarray | Tensor | None = None,
) -> az.InferenceData:
    """InferenceData with only observed_data x (N, D) and posterior_predictive x (chain=1, draw=S, N, D).

    For :func:`plot_ppc` on replicates x^rep (S, N, D) made without keeping the draws of z
    (:func:`inference.ppc.posterior_predictive_check`).
    """
    obs, rep = _np(observed), _np(replicated)
    if obs.ndim != 2 or rep.ndim != 3 or rep.shape[1:] != obs.shape:
        raise ConfigError(f"expected observed (N, D) and replicated (S, N, D), got {obs.shape} and {rep.shape}")
    coords = {DATAPOINT: _datapoint_coords(datapoints, obs.shape[0]), FEATURE: np.arange(obs.shape[1])}
    dims = {OBSERVED_VAR: [DATAPOINT, FEATURE]}
    return az.InferenceData(
        observed_data=_dataset({OBSERVED_VAR: obs}, dims, coords, sampled=False),
        posterior_predictive=_dataset({OBSERVED_VAR: rep[None]}, dims, coords),
    )


def _integer_valued(*arrays: np.ndarray) -> bool:
    return all(np.all(np.mod(a, 1) == 0) for a in arrays)


def plot_ppc(
    idata: az.InferenceData, path: str | os.PathLike, *, num_pp_samples: int = 50, seed: int = 0
) -> Path:
    """ArviZ ``plot_ppc`` of observed x against replicated data sets, in two views.

    Left: the distribution of all values x_ij; right: that of the per-datapoint totals
    sum_j x_ij (for binary pixels: the ink of each image, a statistic the pixel histogram
    cannot show). Integer-valued data are compared as histograms (ArviZ does so for integer
    arrays), continuous data as kernel densities.
    """
    for group in ("posterior_predictive", "observed_data"):
        if group not in idata.groups():
            raise ConfigError(f"plot_ppc needs a {group} group (guide_to_inference_data(..., posterior_predictive=True))")
    obs = idata.observed_data[OBSERVED_VAR]
    pp = idata.posterior_predictive[OBSERVED_VAR]
    num = min(int(num_pp_samples), int(pp.sizes["chain"] * pp.sizes["draw"]))
    fig = new_figure(11.0, 4.0)
    axes = fig.subplots(1, 2)
    views = [("values x_ij", obs, pp)]
    if FEATURE in obs.dims:
        views.append(("per-datapoint total sum_j x_ij", obs.sum(FEATURE), pp.sum(FEATURE)))
    for ax, (label, o, r) in zip(axes, views):
        if _integer_valued(o.values, r.values):
            o, r = o.astype(np.int64), r.astype(np.int64)
        data = az.InferenceData(observed_data=xr.Dataset({label: o}), posterior_predictive=xr.Dataset({label: r}))
        with _arviz_plotting():
            az.plot_ppc(data, ax=ax, num_pp_samples=num, random_seed=seed, var_names=[label])
        ax.set_title(f"{label}: observed vs {num} replicated data sets", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.xaxis.label.set_fontsize(9)
        leg = ax.get_legend()
        if leg is not None:
            for text in leg.get_texts():
                text.set_fontsize(7)
    for ax in axes[len(views):]:
        ax.set_visible(False)
    return save_figure(fig, path, "ArviZ posterior predictive check")


__all__ = [
    "LATENT_VAR", "OBSERVED_VAR", "STAT_NAMES", "RHAT_MAX", "ESS_MIN", "KHAT_GOOD", "KHAT_BAD",
    "latent_names", "draws_to_inference_data", "latents_to_inference_data", "guide_to_inference_data",
    "bayesian_to_inference_data", "save_netcdf", "load_netcdf", "PosteriorDraws", "posterior_draws",
    "mcmc_summary", "ConvergenceReport", "convergence_checks", "pareto_smooth", "PSISResult", "psis_khat",
    "LooResult", "loo", "predictive_to_inference_data", "plot_trace", "plot_rank", "plot_ppc",
]
