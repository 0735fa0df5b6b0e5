r"""The project's one door to ArviZ: draws to InferenceData and back, netCDF, and the ArviZ calls.

No other module of the repository imports ArviZ; the rest of :mod:`inference.diagnostics` hands
arrays and ``xarray`` objects to the ``arviz_*`` functions below and gets ``xarray`` objects,
numpy arrays and drawn axes back, so a move to ArviZ 1.x changes this file only.

**InferenceData layout.** Posteriors of the codes z_i of N datapoints, whether from MCMC
(:func:`latents_to_inference_data`) or from a guide (:func:`guide_to_inference_data`, one
chain), share one layout, so they sit side by side::

    posterior            z    (chain, draw, datapoint, latent)   coords: datapoint = row indices, latent = z0..
    sample_stats         diverging, acceptance_rate, step_size, n_steps, lp   (chain, draw)   [MCMC only]
    log_likelihood       x    (chain, draw, datapoint)            log p_theta(x_i | z_i^(s))
    posterior_predictive x    (chain, draw, datapoint, feature)   x_i^rep(s) ~ p_theta(x | z_i^(s))
    observed_data        x    (datapoint, feature)

A fully Bayesian fit (:func:`bayesian_to_inference_data`) adds the global sites theta to the
posterior group, and its log_likelihood x (chain, draw, datapoint) = log p(x_i | theta^(s), z_i^(s))
is what PSIS-LOO reads.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
import xarray as xr
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.axes import Axes

from inference.diagnostics.ppc import guide_draws, log_likelihood_draws, replicate
from inference.baselines import LocalGaussianGuide
from inference.mcmc import BayesianPosterior, LatentPosterior
from pyro_vae.files import atomic_path
from pyro_vae.errors import ConfigError
from pyro_vae.vae import VAE

with warnings.catch_warnings():  # arviz 0.23 announces its 1.x refactor on import
    warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*", category=FutureWarning)
    import arviz as az

Tensor = torch.Tensor
InferenceData = az.InferenceData
Labels = Sequence[int] | np.ndarray | Tensor
LATENT_VAR, OBSERVED_VAR = "z", "x"
DATAPOINT, LATENT, FEATURE = "datapoint", "latent", "feature"
# LatentPosterior.sample_stats key -> ArviZ's conventional sample_stats name
STAT_NAMES = {
    "diverging": "diverging", "accept_prob": "acceptance_rate", "step_size": "step_size",
    "num_steps": "n_steps", "lp": "lp",
}


# -- conversion ---------------------------------------------------------------------------------------
def latent_names(d: int) -> list[str]:
    """Coordinate labels of the latent dimension: z0, z1, ..."""
    return [f"z{j}" for j in range(d)]


def _np(a: Tensor | npt.ArrayLike) -> np.ndarray:
    if torch.is_tensor(a):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _datapoint_coords(datapoints: Labels | None, n: int) -> np.ndarray:
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
    datapoints: Labels | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> InferenceData:
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
    datapoints: Labels | None = None,
) -> InferenceData:
    """InferenceData of MCMC draws z_i ~ p(z | x_i) from :func:`inference.mcmc.sample_latents`.

    posterior z (chain, draw, datapoint, latent); sample_stats renamed to ArviZ's names
    (accept_prob -> acceptance_rate, num_steps -> n_steps); ``observed`` defaults to the rows the
    chains were run on (``posterior.x``). ``log_likelihood`` (chain, draw, N) = log p(x_i | z_i^(s))
    and ``posterior_predictive`` (chain, draw, N, D) are optional
    (:func:`inference.diagnostics.log_likelihood_draws`, :func:`inference.diagnostics.replicate`).
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
    vae_or_guide: VAE | LocalGaussianGuide | Callable[..., object],
    x: Tensor,
    num_samples: int,
    *,
    vae: VAE | None = None,
    datapoints: Labels | None = None,
    log_likelihood: bool = True,
    posterior_predictive: bool = True,
    seed: int = 0,
    site: str = LATENT_VAR,
) -> InferenceData:
    """InferenceData of S draws z_i ~ q(z | x_i) of any guide, as one chain (chain=1, draw=S).

    ``vae_or_guide``: a VAE (its amortized ``guide``), an object with a ``guide`` method (a
    :class:`inference.baselines.LocalGaussianGuide`), or a guide callable (e.g. a
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
    datapoints: Labels | None = None,
    dims: Mapping[str, list[str]] | None = None,
) -> InferenceData:
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


def predictive_to_inference_data(
    observed: Tensor | np.ndarray,
    replicated: Tensor | np.ndarray,
    *,
    datapoints: Labels | None = None,
) -> InferenceData:
    """InferenceData with only observed_data x (N, D) and posterior_predictive x (chain=1, draw=S, N, D).

    For :func:`inference.diagnostics.plot_ppc` on replicates x^rep (S, N, D) made without keeping
    the draws of z (:func:`inference.diagnostics.posterior_predictive_check`).
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


