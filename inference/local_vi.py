r"""Non-amortized (local) variational inference: one free Gaussian q_i(z) per datapoint.

Model: the VAE's own program, for datapoints i = 1..N (``pyro.plate("data", N)``)::

    z_i ~ p(z)                         site "z"
    x_i | z_i ~ p_theta(x | z_i)       site "x"

Guide (:class:`LocalGaussianGuide`): no encoder; every datapoint owns its variational
parameters, held as rows of module parameter tables (not in Pyro's param store)::

    q_i(z) = N(z; m_i, diag s_i^2),     s_i = softplus(r_i) + s_min              (default)
    q_i(z) = N(z; m_i, L_i L_i^T),      L_i = tril(A_i, -1) + diag(softplus(diag A_i) + s_min)
                                                                                  (full_cov=True)

with s_min = 1e-4. The guide samples site "z" under the same ``pyro.plate("data", ...)`` as
``VAE.model`` (size ``num_data`` with a minibatch of B rows, so log-densities carry N / B),
so it pairs with ``vae.model`` in any Pyro ELBO and with :mod:`inference.evaluate`.

Per datapoint the ELBO is

    ELBO_i(theta, q_i) = E_{q_i}[log p_theta(x_i | z)] - KL(q_i(z) || p(z))
                       = log p_theta(x_i) - KL(q_i(z) || p_theta(z | x_i)) <= log p_theta(x_i),

estimated by ``Trace_ELBO`` (estimator A, log p(x_i, z) - log q_i(z) at z ~ q_i) or
``TraceMeanField_ELBO`` (estimator B, the KL in closed form where torch registers it).

* :func:`fit_local` keeps theta fixed and maximizes sum_i ELBO_i(q_i). The sum separates over
  datapoints, so each q_i converges to argmin_q KL(q || p_theta(z | x_i)) within its family and
  the gap log p(x_i) - ELBO_i is the smallest KL the family allows (zero when the family holds
  the posterior, e.g. full-covariance q for pPCA). ``init="prior"`` starts every q_i at p(z)'s
  mean and marginal standard deviations (plain non-amortized VI); ``init="encoder"`` starts q_i
  at the encoder's q_phi(z | x_i) and refines it (semi-amortized VI, Kim et al. 2018), which
  closes the amortization gap (Cremer et al. 2018); a tensor starts the means there (e.g. MAP
  codes).
* :func:`fit_local_vi` learns theta and one q_i per training datapoint jointly, by minibatches
  of B rows with plate scaling: L = (N / B) sum_{i in batch} ELBO_i(theta, q_i) is an unbiased
  estimate of sum_i ELBO_i. Theta moves with Adam at every step; a row's q_i moves only when
  the row is in the minibatch (SparseAdam on the gathered rows), once per epoch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import constraints
from torch.nn.functional import embedding, softplus
from tqdm.auto import tqdm

from inference.evaluate import Estimate, elbo_samples
from inference.training import EpochRecord, adam, kl_beta, make_optimizer, set_learning_rate
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError, DataError, TrainingError, UnsupportedModelError
from pyro_vae.spec import ModelSpec, TrainSpec, spec_to_dict
from pyro_vae.vae import VAE, build_vae

logger = logging.getLogger(__name__)

MIN_SCALE = 1e-4  # s_min: the smallest standard deviation (diagonal of L) a q_i can take
CHUNK_FLOATS = 2e7  # fit_local: rows per chunk so that particles x rows x D stays below this
INITS = ("prior", "encoder")
# fit_local's Adam forgets old squared gradients fast (beta2 = 0.9, not 0.999): a q_i that starts
# far from its posterior sees huge first gradients, and with beta2 = 0.999 their memory keeps the
# later steps tiny for hundreds of steps (measured on pPCA: excess KL up to 4 nats after 300 steps
# from a random encoder, vs 0.01 with beta2 = 0.9).
ADAM_BETAS = (0.9, 0.9)
ELBO_NAMES = ("trace", "meanfield")
Tensor = torch.Tensor


# -- shared pieces (also used by inference.map) ------------------------------------------------------
def data_plate(batch: int, num_data: int | None) -> pyro.plate:
    """The data plate of ``VAE.model``: ``plate("data", B)``, or size N with a minibatch of B rows (scale N / B)."""
    if num_data is None or num_data == batch:
        return pyro.plate("data", batch, dim=-1)
    return pyro.plate("data", num_data, subsample=torch.arange(batch), dim=-1)


def _inverse_softplus(y: Tensor) -> Tensor:
    """softplus^-1(y) = y + log(1 - exp(-y)), for y > 0 (clamped to 1e-8 from below)."""
    y = y.clamp_min(1e-8)
    return y + torch.log(-torch.expm1(-y))


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


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(size, n - start)


def rows_per_chunk(num_particles: int, data_dim: int, budget: float = CHUNK_FLOATS) -> int:
    """Rows optimized together: the most with num_particles x rows x data_dim <= budget (>= 1)."""
    return max(1, int(budget // max(1, num_particles * data_dim)))


class RowTable(nn.Module):
    """Per-datapoint parameters as rows of tables, and how a batch x finds its rows.

    A call with ``idx`` uses those rows. Without ``idx``: all rows in order when x has
    ``num_rows`` rows (and equals the remembered data, if any); otherwise, when the table was
    built with ``data``, each row of x is looked up by value among the remembered rows (exact
    match; duplicated datapoints share the first one's row). That lookup is what lets
    :func:`inference.evaluate.log_likelihood`, which slices x into chunks, use a local guide.
    """

    def __init__(self, num_rows: int, data: Tensor | None = None) -> None:
        super().__init__()
        self.num_rows = int(num_rows)
        self.sparse_grad = False  # True: gathered rows get sparse gradients (for SparseAdam)
        self._data: Tensor | None = None
        self._lookup: dict[bytes, int] | None = None
        if data is not None:
            self.remember(data)

    def remember(self, data: Tensor) -> None:
        """Keep a reference to the datapoints the rows belong to (for lookup by value)."""
        if data.dim() != 2 or data.shape[0] != self.num_rows:
            raise ConfigError(f"data must have {self.num_rows} rows (one per table row), got shape {tuple(data.shape)}")
        self._data, self._lookup = data.detach(), None

    def rows(self, x: Tensor, idx: Tensor | Sequence[int] | None = None) -> Tensor | None:
        """Row indices of x in the table, or None for "all rows, in order"."""
        if idx is not None:
            idx = torch.as_tensor(idx, dtype=torch.long, device=self._device())
            if idx.dim() != 1 or idx.shape[0] != x.shape[0]:
                raise ConfigError(f"idx must be a 1-D index of x's {x.shape[0]} rows, got shape {tuple(idx.shape)}")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_rows):
                raise ConfigError(f"idx holds rows outside [0, {self.num_rows}) of this guide")
            return idx
        data = self._data
        if data is None:
            if x.shape[0] == self.num_rows:
                return None
            raise ConfigError(
                f"x has {x.shape[0]} rows but this guide holds {self.num_rows} datapoints; pass idx= (the rows' "
                "indices in the fitted data), or build the guide with data= so rows are found by value"
            )
        if x is data or (x.shape == data.shape and x.dtype == data.dtype and torch.equal(x, data)):
            return None
        return self._find(x)

    def _find(self, x: Tensor) -> Tensor:
        data = self._data
        assert data is not None
        if self._lookup is None:
            lookup: dict[bytes, int] = {}
            for i, row in enumerate(data.cpu().contiguous().numpy()):
                lookup.setdefault(row.tobytes(), i)
            self._lookup = lookup
        out = []
        for j, row in enumerate(x.detach().to(data.dtype).cpu().contiguous().numpy()):
            i = self._lookup.get(row.tobytes())
            if i is None:
                raise ConfigError(
                    f"row {j} of x is not one of the {self.num_rows} datapoints this guide was fitted on; "
                    "a local guide only knows its own datapoints: fit one on these rows (fit_local) or pass idx="
                )
            out.append(i)
        return torch.tensor(out, dtype=torch.long, device=self._device())

    def gather(self, table: Tensor, idx: Tensor | None) -> Tensor:
        """table[idx] (all of it for idx None); a sparse gradient when ``sparse_grad`` is set."""
        if idx is None:
            return table
        if self.sparse_grad:
            return embedding(idx, table, sparse=True)
        return table.index_select(0, idx)

    def _device(self) -> torch.device:
        return next(self.parameters()).device


# -- the local Gaussian guide --------------------------------------------------------------------------
def _as_sd(scale: Tensor, n: int, d: int) -> Tensor:
    """Marginal standard deviations (n, d) from a scalar, (d,), (n, d) sds or (n, d, d) scale_tril."""
    if scale.dim() == 3:
        return scale.pow(2).sum(-1).sqrt().expand(n, d)
    return scale.expand(n, d)


def _as_tril(scale: Tensor, n: int, d: int) -> Tensor:
    """Lower-triangular factors (n, d, d) from a scalar, (d,) or (n, d) sds, or (n, d, d) scale_tril."""
    if scale.dim() <= 2:
        return torch.diag_embed(scale.expand(n, d))
    return scale.expand(n, d, d).tril()


class LocalGaussianGuide(RowTable):
    r"""q_i(z) = N(m_i, diag s_i^2) (or N(m_i, L_i L_i^T) with ``full_cov``), one per datapoint.

    ``loc`` (N, d) are the initial means m_i; ``scale`` the initial spread: a scalar, (d,) or
    (N, d) standard deviations, or (N, d, d) lower-triangular factors (for a diagonal q, their
    row norms give the marginal sds). Parameters: ``loc`` (N, d); ``scale_raw`` (N, d) with
    s = softplus(scale_raw) + s_min, or ``tril_raw`` (N, d(d+1)/2) packing tril(A) row by row.
    ``data``: the N datapoints, for lookup of rows by value (see :class:`RowTable`).
    """

    def __init__(
        self, loc: Tensor, scale: Tensor | float = 1.0, *, full_cov: bool = False, data: Tensor | None = None
    ) -> None:
        loc = torch.as_tensor(loc)
        if loc.dim() != 2 or not loc.is_floating_point():
            raise ConfigError(f"loc must be a float (N, d) tensor of initial means, got {tuple(loc.shape)}")
        n, d = loc.shape
        super().__init__(n, None)
        self.latent_dim, self.full_cov = d, bool(full_cov)
        self.loc = nn.Parameter(loc.detach().clone())
        scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device).detach()
        if not bool(torch.isfinite(scale).all()):
            raise ConfigError("the initial scale of a local guide must be finite")
        rows, cols = torch.tril_indices(d, d, device=loc.device)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)
        if self.full_cov:
            tril = _as_tril(scale, n, d).clone()
            tril.diagonal(dim1=-2, dim2=-1).copy_(_inverse_softplus(tril.diagonal(dim1=-2, dim2=-1).abs() - MIN_SCALE))
            self.tril_raw = nn.Parameter(tril[:, rows, cols].contiguous())
        else:
            self.scale_raw = nn.Parameter(_inverse_softplus(_as_sd(scale, n, d) - MIN_SCALE).contiguous())
        if data is not None:
            self.remember(data)

    # -- the q_i as distributions -----------------------------------------------------------------
    def distribution(self, idx: Tensor | Sequence[int] | None = None) -> dist.Distribution:
        """The q_i of rows ``idx`` (all rows for None): batch_shape (B,), event_shape (d,)."""
        if idx is not None:
            idx = torch.as_tensor(idx, dtype=torch.long, device=self.loc.device)
        loc = self.gather(self.loc, idx)
        if self.full_cov:
            entries = self.gather(self.tril_raw, idx)
            tril = loc.new_zeros(*loc.shape, self.latent_dim)
            tril[..., self._rows, self._cols] = entries
            diag = softplus(tril.diagonal(dim1=-2, dim2=-1)) + MIN_SCALE
            return dist.MultivariateNormal(loc, scale_tril=tril.tril(-1) + torch.diag_embed(diag))
        return dist.Normal(loc, softplus(self.gather(self.scale_raw, idx)) + MIN_SCALE).to_event(1)

    @torch.no_grad()
    def moments(self) -> tuple[Tensor, Tensor]:
        """(means (N, d), covariances (N, d, d)) of all q_i, detached."""
        q = self.distribution()
        cov = q.covariance_matrix if self.full_cov else torch.diag_embed(q.variance)
        return q.mean.detach().clone(), cov.detach().clone()

    # -- the Pyro guide ---------------------------------------------------------------------------
    def guide(
        self,
        x: Tensor,
        *,
        num_data: int | None = None,
        beta: float = 1.0,
        idx: Tensor | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """z_i ~ q_i(z) for the rows of x (rows ``idx`` of the table), under the model's data plate."""
        q = self.distribution(self.rows(x, idx))
        with data_plate(x.shape[0], num_data):
            with poutine.scale(scale=beta):
                return pyro.sample("z", q)

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:  # noqa: D102 - the guide is the module's call
        return self.guide(x, **kwargs)


def _prior_moments(vae: VAE, like: Tensor) -> tuple[Tensor, Tensor]:
    """(mean (d,), marginal sd (d,)) of p(z); (0, 1) where the prior has no finite moments."""
    d = vae.latent_dim
    with torch.no_grad():
        p = vae.prior()
        try:
            mean, sd = p.mean.reshape(-1), p.variance.reshape(-1).sqrt()
        except NotImplementedError:
            mean, sd = torch.zeros(d), torch.ones(d)
    if mean.shape != (d,) or not bool(torch.isfinite(mean).all() and torch.isfinite(sd).all()):
        logger.info("p(z) has no finite mean/variance; local guides start at N(0, I)")
        mean, sd = torch.zeros(d), torch.ones(d)
    return mean.to(like), sd.to(like)


@torch.no_grad()
def _encoder_moments(vae: VAE, x: Tensor, full_cov: bool, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """(means (N, d), sds (N, d) or scale_tril (N, d, d)) of the encoder's q_phi(z | x_i)."""
    locs, scales = [], []
    for r0, nr in _chunks(x.shape[0], batch_size):
        q = vae.posterior(x[r0:r0 + nr])
        locs.append(q.mean)
        if not full_cov:
            scales.append(q.variance.sqrt())
        elif isinstance(q, torch.distributions.Independent) and isinstance(q.base_dist, torch.distributions.Normal):
            scales.append(torch.diag_embed(q.base_dist.scale))
        elif hasattr(q, "scale_tril"):
            scales.append(q.scale_tril.expand(nr, vae.latent_dim, vae.latent_dim))
        else:
            raise UnsupportedModelError(
                f"init='encoder' with full_cov=True needs a Gaussian q(z|x); the encoder gives {type(q).__name__}"
            )
    return torch.cat(locs), torch.cat(scales)


def initial_guide(
    vae: VAE,
    x: Tensor,
    init: str | Tensor = "prior",
    *,
    full_cov: bool = False,
    init_scale: float | None = None,
) -> LocalGaussianGuide:
    """A fresh :class:`LocalGaussianGuide` for the rows of x.

    ``init="prior"``: q_i = N(E_p[z], diag Var_p[z]) (the prior for a Gaussian p(z));
    ``init="encoder"``: q_i = q_phi(z | x_i), mean and diagonal sds, or scale_tril with ``full_cov``;
    a tensor (N, d): m_i = init_i, s_i = ``init_scale`` x prior sd (default 0.1).
    ``init_scale`` (if given) multiplies the prior's sds for "prior" as well.
    """
    n, d = x.shape[0], vae.latent_dim
    mean, sd = _prior_moments(vae, x)
    if isinstance(init, str):
        if init not in INITS:
            raise ConfigError(f"init={init!r} is not valid; choose one of: {', '.join(INITS)}, or pass an (N, d) tensor of means")
        if init == "prior":
            loc, scale = mean.expand(n, d), sd * (1.0 if init_scale is None else float(init_scale))
        else:
            loc, scale = _encoder_moments(vae, x, full_cov)
            loc, scale = loc.to(x), scale.to(x)
    else:
        loc = torch.as_tensor(init).detach().to(x)
        if loc.shape != (n, d):
            raise ConfigError(f"an init tensor must hold one mean per row of x, shape {(n, d)}, got {tuple(loc.shape)}")
        scale = sd * (0.1 if init_scale is None else float(init_scale))
    return LocalGaussianGuide(loc, scale, full_cov=full_cov, data=x)


# -- fit_local: q_i with theta fixed ---------------------------------------------------------------------
@dataclass(frozen=True)
class LocalFit:
    """Outcome of :func:`fit_local`.

    ``elbo_history[t]``: (1/N) sum_i ELBO_i after t Adam steps (t = 0..steps; Monte Carlo with the
    training particles); ``elbo``: the final per-datapoint ELBOs with ``eval_particles`` particles;
    ``samples_evaluated``: datapoint x particle evaluations spent in the optimization.
    """

    guide: LocalGaussianGuide
    elbo_history: tuple[float, ...]
    elbo: Estimate
    wall_time: float
    steps: int
    samples_evaluated: int


def _objective(name: str, num_particles: int) -> ELBO:
    if name not in ELBO_NAMES:
        raise ConfigError(f"elbo={name!r} is not valid; choose one of: {', '.join(ELBO_NAMES)}")
    cls = Trace_ELBO if name == "trace" else TraceMeanField_ELBO
    return cls(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)


def _check_positive_int(**values: Any) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}")


def _check_decay(lr: float, lr_decay: float) -> None:
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr!r}")
    if not 0 < lr_decay <= 1:
        raise ConfigError(f"lr_decay (final lr / initial lr) must be in (0, 1], got {lr_decay!r}")


