r"""Every PNG figure of the inference diagnostics.

Like :mod:`pyro_vae.plots`, every function builds a ``matplotlib.figure.Figure`` on a
``FigureCanvasAgg`` (never pyplot's global state, nothing shown), writes one PNG with
:func:`pyro_vae.plots.save_figure`, releases the figure and returns the ``Path``; the title is
stored in the PNG's ``Title`` chunk.

- PSIS k-hat histogram, with the thresholds of Yao et al. (2018): k < 0.5 good, 0.5-0.7 usable,
  k > 0.7 unreliable importance weights (the proposal misses part of the posterior).
- KL(q(z_d | x) || p(z_d)) per latent dimension d (averaged over datapoints), active units
  (Burda et al. 2015: Var_x E_q[z_d | x] > threshold) marked.
- Posterior predictive checks: per-feature mean T_j and sd U_j of the data against those of the
  replicates (each replicated value with its 2.5-97.5% interval over replicates), the
  per-datapoint log-likelihood of the data against that of replicates, and ArviZ's
  ``plot_ppc`` of the values x_ij and of the per-datapoint totals sum_j x_ij.
- Approximate vs MCMC posteriors of a few datapoints: marginal histograms, or a scatter for
  two-dimensional codes.
- Inference gaps (Cremer et al. 2018) with their standard errors.
- ArviZ's trace plot (per-chain densities and traces) and rank plots (histogram of each chain's
  ranks among all draws: flat when the chains mix) of the MCMC draws of a few datapoints.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from inference.diagnostics.convert import (
    DATAPOINT, FEATURE, LATENT, LATENT_VAR, OBSERVED_VAR, InferenceData, arviz_plot_ppc, arviz_plot_rank,
    arviz_plot_trace,
)
from inference.diagnostics.gaps import Gaps
from inference.diagnostics.ppc import PPCResult
from inference.diagnostics.psis import KHAT_BAD, KHAT_GOOD
from pyro_vae.errors import ConfigError
from pyro_vae.plots import DPI, save_figure  # one way to write a PNG for every figure

logger = logging.getLogger(__name__)


# -- helpers ----------------------------------------------------------------------------------------
def new_figure(width: float, height: float) -> Figure:
    """A Figure with its own Agg canvas and constrained layout, outside pyplot."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# -- k-hat --------------------------------------------------------------------------------------------
