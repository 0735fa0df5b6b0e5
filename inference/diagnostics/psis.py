r"""Pareto-smoothed importance sampling: k-hat of a guide per datapoint, and PSIS-LOO.

**PSIS k-hat** (:func:`psis_khat`): for S draws z_is ~ q(z | x_i), the log importance weights

    log w_is = log p(x_i, z_is) - log q(z_is | x_i)

are Pareto-smoothed per datapoint (ArviZ ``psislw``, Vehtari et al. 2024): the largest
M = min(S/5, 3 sqrt(S)) weights are replaced by quantiles of a generalized Pareto distribution
fitted to them. Its shape k-hat_i estimates how many moments the weights have (moments of order
< 1/k exist). Yao et al. (2018): k-hat < 0.5 good, 0.5-0.7 usable (slow convergence), > 0.7
unreliable: q misses mass of the posterior and any IS estimate built on it (log p(x) included)
is unreliable. The smoothed normalized weights w~_is give PSIS posterior moments
E[z_i] ~= sum_s w~_is z_is and an effective sample size 1 / sum_s w~_is^2.

**PSIS-LOO** (:func:`loo`): for S posterior draws theta^(s) of a fully Bayesian model,

    elpd_loo = sum_i log p(x_i | x_-i) ~= sum_i log sum_s w~_is p(x_i | theta^(s)),
    w_is = 1 / p(x_i | theta^(s))  (Pareto-smoothed, normalized),

with its own k-hat per left-out datapoint.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from pyro import poutine

from inference.diagnostics.convert import LATENT_VAR, InferenceData, arviz_loo, arviz_psislw
from inference.evaluate import log_importance_weights
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.rng import seeded

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
KHAT_GOOD, KHAT_BAD = 0.5, 0.7  # PSIS k-hat thresholds of Yao et al. 2018
CHUNK_FLOATS = 2e7  # psis_khat: rows per chunk so that samples x rows x D stays below this


# -- PSIS k-hat ------------------------------------------------------------------------------------------
def pareto_smooth(log_weights: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """PSIS of each row of ``log_weights`` (N, S): (normalized smoothed log weights (N, S), k-hat (N,)).

    ArviZ's ``psislw`` (reff = 1: independent draws). A row whose weights are constant up to
    floating-point rounding (q equal to the posterior; spread <= 64 eps max(1, |log w|)) has a
    degenerate tail: its k-hat is -inf and its smoothed weights are uniform, log w~_is = -log S.
    """
    lw = log_weights.detach().cpu().numpy() if torch.is_tensor(log_weights) else np.asarray(log_weights)
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
        smoothed[rows], khat[rows] = arviz_psislw(lw[rows])
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


def _psis_moments(log_w: Tensor, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """k-hat (B,), PSIS mean and sd (B, d) and ESS (B,) from log weights (S, B) of draws z (S, B, d)."""
    smoothed, k = pareto_smooth(log_w.T)
    w = np.exp(smoothed).T[..., None]  # (S, B, 1), sums to 1 over S
    mean = (w * z).sum(0)
    var = (w * (z - mean) ** 2).sum(0)
    return k, mean, np.sqrt(var), 1.0 / (w[..., 0] ** 2).sum(0)


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
    parts = []
    recorder = _RecordingGuide(guide, site)
    with seeded(seed), torch.no_grad():
        for r0 in range(0, x.shape[0], size):
            xb = x[r0:r0 + size]
            log_w = log_importance_weights(model, recorder, xb, num_samples)  # (S, B)
            z = recorder.value.expand(num_samples, xb.shape[0], -1).double().cpu().numpy()  # (S, B, d)
            parts.append(_psis_moments(log_w, z))
    khat, mean, sd, ess = (np.concatenate(p) for p in zip(*parts))
    result = PSISResult(khat, mean, sd, ess, num_samples)
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


def loo(idata: InferenceData, var_name: str | None = None) -> LooResult:
    """PSIS-LOO (ArviZ ``az.loo``) from the ``log_likelihood`` group (e.g. :func:`bayesian_to_inference_data`).

    elpd_loo = sum_i log sum_s w~_is p(x_i | theta^(s)) with Pareto-smoothed weights
    w_is ~ 1 / p(x_i | theta^(s)); lppd = sum_i log (1/S) sum_s p(x_i | theta^(s)).
    """
    if "log_likelihood" not in idata.groups():
        raise ConfigError("PSIS-LOO needs a log_likelihood group (per-datapoint log p(x_i | theta^(s)) draws)")
    res = arviz_loo(idata, var_name)
    ll = idata.log_likelihood[var_name or list(idata.log_likelihood.data_vars)[0]]
    ll = ll.stack(__sample__=("chain", "draw")).transpose(..., "__sample__").values
    lppd = float((np.logaddexp.reduce(ll, axis=-1) - math.log(ll.shape[-1])).sum())
    result = LooResult(res.elpd_loo, res.se, res.p_loo, lppd, res.khat, res.loo_i, res.num_samples)
    logger.info("%s", result.summary())
    return result


__all__ = [
    "KHAT_GOOD", "KHAT_BAD", "pareto_smooth", "PSISResult", "psis_khat", "LooResult", "loo",
]