def fit_local(
    vae: VAE,
    x: Tensor,
    *,
    steps: int = 500,
    lr: float = 0.2,
    lr_decay: float = 0.001,
    num_particles: int = 8,
    init: str | Tensor = "prior",
    init_scale: float | None = None,
    full_cov: bool = False,
    elbo: str = "meanfield",
    batch_size: int | None = None,
    eval_particles: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> LocalFit:
    r"""Fit q_i = argmax ELBO_i(q_i) for each row x_i with the VAE's theta fixed (module docstring).

    Minimizes -sum_i ELBO_i, the ``elbo`` objective's ``differentiable_loss(vae.model, guide, x)``
    with ``num_particles`` vectorized particles, by Adam (betas 0.9, 0.9: see ``ADAM_BETAS``) at a
    learning rate decaying exponentially from ``lr`` to ``lr * lr_decay`` over ``steps`` steps
    (large early steps travel from the prior to the posterior; small late ones let the
    stochastic iterates settle at the optimum). Rows are optimized together, in chunks of
    ``batch_size`` (by default as many as keep particles x rows x D <= 2e7); the chunks are
    independent problems, so chunking does not change the result's distribution. The VAE is
    frozen meanwhile (eval mode, ``requires_grad=False``) and restored afterwards.

    ``init``: "prior" (non-amortized VI), "encoder" (semi-amortized: refine q_phi(z | x_i)) or
    an (N, d) tensor of starting means (see :func:`initial_guide`).
    """
    _check_positive_int(steps=steps, num_particles=num_particles, eval_particles=eval_particles)
    _check_decay(lr, lr_decay)
    vae.check_data(x)
    check_continuous_latents(vae, "fit_local")
    objective = _objective(elbo, num_particles)
    n = x.shape[0]
    size = batch_size if batch_size is not None else rows_per_chunk(num_particles, x.shape[1])
    _check_positive_int(batch_size=size)
    t0 = time.perf_counter()
    pyro.set_rng_seed(seed)
    history = [0.0] * (steps + 1)
    samples = 0
    with frozen(vae):
        guide = initial_guide(vae, x, init, full_cov=full_cov, init_scale=init_scale)
        plan = list(_chunks(n, size))
        bar = tqdm(total=len(plan) * steps, desc=f"local VI ({elbo})", disable=not progress, leave=False)
        try:
            for r0, nr in plan:
                idx = torch.arange(r0, r0 + nr, device=x.device)
                xb, guide_b = x[r0:r0 + nr], functools.partial(guide.guide, idx=idx)
                optimizer = adam(guide.parameters(), lr=lr, betas=ADAM_BETAS)
                schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay ** (1.0 / steps))
                for t in range(steps + 1):
                    # The data were checked above; Pyro's validation on every step costs ~5x here.
                    with pyro.validation_enabled(t == 0), torch.set_grad_enabled(t < steps):
                        loss = objective.differentiable_loss(vae.model, guide_b, xb)
                    value = loss.item()
                    if not math.isfinite(value):
                        raise TrainingError(
                            f"fit_local: non-finite loss ({value}) at step {t} for rows {r0}..{r0 + nr - 1}; "
                            f"lower lr (now {lr}) or check that the data suit the likelihood"
                        )
                    history[t] += -value
                    if t == steps:
                        break
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    samples += nr * num_particles
                    bar.update(1)
        finally:
            bar.close()
        final = final_elbo(vae, guide, x, estimator="A" if elbo == "trace" else "B", num_particles=eval_particles,
                           batch_size=rows_per_chunk(eval_particles, x.shape[1]))
    elbo_history = tuple(h / n for h in history)
    logger.info("fit_local (%s, init=%s): ELBO %.4f -> %.4f per datapoint in %d steps",
                elbo, init if isinstance(init, str) else "tensor", elbo_history[0], elbo_history[-1], steps)
    return LocalFit(guide, elbo_history, final, time.perf_counter() - t0, steps, samples)


