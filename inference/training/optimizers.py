r"""Optimizers, registered by name (``train.optimizer``): Adam and AdamW (torch's fused kernels where they apply), ClippedAdam.

Adam's update, per parameter theta with gradient g at step t (beta1 = 0.9, beta2 = 0.999,
eps = 1e-8)::

    m_t = beta1 m_{t-1} + (1 - beta1) g_t,    v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
    theta_t = theta_{t-1} - lr (m_t / (1 - beta1^t)) / (sqrt(v_t / (1 - beta2^t)) + eps)

``train.weight_decay`` (lambda >= 0) enters in one of two ways. Adam and ClippedAdam add it to the
gradient, g_t <- g_t + lambda theta_{t-1}: the gradient of the L2 penalty (lambda / 2) ||theta||^2,
i.e. MAP under theta ~ N(0, I / lambda), rescaled per coordinate by Adam's denominator. AdamW
(Loshchilov & Hutter 2019) decouples it from the gradient and shrinks every parameter by the same
fraction of the step's learning rate, theta_{t-1} <- (1 - lr lambda) theta_{t-1}, before Adam's update.

ClippedAdam (Pyro's) first clamps every gradient coordinate to [-clip_norm, clip_norm].
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from pyro.optim.clipped_adam import ClippedAdam

from pyro_vae.errors import ConfigError
from pyro_vae.registry import Registry
from pyro_vae.spec import TrainSpec

OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry("optimizer")
_FUSED_ADAM_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def adam(params: Iterable[torch.Tensor], lr: float, *, decoupled: bool = False, **options: Any) -> torch.optim.Adam:
    r"""``torch.optim.Adam`` (``torch.optim.AdamW`` if ``decoupled``), with the fused kernel wherever this torch has one.

    ``fused=True`` computes the update (module docstring) in one kernel over all parameters
    instead of ~10 tensor operations per parameter; results agree to float rounding. The
    default implementation is used for parameters fused Adam does not take (other dtypes or
    devices than float16/bfloat16/float32/float64 on CPU or CUDA), and where torch refuses
    ``fused=True`` (old torch on CPU, or ``options`` such as ``foreach=True`` that exclude it).
    """
    params = list(params)
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    if all(p.dtype in _FUSED_ADAM_DTYPES and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return kind(params, lr=lr, fused=True, **options)
        except (RuntimeError, TypeError):  # this torch has no fused Adam here
            pass
    return kind(params, lr=lr, **options)


@OPTIMIZERS.register("adam")
def adam_optimizer(params: list[torch.nn.Parameter], train: TrainSpec) -> torch.optim.Optimizer:
    """Adam at train.lr, train.weight_decay as an L2 term in the gradient (fused where torch supports it)."""
    return adam(params, lr=train.lr, weight_decay=train.weight_decay)


@OPTIMIZERS.register("adamw")
def adamw_optimizer(params: list[torch.nn.Parameter], train: TrainSpec) -> torch.optim.Optimizer:
    """AdamW at train.lr: every step shrinks theta by lr * train.weight_decay, apart from the gradient."""
    return adam(params, lr=train.lr, decoupled=True, weight_decay=train.weight_decay)


@OPTIMIZERS.register("clipped_adam")
def clipped_adam_optimizer(params: list[torch.nn.Parameter], train: TrainSpec) -> torch.optim.Optimizer:
    """Pyro's ClippedAdam at train.lr, gradients clamped to [-train.clip_norm, train.clip_norm], L2 train.weight_decay."""
    return ClippedAdam(params, lr=train.lr, clip_norm=train.clip_norm, weight_decay=train.weight_decay)


def make_optimizer(params: torch.nn.Module | Iterable[torch.nn.Parameter], train: TrainSpec) -> torch.optim.Optimizer:
    """The optimizer named ``train.optimizer`` over a module's parameters (or the given ones)."""
    params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
    if not params:
        raise ConfigError("this model has no trainable parameters; nothing to fit")
    return OPTIMIZERS.get(train.optimizer)(params, train)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimizer's implementation flags.

    torch copies the saved groups' ``fused``/``foreach`` flags, so a checkpoint written by
    unfused Adam would turn fusing off for the rest of the run (same update, slower). Fused Adam
    keeps its step counts as float32 tensors on the parameters' device, so they are converted.
    """
    kept = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, kept):
        group.update(flags)
        if not flags.get("fused"):
            continue
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if torch.is_tensor(step):
                optimizer.state[p]["step"] = step.to(device=p.device, dtype=torch.float32)


__all__ = ["OPTIMIZERS", "adam", "make_optimizer", "load_optimizer_state"]