# -- netCDF ------------------------------------------------------------------------------------------
def save_netcdf(idata: InferenceData, path: str | os.PathLike) -> Path:
    """Write ``idata`` to a netCDF-4 file (h5netcdf engine), atomically (:func:`pyro_vae.files.atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        idata.to_netcdf(tmp, engine="h5netcdf")
    return path


def load_netcdf(path: str | os.PathLike) -> InferenceData:
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


def posterior_draws(idata: InferenceData, var: str = LATENT_VAR, group: str = "posterior") -> PosteriorDraws:
    """The draws of ``var`` in ``group`` of an InferenceData, with dims ordered (chain, draw, ...)."""
    if group not in idata.groups():
        raise ConfigError(f"the InferenceData has no {group!r} group (groups: {', '.join(idata.groups())})")
    ds = idata[group]
    if var not in ds:
        raise ConfigError(f"the {group} group has no variable {var!r} (variables: {', '.join(map(str, ds.data_vars))})")
    da = ds[var]
    return PosteriorDraws(da.values, tuple(map(str, da.dims)), {str(k): np.asarray(v.values) for k, v in da.coords.items()})


# -- ArviZ computations (for convergence.py and psis.py) -------------------------------------------
def arviz_rhat(posterior: xr.Dataset) -> xr.Dataset:
    """ArviZ's rank-normalized split R-hat (``az.rhat(method="rank")``) of every scalar of ``posterior``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return az.rhat(posterior, method="rank")


def arviz_ess(posterior: xr.Dataset, method: str) -> xr.Dataset:
    """ArviZ's effective sample size (``az.ess``; ``method`` "bulk" or "tail") of every scalar of ``posterior``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return az.ess(posterior, method=method)


def arviz_summary(
    idata: InferenceData, var_names: list[str] | None, *, hdi_prob: float, round_to: int | str | None
) -> pd.DataFrame:
    """ArviZ's summary table (``az.summary``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*shape of the array.*", category=UserWarning)
        return az.summary(idata, var_names=var_names, hdi_prob=hdi_prob, round_to=round_to)


def arviz_psislw(log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ArviZ's PSIS (``az.psislw``, reff = 1) of each row of ``log_weights`` (N, S): (smoothed (N, S), k-hat (N,))."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        smoothed, khat = az.psislw(log_weights, reff=1.0)
    return np.asarray(smoothed), np.asarray(khat).reshape(-1)


class LooArrays(NamedTuple):
    """What ``az.loo(pointwise=True)`` returns, as plain numbers and numpy arrays."""

    elpd_loo: float
    se: float
    p_loo: float
    khat: np.ndarray
    loo_i: np.ndarray
    num_samples: int


def arviz_loo(idata: InferenceData, var_name: str | None) -> LooArrays:
    """ArviZ's PSIS-LOO (``az.loo``, pointwise) of the ``log_likelihood`` group."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        res = az.loo(idata, pointwise=True, var_name=var_name)
    return LooArrays(float(res.elpd_loo), float(res.se), float(res.p_loo), np.asarray(res.pareto_k.values),
                     np.asarray(res.loo_i.values), int(res.n_samples))


# -- ArviZ drawings (for plots.py) ----------------------------------------------------------------------
@contextlib.contextmanager
def _arviz_plotting() -> Iterator[None]:
    """Silence the deprecation warnings ArviZ 0.23's matplotlib backend raises under matplotlib >= 3.11."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=MatplotlibDeprecationWarning)
        yield


def arviz_plot_trace(ds: xr.Dataset, axes: np.ndarray) -> None:
    """``az.plot_trace`` of every variable of ``ds`` (compact, no legend) on ``axes`` (variables x 2)."""
    with _arviz_plotting():
        az.plot_trace(ds, axes=axes, compact=True, legend=False)


def arviz_plot_rank(ds: xr.Dataset, axes: np.ndarray) -> None:
    """``az.plot_rank`` of every scalar of ``ds`` on ``axes``."""
    with _arviz_plotting():
        az.plot_rank(ds, ax=axes)


def arviz_plot_ppc(
    observed: xr.DataArray, replicated: xr.DataArray, ax: Axes, *, label: str, num_pp_samples: int, seed: int
) -> None:
    """``az.plot_ppc`` of ``observed`` against ``replicated`` (dims chain, draw, ...) on ``ax``, as variable ``label``."""
    data = az.InferenceData(observed_data=xr.Dataset({label: observed}), posterior_predictive=xr.Dataset({label: replicated}))
    with _arviz_plotting():
        az.plot_ppc(data, ax=ax, num_pp_samples=num_pp_samples, random_seed=seed, var_names=[label])


__all__ = [
    "InferenceData", "LATENT_VAR", "OBSERVED_VAR", "DATAPOINT", "LATENT", "FEATURE", "STAT_NAMES", "latent_names",
    "draws_to_inference_data", "latents_to_inference_data", "guide_to_inference_data", "bayesian_to_inference_data",
    "predictive_to_inference_data", "save_netcdf", "load_netcdf", "PosteriorDraws", "posterior_draws",
    "arviz_rhat", "arviz_ess", "arviz_summary", "arviz_psislw", "LooArrays", "arviz_loo",
    "arviz_plot_trace", "arviz_plot_rank", "arviz_plot_ppc",
]
