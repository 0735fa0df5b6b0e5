r"""M1+M2 (Kingma et al. 2014): M2 trained on the latent means of a trained VAE (M1).

M1 is any run folder of a VAE (``pyro-vae train``). Every row x of the train, validation and test
splits becomes its posterior mean

    u = E_{q_M1}[z | x]                     (the M1 guide's mean, an R^{d_1} feature vector),

with the labels carried over unchanged (hidden ones stay :data:`pyro_vae.labels.UNLABELLED`), and
M2 is fitted to the u's as to any real-valued data (a Gaussian likelihood, e.g.
``gaussian_learned``). Rows under dynamic binarization are encoded as their grey values (the
mean of the Bernoulli draws M1 was trained on).

``features="sample"`` trains M2 on draws instead (Kingma et al.'s reference code does so): the
training rows keep their means u_i and carry the guide's sds s_i (``DataSplits.train_sd``), and
every minibatch draws fresh features

    z_i = u_i + s_i * eps,    eps ~ N(0, I),   i.e. z_i ~ q_M1(z | x_i),

as dynamic binarization draws fresh pixels; validation and test rows stay the means. It needs a
Gaussian M1 guide (its sds).

A flow guide's mean has no closed form (a Monte Carlo estimate, :class:`pyro_vae.flows.FlowPosterior`); every
set of rows is encoded under the M1 run's own seed (inside ``fork_rng``: the caller's random state is neither
read nor changed), so the same rows, in the same order, give the same features in every call and every process.

``units="active"`` keeps only M1's active units (Burda et al. 2015), measured on the M1 run's own
training rows x_1..x_n:

    keep u  iff  Var_i(E_{q_M1}[z_u | x_i]) > 0.01,

so the same units are kept whatever rows are then encoded. An inactive unit's mean is nearly the
same for every row; a learned-variance Gaussian likelihood in M2 can shrink its scale on such a
feature without bound, which rewards fitting noise rather than the classes.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch

from pyro_vae.checks import choice, positive_int
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.guides import DiagonalNormal
from pyro_vae.plots.canvas import CHUNK, evaluating
from pyro_vae.plots.latents import posterior_means
from pyro_vae.rng import seeded
from pyro_vae.spec import M1_FEATURES, M1_UNITS

logger = logging.getLogger(__name__)
ACTIVE_THRESHOLD = 0.01  # Burda et al. 2015: a unit is active when Var_x E_q[z_u | x] exceeds it


class _M1(NamedTuple):
    """An M1 run, rebuilt: its folder, its own data splits, its program, its seed (which fixes its features)."""

    run_dir: Path
    own: DataSplits
    program: Any
    seed: int


def _load_m1(m1_run: str | Path) -> _M1:
    from inference.run import load_run  # run folders import this package: loaded when used

    run_dir = Path(m1_run)
    spec, own, m1 = load_run(run_dir)
    return _M1(run_dir, own, m1, spec.train.seed)


def _means(m1: _M1, x: torch.Tensor) -> torch.Tensor:
    """E_q[z | x_i] of every row, drawn (a flow guide's Monte Carlo mean) under M1's seed inside ``seeded``."""
    with torch.no_grad(), seeded(m1.seed):
        return posterior_means(m1.program, x) if x.shape[0] else torch.zeros(0, m1.program.latent_dim)


def _kept_units(m1: _M1, units: str, own_train: torch.Tensor | None = None) -> torch.Tensor | None:
    """The indices of the units ``units`` keeps (None: all of them; module docstring for ``active``).

    ``own_train``: the means of M1's own training rows when the caller has them already (else encoded here).
    """
    choice("data.m1_units", units, M1_UNITS)
    if units == "all":
        return None
    variances = (_means(m1, m1.own.train) if own_train is None else own_train).var(0)
    keep = torch.nonzero(variances > ACTIVE_THRESHOLD).flatten()
    if keep.numel() == 0:
        raise DataError(f"the M1 run {str(m1.run_dir)!r} has no active unit (Var_x E_q[z_u | x] > {ACTIVE_THRESHOLD} on "
                        f"its training rows; largest {float(variances.max()):.3g}); use data.m1_units: all, or an M1 "
                        "whose posterior depends on x")
    return keep


def latent_features(m1_run: str | Path, data: DataSplits | None = None, *, latent_dim: int | None = None,
                    units: str = "all", features: str = "mean") -> DataSplits:
    """``data`` (default: the M1 run's own splits) with every row replaced by its M1 posterior mean (module docstring).

    ``latent_dim``: the M1 latent size the caller expects; a run with another latent size is
    refused (ConfigError), as is data whose feature count differs from the run's (DataError).
    ``units``: ``all`` the run's units, or ``active`` only its active units (module docstring).
    ``features``: ``mean``, or ``sample`` to train on draws of z (module docstring; ConfigError for
    an M1 guide that is not a Gaussian).
    The result's ``encode_rows(x, name)`` makes the same features of new raw rows with the M1 and units loaded
    here (:func:`latent_rows` without loading the run again).
    """
    choice("data.m1_features", features, M1_FEATURES)
    m1 = _load_m1(m1_run)
    data = m1.own if data is None else data
    size = getattr(m1.program, "latent_dim", None)
    if latent_dim is not None and positive_int("latent_dim", latent_dim) != size:
        raise ConfigError(f"the M1 run {str(m1.run_dir)!r} has latent_dim {size}, but the M2 here expects {latent_dim} "
                          f"features; build M2 for data_dim={size}, or train M1 with latent_dim={latent_dim}")
    _check_width(m1, data.feature_dim, data.name)
    sd = _sds(m1, data.train) if features == "sample" else None  # checked before the (long) encoding
    train = _means(m1, data.train)
    own_train = train if data.train is m1.own.train else None  # M1's own rows: encoded once
    if sd is not None and units == "all":
        own_train = _means(m1, m1.own.train) if own_train is None else own_train
        _warn_inactive(m1, own_train)
    keep = _kept_units(m1, units, own_train)
    means = [_select(m, keep) for m in (train, _means(m1, data.val), _means(m1, data.test))]
    sd = _select(sd, keep) if sd is not None else None
    which = "means" if keep is None else f"means of {keep.numel()} active units"
    which += ", training rows drawn from q(z | x) per minibatch" if sd is not None else ""
    return DataSplits(f"{data.name} as M1 ({m1.run_dir.name}) {which}", *means, data.train_labels, data.val_labels,
                      data.test_labels, None, "none", train_sd=sd, encode_rows=functools.partial(_encode, m1, keep))


def _warn_inactive(m1: _M1, own_train: torch.Tensor) -> None:
    """Warn when draws would feed M2 prior noise: an inactive unit's q(z_u | x) is ~N(0, 1) for every x, so its
    training draws are noise while validation and test read its near-constant mean."""
    inactive = int((own_train.var(0) <= ACTIVE_THRESHOLD).sum())
    if inactive:
        logger.warning("data.m1_features='sample' with data.m1_units='all': %d of %d units of the M1 run %s are "
                       "inactive, so M2 trains on their prior noise and is scored on their near-constant means; "
                       "data.m1_units: active drops them (as Kingma et al.'s code does)", inactive,
                       m1.program.latent_dim, m1.run_dir)


def _sds(m1: _M1, x: torch.Tensor) -> torch.Tensor:
    """The M1 guide's per-unit sds of q(z | x_i) for every row (a Gaussian guide: ConfigError otherwise)."""
    family = getattr(m1.program, "family", None)
    if not isinstance(family, DiagonalNormal):
        raise ConfigError(f"data.m1_features='sample' draws from the M1 run's diagonal Gaussian q(z | x), but "
                          f"{str(m1.run_dir)!r} has a {type(family).__name__} guide; use data.m1_features: mean")
    with torch.no_grad(), evaluating(m1.program):
        if not x.shape[0]:
            return torch.zeros(0, m1.program.latent_dim)
        return torch.cat([m1.program.posterior(chunk).stddev for chunk in x.split(CHUNK)])


def latent_rows(m1_run: str | Path, x: torch.Tensor, name: str = "the rows", *, units: str = "all") -> torch.Tensor:
    """The M1 posterior means u_i = E_q[z | x_i] of new rows x (N, D), of the units ``units`` keeps: what an
    M1+M2 program classifies."""
    m1 = _load_m1(m1_run)
    return _encode(m1, _kept_units(m1, units), x, name)


def _encode(m1: _M1, keep: torch.Tensor | None, x: torch.Tensor, name: str = "the rows") -> torch.Tensor:
    """The features of new raw rows x: their posterior means under M1, of the units ``keep`` (None: all)."""
    _check_width(m1, int(x.shape[1]), name)
    return _select(_means(m1, x), keep)


def _select(means: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return means if keep is None else means.index_select(1, keep)


def _check_width(m1: _M1, width: int, name: str) -> None:
    if width != m1.program.data_dim:
        raise DataError(f"the M1 run {str(m1.run_dir)!r} encodes rows of {m1.program.data_dim} features, but {name} has "
                        f"{width}; use the data that M1 was trained on")


__all__ = ["latent_features", "latent_rows", "ACTIVE_THRESHOLD"]
