r"""PNG figures for a run folder: ELBO curves, reconstructions, samples, latent space, manifold.

Every function takes data or a trained VAE and a path, writes one PNG and returns its
``Path``. Figures are built with the object-oriented API (``matplotlib.figure.Figure`` on a
``FigureCanvasAgg``): nothing touches pyplot's global state or the user's backend, nothing
is shown, and the figure is released after saving. The figure title is also stored in the
PNG's ``Title`` text chunk, so a script can tell figures apart without looking at them.

What is drawn, for a VAE p(z) p_theta(x | z) with guide q_phi(z | x):

- ELBO curves: L(x) = E_q[log p_theta(x | z)] - KL(q_phi(z | x) || p(z)) in nats per
  datapoint, per epoch, train and validation; the best validation epoch is marked and
  KL warm-up epochs (beta < 1) are shaded.
- Reconstructions: E[x | z = E_q[z | x]] next to x (``vae.reconstruct``).
- Prior samples: E[x | z] for z ~ p(z) (``vae.sample(n, mean=True)``), seeded without
  touching the global RNG.
- Latent space: posterior means E_q[z | x]; for latent_dim > 2 their projection on the first
  two principal components (centred, numpy SVD), axes labelled with explained variance
  s_k^2 / sum_j s_j^2.
- Latent manifold (latent_dim == 2 only): E[x | z] on a grid z = F^{-1}(u) of marginal prior
  quantiles, u on a uniform grid in (0.05, 0.95) (AEVB, Kingma & Welling 2014, Fig. 4).
"""

from pyro_vae.plots.canvas import DPI, FIGURE_NAMES, image_grid, save_figure
from pyro_vae.plots.curves import ElboSeries, elbo_series, plot_elbo_curves
from pyro_vae.plots.images import plot_prior_samples, plot_reconstructions, plot_sample_grid
from pyro_vae.plots.latents import (
    LatentProjection, manifold_grid, plot_latent_manifold, plot_latent_space, posterior_means, project_latents,
)
from pyro_vae.plots.run import save_run_figures

__all__ = [
    "DPI", "FIGURE_NAMES", "image_grid", "save_figure", "ElboSeries", "elbo_series", "plot_elbo_curves",
    "plot_prior_samples", "plot_reconstructions", "plot_sample_grid", "LatentProjection", "manifold_grid", "plot_latent_manifold",
    "plot_latent_space", "posterior_means", "project_latents", "save_run_figures",
]
