r"""Diagnose a trained run folder: MCMC reference posteriors, VI quality, collapse and PPC, one report.

:func:`diagnose_run` reloads ``RUN_DIR`` (:func:`inference.run.load_run`) and writes
``RUN_DIR/diagnostics/``::

    mcmc.nc, guide.nc      NUTS draws of p(z | x_i) and draws of q_phi(z | x_i) for the same test rows
                           (ArviZ InferenceData, netCDF; dims chain, draw, datapoint, latent)
    mcmc_summary.csv       mean, sd, HDI, MCSE, ESS bulk/tail, R-hat of every z_ij
    *.png                  trace, rank, k-hat, gaps, VI-vs-MCMC overlay, KL per dim, PPC figures
    diagnostics.json       every number in the report
    report.md              the figures and, in words, which checks passed and which did not

The steps, on a seeded random order of the test rows (the first ``mcmc_points`` rows of it for
MCMC, the first ``gap_points`` for the gaps, so the MCMC rows are among the gap rows):

1. NUTS on the codes of ``mcmc_points`` rows (``chains`` x ``samples`` draws after ``warmup``,
   chains started from the prior): R-hat, ESS and divergences (:mod:`inference.diagnostics.convergence`).
2. PSIS k-hat of q_phi(z | x) on every test row, and of the locally optimized q* on the gap rows
   (:mod:`inference.diagnostics.psis`).
3. Approximation and amortization gaps on ``gap_points`` rows (:mod:`inference.diagnostics.gaps`).
4. q_phi and q* against the MCMC draws (mean difference in posterior sds, sd ratio, KS).
5. KL(q(z_d | x) || p(z_d)) per latent dimension and active units (:mod:`inference.evaluate`); for a
   program with several latent layers (``program.latents``, e.g. z1, z2), per layer
   (:mod:`inference.layer_units`), with MCMC, the gaps and the VI-vs-MCMC comparison skipped (they
   read one site ``z``) and k-hat and the PPC on the layer x depends on (``latents[0]``).
6. Posterior predictive checks on every test row (:mod:`inference.diagnostics.ppc`) and ArviZ's plot_ppc.

The verdicts of the report (which checks pass) are :func:`inference.diagnostics.checks.verdicts`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from inference.diagnostics.checks import Check, verdicts
from inference.diagnostics.convergence import ConvergenceReport, convergence_checks, mcmc_summary
from inference.diagnostics.convert import (
    LATENT_VAR, InferenceData, guide_to_inference_data, latents_to_inference_data, posterior_draws,
    predictive_to_inference_data, save_netcdf,
)
from inference.diagnostics.gaps import Gaps, PosteriorComparison, amortization_gaps, compare_to_mcmc
from inference.diagnostics.plots import (
    plot_gaps, plot_khat_histogram, plot_kl_per_dimension, plot_posterior_overlay, plot_ppc, plot_ppc_loglik,
    plot_ppc_moments, plot_rank, plot_trace,
)
from inference.diagnostics.ppc import PPCResult, guide_draws, log_likelihood_draws, posterior_predictive_check, replicate
from inference.diagnostics.psis import PSISResult, psis_khat
from inference.evaluate import Estimate, active_units, kl_per_dimension
from inference.layer_units import layer_units
from inference.mcmc import sample_latents
from inference.devices import resolve_device
from inference.run import load_run
from inference.run_kinds import kind_of
from inference.run_folder import locked
from pyro_vae.files import write_json, write_text
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.vae import VAE

logger = logging.getLogger(__name__)

Tensor = torch.Tensor

FILES = {
    "mcmc": "mcmc.nc", "guide": "guide.nc", "summary": "mcmc_summary.csv", "trace": "trace.png", "rank": "rank.png",
    "khat": "khat.png", "gaps": "gaps.png", "overlay": "vi_vs_mcmc.png", "kl": "kl_per_dim.png",
    "ppc_moments": "ppc_moments.png", "ppc_loglik": "ppc_loglik.png", "ppc_arviz": "ppc_arviz.png",
    "json": "diagnostics.json", "report": "report.md",
}


@dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnose_run` measured; ``None`` where a step did not apply to the model."""

    out_dir: Path
    datapoints_mcmc: np.ndarray
    datapoints_gaps: np.ndarray
    convergence: ConvergenceReport | None
    khat: PSISResult
    khat_optimized: PSISResult | None
    gaps: Gaps | None
    vs_mcmc: PosteriorComparison | None
    vs_mcmc_optimized: PosteriorComparison | None
    kl_per_dim: np.ndarray
    active: np.ndarray
    ppc: PPCResult
    checks: tuple[Check, ...]
    files: dict[str, Path] = field(default_factory=dict)
    wall_time: float = 0.0
    layers: dict[str, int] = field(default_factory=dict)  # active units per latent site

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(c.passed for c in self.checks)