@torch.no_grad()
def final_elbo(
    vae: VAE, guide: LocalGaussianGuide, x: Tensor, *, estimator: str = "B", num_particles: int = 100,
    batch_size: int = 1000,
) -> Estimate:
    """Per-datapoint ELBO_i of the q_i of ``guide`` (rows in order), via :func:`inference.evaluate.elbo_samples`.

    ELBO_i ~= (1/K) sum_k L_ik, L from estimator "A" or "B", K = ``num_particles``.
    """
    values = []
    for r0, nr in _chunks(x.shape[0], batch_size):
        idx = torch.arange(r0, r0 + nr, device=x.device)
        guide_b = functools.partial(guide.guide, idx=idx)
        with pyro.validation_enabled(r0 == 0):
            values.append(elbo_samples(vae.model, guide_b, x[r0:r0 + nr], estimator, num_particles).mean(0))
    return Estimate.from_values(torch.cat(values), num_particles)


# -- fit_local_vi: theta and the q_i jointly ---------------------------------------------------------------
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


def theta_optimizer(theta: list[nn.Parameter], spec: TrainSpec, method: str) -> torch.optim.Optimizer | None:
    """Adam(lr) or ClippedAdam(lr, clip_norm) over theta, as ``spec.optimizer`` says; None if theta is empty."""
    if not theta:
        logger.info("%s: no trainable theta (all frozen); fitting the per-datapoint parameters only", method)
        return None
    return make_optimizer(theta, spec)


