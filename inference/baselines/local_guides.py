r"""Per-datapoint guides: the parameters of each training row held as rows of module tables.

No encoder: every datapoint i owns its variational parameters (rows of tables in the module,
not in Pyro's param store), and samples site "z" under the program's data plate (size N with a
minibatch of B rows, so log-densities carry N / B), so a local guide pairs with the program's
``model`` in any Pyro ELBO and with :mod:`inference.evaluate`:

* :class:`LocalGaussianGuide`: q_i(z) = N(z; m_i, diag s_i^2), s_i = softplus(r_i) + s_min, or
  q_i(z) = N(z; m_i, L_i L_i^T), L_i = tril(A_i, -1) + diag(softplus(diag A_i) + s_min), s_min = 1e-4;
* :class:`PointGuide`: q_i(z) = Delta(z - z_i) (the MAP codes; log q_i(z_i) = 0).

A call with ``idx`` uses those rows; a batch without ``idx`` finds its rows by value among the
remembered data (:class:`RowTable`).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.nn.functional import embedding, softplus

from pyro_vae.errors import ConfigError, UnsupportedModelError
from pyro_vae.numerics import chunks, inverse_softplus
from pyro_vae.plates import data_plate
from pyro_vae.vae import VAE

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
MIN_SCALE = 1e-4  # s_min: the smallest standard deviation (diagonal of L) a q_i can take
INITS = ("prior", "encoder")


class RowTable(nn.Module):
    """Per-datapoint parameters as rows of tables, and how a batch x finds its rows.

    A call with ``idx`` uses those rows. Without ``idx``: all rows in order when x has
    ``num_rows`` rows (and equals the remembered data, if any); otherwise, when the table was
    built with ``data``, each row of x is looked up by value among the remembered rows (exact
    match; duplicated datapoints share the first one's row). That lookup is what lets
    :func:`inference.evaluate.log_likelihood`, which slices x into chunks, use a local guide.
    A subclass says what q_i is (:meth:`distribution`); :meth:`guide` samples it as site "z".
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

    def distribution(self, idx: Tensor | None = None) -> dist.Distribution:
        """q_i of rows ``idx`` (all rows for None): batch_shape (B,), event_shape (d,)."""
        raise NotImplementedError

    def guide(
        self,
        x: Tensor,
        *,
        num_data: int | None = None,
        beta: float = 1.0,
        idx: Tensor | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """z_i ~ q_i(z) for the rows of x (rows ``idx`` of the table), site "z" under the model's data plate."""
        q = self.distribution(self.rows(x, idx))
        with data_plate(x.shape[0], num_data, device=x.device):
            with poutine.scale(scale=beta):
                return pyro.sample("z", q)

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:  # noqa: D102 - the guide is the module's call
        return self.guide(x, **kwargs)


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
            tril.diagonal(dim1=-2, dim2=-1).copy_(inverse_softplus(tril.diagonal(dim1=-2, dim2=-1).abs() - MIN_SCALE))
            self.tril_raw = nn.Parameter(tril[:, rows, cols].contiguous())
        else:
            self.scale_raw = nn.Parameter(inverse_softplus(_as_sd(scale, n, d) - MIN_SCALE).contiguous())
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
    for r0, nr in chunks(x.shape[0], batch_size):
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
    init: str | Tensor | RowTable = "prior",
    *,
    full_cov: bool = False,
    init_scale: float | None = None,
) -> RowTable:
    """A fresh :class:`LocalGaussianGuide` for the rows of x.

    ``init="prior"``: q_i = N(E_p[z], diag Var_p[z]) (the prior for a Gaussian p(z));
    ``init="encoder"``: q_i = q_phi(z | x_i), mean and diagonal sds, or scale_tril with ``full_cov``;
    a tensor (N, d): m_i = init_i, s_i = ``init_scale`` x prior sd (default 0.1).
    ``init_scale`` (if given) multiplies the prior's sds for "prior" as well.
    A ready local guide (a :class:`RowTable`, e.g. a ``LocalFamilyGuide``) is returned as it is.
    """
    if isinstance(init, RowTable):
        if init.num_rows != x.shape[0]:
            raise ConfigError(f"the init guide holds {init.num_rows} datapoints but x has {x.shape[0]} rows")
        return init
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



class PointGuide(RowTable):
    """q_i(z) = Delta(z - z_i): one point per datapoint, the rows of the parameter ``z`` (N, d).

    ``data``: the N datapoints, for lookup of rows by value (see :class:`RowTable`).
    """

    def __init__(self, z: Tensor, *, data: Tensor | None = None) -> None:
        z = torch.as_tensor(z)
        if z.dim() != 2 or not z.is_floating_point():
            raise ConfigError(f"z must be a float (N, d) tensor of initial codes, got shape {tuple(z.shape)}")
        super().__init__(z.shape[0], None)
        self.latent_dim = z.shape[1]
        self.z = nn.Parameter(z.detach().clone())
        if data is not None:
            self.remember(data)

    def distribution(self, idx: Tensor | None = None) -> dist.Distribution:
        """q_i = Delta(z - z_i) for rows ``idx`` (all rows for None): a point mass, log-density 0 at z_i."""
        return dist.Delta(self.gather(self.z, idx)).to_event(1)


def initial_codes(vae: VAE, x: Tensor, init: Tensor | None) -> Tensor:
    n, d = x.shape[0], vae.latent_dim
    if init is None:
        with torch.no_grad():
            try:
                mean = vae.prior().mean.reshape(-1)
            except NotImplementedError:
                mean = torch.zeros(d)
        if mean.shape != (d,) or not bool(torch.isfinite(mean).all()):
            mean = torch.zeros(d)
        return mean.to(x).expand(n, d).clone()
    init = torch.as_tensor(init).detach().to(x)
    if init.shape != (n, d):
        raise ConfigError(f"init must hold one code per row of x, shape {(n, d)}, got {tuple(init.shape)}")
    return init



__all__ = ["RowTable", "LocalGaussianGuide", "PointGuide", "initial_guide", "initial_codes", "MIN_SCALE", "INITS"]
