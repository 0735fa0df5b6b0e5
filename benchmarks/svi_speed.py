"""Seconds per epoch of pyro-vae's SVI against a hand-written PyTorch VAE, in the same run.

Both train the identical network (784-200-200-2x50 encoder, 50-200-200-784 decoder, ReLU,
diagonal Gaussian q with softplus scales, Bernoulli likelihood, N(0, I) prior) on dynamically
binarized MNIST with the same minibatches (batch 100), Adam(1e-3) and thread count. The
hand-written loop computes the same estimators by hand:

    A: log p(x|z) + log p(z) - log q(z|x) at z = mu + sigma * eps   (Trace_ELBO)
    B: log p(x|z) - KL(q(z|x) || N(0, I)) in closed form            (TraceMeanField_ELBO)

scaled by N / B like the library's plate. Runs alternate (hand, library, hand-fused, hand,
library, ...) so that load from other processes hits all; ratios of median epoch times are
printed:

* ``ratio``: pyro-vae against the hand loop as one writes it, ``torch.optim.Adam(params, lr)``
  (the target, <= 1.15);
* ``overhead ratio``: pyro-vae against the same hand loop with ``Adam(..., fused=True)``, the
  optimizer kernel the library uses (``inference.svi.adam``): what Pyro's model/guide tracing
  costs on its own.

    python benchmarks/svi_speed.py [--epochs 3] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_data_dir, run_main  # noqa: E402

from inference import svi  # noqa: E402
from pyro_vae import build_vae  # noqa: E402
from pyro_vae.data import batches, load_dataset  # noqa: E402
from pyro_vae.spec import TrainSpec  # noqa: E402

HIDDEN, LATENT, BATCH, LR = [200, 200], 50, 100, 1e-3


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


def hand_written(x_train: torch.Tensor, epochs: int, estimator: str, seed: int, fused: bool = False) -> list[float]:
    """The reference: a plain PyTorch VAE loop (``fused``: fused Adam kernel). Returns seconds per epoch."""
    torch.manual_seed(seed)
    d = x_train.shape[1]
    enc, dec = mlp([d, *HIDDEN, 2 * LATENT]), mlp([LATENT, *HIDDEN[::-1], d])
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=LR, **({"fused": True} if fused else {}))
    gen = torch.Generator().manual_seed(seed)
    n = x_train.shape[0]
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for x in (b["x"] for b in batches(x_train, BATCH, generator=gen, binarize=True)):
            loc, rho = enc(x).split(LATENT, -1)
            scale = F.softplus(rho) + 1e-4
            z = loc + scale * torch.randn_like(loc)
            log_lik = -F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(-1)
            if estimator == "trace":  # unchecked, as the library's steps after the first
                log_q = torch.distributions.Normal(loc, scale, validate_args=False).log_prob(z).sum(-1)
                log_p = torch.distributions.Normal(0.0, 1.0, validate_args=False).log_prob(z).sum(-1)
                elbo = log_lik + log_p - log_q
            else:
                kl = 0.5 * (scale**2 + loc**2 - 1.0 - 2.0 * scale.log()).sum(-1)
                elbo = log_lik - kl
            loss = -elbo.sum() * (n / x.shape[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def library(data, epochs: int, estimator: str, seed: int) -> tuple[list[float], float]:
    """pyro-vae's svi.fit on the same network; returns seconds per epoch and the whole call's time."""
    vae = build_vae(
        data_dim=data.feature_dim, latent_dim=LATENT, seed=seed,
        encoder={"name": "mlp", "hidden": HIDDEN}, decoder={"name": "mlp", "hidden": HIDDEN[::-1]},
    )
    t0 = time.perf_counter()
    fit = svi.fit(vae, data, TrainSpec(elbo=estimator, epochs=epochs, batch_size=BATCH, lr=LR, seed=seed), progress=False)
    return [r.seconds for r in fit.history], time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--max-train", type=int, default=None, help="use only the first N training rows")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # No validation split: the hand-written loop has none either; the test split is unused.
    data = load_dataset("mnist", data_dir=args.data_dir, binarize="dynamic", val_fraction=0.0,
                        seed=0, max_train=args.max_train)
    print(f"MNIST, {len(data.train)} training rows, dynamic binarization, batch {BATCH}, "
          f"784-200-200-{LATENT}, torch {torch.__version__}, {args.threads} threads, "
          f"{args.epochs} epochs x {args.repeats} repeats per side")
    for estimator in ("trace", "meanfield"):
        hand, fused, lib, lib_calls, hand_calls = [], [], [], [], []
        for r in range(args.repeats):
            h = hand_written(data.train, args.epochs, estimator, seed=r)
            lt, total = library(data, args.epochs, estimator, seed=r)
            fused += hand_written(data.train, args.epochs, estimator, seed=r, fused=True)
            hand += h
            lib += lt
            hand_calls.append(sum(h))
            lib_calls.append(total)
        mh, mf, ml = statistics.median(hand), statistics.median(fused), statistics.median(lib)
        print(f"{estimator:9s}: hand-written {mh:.2f} s/epoch (fused Adam {mf:.2f}), pyro-vae {ml:.2f} s/epoch "
              f"(median of {len(lib)}); whole fit() incl. data check vs hand loop: "
              f"{statistics.median(lib_calls) / statistics.median(hand_calls):.3f}")
        print(f"ratio {estimator} (pyro-vae / hand-written, s/epoch): {ml / mh:.3f}  (target <= 1.15)")
        print(f"overhead ratio {estimator} (pyro-vae / hand-written with fused Adam too): {ml / mf:.3f}")


if __name__ == "__main__":
    run_main(main)
