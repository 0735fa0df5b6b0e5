r"""Persistent per-datapoint HMC chains: the E-step of Monte Carlo EM, and continuing the chains afterwards.

Every training row i owns S chain states z_is (a :class:`Chains` table (N, S, d)) targeting
p_theta(z | x_i) with potential

    U_i(z) = -[ log p_theta(z) + log p_theta(x_i | z) ]        (from ``vae.prior()`` and ``vae.decode(z)``),

moved by HMC transitions (:func:`inference.mcmc.vectorized_hmc_step`, identity mass, L leapfrog
steps, one Metropolis decision per chain) with step size eps, one global eps or one eps_i per
row, adapted towards a target acceptance by :func:`inference.mcmc.adapt_step_size`.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from inference.progress import bar
from inference.baselines.local_guides import INITS
from inference.baselines.theta import check_continuous_latents, frozen
from inference.mcmc import GaussianProposal, LatentPosterior, adapt_step_size, vectorized_hmc_step
from inference.training import generator_seed
from pyro_vae.checks import positive_int
from pyro_vae.errors import ConfigError
from pyro_vae.vae import VAE

Tensor = torch.Tensor
STEP_SIZE_BOUNDS = (1e-4, 10.0)  # eps is clipped to this range by the adaptation
INIT_CHUNK = 1000  # rows pushed through the encoder at once for init="encoder"


class EStep(NamedTuple):
    """Outcome of :func:`e_step`: new states, new step size, mean acceptance per row (B,), gradient rows spent."""

    z: Tensor
    step_size: float | Tensor
    accept_prob: Tensor
    gradient_evals: int


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


def chains_log_joint(vae: VAE, z: Tensor, x: Tensor) -> Tensor:
    """log p_theta(z_is) + log p_theta(x_i | z_is) for z of shape (B, S, d) and x (B, D); shape (B, S).

    The S chains of a row are flattened into B * S rows for the decoder (so any network works)."""
    b, s, d = z.shape
    flat = z.reshape(b * s, d)
    xs = x.repeat_interleave(s, dim=0) if s > 1 else x
    return (vae.prior().log_prob(flat) + vae.decode(flat).log_prob(xs)).reshape(b, s)


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


class Chains(nn.Module):
    """The persistent chains of the training rows: states ``z`` (N, S, d) and step size ``eps`` (() or (N,)), as buffers.

    Also what continuing them needs: the training rows ``x`` (not saved with the state),
    ``hmc_steps`` L, the relative ``jitter`` of eps, and whether x was re-binarized every epoch
    (``dynamic``: then the chains followed p(z | binarized x_i) and ``x`` holds probabilities).
    """

    def __init__(self, z: Tensor, eps: float | Tensor, x: Tensor, *, hmc_steps: int, jitter: float, dynamic: bool) -> None:
        super().__init__()
        self.register_buffer("z", z)
        self.register_buffer("eps", torch.as_tensor(eps, dtype=z.dtype).clone())
        self.x, self.hmc_steps, self.jitter, self.dynamic = x, int(hmc_steps), float(jitter), bool(dynamic)

    @property
    def per_datapoint(self) -> bool:
        """Whether every row has its own eps_i."""
        return self.eps.dim() > 0

    @property
    def step_size(self) -> float | Tensor:
        """eps: a float (one for all chains), or the (N,) tensor of eps_i."""
        return self.eps.clone() if self.per_datapoint else float(self.eps)


@torch.no_grad()
def sample_chains(
    vae: VAE,
    chains: "Chains",
    *,
    draws: int = 100,
    transitions_per_draw: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> LatentPosterior:
    """Continue every training row's chains with theta and eps fixed and keep ``draws`` states per chain.

    Each draw is ``transitions_per_draw`` HMC transitions (L and eps of the fit, no adaptation,
    so the chains are exact Markov chains for p_theta(z | x_i)) from the stored states. Returns a
    :class:`inference.mcmc.LatentPosterior` with z of shape (S, draws, N, d) (the S chains of a
    row as chains; ``warmup`` = 0: the MCEM run was the warm-up) and per-draw sample stats.
    Refused for a run on dynamically binarized data (its chains followed changing binarizations).
    """
    if chains.dynamic:
        raise ConfigError(
            "the chains of a dynamically binarized run followed a fresh binarization each epoch, so they are "
            "not draws for any fixed row; score with mcem_proposal(vae, x) on fixed (binarized) rows instead"
        )
    positive_int("draws", draws)
    positive_int("transitions_per_draw", transitions_per_draw)
    t0 = time.perf_counter()
    x, z = chains.x, chains.z.clone()
    n, s, d = z.shape
    generator = torch.Generator().manual_seed(generator_seed(seed, 0x3CE3))
    out = torch.empty(s, draws, n, d, dtype=z.dtype, device=z.device)
    accept, lp, evals = np.zeros((s, draws)), np.zeros((s, draws)), 0
    for t in bar(range(draws), enabled=progress, desc="MCEM chains", leave=False):
        est = e_step(vae, x, z, chains.step_size, hmc_steps=chains.hmc_steps, transitions=transitions_per_draw,
                     adapt_rate=0.0, jitter=chains.jitter, generator=generator)
        z, evals = est.z, evals + est.gradient_evals
        out[:, t] = z.transpose(0, 1)
        accept[:, t] = float(est.accept_prob.mean())
        lp[:, t] = chains_log_joint(vae, z, x).sum(0).numpy()
    eps = float(chains.eps.median()) if chains.per_datapoint else float(chains.eps)
    stats = {
        "diverging": np.zeros((s, draws), dtype=bool),
        "accept_prob": accept,
        "step_size": np.full((s, draws), eps),
        "num_steps": np.full((s, draws), transitions_per_draw * (chains.hmc_steps + 1), dtype=np.int64),
        "lp": lp,
    }
    return LatentPosterior(out, stats, time.perf_counter() - t0, evals, "hmc", x, 0)


def chain_proposal(vae: VAE, chains: "Chains", *, draws: int = 100, scale: float = 1.2, seed: int = 0) -> GaussianProposal:
    """q(z | x_i) = N(m_i, scale^2 Sigma_i) fitted to :func:`sample_chains` draws, for the training rows only.

    m_i, Sigma_i: mean and covariance of row i's draws pooled over its chains (see
    :meth:`inference.mcmc.LatentPosterior.gaussian_proposal`). Use as
    ``evaluate.log_likelihood(vae.model, chain_proposal(vae, chains), chains.x)`` with ``chains =
    result.modules["chains"]`` of a :func:`~inference.baselines.mcem.fit_mcem` result.
    """
    return sample_chains(vae, chains, draws=draws, seed=seed).gaussian_proposal(scale)



def check_mcem_model(vae: VAE, x: Tensor) -> None:
    """Raise UnsupportedModelError unless the model's only latent site is "z" with support R^d.

    HMC moves z freely in R^d, so discrete latents and a constrained p(z) are refused; the
    check is :func:`inference.baselines.theta.check_continuous_latents`, shared by every method that
    infers one real latent vector per datapoint.
    """
    check_continuous_latents(vae, "MCEM")



__all__ = [
    "Chains", "EStep", "e_step", "search_step_size", "initial_chains", "latent_potential", "chains_log_joint",
    "sample_chains", "chain_proposal", "check_mcem_model", "STEP_SIZE_BOUNDS",
]
