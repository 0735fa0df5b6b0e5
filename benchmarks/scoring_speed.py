"""Scoring speed: inference's importance-sampled log p(x) against a hand-written IS loop, same network and rows.

The network is Burda et al.'s one-layer VAE (784-200-200-50 tanh encoder and decoder, diagonal
Gaussian q, N(0, I) prior, Bernoulli likelihood; untrained weights, seed 0: the cost does not
depend on the weights). The rows are the first ``--rows`` MNIST test images, binarized once
(seeded). Both sides use the same chunks (``--batch-size`` rows x the yardstick's particle batch)
and the same K; the hand loop computes, per chunk,

    z = mu + sigma eps,  log w = sum_d log N(z_d; 0, 1) + sum_j [x_j l_j - softplus(l_j)] - sum_d log N(z_d; mu_d, sigma_d),

with l the decoder's logits, and combines chunks by a running logsumexp, as one writes it in
PyTorch. Runs alternate hand / library / hand ``--repeats`` times; the ratio of median seconds is
the figure (target <= 1.1). The script also prints the library's figures for a flow guide (IAF)
and the two-layer program on the same rows (no hand-written counterpart), and the up-front cost
estimate of each (:mod:`inference.cost`) next to the measured time.

    python benchmarks/scoring_speed.py --rows 200 -K 1000 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn.functional import softplus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_data_dir, run_main  # noqa: E402

from inference.cost import estimate_log_likelihood_cost  # noqa: E402
from inference.evaluate import log_likelihood, plan_particle_batch  # noqa: E402
from pyro_vae import build_program, build_vae, load_dataset  # noqa: E402
from pyro_vae.spec import ModelSpec  # noqa: E402

LOG_2PI = math.log(2 * math.pi)
NET = {"name": "mlp", "hidden": [200, 200], "activation": "tanh"}


@torch.no_grad()
def hand_log_px(vae, x: torch.Tensor, K: int, batch_size: int) -> torch.Tensor:
    """The hand-written IS estimate of log p(x_i) (module docstring), same chunks as the yardstick."""
    d = vae.latent_dim
    kb = plan_particle_batch(K, min(batch_size, x.shape[0]), x.shape[1])
    out = torch.empty(x.shape[0])
    for r0 in range(0, x.shape[0], batch_size):
        xb = x[r0:r0 + batch_size]
        total = torch.full((xb.shape[0],), -math.inf)
        for k0 in range(0, K, kb):
            nk = min(kb, K - k0)
            loc, rho = vae.encoder(xb).split(d, dim=-1)
            scale = softplus(rho) + 1e-4
            eps = torch.randn(nk, *loc.shape)
            z = loc + scale * eps
            log_q = (-0.5 * eps.pow(2) - scale.log() - 0.5 * LOG_2PI).sum(-1)
            log_pz = (-0.5 * z.pow(2) - 0.5 * LOG_2PI).sum(-1)
            logits = vae.decoder(z)
            log_px_z = (xb * logits - softplus(logits)).sum(-1)
            total = torch.logaddexp(total, (log_pz + log_px_z - log_q).logsumexp(0))
        out[r0:r0 + batch_size] = total - math.log(K)
    return out


def timed(f) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = f()
    return time.perf_counter() - t0, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200)
    p.add_argument("-K", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=str(default_data_dir()))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", data_dir=args.data_dir, binarize="dynamic", val_fraction=1 / 60)
    x = data.test[: args.rows]
    vae = build_vae(data_dim=784, latent_dim=50, encoder=NET, decoder=NET, seed=0).eval()
    lib = lambda: log_likelihood(vae.model, vae.guide, x, num_samples=args.K, batch_size=args.batch_size, progress=False)  # noqa: E731
    hand = lambda: hand_log_px(vae, x, args.K, args.batch_size)  # noqa: E731
    est = estimate_log_likelihood_cost(vae.model, vae.guide, x, num_samples=args.K, batch_size=args.batch_size)
    print(est.summary())
    t_hand, t_lib = [], []
    for _ in range(args.repeats):
        s, v_hand = timed(hand)
        t_hand.append(s)
        s, v_lib = timed(lib)
        t_lib.append(s)
        s, _ = timed(hand)
        t_hand.append(s)
    h, l = statistics.median(t_hand), statistics.median(t_lib)
    print(f"VAE 784-200-200-50, {args.rows} rows, K={args.K}, {args.threads} thread(s): hand {h:.2f} s, "
          f"pyro-vae {l:.2f} s (runs: hand {[round(t, 2) for t in t_hand]}, pyro-vae {[round(t, 2) for t in t_lib]})")
    print(f"  log p(x): hand {v_hand.mean():.3f}, pyro-vae {v_lib.mean:.3f} +- {v_lib.stderr:.3f} (different draws)")
    print(f"  ratio pyro-vae / hand = {l / h:.3f} (target <= 1.1: {'met' if l / h <= 1.1 else 'NOT met'}); "
          f"cost estimate {est.seconds:.2f} s vs measured {l:.2f} s")
    others = {
        "VAE + IAF guide (2 flows)": build_vae(data_dim=784, latent_dim=50, encoder=NET, decoder=NET, seed=0,
                                               guide={"name": "iaf", "num_flows": 2}),
        "hierarchical 784-200-200-100-100-50": build_program(ModelSpec(
            latent_dim=100, encoder=NET, decoder=NET,
            program={"name": "hierarchical", "top_latent_dim": 50, "top_hidden": [100, 100]}), data_dim=784, seed=0),
    }
    for name, program in others.items():
        program.eval()
        est = estimate_log_likelihood_cost(program.model, program.guide, x, num_samples=args.K, batch_size=args.batch_size)
        s, v = timed(lambda: log_likelihood(program.model, program.guide, x, num_samples=args.K,
                                            batch_size=args.batch_size, progress=False))
        print(f"{name}: pyro-vae {s:.2f} s ({s / l:.2f}x the VAE), log p(x) {v.mean:.3f}; cost estimate {est.seconds:.2f} s")


if __name__ == "__main__":
    run_main(main)
