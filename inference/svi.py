r"""Stochastic variational inference for a VAE with the SGVB estimators (Kingma & Welling 2014).

For a minibatch x_1..x_B of the N training rows, L particles z_il = mu_phi(x_i) + L_phi(x_i)
eps_il with eps_il ~ N(0, I) (the reparameterization trick), and a KL weight beta in (0, 1]:

* estimator A, objective ``"trace"`` (:class:`ReparamTrace_ELBO`, a ``Trace_ELBO``)::

    L^A = (N / B) sum_i (1/L) sum_l [ log p_theta(x_i | z_il)
                                      + beta (log p(z_il) - log q_phi(z_il | x_i)) ]

* estimator B, objective ``"meanfield"`` (:class:`AnalyticKL_ELBO`, a ``TraceMeanField_ELBO``
  that skips the log-densities the closed-form KL replaces)::

    L^B = (N / B) sum_i [ (1/L) sum_l log p_theta(x_i | z_il) - beta KL(q_phi(z | x_i) || p(z)) ]

  with the KL in closed form where torch registers one for (guide, prior) and estimated by
  Monte Carlo as in A otherwise (see :func:`kl_mode`).

* objective ``"iwae"`` (:class:`IWAE`): the K-particle importance-weighted bound, per datapoint,
  s sum_i [logsumexp_k log w_ik - log K] (K = 1: estimator A);
* objective ``"rws"`` (:class:`ReweightedWakeSleep`): reweighted wake-sleep, one surrogate whose
  value is the IWAE loss and whose gradients are wake-theta for theta and wake-phi (K >= 2) or
  sleep-phi (K = 1: classic wake-sleep) for phi. For both, the reported train/validation "ELBO"
  is the K-particle IWAE bound.

Both A and B are unbiased for the full-data ELBO (at beta = 1). The loss is -L, computed by
``objective.differentiable_loss(vae.model, vae.guide, x, num_data=N, beta=beta)`` and
minimized with a torch optimizer on ``vae.parameters()`` (Adam, or Pyro's ClippedAdam, which
clamps every gradient coordinate to [-clip_norm, clip_norm]). Particles are vectorized
(``vectorize_particles=True``, ``max_plate_nesting=1``).

Reported numbers, in nats per datapoint:

* train ELBO of an epoch: the mean over its minibatches of -loss / N, i.e. the annealed bound
  actually optimized (at that step's beta);
* validation ELBO: -sum(loss over ``data.val``) / N_val, same objective, beta = 1, no grad.

Learning-rate schedule (:func:`learning_rate`): epoch e of E runs at lr_e, with t = (e - 1) /
(E - 1) and lr_E = ``lr_final`` (default lr / 100): ``"constant"`` lr_e = lr; ``"exponential"``
lr_e = lr (lr_final / lr)^t; ``"cosine"`` lr_e = lr_final + (lr - lr_final)(1 + cos(pi t)) / 2.
lr_e depends only on (e, E), so a resumed run follows the same schedule as long as E is unchanged.

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
from typing import Any, Iterable, Mapping

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions import Distribution
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.optim.clipped_adam import ClippedAdam
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import Independent, kl_divergence
from tqdm.auto import tqdm

from inference.checkpoint import FORMAT, capture_rng, load_checkpoint, restore_rng, save_checkpoint
from pyro_vae.data import DataSplits, batches
from pyro_vae.errors import ConfigError, DataError, TrainingError, UnsupportedModelError
from pyro_vae.registry import Registry
from pyro_vae.spec import TrainSpec, spec_to_dict
from pyro_vae.vae import VAE

logger = logging.getLogger(__name__)

OBJECTIVES: Registry[ELBO] = Registry("objective")
OPTIMIZERS = ("adam", "clipped_adam")
LR_SCHEDULES = ("constant", "exponential", "cosine")

_NON_FINITE = re.compile(r"\b(nan|inf)\b", re.IGNORECASE)
VAL_CHUNK = 1000  # validation rows per forward pass
# TrainSpec fields that may change between a run and its resumption (they do not change the math
# of the epochs already done).
RESUMABLE_CHANGES = ("epochs", "patience", "validate_every_step")


def _lean_traces_apply(guide) -> bool:
    """Whether :func:`_lean_traces` may replace Pyro's traces: Pyro's validation is off and the guide
    is a plain callable (a ``GuideMessenger`` such as ``AutoNormalMessenger`` records its own traces)."""
    return not is_validation_enabled() and not isinstance(poutine.unwrap(guide), Messenger)


def _lean_path(elbo: ELBO, guide) -> bool:
    """Whether the one-particle shortcuts below apply (:func:`_lean_traces_apply`, one particle)."""
    return elbo.num_particles == 1 and _lean_traces_apply(guide)


def _lean_traces(model, guide, args, kwargs) -> tuple[poutine.Trace, poutine.Trace]:
    """Guide trace and the model replayed against it, subsample sites pruned, no densities computed.

    What ``pyro.infer.enum.get_importance_trace`` does for a callable guide with validation off,
    minus its eager ``compute_log_prob``/``compute_score_parts`` at every site.
    """
    guide_trace = poutine.trace(guide, graph_type="flat").get_trace(*args, **kwargs)
    replayed = poutine.replay(model, trace=guide_trace)
    model_trace = poutine.trace(replayed, graph_type="flat").get_trace(*args, **kwargs)
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)


def _sample_sites(trace: poutine.Trace) -> list[dict]:
    return [site for site in trace.nodes.values() if site["type"] == "sample"]


def _reparameterized(fn: Distribution) -> bool:
    """Whether Pyro's ``score_parts`` gives draws from ``fn`` no score-function term.

    True for a distribution with Pyro's default ``score_parts`` and ``has_rsample``, seen
    through masking and expansion (which defer to their base); False for one that overrides
    ``score_parts`` (e.g. a ``Rejector``, partially reparameterized), so it gets Pyro's surrogate.
    """
    while isinstance(fn, (MaskedDistribution, ExpandedDistribution)):
        fn = fn.base_dist
    return type(fn).score_parts is Distribution.score_parts and bool(fn.has_rsample)


def _total_log_prob(sites: list[dict]) -> torch.Tensor | float:
    """sum over sites of scale * mask * log fn(value), without a leading 0 + ... node."""
    terms = [_log_prob_sum(site) for site in sites]
    return sum(terms[1:], terms[0]) if terms else 0.0


class ReparamTrace_ELBO(Trace_ELBO):
    r"""SGVB estimator A, ``Trace_ELBO`` summing the log-densities directly for reparameterized guides.

    Per particle z ~ q(z | x), with each site's scale (the data plate's N / B, times beta at
    the ``z`` site)::

        L^A = sum_{model sites} scale log p(site) - sum_{guide sites} scale log q(site)

    When every guide site is reparameterized (Pyro's ``score_parts`` has no score-function
    term, see :func:`_reparameterized`), Pyro's surrogate objective equals L^A itself, so -L^A
    is returned as the differentiable loss without ``Trace_ELBO``'s surrogate bookkeeping.
    Same value, gradient and random draws. A guide with a non-reparameterized site gets
    Pyro's surrogate (score-function terms); several particles, a ``GuideMessenger`` guide or
    enabled validation (the first step of a fit, or ``validate_every_step``) take Pyro's own
    path, with all of its checks.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """-L^A for one particle (the fit loop checks the loss for NaN); Pyro's loop otherwise."""
        if not _lean_path(self, guide):
            return super().differentiable_loss(model, guide, *args, **kwargs)
        model_trace, guide_trace = _lean_traces(model, guide, args, kwargs)
        guide_sites = _sample_sites(guide_trace)
        if not all(_reparameterized(site["fn"]) for site in guide_sites):
            model_trace.compute_log_prob()
            guide_trace.compute_score_parts()
            loss, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
            return loss + (surrogate - torch_item(surrogate))
        return _total_log_prob(guide_sites) - _total_log_prob(_sample_sites(model_trace))


