r"""MAP / MLE baseline without an encoder (the comparison in Kingma & Welling 2014).

Model: the VAE's own program, z_i ~ p(z), x_i | z_i ~ p_theta(x | z_i) (sites "z", "x" under
``pyro.plate("data", N)``). Every training datapoint owns a point estimate z_i, a row of a
module parameter table Z (N, d) (AutoDelta-like, but per datapoint and owned here, not by
Pyro's param store). The guide is a point mass::

    q_i(z) = Delta(z - z_i)          site "z",  dist.Delta(Z[idx]).to_event(1)

Paired with ``vae.model`` in ``Trace_ELBO``, log q_i(z_i) = 0 (a Delta's log-density at its own
point), so the "ELBO" is the log joint and the loss is

    -L(theta, Z) = -(N / B) sum_{i in batch} [log p_theta(x_i | z_i) + log p(z_i)]
                   + weight_decay * sum_j theta_j^2,

computed by ``Trace_ELBO().differentiable_loss(vae.model, guide, x_batch, num_data=N)`` plus the
penalty. With ``weight_decay = 1 / (2 s^2) > 0`` the penalty is -log N(theta; 0, s^2 I) up to a
constant, so the fit is MAP on theta and on z; with ``weight_decay = 0`` it is maximum
likelihood on theta with MAP on z. Beware that the latter often has no maximum: with p(z) =
N(0, I) and a decoder linear in its first layer, W -> c W and z_i -> z_i / c keep every
reconstruction and shrink sum_i ||z_i||^2 / 2, so W grows without bound as training goes on
(for pPCA the joint maximum with weight_decay = lambda is singular-value soft-thresholding of
the centred data at sigma^2 sqrt(2 lambda); see tests/inference/test_map.py). Theta is the parameters of the prior, likelihood and
decoder (the encoder is not used). Neither is a bound on log p(x): L is a joint density at a
point, and with a learnable observation noise it can grow without limit (sigma -> 0) -- so MAP
is scored like every method, by importance sampling with a proposal fitted afterwards
(:func:`map_proposal`, :func:`inference.evaluate.log_likelihood`).

A new x is encoded by optimizing its z with theta fixed (:func:`encode_map`):
z*(x) = argmax_z log p_theta(x | z) + log p(z), the posterior mode.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn
from tqdm.auto import tqdm

from inference.local_vi import (
    LocalGaussianGuide, RowTable, _chunks, _train_spec, check_continuous_latents, data_plate, fit_local, frozen,
    prepare_training, rows_per_chunk, theta_optimizer, theta_parameters, theta_penalty,
)
from inference.training import adam, set_learning_rate
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError, TrainingError
from pyro_vae.spec import ModelSpec, TrainSpec
from pyro_vae.vae import VAE

logger = logging.getLogger(__name__)

Tensor = torch.Tensor


class PointGuide(RowTable):
    """q_i(z) = Delta(z - z_i): one point per datapoint, the rows of the parameter ``z`` (N, d).

    ``data``: the N datapoints, for lookup of rows by value (see :class:`inference.local_vi.RowTable`).
    """

    def __init__(self, z: Tensor, *, data: Tensor | None = None) -> None:
        z = torch.as_tensor(z)
        if z.dim() != 2 or not z.is_floating_point():
            raise ConfigError(f"z must be a float (N, d) tensor of initial codes, got shape {tuple(z.shape)}")
        super().__init__(z.shape[0], None)
        self.latent_dim = z.shape[1]
        self.z = nn.Parameter(z.detach().clone())
        if data is not None:
            self.remember(data)

    def guide(
        self,
        x: Tensor,
        *,
        num_data: int | None = None,
        beta: float = 1.0,
        idx: Tensor | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """z_i = Z[idx_i], a Delta site "z" (log-density 0) under the model's data plate."""
        z = self.gather(self.z, self.rows(x, idx))
        with data_plate(x.shape[0], num_data):
            with poutine.scale(scale=beta):
                return pyro.sample("z", dist.Delta(z).to_event(1))

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:  # noqa: D102 - the guide is the module's call
        return self.guide(x, **kwargs)


