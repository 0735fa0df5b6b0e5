"""Vectorized NUTS over many datapoints' latents vs. a loop of per-datapoint NUTS runs (target: >= 10x).

Both sides call :func:`inference.mcmc.sample_latents` with the same decoder, kernel, number of
chains, warm-up and draws; the only difference is that the vectorized side passes all P rows
at once (one potential over the (P, d) block of z) and the loop side one row per run.

ESS per second, per side = median over datapoints x latent dims of ArviZ's bulk ESS (``az.ess``,
method "bulk", chains x draws of one coordinate), divided by the wall seconds needed to sample
ALL P datapoints. The loop is timed on the first ``--loop-points`` rows and its time is
extrapolated linearly to P rows (the runs are independent, so time per datapoint is constant
in expectation); the output says so. The minimum ESS is printed as well.

The decoder comes from a VAE trained briefly by SVI (``inference.svi.fit``) on the scikit-learn
8x8 digits, binarized at 0.5, Bernoulli likelihood; the P datapoints are test rows.

    python benchmarks/mcmc_speed.py            # about 4 minutes on a shared 2-core machine
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import run_main  # noqa: E402

from inference.diagnostics.convert import arviz_ess, draws_to_inference_data  # noqa: E402
from inference.mcmc import sample_latents  # noqa: E402
from inference.svi import fit  # noqa: E402
from pyro_vae import build_vae  # noqa: E402
from pyro_vae.data import load_dataset  # noqa: E402


def bulk_ess(z: torch.Tensor) -> np.ndarray:
    """ArviZ bulk ESS of each (datapoint, dim) coordinate of draws z (chains, draws, P, d)."""
    return arviz_ess(draws_to_inference_data(z).posterior, "bulk")["z"].values


def digits_decoder(latent_dim: int, epochs: int, seed: int):
    """(VAE, data): a 64-200-d-200-64 Bernoulli VAE fitted by SVI on the digits binarized at 0.5."""
    data = load_dataset("digits", binarize="threshold", seed=seed)
    vae = build_vae(
        data_dim=data.feature_dim, image_shape=data.image_shape, latent_dim=latent_dim,
        likelihood="bernoulli", encoder={"name": "mlp", "hidden": [200]}, decoder={"name": "mlp", "hidden": [200]},
        seed=seed,
    )
    t0 = time.perf_counter()
    trained = fit(vae, data, {"epochs": epochs, "lr": 3e-3, "batch_size": 100, "seed": seed}, progress=False)
    print(
        f"decoder: VAE 64-200-{latent_dim}-200-64, Bernoulli, digits (threshold 0.5), {epochs} SVI epochs "
        f"in {time.perf_counter() - t0:.1f} s, validation ELBO {trained.best_val_elbo:.2f} nats"
    )
    return vae, data


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200, help="datapoints sampled by the vectorized run")
    ap.add_argument("--loop-points", type=int, default=10, help="datapoints timed in the per-datapoint loop")
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--latent-dim", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=30, help="SVI epochs for the decoder")
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (1: these tensors are too small to gain from more, and on a loaded "
        "2-core machine a second thread made every op many times slower)",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    vae, data = digits_decoder(args.latent_dim, args.epochs, args.seed)
    x = data.test[: args.points]
    P, k = x.shape[0], min(args.loop_points, x.shape[0])
    common = dict(num_samples=args.draws, warmup=args.warmup, num_chains=args.chains, init="prior", progress=False)
    print(
        f"settings: NUTS, {args.chains} chains (sequential) x ({args.warmup} warm-up + {args.draws} draws), "
        f"latent_dim {args.latent_dim}, torch threads {args.threads}"
    )

    t0 = time.perf_counter()
    vec = sample_latents(vae, x, seed=args.seed, **common)
    t_vec = time.perf_counter() - t0
    ess_vec = bulk_ess(vec.z)
    print(
        f"vectorized: {P} datapoints in one run: {t_vec:.1f} s, {vec.num_gradient_evals} gradient evals, "
        f"step size {vec.sample_stats['step_size'][:, 0].mean():.3f}, mean leapfrog steps/draw "
        f"{vec.sample_stats['num_steps'].mean():.1f}, divergences {vec.num_divergences}"
    )

    loop_z, loop_time, loop_steps, loop_div = [], 0.0, [], 0
    for i in range(k):
        t0 = time.perf_counter()
        one = sample_latents(vae, x[i : i + 1], seed=args.seed + i, **common)
        loop_time += time.perf_counter() - t0
        loop_z.append(one.z)
        loop_steps.append(one.sample_stats["num_steps"].mean())
        loop_div += one.num_divergences
    z_loop = torch.cat(loop_z, dim=2)  # (chains, draws, k, d)
    ess_loop = bulk_ess(z_loop)
    t_loop = loop_time / k * P
    print(
        f"loop: {k} per-datapoint runs timed: {loop_time:.1f} s = {loop_time / k:.2f} s/datapoint; "
        f"EXTRAPOLATED to {P} datapoints: {t_loop:.1f} s; mean leapfrog steps/draw {np.mean(loop_steps):.1f}, "
        f"divergences {loop_div}"
    )

    # both sample the same posteriors: compare means on the shared rows, in posterior-sd units
    sd = vec.z[:, :, :k].reshape(-1, k, args.latent_dim).std(0)
    gap = ((vec.z[:, :, :k].mean((0, 1)) - z_loop.mean((0, 1))).abs() / sd).max()
    print(f"check: max |mean_vec - mean_loop| / posterior sd over the {k} shared datapoints = {gap:.3f}")

    med_vec, med_loop = float(np.median(ess_vec)), float(np.median(ess_loop))
    rate_vec, rate_loop = med_vec / t_vec, med_loop / t_loop
    print(
        f"ESS (bulk, median over datapoints x dims): vectorized {med_vec:.0f} (min {ess_vec.min():.0f}; "
        f"on the {k} shared rows {np.median(ess_vec[:k]):.0f}), loop {med_loop:.0f} (min {ess_loop.min():.0f})"
    )
    print(
        f"ESS per second for all {P} datapoints (median ESS / wall time): vectorized {rate_vec:.2f}, "
        f"loop {rate_loop:.3f} (loop time extrapolated from {k} datapoints)"
    )
    ratio = rate_vec / rate_loop
    print(f"ratio (vectorized / loop ESS per second): {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    run_main(main)
