r"""What a run folder does with its program, by the kind of program.

A kind says how a run fits its program, what it measures on the test split (writing the figures
that go with those numbers), which figures it draws of the trained program, and what it refuses
before the folder is touched. :func:`kind_of` gives the first kind in :data:`RUN_KINDS` that
applies, so :mod:`inference.run` asks the kind and never branches on the program itself:

* ``conditional`` (``program.task``: ``cvae``, ``cvae_baseline``): SVI; the completion yardstick
  log p(y | c) = log E_{q(z | c, y)}[p(y | z, c) p(z | c) / q(z | c, y)] by importance sampling
  (:mod:`inference.completion.runs`); completion grids;
* ``semi_supervised`` (M2: a class label y enumerated when hidden): mixed labelled and unlabelled
  batches (:func:`inference.semisup.fit`); the generative metrics plus the accuracy of
  argmax q(y | x), calibration and log p(x) = log sum_y p(y) p(x | y) (:mod:`inference.semisup.results`);
* ``generative`` (every other program): SVI; the one yardstick log p(x) by importance sampling,
  the ELBOs (estimators A and B) and the active units (:func:`inference.evaluate.evaluate_vae`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from inference import evaluate, semisup, svi
from inference.devices import module_placement
from inference.semisup import results as semisup_results
from inference.semisup.validation import DEFAULT_MONITOR, MONITORS
from inference.training import FitResult
from inference.training.settings import check_fit_inputs, monitor_name, refuse_labelled_batch
from pyro_vae.cvae import is_conditional
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError
from pyro_vae.plots import save_run_figures
from pyro_vae.spec import RunSpec


@dataclass(frozen=True)
class RunKind:
    """How a run treats one kind of program (module docstring); every field is a plain function.

    ``fit(program, data, train, **loop_options) -> FitResult``;
    ``test_metrics(program, data, figures_dir, *, num_samples, rows, progress) -> dict`` (figures_dir
    None: numbers only); ``figures(program, data, fit, figures_dir) -> list[Path]`` (``fit`` the FitResult);
    ``check_data(program, data, spec)`` raises ConfigError/DataError; ``monitor(spec)`` is the name of the
    validation score the fit keeps its best epoch by.
    """

    name: str
    applies: Callable[[nn.Module], bool]
    fit: Callable[..., FitResult]
    test_metrics: Callable[..., dict[str, Any]]
    figures: Callable[..., list[Path]]
    check_data: Callable[[nn.Module, DataSplits, RunSpec], None]
    monitor: Callable[[RunSpec], str]


def generative_test_metrics(vae: nn.Module, data: DataSplits, figures_dir: Path | None = None, *, num_samples: int,
                            rows: int | None = None, progress: bool = True) -> dict[str, Any]:
    """log p(x) (IS, K = ``num_samples``), ELBO A and B, active units and KL per unit on the first ``rows`` test rows.

    The test split is already in a seeded random order, so its first rows are a random subset. The
    rows are scored on the program's device, in its dtype; ``seconds`` is the evaluation's wall time.
    """
    t0 = time.perf_counter()
    device, dtype = module_placement(vae)
    ev = evaluate.evaluate_vae(vae, data.test[:rows].to(device=device, dtype=dtype), num_samples=num_samples,
                               progress=progress)
    out: dict[str, Any] = {"seconds": time.perf_counter() - t0}
    for key in ("log_likelihood", "elbo_a", "elbo_b"):
        est = getattr(ev, key)
        out[key] = {"mean": est.mean, "stderr": est.stderr, "n": est.n, "num_samples": est.num_samples}
    out["active_units"] = int(ev.active_units)
    out["kl_per_dim"] = [float(v) for v in ev.kl_per_dim]
    return out


def _semi_supervised_test_metrics(program: nn.Module, data: DataSplits, figures_dir: Path | None = None, *,
                                  num_samples: int, rows: int | None = None, progress: bool = True) -> dict[str, Any]:
    test = generative_test_metrics(program, data, num_samples=num_samples, rows=rows, progress=progress)
    test["semi_supervised"] = semisup_results.record(program, data, figures_dir, num_samples=num_samples, rows=rows,
                                                     progress=progress)
    return test


def _conditional_test_metrics(program: nn.Module, data: DataSplits, figures_dir: Path | None = None, *,
                              num_samples: int, rows: int | None = None, progress: bool = True) -> dict[str, Any]:
    from inference.completion.runs import conditional_test_metrics  # imports diagnostics (ArviZ): when used

    return conditional_test_metrics(program, data.test[:rows], num_samples=num_samples, progress=progress)


def _conditional_figures(program: nn.Module, data: DataSplits, fit: FitResult, figures_dir: Path) -> list[Path]:
    from inference.completion.runs import save_conditional_figures

    return save_conditional_figures(program, data, fit.history, figures_dir)


def _generative_figures(program: nn.Module, data: DataSplits, fit: FitResult, figures_dir: Path) -> list[Path]:
    return save_run_figures(program, data, fit.history, figures_dir)


def _check_unlabelled(program: nn.Module, data: DataSplits, spec: RunSpec) -> None:
    """The fit's inputs; and no hidden labels for a program that takes none."""
    train = check_fit_inputs(program, data, spec.train)
    svi.check_program_data(program, data, train)
    _elbo_monitor(spec)
    refuse_labelled_batch(train, f"the program {spec.model.program.name!r}")
    if spec.data.labels is not None:
        raise ConfigError(f"data.labels={spec.data.labels} hides labels for semi-supervised training, but the program "
                          f"{spec.model.program.name!r} takes none; use model.program: m2, or drop data.labels (--labels)")


def _check_semi_supervised(program: nn.Module, data: DataSplits, spec: RunSpec) -> None:
    svi.check_program_data(program, data, check_fit_inputs(program, data, spec.train))
    semisup.check_semi_supervised(program, data, spec.train)


def _elbo_monitor(spec: RunSpec) -> str:
    return monitor_name(spec.train, ("elbo",), "elbo",
                        f"{spec.model.program.name!r} (its fit keeps the best validation ELBO)")


def _classifier_monitor(spec: RunSpec) -> str:
    return monitor_name(spec.train, MONITORS, DEFAULT_MONITOR, "M2")


RUN_KINDS: tuple[RunKind, ...] = (
    RunKind("conditional", is_conditional, svi.fit, _conditional_test_metrics, _conditional_figures,
            _check_unlabelled, _elbo_monitor),
    RunKind("semi_supervised", semisup.is_semi_supervised, semisup.fit, _semi_supervised_test_metrics,
            semisup_results.save_training_figures, _check_semi_supervised, _classifier_monitor),
    RunKind("generative", lambda program: True, svi.fit, generative_test_metrics, _generative_figures,
            _check_unlabelled, _elbo_monitor),
)


def kind_of(program: nn.Module) -> RunKind:
    """The first kind of :data:`RUN_KINDS` that applies to ``program`` (``generative`` applies to all)."""
    return next(kind for kind in RUN_KINDS if kind.applies(program))


__all__ = ["RunKind", "RUN_KINDS", "kind_of", "generative_test_metrics"]
