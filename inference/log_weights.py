r"""Per-datapoint log importance weights: the one function IWAE, RWS, the evaluator and PSIS share.

For a program whose sample sites live in a data plate ``pyro.plate("data", N, dim=-1)`` (B rows
of a minibatch, plate scale s = N / B) and K particles drawn in one vectorized pass
(``pyro.plate("particles", K, dim=-2)`` around the guide and the replayed model)::

    log w_ik = sum_{model sites} c_site log p(site_ik) - sum_{guide latents} c_site log q(site_ik),

with c_site = scale_site / s the site's scale with the minibatch factor divided out: 1 for an
unscaled program, beta at a KL-annealed latent site. Shapes are (K, B). Called with
``num_data=None, beta=1`` (the evaluator does so) the weights are the plain

    log w_ik = log p(x_i, z_ik) - log q(z_ik | x_i),          z_ik ~ q(z | x_i),

whose logsumexp over k minus log K is the importance-sampled (IWAE) estimate of log p(x_i).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from pyro import plate, poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

from pyro_vae.errors import UnsupportedModelError

Tensor = torch.Tensor
PARTICLE_PLATE = "particles"


class LogWeights(NamedTuple):
    """log p and log q of K particles per datapoint, each (K, B); ``log_w = log_p - log_q``.

    ``log_lik`` is the observed sites' part of ``log_p`` (log p(x | z)), so that
    ``log_q - (log_p - log_lik)`` is the single-sample KL(q || p) estimate of the latents.
    """

    log_p: Tensor
    log_q: Tensor
    log_lik: Tensor
    model_trace: poutine.Trace
    guide_trace: poutine.Trace

    @property
    def log_w(self) -> Tensor:
        """log w_ik = log p_ik - log q_ik, shape (K, B)."""
        return self.log_p - self.log_q


def sample_sites(trace: poutine.Trace) -> dict[str, dict]:
    """The sample sites of ``trace`` that carry density: no subsample or auxiliary sites."""
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site) and not site["infer"].get("is_auxiliary", False)
    }


def latent_sites(trace: poutine.Trace) -> dict[str, dict]:
    """The unobserved sample sites of ``trace`` (see :func:`sample_sites`)."""
    return {name: site for name, site in sample_sites(trace).items() if not site["is_observed"]}


def traces(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    num_particles: int,
    *args: Any,
    detach_guide: bool = False,
    **kwargs: Any,
) -> tuple[poutine.Trace, poutine.Trace]:
    """(model trace, guide trace) for K = ``num_particles`` particles on dim -2, the model replayed on the guide's draws.

    ``detach_guide``: the guide's draws are detached before the model is replayed on them, so
    log q(z) keeps its gradient in phi only through q's parameters (reweighted wake-sleep).
    """
    with plate(PARTICLE_PLATE, int(num_particles), dim=-2):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        if detach_guide:
            guide_trace.detach_()
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    check_sites(model_trace, guide_trace)
    return model_trace, guide_trace


def check_sites(model_trace: poutine.Trace, guide_trace: poutine.Trace) -> None:
    """Refuse a guide that misses a latent site of the model, or samples one the model lacks."""
    model_latent, guide_latent = set(latent_sites(model_trace)), set(latent_sites(guide_trace))
    if model_latent - guide_latent:
        raise UnsupportedModelError(
            f"the guide does not sample the model's latent site(s) {sorted(model_latent - guide_latent)}; "
            "importance sampling needs a proposal for every latent variable"
        )
    if guide_latent - model_latent:
        raise UnsupportedModelError(
            f"the guide samples site(s) {sorted(guide_latent - model_latent)} that the model does not have; "
            "rename them to match the model, or mark them infer={'is_auxiliary': True}"
        )


def data_frame(trace: poutine.Trace) -> tuple[int, float, Tensor]:
    """(B, s, an observed value) of the data plate (dim -1) of the observed sites; s = N / B (1 without subsampling).

    Raises UnsupportedModelError when no observed site sits in a plate at dim -1.
    """
    for site in sample_sites(trace).values():
        if not site["is_observed"]:
            continue
        for frame in site["cond_indep_stack"]:
            if frame.vectorized and frame.dim == -1:
                scale = float(frame.full_size) / frame.size if frame.full_size is not None else 1.0
                return int(frame.size), scale, site["value"]
    raise UnsupportedModelError(
        "per-datapoint weights need the observations inside a data plate at dim=-1 "
        "(pyro.plate('data', N, dim=-1)); this model has none"
    )


def per_datapoint(value: Tensor, shape: tuple[int, int], name: str, what: str = "log-density") -> Tensor:
    """``value`` broadcast to (K, B), refusing a site with other batch dimensions or outside the data plate."""
    value = torch.as_tensor(value)
    K, B = shape
    if value.dim() > 2:
        raise UnsupportedModelError(
            f"site {name!r}: its {what} has shape {tuple(value.shape)}, more batch dimensions than "
            "(particles, data); declare extra dimensions as events (.to_event) rather than plates"
        )
    if B > 1 and (value.dim() == 0 or value.shape[-1] != B):
        raise UnsupportedModelError(
            f"site {name!r} is not inside the data plate ({what} of shape {tuple(value.shape)}, expected (..., {B})); "
            "per-datapoint weights need every latent variable local to a datapoint. Fit models with global "
            "latents by 'trace' or 'meanfield'"
        )
    return value.expand(K, B)


def site_log_prob(site: dict, shape: tuple[int, int], plate_scale: float | None = None) -> Tensor:
    """c_site log fn(value), masked, as (K, B): the site's scale divided by ``plate_scale``; unscaled (c = 1) for None."""
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    scale = 1.0 if plate_scale is None else site["scale"] / plate_scale
    return per_datapoint(scale_and_mask(log_p, scale, site["mask"]), shape, site["name"])


