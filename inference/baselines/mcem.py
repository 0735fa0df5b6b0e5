r"""Monte Carlo EM with persistent HMC chains (the MCEM baseline of Kingma & Welling 2014, appendix E).

Model: the VAE's own program, for datapoints i = 1..N::

    z_i ~ p_theta(z)                   site "z"   (prior; may have learnable parameters)
    x_i | z_i ~ p_theta(x | z_i)       site "x"   (decoder + likelihood)

EM maximizes log p_theta(x) = sum_i log p_theta(x_i) through Fisher's identity

    grad_theta log p_theta(x_i) = E_{p_theta(z | x_i)}[ grad_theta log p_theta(x_i, z) ],

replacing the posterior expectation by Monte Carlo over states of Markov chains that target
p_theta(z | x_i). There is no encoder: the posterior is sampled, not approximated.

**Chains.** Every training row i owns S = ``num_samples_per_point`` persistent chain states
z_is (the table ``z`` of shape (N, S, d)), started from the prior (``init="prior"``), from the
encoder's q_phi(z | x_i) (``init="encoder"``), or from a given tensor. A chain only moves when its
row is in the minibatch, and it resumes there the next epoch: it keeps tracking the slowly
moving posterior p_theta(z | x_i) instead of burning in afresh after every M-step.

**E-step** for a minibatch I of B rows: ``transitions_per_estep`` HMC transitions
(:func:`inference.mcmc.vectorized_hmc_step`, identity mass, ``hmc_steps`` = L leapfrog steps, one
independent Metropolis accept/reject per chain) of every z_is, theta frozen, with potential

    U_i(z) = -[ log p_theta(z) + log p_theta(x_i | z) ]        (from ``vae.prior()`` and ``vae.decode(z)``).

**Step size** eps, first placed within a factor 2 of the right scale by doublings/halvings on
one minibatch (:func:`search_step_size`), then adapted towards the acceptance rate
``target_accept`` (0.9, as in the paper) by :func:`inference.mcmc.adapt_step_size`,
log eps <- log eps + rate (a - target), after every transition. ``step_size_mode="global"``
(default) keeps ONE eps for all chains, updated from the minibatch's mean acceptance
probability a; ``"per_datapoint"`` keeps a table eps_i (N,), updated from row i's own
acceptance (mean over its S chains). Global is the default because (1) every
M-step moves all posteriors together and a global eps follows at every transition (N / B x T
updates per epoch), whereas eps_i is updated only T times per epoch, when row i is drawn;
(2) a chain's own acceptance history then enters its step size only through a 1/(B S) share of
the mean, so each chain stays close to a true Markov chain, while per-datapoint adaptation
feeds every chain its own history (adaptive MCMC bias); (3) it is what the paper describes.
Choose ``"per_datapoint"`` when posterior widths differ by orders of magnitude across
datapoints. ``adapt_rate=0`` freezes eps (exact Markov chains for fixed theta).

**Step-size jitter.** With a fixed eps and L, a leapfrog trajectory on a near-Gaussian
posterior rotates each principal axis by a fixed angle; where eps L is near a multiple of
2 pi sd (on pPCA the 90%-acceptance step lands almost exactly there on the widest axis: lag-1
autocorrelation 0.99 there) the chains hardly move, the E-step's samples stay stale and MCEM
stalls or is biased. Each chain's transition therefore draws its step from
eps x [1 - j, 1 + j], j = ``step_size_jitter`` = 0.5 (state-independent, so still exact):
the lag-1 autocorrelation along that axis drops to ~0.04.

**M-step**: ``m_steps`` Adam steps (learning rate ``lr``, decaying exponentially per epoch to
``lr * lr_decay`` at the last epoch) on theta = the trainable parameters of the prior, likelihood
and decoder, never the encoder or guide family, minimizing the Monte Carlo estimate

    loss(theta) = -(1 / (B S)) sum_{i in I} sum_s log p_theta(x_i, z_is) + (weight_decay / N) ||theta||^2,

i.e. (1/N) x minus the full-data objective sum_i E_{z ~ chains}[log p(x_i, z)] - weight_decay
||theta||^2, whose penalty is -log N(theta; 0, s^2 I) for weight_decay = 1 / (2 s^2) (the
paper's Gaussian prior on theta; 0 = maximum likelihood). A VampPrior keeps using the
(frozen) encoder to map its learnable pseudo-inputs.

**Reported numbers.** ``EpochRecord.train_elbo``: the mean over an epoch's minibatches of
(1 / (B S)) sum_{i, s} log p_theta(x_i, z_is) at the states right after the E-step, before the
M-step (not a bound on log p(x): it lacks the posterior's entropy). ``samples_evaluated``
counts datapoint-gradient evaluations: every HMC transition evaluates grad U at its start and
after each leapfrog step, (L + 1) x B x S (the initial step-size search's transitions included),
and every M-step gradient step B x S.

**Scoring.** MCEM yields no q(z | x), so it is scored like every method by the one yardstick,
:func:`inference.evaluate.log_likelihood`, with a per-datapoint Gaussian proposal:
:func:`mcem_proposal` (q_i fitted by local VI, :func:`inference.baselines.local_vi.fit_local`, theta
fixed; held-out or any rows), or :func:`chain_proposal` (Gaussians fitted to further HMC
draws of the training rows' chains)::

    result = fit_mcem(vae, data, epochs=50)           # on the training loop; result.modules["chains"]
    q = mcem_proposal(result.vae, data.test, full_cov=True)
    log_likelihood(result.vae.model, q.guide, data.test, batch_size=len(data.test))

**Ground truth** for the linear-Gaussian model (pPCA): :func:`inference.baselines.exact_em.exact_em`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pyro
import torch
from torch import nn

from inference.baselines.chains import STEP_SIZE_BOUNDS, Chains, chains_log_joint, e_step, initial_chains, search_step_size
from inference.baselines.local_guides import LocalGaussianGuide
from inference.baselines.local_vi import fit_local, prepare
from inference.devices import module_placement, on_module
from inference.baselines.theta import frozen, theta_parameters, theta_penalty
from inference.training import FitResult, StepResult, Task, TrainState, init_state, make_optimizer
from inference.training import fit as run_loop
from inference.training.loop import Batch
from pyro_vae.checks import positive_int
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.spec import TrainSpec
from pyro_vae.vae import VAE

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
STEP_SIZE_MODES = ("global", "per_datapoint")

def _check_settings(**kw: Any) -> None:
    for name in ("epochs", "batch_size", "hmc_steps", "transitions_per_estep", "num_samples_per_point"):
        positive_int(name, kw[name])
    m = kw["m_steps"]
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise ConfigError(f"m_steps must be an integer >= 0 (0: E-steps only, theta fixed), got {m!r}")
    if not kw["lr"] > 0:
        raise ConfigError(f"lr must be > 0, got {kw['lr']!r}")
    if not 0 < kw["lr_decay"] <= 1:
        raise ConfigError(f"lr_decay (final lr / initial lr) must be in (0, 1], got {kw['lr_decay']!r}")
    low, high = STEP_SIZE_BOUNDS
    if not low <= kw["step_size"] <= high:
        raise ConfigError(f"step_size must be in [{low}, {high}], got {kw['step_size']!r}")
    if kw["step_size_mode"] not in STEP_SIZE_MODES:
        raise ConfigError(f"step_size_mode={kw['step_size_mode']!r} is not valid; choose one of: {', '.join(STEP_SIZE_MODES)}")
    if not 0 < kw["target_accept"] < 1:
        raise ConfigError(f"target_accept must be in (0, 1), got {kw['target_accept']!r}")
    if not 0 <= kw["step_size_jitter"] < 1:
        raise ConfigError(f"step_size_jitter must be in [0, 1), got {kw['step_size_jitter']!r}")
    if not kw["adapt_rate"] >= 0:
        raise ConfigError(f"adapt_rate must be >= 0 (0 freezes the step size), got {kw['adapt_rate']!r}")
    if not (isinstance(kw["weight_decay"], (int, float)) and kw["weight_decay"] >= 0):
        raise ConfigError(f"weight_decay must be a number >= 0 (1 / (2 s^2) for a N(0, s^2) prior on theta), got {kw['weight_decay']!r}")
    budget = kw["budget_seconds"]
    if budget is not None and not budget > 0:
        raise ConfigError(f"budget_seconds must be > 0 or None, got {budget!r}")
    seed = kw["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed!r}")


def _summarize(steps: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """An epoch's stats: mean acceptance, eps at its end, minibatches done."""
    return {"accept_rate": float(np.mean([s["accept_rate"] for s in steps])), "step_size": steps[-1]["step_size"],
            "batches": float(len(steps))}


