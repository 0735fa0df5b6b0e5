r"""The one training loop: minibatch epochs over a :class:`~inference.training.state.TrainState`.

Every fitting method (SVI with any objective, MAP, local VI, Monte Carlo EM) hands the loop a
:class:`Task`: its modules, how to build their optimizers, one minibatch ``step`` and, where it
has one, a validation score. The loop owns everything else, once:

* shuffling and dynamic binarization (:func:`pyro_vae.data.batches`, one generator per fit
  whose seed is derived from ``train.seed``), batches of named tensors ``{"x", "idx"}``;
* Pyro's argument validation on the first step of every session (the data were checked once
  against the likelihood before; ``train.validate_every_step`` keeps it on);
* the learning-rate schedule (per epoch, on the task's scheduled optimizers) and the KL weight
  beta_t (per step, :mod:`inference.training.schedules`);
* a non-finite loss or validation score: the modules go back to the end of the last good
  epoch, the last good checkpoint is kept, and TrainingError says what to change;
* the validation score, best-state tracking and early stopping (``train.patience``);
* checkpoints every epoch (``run_dir/checkpoints/last.pt``, ``best.pt``), resume from them,
  or continuation of a state held in memory (``state=``);
* progress (a bar on a terminal, one line per epoch in a log) and the record of every epoch;
* subnormal floats flushed to zero on the CPU for the fit (:mod:`inference.training.subnormals`:
  an M2 whose classifier grew sure of its rows otherwise slows step by step);
* where it runs: the modules on ``train.device`` and every batch moved there
  (:mod:`inference.devices`), and data parallel over the processes of a torchrun job
  (:mod:`inference.training.distributed`: disjoint shards of each global batch, gradients
  averaged by one all-reduce per step, process 0 alone writing checkpoints).

The training rows are ``data.train`` of a DataSplits, or any source of
:mod:`pyro_vae.sources` given as ``data``: a tensor, a map-style Dataset (e.g. a memory-mapped
``.npy``, :class:`~pyro_vae.sources.NpyRows`) or a DataLoader.

Reported numbers, in nats per datapoint: the train objective of an epoch is the mean over its
steps of -loss / N (the annealed bound actually optimized, at that step's beta); the
validation score is whatever the task's ``validate`` returns (the validation ELBO for SVI).

Reproducibility: a fresh fit calls ``pyro.set_rng_seed(seed)`` (torch, random, numpy) and seeds
its batch generator; a fit stopped after epoch k and resumed, from a checkpoint or from its
state in memory, reaches exactly the parameters and history of an uninterrupted fit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pyro
import torch
from torch import nn

from inference.devices import module_placement, resolve_device, to_placement
from inference.progress import EpochLines, bar
from inference.training import distributed
from inference.training.precision import networks_autocast
from inference.training.subnormals import flushing_subnormals
from inference.training.checkpoint import (
    capture_rng, load_checkpoint, restore_rng, restore_state, save_checkpoint, state_to_checkpoint,
)
from inference.training.schedules import kl_beta, set_learning_rate
from inference.training.resume import check_best_monitor, check_resumable, data_info
from inference.training.settings import check_train_spec
from inference.training.state import Best, EpochRecord, FitResult, TrainState, clone_modules, load_modules
from pyro_vae.data import DataSplits
from pyro_vae.sources import Source, as_source
from pyro_vae.errors import ConfigError, TrainingError
from pyro_vae.spec import TrainSpec, spec_to_dict

logger = logging.getLogger(__name__)

Batch = Mapping[str, torch.Tensor]
_NON_FINITE = re.compile(r"\b(nan|inf)\b", re.IGNORECASE)


class StepResult(NamedTuple):
    """One minibatch update: its loss (scaled to the data set), the datapoint evaluations it spent, extra numbers."""

    loss: float
    samples: int
    stats: Mapping[str, float] = {}


StepFn = Callable[[TrainState, Batch, float], StepResult]  # (state: optimizers, generator; batch; beta)


def mean_stats(steps: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean of every stat over an epoch's steps (the default summary of :class:`Task`)."""
    keys = {k for s in steps for k in s}
    return {k: statistics.fmean(s[k] for s in steps if k in s) for k in sorted(keys)}


