r"""Active units and KL per unit of every latent site of a program (each stochastic layer), by Monte Carlo.

For each latent site l (``program.latents``: ``("z",)`` for a VAE, ``("z1", "z2")`` for the
hierarchical program), S draws per datapoint from the guide in one vectorized pass
(:func:`inference.log_weights.traces`, the model replayed on them)::

    E_q[z_lu | x_i]  ~= (1/S) sum_s z_lu^(s)                          (the marginal of q, all layers)
    active unit u    :  Var_i(E_q[z_lu | x_i]) > threshold              (Burda et al. 2015)
    KL per unit u    :  (1/N) sum_i (1/S) sum_s [log q(z_lu^(s) | .) - log p(z_lu^(s) | .)]

the last with each site's own conditioning (q(z2 | z1) against p(z2), q(z1 | x) against
p(z1 | z2) ...), summing over units to the site's KL term of the ELBO. It needs factorized
densities at the site in q and p (``Independent`` of a batch of 1-D distributions, e.g.
``diag_normal``); elsewhere (full-covariance or flow guides) the per-unit KL is NaN. Discrete
latent sites (M2's class label y) have no units and are left out.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch.distributions import Distribution, Independent

from inference.log_weights import traces
from pyro_vae.checks import number, positive_int
from pyro_vae.errors import ConfigError
from pyro_vae.numerics import chunks

Tensor = torch.Tensor


class LayerUnits(NamedTuple):
    """One latent site: the number of active units, Var_i(E_q[z_u | x_i]) (d,) and the KL per unit (d,), NaN if not factorized."""

    active: int
    variances: Tensor
    kl_per_unit: Tensor


def _per_unit(fn: Distribution, value: Tensor) -> Tensor | None:
    """log fn(value) per unit (S, B, d) for a factorized density, else None."""
    if isinstance(fn, Independent) and fn.reinterpreted_batch_ndims == 1:
        return fn.base_dist.log_prob(value)
    return None


@torch.no_grad()
def layer_units(program: Any, x: Tensor, *, num_samples: int = 100, threshold: float = 0.01,
                batch_size: int = 100) -> dict[str, LayerUnits]:
    """{latent site: :class:`LayerUnits`} of ``program`` on the rows of x (module docstring), S = ``num_samples``."""
    positive_int("num_samples", num_samples)
    positive_int("batch_size", batch_size)
    number("threshold", threshold, minimum=0)
    if x.dim() != 2 or x.shape[0] < 2:
        raise ConfigError(f"layer_units needs at least 2 rows of x (a variance over the data), got shape {tuple(x.shape)}")
    means: dict[str, list[Tensor]] = {name: [] for name in program.latents}
    kls: dict[str, list[Tensor]] = {name: [] for name in program.latents}
    for r0, nr in chunks(x.shape[0], batch_size):
        model_trace, guide_trace = traces(program.model, program.guide, num_samples, x[r0:r0 + nr])
        for name in program.latents:
            q_site, p_site = guide_trace.nodes[name], model_trace.nodes[name]
            if q_site["fn"].support.is_discrete:  # a class label (M2's y) has no units
                means.pop(name, None), kls.pop(name, None)
                continue
            z = q_site["value"].expand(num_samples, nr, -1)
            means[name].append(z.mean(0))
            log_q, log_p = _per_unit(q_site["fn"], z), _per_unit(p_site["fn"], z)
            kl = (log_q - log_p).mean(0) if log_q is not None and log_p is not None else torch.full_like(z[0], math.nan)
            kls[name].append(kl)
    out = {}
    for name in means:
        variances = torch.cat(means[name]).var(0)
        out[name] = LayerUnits(int((variances > threshold).sum()), variances, torch.cat(kls[name]).mean(0))
    return out


__all__ = ["LayerUnits", "layer_units"]