def log_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    num_particles: int,
    *args: Any,
    detach_guide: bool = False,
    site_scales: bool = True,
    **kwargs: Any,
) -> LogWeights:
    r"""log p and log q of K = ``num_particles`` particles per datapoint, each of shape (K, B).

    Parameters
    ----------
    model, guide
        Pyro programs sharing a data plate at dim -1; called with ``*args, **kwargs``.
    num_particles
        K, drawn in one vectorized pass.
    detach_guide
        Detach the guide's draws (no reparameterized gradient; log q keeps its phi gradient).
    site_scales
        Keep each site's scale c (beta at an annealed site); False: c = 1 everywhere, the plain
        log p(x_i, z_ik) - log q(z_ik | x_i) whatever scales the program applies.

    Returns
    -------
    LogWeights
        ``log_p[k, i] = sum_model c log p``, ``log_q[k, i] = sum_guide latents c log q``, the two traces.

    Notes
    -----
    ``log_w = log_p - log_q`` is differentiable (unless under ``torch.no_grad``), so IWAE and
    RWS build their losses on it and the evaluator takes its logsumexp (module docstring).
    """
    model_trace, guide_trace = traces(model, guide, num_particles, *args, detach_guide=detach_guide, **kwargs)
    batch, s, observed = data_frame(model_trace)
    s = s if site_scales else None
    shape = (int(num_particles), batch)
    log_p = torch.zeros(shape, dtype=observed.dtype if observed.is_floating_point() else None, device=observed.device)
    log_q, log_lik = torch.zeros_like(log_p), torch.zeros_like(log_p)
    for site in sample_sites(model_trace).values():
        term = site_log_prob(site, shape, s)
        log_p = log_p + term
        if site["is_observed"]:
            log_lik = log_lik + term
    for site in latent_sites(guide_trace).values():
        log_q = log_q + site_log_prob(site, shape, s)
    return LogWeights(log_p, log_q, log_lik, model_trace, guide_trace)


__all__ = [
    "LogWeights", "log_weights", "traces", "sample_sites", "latent_sites", "check_sites", "data_frame",
    "per_datapoint", "site_log_prob",
]
