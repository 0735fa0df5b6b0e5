r"""Stochastic variational inference: fit a program's model and guide by minimizing a registered objective.

For a minibatch of B of the N training rows and the KL weight beta_t of step t, each step
minimizes

    loss = objective.differentiable_loss(program.model, program.guide, **batch, num_data=N, beta=beta_t)

over all of the program's parameters (theta and phi), with the optimizer named by
``train.optimizer``; the objectives (:mod:`inference.objectives`) are SGVB estimators A
(``"trace"``, Pyro's ``Trace_ELBO``) and B (``"meanfield"``, ``TraceMeanField_ELBO``), the
IWAE bound (``"iwae"``) and reweighted wake-sleep (``"rws"``). Each is unbiased (A, B) or a
bound (IWAE, RWS's value) of the full-data objective, because the program's data plate
scales the minibatch by N / B. The validation score after each epoch is

    val = -(1 / N_val) sum_{chunks of data.val} loss(chunk; beta = 1, no minibatch scaling),

the same objective's ELBO (IWAE bound for iwae and rws) per held-out datapoint; its two terms,
reconstruction and KL (:func:`elbo_terms`), go to the epoch's record for the ELBO figure. The loop,
checkpoints, resume, schedules and NaN handling are :mod:`inference.training`'s.

Where it runs: the program on ``train.device``, the validation chunks moved there one at a time;
under torchrun each process scores its slice of the validation rows and the sums are reduced
(:mod:`inference.training.distributed`). The training rows may be a Dataset or DataLoader
(:mod:`pyro_vae.sources`) instead of DataSplits, with an optional validation tensor ``val``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from pyro.infer import ELBO
from torch import nn

from inference.devices import module_placement, place, resolve_device
from inference.log_weights import log_weights
from inference.objectives import check_objective, describe_kl, make_objective
from inference.training import EpochRecord, FitResult, Task, TrainState, gradient_step, make_optimizer
from inference.training import fit as run_loop
from inference.training.checks import check_splits
from inference.training.distributed import reduce_sums, shard_rows
from inference.training.settings import as_train_spec, check_fit_inputs, refuse_labelled_batch
from pyro_vae.checks import boolean, float_rows, got, optional_positive_float, path_like
from pyro_vae.data import DataSplits
from pyro_vae.programs import check_program
from pyro_vae.sources import as_source
from pyro_vae.errors import ConfigError
from pyro_vae.spec import TrainSpec

logger = logging.getLogger(__name__)

VAL_CHUNK = 1000  # validation rows per forward pass


def program_inputs(program: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The named tensors of ``batch`` that the program declares it takes (``program.inputs``, default ``("x",)``)."""
    return {name: batch[name] for name in getattr(program, "inputs", ("x",))}


def _chunks(program: nn.Module, x: torch.Tensor, chunk_size: int):
    """This process's rows of ``x`` (:func:`~inference.training.distributed.shard_rows`), in chunks on the program's device and dtype."""
    device, dtype = module_placement(program)
    mine = x[shard_rows(x.shape[0])]
    for start in range(0, mine.shape[0], chunk_size):
        yield mine[start:start + chunk_size].to(device=device, dtype=dtype)


@torch.no_grad()
def mean_elbo(program: nn.Module, x: torch.Tensor, objective: ELBO, *, chunk_size: int = VAL_CHUNK) -> float:
    """(1/N) sum_i ELBO_i over the rows of ``x``: -sum of ``objective``'s loss over chunks / N (beta = 1, unscaled)."""
    total = 0.0
    for chunk in _chunks(program, x, chunk_size):
        total += float(objective.differentiable_loss(program.model, program.guide, x=chunk))
    return -reduce_sums([total])[0] / x.shape[0]


