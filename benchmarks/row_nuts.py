"""One NUTS chain per row (``kernel="row_nuts"``) against Pyro's NUTS on the whole block of latents
(``kernel="nuts"``), as the number of rows grows: ESS per second, and the ratio row_nuts / block.

Both sides call :func:`inference.mcmc.sample_latents` on the same decoder, rows, chains, warm-up and
draws. The block's one step size must keep the energy error of all N*d coordinates small, so it shrinks
(about as (N d)^(-1/4) on a Gaussian) and its trajectories lengthen as N grows; each row's own chain does
not. ESS per second = median over rows x latent dims of ArviZ's bulk ESS, over the wall seconds of the
run. The check line compares the two runs' posterior means in posterior-sd units (both are exact).

The decoder is :func:`benchmarks.mcmc_speed.digits_decoder` (SVI on the scikit-learn digits).

    PYTHONPATH=. python benchmarks/row_nuts.py --points 100,1000
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
from benchmarks.mcmc_speed import bulk_ess, digits_decoder  # noqa: E402

from inference.mcmc import sample_latents  # noqa: E402


def _side(vae, x: torch.Tensor, kernel: str, seed: int, common: dict) -> tuple[float, np.ndarray, object]:
    t0 = time.perf_counter()
    post = sample_latents(vae, x, kernel=kernel, seed=seed, **common)
    seconds = time.perf_counter() - t0
    ess = bulk_ess(post.z)
    print(f"  {kernel:8s}: {seconds:7.1f} s, leapfrog steps per row and draw {post.sample_stats['num_steps'].mean():6.1f}, "
          f"step size (median) {np.median(post.sample_stats['step_size']):.3f}, divergences {post.num_divergences}, "
          f"bulk ESS median {np.median(ess):.0f} (min {ess.min():.0f})", flush=True)
    return seconds, ess, post


def main(argv: list[str] | None = None) -> list[float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", default="100,1000", help="comma-separated numbers of rows")
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--latent-dim", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=30, help="SVI epochs for the decoder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    points = [int(p) for p in args.points.split(",")]
    vae, data = digits_decoder(args.latent_dim, args.epochs, args.seed)
    common = dict(num_samples=args.draws, warmup=args.warmup, num_chains=args.chains, init="encoder", progress=False)
    print(f"settings: {args.chains} chains (sequential) x ({args.warmup} warm-up + {args.draws} draws), "
          f"latent_dim {args.latent_dim}, torch threads {args.threads}")
    ratios = []
    for P in points:
        x = data.test[:P] if P <= data.test.shape[0] else data.train[:P]
        print(f"{x.shape[0]} rows:")
        t_block, ess_block, block = _side(vae, x, "nuts", args.seed, common)
        t_rows, ess_rows, rows = _side(vae, x, "row_nuts", args.seed, common)
        sd = rows.draws().std(0)
        gap = ((block.posterior_mean() - rows.posterior_mean()).abs() / sd)
        print(f"  check: |mean_block - mean_rows| / posterior sd: median {gap.median():.3f}, max {gap.max():.3f}")
        ratio = (np.median(ess_rows) / t_rows) / (np.median(ess_block) / t_block)
        print(f"  ratio (row_nuts / block ESS per second): {ratio:.2f}", flush=True)
        ratios.append(float(ratio))
    return ratios


if __name__ == "__main__":
    run_main(main)
