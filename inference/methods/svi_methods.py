r"""The SVI methods: ``svi-trace``, ``svi-meanfield``, ``iwae``, ``rws`` (:func:`inference.svi.fit`; proposal: the encoder).

``iwae`` and ``rws`` use K = ``options["num_particles"]`` if given, else ``train.num_particles``
when it is above 1, else :data:`IW_PARTICLES` (IWAE with K = 1 is estimator A; RWS's wake-phi
needs K >= 2; ``rws`` with ``num_particles=1`` is classic wake-sleep). A budgeted run is one
fit continued epoch by epoch in memory (``svi.fit(..., state=...)``), so it is exactly an
uninterrupted run of the same number of epochs; a seconds budget ends at the epoch boundary
nearest to the budget (the remaining time is covered in calls of at most half of it, each
re-measuring the pace). Checkpoints are the states along that one run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from inference import svi
from inference.methods.budget import Budget
from inference.methods.registry import METHODS, MethodRunner
from inference.methods.result import MethodResult, Proposal, fit_snapshot, with_final
from inference.run import new_program
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError
from pyro_vae.spec import RunSpec
from pyro_vae.vae import VAE

IW_PARTICLES = 5  # K for iwae/rws when train.num_particles is 1


def _svi_runner(objective: str, method: str) -> MethodRunner:
    def run(spec: RunSpec, data: DataSplits, budget: Budget, *, fractions: tuple[float, ...],
            options: dict[str, Any], progress: bool) -> MethodResult:
        allowed = {"num_particles"} if objective in ("iwae", "rws") else set()
        if set(options) - allowed:
            raise ConfigError(
                f"method {method!r} takes its settings from the spec's train section; options "
                f"{sorted(set(options) - allowed)} are not accepted (allowed: {sorted(allowed) or 'none'})"
            )
        k = options.get("num_particles", spec.train.num_particles)
        if objective in ("iwae", "rws") and "num_particles" not in options and k == 1:
            k = IW_PARTICLES
        train = dataclasses.replace(spec.train, elbo=objective, num_particles=k)
        vae = new_program(spec, data)
        n = int(data.train.shape[0])
        max_epochs = budget.max_epochs(n * k)
        notes = f"K={k}" if objective in ("iwae", "rws") else ""

        def proposal(v: VAE) -> Proposal:
            return lambda x: v.guide

        points: list[MethodResult] = []
        fit = None
        done = 0
        pace = math.nan  # seconds per epoch of the last svi.fit call (budgets in seconds)
        stop = False
        for f in fractions:
            cap = max(1, round(f * max_epochs)) if max_epochs is not None else None
            while not stop:
                if budget.seconds is None:
                    target = cap
                elif fit is None:
                    target = 1
                else:
                    # epochs left to the nearest epoch boundary, at the last call's pace; run at most
                    # half of them (rounded up) per call, so the pace is re-measured as the end nears
                    remaining = f * budget.seconds - fit.wall_time
                    left = max(0, math.floor(remaining / pace + 0.5))
                    target = done + (left if left <= 2 else math.ceil(left / 2))
                    if cap is not None:
                        target = min(target, cap)
                if target <= done:
                    break
                before = (done, fit.wall_time if fit is not None else 0.0)
                # the fit continues its own state in memory: a budgeted run is one uninterrupted run
                fit = svi.fit(vae, data, dataclasses.replace(train, epochs=target),
                              state=fit.state if fit is not None else None, progress=progress)
                done = fit.history[-1].epoch if fit.history else target
                pace = (fit.wall_time - before[1]) / max(1, done - before[0])
                stop = fit.stopped == "early_stopping"
                if budget.seconds is None:
                    break
            if fit is not None:
                points.append(fit_snapshot(method, vae, proposal, fit, epochs=done, elbo_defined=True,
                                        fraction=f, notes=notes))
        return with_final(points)

    run.__doc__ = f"SVI with objective {objective!r} (inference.svi.fit); proposal: the encoder"
    return run



for _name, _objective in (("svi-trace", "trace"), ("svi-meanfield", "meanfield"), ("iwae", "iwae"), ("rws", "rws")):
    METHODS.register(_name, _svi_runner(_objective, _name))


__all__ = ["IW_PARTICLES"]
