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
   chains started from the prior): R-hat, ESS and divergences (:mod:`inference.diagnostics`).
2. PSIS k-hat of q_phi(z | x) on every test row, and of the locally optimized q* on the gap rows.
3. Approximation and amortization gaps on ``gap_points`` rows (:mod:`inference.vi_quality`).
4. q_phi and q* against the MCMC draws (mean difference in posterior sds, sd ratio, KS).
5. KL(q(z_d | x) || p(z_d)) per latent dimension and active units (:mod:`inference.evaluate`).
6. Posterior predictive checks on every test row (:mod:`inference.ppc`) and ArviZ's plot_ppc.

A check that counts rare events uses a binomial bound: with per-item p-values uniform under a
well-specified model, the number of "extreme" items out of n is compared with the 99% quantile
of Binomial(n, alpha).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from inference import diagnostic_plots as plots
from inference import diagnostics as dg
from inference.evaluate import active_units, kl_per_dimension
from inference.mcmc import sample_latents
from inference.ppc import PPCResult, log_likelihood_draws, posterior_predictive_check, replicate
from inference.run import load_run, write_json
from inference.vi_quality import Gaps, PosteriorComparison, amortization_gaps, compare_to_mcmc
from pyro_vae.errors import ConfigError, UnsupportedModelError

logger = logging.getLogger(__name__)

KHAT_TOLERANCE = 0.05  # at most this fraction of test rows may have k-hat > 0.7
CHECK_QUANTILE = 0.99  # binomial quantile for counts of extreme p-values
FILES = {
    "mcmc": "mcmc.nc", "guide": "guide.nc", "summary": "mcmc_summary.csv", "trace": "trace.png", "rank": "rank.png",
    "khat": "khat.png", "gaps": "gaps.png", "overlay": "vi_vs_mcmc.png", "kl": "kl_per_dim.png",
    "ppc_moments": "ppc_moments.png", "ppc_loglik": "ppc_loglik.png", "ppc_arviz": "ppc_arviz.png",
    "json": "diagnostics.json", "report": "report.md",
}


@dataclass(frozen=True)
class Check:
    """One verdict of the report: ``status`` is "PASS", "FAIL" or "NOTE" (information, no verdict)."""

    name: str
    status: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.status != "FAIL"


@dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnose_run` measured; ``None`` where a step did not apply to the model."""

    out_dir: Path
    datapoints_mcmc: np.ndarray
    datapoints_gaps: np.ndarray
    convergence: dg.ConvergenceReport | None
    khat: dg.PSISResult
    khat_optimized: dg.PSISResult | None
    gaps: Gaps | None
    vs_mcmc: PosteriorComparison | None
    vs_mcmc_optimized: PosteriorComparison | None
    kl_per_dim: np.ndarray
    active: np.ndarray
    ppc: PPCResult
    checks: tuple[Check, ...]
    files: dict[str, Path] = field(default_factory=dict)
    wall_time: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(c.passed for c in self.checks)


def _count_check(name: str, count: int, n: int, alpha: float, what: str) -> Check:
    limit = int(stats.binom.ppf(CHECK_QUANTILE, n, alpha))
    status = "PASS" if count <= limit else "FAIL"
    return Check(name, status, f"{count} of {n} {what} (expected about {alpha * n:.1f} by chance; "
                               f"fail above {limit}, the {CHECK_QUANTILE:.0%} quantile of Binomial({n}, {alpha:g}))")


def _checks(
    conv: dg.ConvergenceReport | None, khat: dg.PSISResult, khat_opt: dg.PSISResult | None, gaps: Gaps | None,
    vs: PosteriorComparison | None, kl: np.ndarray, active: np.ndarray, ppc: PPCResult, skipped: dict[str, str],
) -> tuple[Check, ...]:
    out: list[Check] = []
    if conv is None:
        out.append(Check("MCMC", "NOTE", f"skipped: {skipped.get('mcmc', 'not run')}"))
    else:
        out.append(Check("R-hat", "PASS" if conv.num_rhat_high == 0 else "FAIL",
                         f"max rank-normalized split R-hat {conv.max_rhat:.3f} (at {conv.worst_rhat}); "
                         f"{conv.num_rhat_high} of {conv.num_parameters} above {conv.rhat_max:g}"))
        out.append(Check("ESS", "PASS" if conv.num_ess_low == 0 else "FAIL",
                         f"min bulk ESS {conv.min_ess_bulk:.0f}, min tail ESS {conv.min_ess_tail:.0f} of "
                         f"{conv.num_transitions} draws; {conv.num_ess_low} of {conv.num_parameters} below {conv.ess_min:g}"))
        out.append(Check("divergences", "PASS" if conv.num_divergences == 0 else "FAIL",
                         f"{conv.num_divergences} of {conv.num_transitions} transitions diverged"))
    out.append(Check(
        "PSIS k-hat of q(z|x)", "PASS" if khat.fraction_bad <= KHAT_TOLERANCE else "FAIL",
        f"{khat.fraction_good:.1%} of {khat.khat.size} test rows < 0.5 (good), {khat.fraction_ok:.1%} in 0.5-0.7 "
        f"(usable), {khat.fraction_bad:.1%} > 0.7 (unreliable; Yao et al. 2018); pass when at most "
        f"{KHAT_TOLERANCE:.0%} are > 0.7",
    ))
    if khat_opt is not None:
        out.append(Check("PSIS k-hat of q*", "NOTE",
                         f"locally optimized q*: {khat_opt.fraction_good:.1%} < 0.5, {khat_opt.fraction_ok:.1%} in 0.5-0.7, "
                         f"{khat_opt.fraction_bad:.1%} > 0.7 on {khat_opt.khat.size} rows"))
    if gaps is None:
        out.append(Check("gaps", "NOTE", f"skipped: {skipped.get('gaps', 'not run')}"))
    else:
        a, m = gaps.approximation_gap, gaps.amortization_gap
        out.append(Check("gaps", "NOTE",
                         f"approximation gap log p(x) - L[q*] = {a.mean:.3f} +- {a.stderr:.3f}, amortization gap "
                         f"L[q*] - L[q] = {m.mean:.3f} +- {m.stderr:.3f} nats per datapoint ({a.n} test rows)"))
        out.append(Check("L[q] <= L[q*]", "PASS" if m.mean >= -2 * m.stderr else "FAIL",
                         f"amortization gap {m.mean:.3f} should be >= 0 within 2 s.e. ({2 * m.stderr:.3f}); a negative "
                         "one means the local optimization did not improve on the encoder"))
        out.append(Check("L[q*] <= log p(x)", "PASS" if a.mean >= -2 * a.stderr else "FAIL",
                         f"approximation gap {a.mean:.3f} should be >= 0 within 2 s.e. ({2 * a.stderr:.3f}); a negative "
                         "one means the IS estimate of log p(x) is too low (more samples, or a better proposal)"))
    if vs is not None:
        out.append(Check("q(z|x) vs MCMC", "NOTE", vs.summary()))
    collapsed = [f"z{d}" for d in np.flatnonzero(~active)]
    out.append(Check("active units", "NOTE",
                     f"{int(active.sum())} of {active.size} latent dimensions active (Var_x E_q[z_d|x] > 0.01); "
                     + (f"collapsed: {', '.join(collapsed)} (KL {', '.join(f'{kl[d]:.3f}' for d in np.flatnonzero(~active))} nats)"
                        if collapsed else "none collapsed")))
    n_feat, n_rows = ppc.p_mean.size, ppc.p_loglik.size
    extreme = lambda p: int(((p < ppc.alpha / 2) | (p > 1 - ppc.alpha / 2)).sum())  # noqa: E731
    out.append(_count_check("PPC feature means", extreme(ppc.p_mean), n_feat, ppc.alpha,
                            "features with an extreme posterior predictive p-value of their mean"))
    out.append(_count_check("PPC feature sds", extreme(ppc.p_sd), n_feat, ppc.alpha,
                            "features with an extreme posterior predictive p-value of their sd"))
    out.append(_count_check("PPC log-likelihood", int((ppc.p_loglik < ppc.alpha).sum()), n_rows, ppc.alpha,
                            f"test rows less likely than their replicates (p < {ppc.alpha:g})"))
    return tuple(out)


def _estimate(e: Any) -> dict[str, float]:
    return {"mean": e.mean, "stderr": e.stderr, "n": e.n, "num_samples": e.num_samples}


def _psis_json(k: dg.PSISResult) -> dict[str, Any]:
    finite = k.khat[np.isfinite(k.khat)]
    return {"num_samples": k.num_samples, "fraction_good": k.fraction_good, "fraction_ok": k.fraction_ok,
            "fraction_bad": k.fraction_bad, "median": float(np.median(k.khat)),
            "max": float(finite.max()) if finite.size else None}


def _comparison_json(c: PosteriorComparison) -> dict[str, Any]:
    return {"max_abs_mean_difference": c.max_abs_mean_difference,
            "median_abs_mean_difference": float(np.median(np.abs(c.mean_difference))),
            "median_sd_ratio": c.median_sd_ratio, "min_sd_ratio": float(c.sd_ratio.min()),
            "max_sd_ratio": float(c.sd_ratio.max()), "mean_ks": c.mean_ks, "mean_energy": float(c.energy.mean())}


def _split(data: Any) -> tuple[str, torch.Tensor]:
    for name in ("test", "val", "train"):
        x = getattr(data, name, None)
        if x is not None and len(x) > 1:
            return name, x
    raise ConfigError("the run's data has no split with 2 or more rows to diagnose")


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
    seed: int = 0,
    threads: int | None = 1,
    progress: bool = True,
) -> Diagnosis:
    """Run every diagnostic on a trained run folder and write ``run_dir/diagnostics/`` (module docstring).

    ``mcmc_points`` test rows get NUTS (``chains`` x ``samples`` draws after ``warmup``; 0 skips
    MCMC); ``gap_points`` rows get the inference gaps (0 skips them); k-hat uses ``is_samples``
    draws per row, as does log p(x) in the gaps; the PPC uses ``ppc_draws`` replicates.

    ``threads``: torch intra-op threads for the duration (restored after; None keeps the
    current setting). The default 1 is deliberate: every step evaluates small networks on small
    batches, where extra threads only contend; measured on the shared 2-core machine, NUTS on 20
    digits rows ran 14x slower with 2 threads than with 1 (88 s vs 6 s for 100 transitions).
    """
    before = torch.get_num_threads()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
        torch.set_num_threads(threads)
    try:
        return _diagnose(run_dir, mcmc_points=mcmc_points, samples=samples, warmup=warmup, chains=chains,
                         gap_points=gap_points, is_samples=is_samples, local_steps=local_steps, ppc_draws=ppc_draws,
                         seed=seed, progress=progress)
    finally:
        torch.set_num_threads(before)


def _diagnose(
    run_dir: str | Path, *, mcmc_points: int, samples: int, warmup: int, chains: int, gap_points: int,
    is_samples: int, local_steps: int, ppc_draws: int, seed: int, progress: bool,
) -> Diagnosis:
    for name, value, low in (("mcmc_points", mcmc_points, 0), ("samples", samples, 1), ("warmup", warmup, 0),
                             ("chains", chains, 1), ("gap_points", gap_points, 0), ("is_samples", is_samples, 2),
                             ("local_steps", local_steps, 1), ("ppc_draws", ppc_draws, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    _, data, vae = load_run(run_dir)
    vae.eval()
    split, x = _split(data)
    out = run_dir / "diagnostics"
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    idx_mcmc = order[: min(mcmc_points, x.shape[0])].sort().values
    idx_gaps = order[: min(gap_points, x.shape[0])].sort().values
    x_mcmc, x_gaps = x[idx_mcmc], x[idx_gaps]

    # 1. MCMC and the amortized guide on the same rows
    conv = mcmc_idata = guide_idata = None
    num_draws = chains * samples
    if len(idx_mcmc) > 0:
        guide_idata = dg.guide_to_inference_data(vae, x_mcmc, num_draws, datapoints=idx_mcmc, seed=seed)
        files["guide"] = dg.save_netcdf(guide_idata, out / FILES["guide"])
        try:
            post = sample_latents(vae, x_mcmc, num_samples=samples, warmup=warmup, num_chains=chains, seed=seed,
                                  init="prior", progress=progress)
        except UnsupportedModelError as err:
            skipped["mcmc"] = str(err)
            logger.warning("MCMC skipped: %s", err)
        else:
            with torch.no_grad():
                ll = log_likelihood_draws(vae, x_mcmc, post.z)
                rep = replicate(vae, post.z, seed=seed + 1)
            mcmc_idata = dg.latents_to_inference_data(post, log_likelihood=ll, posterior_predictive=rep, datapoints=idx_mcmc)
            files["mcmc"] = dg.save_netcdf(mcmc_idata, out / FILES["mcmc"])
            summary = dg.mcmc_summary(mcmc_idata, ["z"])
            summary.to_csv(out / FILES["summary"])
            files["summary"] = out / FILES["summary"]
            conv = dg.convergence_checks(mcmc_idata)
            files["trace"] = dg.plot_trace(mcmc_idata, out / FILES["trace"])
            files["rank"] = dg.plot_rank(mcmc_idata, out / FILES["rank"])
    else:
        skipped["mcmc"] = "mcmc_points = 0"

    # 2.-3. k-hat and gaps
    khat = dg.psis_khat(vae.model, vae.guide, x, is_samples, seed=seed)
    files["khat"] = plots.plot_khat_histogram(khat.khat, out / FILES["khat"])
    gaps = khat_opt = None
    if len(idx_gaps) > 0:
        try:
            gaps = amortization_gaps(vae, x_gaps, is_samples=is_samples, local_steps=local_steps, seed=seed, progress=progress)
        except UnsupportedModelError as err:
            skipped["gaps"] = str(err)
            logger.warning("inference gaps skipped: %s", err)
        else:
            files["gaps"] = plots.plot_gaps(gaps, out / FILES["gaps"])
            khat_opt = dg.psis_khat(vae.model, gaps.local_guide.guide, x_gaps, is_samples, seed=seed + 2)
    else:
        skipped["gaps"] = "gap_points = 0"

    # 4. VI against MCMC
    vs = vs_opt = None
    if mcmc_idata is not None and guide_idata is not None:
        vs = compare_to_mcmc(guide_idata, mcmc_idata)
        mcmc_z = dg.posterior_draws(mcmc_idata).values
        guide_z = dg.posterior_draws(guide_idata).values
        shown = slice(0, min(3, len(idx_mcmc)))
        labels = ("q(z|x)", "MCMC")
        if gaps is not None:
            opt_idata = dg.guide_to_inference_data(gaps.local_guide, x_mcmc, num_draws, vae=vae, datapoints=idx_mcmc,
                                                   log_likelihood=False, posterior_predictive=False, seed=seed + 3)
            vs_opt = compare_to_mcmc(opt_idata, mcmc_idata)
        latents = list(np.argsort(-kl_per_dimension(vae, x_mcmc).numpy())[: min(3, vae.latent_dim)])
        files["overlay"] = plots.plot_posterior_overlay(
            guide_z.reshape(-1, *guide_z.shape[2:])[:, shown], mcmc_z.reshape(-1, *mcmc_z.shape[2:])[:, shown],
            out / FILES["overlay"], datapoints=idx_mcmc[shown].tolist(), latents=sorted(int(j) for j in latents), labels=labels,
        )

    # 5. posterior collapse
    kl = kl_per_dimension(vae, x).numpy()
    _, variances = active_units(vae, x)
    active = (variances > 0.01).numpy()
    files["kl"] = plots.plot_kl_per_dimension(kl, active, out / FILES["kl"])

    # 6. posterior predictive checks
    ppc = posterior_predictive_check(vae, x, num_draws=ppc_draws, seed=seed)
    files["ppc_moments"] = plots.plot_ppc_moments(ppc, out / FILES["ppc_moments"])
    files["ppc_loglik"] = plots.plot_ppc_loglik(ppc, out / FILES["ppc_loglik"])
    files["ppc_arviz"] = dg.plot_ppc(dg.predictive_to_inference_data(x, ppc.replicated), out / FILES["ppc_arviz"], seed=seed)

    checks = _checks(conv, khat, khat_opt, gaps, vs, kl, active, ppc, skipped)
    wall = time.perf_counter() - t0
    numbers: dict[str, Any] = {
        "split": split, "num_rows": int(x.shape[0]), "seed": seed, "wall_time_s": wall,
        "mcmc_datapoints": idx_mcmc.tolist(), "gap_datapoints": idx_gaps.tolist(),
        "settings": {"mcmc_points": mcmc_points, "samples": samples, "warmup": warmup, "chains": chains,
                     "gap_points": gap_points, "is_samples": is_samples, "local_steps": local_steps, "ppc_draws": ppc_draws},
        "khat": _psis_json(khat), "khat_optimized": _psis_json(khat_opt) if khat_opt else None,
        "kl_per_dim": [float(v) for v in kl], "active_units": int(active.sum()),
        "ppc": {"fraction_extreme_mean": ppc.fraction_extreme_mean, "fraction_extreme_sd": ppc.fraction_extreme_sd,
                "fraction_low_loglik": ppc.fraction_low_loglik, "alpha": ppc.alpha, "num_draws": ppc.num_draws},
        "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in checks],
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
    if vs is not None:
        numbers["vs_mcmc"] = _comparison_json(vs)
    if vs_opt is not None:
        numbers["vs_mcmc_optimized"] = _comparison_json(vs_opt)
    files["json"] = write_json(out / FILES["json"], _json_safe(numbers))
    result = Diagnosis(out, idx_mcmc.numpy(), idx_gaps.numpy(), conv, khat, khat_opt, gaps, vs, vs_opt, kl, active,
                       ppc, checks, files, wall)
    files["report"] = write_report(result, run_name=run_dir.name, split=split)
    logger.info("diagnostics of %s written to %s in %.1f s (%s)", run_dir, out, wall,
                "all checks passed" if result.ok else "some checks failed")
    return result


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
    lines += ["", "## 5. Posterior collapse", "", next(c.detail for c in result.checks if c.name == "active units") + ".",
              "", f"![KL per dimension]({f.get('kl')})"]
    lines += ["", "## 6. Posterior predictive checks", "", result.ppc.summary() + ".", "",
              f"![PPC moments]({f.get('ppc_moments')})", "", f"![PPC log-likelihood]({f.get('ppc_loglik')})", "",
              f"![ArviZ plot_ppc]({f.get('ppc_arviz')})", ""]
    path = result.out_dir / FILES["report"]
    path.write_text("\n".join(lines))
    return path


__all__ = ["Check", "Diagnosis", "diagnose_run", "write_report", "KHAT_TOLERANCE", "FILES"]