@dataclass(frozen=True)
class _Settings:
    """The sizes of :func:`diagnose_run`'s steps (its docstring), checked on construction."""

    mcmc_points: int
    samples: int
    warmup: int
    chains: int
    gap_points: int
    is_samples: int
    local_steps: int
    ppc_draws: int
    rows: int | None = None

    def __post_init__(self) -> None:
        if self.rows is not None and (isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows < 2):
            raise ConfigError(f"rows must be an integer >= 2 (or None for every test row), got {self.rows!r}")
        lows = {"mcmc_points": 0, "samples": 1, "warmup": 0, "chains": 1, "gap_points": 0, "is_samples": 2,
                "local_steps": 1, "ppc_draws": 1}
        for name, low in lows.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def diagnose_run(
    run_dir: str | Path,
    *,
    mcmc_points: int = 20,
    samples: int = 300,
    warmup: int = 300,
    chains: int = 2,
    gap_points: int = 50,
    is_samples: int = 1000,
    local_steps: int = 300,
    ppc_draws: int = 100,
    rows: int | None = None,
    seed: int = 0,
    threads: int | None = 1,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Diagnosis:
    """Run every diagnostic on a trained run folder and write ``run_dir/diagnostics/`` (module docstring).

    ``mcmc_points`` test rows get NUTS (``chains`` x ``samples`` draws after ``warmup``; 0 skips
    MCMC); ``gap_points`` rows get the inference gaps (0 skips them); k-hat uses ``is_samples``
    draws per row, as does log p(x) in the gaps; the PPC uses ``ppc_draws`` replicates.
    ``rows``: diagnose only the first ``rows`` test rows (a random subset: the split is shuffled),
    which bounds the time and memory of k-hat, KL per dimension and the PPC on large test sets.

    ``threads``: torch intra-op threads for the duration (restored after; None keeps the
    current setting). The default 1 is deliberate: every step evaluates small networks on small
    batches, where extra threads only contend.

    ``device``: where the program and the diagnosed rows live (default the CPU; a GPU run is
    checked by benchmarks/gpu_check.py's tests); every figure and file is computed from CPU copies.
    """
    target = resolve_device(device)
    before = torch.get_num_threads()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
        torch.set_num_threads(threads)
    try:
        settings = _Settings(mcmc_points=mcmc_points, samples=samples, warmup=warmup, chains=chains,
                             gap_points=gap_points, is_samples=is_samples, local_steps=local_steps, ppc_draws=ppc_draws,
                             rows=rows)
        return _diagnose(Path(run_dir), settings, seed=seed, progress=progress, device=target)
    finally:
        torch.set_num_threads(before)


# -- the steps ------------------------------------------------------------------------------------------
def _split(data: DataSplits) -> tuple[str, torch.Tensor]:
    for name in ("test", "val", "train"):
        x = getattr(data, name, None)
        if x is not None and len(x) > 1:
            return name, x
    raise ConfigError("the run's data has no split with 2 or more rows to diagnose")


@dataclass
class _Step:
    """What the steps of :func:`diagnose_run` share: the VAE, where they write, what they wrote and skipped."""

    vae: VAE
    out: Path
    seed: int
    progress: bool
    files: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def path(self, key: str) -> Path:
        return self.out / FILES[key]


class _McmcStep(NamedTuple):
    convergence: ConvergenceReport | None
    mcmc: InferenceData | None
    guide: InferenceData | None


def _mcmc_step(step: _Step, x: Tensor, rows: Tensor, s: _Settings) -> _McmcStep:
    """1. NUTS on the codes of ``rows`` and the amortized guide's draws of the same rows; R-hat, ESS, divergences."""
    if len(rows) == 0:
        step.skipped["mcmc"] = "mcmc_points = 0"
        return _McmcStep(None, None, None)
    vae, seed = step.vae, step.seed
    guide_idata = guide_to_inference_data(vae, x, s.chains * s.samples, datapoints=rows, seed=seed)
    step.files["guide"] = save_netcdf(guide_idata, step.path("guide"))
    try:
        post = sample_latents(vae, x, num_samples=s.samples, warmup=s.warmup, num_chains=s.chains, seed=seed,
                              init="prior", progress=step.progress)
    except UnsupportedModelError as err:
        step.skipped["mcmc"] = str(err)
        logger.warning("MCMC skipped: %s", err)
        return _McmcStep(None, None, guide_idata)
    with torch.no_grad():
        ll = log_likelihood_draws(vae, x, post.z)
        rep = replicate(vae, post.z, seed=seed + 1)
    mcmc_idata = latents_to_inference_data(post, log_likelihood=ll, posterior_predictive=rep, datapoints=rows)
    step.files["mcmc"] = save_netcdf(mcmc_idata, step.path("mcmc"))
    mcmc_summary(mcmc_idata, [LATENT_VAR]).to_csv(step.path("summary"))
    step.files["summary"] = step.path("summary")
    conv = convergence_checks(mcmc_idata)
    step.files["trace"] = plot_trace(mcmc_idata, step.path("trace"))
    step.files["rank"] = plot_rank(mcmc_idata, step.path("rank"))
    return _McmcStep(conv, mcmc_idata, guide_idata)


def _gaps_step(step: _Step, x: Tensor, s: _Settings) -> tuple[Gaps | None, PSISResult | None]:
    """3. Approximation and amortization gaps on the rows of ``x``, and the k-hat of the optimized q*."""
    if "gaps" in step.skipped:  # already ruled out for this program
        return None, None
    if len(x) == 0:
        step.skipped["gaps"] = "gap_points = 0"
        return None, None
    vae, seed = step.vae, step.seed
    try:
        gaps = amortization_gaps(vae, x, is_samples=s.is_samples, local_steps=s.local_steps, seed=seed,
                                 progress=step.progress)
    except UnsupportedModelError as err:
        step.skipped["gaps"] = str(err)
        logger.warning("inference gaps skipped: %s", err)
        return None, None
    step.files["gaps"] = plot_gaps(gaps, step.path("gaps"))
    return gaps, psis_khat(vae.model, gaps.local_guide.guide, x, s.is_samples, seed=seed + 2)


def _vs_mcmc_step(
    step: _Step, x: Tensor, rows: Tensor, mcmc: _McmcStep, gaps: Gaps | None, s: _Settings,
) -> tuple[PosteriorComparison | None, PosteriorComparison | None]:
    """4. The amortized guide and the optimized q* against the MCMC draws, and their overlay figure."""
    if mcmc.mcmc is None or mcmc.guide is None:
        return None, None
    vae = step.vae
    vs = compare_to_mcmc(mcmc.guide, mcmc.mcmc)
    vs_opt = None
    mcmc_z = posterior_draws(mcmc.mcmc).values
    guide_z = posterior_draws(mcmc.guide).values
    shown = slice(0, min(3, len(rows)))
    if gaps is not None:
        opt_idata = guide_to_inference_data(gaps.local_guide, x, s.chains * s.samples, vae=vae, datapoints=rows,
                                            log_likelihood=False, posterior_predictive=False, seed=step.seed + 3)
        vs_opt = compare_to_mcmc(opt_idata, mcmc.mcmc)
    latents = list(np.argsort(-kl_per_dimension(vae, x).cpu().numpy())[: min(3, vae.latent_dim)])
    step.files["overlay"] = plot_posterior_overlay(
        guide_z.reshape(-1, *guide_z.shape[2:])[:, shown], mcmc_z.reshape(-1, *mcmc_z.shape[2:])[:, shown],
        step.path("overlay"), datapoints=rows[shown].tolist(), latents=sorted(int(j) for j in latents),
        labels=("q(z|x)", "MCMC"),
    )
    return vs, vs_opt


def _units_step(step: _Step, x: Tensor, latents: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, dict[str, int], list[str] | None]:
    """5. KL per unit and active units (Var_i E_q[z_u | x_i] > 0.01); for several latent sites, per layer
    (:func:`inference.layer_units.layer_units`, units in site order). Returns (kl, active, {site: active
    units}, the units' names: None for the one site z, else ``site[u]``)."""
    vae = step.vae
    if latents == ("z",):
        kl = kl_per_dimension(vae, x).cpu().numpy()
        _, variances = active_units(vae, x)
        active = (variances > 0.01).cpu().numpy()
        layers, names = {"z": int(active.sum())}, None
    else:
        units = layer_units(vae, x, threshold=0.01)
        kl = torch.cat([u.kl_per_unit for u in units.values()]).cpu().numpy()
        active = torch.cat([u.variances > 0.01 for u in units.values()]).cpu().numpy()
        layers = {site: u.active for site, u in units.items()}
        names = [f"{site}[{j}]" for site, u in units.items() for j in range(u.variances.numel())]
    step.files["kl"] = plot_kl_per_dimension(kl, active, step.path("kl"))
    return kl, active, layers, names


def _ppc_step(step: _Step, x: Tensor, s: _Settings, site: str) -> PPCResult:
    """6. Posterior predictive checks with z (the latent site x depends on) drawn from the amortized guide."""
    vae, seed = step.vae, step.seed
    z = guide_draws(vae.guide, x, s.ppc_draws, site=site, seed=seed)
    ppc = posterior_predictive_check(vae, x, z=z, seed=seed)
    step.files["ppc_moments"] = plot_ppc_moments(ppc, step.path("ppc_moments"))
    step.files["ppc_loglik"] = plot_ppc_loglik(ppc, step.path("ppc_loglik"))
    kept = x[: ppc.replicated.shape[1]]  # the rows whose replicates the PPC kept for figures
    step.files["ppc_arviz"] = plot_ppc(predictive_to_inference_data(kept, ppc.replicated), step.path("ppc_arviz"), seed=seed)
    return ppc


def _diagnose(run_dir: Path, s: _Settings, *, seed: int, progress: bool, device: torch.device) -> Diagnosis:
    with locked(run_dir):
        return _diagnose_locked(run_dir, s, seed=seed, progress=progress, device=device)


def _diagnose_locked(run_dir: Path, s: _Settings, *, seed: int, progress: bool, device: torch.device) -> Diagnosis:
    t0 = time.perf_counter()
    _, data, vae = load_run(run_dir, device=device)
    kind = kind_of(vae).name
    if kind == "conditional":  # before anything is written
        raise ConfigError(f"{run_dir} holds a conditional program ({vae.task.label}); diagnose reads an unconditional "
                          f"VAE's p(x | z). Score it with `pyro-vae complete {run_dir} --mask ...` (k-hat included)")
    latents = tuple(getattr(vae, "latents", ("z",)))
    if kind == "semi_supervised":  # M2: the class label y is a discrete latent
        raise ConfigError(f"{run_dir} holds a semi-supervised program with the discrete latent y; diagnose reads "
                          f"continuous latents. Use `pyro-vae evaluate {run_dir}` (accuracy, calibration, log p(x) "
                          "with y summed out, k-hat)")
    vae.eval()
    split, x = _split(data)
    x = x[: s.rows].to(device)
    step = _Step(vae, run_dir / "diagnostics", seed, progress)
    step.out.mkdir(parents=True, exist_ok=True)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    idx_mcmc = order[: min(s.mcmc_points, x.shape[0])].sort().values
    idx_gaps = order[: min(s.gap_points, x.shape[0])].sort().values
    if latents == ("z",):
        mcmc = _mcmc_step(step, x[idx_mcmc], idx_mcmc, s)  # 1.
    else:  # MCMC and the gaps read the one site "z"; k-hat, units and PPC cover every layer
        why = f"it covers one latent site 'z'; this program has {list(latents)}"
        step.skipped.update(mcmc=why, gaps=why)
        mcmc, idx_mcmc, idx_gaps = _McmcStep(None, None, None), idx_mcmc[:0], idx_gaps[:0]
    khat = psis_khat(vae.model, vae.guide, x, s.is_samples, seed=seed, site=latents[0])  # 2.
    step.files["khat"] = plot_khat_histogram(khat.khat, step.path("khat"))
    gaps, khat_opt = _gaps_step(step, x[idx_gaps], s)  # 3.
    vs, vs_opt = _vs_mcmc_step(step, x[idx_mcmc], idx_mcmc, mcmc, gaps, s)  # 4.
    kl, active, layers, units = _units_step(step, x, latents)  # 5.
    ppc = _ppc_step(step, x, s, latents[0])  # 6.
    checks = verdicts(mcmc.convergence, khat, khat_opt, gaps, vs, kl, active, ppc, step.skipped, units)
    wall = time.perf_counter() - t0
    result = Diagnosis(step.out, idx_mcmc.numpy(), idx_gaps.numpy(), mcmc.convergence, khat, khat_opt, gaps, vs,
                       vs_opt, kl, active, ppc, checks, step.files, wall, layers)
    numbers = _numbers(result, split=split, num_rows=int(x.shape[0]), seed=seed, settings=s, skipped=step.skipped)
    step.files["json"] = write_json(step.path("json"), _json_safe(numbers))
    step.files["report"] = write_report(result, run_name=run_dir.name, split=split)
    logger.info("diagnostics of %s written to %s in %.1f s (%s)", run_dir, step.out, wall,
                "all checks passed" if result.ok else "some checks failed")
    return result


# -- diagnostics.json and report.md ---------------------------------------------------------------------
def _estimate(e: Estimate) -> dict[str, float]:
    return {"mean": e.mean, "stderr": e.stderr, "n": e.n, "num_samples": e.num_samples}


def _psis_json(k: PSISResult) -> dict[str, Any]:
    finite = k.khat[np.isfinite(k.khat)]
    return {"num_samples": k.num_samples, "fraction_good": k.fraction_good, "fraction_ok": k.fraction_ok,
            "fraction_bad": k.fraction_bad, "median": float(np.median(k.khat)),
            "max": float(finite.max()) if finite.size else None}


def _comparison_json(c: PosteriorComparison) -> dict[str, Any]:
    return {"max_abs_mean_difference": c.max_abs_mean_difference,
            "median_abs_mean_difference": float(np.median(np.abs(c.mean_difference))),
            "median_sd_ratio": c.median_sd_ratio, "min_sd_ratio": float(c.sd_ratio.min()),
            "max_sd_ratio": float(c.sd_ratio.max()), "mean_ks": c.mean_ks, "mean_energy": float(c.energy.mean())}


def _numbers(result: Diagnosis, *, split: str, num_rows: int, seed: int, settings: _Settings,
             skipped: dict[str, str]) -> dict[str, Any]:
    """Every number of the report, for ``diagnostics.json``."""
    khat, khat_opt, ppc, conv, gaps = result.khat, result.khat_optimized, result.ppc, result.convergence, result.gaps
    numbers: dict[str, Any] = {
        "split": split, "num_rows": num_rows, "seed": seed, "wall_time_s": result.wall_time,
        "mcmc_datapoints": result.datapoints_mcmc.tolist(), "gap_datapoints": result.datapoints_gaps.tolist(),
        "settings": dataclasses.asdict(settings),
        "khat": _psis_json(khat), "khat_optimized": _psis_json(khat_opt) if khat_opt else None,
        "kl_per_dim": [float(v) for v in result.kl_per_dim], "active_units": int(result.active.sum()),
        "active_units_per_layer": dict(result.layers),
        "ppc": {"fraction_extreme_mean": ppc.fraction_extreme_mean, "fraction_extreme_sd": ppc.fraction_extreme_sd,
                "fraction_low_loglik": ppc.fraction_low_loglik, "alpha": ppc.alpha, "num_draws": ppc.num_draws},
        "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in result.checks],
        "skipped": skipped,
    }
    if conv is not None:
        numbers["convergence"] = {k: getattr(conv, k) for k in (
            "max_rhat", "worst_rhat", "min_ess_bulk", "min_ess_tail", "num_divergences", "num_transitions",
            "num_chains", "num_parameters", "num_rhat_high", "num_ess_low")}
        numbers["convergence"]["warnings"] = list(conv.warnings)
    if gaps is not None:
        numbers["gaps"] = {k: _estimate(getattr(gaps, k)) for k in (
            "log_px", "elbo_optimized", "elbo_amortized", "approximation_gap", "amortization_gap", "inference_gap")}
        numbers["gaps"]["proposal"] = gaps.proposal
    if result.vs_mcmc is not None:
        numbers["vs_mcmc"] = _comparison_json(result.vs_mcmc)
    if result.vs_mcmc_optimized is not None:
        numbers["vs_mcmc_optimized"] = _comparison_json(result.vs_mcmc_optimized)
    return numbers


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else str(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_report(result: Diagnosis, *, run_name: str = "", split: str = "test") -> Path:
    """``report.md`` in ``result.out_dir``: the verdicts first, then each section with its figure."""
    f = {k: p.name for k, p in result.files.items()}
    failed = [c for c in result.checks if c.status == "FAIL"]
    lines = [f"# Diagnostics{': ' + run_name if run_name else ''}", ""]
    lines.append(
        f"**{'All checks passed.' if not failed else f'{len(failed)} check(s) failed: ' + ', '.join(c.name for c in failed) + '.'}** "
        f"Computed on the {split} split in {result.wall_time:.0f} s."
    )
    lines += ["", "| check | verdict | detail |", "|---|---|---|"]
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731 - a literal | would split the table cell
    lines += [f"| {cell(c.name)} | **{c.status}** | {cell(c.detail)} |" for c in result.checks]
    lines += ["", "## 1. MCMC reference posterior (NUTS on the codes)", ""]
    conv = result.convergence
    if conv is None:
        lines.append("MCMC was not run.")
    else:
        lines.append(
            f"NUTS on the codes z_i of {len(result.datapoints_mcmc)} {split} rows ({conv.num_chains} chains from the "
            f"prior, {conv.num_transitions // conv.num_chains} draws each): `{f.get('mcmc')}`; the amortized guide's "
            f"draws of the same rows: `{f.get('guide')}`; summary table: `{f.get('summary')}`."
        )
        lines.append("")
        lines += [f"- {w}" for w in conv.warnings] or ["- R-hat <= 1.01, ESS >= 400 and no divergences: the chains agree."]
        lines += ["", f"![trace]({f.get('trace')})", "", f"![rank]({f.get('rank')})"]
    lines += ["", "## 2. PSIS k-hat of the amortized guide", "",
              result.khat.summary() + ". Yao et al. (2018): k-hat < 0.5 the importance weights are reliable, "
              "0.5-0.7 usable but slow, > 0.7 unreliable (q misses posterior mass).", "", f"![k-hat]({f.get('khat')})"]
    if result.khat_optimized is not None:
        lines += ["", "Locally optimized q*: " + result.khat_optimized.summary() + "."]
    lines += ["", "## 3. Inference gaps (Cremer, Li & Duvenaud 2018)", ""]
    if result.gaps is None:
        lines.append("The gaps were not computed.")
    else:
        g = result.gaps
        lines += [
            f"On {g.log_px.n} {split} rows, nats per datapoint (mean +- s.e. of per-datapoint values):", "",
            "| quantity | value |", "|---|---|",
            f"| log p(x), IS with K={g.log_px.num_samples} ({g.proposal} proposal) | {g.log_px.mean:.3f} +- {g.log_px.stderr:.3f} |",
            f"| L[q*], q optimized per datapoint ({g.local_steps} steps from the encoder) | {g.elbo_optimized.mean:.3f} +- {g.elbo_optimized.stderr:.3f} |",
            f"| L[q], amortized | {g.elbo_amortized.mean:.3f} +- {g.elbo_amortized.stderr:.3f} |",
            f"| approximation gap log p(x) - L[q*] | {g.approximation_gap.mean:.3f} +- {g.approximation_gap.stderr:.3f} |",
            f"| amortization gap L[q*] - L[q] | {g.amortization_gap.mean:.3f} +- {g.amortization_gap.stderr:.3f} |",
            "", f"![gaps]({f.get('gaps')})",
        ]
    lines += ["", "## 4. Variational posteriors against MCMC", ""]
    if result.vs_mcmc is None:
        lines.append("No MCMC draws to compare with.")
    else:
        lines.append(f"- amortized q(z|x): {result.vs_mcmc.summary()}")
        if result.vs_mcmc_optimized is not None:
            lines.append(f"- optimized q*: {result.vs_mcmc_optimized.summary()}")
        lines += ["", "Mean differences are in MCMC posterior sds; an sd ratio below 1 means q is narrower than the posterior.",
                  "", f"![VI vs MCMC]({f.get('overlay')})"]
    lines += ["", "## 5. Posterior collapse", "", next(c.detail for c in result.checks if c.name == "active units") + "."]
    if len(result.layers) > 1:
        lines += ["", "Active units per layer: " + ", ".join(f"{site} {n}" for site, n in result.layers.items())
                  + " (the figure shows the units in this order)."]
    lines += ["", f"![KL per dimension]({f.get('kl')})"]
    kept, rows = result.ppc.replicated.shape[1], result.ppc.loglik_observed.shape[1]
    lines += ["", "## 6. Posterior predictive checks", "", result.ppc.summary() + ".", "",
              f"![PPC moments]({f.get('ppc_moments')})", "", f"![PPC log-likelihood]({f.get('ppc_loglik')})", ""]
    if kept < rows:
        lines += [f"ArviZ's plot_ppc shows the replicates of the first {kept} of the {rows} rows.", ""]
    lines += [f"![ArviZ plot_ppc]({f.get('ppc_arviz')})", ""]
    return write_text(result.out_dir / FILES["report"], "\n".join(lines))


__all__ = ["Diagnosis", "diagnose_run", "write_report", "FILES"]
