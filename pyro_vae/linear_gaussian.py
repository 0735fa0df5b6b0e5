r"""Probabilistic PCA (Tipping & Bishop 1999): a linear-Gaussian VAE whose every quantity is known.

Model, for datapoints i = 1..N::

    z_i ~ N(0, I_d)                                   (prior "normal")
    x_i | z_i ~ N(W z_i + mu, sigma^2 I_D)            (decoder "linear", likelihood "gaussian")

Closed forms (all computed in float64), with C = W W^T + sigma^2 I_D and M = W^T W + sigma^2 I_d:

    log p(x)       = log N(x; mu, C)
    p(z | x)       = N(M^-1 W^T (x - mu), sigma^2 M^-1)        (an affine function of x)
    ELBO(q)        = E_q log p(x | z) + E_q log p(z) + H[q]    for any Gaussian q(z | x)
    ML solution    W = U_d (Lambda_d - sigma^2 I)^{1/2},  sigma^2 = mean of the D - d smallest
                   eigenvalues of the sample covariance, mu = sample mean
    EM             Tipping & Bishop's EM for (W, sigma^2), monotone in log-likelihood

Because the exact posterior is Gaussian with a mean affine in x and a constant covariance, a
VAE with a ``linear`` encoder and a ``full_normal`` guide contains it: :func:`set_exact_posterior`
sets the encoder so that q(z | x) = p(z | x), and then log p(x) = ELBO exactly. This makes pPCA
the reference model for every estimator in :mod:`inference.evaluate`.

Importing this module registers the ``linear`` network (an affine map) in
:data:`pyro_vae.networks.NETWORKS`; :mod:`pyro_vae` imports it, so ``encoder: linear`` and
``decoder: linear`` work in any spec.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pyro_vae.errors import ConfigError
from pyro_vae.numerics import inverse_softplus
from pyro_vae.guides import DiagonalNormal, FullNormal
from pyro_vae.likelihoods import Gaussian
from pyro_vae.networks import NETWORKS
from pyro_vae.programs import PROGRAMS
from pyro_vae.registry import BuildContext
from pyro_vae.spec import ModelSpec
from pyro_vae.vae import VAE, build_vae

_LOG_2PI = math.log(2 * math.pi)
Tensor = torch.Tensor


# -- the "linear" network ------------------------------------------------------------------
@NETWORKS.register("linear")
def linear(in_dim: int, out_dim: int, *, context: BuildContext, bias: bool = True) -> nn.Module:
    """Affine map y = A u + b (no hidden layer): the pPCA decoder W z + mu, or its exact-posterior encoder."""
    return nn.Linear(in_dim, out_dim, bias=bool(bias))


# -- closed forms ----------------------------------------------------------------------------
def _f64(*tensors: Tensor | float) -> tuple[Tensor, ...]:
    return tuple(torch.as_tensor(t, dtype=torch.float64) for t in tensors)


def _check_shapes(x: Tensor, W: Tensor, mu: Tensor) -> None:
    if W.dim() != 2:
        raise ConfigError(f"W must be a (D, d) matrix, got shape {tuple(W.shape)}")
    if mu.shape != (W.shape[0],):
        raise ConfigError(f"mu must have shape (D,) = ({W.shape[0]},) to match W, got {tuple(mu.shape)}")
    if x.shape[-1] != W.shape[0]:
        raise ConfigError(f"x has {x.shape[-1]} features but W has D = {W.shape[0]} rows; pass x of shape (N, D)")


def marginal_covariance(W: Tensor, sigma: Tensor | float) -> Tensor:
    """C = W W^T + sigma^2 I_D, the covariance of x under pPCA (float64)."""
    W, sigma = _f64(W, sigma)
    return W @ W.T + sigma**2 * torch.eye(W.shape[0], dtype=torch.float64, device=W.device)


def log_marginal(x: Tensor, W: Tensor, mu: Tensor, sigma: Tensor | float) -> Tensor:
    """log p(x_i) = log N(x_i; mu, C), C = W W^T + sigma^2 I; shape (N,), float64.

    = -1/2 [D log 2 pi + log|C| + (x_i - mu)^T C^-1 (x_i - mu)], via the Cholesky factor of C.
    """
    x, W, mu, sigma = _f64(x, W, mu, sigma)
    _check_shapes(x, W, mu)
    chol = torch.linalg.cholesky(marginal_covariance(W, sigma))
    white = torch.linalg.solve_triangular(chol, (x - mu).unsqueeze(-1), upper=False).squeeze(-1)
    logdet = 2 * chol.diagonal().log().sum()
    return -0.5 * (W.shape[0] * _LOG_2PI + logdet + white.pow(2).sum(-1))


def posterior(x: Tensor, W: Tensor, mu: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor]:
    """Exact p(z | x_i) = N(loc_i, cov): M = W^T W + sigma^2 I_d, loc_i = M^-1 W^T (x_i - mu), cov = sigma^2 M^-1.

    Returns ``(loc (N, d), cov (d, d))`` in float64; the covariance is the same for every x_i.
    """
    x, W, mu, sigma = _f64(x, W, mu, sigma)
    _check_shapes(x, W, mu)
    M = W.T @ W + sigma**2 * torch.eye(W.shape[1], dtype=torch.float64, device=W.device)
    loc = torch.linalg.solve(M, W.T @ (x - mu).T).T
    cov = sigma**2 * torch.linalg.inv(M)
    return loc, 0.5 * (cov + cov.T)


def elbo_gaussian(
    x: Tensor, W: Tensor, mu: Tensor, sigma: Tensor | float, q_loc: Tensor, q_cov: Tensor
) -> Tensor:
    """Exact ELBO of a Gaussian q(z | x_i) = N(m_i, S_i) under pPCA; shape (N,), float64.

    ELBO_i = E_q log p(x_i | z) + E_q log p(z) + H[q], with
      E_q log p(x_i | z) = -D/2 log(2 pi sigma^2) - [||x_i - mu - W m_i||^2 + tr(W^T W S_i)] / (2 sigma^2)
      E_q log p(z)       = -d/2 log(2 pi) - [||m_i||^2 + tr S_i] / 2
      H[q]               = d/2 log(2 pi e) + 1/2 log|S_i|.
    ``q_loc`` is (N, d); ``q_cov`` is (d, d) (shared) or (N, d, d).
    """
    x, W, mu, sigma, m, S = _f64(x, W, mu, sigma, q_loc, q_cov)
    _check_shapes(x, W, mu)
    D, d = W.shape
    if m.shape != (*x.shape[:-1], d):
        raise ConfigError(f"q_loc must have shape {(*x.shape[:-1], d)}, got {tuple(m.shape)}")
    if S.shape[-2:] != (d, d):
        raise ConfigError(f"q_cov must have shape (d, d) or (N, d, d) with d = {d}, got {tuple(S.shape)}")
    resid = x - mu - m @ W.T
    tr_wws = torch.einsum("ij,...ji->...", W.T @ W, S)
    expected_lik = -0.5 * D * (_LOG_2PI + 2 * torch.log(sigma)) - (resid.pow(2).sum(-1) + tr_wws) / (2 * sigma**2)
    expected_prior = -0.5 * d * _LOG_2PI - 0.5 * (m.pow(2).sum(-1) + S.diagonal(dim1=-2, dim2=-1).sum(-1))
    entropy = 0.5 * d * (_LOG_2PI + 1) + 0.5 * torch.linalg.slogdet(S)[1]
    return expected_lik + expected_prior + entropy


def elbo_estimator_variance(
    x: Tensor, W: Tensor, mu: Tensor, sigma: Tensor | float, q_loc: Tensor, q_cov: Tensor, estimator: str
) -> Tensor:
    """Exact variance over z ~ q = N(m_i, S) of one single-sample ELBO estimate; shape (N,), float64.

    Both estimators are quadratic in z, f(z) = z^T Q z + c^T z + const, so
    Var f = 2 tr(Q S Q S) + (c + 2 Q m)^T S (c + 2 Q m), with
      "A" = log p(x|z) + log p(z) - log q(z):  Q = -W^T W / (2 sigma^2) - I / 2 + S^-1 / 2,
                                               c = W^T (x - mu) / sigma^2 - S^-1 m
      "B" = log p(x|z) - KL(q || p):           Q = -W^T W / (2 sigma^2),  c = W^T (x - mu) / sigma^2.
    Var A = 0 at the exact posterior; B has the lower variance when q is narrower than p(z | x).
    """
    x, W, mu, sigma, m, S = _f64(x, W, mu, sigma, q_loc, q_cov)
    _check_shapes(x, W, mu)
    d = W.shape[1]
    Q = -(W.T @ W) / (2 * sigma**2)
    c = (x - mu) @ W / sigma**2
    if estimator == "A":
        S_inv = torch.linalg.inv(S)
        Q = Q - 0.5 * torch.eye(d, dtype=torch.float64, device=S_inv.device) + 0.5 * S_inv
        c = c - torch.einsum("...ij,...j->...i", S_inv, m)
    elif estimator != "B":
        raise ConfigError(f"estimator must be 'A' or 'B', got {estimator!r}")
    g = c + 2 * torch.einsum("...ij,...j->...i", Q, m)
    QS = Q @ S
    trace_term = 2 * torch.einsum("...ij,...ji->...", QS, QS)
    return trace_term + torch.einsum("...i,...ij,...j->...", g, S, g)


def simulate(
    num_data: int, data_dim: int, latent_dim: int, sigma: float, *, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw a pPCA data set: W_jk ~ N(0, 1), mu_j ~ N(0, 1), z_i ~ N(0, I), x_i = W z_i + mu + sigma eps_i.

    Returns ``(x (N, D), W (D, d), mu (D,))`` in float64, fixed by ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64)
    mu = torch.randn(data_dim, generator=g, dtype=torch.float64)
    z = torch.randn(num_data, latent_dim, generator=g, dtype=torch.float64)
    x = z @ W.T + mu + sigma * torch.randn(num_data, data_dim, generator=g, dtype=torch.float64)
    return x, W, mu


def _sample_covariance(X: Tensor, mu: Tensor) -> Tensor:
    centered = X - mu
    return centered.T @ centered / X.shape[0]


def ml_solution(X: Tensor, latent_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Maximum-likelihood pPCA (Tipping & Bishop 1999, eq. 7-8), returns ``(W, mu, sigma)`` in float64.

    mu = mean of X; S = (1/N) sum_i (x_i - mu)(x_i - mu)^T = U Lambda U^T (eigenvalues descending);
    sigma^2 = mean(lambda_{d+1..D}); W = U_d (Lambda_d - sigma^2 I)^{1/2} (rotation R = I).
    """
    (X,) = _f64(X)
    if X.dim() != 2:
        raise ConfigError(f"X must be an (N, D) matrix, got shape {tuple(X.shape)}")
    D = X.shape[1]
    if not 1 <= latent_dim < D:
        raise ConfigError(f"latent_dim must satisfy 1 <= latent_dim < D = {D}, got {latent_dim}")
    mu = X.mean(0)
    evals, evecs = torch.linalg.eigh(_sample_covariance(X, mu))
    evals, evecs = evals.flip(0), evecs.flip(1)
    sigma2 = evals[latent_dim:].mean()
    W = evecs[:, :latent_dim] * (evals[:latent_dim] - sigma2).clamp_min(0).sqrt()
    return W, mu, sigma2.sqrt()


