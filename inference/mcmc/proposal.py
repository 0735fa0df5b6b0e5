r"""A per-datapoint Gaussian importance-sampling proposal fitted to posterior draws.

Given draws z_i^(1..S) of p(z | x_i) for each datapoint (MCMC draws, e.g.
:meth:`inference.mcmc.latents.LatentPosterior.gaussian_proposal`), the proposal is::

    q(z | x_i) = N(m_i, s^2 Sigma_i + eps_i I),    eps_i = jitter x tr(Sigma_i) / d

with m_i, Sigma_i the sample mean and covariance of the draws. s = :data:`PROPOSAL_SCALE`
inflates the standard deviations: an importance proposal narrower than the target in any
direction gives importance weights of unbounded variance, while a slightly wider one costs
little efficiency. The proposal is a Pyro guide over site ``"z"`` in the ``"data"`` plate,
so the importance-sampling yardstick (:mod:`inference.evaluate`) scores it like any guide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.errors import ConfigError

Tensor = torch.Tensor
PROPOSAL_SCALE = 1.2  # standard-deviation inflation of the Gaussian fitted to MCMC draws


@dataclass(frozen=True)
class GaussianProposal:
    r"""A per-datapoint Gaussian guide q(z | x_i) = N(loc_i, L_i L_i^T), usable as an IS proposal.

    Called as ``guide(x, num_data=None, **kwargs)`` it samples site ``"z"`` under
    ``pyro.plate("data", B, dim=-1)``, like :meth:`pyro_vae.vae.VAE.guide`. Each row of ``x`` is
    looked up (by exact value) among the rows it was fitted to, so any subset or reordering of
    those rows works (identical rows have identical posteriors); an unknown row raises
    ConfigError.
    """

    loc: Tensor  # (N, d)
    scale_tril: Tensor  # (N, d, d)
    x: Tensor  # (N, D), the rows the Gaussians belong to

    @classmethod
    def from_moments(
        cls, mean: Tensor, cov: Tensor, x: Tensor, *, scale: float = PROPOSAL_SCALE, jitter: float = 1e-6
    ) -> GaussianProposal:
        r"""q(z | x_i) = N(m_i, scale^2 Sigma_i + eps_i I) from per-datapoint moments.

        Parameters
        ----------
        mean : Tensor
            m_i, shape (N, d).
        cov : Tensor
            Sigma_i, shape (N, d, d); symmetrized as (Sigma_i + Sigma_i^T) / 2.
        x : Tensor
            The N rows (N, D) the Gaussians belong to.
        scale : float
            s > 0, the standard-deviation inflation (covariance x s^2).
        jitter : float
            eps_i = ``jitter`` x tr(Sigma_i) / d keeps the covariance positive definite.

        Returns
        -------
        GaussianProposal
            With ``scale_tril`` the Cholesky factor of s^2 Sigma_i + eps_i I.
        """
        if not scale > 0:
            raise ConfigError(f"scale must be > 0, got {scale}")
        d = cov.shape[-1]
        eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
        eps = jitter * cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(torch.finfo(cov.dtype).tiny)
        cov = scale**2 * 0.5 * (cov + cov.transpose(-1, -2)) + eps[:, None, None] * eye
        return cls(mean, torch.linalg.cholesky(cov), x)

    def rows(self, x: Tensor) -> Tensor:
        """Index into ``self.x`` of each row of ``x`` (a LongTensor of shape (B,))."""
        if x.dim() != 2 or x.shape[1] != self.x.shape[1]:
            raise ConfigError(f"expected rows of shape (B, {self.x.shape[1]}), got {tuple(x.shape)}")
        x = x.detach().to(self.x.dtype)
        if x.shape == self.x.shape and torch.equal(x, self.x):
            return torch.arange(x.shape[0], device=self.x.device)
        index = {row.tobytes(): i for i, row in enumerate(self.x.cpu().numpy())}
        out = []
        for j, row in enumerate(x.cpu().numpy()):
            i = index.get(row.tobytes())
            if i is None:
                raise ConfigError(
                    f"row {j} of x is not among the {self.x.shape[0]} datapoints this proposal was fitted to; "
                    "sample the latents of those rows (sample_latents) and fit a proposal to them"
                )
            out.append(i)
        return torch.tensor(out, dtype=torch.long, device=self.x.device)

    def distribution(self, x: Tensor) -> dist.MultivariateNormal:
        """q(z | x_i) for the rows of x: batch_shape (B,), event_shape (d,)."""
        idx = self.rows(x)
        return dist.MultivariateNormal(self.loc[idx], scale_tril=self.scale_tril[idx])

    def __call__(self, x: Tensor, *, num_data: int | None = None, **kwargs: Any) -> Tensor:
        """z_i ~ q(z | x_i) for every row, site ``"z"`` in the ``"data"`` plate (extra kwargs ignored)."""
        q = self.distribution(x)
        batch = x.shape[0]
        if num_data is None or num_data == batch:
            plate = pyro.plate("data", batch, dim=-1, device=x.device)
        else:
            plate = pyro.plate("data", num_data, subsample=torch.arange(batch, device=x.device), dim=-1, device=x.device)
        with plate:
            return pyro.sample("z", q)


__all__ = ["GaussianProposal", "PROPOSAL_SCALE"]