@torch.no_grad()
def elbo_terms(program: nn.Module, x: torch.Tensor, *, chunk_size: int = VAL_CHUNK) -> dict[str, float]:
    """The validation ELBO's two terms per datapoint, one draw z_i ~ q(z | x_i) each (:mod:`inference.log_weights`).

    val_reconstruction = (1/N) sum_i log p(x_i | z_i);  val_kl = (1/N) sum_i [log q(z_i | x_i) - log p(z_i)],
    the single-sample Monte Carlo KL, whatever the program's sites (no closed form needed).
    """
    recon = kl = 0.0
    for chunk in _chunks(program, x, chunk_size):
        lw = log_weights(program.model, program.guide, 1, x=chunk, site_scales=False)
        recon += float(lw.log_lik.sum())
        kl += float((lw.log_q - (lw.log_p - lw.log_lik)).sum())
    recon, kl = reduce_sums([recon, kl])
    return {"val_reconstruction": recon / x.shape[0], "val_kl": kl / x.shape[0]}


def svi_task(program: nn.Module, data: DataSplits | Any, train: TrainSpec, *, val: torch.Tensor | None = None) -> Task:
    """The :class:`~inference.training.Task` of SVI: one optimizer ("theta") over every parameter of ``program``.

    ``data``: DataSplits, or the training rows (tensor, Dataset, DataLoader) with ``val`` the validation rows.
    """
    objective = make_objective(train.elbo, train.num_particles)
    if isinstance(data, DataSplits):
        n_train, val = int(data.train.shape[0]), data.val
    else:
        n_train, val = as_source(data).num_rows, (val if val is not None else torch.empty(0, 0))

    def loss(batch: Mapping[str, torch.Tensor], beta: float) -> torch.Tensor:
        return objective.differentiable_loss(program.model, program.guide, **program_inputs(program, batch),
                                             num_data=n_train, beta=beta)

    return Task(
        modules={"program": program},
        make_optimizers=lambda t: {"theta": make_optimizer(program, t)},
        step=gradient_step(loss, samples_per_row=train.num_particles),
        validate=(lambda: mean_elbo(program, val, objective)) if val.shape[0] else None,
        report=(lambda: elbo_terms(program, val)) if val.shape[0] else None,
        label=f"svi {train.elbo}",
        shardable=True,
    )


def check_program_data(program: nn.Module, data: DataSplits, train: TrainSpec) -> None:
    """What SVI refuses before training, beyond the arguments' own checks (``check_fit_inputs``): a split
    outside the program's likelihood, and an objective the guide cannot serve (traced once, under
    ``fork_rng``: the global RNG streams are untouched)."""
    check_splits(program, data)
    _check_guide(program, data.train[:2], train)


def _check_guide(program: nn.Module, x: torch.Tensor, train: TrainSpec) -> None:
    """The objective against the guide, traced once on ``x`` (on the program's device) under ``fork_rng``."""
    device, dtype = module_placement(program)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        check_objective(make_objective(train.elbo, train.num_particles), train.elbo, program.guide,
                        x=x.to(device=device, dtype=dtype))


def _check_source_inputs(program: nn.Module, data: Any, train: Any, val: Any) -> tuple[TrainSpec, Any, Any]:
    """The inputs of a fit on a Dataset / DataLoader / tensor of training rows: spec, source, validation rows."""
    train = as_train_spec(train)
    check_program(program, "vae")
    source = as_source(data)
    if train.batch_size > source.num_rows:
        raise ConfigError(f"train.batch_size={train.batch_size} is larger than the {source.num_rows} training rows; "
                          f"set batch_size to at most {source.num_rows}")
    if val is not None:
        val = float_rows("val", val)
        program.check_data(val, name="validation rows (val)")
    first = next(iter(source.epoch(min(2, source.num_rows), torch.Generator().manual_seed(0), shuffle=False)))["x"]
    program.check_data(first, name="training rows")
    _check_guide(program, first, train)
    return train, source, val