def em_step(X: Tensor, W: Tensor, mu: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor]:
    """One EM step for pPCA (Tipping & Bishop 1999, eq. 29-30), returns ``(W_new, sigma_new)``.

    With S the sample covariance of X about mu and M = W^T W + sigma^2 I:
      W_new       = S W (sigma^2 I + M^-1 W^T S W)^-1
      sigma_new^2 = tr(S - S W M^-1 W_new^T) / D.
    The log-likelihood sum_i log N(x_i; mu, W W^T + sigma^2 I) never decreases.
    """
    X, W, mu, sigma = _f64(X, W, mu, sigma)
    _check_shapes(X, W, mu)
    D, d = W.shape
    S = _sample_covariance(X, mu)
    eye = torch.eye(d, dtype=torch.float64, device=W.device)
    M = W.T @ W + sigma**2 * eye
    SW = S @ W
    Minv_WtSW = torch.linalg.solve(M, W.T @ SW)
    W_new = torch.linalg.solve((sigma**2 * eye + Minv_WtSW).T, SW.T).T
    sigma2_new = torch.trace(S - SW @ torch.linalg.solve(M, W_new.T)) / D
    return W_new, sigma2_new.clamp_min(0).sqrt()


# -- pPCA as a VAE ---------------------------------------------------------------------------