def plot_khat_histogram(khat: np.ndarray, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Histogram of per-datapoint PSIS k-hat with the 0.5 / 0.7 thresholds and the fraction in each band.

    k-hat = -inf (importance weights constant to rounding: q equals the posterior) is drawn at
    the left edge of the axis.
    """
    k = np.asarray(khat, dtype=float).reshape(-1)
    if k.size == 0:
        raise ConfigError("no k-hat values to plot")
    finite = k[np.isfinite(k)]
    low = min(-0.5, float(finite.min()) if finite.size else -0.5)
    high = max(1.2, float(finite.max()) if finite.size else 1.2)
    shown = np.clip(np.where(np.isneginf(k), low, k), low, high)
    fig = new_figure(6.0, 3.8)
    ax = fig.subplots()
    ax.axvspan(low, KHAT_GOOD, color="tab:green", alpha=0.08)
    ax.axvspan(KHAT_GOOD, KHAT_BAD, color="tab:orange", alpha=0.10)
    ax.axvspan(KHAT_BAD, high, color="tab:red", alpha=0.08)
    ax.hist(shown, bins=np.linspace(low, high, 41), color="tab:blue", edgecolor="white")
    for t in (KHAT_GOOD, KHAT_BAD):
        ax.axvline(t, color="k", ls="--", lw=1)
    good = np.mean(k < KHAT_GOOD)
    bad = np.mean(k > KHAT_BAD)
    ax.set_title(title or f"PSIS k-hat: {good:.0%} < 0.5 (good), {1 - good - bad:.0%} in 0.5-0.7, {bad:.0%} > 0.7")
    ax.set_xlabel("k-hat (per datapoint)")
    ax.set_ylabel("datapoints")
    return save_figure(fig, path, "PSIS k-hat histogram")


# -- KL per latent dimension ----------------------------------------------------------------------------
def plot_kl_per_dimension(
    kl: Sequence[float] | np.ndarray, active: Sequence[bool] | np.ndarray, path: str | os.PathLike,
    *, title: str | None = None,
) -> Path:
    """Bar plot of (1/N) sum_i KL(q(z_d | x_i) || p(z_d)) per dimension d; active units in colour, inactive grey."""
    kl = np.asarray(kl, dtype=float).reshape(-1)
    active = np.asarray(active, dtype=bool).reshape(-1)
    if kl.shape != active.shape:
        raise ConfigError(f"kl has {kl.size} dimensions but active has {active.size}")
    fig = new_figure(max(4.0, 0.45 * kl.size + 2.0), 3.6)
    ax = fig.subplots()
    colors = np.where(active, "tab:blue", "tab:gray")
    ax.bar(np.arange(kl.size), kl, color=colors)
    ax.set_xticks(np.arange(kl.size), [f"z{d}" for d in range(kl.size)])
    ax.set_ylabel("KL(q(z_d|x) || p(z_d)) [nats]")
    ax.set_title(title or f"KL per latent dimension: {int(active.sum())} of {kl.size} active (blue), collapsed in grey")
    return save_figure(fig, path, "KL per latent dimension")


# -- posterior predictive checks --------------------------------------------------------------------------
def plot_ppc_moments(ppc: PPCResult, path: str | os.PathLike) -> Path:
    """Per-feature mean and sd: observed T_j(x) (x axis) vs replicated T_j(x^rep) (y axis).

    Each feature j is a point at the mean over replicates (1/S) sum_s T_j(x^rep(s)) and a
    vertical line over the 2.5-97.5% quantiles of T_j(x^rep(s)). The line is the interval itself,
    not a spread around the mean: a skewed replicate distribution (a pixel that is on in 2 of 100
    replicates) has its mean outside it. Features with an extreme p-value are red.
    """
    fig = new_figure(9.0, 4.2)
    axes = fig.subplots(1, 2)
    for ax, name, obs, rep, p in (
        (axes[0], "mean", ppc.observed_mean, ppc.replicated_mean, ppc.p_mean),
        (axes[1], "sd", ppc.observed_sd, ppc.replicated_sd, ppc.p_sd),
    ):
        centre = rep.mean(0)
        lo, hi = np.quantile(rep, [0.025, 0.975], axis=0)
        extreme = (p < ppc.alpha / 2) | (p > 1 - ppc.alpha / 2)
        ax.vlines(obs, lo, hi, colors="0.7", lw=0.8)
        ax.scatter(obs[~extreme], centre[~extreme], s=12, color="tab:blue", label="consistent")
        ax.scatter(obs[extreme], centre[extreme], s=14, color="tab:red", label=f"extreme (p<{ppc.alpha / 2:g} or >{1 - ppc.alpha / 2:g})")
        both = np.concatenate([obs, centre, lo, hi])
        span = [float(both.min()), float(both.max())]
        ax.plot(span, span, color="k", lw=0.8, ls="--")
        ax.set_xlabel(f"observed per-feature {name}")
        ax.set_ylabel(f"replicated per-feature {name}")
        ax.set_title(f"{name}: {extreme.mean():.0%} of features extreme")
        ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path, "posterior predictive check: per-feature mean and sd")


def plot_ppc_loglik(ppc: PPCResult, path: str | os.PathLike) -> Path:
    """Distribution of per-datapoint log p(x_i | z) (mean over draws): observed data vs their replicates."""
    obs = ppc.loglik_observed.mean(0)
    rep = ppc.loglik_replicated.mean(0)
    fig = new_figure(6.0, 3.8)
    ax = fig.subplots()
    bins = np.histogram_bin_edges(np.concatenate([obs, rep]), bins=30)
    ax.hist(rep, bins=bins, alpha=0.5, color="tab:orange", label="replicated x_rep ~ p(x|z)")
    ax.hist(obs, bins=bins, alpha=0.5, color="tab:blue", label="observed x")
    ax.set_xlabel("log p(x_i | z) per datapoint (mean over draws) [nats]")
    ax.set_ylabel("datapoints")
    ax.set_title(f"log-likelihood PPC: {ppc.fraction_low_loglik:.0%} of datapoints with p < {ppc.alpha:g}")
    ax.legend(fontsize=8)
    return save_figure(fig, path, "posterior predictive check: log-likelihood")


# -- approximate posterior vs MCMC -----------------------------------------------------------------------
def plot_posterior_overlay(
    approx: np.ndarray,
    mcmc: np.ndarray,
    path: str | os.PathLike,
    *,
    datapoints: Sequence[Any] | None = None,
    latents: Sequence[int] | None = None,
    labels: tuple[str, str] = ("VI", "MCMC"),
) -> Path:
    """Overlay the draws of two posteriors for a few datapoints.

    ``approx`` and ``mcmc`` are (draws, N, d) arrays of the same N datapoints (chains pooled).
    With d == 2 each panel is a scatter of (z0, z1) for one datapoint; otherwise each row is one
    datapoint and each column one latent dimension of ``latents`` (default: the first 3), with
    density histograms of both posteriors.
    """
    approx, mcmc = np.asarray(approx, float), np.asarray(mcmc, float)
    if approx.ndim != 3 or mcmc.ndim != 3 or approx.shape[1:] != mcmc.shape[1:]:
        raise ConfigError(f"expected two (draws, N, d) arrays over the same datapoints, got {approx.shape} and {mcmc.shape}")
    n, d = approx.shape[1:]
    names = list(datapoints) if datapoints is not None else list(range(n))
    if d == 2:
        fig = new_figure(3.0 * n, 3.2)
        axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
        for i, ax in enumerate(axes):
            ax.scatter(mcmc[:, i, 0], mcmc[:, i, 1], s=3, alpha=0.3, color="k", label=labels[1])
            ax.scatter(approx[:, i, 0], approx[:, i, 1], s=3, alpha=0.3, color="tab:orange", label=labels[0])
            ax.set_title(f"datapoint {names[i]}", fontsize=9)
            ax.set_xlabel("z0")
            ax.set_ylabel("z1")
        axes[0].legend(fontsize=7, markerscale=3)
    else:
        cols = list(latents) if latents is not None else list(range(min(3, d)))
        fig = new_figure(3.0 * len(cols), 2.4 * n)
        axes = fig.subplots(n, len(cols), squeeze=False)
        for i in range(n):
            for j, c in enumerate(cols):
                ax = axes[i, j]
                both = np.concatenate([approx[:, i, c], mcmc[:, i, c]])
                bins = np.histogram_bin_edges(both, bins=30)
                ax.hist(mcmc[:, i, c], bins=bins, density=True, histtype="step", color="k", label=labels[1])
                ax.hist(approx[:, i, c], bins=bins, density=True, alpha=0.5, color="tab:orange", label=labels[0])
                ax.set_title(f"datapoint {names[i]}, z{c}", fontsize=9)
                ax.set_yticks([])
        axes[0, 0].legend(fontsize=7)
    return save_figure(fig, path, f"{labels[0]} vs {labels[1]} posteriors")


# -- inference gaps -----------------------------------------------------------------------------------------
def plot_gaps(gaps: Gaps, path: str | os.PathLike) -> Path:
    """log p(x), L[q*] and L[q] (left, points) and the approximation and amortization gaps (right, bars), +- 2 s.e."""
    fig = new_figure(9.0, 3.8)
    left, right = fig.subplots(1, 2)
    bounds = [("log p(x) (IS)", gaps.log_px), ("L[q*] optimized", gaps.elbo_optimized), ("L[q] amortized", gaps.elbo_amortized)]
    values = np.array([e.mean for _, e in bounds])
    errs = np.array([2 * e.stderr for _, e in bounds])
    for i, color in enumerate(["tab:green", "tab:blue", "tab:orange"]):
        left.errorbar([i], values[i:i + 1], yerr=errs[i:i + 1], fmt="o", color=color, capsize=5, markersize=7)
    left.set_xticks(range(3), [name for name, _ in bounds], fontsize=8)
    left.set_xlim(-0.5, 2.5)
    left.set_ylabel("nats per datapoint")
    left.set_title(f"bounds on {gaps.log_px.n} test points")
    parts = [("approximation\nlog p(x) - L[q*]", gaps.approximation_gap), ("amortization\nL[q*] - L[q]", gaps.amortization_gap)]
    right.bar(range(2), [e.mean for _, e in parts], yerr=[2 * e.stderr for _, e in parts],
              color=["tab:purple", "tab:red"], capsize=4)
    right.axhline(0, color="k", lw=0.8)
    right.set_xticks(range(2), [name for name, _ in parts], fontsize=8)
    right.set_ylabel("nats per datapoint")
    right.set_title("inference gaps (+- 2 s.e.)")
    return save_figure(fig, path, "inference gaps")


def plot_gaps_by_family(gaps: Mapping[str, Gaps], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Approximation gap log p(x) - L[q*] and amortization gap L[q*] - L[q] of each guide family, bars +- 2 s.e.

    ``gaps``: family name -> :class:`Gaps` of one model on the same datapoints (in the order to draw).
    """
    if not gaps:
        raise ConfigError("plot_gaps_by_family: gaps is empty; pass {family name: Gaps} for at least one family")
    names = list(gaps)
    fig = new_figure(1.2 * len(names) + 3.0, 3.8)
    ax = fig.subplots()
    at, width = np.arange(len(names)), 0.38
    for offset, part, label, color in ((-width / 2, "approximation_gap", "approximation  log p(x) - L[q*]", "tab:purple"),
                                       (width / 2, "amortization_gap", "amortization  L[q*] - L[q]", "tab:red")):
        est = [getattr(gaps[n], part) for n in names]
        ax.bar(at + offset, [e.mean for e in est], width, yerr=[2 * e.stderr for e in est], color=color, capsize=3,
               label=label)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(at, names, fontsize=8)
    ax.set_ylabel("nats per datapoint")
    ax.legend(fontsize=8)
    n = gaps[names[0]].log_px.n
    ax.set_title(title or f"inference gaps by guide family, {n} datapoints (+- 2 s.e.)", fontsize=10)
    return save_figure(fig, path, "inference gaps by family")


# -- ArviZ plots of MCMC draws and replicates -----------------------------------------------------------
def _pick(values: np.ndarray, chosen: Sequence[Any] | None, default_count: int) -> list[Any]:
    if chosen is None:
        return list(values[:default_count])
    missing = [v for v in chosen if v not in set(values.tolist())]
    if missing:
        raise ConfigError(f"datapoints {missing} are not in the InferenceData (it has {values.tolist()[:10]}...)")
    return list(chosen)


def _per_datapoint(idata: InferenceData, var: str, points: Sequence[Any]) -> xr.Dataset:
    """One variable per datapoint ("z[i]", dims chain, draw, latent), for one plot row per datapoint."""
    da = idata.posterior[var]
    return xr.Dataset({f"{var}[{p}]": da.sel({DATAPOINT: p}, drop=True) for p in points})


def plot_trace(
    idata: InferenceData, path: str | os.PathLike, *, datapoints: Sequence[Any] | None = None,
    var: str = LATENT_VAR, max_points: int = 3,
) -> Path:
    """ArviZ trace plot (per-chain densities and traces) of the codes of a few datapoints, one row each."""
    points = _pick(np.asarray(idata.posterior[DATAPOINT].values), datapoints, max_points)
    ds = _per_datapoint(idata, var, points)
    fig = new_figure(11.0, 2.3 * len(points))
    axes = fig.subplots(len(points), 2, squeeze=False)
    arviz_plot_trace(ds, axes)
    return save_figure(fig, path, f"trace plot of {var} for datapoints {points}")


def plot_rank(
    idata: InferenceData, path: str | os.PathLike, *, datapoints: Sequence[Any] | None = None,
    latents: Sequence[str] | None = None, var: str = LATENT_VAR, max_points: int = 3, max_latents: int = 3,
) -> Path:
    """ArviZ rank plots (histogram of each chain's ranks among all draws: flat when chains mix)."""
    points = _pick(np.asarray(idata.posterior[DATAPOINT].values), datapoints, max_points)
    names = _pick(np.asarray(idata.posterior[LATENT].values), latents, max_latents)
    ds = _per_datapoint(idata, var, points).sel({LATENT: names})
    fig = new_figure(3.2 * len(names), 2.4 * len(points))
    axes = fig.subplots(len(points), len(names), squeeze=False)
    arviz_plot_rank(ds, axes)
    for ax in axes.ravel():
        ax.title.set_fontsize(9)
        ax.xaxis.label.set_fontsize(8)
        ax.yaxis.label.set_fontsize(8)
    return save_figure(fig, path, f"rank plot of {var} for datapoints {points}")


def _integer_valued(*arrays: np.ndarray) -> bool:
    return all(np.all(np.mod(a, 1) == 0) for a in arrays)


def _ppc_view(ax: Axes, label: str, observed: xr.DataArray, replicated: xr.DataArray, num: int, seed: int) -> None:
    """One panel of :func:`plot_ppc`: ArviZ's plot_ppc of one statistic, histograms for integer values."""
    if _integer_valued(observed.values, replicated.values):
        observed, replicated = observed.astype(np.int64), replicated.astype(np.int64)
    arviz_plot_ppc(observed, replicated, ax, label=label, num_pp_samples=num, seed=seed)
    ax.set_title(f"{label}: observed vs {num} replicated data sets", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.xaxis.label.set_fontsize(9)
    leg = ax.get_legend()
    if leg is not None:
        for text in leg.get_texts():
            text.set_fontsize(7)


def plot_ppc(
    idata: InferenceData, path: str | os.PathLike, *, num_pp_samples: int = 50, seed: int = 0
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
        _ppc_view(ax, label, o, r, num, seed)
    for ax in axes[len(views):]:
        ax.set_visible(False)
    return save_figure(fig, path, "ArviZ posterior predictive check")


__all__ = [
    "new_figure", "save_figure", "plot_khat_histogram", "plot_kl_per_dimension", "plot_ppc_moments",
    "plot_ppc_loglik", "plot_posterior_overlay", "plot_gaps", "plot_gaps_by_family", "plot_trace", "plot_rank", "plot_ppc",
]
