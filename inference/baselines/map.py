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
penalty, on the training loop (:func:`~inference.baselines.joint.joint_task`). With ``weight_decay = 1 / (2 s^2) > 0`` the penalty is -log N(theta; 0, s^2 I) up to a
constant, so the fit is MAP on theta and on z; with ``weight_decay = 0`` it is maximum
likelihood on theta with MAP on z. Beware that the latter often has no maximum: with p(z) =
N(0, I) and a decoder linear in its first layer, W -> c W and z_i -> z_i / c keep every
reconstruction and shrink sum_i ||z_i||^2 / 2, so W grows without bound as training goes on
(for pPCA the joint maximum with weight_decay = lambda is singular-value soft-thresholding of
the centred data at sigma^2 sqrt(2 lambda)). Theta is the parameters of the prior, likelihood and
decoder (the encoder is not used). Neither is a bound on log p(x): L is a joint density at a
point, and with a learnable observation noise it can grow without limit (sigma -> 0) -- so MAP
is scored like every method, by importance sampling with a proposal fitted afterwards
(:func:`map_proposal`, :func:`inference.evaluate.log_likelihood`).

A new x is encoded by optimizing its z with theta fixed (:func:`encode_map`):
z*(x) = argmax_z log p_theta(x | z) + log p(z), the posterior mode.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import pyro
import torch
from pyro.infer import Trace_ELBO

from inference.devices import on_module
from inference.progress import bar
from inference.baselines.joint import joint_task
from inference.baselines.local_guides import LocalGaussianGuide, PointGuide, initial_codes
from inference.baselines.local_vi import fit_local, prepare, rows_per_chunk, train_spec
from inference.baselines.theta import check_continuous_latents, frozen, theta_parameters, theta_penalty
from inference.training import FitResult, adam
from inference.training import fit as run_loop
from pyro_vae.checks import positive_int
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError, TrainingError
from pyro_vae.numerics import chunks
from pyro_vae.spec import ModelSpec, TrainSpec
from pyro_vae.vae import VAE

logger = logging.getLogger(__name__)

Tensor = torch.Tensor


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
    positive_int("steps", steps)
    if not lr > 0 or not 0 < lr_decay <= 1:
        raise ConfigError(f"need lr > 0 and 0 < lr_decay <= 1, got lr={lr!r}, lr_decay={lr_decay!r}")
    if optimizer not in ("lbfgs", "adam"):
        raise ConfigError(f"optimizer={optimizer!r} is not valid; choose one of: lbfgs, adam")
    vae.check_data(x)
    check_continuous_latents(vae, "encode_map")
    n, d = x.shape[0], vae.latent_dim
    z0 = initial_codes(vae, x, init)
    size = batch_size or rows_per_chunk(1, x.shape[1])
    loss_fn = Trace_ELBO(max_plate_nesting=1).differentiable_loss
    out = torch.empty(n, d, dtype=x.dtype, device=x.device)
    with frozen(vae):
        for r0, nr in bar(list(chunks(n, size)), enabled=progress, desc="MAP encode", leave=False):
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


def map_objective(vae: VAE, z: Tensor, x: Tensor, weight_decay: float = 0.0) -> float:
    """(1/N) [sum_i (log p_theta(x_i | z_i) + log p(z_i)) - weight_decay * sum_j theta_j^2], exactly (no grad)."""
    with torch.no_grad():
        total = float(vae.log_joint(z, x).sum()) - float(theta_penalty(theta_parameters(vae), weight_decay))
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
) -> FitResult:
    r"""Maximize sum_i [log p_theta(x_i | z_i) + log p(z_i)] - weight_decay ||theta||^2 over theta and Z.

    Runs :func:`~inference.baselines.joint.joint_task` with a :class:`PointGuide` on the training
    loop: theta with the optimizer of ``train`` at ``lr`` under ``train.lr_schedule``, Z with
    SparseAdam at ``z_lr`` (default ``lr``) on the rows in the minibatch. Parameters with
    ``requires_grad=False`` stay fixed. ``weight_decay = 1 / (2 s^2)``: MAP on theta under
    N(0, s^2 I); 0 (default): MLE on theta. ``train`` gives epochs, lr, batch_size, seed and
    optimizer (``elbo``, ``num_particles`` and ``kl_warmup_epochs`` do not apply: a point guide
    has one "particle" and no KL term); the explicit keywords override it. ``z_init``: starting
    codes (N, d) (default: the prior mean). The result's ``modules["local"]`` is the PointGuide
    (its ``z`` holds the MAP codes); each epoch's ``train_elbo`` is the objective
    (1/N)[sum_i log p(x_i, z_i) - penalty], mean over the epoch's steps.
    """
    spec = train_spec(train, dict(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, kl_warmup_epochs=0,
                                  num_particles=1))
    if not (isinstance(weight_decay, (int, float)) and not isinstance(weight_decay, bool) and weight_decay >= 0):
        raise ConfigError(f"weight_decay must be a number >= 0 (1 / (2 s^2) for a N(0, s^2) prior on theta), got {weight_decay!r}")
    if spec.patience is not None:
        raise ConfigError("fit_map has no validation score to stop early on; set patience=None")
    z_lr = spec.lr if z_lr is None else z_lr
    if not (isinstance(z_lr, (int, float)) and z_lr > 0):
        raise ConfigError(f"z_lr must be > 0, got {z_lr!r}")
    vae, splits = prepare(vae, data, spec.seed, "fit_map", spec.device)
    x = on_module(vae, splits.train)
    guide = PointGuide(initial_codes(vae, x, z_init), data=x)
    task = joint_task(vae, guide, Trace_ELBO(max_plate_nesting=1), num_data=int(x.shape[0]), local_lr=z_lr,
                      weight_decay=float(weight_decay), label="MAP")
    guide.sparse_grad = True
    try:
        return run_loop(task, splits, spec, progress=progress)
    finally:
        guide.sparse_grad = False


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
    :func:`inference.baselines.local_vi.fit_local` (theta fixed), maximizing ELBO_i, i.e. minimizing
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



__all__ = ["fit_map", "encode_map", "map_proposal", "map_objective"]