@dataclass(frozen=True)
class Task:
    """What a fitting method gives the loop.

    ``modules``: every module fitted and checkpointed, the program under ``"program"``;
    ``make_optimizers(train)``: fresh optimizers by name; ``step(state, batch, beta)``: one
    minibatch update with the state's optimizers (and its generator, for methods that draw
    random numbers of their own); ``batch`` holds ``"x"`` and ``"idx"``, ``beta`` is the KL weight;
    ``validate()``: the validation score (higher is better) or None for none; ``monitor``: its
    name (``train.monitor`` must be None or this); ``report()``: more numbers for the epoch's ``stats``, computed with the validation (e.g.
    the ELBO's terms); ``scheduled``: the optimizers whose learning rate follows ``train.lr_schedule``;
    ``summarize``: an epoch's step stats -> the record's ``stats``; ``label``: progress text;
    ``batches(data, train, generator)``: one epoch's minibatches (None: the source's own epoch over
    ``data.train``; semi-supervised M2 mixes labelled rows in); KL warm-up counts ceil(N / batch_size) steps an epoch;
    ``shardable``: whether the task may run on several processes (its step is a :func:`gradient_step`,
    it holds no per-datapoint state and draws its batches from the source;
    :mod:`inference.training.distributed`).
    """

    modules: Mapping[str, nn.Module]
    make_optimizers: Callable[[TrainSpec], dict[str, torch.optim.Optimizer]]
    step: StepFn
    validate: Callable[[], float] | None = None
    monitor: str = "elbo"
    report: Callable[[], Mapping[str, float]] | None = None
    scheduled: tuple[str, ...] = ("theta",)
    summarize: Callable[[Sequence[Mapping[str, float]]], Mapping[str, float]] = mean_stats
    label: str = "fit"
    batches: Callable[[DataSplits, TrainSpec, torch.Generator], Iterable[Batch]] | None = None
    shardable: bool = False


