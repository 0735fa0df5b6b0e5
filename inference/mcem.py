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
the lag-1 autocorrelation along that axis drops to ~0.04 (``tests/inference/test_mcem.py``).

**M-step**: ``m_steps`` Adam steps (learning rate ``lr``, decaying exponentially to
``lr * lr_decay`` over the run) on theta = the trainable parameters of the prior, likelihood
and decoder, never the encoder or guide family, minimizing the Monte Carlo estimate

    loss(theta) = -(1 / (B S)) sum_{i in I} sum_s log p_theta(x_i, z_is) + (weight_decay / N) ||theta||^2,

i.e. (1/N) x minus the full-data objective sum_i E_{z ~ chains}[log p(x_i, z)] - weight_decay
||theta||^2, whose penalty is -log N(theta; 0, s^2 I) for weight_decay = 1 / (2 s^2) (the
paper's Gaussian prior on theta; 0 = maximum likelihood). A VampPrior keeps using the
(frozen) encoder to map its learnable pseudo-inputs.

**Reported numbers.** ``MCEMEpoch.objective``: the mean over an epoch's minibatches of
(1 / (B S)) sum_{i, s} log p_theta(x_i, z_is) at the states right after the E-step, before the
M-step (not a bound on log p(x): it lacks the posterior's entropy). ``samples_evaluated``
counts datapoint-gradient evaluations: every HMC transition evaluates grad U at its start and
after each leapfrog step, (L + 1) x B x S (the initial step-size search's transitions included),
and every M-step gradient step B x S.

**Scoring.** MCEM yields no q(z | x), so it is scored like every method by the one yardstick,
:func:`inference.evaluate.log_likelihood`, with a per-datapoint Gaussian proposal:
:func:`mcem_proposal` (q_i fitted by local VI, :func:`inference.local_vi.fit_local`, theta
fixed; held-out or any rows), or :func:`chain_proposal` (Gaussians fitted to further HMC
draws of the training rows' chains)::

    result = fit_mcem(vae, data, epochs=50)
    q = mcem_proposal(result.vae, data.test, full_cov=True)
    log_likelihood(result.vae.model, q.guide, data.test, batch_size=len(data.test))

**Ground truth** for the linear-Gaussian model (pPCA): :func:`exact_em`, Tipping & Bishop's EM
with the E-step in closed form, monotone in log-likelihood and converging to the ML solution.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pyro
import torch
from torch import nn
from tqdm.auto import tqdm

from inference.local_vi import (
    LocalGaussianGuide, check_continuous_latents, fit_local, frozen, prepare_training, theta_parameters,
    theta_penalty,
)
from inference.mcmc import GaussianProposal, LatentPosterior, adapt_step_size, vectorized_hmc_step
from inference.training import adam
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError, TrainingError
from pyro_vae.linear_gaussian import em_step, log_marginal
from pyro_vae.vae import VAE

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
INITS = ("prior", "encoder")
STEP_SIZE_MODES = ("global", "per_datapoint")
STEP_SIZE_BOUNDS = (1e-4, 10.0)  # eps is clipped to this range by the adaptation
INIT_CHUNK = 1000  # rows pushed through the encoder at once for init="encoder"


# -- results -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MCEMEpoch:
    """One epoch of :func:`fit_mcem`.

    ``objective``: mean over the epoch's minibatches of (1/(B S)) sum log p_theta(x_i, z_is) at the
    E-step's states (nats per datapoint); ``accept_rate``: mean Metropolis acceptance probability of
    the epoch's transitions; ``step_size``: eps at the epoch's end (the median of eps_i in
    "per_datapoint" mode); ``seconds``: wall time (not reproducible); ``batches``: minibatches done
    (fewer than ceil(N / B) only in an epoch cut short by ``budget_seconds``).
    """

    epoch: int
    objective: float
    accept_rate: float
    step_size: float
    seconds: float
    batches: int


class EStep(NamedTuple):
    """Outcome of :func:`e_step`: new states, new step size, mean acceptance per row (B,), gradient rows spent."""

    z: Tensor
    step_size: float | Tensor
    accept_prob: Tensor
    gradient_evals: int


@dataclass(frozen=True)
class MCEMResult:
    """Outcome of :func:`fit_mcem` (``wall_time``, ``samples_evaluated``, ``stopped`` as in ``svi.FitResult``).

    ``vae``: the fitted model (prior, likelihood, decoder; encoder and guide family untouched);
    ``z``: the chain table (N, S, d), the last state of each training row's chains; ``step_size``:
    the final eps (a float, or an (N,) tensor in "per_datapoint" mode); ``history``: one
    :class:`MCEMEpoch` per epoch started; ``samples_evaluated``: datapoint-gradient evaluations
    (module docstring); ``stopped``: "completed" or "budget" (``budget_seconds`` ran out);
    ``x``: the training rows the chains belong to; ``hmc_steps``: L, the leapfrog steps per
    transition; ``step_size_jitter``: the relative jitter of eps; ``dynamic_binarization``:
    whether x was re-binarized every epoch (then the chains followed p(z | binarized x_i) and
    ``x`` holds the probabilities).
    """

    vae: VAE
    z: Tensor
    step_size: float | Tensor
    history: tuple[MCEMEpoch, ...]
    wall_time: float
    samples_evaluated: int
    stopped: str
    weight_decay: float
    x: Tensor
    hmc_steps: int
    step_size_jitter: float = 0.0
    dynamic_binarization: bool = False

    @property
    def best_epoch(self) -> int:
        """The epoch whose parameters the VAE holds: the last one (MCEM keeps no best state)."""
        return len(self.history)

    @property
    def best_val_elbo(self) -> None:
        """None: MCEM computes no validation ELBO (score with :func:`mcem_proposal` instead)."""
        return None


@dataclass(frozen=True)
class EMResult:
    """Outcome of :func:`exact_em` (float64).

    ``log_likelihood[t]``: (1/N) sum_i log N(x_i; mu, W_t W_t^T + sigma_t^2 I) after t EM steps
    (t = 0 is the initialization); ``iterations``: EM steps taken; ``converged``: whether the last
    step raised the per-datapoint log-likelihood by less than ``tol``.
    """

    W: Tensor
    mu: Tensor
    sigma: Tensor
    log_likelihood: tuple[float, ...]
    iterations: int
    converged: bool


# -- the pieces --------------------------------------------------------------------------------------------
def check_mcem_model(vae: VAE, x: Tensor) -> None:
    """Raise UnsupportedModelError unless the model's only latent site is "z" with support R^d.

    HMC moves z freely in R^d, so discrete latents and a constrained p(z) are refused; the
    check is :func:`inference.local_vi.check_continuous_latents`, shared by every method that
    infers one real latent vector per datapoint.
    """
    check_continuous_latents(vae, "MCEM")


def log_joint(vae: VAE, z: Tensor, x: Tensor) -> Tensor:
    """log p_theta(z_is) + log p_theta(x_i | z_is) for z of shape (B, S, d) and x (B, D); shape (B, S).

    The S chains of a row are flattened into B * S rows for the decoder (so any network works)."""
    b, s, d = z.shape
    flat = z.reshape(b * s, d)
    xs = x.repeat_interleave(s, dim=0) if s > 1 else x
    return (vae.prior().log_prob(flat) + vae.decode(flat).log_prob(xs)).reshape(b, s)


def latent_potential(vae: VAE, x: Tensor):
    """U(z) = -[log p(z_is) + log p_theta(x_i | z_is)] for z (B, S, d), shape (B, S); p(z) built once.

    Call with theta frozen (``requires_grad=False``) so no graph is built through it.
    """
    prior = vae.prior()

    def potential(z: Tensor) -> Tensor:
        b, s, d = z.shape
        flat = z.reshape(b * s, d)
        xs = x.repeat_interleave(s, dim=0) if s > 1 else x
        return -(prior.log_prob(flat) + vae.decode(flat).log_prob(xs)).reshape(b, s)

    return potential


def e_step(
    vae: VAE,
    x: Tensor,
    z: Tensor,
    step_size: float | Tensor,
    *,
    hmc_steps: int = 10,
    transitions: int = 1,
    target_accept: float = 0.9,
    adapt_rate: float = 0.05,
    jitter: float = 0.0,
    generator: torch.Generator | None = None,
) -> EStep:
    r"""``transitions`` HMC transitions of every chain z_is ~ p_theta(z | x_i), theta frozen.

    ``z``: (B, S, d) states of the rows x (B, D); ``step_size``: a float (one eps for all chains)
    or a (B,) tensor (eps_i per row, shared by its S chains). With ``jitter`` = j > 0 each chain's
    transition uses eps x (1 + j (2u - 1)), u ~ U(0, 1) drawn afresh per chain and transition:
    a state-independent random step keeps p(z | x_i) invariant and breaks the periodicity of
    fixed-length leapfrog trajectories on near-Gaussian posteriors (Neal 2011, sec. 5.4.2.2),
    which otherwise bring chains back near their start. After each transition eps moves
    by :func:`inference.mcmc.adapt_step_size` towards ``target_accept`` (global: from the mean
    acceptance; per row: from the row's mean over its chains); ``adapt_rate=0`` keeps it fixed,
    and then each chain is an exact Markov chain leaving p_theta(z | x_i) invariant. Returns the
    new states, eps, the acceptance probability per row (mean over chains and transitions) and
    the gradient rows evaluated, transitions x (hmc_steps + 1) x B x S.
    """
    if z.dim() != 3 or z.shape[0] != x.shape[0]:
        raise ConfigError(f"z must hold (B, S, d) chain states for the {x.shape[0]} rows of x, got {tuple(z.shape)}")
    if not 0 <= jitter < 1:
        raise ConfigError(f"jitter must be in [0, 1) (eps is drawn from eps x [1 - jitter, 1 + jitter]), got {jitter!r}")
    b, s, _ = z.shape
    per_row = torch.is_tensor(step_size) and step_size.dim() > 0
    accept = torch.zeros(b, dtype=z.dtype, device=z.device)
    with frozen(vae):
        potential = latent_potential(vae, x)
        for _ in range(transitions):
            eps = step_size.unsqueeze(-1).expand(b, s) if per_row else step_size
            if jitter > 0:
                u = torch.rand(b, s, generator=generator, dtype=z.dtype, device=z.device)
                eps = torch.as_tensor(eps, dtype=z.dtype, device=z.device) * (1 + jitter * (2 * u - 1))
            step = vectorized_hmc_step(potential, z, eps, hmc_steps, generator=generator)
            z = step.z
            row_accept = step.accept_prob.mean(-1)
            accept += row_accept
            if adapt_rate > 0:
                step_size = adapt_step_size(
                    step_size, row_accept if per_row else step.accept_prob, target_accept, adapt_rate, STEP_SIZE_BOUNDS
                )
    return EStep(z, step_size, accept / transitions, transitions * (hmc_steps + 1) * b * s)


def search_step_size(
    vae: VAE,
    x: Tensor,
    z: Tensor,
    step_size: float,
    *,
    hmc_steps: int = 10,
    target_accept: float = 0.9,
    jitter: float = 0.0,
    generator: torch.Generator | None = None,
    max_tries: int = 30,
) -> EStep:
    r"""A starting eps within a factor 2 of where the mean acceptance crosses ``target_accept``.

    Pyro's "reasonable step size" heuristic for one global eps on the rows x with states z
    (B, S, d) (``jitter`` as in :func:`e_step`): one HMC transition at eps; then, in the
    direction that moves the mean acceptance a towards the target, eps is doubled (a > target)
    or halved (a < target) with one transition each, until a crosses the target (or ``max_tries`` / the bounds
    :data:`STEP_SIZE_BOUNDS` stop it). Returns the largest eps tried whose a >= target (the
    smallest tried if none), the chains moved by these (valid, theta-fixed) transitions, the
    last acceptance per row and the gradient rows spent. It is needed because the stochastic
    approximation log eps += rate (a - target) climbs by at most rate x (1 - target) per
    transition: from eps 10x too small, ~460 transitions at rate 0.05.
    """
    low, high = STEP_SIZE_BOUNDS
    eps, evals = float(step_size), 0
    est = e_step(vae, x, z, eps, hmc_steps=hmc_steps, adapt_rate=0.0, jitter=jitter, generator=generator)
    z, evals, a = est.z, evals + est.gradient_evals, float(est.accept_prob.mean())
    up = a >= target_accept
    best = eps if up else None
    for _ in range(max_tries):
        new = min(high, eps * 2.0) if up else max(low, eps / 2.0)
        if new == eps:
            break
        est = e_step(vae, x, z, new, hmc_steps=hmc_steps, adapt_rate=0.0, jitter=jitter, generator=generator)
        z, evals, a = est.z, evals + est.gradient_evals, float(est.accept_prob.mean())
        eps = new
        if a >= target_accept:
            best = eps
        if (a < target_accept) == up:  # crossed the target
            break
    chosen = best if best is not None else eps
    return EStep(z, chosen, est.accept_prob, evals)


@torch.no_grad()
def initial_chains(vae: VAE, x: Tensor, num_samples_per_point: int = 1, init: str | Tensor = "prior") -> Tensor:
    """The starting chain table (N, S, d): z_is ~ p(z) ("prior"), z_is ~ q_phi(z | x_i) ("encoder"), or a tensor.

    A tensor of shape (N, d) starts all S chains of row i at its row; (N, S, d) is used as given.
    Draws use torch's global RNG (seed it first).
    """
    n, s, d = x.shape[0], num_samples_per_point, vae.latent_dim
    if isinstance(init, str):
        if init not in INITS:
            raise ConfigError(f"init={init!r} is not valid; choose one of: {', '.join(INITS)}, or pass a tensor of states")
        if init == "prior":
            z = vae.prior().sample((n, s))
        else:
            z = torch.cat([vae.posterior(x[r0:r0 + INIT_CHUNK]).sample((s,)).transpose(0, 1)
                           for r0 in range(0, n, INIT_CHUNK)])
        return z.to(x.dtype).contiguous()
    z = torch.as_tensor(init).detach().to(x.dtype)
    if z.shape == (n, d):
        z = z.unsqueeze(1).expand(n, s, d)
    if z.shape != (n, s, d):
        raise ConfigError(f"an init tensor must have shape (N, d) = {(n, d)} or (N, S, d) = {(n, s, d)}, got {tuple(z.shape)}")
    if not bool(torch.isfinite(z).all()):
        raise ConfigError("the init tensor holds non-finite values")
    return z.clone().contiguous()


def _check_settings(**kw: Any) -> None:
    for name in ("epochs", "batch_size", "hmc_steps", "transitions_per_estep", "num_samples_per_point"):
        v = kw[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
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


def _generator_seed(seed: int) -> int:
    """A 64-bit seed for the chain/batch generator derived from ``seed`` (decorrelated from torch's global stream)."""
    return int(np.random.SeedSequence([seed, 0x3CE3]).generate_state(1, dtype=np.uint64)[0])


# -- fit_mcem ---------------------------------------------------------------------------------------------------
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
) -> MCEMResult:
    r"""Fit theta by Monte Carlo EM with persistent per-datapoint HMC chains (module docstring).

    For each epoch, the training rows in a random order (a dedicated generator seeded from
    ``seed`` draws the order, the HMC momenta and accept decisions, and dynamic binarizations),
    in minibatches I of ``batch_size``: E-step (:func:`e_step`: ``transitions_per_estep`` HMC
    transitions of L = ``hmc_steps`` leapfrog steps for each of the S = ``num_samples_per_point``
    chains of each row, eps adapted towards ``target_accept``), then M-step (``m_steps`` Adam
    steps on theta minimizing -(1/(B S)) sum_{i in I, s} log p_theta(x_i, z_is)
    + (weight_decay / N) ||theta||^2). ``m_steps=0`` runs the E-steps only (sampling
    p_theta(z | x_i) with theta fixed). The learning rate decays exponentially from ``lr`` to
    ``lr * lr_decay`` over the ``epochs`` x ceil(N / B) minibatches.

    ``init``: "prior", "encoder" or a tensor (see :func:`initial_chains`); ``step_size``: the
    initial eps; ``step_size_mode``: "global" or "per_datapoint"; ``step_size_search``: before
    the first epoch, move eps by doublings/halvings on one minibatch to where the acceptance
    crosses the target (:func:`search_step_size`; the start of every eps_i in "per_datapoint"
    mode); ``adapt_rate=0`` freezes eps at ``step_size`` (no search either);
    ``step_size_jitter``: each chain's transition draws its step from eps x [1 - j, 1 + j]
    (see :func:`e_step`; 0 = the plain fixed step).
    ``budget_seconds``: stop after the first minibatch that ends past this wall time (the
    epoch's record then covers the minibatches done; ``stopped="budget"``).

    Raises UnsupportedModelError for discrete latents or a p(z) not on R^d, DataError for data
    outside the likelihood's support, ConfigError for bad settings, TrainingError when the
    objective becomes non-finite.
    """
    _check_settings(
        epochs=epochs, batch_size=batch_size, hmc_steps=hmc_steps, transitions_per_estep=transitions_per_estep,
        num_samples_per_point=num_samples_per_point, m_steps=m_steps, lr=lr, lr_decay=lr_decay, step_size=step_size,
        step_size_mode=step_size_mode, target_accept=target_accept, adapt_rate=adapt_rate,
        step_size_jitter=step_size_jitter, weight_decay=weight_decay, budget_seconds=budget_seconds, seed=seed,
    )
    if not isinstance(vae, VAE):
        raise ConfigError(f"fit_mcem needs a VAE (pyro_vae.build_vae), got {type(vae).__name__}")
    vae, x, dynamic = prepare_training(vae, data, seed, "MCEM")
    n = int(x.shape[0])

    t0 = time.perf_counter()
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    generator = torch.Generator().manual_seed(_generator_seed(seed))
    s = num_samples_per_point
    z_table = initial_chains(vae, x, s, init)
    samples = 0
    start_eps = float(step_size)
    if step_size_search and adapt_rate > 0:
        with pyro.validation_enabled(False):  # the data were checked above
            idx = torch.randperm(n, generator=generator)[:batch_size]
            xb = x.index_select(0, idx)
            found = search_step_size(vae, torch.bernoulli(xb, generator=generator) if dynamic else xb,
                                     z_table.index_select(0, idx), start_eps, hmc_steps=hmc_steps,
                                     target_accept=target_accept, jitter=step_size_jitter, generator=generator)
        z_table[idx] = found.z
        samples += found.gradient_evals
        logger.info("fit_mcem: step size search %.4g -> %.4g (acceptance %.3f)", start_eps, found.step_size,
                    float(found.accept_prob.mean()))
        start_eps = float(found.step_size)
    eps: float | Tensor = start_eps if step_size_mode == "global" else torch.full((n,), start_eps, dtype=x.dtype)
    theta = theta_parameters(vae)
    if m_steps > 0 and not theta:
        logger.info("fit_mcem: no trainable theta (prior, likelihood and decoder are frozen); running E-steps only")
    optimizer = adam(theta, lr=lr) if (m_steps > 0 and theta) else None
    steps_per_epoch = math.ceil(n / batch_size)
    schedule = (
        torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay ** (1.0 / (epochs * steps_per_epoch)))
        if optimizer is not None and lr_decay < 1 else None
    )
    history: list[MCEMEpoch] = []
    stopped = "completed"
    was_training = vae.training
    bar = tqdm(range(1, epochs + 1), desc="MCEM", unit="epoch", disable=not progress, leave=False)
    try:
        vae.train()
        with contextlib.ExitStack() as stack:
            stack.enter_context(frozen(vae.encoder))  # not theta: no gradients into the encoder or guide family
            stack.enter_context(frozen(vae.family))
            for epoch in bar:
                t_epoch = time.perf_counter()
                order = torch.randperm(n, generator=generator)
                total_obj, total_acc, done = 0.0, 0.0, 0
                for step, r0 in enumerate(range(0, n, batch_size), start=1):
                    idx = order[r0:r0 + batch_size]
                    xb = x.index_select(0, idx)
                    if dynamic:
                        xb = torch.bernoulli(xb, generator=generator)
                    with pyro.validation_enabled(epoch == 1 and step == 1):  # data checked above; every step costs
                        est = e_step(
                            vae, xb, z_table.index_select(0, idx), eps if step_size_mode == "global" else eps[idx],
                            hmc_steps=hmc_steps, transitions=transitions_per_estep, target_accept=target_accept,
                            adapt_rate=adapt_rate, jitter=step_size_jitter, generator=generator,
                        )
                        z_table[idx] = est.z
                        if step_size_mode == "global":
                            eps = est.step_size
                        else:
                            eps[idx] = est.step_size
                        samples += est.gradient_evals
                        objective = _m_step(vae, est.z, xb, optimizer, theta, m_steps, weight_decay / n, schedule)
                    if not math.isfinite(objective):
                        raise TrainingError(
                            f"fit_mcem diverged: non-finite log p(x, z) ({objective}) at epoch {epoch}, step {step}; "
                            f"lower lr (now {lr}), add weight_decay, or check that the data suit the likelihood "
                            "(a learnable noise scale can collapse under EM)"
                        )
                    samples += (m_steps if optimizer is not None else 0) * xb.shape[0] * s
                    total_obj += objective
                    total_acc += float(est.accept_prob.mean())
                    done += 1
                    if budget_seconds is not None and time.perf_counter() - t0 > budget_seconds:
                        stopped = "budget"
                        break
                eps_now = eps if isinstance(eps, float) else float(eps.median())
                record = MCEMEpoch(epoch, total_obj / done, total_acc / done, eps_now, time.perf_counter() - t_epoch, done)
                history.append(record)
                bar.set_postfix(objective=f"{record.objective:.3f}", accept=f"{record.accept_rate:.2f}", eps=f"{eps_now:.3g}")
                logger.debug("MCEM epoch %d: log p(x, z) %.4f per datapoint, acceptance %.3f, eps %.4g",
                             epoch, record.objective, record.accept_rate, eps_now)
                if stopped == "budget":
                    logger.info("fit_mcem: budget of %.1f s used up during epoch %d (%d of %d minibatches)",
                                budget_seconds, epoch, done, steps_per_epoch)
                    break
    finally:
        bar.close()
        vae.train(was_training)
    wall = time.perf_counter() - t0
    if history:
        logger.info("fit_mcem: %d epochs in %.1f s, log p(x, z) %.4f per datapoint, acceptance %.3f",
                    len(history), wall, history[-1].objective, history[-1].accept_rate)
    return MCEMResult(vae, z_table, eps if isinstance(eps, float) else eps.clone(), tuple(history), wall, samples,
                      stopped, float(weight_decay), x, hmc_steps, float(step_size_jitter), dynamic)


def _m_step(
    vae: VAE,
    z: Tensor,
    x: Tensor,
    optimizer: torch.optim.Optimizer | None,
    theta: list[nn.Parameter],
    m_steps: int,
    penalty_weight: float,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
) -> float:
    """``m_steps`` Adam steps on -(1/(B S)) sum log p(x_i, z_is) + penalty; returns the first step's mean log p(x, z)."""
    z = z.detach()
    if optimizer is None or m_steps == 0:
        with torch.no_grad():
            return float(log_joint(vae, z, x).mean())
    first = math.nan
    for k in range(m_steps):
        mean_lp = log_joint(vae, z, x).mean()
        value = mean_lp.item()
        if k == 0:
            first = value
        if not math.isfinite(value):
            return value
        loss = -mean_lp + theta_penalty(theta, penalty_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if schedule is not None:
        schedule.step()
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
    (:func:`inference.local_vi.fit_local`, theta fixed): q_i = argmax ELBO_i = argmin KL(q_i || p_theta(z | x_i))
    over diagonal (or, ``full_cov=True``, full-covariance) Gaussians. ``init``: "prior" (default;
    MCEM leaves the encoder untrained, so "encoder" only helps if it was trained elsewhere) or an
    (N, d) tensor of starting means, e.g. the training rows' chain states ``result.z.mean(1)``.
    ``fit_kwargs`` go to ``fit_local`` (steps, lr, num_particles, seed, ...). Use as
    ``evaluate.log_likelihood(vae.model, q.guide, x, batch_size=len(x))``.
    """
    fit = fit_local(vae, x, init=init, full_cov=full_cov, **{"progress": False, **fit_kwargs})
    return fit.guide


@torch.no_grad()
def sample_chains(
    result: MCEMResult,
    *,
    draws: int = 100,
    transitions_per_draw: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> LatentPosterior:
    """Continue every training row's chains with theta and eps fixed and keep ``draws`` states per chain.

    Each draw is ``transitions_per_draw`` HMC transitions (L = ``result.hmc_steps``, eps =
    ``result.step_size`` with ``result.step_size_jitter``, no adaptation, so the chains are
    exact Markov chains for p_theta(z | x_i)) from the stored states ``result.z``. Returns a
    :class:`inference.mcmc.LatentPosterior` with z of shape (S, draws, N, d) (the S chains of
    a row as chains; ``warmup`` = 0: the MCEM run was the warm-up) and per-draw sample stats.
    Refused for a run on dynamically binarized data (its chains followed changing binarizations).
    """
    if result.dynamic_binarization:
        raise ConfigError(
            "the chains of a dynamically binarized run followed a fresh binarization each epoch, so they are "
            "not draws for any fixed row; score with mcem_proposal(vae, x) on fixed (binarized) rows instead"
        )
    for name, v in (("draws", draws), ("transitions_per_draw", transitions_per_draw)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    t0 = time.perf_counter()
    vae, x, z = result.vae, result.x, result.z.clone()
    n, s, d = z.shape
    generator = torch.Generator().manual_seed(_generator_seed(seed))
    out = torch.empty(s, draws, n, d, dtype=z.dtype)
    accept = np.zeros((s, draws))
    lp = np.zeros((s, draws))
    evals = 0
    for t in tqdm(range(draws), desc="MCEM chains", disable=not progress, leave=False):
        est = e_step(vae, x, z, result.step_size, hmc_steps=result.hmc_steps, transitions=transitions_per_draw,
                     adapt_rate=0.0, jitter=result.step_size_jitter, generator=generator)
        z, evals = est.z, evals + est.gradient_evals
        out[:, t] = z.transpose(0, 1)
        accept[:, t] = float(est.accept_prob.mean())
        lp[:, t] = log_joint(vae, z, x).sum(0).numpy()
    eps = result.step_size if isinstance(result.step_size, float) else float(result.step_size.median())
    stats = {
        "diverging": np.zeros((s, draws), dtype=bool),
        "accept_prob": accept,
        "step_size": np.full((s, draws), eps),
        "num_steps": np.full((s, draws), transitions_per_draw * (result.hmc_steps + 1), dtype=np.int64),
        "lp": lp,
    }
    return LatentPosterior(out, stats, time.perf_counter() - t0, evals, "hmc", x, 0)


def chain_proposal(result: MCEMResult, *, draws: int = 100, scale: float = 1.2, seed: int = 0) -> GaussianProposal:
    """q(z | x_i) = N(m_i, scale^2 Sigma_i) fitted to :func:`sample_chains` draws, for the training rows only.

    m_i, Sigma_i: mean and covariance of row i's draws pooled over its chains (see
    :meth:`inference.mcmc.LatentPosterior.gaussian_proposal`). Use as
    ``evaluate.log_likelihood(result.vae.model, chain_proposal(result), result.x)``.
    """
    return sample_chains(result, draws=draws, seed=seed).gaussian_proposal(scale)


# -- ground truth for pPCA ---------------------------------------------------------------------------------
def exact_em(
    X: Tensor,
    latent_dim: int,
    *,
    iterations: int = 10_000,
    tol: float = 1e-12,
    init: tuple[Tensor, Tensor | float] | None = None,
    seed: int = 0,
) -> EMResult:
    r"""Tipping & Bishop's EM for pPCA, E-step in closed form (:func:`pyro_vae.linear_gaussian.em_step`).

    mu = the sample mean (its ML value, fixed); from (W_0, sigma_0), repeat
    (W, sigma) <- em_step(X, W, mu, sigma) and record
    l_t = (1/N) sum_i log N(x_i; mu, W_t W_t^T + sigma_t^2 I), which never decreases, until
    l_{t+1} - l_t < ``tol`` or ``iterations`` steps. ``init``: (W_0, sigma_0); default W_0 with
    N(0, s^2) entries and sigma_0 = s, s^2 = tr(S) / D (S the sample covariance), from ``seed``.
    The limit is the ML solution (:func:`pyro_vae.linear_gaussian.ml_solution`) up to a rotation of W.
    """
    X = torch.as_tensor(X, dtype=torch.float64)
    if X.dim() != 2:
        raise ConfigError(f"X must be an (N, D) matrix, got shape {tuple(X.shape)}")
    D = X.shape[1]
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or not 1 <= latent_dim < D:
        raise ConfigError(f"latent_dim must be an integer with 1 <= latent_dim < D = {D}, got {latent_dim!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(f"iterations must be a positive integer, got {iterations!r}")
    if not tol >= 0:
        raise ConfigError(f"tol must be >= 0, got {tol!r}")
    mu = X.mean(0)
    if init is None:
        s = float(((X - mu).pow(2).sum(1).mean() / D).sqrt())
        g = torch.Generator().manual_seed(seed)
        W, sigma = s * torch.randn(D, latent_dim, generator=g, dtype=torch.float64), torch.tensor(s, dtype=torch.float64)
    else:
        W, sigma = (torch.as_tensor(v, dtype=torch.float64) for v in init)
        if W.shape != (D, latent_dim) or not float(sigma) > 0:
            raise ConfigError(f"init must be (W of shape {(D, latent_dim)}, sigma > 0), got W {tuple(W.shape)}, sigma {float(sigma)}")
    history = [float(log_marginal(X, W, mu, sigma).mean())]
    converged = False
    t = 0
    for t in range(1, iterations + 1):
        W, sigma = em_step(X, W, mu, sigma)
        history.append(float(log_marginal(X, W, mu, sigma).mean()))
        if history[-1] - history[-2] < tol:
            converged = True
            break
    logger.info("exact_em: %d iterations, log-likelihood %.6f -> %.6f per datapoint%s", t, history[0], history[-1],
                "" if converged else f" (not converged to tol {tol})")
    return EMResult(W, mu, sigma, tuple(history), t, converged)


__all__ = [
    "MCEMEpoch", "MCEMResult", "EStep", "EMResult", "fit_mcem", "e_step", "search_step_size", "initial_chains", "latent_potential",
    "log_joint", "theta_parameters", "check_mcem_model", "mcem_proposal", "sample_chains", "chain_proposal",
    "exact_em", "INITS", "STEP_SIZE_MODES",
]