@OBJECTIVES.register("trace")
def trace_objective(num_particles: int = 1) -> ELBO:
    """SGVB estimator A: log p(x, z) - log q(z | x) at z ~ q(z | x) (:class:`ReparamTrace_ELBO`)."""
    # One particle needs no particle plate (same draws, no extra batch dimension to broadcast).
    return ReparamTrace_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1)


class AnalyticKL_ELBO(TraceMeanField_ELBO):
    r"""SGVB estimator B, ``TraceMeanField_ELBO`` evaluating only the densities its sum uses.

    Per particle z ~ q(z | x), with s the data plate's scale N / B and beta the KL weight::

        L^B = s sum_i [ log p(x_i | z_i) - beta KL(q(z | x_i) || p(z)) ]

    the KL in closed form where torch registers one for (guide site, model site), and
    log p(z_i) - log q(z_i | x_i) at the draw otherwise (as ``TraceMeanField_ELBO`` does).
    Pyro's ``TraceMeanField_ELBO`` builds its traces with ``get_importance_trace``, which
    evaluates log p(z) and log q(z) at every latent site even where the KL replaces them;
    here they are evaluated only at sites without a closed-form KL. Same value, gradient
    and random draws. While Pyro's validation is enabled (the first step of a fit, or
    ``validate_every_step``) the traces are Pyro's own, with all of its checks.
    """

    def _get_trace(self, model, guide, args, kwargs):
        if not _lean_traces_apply(guide):
            return super()._get_trace(model, guide, args, kwargs)
        return _lean_traces(model, guide, args, kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """-L^B for one particle (the fit loop checks the loss for NaN); Pyro's loop otherwise."""
        if not _lean_path(self, guide):
            return super().differentiable_loss(model, guide, *args, **kwargs)
        return -self._elbo_particle(*self._get_trace(model, guide, args, kwargs))

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo = self._elbo_particle(model_trace, guide_trace)
        return -float(elbo.detach()), -elbo

    def _elbo_particle(self, model_trace, guide_trace) -> torch.Tensor:
        elbo = torch.zeros(())
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                elbo = elbo + _log_prob_sum(site)
                continue
            q_site = guide_trace.nodes[name]
            try:
                kl = kl_divergence(q_site["fn"], site["fn"])
            except NotImplementedError:
                elbo = elbo + _log_prob_sum(site) - _log_prob_sum(q_site)
            else:
                elbo = elbo - scale_and_mask(kl, q_site["scale"], q_site["mask"]).sum()
        for name, q_site in guide_trace.nodes.items():  # auxiliary guide variables: - log q
            if q_site["type"] == "sample" and name not in model_trace.nodes:
                elbo = elbo - _log_prob_sum(q_site)
        return elbo


def _log_prob_sum(site: dict) -> torch.Tensor:
    """sum of scale * mask * log fn(value) at a trace site (reusing Pyro's value when present)."""
    if "log_prob_sum" in site:
        return site["log_prob_sum"]
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, site["scale"], site["mask"]).sum()


