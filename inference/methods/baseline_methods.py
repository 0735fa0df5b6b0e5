r"""The baseline methods: ``map``, ``local-vi`` and ``mcem`` (:mod:`inference.baselines`), scored with local VI proposals.

=========== ================================================ =============================================
name        fit                                              proposal q(z | x) for scoring
=========== ================================================ =============================================
map         :func:`~inference.baselines.fit_map` (MAP codes)  local VI q_i started at the rows' MAP codes
local-vi    :func:`~inference.baselines.fit_local_vi`         local VI q_i on the scored rows, theta fixed
mcem        :func:`~inference.baselines.fit_mcem`             local VI q_i on the scored rows
=========== ================================================ =============================================

``map`` and ``local-vi`` ignore ``train.elbo`` where it does not apply and run without early
stopping (they have no validation score). They learn their epochs-per-second and
samples-per-epoch from a one-epoch probe on a fresh model (not counted in the result) and then
run the whole number of epochs; ``mcem`` stops on its own ``budget_seconds``. Checkpoints re-run
from the same seed with the shorter budget (deterministic prefixes of the longer run when the
budget is in epochs or samples).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from inference.baselines import fit_local, fit_local_vi, fit_map, fit_mcem, map_proposal, mcem_proposal
from inference.methods.budget import Budget
from inference.methods.registry import METHODS, check_options, require_cpu
from inference.methods.result import MethodResult, Proposal, fit_snapshot, with_final
from inference.run import new_program
from pyro_vae.data import DataSplits
from pyro_vae.spec import RunSpec
from pyro_vae.vae import VAE

_BIG_EPOCHS = 10**9  # "no epoch limit" for fit_mcem when the budget is in seconds only


def _plan_epochs(budget: Budget, probe: Callable[[], Any] | None, samples_per_epoch: int | None) -> tuple[int, str]:
    """Epochs to run within ``budget``: from the epoch/sample limits, and for seconds from a 1-epoch probe."""
    note = ""
    limits = []
    if budget.epochs is not None:
        limits.append(budget.epochs)
    if budget.samples is not None or budget.seconds is not None:
        if samples_per_epoch is None or budget.seconds is not None:
            assert probe is not None
            result = probe()
            if samples_per_epoch is None:
                samples_per_epoch = max(1, int(result.samples_evaluated))
            if budget.seconds is not None:
                per_epoch = float(result.history[-1].seconds)
                overhead = max(0.0, float(result.wall_time) - per_epoch)
                limits.append(max(1, math.floor((budget.seconds - overhead) / per_epoch + 0.5)))
                note = f"probe: {per_epoch:.3g} s/epoch"
        if budget.samples is not None:
            limits.append(max(1, math.ceil(budget.samples / samples_per_epoch)))
    return min(limits), note


def _prefix_runs(
    method: str,
    fractions: tuple[float, ...],
    total_epochs: int,
    train_for: Callable[[int], tuple[VAE, Any]],
    make_proposal: Callable[[VAE], Proposal],
    elbo_defined: bool,
    notes: str,
) -> MethodResult:
    """One fresh run per checkpoint, of round(f x total_epochs) epochs (deterministic prefixes of the full run)."""
    points: list[MethodResult] = []
    seen: dict[int, MethodResult] = {}
    for f in fractions:
        epochs = max(1, round(f * total_epochs)) if f < 1 else total_epochs
        if epochs not in seen:
            vae, fit_result = train_for(epochs)
            seen[epochs] = fit_snapshot(method, vae, make_proposal, fit_result, epochs=epochs, elbo_defined=elbo_defined,
                                     fraction=f, notes=notes, copy_vae=False)
        points.append(dataclasses.replace(seen[epochs], fraction=f))
    return with_final(points)


@METHODS.register("map")
def _run_map(spec: RunSpec, data: DataSplits, budget: Budget, *, fractions: tuple[float, ...],
             options: dict[str, Any], progress: bool) -> MethodResult:
    """MAP codes z_i and theta (inference.baselines.fit_map); proposal: local VI started at the MAP codes"""
    check_options("map", fit_map, options, ("vae", "data", "train", "epochs", "progress"))
    train = dataclasses.replace(spec.train, patience=None)

    def train_for(epochs: int) -> tuple[VAE, Any]:
        vae = new_program(spec, data)
        return vae, fit_map(vae, data, train, epochs=epochs, progress=progress, **options)

    epochs, note = _plan_epochs(budget, lambda: train_for(1)[1], int(data.train.shape[0]))
    wd = options.get("weight_decay", 0.0)
    return _prefix_runs("map", fractions, epochs, train_for, lambda v: (lambda x: map_proposal(v, x).guide), True,
                        "; ".join(s for s in (f"weight_decay={wd:g}", note) if s))


@METHODS.register("local-vi")
def _run_local_vi(spec: RunSpec, data: DataSplits, budget: Budget, *, fractions: tuple[float, ...],
                  options: dict[str, Any], progress: bool) -> MethodResult:
    """One Gaussian q_i per training row, learned with theta (inference.baselines.fit_local_vi); proposal: local VI"""
    elbo = spec.train.elbo if spec.train.elbo in ("trace", "meanfield") else "meanfield"
    train = dataclasses.replace(spec.train, patience=None, elbo=elbo)
    check_options("local-vi", fit_local_vi, options, ("vae", "data", "train", "epochs", "progress"))

    def train_for(epochs: int) -> tuple[VAE, Any]:
        vae = new_program(spec, data)
        return vae, fit_local_vi(vae, data, train, epochs=epochs, progress=progress, **options)

    k = train.num_particles
    epochs, note = _plan_epochs(budget, lambda: train_for(1)[1], int(data.train.shape[0]) * k)
    return _prefix_runs("local-vi", fractions, epochs, train_for,
                        lambda v: (lambda x: fit_local(v, x, init="prior", progress=False).guide), True,
                        "; ".join(s for s in (f"elbo={elbo}", note) if s))


@METHODS.register("mcem")
def _run_mcem(spec: RunSpec, data: DataSplits, budget: Budget, *, fractions: tuple[float, ...],
              options: dict[str, Any], progress: bool) -> MethodResult:
    """Monte Carlo EM with persistent HMC chains (inference.baselines.fit_mcem); proposal: local VI q_i"""
    check_options("mcem", fit_mcem, options, ("vae", "data", "epochs", "budget_seconds", "progress"))
    require_cpu("mcem", spec)
    t = spec.train
    settings = {"batch_size": t.batch_size, "lr": t.lr, "seed": t.seed, **options}

    def train_for(epochs: int, seconds: float | None = None) -> tuple[VAE, Any]:
        vae = new_program(spec, data)
        return vae, fit_mcem(vae, data, epochs=epochs, budget_seconds=seconds, progress=progress, **settings)

    def proposal(v: VAE) -> Proposal:
        return lambda x: mcem_proposal(v, x).guide

    if budget.epochs is None and budget.samples is None:  # seconds only: fit_mcem stops itself
        points = []
        for f in fractions:
            vae, res = train_for(_BIG_EPOCHS, f * budget.seconds)
            points.append(fit_snapshot("mcem", vae, proposal, res, epochs=len(res.history), elbo_defined=False,
                                    fraction=f, notes="", copy_vae=False))
        return with_final(points)
    epochs, note = _plan_epochs(budget, lambda: train_for(1)[1], None)
    if budget.seconds is not None:  # several limits: the epoch count, and fit_mcem's own clock
        def train_for_capped(e: int) -> tuple[VAE, Any]:
            return train_for(e, budget.seconds * e / epochs)
        return _prefix_runs("mcem", fractions, epochs, train_for_capped, proposal, False, note)
    return _prefix_runs("mcem", fractions, epochs, train_for, proposal, False, note)

