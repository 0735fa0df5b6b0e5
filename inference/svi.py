r"""Stochastic variational inference for a VAE with the SGVB estimators (Kingma & Welling 2014).

For a minibatch x_1..x_B of the N training rows, L particles z_il = mu_phi(x_i) + L_phi(x_i)
eps_il with eps_il ~ N(0, I) (the reparameterization trick), and a KL weight beta in (0, 1]:

* estimator A, objective ``"trace"`` (``Trace_ELBO``)::

    L^A = (N / B) sum_i (1/L) sum_l [ log p_theta(x_i | z_il)
                                      + beta (log p(z_il) - log q_phi(z_il | x_i)) ]

* estimator B, objective ``"meanfield"`` (``TraceMeanField_ELBO``)::

    L^B = (N / B) sum_i [ (1/L) sum_l log p_theta(x_i | z_il) - beta KL(q_phi(z | x_i) || p(z)) ]

  with the KL in closed form where torch registers one for (guide, prior) and estimated by
  Monte Carlo as in A otherwise (see :func:`kl_mode`).

Both are unbiased for the full-data ELBO (at beta = 1). The loss is -L, computed by
``objective.differentiable_loss(vae.model, vae.guide, x, num_data=N, beta=beta)`` and
minimized with a torch optimizer on ``vae.parameters()`` (Adam, or Pyro's ClippedAdam, which
clamps every gradient coordinate to [-clip_norm, clip_norm]). Particles are vectorized
(``vectorize_particles=True``, ``max_plate_nesting=1``).

Reported numbers, in nats per datapoint:

* train ELBO of an epoch: the mean over its minibatches of -loss / N, i.e. the annealed bound
  actually optimized (at that step's beta);
* validation ELBO: -sum(loss over ``data.val``) / N_val, same objective, beta = 1, no grad.

KL warm-up: at global step t (1-based) of a run with W = ``kl_warmup_epochs`` x steps per
epoch warm-up steps, beta_t = min(1, t / W); beta_t = 1 when W = 0 (see :func:`kl_beta`).

Reproducibility and resume: a fresh run calls ``pyro.set_rng_seed(seed)`` (torch, random,
numpy) and seeds a dedicated ``torch.Generator`` (seed derived from ``seed`` by
``numpy.random.SeedSequence``, so its stream is not a copy of the global one) that shuffles
minibatches and draws dynamic binarizations. With ``run_dir``, every epoch writes
``run_dir/checkpoints/last.pt`` atomically (and ``best.pt`` when the validation ELBO
improves; layout in :mod:`inference.checkpoint`). ``resume=True`` restores module, optimizer,
RNG, batch-generator state and history from ``last.pt``, so that a run stopped after epoch k
and resumed reaches exactly the parameters and history of an uninterrupted run. ``epochs`` is
the total number of epochs: resuming with a larger ``epochs`` extends a finished run.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyro
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim.clipped_adam import ClippedAdam
from torch.distributions import Independent
from tqdm.auto import tqdm

from inference.checkpoint import FORMAT, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from pyro_vae.data import DataSplits, batches
from pyro_vae.errors import ConfigError, DataError, TrainingError
from pyro_vae.registry import Registry
from pyro_vae.spec import TrainSpec, spec_to_dict
from pyro_vae.vae import VAE

logger = logging.getLogger(__name__)

OBJECTIVES: Registry[ELBO] = Registry("objective")

_NON_FINITE = re.compile(r"\b(nan|inf)\b", re.IGNORECASE)
VAL_CHUNK = 1000  # validation rows per forward pass
# TrainSpec fields that may change between a run and its resumption (they do not change the math
# of the epochs already done).
RESUMABLE_CHANGES = ("epochs", "patience", "validate_every_step")


@OBJECTIVES.register("trace")
def trace_objective(num_particles: int = 1) -> ELBO:
    """SGVB estimator A: log p(x, z) - log q(z | x) at z ~ q(z | x) (Trace_ELBO)."""
    return Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)


@OBJECTIVES.register("meanfield")
def meanfield_objective(num_particles: int = 1) -> ELBO:
    """SGVB estimator B: E_q[log p(x | z)] - KL(q || p), KL analytic where registered (TraceMeanField_ELBO)."""
    return TraceMeanField_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: ELBOs in nats per datapoint, beta at its last step, wall seconds (not reproducible)."""

    epoch: int
    train_elbo: float
    val_elbo: float | None
    beta: float
    seconds: float


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit`.

    ``vae`` holds the best-validation-ELBO parameters (epoch ``best_epoch``) when there is a
    validation split, else the last ones. ``wall_time`` (seconds) and ``samples_evaluated``
    (training rows processed x particles, i.e. datapoint-gradient evaluations) are cumulative
    over a run and its resumptions. ``stopped`` is "completed", "early_stopping" or
    "resumed_complete" (the checkpoint was already finished: nothing was trained).
    """

    vae: VAE
    history: tuple[EpochRecord, ...]
    best_epoch: int
    best_val_elbo: float | None
    wall_time: float
    samples_evaluated: int
    stopped: str


def make_objective(name: str, num_particles: int = 1) -> ELBO:
    """The Pyro ELBO registered as ``name`` (ConfigError listing the valid names otherwise)."""
    return OBJECTIVES.build(name, num_particles)


def kl_beta(step: int, warmup_steps: int) -> float:
    """KL weight at global step ``step`` (1-based): beta = min(1, step / warmup_steps); 1 if no warm-up."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)


def kl_mode(vae: VAE) -> str:
    """How estimator B gets KL(q(z|x) || p(z)): ``"analytic"`` (closed form registered) or ``"monte_carlo"``."""
    return "analytic" if vae.analytic_kl() else "monte_carlo"


def describe_kl(vae: VAE) -> str:
    """Human-readable :func:`kl_mode`, naming the distributions when no closed form exists."""
    if kl_mode(vae) == "analytic":
        return "analytic KL"
    with torch.no_grad():
        q = vae.family(torch.zeros(1, vae.family.param_size))
        p = vae.prior()
    return f"Monte Carlo KL (no closed form registered for {_dist_name(q)} -> {_dist_name(p)})"


def _dist_name(d: torch.distributions.Distribution) -> str:
    if isinstance(d, Independent):
        return f"{_dist_name(d.base_dist)}.to_event({d.reinterpreted_batch_ndims})"
    return type(d).__name__


def make_optimizer(vae: VAE, train: TrainSpec) -> torch.optim.Optimizer:
    """torch.optim.Adam(lr) or pyro's ClippedAdam(lr, clip_norm) over ``vae.parameters()``."""
    params = list(vae.parameters())
    if not params:
        raise ConfigError("this VAE has no trainable parameters; nothing for SVI to fit")
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr)
    if train.optimizer == "clipped_adam":
        return ClippedAdam(params, lr=train.lr, clip_norm=train.clip_norm)
    raise ConfigError(f"unknown optimizer {train.optimizer!r}; valid optimizers are: adam, clipped_adam")


@torch.no_grad()
def mean_elbo(
    vae: VAE, x: torch.Tensor, objective: ELBO, *, validate: bool = False, chunk_size: int = VAL_CHUNK
) -> float:
    """(1/N) sum_i ELBO_i over the rows of ``x`` (beta = 1, no minibatch scaling), in chunks.

    The ELBO of each chunk is ``-objective.differentiable_loss(model, guide, chunk)``.
    """
    was_training = vae.training
    vae.eval()
    total = 0.0
    try:
        with pyro.validation_enabled(validate):
            for start in range(0, x.shape[0], chunk_size):
                total += float(objective.differentiable_loss(vae.model, vae.guide, x[start:start + chunk_size]))
    finally:
        vae.train(was_training)
    return -total / x.shape[0]


def _check_data(vae: VAE, data: DataSplits) -> None:
    """Check every split once against the likelihood's support (so the hot loop need not)."""
    if data.train.shape[0] == 0:
        raise DataError("the training split is empty; load more data or lower val/test fractions")
    vae.check_data(data.val, name="validation data")
    vae.check_data(data.test, name="test data")
    if data.binarize == "dynamic":
        x = data.train
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != vae.data_dim:
            raise DataError(f"training data must be a float tensor (N, {vae.data_dim}), got {tuple(x.shape)}")
        inside = torch.isfinite(x) & (x >= 0) & (x <= 1)
        if not bool(inside.all()):
            row, col = (int(i) for i in (~inside).nonzero()[0])
            raise DataError(
                f"dynamic binarization draws Bernoulli(x) but training value {float(x[row, col]):.4g} "
                f"(row {row}, feature {col}) is not a probability in [0, 1]; rescale the data or "
                "use binarize='none'"
            )
        # The draws are 0/1 vectors: the likelihood must accept both values in every feature.
        binary = torch.stack([torch.zeros(vae.data_dim), torch.ones(vae.data_dim)])
        vae.check_data(binary, name="dynamically binarized training data")
    else:
        vae.check_data(data.train, name="training data")


def _generator_seed(seed: int) -> int:
    """A 64-bit seed for the batch generator derived from ``seed`` (decorrelated from torch's global stream)."""
    return int(np.random.SeedSequence([seed, 0x5EED_BA7C]).generate_state(1, dtype=np.uint64)[0])


def _clone_state(vae: VAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in vae.state_dict().items()}


def _params_finite(vae: VAE) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in vae.parameters())


class _Run:
    """Mutable bookkeeping of one training run (what a checkpoint stores besides module states)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.history: list[EpochRecord] = []
        self.best_epoch: int | None = None
        self.best_val: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.samples = 0
        self.wall_before = 0.0  # seconds spent in earlier sessions of this run


def fit(
    vae: VAE,
    data: DataSplits,
    train: TrainSpec | Mapping[str, Any],
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> FitResult:
    """Fit ``vae`` to ``data.train`` by SVI, maximizing estimator A or B of the ELBO (module docstring).

    Each step minimizes loss = -L^{A|B}(x_batch; N, beta) with Adam/ClippedAdam. After each
    epoch the validation ELBO (1/N_val) sum_i ELBO_i is computed; with ``train.patience``,
    training stops after ``patience`` epochs without improvement. At the end the VAE holds
    the best-validation parameters (or the last ones without a validation split).

    ``run_dir``: write ``run_dir/checkpoints/last.pt`` (and ``best.pt``) after every epoch.
    ``resume``: continue from ``last.pt`` up to ``train.epochs`` total epochs.

    Raises TrainingError on a non-finite loss (the VAE is restored to the end of the last
    good epoch and the last good checkpoint is kept), ConfigError for bad settings or a
    missing/incompatible checkpoint, DataError for data outside the likelihood's support.
    """
    train = train if isinstance(train, TrainSpec) else TrainSpec(**dict(train))
    t_start = time.perf_counter()
    objective = make_objective(train.elbo, train.num_particles)
    if not 0 <= train.seed < 2**32:
        raise ConfigError(f"train.seed={train.seed} must be in [0, 2**32) (numpy's seed range)")
    n_train, n_val = int(data.train.shape[0]), int(data.val.shape[0])
    if train.patience is not None and n_val == 0:
        raise ConfigError("train.patience (early stopping) needs a validation split; set data.val_fraction > 0 or patience=None")
    _check_data(vae, data)
    logger.info(
        "data checked once against the %s likelihood's support; Pyro's argument validation runs on "
        "the first step only%s", getattr(vae.likelihood, "name", type(vae.likelihood).__name__),
        " and then on every step (train.validate_every_step=True)" if train.validate_every_step
        else " (set train.validate_every_step=True to check every step)",
    )
    if train.elbo == "meanfield":
        logger.info("estimator B (meanfield) uses %s", describe_kl(vae))

    data_info = {"name": data.name, "n_train": n_train, "n_val": n_val, "feature_dim": data.feature_dim,
                 "binarize": data.binarize}
    pyro.clear_param_store()
    generator = torch.Generator()
    optimizer = make_optimizer(vae, train)
    ckpt_dir = Path(run_dir) / "checkpoints" if run_dir is not None else None
    run = _Run()
    if resume:
        if ckpt_dir is None:
            raise ConfigError("resume=True needs run_dir, the folder of the run to continue")
        _resume(run, vae, optimizer, generator, train, data_info, ckpt_dir / "last.pt")
    else:
        pyro.set_rng_seed(train.seed)
        generator.manual_seed(_generator_seed(train.seed))

    def finish(stopped: str) -> FitResult:
        if run.best_state is not None:
            vae.load_state_dict(run.best_state)
            logger.info("restored the parameters of epoch %d (best validation ELBO %.4f)", run.best_epoch, run.best_val)
        best_epoch = run.best_epoch if run.best_epoch is not None else run.epoch
        return FitResult(
            vae, tuple(run.history), best_epoch, run.best_val,
            run.wall_before + time.perf_counter() - t_start, run.samples, stopped,
        )

    def patience_exhausted() -> bool:
        return train.patience is not None and run.best_epoch is not None and run.epoch - run.best_epoch >= train.patience

    if resume and (run.epoch >= train.epochs or patience_exhausted()):
        logger.info("checkpoint is at epoch %d of %d: nothing left to train", run.epoch, train.epochs)
        return finish("resumed_complete")

    steps_per_epoch = math.ceil(n_train / train.batch_size)
    warmup_steps = train.kl_warmup_epochs * steps_per_epoch
    dynamic = data.binarize == "dynamic"
    good_state, good_epoch = _clone_state(vae), run.epoch
    ckpt_epoch = run.epoch if resume else None  # epoch of the checkpoint on disk from this run
    validate_next = True  # Pyro validation on the first step of every session

    def fail(epoch: int, step: int, value: float, cause: BaseException | None = None, where: str = "loss") -> None:
        kept = ckpt_dir / "last.pt" if ckpt_dir is not None and ckpt_epoch is not None else None
        _diverged(vae, good_state, good_epoch, epoch, step, steps_per_epoch, value, train, kept, cause, where)

    was_training = vae.training
    stopped = "completed"
    last_val = "-" if not run.history or run.history[-1].val_elbo is None else f"{run.history[-1].val_elbo:.3f}"
    bar = tqdm(
        range(run.epoch + 1, train.epochs + 1), initial=run.epoch, total=train.epochs,
        desc=f"svi {train.elbo}", unit="epoch", disable=not progress, leave=False,
    )
    try:
        for epoch in bar:
            t_epoch = time.perf_counter()
            vae.train()
            total, beta, step = 0.0, 1.0, 0
            for step, x in enumerate(
                batches(data.train, train.batch_size, shuffle=True, generator=generator, binarize=dynamic), start=1
            ):
                beta = kl_beta((epoch - 1) * steps_per_epoch + step, warmup_steps)
                try:
                    with pyro.validation_enabled(validate_next or train.validate_every_step):
                        loss = objective.differentiable_loss(vae.model, vae.guide, x, num_data=n_train, beta=beta)
                except ValueError as err:  # validation rejecting a distribution's NaN/inf arguments
                    if validate_next or (_params_finite(vae) and not _NON_FINITE.search(str(err))):
                        raise  # first step of the session: a model/shape problem, Pyro's message says it best
                    fail(epoch, step, float("nan"), err)
                validate_next = False
                value = loss.item()
                if not math.isfinite(value):
                    fail(epoch, step, value)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += value
                run.samples += x.shape[0] * train.num_particles
                if progress and step % max(1, steps_per_epoch // 10) == 0:
                    bar.set_postfix(train_elbo=f"{-total / step / n_train:.3f}", val_elbo=last_val, refresh=False)
            if not _params_finite(vae):  # a NaN gradient in the epoch's last step
                fail(epoch, step, float("nan"))
            train_elbo = -total / step / n_train
            val_elbo = mean_elbo(vae, data.val, objective, validate=train.validate_every_step) if n_val else None
            if val_elbo is not None and not math.isfinite(val_elbo):
                fail(epoch, step, val_elbo, where="validation")
            improved = val_elbo is not None and (run.best_val is None or val_elbo > run.best_val)
            if improved:
                run.best_epoch, run.best_val, run.best_state = epoch, val_elbo, _clone_state(vae)
            run.epoch = epoch
            run.history.append(EpochRecord(epoch, train_elbo, val_elbo, beta, time.perf_counter() - t_epoch))
            if ckpt_dir is not None:
                state = _checkpoint_state(run, vae, optimizer, generator, train, data_info, time.perf_counter() - t_start)
                save_checkpoint(ckpt_dir / "last.pt", state)
                if improved:
                    save_checkpoint(ckpt_dir / "best.pt", state)
                ckpt_epoch = epoch
            good_state, good_epoch = _clone_state(vae), epoch
            logger.debug("epoch %d: train ELBO %.4f, val ELBO %s, beta %.3g", epoch, train_elbo, val_elbo, beta)
            last_val = "-" if val_elbo is None else f"{val_elbo:.3f}"
            bar.set_postfix(train_elbo=f"{train_elbo:.3f}", val_elbo=last_val)
            if patience_exhausted():
                stopped = "early_stopping"
                logger.info("early stopping after epoch %d: no validation improvement for %d epochs (best: epoch %d)",
                            epoch, train.patience, run.best_epoch)
                break
    finally:
        bar.close()
        vae.train(was_training)
    return finish(stopped)


def _checkpoint_state(
    run: _Run,
    vae: VAE,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    train: TrainSpec,
    data_info: dict[str, Any],
    session_s: float,
) -> dict[str, Any]:
    """The checkpoint dict (layout in :mod:`inference.checkpoint`) at the end of epoch ``run.epoch``."""
    return {
        "format": FORMAT,
        "epoch": run.epoch,
        "vae": vae.state_dict(),
        "param_store": pyro.get_param_store().get_state(),
        "optimizer": optimizer.state_dict(),
        "rng": capture_rng(),
        "batch_generator": generator.get_state(),
        "history": [asdict(r) for r in run.history],
        "best": {"epoch": run.best_epoch, "val_elbo": run.best_val, "vae": run.best_state},
        "spec": spec_to_dict(train),
        "data": data_info,
        "samples_evaluated": run.samples,
        "wall_time": run.wall_before + session_s,
    }


def _resume(
    run: _Run,
    vae: VAE,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    train: TrainSpec,
    data_info: dict[str, Any],
    path: Path,
) -> None:
    """Load ``path`` into ``run``, the VAE, the optimizer and the RNGs (ConfigError if incompatible)."""
    ckpt = load_checkpoint(path)
    missing = [k for k in ("format", "epoch", "vae", "optimizer", "rng", "batch_generator", "history", "best", "spec")
               if k not in ckpt]
    if missing or ckpt.get("format") != FORMAT:
        raise TrainingError(
            f"{str(path)!r} is not a {FORMAT} checkpoint (missing {missing or 'nothing'}, format "
            f"{ckpt.get('format')!r}); start without --resume (resume=False)"
        )
    saved, now = ckpt["spec"], spec_to_dict(train)
    changed = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ConfigError(
            f"cannot resume {str(path)!r} with different training settings ({diffs}); only "
            f"{', '.join(RESUMABLE_CHANGES)} may change. Resume with the original settings or start a new run folder"
        )
    saved_data = ckpt.get("data") or data_info
    if saved_data != data_info:
        raise ConfigError(
            f"cannot resume {str(path)!r} on different data: the checkpoint was trained on {saved_data}, "
            f"this call passes {data_info}. Load the same dataset and splits, or start a new run folder"
        )
    try:
        vae.load_state_dict(ckpt["vae"])
    except RuntimeError as err:
        raise ConfigError(
            f"checkpoint {str(path)!r} was written for a different model ({err}); build the VAE from the "
            "run's original model spec, or start a new run folder"
        ) from err
    optimizer.load_state_dict(ckpt["optimizer"])
    pyro.get_param_store().set_state(ckpt.get("param_store") or {"params": {}, "constraints": {}})
    restore_rng(ckpt["rng"])
    generator.set_state(ckpt["batch_generator"])
    run.epoch = int(ckpt["epoch"])
    run.history = [EpochRecord(**r) for r in ckpt["history"]]
    best = ckpt["best"]
    run.best_epoch, run.best_val = best["epoch"], best["val_elbo"]
    run.best_state = copy.copy(best["vae"]) if best["vae"] is not None else None
    run.samples = int(ckpt.get("samples_evaluated", 0))
    run.wall_before = float(ckpt.get("wall_time", 0.0))
    logger.info("resuming %s after epoch %d of %d", path, run.epoch, train.epochs)


def _diverged(
    vae: VAE,
    good_state: dict[str, torch.Tensor],
    good_epoch: int,
    epoch: int,
    step: int,
    steps_per_epoch: int,
    value: float,
    train: TrainSpec,
    kept_checkpoint: Path | None,
    cause: BaseException | None = None,
    where: str = "loss",
) -> None:
    """Restore the last good parameters and raise TrainingError explaining what to change."""
    vae.load_state_dict(good_state)
    restored = f"the end of epoch {good_epoch}" if good_epoch > 0 else "their initial values"
    if kept_checkpoint is not None:
        kept = f"the last good checkpoint {str(kept_checkpoint)!r} (epoch {good_epoch}) was kept"
    else:
        kept = "no checkpoint of this run had been written yet"
    what = "validation ELBO" if where == "validation" else "loss"
    at = f"after epoch {epoch}" if where == "validation" else f"at epoch {epoch}, step {step}/{steps_per_epoch}"
    raise TrainingError(
        f"training diverged: non-finite {what} ({value}) {at} (objective {train.elbo!r}, lr {train.lr}, "
        f"optimizer {train.optimizer!r}); {kept}, and the VAE's parameters were restored to {restored}. "
        "Try a lower learning rate (train.lr), optimizer='clipped_adam' (clips gradients), KL warm-up "
        "(train.kl_warmup_epochs > 0), and check the data's scaling matches the likelihood "
        "(e.g. values in [0, 1] for bernoulli, standardized features for gaussian)"
    ) from cause


__all__ = [
    "OBJECTIVES", "EpochRecord", "FitResult", "fit", "make_objective", "make_optimizer", "kl_beta",
    "kl_mode", "describe_kl", "mean_elbo",
]