@dataclass(frozen=True)
class LocalVIResult:
    """Outcome of :func:`fit_local_vi` (fields named as in :class:`inference.svi.FitResult`).

    ``vae``: the trained model (theta: decoder, likelihood, prior; the encoder is untouched);
    ``guide``: the q_i of the training rows; ``history``: one record per epoch, train ELBO in
    nats per datapoint (no validation ELBO: held-out rows have no q_i); ``samples_evaluated``:
    training rows x particles processed.
    """

    vae: VAE
    guide: LocalGaussianGuide
    history: tuple[EpochRecord, ...]
    best_epoch: int
    best_val_elbo: float | None
    wall_time: float
    samples_evaluated: int
    stopped: str


def _train_spec(train: TrainSpec | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> TrainSpec:
    base = spec_to_dict(train) if isinstance(train, TrainSpec) else dict(train or {})
    return TrainSpec(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


def _as_vae(vae: VAE | ModelSpec | Mapping[str, Any], train_x: Tensor, image_shape: Any, seed: int) -> VAE:
    if isinstance(vae, VAE):
        return vae
    if isinstance(vae, (ModelSpec, Mapping)):
        return build_vae(vae, data_dim=train_x.shape[1], image_shape=image_shape, data_sample=train_x[:1000], seed=seed)
    raise ConfigError(f"expected a VAE or a model spec (ModelSpec or dict), got {type(vae).__name__}")


def _train_rows(data: DataSplits | Tensor) -> tuple[Tensor, Any, bool]:
    """(training rows, image shape, dynamic binarization?) of a DataSplits or a plain (N, D) tensor."""
    if isinstance(data, DataSplits):
        return data.train, data.image_shape, data.binarize == "dynamic"
    if torch.is_tensor(data):
        return data, None, False
    raise DataError(f"data must be a DataSplits (pyro_vae.data.load_dataset) or an (N, D) tensor, got {type(data).__name__}")


def prepare_training(vae: "VAE | ModelSpec | Mapping[str, Any]", data: "DataSplits | Tensor", seed: int, method: str) -> tuple[VAE, Tensor, bool]:
    """(vae, training rows, dynamic?) for a per-datapoint training method, checked once up front.

    Builds the VAE from a spec if needed (seeded), refuses an empty training split, data outside
    the likelihood's support (for dynamic binarization: values outside [0, 1], or a likelihood
    that refuses 0/1), and models whose latent is not one real vector z per datapoint.
    """
    x, image_shape, dynamic = _train_rows(data)
    if int(x.shape[0]) == 0:
        raise DataError("the training split is empty; load more data")
    vae = _as_vae(vae, x, image_shape, seed)
    if dynamic:
        if not bool(((x >= 0) & (x <= 1)).all()):
            raise DataError("dynamic binarization draws Bernoulli(x): training values must lie in [0, 1]")
        vae.check_data(torch.stack([x.new_zeros(x.shape[1]), x.new_ones(x.shape[1])]), name="binarized data")
    else:
        vae.check_data(x, name="training data")
    check_continuous_latents(vae, method)
    return vae, x, dynamic


def fit_local_vi(
    vae: VAE | ModelSpec | Mapping[str, Any],
    data: DataSplits | Tensor,
    train: TrainSpec | Mapping[str, Any] | None = None,
    *,
    full_cov: bool = False,
    init: str = "prior",
    local_lr: float = 0.05,
    progress: bool = True,
    **overrides: Any,
) -> LocalVIResult:
    r"""Non-amortized VI training: maximize sum_i ELBO_i(theta, q_i) over theta and every q_i jointly.

    Each step takes a minibatch I of B training rows (one randperm per epoch from a generator
    seeded by ``train.seed``; a fresh Bernoulli draw per batch for dynamically binarized data)
    and minimizes -(N / B) sum_{i in I} ELBO_i^{A|B}(theta, q_i) (``train.elbo`` = "trace" or
    "meanfield", ``train.num_particles`` particles, KL weight beta from ``train.kl_warmup_epochs``
    as in :func:`inference.svi.kl_beta`), the guide taking the rows' indices ``idx``. Theta
    (:func:`theta_parameters`: prior, likelihood, decoder; frozen ones stay fixed): the
    optimizer of ``train`` (Adam or ClippedAdam, ``train.lr`` under ``train.lr_schedule``, as in
    :func:`inference.svi.fit`); the q_i: SparseAdam at
    ``local_lr`` on the rows of the minibatch only.

    ``vae``: a VAE, or a model spec to build one (seeded by ``train.seed``). ``overrides``:
    TrainSpec fields (``epochs=``, ``lr=``, ...). ``init``: "prior" or "encoder" starting q_i.
    Early stopping (``train.patience``) is refused: there is no validation ELBO without
    fitting q_i on the validation rows (:func:`fit_local`).
    """
    spec = _train_spec(train, overrides)
    if spec.patience is not None:
        raise ConfigError(
            "fit_local_vi has no validation ELBO to stop early on (held-out rows have no q_i); set patience=None"
        )
    if not local_lr > 0:
        raise ConfigError(f"local_lr must be > 0, got {local_lr!r}")
    objective = _objective(spec.elbo, spec.num_particles)
    vae, x, dynamic = prepare_training(vae, data, spec.seed, "fit_local_vi")
    n = int(x.shape[0])

    t0 = time.perf_counter()
    pyro.clear_param_store()
    pyro.set_rng_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        guide = initial_guide(vae, x, init, full_cov=full_cov)
    theta_opt = theta_optimizer(theta_parameters(vae), spec, "fit_local_vi")
    local_opt = torch.optim.SparseAdam(list(guide.parameters()), lr=local_lr)
    steps_per_epoch = math.ceil(n / spec.batch_size)
    warmup = spec.kl_warmup_epochs * steps_per_epoch
    history: list[EpochRecord] = []
    samples = 0
    was_training = vae.training
    guide.sparse_grad = True
    bar = tqdm(range(1, spec.epochs + 1), desc="local VI training", unit="epoch", disable=not progress, leave=False)
    try:
        vae.train()
        for epoch in bar:
            t_epoch = time.perf_counter()
            set_learning_rate(theta_opt, spec, epoch)  # theta follows spec.lr_schedule, as in svi.fit
            order = torch.randperm(n, generator=generator)
            total, beta = 0.0, 1.0
            for step, r0 in enumerate(range(0, n, spec.batch_size), start=1):
                idx = order[r0:r0 + spec.batch_size]
                xb = x.index_select(0, idx)
                if dynamic:
                    xb = torch.bernoulli(xb, generator=generator)
                beta = kl_beta((epoch - 1) * steps_per_epoch + step, warmup)
                with pyro.validation_enabled(epoch == 1 and step == 1):  # data checked above; every step ~5x slower
                    loss = objective.differentiable_loss(
                        vae.model, functools.partial(guide.guide, idx=idx), xb, num_data=n, beta=beta
                    )
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingError(
                        f"fit_local_vi diverged: non-finite loss ({value}) at epoch {epoch}, step {step}; lower "
                        f"train.lr (now {spec.lr}) or local_lr (now {local_lr}), or use optimizer='clipped_adam'"
                    )
                if theta_opt is not None:
                    theta_opt.zero_grad(set_to_none=True)
                local_opt.zero_grad(set_to_none=True)
                loss.backward()
                if theta_opt is not None:
                    theta_opt.step()
                local_opt.step()
                total += value
                samples += xb.shape[0] * spec.num_particles
            train_elbo = -total / steps_per_epoch / n
            history.append(EpochRecord(epoch, train_elbo, None, beta, time.perf_counter() - t_epoch))
            bar.set_postfix(train_elbo=f"{train_elbo:.3f}")
            logger.debug("local VI epoch %d: train ELBO %.4f", epoch, train_elbo)
    finally:
        bar.close()
        guide.sparse_grad = False
        vae.train(was_training)
    return LocalVIResult(vae, guide, tuple(history), spec.epochs, None, time.perf_counter() - t0, samples, "completed")


__all__ = [
    "LocalGaussianGuide", "RowTable", "LocalFit", "LocalVIResult", "fit_local", "fit_local_vi", "final_elbo",
    "initial_guide", "check_continuous_latents", "frozen", "data_plate", "rows_per_chunk", "theta_parameters", "theta_penalty", "prepare_training",
    "theta_optimizer",
]
