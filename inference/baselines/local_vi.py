r"""Non-amortized (local) variational inference: one free Gaussian q_i(z) per datapoint.

Per datapoint, with q_i a :class:`~inference.baselines.local_guides.LocalGaussianGuide` row::

    ELBO_i(theta, q_i) = E_{q_i}[log p_theta(x_i | z)] - KL(q_i(z) || p(z))
                       = log p_theta(x_i) - KL(q_i(z) || p_theta(z | x_i)) <= log p_theta(x_i),

estimated by ``Trace_ELBO`` (estimator A) or ``TraceMeanField_ELBO`` (estimator B).

* :func:`fit_local` keeps theta fixed and maximizes sum_i ELBO_i(q_i). The sum separates over
  datapoints, so each q_i converges to argmin_q KL(q || p_theta(z | x_i)) within its family and
  the gap log p(x_i) - ELBO_i is the smallest KL the family allows. ``init="prior"`` starts every
  q_i at p(z)'s moments (plain non-amortized VI); ``init="encoder"`` at the encoder's
  q_phi(z | x_i) (semi-amortized VI, Kim et al. 2018), which closes the amortization gap
  (Cremer et al. 2018); a tensor starts the means there (e.g. MAP codes).
* :func:`fit_local_vi` learns theta and one q_i per training row jointly on the training loop
  (:func:`~inference.baselines.joint.joint_task`): L = (N / B) sum_{i in batch} ELBO_i(theta, q_i)
  is an unbiased estimate of sum_i ELBO_i.

``fit_local``'s ``seed`` calls ``pyro.set_rng_seed(seed)`` and leaves the streams where the fit's draws end, so
what a caller draws next (importance samples from the fitted proposal, in a block seeded with the same seed) is
not the fit's noise; to keep the caller's random state, call it inside :func:`pyro_vae.rng.seeded`.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

import pyro
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO

from inference.devices import on_module, place
from inference.progress import bar as progress_bar
from inference.baselines.joint import joint_task
from inference.baselines.local_guides import LocalGaussianGuide, RowTable, initial_guide
from inference.baselines.theta import as_splits, check_continuous_latents, frozen
from inference.evaluate import Estimate, elbo_samples
from inference.training import FitResult, adam
from inference.training import fit as run_loop
from inference.training.checks import check_splits
from pyro_vae.checks import positive_int
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError, TrainingError
from pyro_vae.numerics import chunks
from pyro_vae.spec import ModelSpec, TrainSpec, spec_to_dict
from pyro_vae.vae import VAE, build_vae

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
CHUNK_FLOATS = 2e7  # fit_local: rows per chunk so that particles x rows x D stays below this
# fit_local's Adam forgets old squared gradients fast (beta2 = 0.9, not 0.999): a q_i that starts far
# from its posterior sees huge first gradients, whose memory would keep later steps tiny for long.
ADAM_BETAS = (0.9, 0.9)
ELBO_NAMES = ("trace", "meanfield")


def rows_per_chunk(num_particles: int, data_dim: int, budget: float = CHUNK_FLOATS) -> int:
    """Rows optimized together: the most with num_particles x rows x data_dim <= budget (>= 1)."""
    return max(1, int(budget // max(1, num_particles * data_dim)))


@dataclass(frozen=True)
class LocalFit:
    """Outcome of :func:`fit_local`.

    ``elbo_history[t]``: (1/N) sum_i ELBO_i after t Adam steps (t = 0..steps; Monte Carlo with the
    training particles); ``elbo``: the final per-datapoint ELBOs with ``eval_particles`` particles;
    ``samples_evaluated``: datapoint x particle evaluations spent in the optimization.
    """

    guide: LocalGaussianGuide
    elbo_history: tuple[float, ...]
    elbo: Estimate
    wall_time: float
    steps: int
    samples_evaluated: int


def _objective(name: str, num_particles: int) -> ELBO:
    if name not in ELBO_NAMES:
        raise ConfigError(f"elbo={name!r} is not valid; choose one of: {', '.join(ELBO_NAMES)}")
    cls = Trace_ELBO if name == "trace" else TraceMeanField_ELBO
    return cls(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)


def _check_decay(lr: float, lr_decay: float) -> None:
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr!r}")
    if not 0 < lr_decay <= 1:
        raise ConfigError(f"lr_decay (final lr / initial lr) must be in (0, 1], got {lr_decay!r}")


def fit_local(
    vae: VAE,
    x: Tensor,
    *,
    steps: int = 500,
    lr: float = 0.2,
    lr_decay: float = 0.001,
    num_particles: int = 8,
    init: str | Tensor | RowTable = "prior",
    init_scale: float | None = None,
    full_cov: bool = False,
    elbo: str = "meanfield",
    batch_size: int | None = None,
    eval_particles: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> LocalFit:
    r"""Fit q_i = argmax ELBO_i(q_i) for each row x_i with the VAE's theta fixed (module docstring).

    Minimizes -sum_i ELBO_i, the ``elbo`` objective's ``differentiable_loss(vae.model, guide, x)``
    with ``num_particles`` vectorized particles, by Adam (betas 0.9, 0.9: see ``ADAM_BETAS``) at a
    learning rate decaying exponentially from ``lr`` to ``lr * lr_decay`` over ``steps`` steps
    (large early steps travel to the posterior; small late ones settle at the optimum). Rows
    are optimized in independent chunks of ``batch_size`` (default: particles x rows x D <= 2e7),
    so chunking does not change the result's distribution. The VAE is frozen meanwhile.

    ``init``: "prior" (non-amortized VI), "encoder" (semi-amortized: refine q_phi(z | x_i)) or
    an (N, d) tensor of starting means (see :func:`initial_guide`), or a ready local guide
    refined in place (a ``LocalFamilyGuide``: the q*_i of a flow family).
    """
    for name, value in (("steps", steps), ("num_particles", num_particles), ("eval_particles", eval_particles)):
        positive_int(name, value)
    _check_decay(lr, lr_decay)
    vae.check_data(x)
    check_continuous_latents(vae, "fit_local")
    objective = _objective(elbo, num_particles)
    n = x.shape[0]
    size = batch_size if batch_size is not None else rows_per_chunk(num_particles, x.shape[1])
    positive_int("batch_size", size)
    t0 = time.perf_counter()
    pyro.set_rng_seed(seed)
    history = [0.0] * (steps + 1)
    samples = 0
    with frozen(vae):
        guide = initial_guide(vae, x, init, full_cov=full_cov, init_scale=init_scale)
        plan = list(chunks(n, size))
        bar = progress_bar(total=len(plan) * steps, enabled=progress, desc=f"local VI ({elbo})", leave=False)
        try:
            for r0, nr in plan:
                idx = torch.arange(r0, r0 + nr, device=x.device)
                xb, guide_b = x[r0:r0 + nr], functools.partial(guide.guide, idx=idx)
                optimizer = adam(guide.parameters(), lr=lr, betas=ADAM_BETAS)
                schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay ** (1.0 / steps))
                for t in range(steps + 1):
                    # The data were checked above; Pyro's validation on every step costs ~5x here.
                    with pyro.validation_enabled(t == 0), torch.set_grad_enabled(t < steps):
                        loss = objective.differentiable_loss(vae.model, guide_b, xb)
                    value = loss.item()
                    if not math.isfinite(value):
                        raise TrainingError(
                            f"fit_local: non-finite loss ({value}) at step {t} for rows {r0}..{r0 + nr - 1}; "
                            f"lower lr (now {lr}) or check that the data suit the likelihood"
                        )
                    history[t] += -value
                    if t == steps:
                        break
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    samples += nr * num_particles
                    bar.update(1)
        finally:
            bar.close()
        final = final_elbo(vae, guide, x, estimator="A" if elbo == "trace" else "B", num_particles=eval_particles,
                           batch_size=rows_per_chunk(eval_particles, x.shape[1]))
    elbo_history = tuple(h / n for h in history)
    logger.info("fit_local (%s, init=%s): ELBO %.4f -> %.4f per datapoint in %d steps",
                elbo, init if isinstance(init, str) else type(init).__name__, elbo_history[0], elbo_history[-1], steps)
    return LocalFit(guide, elbo_history, final, time.perf_counter() - t0, steps, samples)


@torch.no_grad()
def final_elbo(
    vae: VAE, guide: LocalGaussianGuide, x: Tensor, *, estimator: str = "B", num_particles: int = 100,
    batch_size: int = 1000,
) -> Estimate:
    """Per-datapoint ELBO_i of the q_i of ``guide`` (rows in order), via :func:`inference.evaluate.elbo_samples`.

    ELBO_i ~= (1/K) sum_k L_ik, L from estimator "A" or "B", K = ``num_particles``.
    """
    values = []
    for r0, nr in chunks(x.shape[0], batch_size):
        idx = torch.arange(r0, r0 + nr, device=x.device)
        guide_b = functools.partial(guide.guide, idx=idx)
        with pyro.validation_enabled(r0 == 0):
            values.append(elbo_samples(vae.model, guide_b, x[r0:r0 + nr], estimator, num_particles).mean(0))
    return Estimate.from_values(torch.cat(values), num_particles)



def train_spec(train: TrainSpec | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> TrainSpec:
    """``train`` (a TrainSpec, a dict of its fields, or None for the defaults) with the non-None ``overrides``."""
    base = spec_to_dict(train) if isinstance(train, TrainSpec) else dict(train or {})
    return TrainSpec(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


def prepare(
    vae: VAE | ModelSpec | Mapping[str, Any], data: DataSplits | Tensor, seed: int, method: str,
    device: str | torch.device | None = None,
) -> tuple[VAE, DataSplits]:
    """(the VAE, the data as splits) for a per-datapoint method, checked once before the fit.

    Builds the VAE from a spec if needed (seeded), refuses data outside the likelihood's support
    (for dynamic binarization: values outside [0, 1], or a likelihood refusing 0/1) and models
    whose latent is not one real vector z per datapoint, then moves the VAE to ``device`` (None:
    where it is), so that the per-datapoint state made from :func:`inference.devices.on_module`
    rows lives beside it.
    """
    splits = as_splits(data)
    if not isinstance(vae, VAE):
        if not isinstance(vae, (ModelSpec, Mapping)):
            raise ConfigError(f"expected a VAE or a model spec (ModelSpec or dict), got {type(vae).__name__}")
        x = splits.train
        vae = build_vae(vae, data_dim=x.shape[1], image_shape=splits.image_shape, data_sample=x[:1000], seed=seed)
    check_splits(vae, splits)
    check_continuous_latents(vae, method)
    place(vae, device, name="train.device")
    return vae, splits


def fit_local_vi(
    vae: VAE | ModelSpec | Mapping[str, Any],
    data: DataSplits | Tensor,
    train: TrainSpec | Mapping[str, Any] | None = None,
    *,
    full_cov: bool = False,
    init: str = "prior",
    local_lr: float = 0.05,
    progress: bool = True,
    **overrides: Any,
) -> FitResult:
    r"""Non-amortized VI training: maximize sum_i ELBO_i(theta, q_i) over theta and every q_i jointly.

    Runs :func:`~inference.baselines.joint.joint_task` on the training loop with ``train.elbo``
    ("trace" or "meanfield"), ``train.num_particles`` particles and KL warm-up as for SVI;
    the q_i move with SparseAdam at ``local_lr``. ``vae``: a VAE, or a model spec to build one
    (seeded by ``train.seed``); ``overrides``: TrainSpec fields (``epochs=``, ``lr=``, ...);
    ``init``: "prior" or "encoder" starting q_i. Early stopping is refused: held-out rows have
    no q_i (fit them with :func:`fit_local`). The result's ``modules["local"]`` is the guide.
    """
    spec = train_spec(train, overrides)
    if spec.patience is not None:
        raise ConfigError("fit_local_vi has no validation ELBO to stop early on (held-out rows have no q_i); set patience=None")
    if not (isinstance(local_lr, (int, float)) and local_lr > 0):
        raise ConfigError(f"local_lr must be > 0, got {local_lr!r}")
    objective = _objective(spec.elbo, spec.num_particles)
    vae, splits = prepare(vae, data, spec.seed, "fit_local_vi", spec.device)
    x = on_module(vae, splits.train)
    with torch.no_grad():
        guide = initial_guide(vae, x, init, full_cov=full_cov)
    task = joint_task(vae, guide, objective, num_data=int(x.shape[0]), local_lr=local_lr,
                      samples_per_row=spec.num_particles, label="local VI")
    guide.sparse_grad = True
    try:
        return run_loop(task, splits, spec, progress=progress)
    finally:
        guide.sparse_grad = False


__all__ = ["LocalFit", "fit_local", "final_elbo", "fit_local_vi", "rows_per_chunk", "train_spec", "prepare", "ELBO_NAMES"]