@OBJECTIVES.register("meanfield")
def meanfield_objective(num_particles: int = 1) -> ELBO:
    """SGVB estimator B: E_q[log p(x | z)] - KL(q || p), KL analytic where registered (TraceMeanField_ELBO)."""
    return AnalyticKL_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1)


# -- importance-weighted objectives: IWAE and reweighted wake-sleep ---------------------------------
class _PerDatapointWeights(ELBO):
    r"""Per-datapoint log importance weights of K vectorized particles, for IWAE and RWS.

    For a minibatch of B rows out of N (data plate scale s = N / B) and KL weight beta, with
    z_ik ~ q(z | x_i) drawn under ``pyro.plate(..., K, dim=-2)``::

        log w_ik = log p(x_i | z_ik) + beta (log p(z_ik) - log q(z_ik | x_i))

    read off each site's scaled log-density divided by s. Pyro's ``RenyiELBO`` and
    ``ReweightedWakeSleep`` cannot be used as they are: neither has ``differentiable_loss``,
    ``RenyiELBO.loss_and_grads`` only differentiates when parameters live in the param store
    (the VAE's live in modules), both take the logsumexp of the s-scaled log-densities (wrong
    under minibatch scaling: logsumexp_k(s a_k) != s logsumexp_k a_k), and
    ``ReweightedWakeSleep`` sums the log-weights over the whole batch before the logsumexp
    (one importance weight per batch, not per datapoint).
    """

    detach_guide = False

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1) -> None:
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
            raise ConfigError(f"num_particles must be a positive integer, got {num_particles!r}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, vectorize_particles=True)

    def _get_trace(self, model, guide, args, kwargs):
        from pyro.infer.enum import get_importance_trace

        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs, detach=self.detach_guide)

    def _log_densities(self, model, guide, args, kwargs) -> tuple[torch.Tensor, torch.Tensor, float, Any]:
        """(sum of model log-densities (K, B), sum of guide log-densities (K, B), s, guide trace), both / s."""
        ((model_trace, guide_trace),) = list(self._get_traces(model, guide, args, kwargs))
        K = self.num_particles
        observed = [s for s in model_trace.nodes.values() if s["type"] == "sample" and s["is_observed"]]
        frames = [f for s in observed for f in s["cond_indep_stack"] if f.vectorized and f.dim == -1]
        if not frames:
            raise UnsupportedModelError(
                "per-datapoint importance weights (iwae, rws) need the observations inside a data plate at "
                "dim=-1 (pyro.plate('data', N, dim=-1)); this model has none"
            )
        size, full = frames[0].size, frames[0].full_size
        scale = float(full) / size if full is not None else 1.0

        def total(trace) -> torch.Tensor:
            out = torch.zeros(())
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                lp = site["log_prob"]
                lp = lp if torch.is_tensor(lp) else torch.as_tensor(lp)
                if lp.dim() > 2 or (lp.dim() >= 1 and lp.shape[-1] != size) or lp.dim() == 0:
                    raise UnsupportedModelError(
                        f"site {name!r} has a log-density of shape {tuple(lp.shape)}; iwae and rws weight each "
                        f"datapoint separately and need every site inside the data plate ({size} rows, dim=-1) "
                        "with no other batch dimension. Fit models with global latents by 'trace' or 'meanfield'"
                    )
                out = out + lp.reshape((1,) * (2 - lp.dim()) + tuple(lp.shape))
            return out.expand(K, size) / scale

        return total(model_trace), total(guide_trace), scale, guide_trace

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The value of :meth:`differentiable_loss` (no gradients)."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """:meth:`differentiable_loss` with ``backward()`` (for ``pyro.infer.SVI``)."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _guide_latents(guide_trace) -> list[dict]:
    from pyro.poutine.util import site_is_subsample

    return [s for s in guide_trace.nodes.values()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]