@PROGRAMS.register("ppca")
def ppca_program(
    spec: ModelSpec, *, data_dim: int, image_shape: tuple[int, ...] | None = None,
    data_sample: Tensor | None = None, seed: int | None = None,
) -> VAE:
    """Probabilistic PCA: p(z) = N(0, I), x = W z + mu + N(0, sigma^2 I), a linear encoder and the spec's guide family.

    The spec's latent_dim and guide are used (``full_normal`` contains the exact posterior); the
    likelihood is the spec's when it is ``gaussian`` or ``gaussian_learned``, else ``gaussian``.
    """
    likelihood = spec.likelihood if spec.likelihood.name in ("gaussian", "gaussian_learned") else "gaussian"
    return build_vae(spec, data_dim=data_dim, image_shape=image_shape, data_sample=data_sample, seed=seed,
                     prior="normal", encoder="linear", decoder="linear", likelihood=likelihood)


def linear_gaussian_vae(
    W: Tensor, mu: Tensor, sigma: float | Tensor, *, guide: str = "full_normal", seed: int | None = None
) -> VAE:
    """pPCA as a VAE: prior N(0, I), decoder x = W z + mu, likelihood N(., sigma^2 I), linear encoder.

    Built through :func:`pyro_vae.build_vae` (prior ``normal``, decoder and encoder ``linear``,
    likelihood ``gaussian``, the given ``guide`` family); the decoder's weight is set to W and its
    bias to mu, and the likelihood's sigma to exactly ``sigma``. The VAE takes W's floating dtype.
    The encoder keeps its random initialization; see :func:`set_exact_posterior`.
    """
    W, mu = torch.as_tensor(W), torch.as_tensor(mu)
    dtype = W.dtype if W.is_floating_point() else torch.get_default_dtype()
    sigma = float(sigma)
    if not sigma > 0:
        raise ConfigError(f"sigma must be > 0, got {sigma}")
    D, d = W.shape
    vae = build_vae(
        data_dim=D, latent_dim=d, prior="normal", likelihood={"name": "gaussian", "sigma": sigma},
        encoder="linear", decoder="linear", guide=guide, seed=seed,
    ).to(dtype)
    _set_decoder(vae, W, mu, sigma)
    return vae