def _mcem_task(vae: VAE, chains: Chains, n: int, settings: Mapping[str, Any]) -> Task:
    """The MCEM :class:`~inference.training.Task`: E-step on the minibatch's chains, then the M-step on theta."""
    theta = theta_parameters(vae)
    m_steps, penalty = settings["m_steps"], settings["weight_decay"] / n

    def step(state: TrainState, batch: Batch, beta: float) -> StepResult:
        idx, xb = batch["idx"], batch["x"]
        eps = chains.eps if not chains.per_datapoint else chains.eps[idx]
        est = e_step(vae, xb, chains.z.index_select(0, idx), float(eps) if eps.dim() == 0 else eps,
                     hmc_steps=chains.hmc_steps, transitions=settings["transitions_per_estep"],
                     target_accept=settings["target_accept"], adapt_rate=settings["adapt_rate"], jitter=chains.jitter,
                     generator=state.generator)
        chains.z[idx] = est.z
        if chains.per_datapoint:
            chains.eps[idx] = est.step_size
        else:
            chains.eps.fill_(float(est.step_size))
        optimizer = state.optimizers.get("theta")
        objective = _m_step(vae, est.z, xb, optimizer, theta, m_steps, penalty)
        samples = est.gradient_evals + (m_steps if optimizer is not None else 0) * xb.shape[0] * chains.z.shape[1]
        eps_now = float(chains.eps.median()) if chains.per_datapoint else float(chains.eps)
        return StepResult(-objective * n, samples, {"accept_rate": float(est.accept_prob.mean()), "step_size": eps_now})

    def optimizers(train: TrainSpec) -> dict[str, torch.optim.Optimizer]:
        if m_steps > 0 and theta:
            return {"theta": make_optimizer(theta, train)}
        if m_steps > 0:
            logger.info("fit_mcem: no trainable theta (prior, likelihood and decoder are frozen); running E-steps only")
        return {}

    return Task(modules={"program": vae, "chains": chains}, make_optimizers=optimizers, step=step,
                summarize=_summarize, label="MCEM")