class IWAE(_PerDatapointWeights):
    r"""Importance-weighted bound (Burda et al. 2015), per datapoint, K particles::

        L_K = s sum_i [ logsumexp_k log w_ik - log K ],   z_ik = reparameterized draws of q(z | x_i)

    loss = -L_K (``differentiable_loss``). E[L_K] <= log p(x) and grows with K; with K = 1 it
    is estimator A (``Trace_ELBO``) exactly, with the same draws. The gradient flows through
    z_ik (reparameterization), so every latent guide site must have ``rsample``. This is
    ``RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1)``'s
    bound, computed per datapoint with minibatch scaling outside the logsumexp.
    """

    needs_reparam = True

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """-L_K for the batch (scaled to the data set by s = N / B)."""
        log_p, log_q, scale, guide_trace = self._log_densities(model, guide, args, kwargs)
        if torch.is_grad_enabled():
            _require_reparam(_guide_latents(guide_trace), "iwae")
        log_w = log_p - log_q
        return -scale * (log_w.logsumexp(0) - math.log(self.num_particles)).sum()


class ReweightedWakeSleep(_PerDatapointWeights):
    r"""Reweighted wake-sleep (Bornschein & Bengio 2015), per datapoint, as ONE surrogate loss.

    Draws z_ik ~ q(z | x_i) are detached (no reparameterization: any guide works). With
    log w_ik as in :class:`_PerDatapointWeights` computed with log q detached, and
    normalized weights wbar_ik = softmax_k(log w_ik) (detached)::

        wake-theta  l_theta = -s sum_i [ logsumexp_k log w_ik - log K ]     (the IWAE bound)
        wake-phi    l_wake  = -s sum_i sum_k wbar_ik log q(z_ik | x_i)
        sleep-phi   l_sleep = -s sum_i (1/K) sum_k log q(z'_ik | x'_ik),   (z', x') ~ p(z) p_theta(x | z)
        l_phi       = insomnia * l_wake + (1 - insomnia) * l_sleep

    ``differentiable_loss`` returns l_theta + (l_phi - stop_grad(l_phi)): its value is the
    IWAE loss (so train and validation "ELBOs" are the K-sample IWAE bound) and its gradient
    is d l_theta / d theta for the model's parameters and d l_phi / d phi for the guide's
    (l_theta does not depend on phi: z and log q are detached in it; l_phi does not depend on
    theta: the weights and the sleep fantasies are detached). One optimizer step on the sum
    is therefore the RWS update of both. With K = 1 and insomnia = 0 this is Hinton et al.'s
    (1995) wake-sleep; wake-phi needs K >= 2 (one normalized weight is 1: its expected
    gradient is zero). Sleep-phi needs a model with one observed site whose value is the
    guide's first argument (``guide(x, ...)``), as for a VAE.
    """

    detach_guide = True

    def __init__(self, num_particles: int = 2, insomnia: float = 1.0, max_plate_nesting: int = 1) -> None:
        super().__init__(num_particles, max_plate_nesting)
        if not (isinstance(insomnia, (int, float)) and 0.0 <= insomnia <= 1.0):
            raise ConfigError(f"insomnia must be in [0, 1] (1 = wake-phi, 0 = sleep-phi), got {insomnia!r}")
        if insomnia > 0 and num_particles < 2:
            raise ConfigError(
                "reweighted wake-sleep's wake-phi update needs num_particles >= 2 (with one particle the "
                "normalized weight is 1 and the guide's expected gradient is zero); set train.num_particles >= 2, "
                "or insomnia=0 (sleep-phi: classic wake-sleep)"
            )
        self.insomnia = float(insomnia)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """Value: -IWAE_K bound; gradient: wake-theta for theta, (wake|sleep)-phi for phi (class docstring)."""
        log_p, log_q, scale, _ = self._log_densities(model, guide, args, kwargs)
        log_w = log_p - log_q.detach()
        log_sum = log_w.logsumexp(0)
        wake_theta = -scale * (log_sum - math.log(self.num_particles)).sum()
        if not torch.is_grad_enabled():
            return wake_theta
        phi_loss = torch.zeros(())
        if self.insomnia > 0:
            weights = (log_w - log_sum).exp().detach()
            phi_loss = phi_loss + self.insomnia * (-scale * (weights * log_q).sum())
        if self.insomnia < 1:
            phi_loss = phi_loss + (1.0 - self.insomnia) * self._sleep_phi(model, guide, args, kwargs)
        return wake_theta + (phi_loss - phi_loss.detach())

    def _sleep_phi(self, model, guide, args, kwargs) -> torch.Tensor:
        """-s sum_i (1/K) sum_k log q(z'_ik | x'_ik) for K fantasies (z', x') ~ p per row of the batch."""
        if not args or not torch.is_tensor(args[0]) or args[0].dim() != 2:
            raise UnsupportedModelError("sleep-phi (insomnia < 1) needs a guide called as guide(x, ...) with x of shape (B, D)")
        x = args[0]
        K, B = self.num_particles, x.shape[0]
        with torch.no_grad(), pyro.plate("num_sleep_particles_vectorized", K, dim=-2):
            fantasy = poutine.trace(poutine.uncondition(model)).get_trace(*args, **kwargs)
        sites = [s for s in fantasy.nodes.values() if s["type"] == "sample" and not s["is_observed"]]
        observed = [s for s in sites if s["infer"].get("was_observed")]
        if len(observed) != 1 or observed[0]["value"].shape[-1] != x.shape[-1]:
            raise UnsupportedModelError(
                f"sleep-phi (insomnia < 1) needs exactly one observed site shaped like the guide's data; the model has "
                f"{[s['name'] for s in observed]}. Use insomnia=1 (wake-phi)"
            )
        x_fantasy = observed[0]["value"].detach().reshape(K * B, x.shape[-1])
        latents = {s["name"]: s["value"].detach() for s in sites if not s["infer"].get("was_observed")}
        latents = {k: v.reshape(K * B, *v.shape[2:]) for k, v in latents.items()}
        sleep_kwargs = dict(kwargs)
        if sleep_kwargs.get("num_data") is not None:  # keep the scale s = N / B: N K rows stand for K B fantasies
            sleep_kwargs["num_data"] = int(sleep_kwargs["num_data"]) * K
        trace = poutine.trace(poutine.condition(guide, data=latents)).get_trace(x_fantasy, *args[1:], **sleep_kwargs)
        trace.compute_log_prob()
        log_q = sum(s["log_prob"].sum() for s in trace.nodes.values() if s["type"] == "sample" and s["name"] in latents)
        return -log_q / K