def _set_decoder(vae: VAE, W: Tensor, mu: Tensor, sigma: float) -> None:
    lik = vae.likelihood
    if not isinstance(lik, Gaussian) or lik.learn not in (None, "shared"):
        raise ConfigError("pPCA needs the 'gaussian' likelihood (or 'gaussian_learned' with shared=true)")
    with torch.no_grad():
        vae.decoder.weight.copy_(W)
        vae.decoder.bias.copy_(mu)
        if lik.learn is None:  # fixed sigma: stored as it is
            lik.fixed_sigma.fill_(sigma)
            return
        # A learned sigma is softplus(rho) + offset; solve for rho so sigma is exact.
        offset = (lik.sigma - torch.nn.functional.softplus(lik.rho)).detach().double().reshape(-1)[0]
        if sigma <= offset:
            raise ConfigError(f"sigma = {sigma} is below the likelihood's floor {float(offset):.3g}")
        lik.rho.copy_(inverse_softplus(torch.tensor(sigma, dtype=torch.float64) - offset).expand_as(lik.rho))


def pca_parameters(vae: VAE) -> tuple[Tensor, Tensor, Tensor]:
    """(W, mu, sigma) of a linear-Gaussian VAE: W = decoder weight, mu = decoder bias, sigma of the likelihood."""
    dec, lik = vae.decoder, vae.likelihood
    if not isinstance(dec, nn.Linear) or dec.bias is None:
        raise ConfigError("not a pPCA model: the decoder must be the 'linear' network with bias=true")
    if not isinstance(lik, Gaussian) or lik.learn not in (None, "shared"):
        raise ConfigError("not a pPCA model: the likelihood must be 'gaussian' with one shared sigma")
    return dec.weight.detach().double(), dec.bias.detach().double(), lik.sigma.detach().double().reshape(-1)[0]