def generator_seed(seed: int, stream: int = 0x5EED_BA7C) -> int:
    """A 64-bit seed derived from ``seed`` for a named stream (decorrelated from torch's global stream)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0])


def init_state(task: Task, train: TrainSpec) -> TrainState:
    """A fresh state: the task's optimizers, Pyro's RNGs seeded by ``train.seed``, the batch generator seeded from it."""
    pyro.clear_param_store()
    rank = distributed.world()[0]  # process r > 0 of a torchrun job: its own streams, derived from (seed, r)
    pyro.set_rng_seed(train.seed if rank == 0 else generator_seed(train.seed, rank) % 2**32)
    generator = torch.Generator().manual_seed(generator_seed(train.seed))
    return TrainState(dict(task.modules), task.make_optimizers(train), generator)


@dataclass
class _Session:
    """What one call of :func:`fit` tracks besides the state: clock, last good state, checkpoint on disk."""

    train: TrainSpec
    task: Task
    n_train: int
    ckpt_dir: Path | None
    data: dict[str, Any]
    source: Source
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    t_start: float = field(default_factory=time.perf_counter)
    wall_before: float = 0.0
    good: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    good_epoch: int = 0
    ckpt_epoch: int | None = None
    validate_next: bool = True
    allow_data_change: bool = False

    def wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start


def fit(
    task: Task,
    data: DataSplits | Any,
    train: TrainSpec,
    *,
    state: TrainState | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    max_seconds: float | None = None,
    allow_data_change: bool = False,
    callbacks: Sequence[Callable[[TrainState, EpochRecord], None]] = (),
    progress: bool = True,
) -> FitResult:
    """Run ``task`` for ``train.epochs`` epochs in total over ``data.train`` (module docstring).

    ``data``: DataSplits, or the training rows alone (a tensor, Dataset, DataLoader or
    :mod:`pyro_vae.sources` source; the task validates on its own data, if any).

    ``state``: continue this in-memory state (from an earlier :func:`fit`'s result) instead of
    starting afresh; ``resume``: continue from ``run_dir/checkpoints/last.pt``; ``max_seconds``:
    stop after the first step that ends past this much fitting time (cumulative over the
    state's sessions; ``stopped="budget"``); ``allow_data_change``: resume although the data's
    values differ from the checkpoint's (same shape); ``callbacks``: called as ``callback(state,
    record)`` after every epoch (trackers such as :class:`~inference.training.tracking.TensorBoardTracker`). At the end the modules hold the best-validation
    parameters (or the last ones without a validation score).

    Raises TrainingError on a non-finite loss (modules restored to the last good epoch, last
    good checkpoint kept), ConfigError for bad settings or an incompatible checkpoint.
    """
    train = check_train_spec(train)
    source, device = _placement(task, data, train, max_seconds)
    monitor = _check_validation(task, train, data)
    if source.num_rows == 0:
        raise ConfigError("the training split is empty; load more data or lower val/test fractions")
    for module in task.modules.values():
        module.to(device)
    session = _Session(train, task, source.num_rows, Path(run_dir) / "checkpoints" if run_dir else None,
                       _data_info(data, source, run_dir is not None), source, *module_placement(task.modules["program"]),
                       allow_data_change=allow_data_change)
    state = _start(task, train, session, state, resume)
    if state.epoch >= train.epochs or _patience_exhausted(state, train):
        logger.info("%s: at epoch %d of %d, nothing left to train", task.label, state.epoch, train.epochs)
        return FitResult(_finish(state, session), "resumed_complete", monitor)
    session.good, session.good_epoch = clone_modules(state.modules), state.epoch
    stopped = "completed"
    training = {name: m.training for name, m in state.modules.items()}
    progress = progress and distributed.is_main()  # one bar for a torchrun job
    epochs = bar(range(state.epoch + 1, train.epochs + 1), enabled=progress, initial=state.epoch, total=train.epochs,
                 desc=task.label, unit="epoch", leave=False, log_lines=False)
    lines = EpochLines(task.label, train.epochs, enabled=progress)
    precision = contextlib.ExitStack()  # train.mixed_precision: the networks under autocast for the session
    precision.enter_context(networks_autocast(task.modules["program"], train.mixed_precision))
    precision.enter_context(flushing_subnormals())  # subnormal floats cost the CPU ~20x per operation
    try:
        for epoch in epochs:
            state, record, out_of_time = _epoch(state, session, data, epoch, max_seconds)
            state = _end_epoch(state, session, record)
            for callback in callbacks:
                callback(state, record)
            val = "-" if record.val_elbo is None else f"{record.val_elbo:.3f}"
            epochs.set_postfix(train=f"{record.train_elbo:.3f}", val=val)
            lines(epoch, f"train {record.train_elbo:.3f}, validation {val}, {record.seconds:.1f} s")
            if out_of_time:
                stopped = "budget"
                break
            if _patience_exhausted(state, train):
                stopped = "early_stopping"
                logger.info("early stopping after epoch %d: no validation improvement for %d epochs (best: epoch %d)",
                            epoch, train.patience, state.best.epoch)
                break
    finally:
        precision.close()
        epochs.close()
        for name, was in training.items():
            state.modules[name].train(was)
    return FitResult(_finish(state, session), stopped, monitor)


def _check_validation(task: Task, train: TrainSpec, data: Any) -> str | None:
    """The name of the task's validation score (None without one); ConfigError for patience without one or
    for a ``train.monitor`` the task does not offer."""
    n_val = int(data.val.shape[0]) if isinstance(data, DataSplits) else int(task.validate is not None)
    if train.patience is not None and (n_val == 0 or task.validate is None):
        raise ConfigError(
            "train.patience (early stopping) needs a validation split and a method with a validation score; "
            "set data.val_fraction > 0, or patience=None"
        )
    if train.monitor is not None and (n_val == 0 or task.validate is None):
        raise ConfigError(f"train.monitor={train.monitor!r} names a validation score, but {task.label} has none here "
                          "(no validation split, or a method without one); set data.val_fraction > 0, or monitor=None")
    if train.monitor is not None and train.monitor != task.monitor:
        raise ConfigError(f"train.monitor={train.monitor!r} is not a validation score of {task.label}; its score is "
                          f"{task.monitor!r}: set monitor to {task.monitor!r} or null")
    return task.monitor if task.validate is not None else None


def _placement(task: Task, data: Any, train: TrainSpec, max_seconds: float | None) -> tuple[Source, torch.device]:
    """Where the fit runs: its source of training rows, its device, and (under torchrun) its process group."""
    source = as_source(data.train, binarize=data.binarize == "dynamic") if isinstance(data, DataSplits) else as_source(data)
    device = resolve_device(train.device, name="train.device")
    distributed.init_from_env(device)  # started by torchrun: join its process group (nothing otherwise)
    distributed.check_shardable(task.label, task.shardable, max_seconds)
    return source, device


def _start(task: Task, train: TrainSpec, session: _Session, state: TrainState | None, resume: bool) -> TrainState:
    """The state to continue: given in memory, loaded from ``last.pt``, or fresh."""
    if state is not None:
        if resume:
            raise ConfigError("pass either state= (continue in memory) or resume=True (continue from disk), not both")
        session.wall_before = state.wall_time
        if state.last is not None:  # the fit ended on its best epoch: continue from its last one
            load_modules(state.modules, state.last)
        if state.rng is not None:  # draws made since (checks, scoring) must not shift the fit
            restore_rng(state.rng)
        if state.best is not None:
            check_best_monitor(state.best.monitor, task.monitor, "the given state")
        return state.replace(last=None)
    fresh = init_state(task, train)
    if not resume:
        return fresh
    if session.ckpt_dir is None:
        raise ConfigError("resume=True needs run_dir, the folder of the run to continue")
    path = session.ckpt_dir / "last.pt"
    ckpt = load_checkpoint(path)
    check_resumable(ckpt, train, session.data, path, allow_data_change=session.allow_data_change)
    state = restore_state(fresh, ckpt, path)
    if state.best is not None:
        check_best_monitor(state.best.monitor, task.monitor, str(path))
    rank, size = distributed.world()
    streams = ckpt.get("rng_ranks")
    if streams is not None and len(streams) == size:  # every process continues its own streams
        restore_rng(streams[rank])
    elif rank > 0:  # another number of processes than the checkpoint's: fresh streams per process
        pyro.set_rng_seed(generator_seed(train.seed + state.epoch, rank) % 2**32)
    session.wall_before, session.ckpt_epoch = state.wall_time, state.epoch
    logger.info("resuming %s after epoch %d of %d", path, state.epoch, train.epochs)
    return state


def _epoch(state: TrainState, session: _Session, data: DataSplits, epoch: int,
           max_seconds: float | None) -> tuple[TrainState, EpochRecord, bool]:
    """One epoch of steps; returns the state, the epoch's record and whether the time budget ran out."""
    train, task, n = session.train, session.task, session.n_train
    t_epoch = time.perf_counter()
    for module in state.modules.values():
        module.train()
    lr = set_learning_rate([state.optimizers[k] for k in task.scheduled if k in state.optimizers], train, epoch)
    steps_per_epoch = session.source.steps(train.batch_size)
    warmup = train.kl_warmup_epochs * steps_per_epoch
    total, beta, step, samples, stats, out_of_time = 0.0, 1.0, 0, state.samples, [], False
    rank, size = distributed.world()
    stream = (task.batches(data, train, state.generator) if task.batches is not None else
              session.source.epoch(train.batch_size, state.generator, rank=rank, world=size, epoch=epoch))
    for step, batch in enumerate(stream, start=1):
        beta = kl_beta((epoch - 1) * steps_per_epoch + step, warmup)
        batch = to_placement(batch, session.device, session.dtype)
        result = _guarded_step(state, session, batch, beta, epoch, step, steps_per_epoch)
        total += result.loss
        samples += result.samples
        stats.append(result.stats)
        if max_seconds is not None and session.wall() > max_seconds:
            out_of_time = True
            break
    if not _parameters_finite(state):
        _diverged(state, session, epoch, step, steps_per_epoch, float("nan"))  # a NaN gradient in the last step
    summary = dict(task.summarize(stats)) if any(stats) else {}
    if out_of_time and step < steps_per_epoch:
        summary["batches"] = float(step)
    val = _validate(state, session, epoch, step, steps_per_epoch)
    if session.task.report is not None:
        with torch.no_grad(), pyro.validation_enabled(False):
            summary.update(session.task.report())
    record = EpochRecord(epoch, -total / step / n, val, beta, time.perf_counter() - t_epoch, lr, summary)
    return state.replace(samples=samples), record, out_of_time


def _parameters_finite(state: TrainState) -> bool:
    """Whether every parameter of every module of the fit is finite."""
    return all(bool(torch.isfinite(p).all()) for m in state.modules.values() for p in m.parameters())


def _guarded_step(state: TrainState, session: _Session, batch: Batch, beta: float,
                  epoch: int, step: int, steps_per_epoch: int) -> StepResult:
    """The task's step under Pyro's validation (first step of a session), with the non-finite checks."""
    train = session.train
    try:
        with pyro.validation_enabled(session.validate_next or train.validate_every_step):
            result = session.task.step(state, batch, beta)
    except ValueError as err:  # validation rejecting a distribution's NaN/inf arguments
        if session.validate_next or (_parameters_finite(state) and not _NON_FINITE.search(str(err))):
            raise  # first step of the session: a model/shape problem, Pyro's message says it best
        _diverged(state, session, epoch, step, steps_per_epoch, float("nan"), cause=err)
    session.validate_next = False
    if not math.isfinite(result.loss):
        _diverged(state, session, epoch, step, steps_per_epoch, result.loss)
    return result


def _validate(state: TrainState, session: _Session, epoch: int, step: int, steps_per_epoch: int) -> float | None:
    """The task's validation score in eval mode without gradients (None without one)."""
    if session.task.validate is None:
        return None
    for module in state.modules.values():
        module.eval()
    with torch.no_grad(), pyro.validation_enabled(session.train.validate_every_step):
        value = session.task.validate()
    if value is not None and not math.isfinite(value):
        _diverged(state, session, epoch, step, steps_per_epoch, value, where="validation")
    return value


def _end_epoch(state: TrainState, session: _Session, record: EpochRecord) -> TrainState:
    """Record the epoch, track the best state, write the checkpoints, remember the good state."""
    improved = record.val_elbo is not None and (state.best is None or record.val_elbo > state.best.val_elbo)
    best = Best(record.epoch, record.val_elbo, clone_modules(state.modules), session.task.monitor) if improved \
        else state.best
    state = state.replace(epoch=record.epoch, history=state.history + (record,), best=best, wall_time=session.wall(),
                          rng=capture_rng())
    streams = distributed.gather_rng(capture_rng) if session.ckpt_dir is not None else None
    if session.ckpt_dir is not None and distributed.is_main():
        ckpt = state_to_checkpoint(state, spec=spec_to_dict(session.train), data=session.data)
        if streams is not None:
            ckpt["rng_ranks"] = streams
        save_checkpoint(session.ckpt_dir / "last.pt", ckpt)
        if improved:
            save_checkpoint(session.ckpt_dir / "best.pt", ckpt)
    if session.ckpt_dir is not None:
        session.ckpt_epoch = record.epoch
        distributed.synchronize()  # no process ends the epoch before its checkpoint is on disk (one that dies next loses nothing)
    session.good, session.good_epoch = clone_modules(state.modules), record.epoch
    logger.debug("epoch %d: train %.4f, validation %s, beta %.3g", record.epoch, record.train_elbo, record.val_elbo,
                 record.beta)
    return state


def _data_info(data: Any, source: Source, with_fingerprint: bool) -> dict[str, Any]:
    """What a checkpoint records of the data: :func:`data_info` of DataSplits; for another source its name,
    rows, features and binarization (no fingerprint: hashing data that do not fit in memory costs a pass)."""
    if isinstance(data, DataSplits):
        return data_info(data, with_fingerprint=with_fingerprint)
    return {"name": source.name, "n_train": source.num_rows, "n_val": 0, "feature_dim": source.feature_dim,
            "binarize": "dynamic" if source.binarize else "none"}


def _patience_exhausted(state: TrainState, train: TrainSpec) -> bool:
    return train.patience is not None and state.best is not None and state.epoch - state.best.epoch >= train.patience


def _finish(state: TrainState, session: _Session) -> TrainState:
    """Load the best-validation modules (if any) and stamp the cumulative wall time."""
    if state.best is not None:
        state = state.replace(last=clone_modules(state.modules))
        load_modules(state.modules, state.best.modules)
        logger.info("restored the parameters of epoch %d (best validation score %.4f)", state.best.epoch,
                    state.best.val_elbo)
    return state.replace(wall_time=session.wall())


def _diverged(state: TrainState, session: _Session, epoch: int, step: int, steps_per_epoch: int, value: float,
              *, cause: BaseException | None = None, where: str = "loss") -> None:
    """Restore the last good modules and raise TrainingError explaining what to change."""
    load_modules(state.modules, session.good)
    train, good_epoch = session.train, session.good_epoch
    restored = f"the end of epoch {good_epoch}" if good_epoch > 0 else "their initial values"
    if session.ckpt_dir is not None and session.ckpt_epoch is not None:
        kept = f"the last good checkpoint {str(session.ckpt_dir / 'last.pt')!r} (epoch {session.ckpt_epoch}) was kept"
    else:
        kept = "no checkpoint of this run had been written yet"
    what = "validation score" if where == "validation" else "loss"
    at = f"after epoch {epoch}" if where == "validation" else f"at epoch {epoch}, step {step}/{steps_per_epoch}"
    raise TrainingError(
        f"training diverged: non-finite {what} ({value}) {at} ({session.task.label}, lr {train.lr}, "
        f"optimizer {train.optimizer!r}); {kept}, and the parameters were restored to {restored}. "
        "Try a lower learning rate (train.lr, --lr), optimizer='clipped_adam' (--optimizer clipped_adam: clips "
        "gradients), KL warm-up (train.kl_warmup_epochs > 0, --kl-warmup), and check the data's scaling matches the likelihood "
        "(e.g. values in [0, 1] for bernoulli, standardized features for gaussian)"
    ) from cause


def gradient_step(loss: Callable[[Batch, float], torch.Tensor], samples_per_row: int = 1) -> StepFn:
    """A :data:`StepFn` for gradient methods: ``loss(batch, beta)``, then one step of every optimizer.

    The optimizers step only when the loss is finite (the loop then restores the last good state).
    Under torchrun the gradient is averaged over the processes by one all-reduce
    (:func:`inference.training.distributed.averaged_step`), and the loss and rows are the global batch's.
    """

    def step(state: TrainState, batch: Batch, beta: float) -> StepResult:
        if distributed.world()[1] > 1:
            value, rows = distributed.averaged_step(loss, batch, beta, state.optimizers)
            return StepResult(value, rows * samples_per_row if math.isfinite(value) else 0)
        value_t = loss(batch, beta)
        value = value_t.item()
        if not math.isfinite(value):
            return StepResult(value, 0)
        for optimizer in state.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        value_t.backward()
        for optimizer in state.optimizers.values():
            optimizer.step()
        return StepResult(value, int(batch["x"].shape[0]) * samples_per_row)

    return step


__all__ = ["Task", "StepResult", "StepFn", "fit", "init_state", "gradient_step", "mean_stats", "generator_seed",
           "Batch"]