def _require_reparam(sites: list[dict], objective: str) -> None:
    for site in sites:
        if not getattr(site["fn"], "has_rsample", False):
            raise UnsupportedModelError(
                f"objective {objective!r} differentiates through reparameterized draws z = g(eps, x), but the guide's "
                f"site {site['name']!r} ({type(site['fn']).__name__}) has no rsample. Use elbo='trace' "
                "(score-function gradients) or 'rws' (reweighted wake-sleep needs no reparameterization)"
            )


@OBJECTIVES.register("iwae")
def iwae_objective(num_particles: int = 1) -> ELBO:
    """Importance-weighted bound (IWAE, Burda et al. 2015) with K = num_particles; K = 1 is estimator A."""
    return IWAE(num_particles=num_particles, max_plate_nesting=1)


@OBJECTIVES.register("rws")
def rws_objective(num_particles: int = 1) -> ELBO:
    """Reweighted wake-sleep: wake-theta on the IWAE bound, wake-phi (K >= 2) or sleep-phi (K = 1: classic wake-sleep)."""
    insomnia = 1.0 if num_particles >= 2 else 0.0
    if num_particles < 2:
        logger.info("rws with num_particles=1: classic wake-sleep (sleep-phi, insomnia=0); K >= 2 gives wake-phi")
    return ReweightedWakeSleep(num_particles=num_particles, insomnia=insomnia, max_plate_nesting=1)