def set_gaussian_posterior(vae: VAE, A: Tensor, b: Tensor, cov: Tensor) -> None:
    """Set the linear encoder so that q(z | x) = N(A x + b, cov) for every x.

    The encoder's output is eta = E x + c. Its location rows get E = A, c = b. The rows of the
    covariance parameters get zero weight and a constant bias: for ``full_normal``, cov = L L^T
    with L = tril(l) and softplus(l_jj) + floor on the diagonal, so the bias holds L's
    off-diagonal entries and softplus^-1(L_jj - floor); for ``diag_normal`` (cov must be
    diagonal), the bias holds softplus^-1(sqrt(cov_jj) - floor).
    """
    enc, family = vae.encoder, vae.family
    if not isinstance(enc, nn.Linear) or enc.bias is None:
        raise ConfigError("set_gaussian_posterior needs the 'linear' encoder with bias=true (encoder: linear)")
    A, b, cov = _f64(A, b, cov)
    d = vae.latent_dim
    if A.shape != (d, vae.data_dim) or b.shape != (d,) or cov.shape != (d, d):
        raise ConfigError(
            f"expected A {(d, vae.data_dim)}, b {(d,)}, cov {(d, d)}; got {tuple(A.shape)}, {tuple(b.shape)}, {tuple(cov.shape)}"
        )
    floor = _scale_floor(family)
    if isinstance(family, FullNormal):
        L = torch.linalg.cholesky(0.5 * (cov + cov.T))
        raw = L.clone()
        raw.diagonal().copy_(inverse_softplus(L.diagonal() - floor))
        scale_bias = raw[family.rows, family.cols]
    elif isinstance(family, DiagonalNormal):
        off = cov - torch.diag_embed(cov.diagonal())
        if off.abs().max() > 1e-12 * cov.diagonal().abs().max():
            raise ConfigError("the diag_normal guide can only hold a diagonal covariance; use guide='full_normal'")
        scale_bias = inverse_softplus(cov.diagonal().sqrt() - floor)
    else:
        raise ConfigError(
            f"set_gaussian_posterior supports the 'full_normal' and 'diag_normal' guides, not {type(family).__name__}"
        )
    weight = torch.cat([A, torch.zeros(len(scale_bias), vae.data_dim, dtype=torch.float64, device=A.device)])
    with torch.no_grad():
        enc.weight.copy_(weight)
        enc.bias.copy_(torch.cat([b, scale_bias]))


def _scale_floor(family: nn.Module) -> Tensor:
    """The constant the family adds after softplus (read off the family: eta = 0 gives log 2 + floor)."""
    with torch.no_grad():
        q = family(torch.zeros(1, family.param_size, dtype=torch.float64))
        first_scale = q.scale_tril[0, 0, 0] if isinstance(family, FullNormal) else q.base_dist.scale[0, 0]
    return first_scale.double() - math.log(2.0)


def set_exact_posterior(
    vae: VAE, W: Tensor | None = None, mu: Tensor | None = None, sigma: Tensor | float | None = None
) -> None:
    """Set the linear encoder and ``full_normal`` guide so that q(z | x) = p(z | x) exactly.

    p(z | x) = N(M^-1 W^T (x - mu), sigma^2 M^-1), M = W^T W + sigma^2 I, i.e. A = M^-1 W^T,
    b = -A mu, cov = sigma^2 M^-1 in :func:`set_gaussian_posterior`. W, mu, sigma default to the
    VAE's own decoder and likelihood (:func:`pca_parameters`).
    """
    if W is None or mu is None or sigma is None:
        W0, mu0, s0 = pca_parameters(vae)
        W, mu, sigma = (W0 if W is None else W), (mu0 if mu is None else mu), (s0 if sigma is None else sigma)
    W, mu, sigma = _f64(W, mu, sigma)
    eye = torch.eye(W.shape[1], dtype=torch.float64, device=W.device)
    M = W.T @ W + sigma**2 * eye
    A = torch.linalg.solve(M, W.T)
    set_gaussian_posterior(vae, A, -A @ mu, sigma**2 * torch.linalg.inv(M))


__all__ = [
    "simulate",
    "linear", "marginal_covariance", "log_marginal", "posterior", "elbo_gaussian", "elbo_estimator_variance",
    "ml_solution", "em_step",
    "linear_gaussian_vae", "pca_parameters", "set_gaussian_posterior", "set_exact_posterior",
]
