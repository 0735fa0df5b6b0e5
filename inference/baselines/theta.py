r"""What the non-amortized baselines share: theta, its penalty, freezing, and the checks before a fit.

theta = the trainable parameters of the prior, likelihood and decoder (the model p(z) p_theta(x | z));
the encoder is not part of the model. The penalty weight_decay * ||theta||^2 is -log N(theta; 0, s^2 I)
+ const for weight_decay = 1 / (2 s^2): MAP on theta; 0 is maximum likelihood.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import constraints

from pyro_vae.data import DataSplits
from pyro_vae.errors import DataError, UnsupportedModelError
from pyro_vae.vae import VAE

Tensor = torch.Tensor


def _base_support(support: constraints.Constraint) -> constraints.Constraint:
    """Unwrap Independent and MixtureSameFamily constraints down to the per-coordinate one."""
    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    return support


def check_continuous_latents(vae: VAE, method: str) -> None:
    """Raise UnsupportedModelError unless the model's only latent site is "z" with support R^d.

    Per-datapoint Gaussian and point (Delta) guides cover exactly one real-valued latent
    vector per datapoint; discrete or constrained latents need another method.
    """
    was_training = vae.training
    vae.eval()
    try:
        with torch.no_grad(), pyro.validation_enabled(False):
            trace = poutine.trace(vae.model).get_trace(None, num_samples=1)
    finally:
        vae.train(was_training)
    latent = {  # generated without data, so the observation site "x" is sampled too: leave it out
        name: site for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site) and name != "x"
    }
    extra = sorted(set(latent) - {"z"})
    if extra:
        raise UnsupportedModelError(
            f"{method} handles one latent vector 'z' per datapoint, but the model also samples {extra}; "
            "use SVI with an amortized guide (inference.svi) or enumerate the discrete sites"
        )
    if "z" not in latent:
        raise UnsupportedModelError(f"{method}: the model has no latent site 'z' to infer")
    fn = latent["z"]["fn"]
    support = _base_support(fn.support)
    if getattr(fn.support, "is_discrete", False) or support.is_discrete:
        raise UnsupportedModelError(
            f"{method} needs a continuous latent z, but p(z) ({type(fn).__name__}) is discrete; a point "
            "estimate or Gaussian q over a discrete variable is meaningless. Use enumeration "
            "(TraceEnum_ELBO) or a continuous prior"
        )
    if support is not constraints.real:
        raise UnsupportedModelError(
            f"{method} needs z in R^d, but p(z) has support {fn.support}; a Gaussian or point guide "
            "on the real line would leave the support. Use a prior on R^d (normal, laplace, "
            "student_t, mixture, vamp)"
        )


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block: ``module.eval()`` and ``requires_grad=False`` on its parameters; both restored after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    was_training = module.training
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


def theta_parameters(vae: VAE) -> list[nn.Parameter]:
    """Theta: the trainable (requires_grad) parameters of the prior, likelihood and decoder.

    The encoder is not part of the model p(z) p_theta(x | z) (a VampPrior's pseudo-inputs are
    theta; the encoder they pass through is left as it is).
    """
    seen: set[int] = set()
    out = []
    for module in (vae.prior, vae.likelihood, vae.decoder):
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def theta_penalty(params: Sequence[Tensor], weight_decay: float) -> Tensor | float:
    """weight_decay * sum_j theta_j^2 (= -log N(theta; 0, s^2 I) + const for weight_decay = 1 / (2 s^2))."""
    if weight_decay == 0 or not params:
        return 0.0
    return weight_decay * sum(p.pow(2).sum() for p in params)



def as_splits(data: DataSplits | Tensor) -> DataSplits:
    """``data`` as splits: a plain (N, D) tensor becomes training rows with empty validation and test splits."""
    if isinstance(data, DataSplits):
        return data
    if torch.is_tensor(data) and data.dim() == 2:
        empty = data[:0]
        return DataSplits("tensor", data, empty, empty, None, None, None, None, "none")
    raise DataError(
        f"data must be a DataSplits (pyro_vae.data.load_dataset) or an (N, D) tensor, got "
        f"{type(data).__name__}{tuple(data.shape) if torch.is_tensor(data) else ''}"
    )


__all__ = ["theta_parameters", "theta_penalty", "frozen", "check_continuous_latents", "as_splits"]