def check_objective(objective: ELBO, name: str, vae: VAE, x: torch.Tensor) -> None:
    """Raise UnsupportedModelError when ``objective`` cannot fit ``vae``.

    "meanfield" (TraceMeanField_ELBO drops score-function terms) and "iwae" differentiate
    through reparameterized draws: every latent site of the guide needs ``rsample``.
    """
    if not (isinstance(objective, TraceMeanField_ELBO) or getattr(objective, "needs_reparam", False)):
        return
    with torch.no_grad(), pyro.validation_enabled(False):
        trace = poutine.trace(vae.guide).get_trace(x[:2])
    _require_reparam(_guide_latents(trace), name)


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: ELBOs in nats per datapoint, beta at its last step, wall seconds (not reproducible)."""

    epoch: int
    train_elbo: float
    val_elbo: float | None
    beta: float
    seconds: float
    lr: float | None = None


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


def check_train_spec(train: TrainSpec) -> TrainSpec:
    """Resolve the names in ``train`` (objective, optimizer, learning-rate schedule) or raise ConfigError listing the valid ones."""
    if train.elbo not in OBJECTIVES:
        raise ConfigError(f"train.elbo={train.elbo!r} is not valid; choose one of: {', '.join(OBJECTIVES.names())}")
    for key, choices in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES)):
        if getattr(train, key) not in choices:
            raise ConfigError(f"train.{key}={getattr(train, key)!r} is not valid; choose one of: {', '.join(choices)}")
    if train.lr_final is not None and train.lr_schedule == "constant":
        raise ConfigError(
            f"train.lr_final={train.lr_final!r} has no effect with lr_schedule='constant'; "
            f"set lr_schedule to one of: {', '.join(s for s in LR_SCHEDULES if s != 'constant')}, or drop lr_final"
        )
    return train


def make_objective(name: str, num_particles: int = 1) -> ELBO:
    """The Pyro ELBO registered as ``name`` (ConfigError listing the valid names otherwise)."""
    return OBJECTIVES.build(name, num_particles)


def kl_beta(step: int, warmup_steps: int) -> float:
    """KL weight at global step ``step`` (1-based): beta = min(1, step / warmup_steps); 1 if no warm-up."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)


def learning_rate(train: TrainSpec, epoch: int) -> float:
    """Learning rate of epoch ``epoch`` (1-based) of ``train.epochs`` under ``train.lr_schedule``.

    With t = (epoch - 1) / (epochs - 1) (t = 0 for a single epoch) and lr_final defaulting to
    lr / 100: constant lr; exponential lr (lr_final / lr)^t; cosine lr_final + (lr - lr_final)
    (1 + cos(pi t)) / 2. Both decays start at lr (epoch 1) and end at lr_final (last epoch).
    """
    if train.lr_schedule == "constant":
        return train.lr
    final = train.lr_final if train.lr_final is not None else train.lr / 100
    t = 0.0 if train.epochs <= 1 else min(1.0, max(0.0, (epoch - 1) / (train.epochs - 1)))
    if train.lr_schedule == "exponential":
        return train.lr * (final / train.lr) ** t
    if train.lr_schedule == "cosine":
        return final + (train.lr - final) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ConfigError(f"unknown lr_schedule {train.lr_schedule!r}; valid schedules are: {', '.join(LR_SCHEDULES)}")


