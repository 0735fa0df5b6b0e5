"""Run-folder figures: valid non-blank PNGs, grid arithmetic, PCA math, seeding, file sets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from pyro_vae import DataError, build_vae
from pyro_vae.data import DataSplits
from pyro_vae.plots import (
    FIGURE_NAMES,
    elbo_series,
    image_grid,
    manifold_grid,
    plot_elbo_curves,
    plot_latent_manifold,
    plot_latent_space,
    plot_prior_samples,
    plot_reconstructions,
    posterior_means,
    project_latents,
    save_run_figures,
)


def small_vae(latent_dim=2, image_shape=(8, 8), **kw):
    return build_vae(
        data_dim=64, image_shape=image_shape, latent_dim=latent_dim,
        encoder={"name": "mlp", "hidden": [16]}, decoder={"name": "mlp", "hidden": [16]}, seed=0, **kw,
    )


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.from_numpy((d.data / 16.0 > 0.5).astype(np.float32))
    y = torch.from_numpy(d.target.astype(np.int64))
    return x, y


def splits(digits, image_shape=(8, 8)):
    x, y = digits
    return DataSplits("digits", x[:200], x[200:300], x[300:500], y[:200], y[200:300], y[300:500],
                      image_shape, "threshold")


@dataclass(frozen=True)
class Record:  # the attributes of inference.training.EpochRecord that the plot reads
    epoch: int
    train_elbo: float
    val_elbo: float | None
    beta: float


def history(n=12, warmup=4, with_val=True):
    return [Record(e, -60 + 30 * (1 - math.exp(-e / 3)), (-62 + 30 * (1 - math.exp(-e / 3))) if with_val else None,
                   min(1.0, (e + 1) / (warmup + 1)))
            for e in range(n)]


def read_png(path):
    """Open with PIL, check it is a non-empty, non-blank PNG; return (pixels, text chunks)."""
    assert path.is_file() and path.stat().st_size < 300_000, f"{path} missing or too large"
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("RGB"), dtype=np.float64)
        info = dict(im.info)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert pixels.std() > 0, f"{path} is blank"
    return pixels, info


# ----------------------------------------------------------------------------- image_grid
@pytest.mark.parametrize("n, nrow, pad", [(64, 8, 1), (10, 4, 1), (3, 8, 2), (7, 7, 0), (1, 5, 1)])
def test_image_grid_shape_arithmetic(n, nrow, pad):
    images = torch.arange(n * 12, dtype=torch.float32).reshape(n, 12)  # 3 x 4 images
    grid = image_grid(images, (3, 4), nrow, pad=pad)
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    assert grid.shape == (rows * 3 + (rows - 1) * pad, cols * 4 + (cols - 1) * pad)
    for k in (0, n - 1):  # image k sits in cell divmod(k, cols), rows reshaped in C order
        i, j = divmod(k, cols)
        cell = grid[i * (3 + pad): i * (3 + pad) + 3, j * (4 + pad): j * (4 + pad) + 4]
        np.testing.assert_array_equal(cell, images[k].reshape(3, 4).numpy())
    # every pixel appears exactly once; everything else (padding, empty cells) is NaN
    assert np.isfinite(grid).sum() == n * 12
    np.testing.assert_array_equal(np.sort(grid[np.isfinite(grid)]), np.arange(n * 12))


def test_image_grid_rgb_and_bad_input():
    images = np.random.default_rng(0).random((5, 3 * 2 * 2))  # (C, H, W) = (3, 2, 2)
    grid = image_grid(images, (3, 2, 2), nrow=3, pad=1)
    assert grid.shape == (2 * 2 + 1, 3 * 2 + 2, 3)
    np.testing.assert_array_equal(grid[:2, :2], images[0].reshape(3, 2, 2).transpose(1, 2, 0))
    with pytest.raises(ValueError, match="expected"):
        image_grid(np.zeros((4, 10)), (3, 4), nrow=2)
    with pytest.raises(ValueError, match="image_shape"):
        image_grid(np.zeros((4, 20)), (5, 2, 2), nrow=2)


# ----------------------------------------------------------------------------- ELBO curves
@pytest.mark.parametrize("as_dict", [False, True])
def test_elbo_curves_from_records_or_dicts(tmp_path, as_dict):
    hist = history()
    if as_dict:
        hist = [asdict(r) for r in hist]
    out = plot_elbo_curves(hist, tmp_path / "sub" / "elbo.png", title="my run")
    assert out == tmp_path / "sub" / "elbo.png"
    _, info = read_png(out)
    assert info.get("Title") == "my run"


def test_elbo_series_best_epoch_and_warmup_spans():
    # validation every 3rd epoch, peaking at epoch 6; warm-up in two separate stretches
    vals = {0: -50.0, 3: -40.0, 6: -35.0, 9: -36.0}
    betas = [0.2, 0.5, 1.0, 1.0, 0.1, 0.1, 0.3, 1.0, 1.0, 1.0]
    hist = [{"epoch": e, "train_elbo": -30.0 - e, "val_elbo": vals.get(e), "beta": b} for e, b in enumerate(betas)]
    s = elbo_series(hist)
    assert s.best == 6 and s.val[6] == -35.0
    assert np.isnan(s.val[1]) and np.isfinite(s.val).sum() == 4
    assert s.warmup == [(0, 1), (4, 6)]
    no_val = elbo_series([Record(1, -3.0, None, 1.0), Record(2, -2.0, None, 1.0)])
    assert no_val.best is None and no_val.warmup == []
    np.testing.assert_array_equal(no_val.epochs, [1, 2])


def test_elbo_curves_without_validation_or_warmup_and_empty(tmp_path):
    hist = [SimpleNamespace(epoch=r.epoch, train_elbo=r.train_elbo, val_elbo=None, beta=1.0) for r in history()]
    read_png(plot_elbo_curves(hist, tmp_path / "elbo.png"))
    with pytest.raises(ValueError, match="empty"):
        plot_elbo_curves([], tmp_path / "none.png")


# ----------------------------------------------------------------------------- reconstructions
def test_reconstructions_images_and_features(tmp_path, digits):
    x, _ = digits
    vae = small_vae()
    vae.train()
    read_png(plot_reconstructions(vae, x[:20], (8, 8), tmp_path / "img.png", n=6))
    assert all(m.training for m in vae.modules()), "plots must restore the training flags"
    flat = small_vae(image_shape=None)
    pixels, _ = read_png(plot_reconstructions(flat, x[:20], None, tmp_path / "flat.png"))
    assert pixels.shape[0] > pixels.shape[1] / 2  # a stack of per-point panels, not a one-row strip
    with pytest.raises(DataError, match="flatten"):
        plot_reconstructions(vae, x[:4].reshape(4, 8, 8), (8, 8), tmp_path / "bad.png")


# ----------------------------------------------------------------------------- prior samples
def test_prior_samples_are_seeded_and_leave_global_rng_alone(tmp_path):
    vae = small_vae()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = plot_prior_samples(vae, (8, 8), tmp_path / "a.png", n=16, seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    b = plot_prior_samples(vae, (8, 8), tmp_path / "b.png", n=16, seed=0)
    c = plot_prior_samples(vae, (8, 8), tmp_path / "c.png", n=16, seed=1)
    pa, pb, pc = (read_png(p)[0] for p in (a, b, c))
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(pa, pc)
    assert torch.equal(torch.get_rng_state(), before)


# ----------------------------------------------------------------------------- latent space
def test_pca_projection_matches_the_math():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(300, 5)) * np.array([3.0, 2.0, 1.0, 0.5, 0.1])
    proj = project_latents(means)
    assert proj.method == "pca" and proj.coords.shape == (300, 2)
    np.testing.assert_allclose(proj.explained_variance, PCA(n_components=5).fit(means).explained_variance_ratio_[:2],
                               rtol=1e-9)
    # the coordinates' variances are the top eigenvalues of the sample covariance
    eig = np.sort(np.linalg.eigvalsh(np.cov(means.T)))[::-1]
    np.testing.assert_allclose(proj.coords.var(axis=0, ddof=1), eig[:2], rtol=1e-9)
    assert "PCA" not in proj.axis_labels[0] and "PC1 of E[z|x]" in proj.axis_labels[0]
    assert "%" in proj.axis_labels[1]
    # means on a 2-D plane of R^5: two components explain everything, distances are preserved
    plane = rng.normal(size=(50, 2)) @ rng.normal(size=(2, 5)) + 7.0
    flat = project_latents(plane)
    assert abs(flat.explained_variance.sum() - 1.0) < 1e-10
    d = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(d(flat.coords), d(plane), atol=1e-8)
    assert project_latents(means[:, :2]).method == "identity"


@pytest.mark.parametrize("latent_dim, with_labels, title_part", [
    (2, True, "Posterior means"), (5, True, "PCA of E[z|x]"), (1, True, "latent_dim 1"), (1, False, "latent_dim 1"),
    (2, False, "Posterior means"),
])
def test_latent_space_plots(tmp_path, digits, latent_dim, with_labels, title_part):
    x, y = digits
    vae = small_vae(latent_dim)
    out = plot_latent_space(vae, x[:150], y[:150] if with_labels else None, tmp_path / "latent.png")
    _, info = read_png(out)
    assert title_part in info["Title"]
    assert posterior_means(vae, x[:7]).shape == (7, latent_dim)


def test_latent_space_continuous_labels_and_mismatch(tmp_path, digits):
    x, _ = digits
    vae = small_vae(2)
    read_png(plot_latent_space(vae, x[:60], np.linspace(0, 1, 60), tmp_path / "cont.png"))
    with pytest.raises(DataError, match="one label per row"):
        plot_latent_space(vae, x[:60], torch.zeros(59), tmp_path / "bad.png")


# ----------------------------------------------------------------------------- manifold
def test_manifold_grid_uses_inverse_cdf_of_the_prior():
    z1, z2 = manifold_grid(small_vae(2), n=9)
    expected = stats.norm.ppf(np.linspace(0.05, 0.95, 9))  # AEVB Fig. 4: Phi^{-1}(u)
    np.testing.assert_allclose(z1, expected, atol=1e-5)
    np.testing.assert_allclose(z2, expected, atol=1e-5)


def test_manifold_grid_falls_back_to_sample_quantiles():
    # Student-t has no icdf in torch: quantiles of 20000 draws. Their standard error is
    # sqrt(u (1 - u) / N) / f(F^{-1}(u)); allow 5 of them.
    vae = small_vae(2, prior={"name": "student_t", "df": 3.0})
    before = torch.get_rng_state()
    z1, z2 = manifold_grid(vae, n=7)
    assert torch.equal(torch.get_rng_state(), before)
    u = np.linspace(0.05, 0.95, 7)
    q = stats.t.ppf(u, df=3)
    se = np.sqrt(u * (1 - u) / 20000) / stats.t.pdf(q, df=3)
    assert np.all(np.abs(z1 - q) < 5 * se) and np.all(np.abs(z2 - q) < 5 * se)


def test_manifold_draws_latent_dim_2_and_refuses_others(tmp_path):
    _, info = read_png(plot_latent_manifold(small_vae(2), (8, 8), tmp_path / "manifold.png", n=6))
    assert "6x6" in info["Title"]
    for d in (1, 5):
        with pytest.raises(ValueError, match="latent_dim = %d" % d):
            plot_latent_manifold(small_vae(d), (8, 8), tmp_path / "no.png")
    assert not (tmp_path / "no.png").exists()


# ----------------------------------------------------------------------------- run folder
@pytest.mark.parametrize("latent_dim, image, hist, expected", [
    (2, True, True, {"elbo", "reconstructions", "prior_samples", "latent_space", "latent_manifold"}),
    (5, True, True, {"elbo", "reconstructions", "prior_samples", "latent_space"}),
    (2, False, True, {"elbo", "reconstructions", "latent_space"}),
    (2, True, False, {"reconstructions", "prior_samples", "latent_space", "latent_manifold"}),
])
def test_save_run_figures_file_sets(tmp_path, digits, latent_dim, image, hist, expected):
    data = splits(digits, (8, 8) if image else None)
    vae = small_vae(latent_dim, image_shape=data.image_shape)
    paths = save_run_figures(vae, data, history() if hist else None, tmp_path / "figures")
    assert {p.name for p in paths} == {FIGURE_NAMES[k] for k in expected}
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(p.name for p in paths)
    for p in paths:
        read_png(p)



def test_elbo_figure_splits_reconstruction_and_kl_when_the_records_have_them(tmp_path):
    from pyro_vae.plots import elbo_series
    from pyro_vae.plots.curves import elbo_terms

    plain = [{"epoch": e, "train_elbo": -30.0 + e, "val_elbo": -31.0 + e, "beta": 1.0} for e in range(1, 5)]
    split = [{**r, "stats": {"val_reconstruction": -20.0 + r["epoch"], "val_kl": 11.0}} for r in plain]
    recon, kl = elbo_terms(split)
    assert recon.tolist() == [-19.0, -18.0, -17.0, -16.0] and kl.tolist() == [11.0] * 4
    assert np.isnan(elbo_terms(plain)[0]).all() and elbo_series(plain).best == 3
    small, tall = plot_elbo_curves(plain, tmp_path / "a.png"), plot_elbo_curves(split, tmp_path / "b.png")
    assert Image.open(tall).size[1] > Image.open(small).size[1]  # a second panel for the terms
