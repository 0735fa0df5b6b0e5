r"""Optimizers, registered by name (``train.optimizer``): Adam (torch's fused kernel where it applies) and ClippedAdam.

Adam's update, per parameter theta with gradient g at step t (beta1 = 0.9, beta2 = 0.999,
eps = 1e-8)::

    m_t = beta1 m_{t-1} + (1 - beta1) g_t,    v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
    theta_t = theta_{t-1} - lr (m_t / (1 - beta1^t)) / (sqrt(v_t / (1 - beta2^t)) + eps)

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


def adam(params: Iterable[torch.Tensor], lr: float, **options: Any) -> torch.optim.Adam:
    r"""``torch.optim.Adam``, with the fused kernel wherever this torch has one for the parameters.

    ``fused=True`` computes the update (module docstring) in one kernel over all parameters
    instead of ~10 tensor operations per parameter; results agree to float rounding. The
    default implementation is used for parameters fused Adam does not take (other dtypes or
    devices than float16/bfloat16/float32/float64 on CPU or CUDA), and where torch refuses
    ``fused=True`` (old torch on CPU, or ``options`` such as ``foreach=True`` that exclude it).
    """
    params = list(params)
    if all(p.dtype in _FUSED_ADAM_DTYPES and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return torch.optim.Adam(params, lr=lr, fused=True, **options)
        except (RuntimeError, TypeError):  # this torch has no fused Adam here
            pass
    return torch.optim.Adam(params, lr=lr, **options)


@OPTIMIZERS.register("adam")
def adam_optimizer(params: list[torch.nn.Parameter], train: TrainSpec) -> torch.optim.Optimizer:
    """Adam at train.lr (fused where torch supports it)."""
    return adam(params, lr=train.lr)


@OPTIMIZERS.register("clipped_adam")
def clipped_adam_optimizer(params: list[torch.nn.Parameter], train: TrainSpec) -> torch.optim.Optimizer:
    """Pyro's ClippedAdam at train.lr, gradients clamped to [-train.clip_norm, train.clip_norm]."""
    return ClippedAdam(params, lr=train.lr, clip_norm=train.clip_norm)


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
