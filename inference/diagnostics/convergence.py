r"""Convergence of MCMC draws: rank-normalized split R-hat, bulk and tail ESS, divergences.

For M chains of S draws of a scalar theta (Vehtari et al. 2021), each chain is split in halves
(2M chains of S' = S/2 draws), the draws are rank-normalized (normal scores
Phi^-1((r - 3/8) / (2MS' + 1/4)) of their ranks r among all draws), and

    R-hat = sqrt( ((S'-1)/S' W + B/S') / W )          W: mean within-chain variance,
                                                       B/S': variance of the chain means

is computed for the rank-normalized draws (bulk: do the chains agree on location?) and for
those of |theta - median| (folded: do they agree on scale?); the larger is reported. The bulk
ESS is the effective sample size of the rank-normalized draws, the tail ESS the smaller of
those of the indicators 1[theta <= q_0.05] and 1[theta <= q_0.95]. R-hat > 1.01, ESS < 400 or
any divergent transition is a warning (:func:`convergence_checks`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from inference.diagnostics.convert import InferenceData, arviz_ess, arviz_rhat, arviz_summary
from pyro_vae.errors import ConfigError

logger = logging.getLogger(__name__)

RHAT_MAX, ESS_MIN = 1.01, 400


def mcmc_summary(
    idata: InferenceData, var_names: Sequence[str] | None = None, *, hdi_prob: float = 0.94,
    round_to: int | str | None = None,
) -> pd.DataFrame:
    """ArviZ's summary table: mean, sd, HDI (``hdi_prob``), MCSE of mean and sd, ess_bulk, ess_tail, r_hat.

    ``round_to``: decimals (ArviZ's default rounding for None; "none" keeps full precision).
    """
    return arviz_summary(idata, list(var_names) if var_names else None, hdi_prob=hdi_prob, round_to=round_to)


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


class _Scalars(NamedTuple):
    """R-hat (with labels), bulk and tail ESS of every scalar of a posterior, in one order."""

    labels: list[str]
    rhat: np.ndarray
    bulk: np.ndarray
    tail: np.ndarray


def _scalar_diagnostics(post: xr.Dataset) -> _Scalars:
    rhat = _flat(arviz_rhat(post))
    bulk = _flat(arviz_ess(post, "bulk"))
    tail = _flat(arviz_ess(post, "tail"))
    return _Scalars([label for label, _ in rhat], np.array([v for _, v in rhat]), np.array([v for _, v in bulk]),
                    np.array([v for _, v in tail]))


def _divergences(idata: InferenceData) -> int:
    """Number of divergent transitions in ``sample_stats.diverging`` (0 when there is no such variable)."""
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        return int(np.asarray(idata.sample_stats["diverging"].values, dtype=bool).sum())
    return 0


def _messages(
    sc: _Scalars, r_bad: np.ndarray, ess_bad: np.ndarray, worst: int, max_rhat: float, divergences: int,
    transitions: int, rhat_max: float, ess_min: float,
) -> list[str]:
    """One sentence per failed check: what failed, by how much, and what to do."""
    messages = []
    if r_bad.any():
        messages.append(
            f"R-hat: {int(r_bad.sum())} of {sc.rhat.size} parameters have rank-normalized split R-hat > {rhat_max:g} "
            f"(max {max_rhat:.3f} at {sc.labels[worst]}); the chains disagree, they have not mixed: run longer "
            "(more warm-up and draws), start closer, or reparameterize"
        )
    if ess_bad.any():
        messages.append(
            f"ESS: {int(ess_bad.sum())} of {sc.bulk.size} parameters have bulk or tail ESS < {ess_min:g} "
            f"(min bulk {np.nanmin(sc.bulk):.0f}, min tail {np.nanmin(sc.tail):.0f} of {transitions} draws); draw more "
            "samples before trusting means, sds and intervals"
        )
    if divergences:
        messages.append(
            f"divergences: {divergences} of {transitions} transitions diverged; the sampler misses part of the "
            "posterior: raise target_accept (smaller steps) or reparameterize"
        )
    return messages


def convergence_checks(
    idata: InferenceData,
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
    ESS are the bulk and tail effective sample sizes of all chains together. Divergences come
    from ``sample_stats.diverging`` (none counted when there is no such variable).
    """
    if not rhat_max > 1 or not ess_min > 0:
        raise ConfigError(f"need rhat_max > 1 and ess_min > 0, got {rhat_max} and {ess_min}")
    if "posterior" not in idata.groups():
        raise ConfigError("the InferenceData has no posterior group to check")
    names = list(var_names) if var_names else None
    post = idata.posterior if names is None else idata.posterior[names]
    chains, draws = int(post.sizes["chain"]), int(post.sizes["draw"])
    sc = _scalar_diagnostics(post)
    r, b, t = sc.rhat, sc.bulk, sc.tail
    r_bad = ~(r <= rhat_max)  # NaN counts as bad
    ess_bad = ~((b >= ess_min) & (t >= ess_min))
    worst = int(np.nanargmax(np.where(np.isfinite(r), r, np.inf))) if r.size else 0
    max_rhat = float(r[worst]) if r.size and np.isfinite(r[worst]) else (float("inf") if r.size else float("nan"))
    divergences = _divergences(idata)
    transitions = chains * draws
    messages = _messages(sc, r_bad, ess_bad, worst, max_rhat, divergences, transitions, rhat_max, ess_min)
    report = ConvergenceReport(
        max_rhat=max_rhat, worst_rhat=sc.labels[worst] if sc.labels else "",
        min_ess_bulk=float(np.nanmin(b)) if b.size else float("nan"),
        min_ess_tail=float(np.nanmin(t)) if t.size else float("nan"), num_divergences=divergences,
        num_transitions=transitions, num_chains=chains, num_parameters=int(r.size), num_rhat_high=int(r_bad.sum()),
        num_ess_low=int(ess_bad.sum()), rhat_max=float(rhat_max), ess_min=float(ess_min), warnings=tuple(messages),
    )
    logger.info("convergence: %s", report)
    return report


__all__ = ["RHAT_MAX", "ESS_MIN", "mcmc_summary", "ConvergenceReport", "convergence_checks"]