def fit_mcem(
    vae: VAE,
    data: DataSplits | Tensor,
    *,
    epochs: int,
    batch_size: int = 100,
    lr: float = 1e-3,
    lr_decay: float = 1.0,
    m_steps: int = 1,
    hmc_steps: int = 10,
    transitions_per_estep: int = 1,
    step_size: float = 0.1,
    step_size_mode: str = "global",
    target_accept: float = 0.9,
    adapt_rate: float = 0.05,
    step_size_jitter: float = 0.5,
    step_size_search: bool = True,
    num_samples_per_point: int = 1,
    weight_decay: float = 0.0,
    init: str | Tensor = "prior",
    seed: int = 0,
    progress: bool = True,
    budget_seconds: float | None = None,
) -> FitResult:
    r"""Fit theta by Monte Carlo EM with persistent per-datapoint HMC chains (module docstring), on the training loop.

    Each minibatch I of ``batch_size`` rows: E-step (:func:`e_step`: ``transitions_per_estep``
    HMC transitions of L = ``hmc_steps`` leapfrog steps for each of the S =
    ``num_samples_per_point`` chains of each row, eps adapted towards ``target_accept``), then
    M-step (``m_steps`` Adam steps on theta minimizing -(1/(B S)) sum_{i in I, s} log p_theta(x_i, z_is)
    + (weight_decay / N) ||theta||^2); ``m_steps=0`` samples p_theta(z | x_i) with theta fixed.
    The learning rate decays exponentially per epoch from ``lr`` to ``lr * lr_decay``. The fit's
    generator draws the order, the momenta, the accept decisions and dynamic binarizations.

    ``init``: "prior", "encoder" or a tensor (:func:`initial_chains`); ``step_size``: the initial
    eps; ``step_size_mode``: "global" or "per_datapoint"; ``step_size_search``: first move eps by
    doublings/halvings on one minibatch (:func:`search_step_size`); ``adapt_rate=0`` freezes eps
    (no search either); ``step_size_jitter``: eps drawn from eps x [1 - j, 1 + j] per chain and
    transition; ``budget_seconds``: stop after the first minibatch that ends past this fitting
    time (``stopped="budget"``).

    Returns the :class:`~inference.training.FitResult`: ``modules["chains"]`` (:class:`Chains`)
    holds the chain table and eps; each record's ``train_elbo`` is the mean over its minibatches
    of (1/(B S)) sum log p_theta(x_i, z_is) at the E-step's states, ``stats`` its acceptance
    rate, eps at its end and minibatches done.
    """
    settings = dict(
        epochs=epochs, batch_size=batch_size, hmc_steps=hmc_steps, transitions_per_estep=transitions_per_estep,
        num_samples_per_point=num_samples_per_point, m_steps=m_steps, lr=lr, lr_decay=lr_decay, step_size=step_size,
        step_size_mode=step_size_mode, target_accept=target_accept, adapt_rate=adapt_rate,
        step_size_jitter=step_size_jitter, weight_decay=weight_decay, budget_seconds=budget_seconds, seed=seed,
    )
    _check_settings(**settings)
    if not isinstance(vae, VAE):
        raise ConfigError(f"fit_mcem needs a VAE (pyro_vae.build_vae), got {type(vae).__name__}")
    vae, splits = prepare(vae, data, seed, "MCEM")
    _require_cpu(vae)
    x, n = on_module(vae, splits.train), int(splits.train.shape[0])
    train = TrainSpec(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      **({"lr_schedule": "exponential", "lr_final": lr * lr_decay} if lr_decay < 1 else {}))
    dynamic = splits.binarize == "dynamic"
    chains = Chains(x.new_zeros(n, num_samples_per_point, vae.latent_dim), float(step_size), x,
                    hmc_steps=hmc_steps, jitter=step_size_jitter, dynamic=dynamic)
    task = _mcem_task(vae, chains, n, settings)
    state = init_state(task, train)  # seeds Pyro's RNGs and the generator from `seed`
    chains.z.copy_(initial_chains(vae, x, num_samples_per_point, init))
    if step_size_search and adapt_rate > 0:
        state = state.replace(samples=_search(vae, chains, x, dynamic, state.generator, settings))
    if step_size_mode == "per_datapoint":
        chains.eps = torch.full((n,), float(chains.eps), dtype=x.dtype, device=x.device)
    with contextlib.ExitStack() as stack:
        stack.enter_context(frozen(vae.encoder))  # not theta: no gradients into the encoder or guide family
        stack.enter_context(frozen(vae.family))
        result = run_loop(task, splits, train, state=state, max_seconds=budget_seconds, progress=progress)
    if result.history:
        last = result.history[-1]
        logger.info("fit_mcem: %d epochs in %.1f s, log p(x, z) %.4f per datapoint, acceptance %.3f",
                    len(result.history), result.wall_time, last.train_elbo, last.stats.get("accept_rate", math.nan))
    return result