def set_learning_rate(optimizer: torch.optim.Optimizer | None, train: TrainSpec, epoch: int) -> float:
    """Set every parameter group of ``optimizer`` to :func:`learning_rate` (train, epoch); returns it."""
    lr = learning_rate(train, epoch)
    for group in optimizer.param_groups if optimizer is not None else ():
        group["lr"] = lr
    return lr


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


_FUSED_ADAM_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def adam(params: Iterable[torch.Tensor], lr: float, **options: Any) -> torch.optim.Adam:
    r"""torch.optim.Adam, with the fused kernel wherever this torch has one for the parameters.

    Same update, per parameter theta with gradient g at step t (defaults beta1 = 0.9,
    beta2 = 0.999, eps = 1e-8)::

        m_t = beta1 m_{t-1} + (1 - beta1) g_t,    v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
        theta_t = theta_{t-1} - lr (m_t / (1 - beta1^t)) / (sqrt(v_t / (1 - beta2^t)) + eps)

    ``fused=True`` computes it in one kernel over all parameters instead of ~10 tensor
    operations per parameter (on CPU about 4x faster for a VAE's dozen weight tensors; the
    results agree to float rounding). The default implementation is used for parameters fused
    Adam does not take (other dtypes or devices than float16/bfloat16/float32/float64 on CPU or
    CUDA), and where torch refuses ``fused=True`` (torch < 2.4 on CPU, or ``options`` such as
    ``foreach=True`` that exclude it).
    """
    params = list(params)
    if all(p.dtype in _FUSED_ADAM_DTYPES and p.device.type in ("cpu", "cuda") for p in params):
        try:
            return torch.optim.Adam(params, lr=lr, fused=True, **options)
        except (RuntimeError, TypeError):  # this torch has no fused Adam here
            pass
    return torch.optim.Adam(params, lr=lr, **options)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimizer's implementation flags.

    torch copies the saved groups' ``fused``/``foreach`` flags, so a checkpoint written by
    unfused Adam would turn fusing off for the rest of the run. The update is the same either
    way (:func:`adam`); only the speed would differ. Fused Adam keeps its step counts as
    float32 tensors on the parameters' device, so they are converted.
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


def make_optimizer(params: "VAE | Iterable[torch.nn.Parameter]", train: TrainSpec) -> torch.optim.Optimizer:
    """:func:`adam` (lr) or pyro's ClippedAdam(lr, clip_norm) over a module's parameters (or the given ones)."""
    params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
    if not params:
        raise ConfigError("this VAE has no trainable parameters; nothing for SVI to fit")
    if train.optimizer == "adam":
        return adam(params, lr=train.lr)
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
    train = check_train_spec(train if isinstance(train, TrainSpec) else TrainSpec(**dict(train)))
    t_start = time.perf_counter()
    objective = make_objective(train.elbo, train.num_particles)
    if not 0 <= train.seed < 2**32:
        raise ConfigError(f"train.seed={train.seed} must be in [0, 2**32) (numpy's seed range)")
    n_train, n_val = int(data.train.shape[0]), int(data.val.shape[0])
    if train.patience is not None and n_val == 0:
        raise ConfigError("train.patience (early stopping) needs a validation split; set data.val_fraction > 0 or patience=None")
    _check_data(vae, data)
    check_objective(objective, train.elbo, vae, data.train)
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
            lr = set_learning_rate(optimizer, train, epoch)
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
            run.history.append(EpochRecord(epoch, train_elbo, val_elbo, beta, time.perf_counter() - t_epoch, lr))
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
    if train.lr_schedule != "constant" and saved.get("epochs") != now.get("epochs"):
        logger.warning(
            "resuming with epochs %s -> %s under lr_schedule=%r: the remaining epochs follow the schedule of the "
            "new total, so the learning rate is not continuous with the first session's",
            saved.get("epochs"), now.get("epochs"), train.lr_schedule,
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
    load_optimizer_state(optimizer, ckpt["optimizer"])
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
    "OBJECTIVES", "EpochRecord", "FitResult", "adam", "fit", "load_optimizer_state", "make_objective", "make_optimizer", "kl_beta", "learning_rate",
    "set_learning_rate", "kl_mode", "describe_kl", "mean_elbo", "AnalyticKL_ELBO", "ReparamTrace_ELBO", "IWAE", "ReweightedWakeSleep", "check_objective",
]
