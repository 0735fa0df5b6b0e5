r"""The verdicts of ``pyro-vae diagnose``: which diagnostics pass, which fail, and which only inform.

- R-hat, ESS, divergences: pass when no parameter has R-hat > 1.01, no bulk or tail ESS is below
  400, and no transition diverged (:mod:`inference.diagnostics.convergence`).
- PSIS k-hat of q(z | x): pass when at most ``KHAT_TOLERANCE`` of the rows have k-hat > 0.7.
- Gaps: L[q] <= L[q*] <= log p(x) must hold within 2 standard errors of each gap, a negative
  amortization gap meaning the local optimization did not improve on the encoder, a negative
  approximation gap an IS estimate of log p(x) that is too low.
- Counts of rare events (posterior predictive p-values): with per-item p-values uniform under a
  well-specified model, the number of "extreme" items out of n is Binomial(n, alpha); the check
  fails when the count exceeds the ``CHECK_QUANTILE`` (99%) quantile of Binomial(n, alpha).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

from inference.diagnostics.convergence import ConvergenceReport
from inference.diagnostics.gaps import Gaps, PosteriorComparison
from inference.diagnostics.ppc import PPCResult
from inference.diagnostics.psis import PSISResult

KHAT_TOLERANCE = 0.05  # at most this fraction of test rows may have k-hat > 0.7
CHECK_QUANTILE = 0.99  # binomial quantile for counts of extreme p-values


@dataclass(frozen=True)
class Check:
    """One verdict of the report: ``status`` is "PASS", "FAIL" or "NOTE" (information, no verdict)."""

    name: str
    status: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.status != "FAIL"


def _count_check(name: str, count: int, n: int, alpha: float, what: str) -> Check:
    limit = int(stats.binom.ppf(CHECK_QUANTILE, n, alpha))
    status = "PASS" if count <= limit else "FAIL"
    return Check(name, status, f"{count} of {n} {what} (expected about {alpha * n:.1f} by chance; "
                               f"fail above {limit}, the {CHECK_QUANTILE:.0%} quantile of Binomial({n}, {alpha:g}))")


def _mcmc_checks(conv: ConvergenceReport | None, skipped: dict[str, str]) -> list[Check]:
    if conv is None:
        return [Check("MCMC", "NOTE", f"skipped: {skipped.get('mcmc', 'not run')}")]
    return [
        Check("R-hat", "PASS" if conv.num_rhat_high == 0 else "FAIL",
              f"max rank-normalized split R-hat {conv.max_rhat:.3f} (at {conv.worst_rhat}); "
              f"{conv.num_rhat_high} of {conv.num_parameters} above {conv.rhat_max:g}"),
        Check("ESS", "PASS" if conv.num_ess_low == 0 else "FAIL",
              f"min bulk ESS {conv.min_ess_bulk:.0f}, min tail ESS {conv.min_ess_tail:.0f} of "
              f"{conv.num_transitions} draws; {conv.num_ess_low} of {conv.num_parameters} below {conv.ess_min:g}"),
        Check("divergences", "PASS" if conv.num_divergences == 0 else "FAIL",
              f"{conv.num_divergences} of {conv.num_transitions} transitions diverged"),
    ]


def _khat_checks(khat: PSISResult, khat_opt: PSISResult | None) -> list[Check]:
    out = [Check(
        "PSIS k-hat of q(z|x)", "PASS" if khat.fraction_bad <= KHAT_TOLERANCE else "FAIL",
        f"{khat.fraction_good:.1%} of {khat.khat.size} test rows < 0.5 (good), {khat.fraction_ok:.1%} in 0.5-0.7 "
        f"(usable), {khat.fraction_bad:.1%} > 0.7 (unreliable; Yao et al. 2018); pass when at most "
        f"{KHAT_TOLERANCE:.0%} are > 0.7",
    )]
    if khat_opt is not None:
        out.append(Check("PSIS k-hat of q*", "NOTE",
                         f"locally optimized q*: {khat_opt.fraction_good:.1%} < 0.5, {khat_opt.fraction_ok:.1%} in 0.5-0.7, "
                         f"{khat_opt.fraction_bad:.1%} > 0.7 on {khat_opt.khat.size} rows"))
    return out


def _gap_checks(gaps: Gaps | None, skipped: dict[str, str]) -> list[Check]:
    if gaps is None:
        return [Check("gaps", "NOTE", f"skipped: {skipped.get('gaps', 'not run')}")]
    a, m = gaps.approximation_gap, gaps.amortization_gap
    return [
        Check("gaps", "NOTE",
              f"approximation gap log p(x) - L[q*] = {a.mean:.3f} +- {a.stderr:.3f}, amortization gap "
              f"L[q*] - L[q] = {m.mean:.3f} +- {m.stderr:.3f} nats per datapoint ({a.n} test rows)"),
        Check("L[q] <= L[q*]", "PASS" if m.mean >= -2 * m.stderr else "FAIL",
              f"amortization gap {m.mean:.3f} should be >= 0 within 2 s.e. ({2 * m.stderr:.3f}); a negative "
              "one means the local optimization did not improve on the encoder"),
        Check("L[q*] <= log p(x)", "PASS" if a.mean >= -2 * a.stderr else "FAIL",
              f"approximation gap {a.mean:.3f} should be >= 0 within 2 s.e. ({2 * a.stderr:.3f}); a negative "
              "one means the IS estimate of log p(x) is too low (more samples, or a better proposal)"),
    ]


def _collapse_check(kl: np.ndarray, active: np.ndarray, units: Sequence[str] | None = None) -> Check:
    names = list(units) if units is not None else [f"z{d}" for d in range(active.size)]
    collapsed = [names[d] for d in np.flatnonzero(~active)]
    return Check("active units", "NOTE",
                 f"{int(active.sum())} of {active.size} latent dimensions active (Var_x E_q[z_d|x] > 0.01); "
                 + (f"collapsed: {', '.join(collapsed)} (KL {', '.join(f'{kl[d]:.3f}' for d in np.flatnonzero(~active))} nats)"
                    if collapsed else "none collapsed"))


def _ppc_checks(ppc: PPCResult) -> list[Check]:
    n_feat, n_rows = ppc.p_mean.size, ppc.p_loglik.size

    def extreme(p: np.ndarray) -> int:
        return int(((p < ppc.alpha / 2) | (p > 1 - ppc.alpha / 2)).sum())

    return [
        _count_check("PPC feature means", extreme(ppc.p_mean), n_feat, ppc.alpha,
                     "features with an extreme posterior predictive p-value of their mean"),
        _count_check("PPC feature sds", extreme(ppc.p_sd), n_feat, ppc.alpha,
                     "features with an extreme posterior predictive p-value of their sd"),
        _count_check("PPC log-likelihood", int((ppc.p_loglik < ppc.alpha).sum()), n_rows, ppc.alpha,
                     f"test rows less likely than their replicates (p < {ppc.alpha:g})"),
    ]


def verdicts(
    conv: ConvergenceReport | None, khat: PSISResult, khat_opt: PSISResult | None, gaps: Gaps | None,
    vs: PosteriorComparison | None, kl: np.ndarray, active: np.ndarray, ppc: PPCResult, skipped: dict[str, str],
    units: Sequence[str] | None = None,
) -> tuple[Check, ...]:
    """Every check of the report, in its order (module docstring for the rules).

    ``None`` for a step that was not run (``skipped`` says why, by step "mcmc" or "gaps");
    ``kl`` (d,) is the mean KL(q(z_j | x) || p(z_j)) per latent dimension, ``active`` (d,) which
    dimensions are active units (Var_x E_q[z_j | x] > 0.01); ``units`` their names (default z0, z1, ...).
    """
    out = _mcmc_checks(conv, skipped) + _khat_checks(khat, khat_opt) + _gap_checks(gaps, skipped)
    if vs is not None:
        out.append(Check("q(z|x) vs MCMC", "NOTE", vs.summary()))
    out.append(_collapse_check(kl, active, units))
    return tuple(out + _ppc_checks(ppc))


__all__ = ["KHAT_TOLERANCE", "CHECK_QUANTILE", "Check", "verdicts"]