def fit(
    vae: nn.Module,
    data: DataSplits,
    train: TrainSpec | Mapping[str, Any],
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    state: TrainState | None = None,
    max_seconds: float | None = None,
    allow_data_change: bool = False,
    callbacks: Sequence[Callable[[TrainState, EpochRecord], None]] = (),
    progress: bool = True,
    device: str | torch.device | None = None,
    val: torch.Tensor | None = None,
) -> FitResult:
    """Fit ``vae`` (any program) to ``data.train`` by SVI with the objective ``train.elbo`` (module docstring).

    ``data``: DataSplits, or the training rows alone: a tensor, a map-style Dataset (e.g.
    :class:`pyro_vae.sources.NpyRows`, memory-mapped), a DataLoader or a :mod:`pyro_vae.sources`
    source, with ``val`` the validation rows (a tensor) or None. ``device``: where to train
    (overrides ``train.device``; :func:`inference.devices.resolve_device`).

    ``run_dir``: write ``run_dir/checkpoints/last.pt`` (and ``best.pt``) after every epoch;
    ``resume``: continue from ``last.pt`` up to ``train.epochs`` epochs in total; ``state``:
    continue the in-memory state of an earlier result (``result.state``) instead;
    ``allow_data_change``: resume although the data's values changed (same shape); ``callbacks``:
    called after every epoch with (state, record), e.g. a TensorBoard tracker.
    At the end the program holds the best-validation parameters (or the last ones).

    Every argument is checked before training (ConfigError or DataError naming it); a
    ``train.batch_size`` larger than the training rows is refused, not shrunk. Raises TrainingError
    on a non-finite loss (last good parameters and checkpoint kept), ConfigError for bad settings or
    an incompatible checkpoint, DataError for data outside the likelihood's support,
    UnsupportedModelError for an objective the guide cannot serve.
    """
    if _is_rows(data):
        train, data, val = _check_source_inputs(vae, data, train, val)
    else:
        if val is not None:
            raise ConfigError("val= goes with training rows given alone (a Dataset or DataLoader); DataSplits "
                              "carry their own validation split: drop val")
        train = check_fit_inputs(vae, data, train)
    refuse_labelled_batch(train, f"svi.fit of a {type(vae).__name__}")
    if device is not None:
        train = dataclasses.replace(train, device=str(resolve_device(device, name="device")))
    place(vae, train.device, name="device" if device is not None else "train.device")
    path_like("run_dir", run_dir, optional=True)
    for name, flag in (("resume", resume), ("allow_data_change", allow_data_change), ("progress", progress)):
        boolean(name, flag)
    if state is not None and not isinstance(state, TrainState):
        raise ConfigError(f"state must be None or the TrainState of an earlier fit (result.state), {got(state)}")
    optional_positive_float("max_seconds", max_seconds)
    if isinstance(data, DataSplits):
        check_program_data(vae, data, train)
    if state is None:
        logger.info(
            "data checked once against the likelihood's support; Pyro's argument validation runs on the first "
            "step only%s", " and then on every step" if train.validate_every_step
            else " (set train.validate_every_step=True to check every step)",
        )
        if train.elbo == "meanfield" and hasattr(vae, "analytic_kl"):
            logger.info("estimator B (meanfield) uses %s", describe_kl(vae))
    task = svi_task(vae, data, train, val=val)
    return run_loop(task, data, train, state=state, run_dir=run_dir, resume=resume, max_seconds=max_seconds,
                    allow_data_change=allow_data_change, callbacks=callbacks, progress=progress)


def _is_rows(data: Any) -> bool:
    """Whether ``data`` is training rows alone (a Dataset, DataLoader or source) rather than DataSplits."""
    from torch.utils.data import DataLoader, Dataset

    from pyro_vae.sources import LoaderSource, TensorSource

    return isinstance(data, (Dataset, DataLoader, TensorSource, LoaderSource))


__all__ = ["fit", "check_program_data", "svi_task", "mean_elbo", "elbo_terms", "program_inputs", "VAL_CHUNK"]