def _require_cpu(vae: VAE) -> None:
    """UnsupportedModelError for a program off the CPU: the HMC chains draw from a CPU generator."""
    device = module_placement(vae)[0]
    if device.type != "cpu":
        raise UnsupportedModelError(f"fit_mcem runs on the CPU only (its HMC chains draw from a CPU generator); the "
                                    f"program is on {device}: move it with vae.cpu()")


def _search(vae: VAE, chains: Chains, x: Tensor, dynamic: bool, generator: torch.Generator,
            settings: Mapping[str, Any]) -> int:
    """Place eps by :func:`search_step_size` on one minibatch; moves those chains; returns the gradient rows spent."""
    idx = torch.randperm(x.shape[0], generator=generator)[:settings["batch_size"]]
    xb = x.index_select(0, idx)
    if dynamic:
        xb = torch.bernoulli(xb, generator=generator)
    with torch.no_grad(), pyro.validation_enabled(False):  # the data were checked before
        found = search_step_size(vae, xb, chains.z.index_select(0, idx), float(chains.eps),
                                 hmc_steps=settings["hmc_steps"], target_accept=settings["target_accept"],
                                 jitter=settings["step_size_jitter"], generator=generator)
    chains.z[idx] = found.z
    logger.info("fit_mcem: step size search %.4g -> %.4g (acceptance %.3f)", float(chains.eps), found.step_size,
                float(found.accept_prob.mean()))
    chains.eps.fill_(float(found.step_size))
    return found.gradient_evals