def log_joint(vae: VAE, z: Tensor, x: Tensor) -> Tensor:
    """log p_theta(x_i | z_i) + log p(z_i) for each row; shape (N,). The MAP objective per datapoint."""
    return vae.decode(z).log_prob(x) + vae.prior().log_prob(z)


# -- encode_map: z for new data, theta fixed ------------------------------------------------------------
def encode_map(
    vae: VAE,
    x: Tensor,
    *,
    steps: int = 300,
    lr: float = 0.05,
    optimizer: str = "lbfgs",
    lr_decay: float = 1.0,
    init: Tensor | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> Tensor:
    r"""z*_i = argmax_z [log p_theta(x_i | z) + log p(z)] for each row of x, theta fixed; shape (N, d).

    The loss -sum_i [log p(x_i | z_i) + log p(z_i)] is ``Trace_ELBO().differentiable_loss`` of
    ``vae.model`` with a :class:`PointGuide` (exact: a Delta has no sampling noise). It is
    minimized in independent chunks of rows by ``optimizer``:

    * ``"lbfgs"`` (default): L-BFGS with a strong-Wolfe line search, at most ``steps``
      iterations (``lr`` unused: unit steps). The sum separates over rows, so its minimum is
      every row's mode; L-BFGS converges fast even when the posterior is strongly correlated.
    * ``"adam"``: ``steps`` Adam steps at ``lr`` (decaying exponentially to ``lr * lr_decay``);
      slow along the narrow valleys of correlated posteriors.

    ``init``: starting codes (N, d); by default the prior mean (zeros where it has none). The
    VAE is frozen meanwhile (eval mode, ``requires_grad=False``; restored afterwards).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if not lr > 0 or not 0 < lr_decay <= 1:
        raise ConfigError(f"need lr > 0 and 0 < lr_decay <= 1, got lr={lr!r}, lr_decay={lr_decay!r}")
    if optimizer not in ("lbfgs", "adam"):
        raise ConfigError(f"optimizer={optimizer!r} is not valid; choose one of: lbfgs, adam")
    vae.check_data(x)
    check_continuous_latents(vae, "encode_map")
    n, d = x.shape[0], vae.latent_dim
    z0 = _initial_codes(vae, x, init)
    size = batch_size or rows_per_chunk(1, x.shape[1])
    loss_fn = Trace_ELBO(max_plate_nesting=1).differentiable_loss
    out = torch.empty(n, d, dtype=x.dtype, device=x.device)
    with frozen(vae):
        for r0, nr in tqdm(list(_chunks(n, size)), desc="MAP encode", disable=not progress, leave=False):
            point = PointGuide(z0[r0:r0 + nr])
            xb = x[r0:r0 + nr]
            calls = [0]

            def closure() -> Tensor:
                with pyro.validation_enabled(calls[0] == 0):  # the data were checked; validating every step costs ~5x
                    loss = loss_fn(vae.model, point.guide, xb)
                calls[0] += 1
                if not math.isfinite(loss.item()):
                    raise TrainingError(
                        f"encode_map: non-finite loss for rows {r0}..{r0 + nr - 1}; try optimizer='adam' with a lower lr"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                return loss

            if optimizer == "lbfgs":
                opt = torch.optim.LBFGS(
                    [point.z], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                    tolerance_grad=1e-9, tolerance_change=1e-12,
                )
                opt.step(closure)
            else:
                opt = adam([point.z], lr=lr)
                schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_decay ** (1.0 / steps))
                for _ in range(steps):
                    opt.step(closure)
                    schedule.step()
            out[r0:r0 + nr] = point.z.detach()
    return out


def _initial_codes(vae: VAE, x: Tensor, init: Tensor | None) -> Tensor:
    n, d = x.shape[0], vae.latent_dim
    if init is None:
        with torch.no_grad():
            try:
                mean = vae.prior().mean.reshape(-1)
            except NotImplementedError:
                mean = torch.zeros(d)
        if mean.shape != (d,) or not bool(torch.isfinite(mean).all()):
            mean = torch.zeros(d)
        return mean.to(x).expand(n, d).clone()
    init = torch.as_tensor(init).detach().to(x)
    if init.shape != (n, d):
        raise ConfigError(f"init must hold one code per row of x, shape {(n, d)}, got {tuple(init.shape)}")
    return init


# -- fit_map: theta and Z jointly ------------------------------------------------------------------------
@dataclass(frozen=True)
class MAPEpoch:
    """One epoch of :func:`fit_map`: the objective (1/N) [sum_i log p(x_i, z_i) - penalty], mean over its steps."""

    epoch: int
    objective: float
    seconds: float


@dataclass(frozen=True)
class MAPResult:
    """Outcome of :func:`fit_map`.

    ``vae``: the fitted model (prior, likelihood, decoder; encoder untouched); ``guide``: the
    :class:`PointGuide` holding Z, the MAP codes of the training rows (``z`` = its table,
    detached); ``history``: one :class:`MAPEpoch` per epoch; ``samples_evaluated``: training rows
    processed (one point per row and step).
    """

    vae: VAE
    guide: PointGuide
    z: Tensor
    history: tuple[MAPEpoch, ...]
    wall_time: float
    samples_evaluated: int
    weight_decay: float


def map_objective(vae: VAE, z: Tensor, x: Tensor, weight_decay: float = 0.0) -> float:
    """(1/N) [sum_i (log p_theta(x_i | z_i) + log p(z_i)) - weight_decay * sum_j theta_j^2], exactly (no grad)."""
    with torch.no_grad():
        total = float(log_joint(vae, z, x).sum()) - float(theta_penalty(theta_parameters(vae), weight_decay))
    return total / x.shape[0]


def fit_map(
    vae: VAE | ModelSpec | Mapping[str, Any],
    data: DataSplits | Tensor,
    train: TrainSpec | Mapping[str, Any] | None = None,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    weight_decay: float = 0.0,
    z_lr: float | None = None,
    z_init: Tensor | None = None,
    progress: bool = True,
) -> MAPResult:
    r"""Maximize sum_i [log p_theta(x_i | z_i) + log p(z_i)] - weight_decay ||theta||^2 over theta and Z.

    Each step takes a minibatch I of B training rows (a randperm per epoch from a generator
    seeded by ``seed``; a Bernoulli draw per batch for dynamically binarized data) and minimizes
    the module docstring's loss. Theta: the optimizer of ``train`` (Adam or ClippedAdam) at
    ``lr``, following ``train.lr_schedule`` per epoch (:func:`inference.svi.learning_rate`);
    Z: SparseAdam at ``z_lr`` (default ``lr``) on the rows in the minibatch only.
    Parameters with ``requires_grad=False`` stay fixed (freeze theta to fit only Z).
    ``weight_decay = 1 / (2 s^2)``: MAP on theta under N(0, s^2 I); 0 (default): MLE on theta.

    ``train`` gives epochs, lr, batch_size, seed and optimizer (its ``elbo``,
    ``num_particles`` and ``kl_warmup_epochs`` do not apply: a point guide has one "particle"
    and no KL term); the explicit keywords override it. ``z_init``: starting codes (N, d)
    (default: the prior mean). Raises UnsupportedModelError for models with discrete or
    constrained latents.
    """
    spec = _train_spec(train, dict(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed))
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ConfigError(f"weight_decay must be a number >= 0 (1 / (2 s^2) for a N(0, s^2) prior on theta), got {weight_decay!r}")
    if spec.patience is not None:
        raise ConfigError("fit_map has no validation score to stop early on; set patience=None")
    z_lr = spec.lr if z_lr is None else z_lr
    if not z_lr > 0:
        raise ConfigError(f"z_lr must be > 0, got {z_lr!r}")
    vae, x, dynamic = prepare_training(vae, data, spec.seed, "fit_map")
    n = int(x.shape[0])

    t0 = time.perf_counter()
    pyro.clear_param_store()
    pyro.set_rng_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    guide = PointGuide(_initial_codes(vae, x, z_init), data=x)
    guide.sparse_grad = True
    theta = theta_parameters(vae)
    theta_opt = theta_optimizer(theta, spec, "fit_map")
    z_opt = torch.optim.SparseAdam([guide.z], lr=z_lr)
    loss_fn = Trace_ELBO(max_plate_nesting=1).differentiable_loss
    steps_per_epoch = math.ceil(n / spec.batch_size)
    history: list[MAPEpoch] = []
    samples = 0
    was_training = vae.training
    bar = tqdm(range(1, spec.epochs + 1), desc="MAP", unit="epoch", disable=not progress, leave=False)
    try:
        vae.train()
        for epoch in bar:
            t_epoch = time.perf_counter()
            set_learning_rate(theta_opt, spec, epoch)  # theta follows spec.lr_schedule, as in svi.fit
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for step, r0 in enumerate(range(0, n, spec.batch_size), start=1):
                idx = order[r0:r0 + spec.batch_size]
                xb = x.index_select(0, idx)
                if dynamic:
                    xb = torch.bernoulli(xb, generator=generator)
                with pyro.validation_enabled(epoch == 1 and step == 1):  # data checked above; every step ~5x slower
                    loss = loss_fn(vae.model, functools.partial(guide.guide, idx=idx), xb, num_data=n)
                loss = loss + theta_penalty(theta, weight_decay)
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingError(
                        f"fit_map diverged: non-finite loss ({value}) at epoch {epoch}, step {step}; lower lr "
                        f"(now {spec.lr}) or z_lr (now {z_lr}), add weight_decay, or fix the likelihood's noise "
                        "(a learnable sigma can collapse to 0 under MAP)"
                    )
                if theta_opt is not None:
                    theta_opt.zero_grad(set_to_none=True)
                z_opt.zero_grad(set_to_none=True)
                loss.backward()
                if theta_opt is not None:
                    theta_opt.step()
                z_opt.step()
                total += value
                samples += xb.shape[0]
            objective = -total / steps_per_epoch / n
            history.append(MAPEpoch(epoch, objective, time.perf_counter() - t_epoch))
            bar.set_postfix(objective=f"{objective:.3f}")
            logger.debug("MAP epoch %d: objective %.4f per datapoint", epoch, objective)
    finally:
        bar.close()
        guide.sparse_grad = False
        vae.train(was_training)
    return MAPResult(vae, guide, guide.z.detach().clone(), tuple(history), time.perf_counter() - t0, samples,
                     float(weight_decay))


# -- scoring: a proposal for importance sampling -----------------------------------------------------------
def map_proposal(
    vae: VAE,
    x: Tensor,
    *,
    init: str | Tensor = "map",
    full_cov: bool = False,
    map_steps: int = 300,
    **fit_kwargs: Any,
) -> LocalGaussianGuide:
    r"""A per-datapoint Gaussian proposal q_i for importance-sampling log p_theta(x_i) of held-out rows.

    MAP has no q(z | x), so the common yardstick gets the best available one: q_i fitted by
    :func:`inference.local_vi.fit_local` (theta fixed), maximizing ELBO_i, i.e. minimizing
    KL(q_i || p_theta(z | x_i)). ``init="map"`` (default) starts the means at the MAP codes
    :func:`encode_map` (``map_steps`` steps) with sds 0.1 x the prior's; "prior", "encoder" or
    a tensor of means as in ``fit_local``. ``fit_kwargs`` go to ``fit_local`` (steps, lr, ...).
    Use as ``evaluate.log_likelihood(vae.model, map_proposal(vae, x), x)``.
    """
    start: str | Tensor = init
    if isinstance(init, str) and init == "map":
        start = encode_map(vae, x, steps=map_steps)
    fit = fit_local(vae, x, init=start, full_cov=full_cov, **{"progress": False, **fit_kwargs})
    return fit.guide


__all__ = [
    "PointGuide", "MAPEpoch", "MAPResult", "fit_map", "encode_map", "map_proposal", "map_objective",
    "log_joint", "theta_parameters",
]