def _m_step(vae: VAE, z: Tensor, x: Tensor, optimizer: torch.optim.Optimizer | None, theta: list[nn.Parameter],
            m_steps: int, penalty_weight: float) -> float:
    """``m_steps`` Adam steps on -(1/(B S)) sum log p(x_i, z_is) + penalty; returns the first step's mean log p(x, z)."""
    z = z.detach()
    if optimizer is None or m_steps == 0:
        with torch.no_grad():
            return float(chains_log_joint(vae, z, x).mean())
    first = math.nan
    for k in range(m_steps):
        mean_lp = chains_log_joint(vae, z, x).mean()
        value = mean_lp.item()
        if k == 0:
            first = value
        if not math.isfinite(value):
            return value
        loss = -mean_lp + theta_penalty(theta, penalty_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return first


# -- scoring --------------------------------------------------------------------------------------------------
def mcem_proposal(
    vae: VAE,
    x: Tensor,
    *,
    init: str | Tensor = "prior",
    full_cov: bool = False,
    **fit_kwargs: Any,
) -> LocalGaussianGuide:
    r"""A per-datapoint Gaussian proposal q_i for importance-sampling log p_theta(x_i) (any rows, e.g. held out).

    MCEM has no q(z | x), so the common yardstick gets q_i fitted by local VI
    (:func:`inference.baselines.local_vi.fit_local`, theta fixed): q_i = argmax ELBO_i =
    argmin KL(q_i || p_theta(z | x_i)) over diagonal (or, ``full_cov=True``, full-covariance)
    Gaussians. ``init``: "prior" (default; MCEM leaves the encoder untrained) or an (N, d) tensor
    of starting means, e.g. the chain states ``result.modules["chains"].z.mean(1)``.
    ``fit_kwargs`` go to ``fit_local``. Use as ``evaluate.log_likelihood(vae.model, q.guide, x, batch_size=len(x))``.
    """
    fit = fit_local(vae, x, init=init, full_cov=full_cov, **{"progress": False, **fit_kwargs})
    return fit.guide

__all__ = ["fit_mcem", "mcem_proposal", "STEP_SIZE_MODES"]
