"""For a session that has a CUDA GPU: the device tests, then the library's SVI step against a hand-written one there.

Prepared to finish within about 5 minutes on one GPU, needing nothing from outside the
repository (synthetic binary data of MNIST's shape, so no data folder):

1. ``pytest`` on the device tests (tests/inference/test_devices.py, including the CUDA-only
   round trips GPU -> CPU -> GPU, and the data-parallel tests' fast part);
2. seconds per epoch of ``svi.fit(..., device="cuda")`` against a hand-written PyTorch loop of
   the same network (784-200-200-2x50, Bernoulli, estimator A: log p(x|z) + log p(z) - log q(z|x)
   at z = mu + sigma * eps, scaled by N / B) with the same Adam, at batch 100 and 1000;
   ``ratio`` = library / hand-written (target <= 1.15); rows/s of both;
3. the library with ``train.mixed_precision`` (bfloat16 networks) against float32;
4. the same hand-written step under ``torch.compile`` (what compilation would buy the
   network's part; Pyro's per-step tracing is not compiled).

    python benchmarks/gpu_check.py [--rows 20000] [--epochs 3] [--skip-tests]

Record what it prints in benchmarks/README.md (section "scaling", GPU).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks._common import run_main  # noqa: E402

from inference import svi  # noqa: E402
from pyro_vae import build_vae  # noqa: E402
from pyro_vae.data import DataSplits, batches  # noqa: E402
from pyro_vae.spec import TrainSpec  # noqa: E402

HIDDEN, LATENT, LR = [200, 200], 50, 1e-3


def synthetic(rows: int, seed: int = 0) -> DataSplits:
    """Binary rows of MNIST's shape (784), from a fixed random pattern (timing only)."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(10, 784, generator=g)
    x = torch.bernoulli(p[torch.randint(10, (rows + 200,), generator=g)], generator=g)
    empty = torch.empty(0, 784)
    return DataSplits("synthetic", x[:rows], empty, x[rows:], None, None, None, (28, 28), "none")


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


def hand_written(x_train: torch.Tensor, epochs: int, batch: int, compiled: bool = False) -> list[float]:
    """A plain PyTorch VAE loop on CUDA (same batches as the library's); seconds per epoch."""
    dev = torch.device("cuda")
    torch.manual_seed(0)
    d = x_train.shape[1]
    enc, dec = mlp([d, *HIDDEN, 2 * LATENT]).to(dev), mlp([LATENT, *HIDDEN[::-1], d]).to(dev)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=LR)
    n = x_train.shape[0]

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        loc, rho = enc(x).split(LATENT, -1)
        scale = F.softplus(rho) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        log_lik = -F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(-1)
        log_q = torch.distributions.Normal(loc, scale, validate_args=False).log_prob(z).sum(-1)
        log_p = torch.distributions.Normal(0.0, 1.0, validate_args=False).log_prob(z).sum(-1)
        return -(log_lik + log_p - log_q).sum() * (n / x.shape[0])

    step_loss = torch.compile(loss_fn) if compiled else loss_fn
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for b in batches(x_train, batch, generator=gen):
            loss = step_loss(b["x"].to(dev, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def library(data: DataSplits, epochs: int, batch: int, mixed_precision: bool = False) -> list[float]:
    vae = build_vae(data_dim=784, latent_dim=LATENT, seed=0, encoder={"name": "mlp", "hidden": HIDDEN},
                    decoder={"name": "mlp", "hidden": HIDDEN[::-1]}, likelihood="bernoulli")
    train = TrainSpec(epochs=epochs, batch_size=batch, lr=LR, seed=0, mixed_precision=mixed_precision)
    fit = svi.fit(vae, data, train, device="cuda", progress=False)
    return [r.seconds for r in fit.history]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--skip-tests", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to check")
        return 1
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    if not args.skip_tests:
        tests = ["tests/inference/test_devices.py", "tests/inference/training/test_distributed.py", "-m", "not slow"]
        code = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=REPO).returncode
        print(f"device tests: exit status {code}")
    data = synthetic(args.rows)
    for batch in (100, 1000):
        library(data, 1, batch)  # warm-up: CUDA context, kernels, allocator
        hand_written(data.train, 1, batch)
        hand = statistics.median(hand_written(data.train, args.epochs, batch))
        lib = statistics.median(library(data, args.epochs, batch))
        print(f"batch {batch}: hand-written {hand:.3f} s/epoch ({args.rows / hand:.0f} rows/s), pyro-vae {lib:.3f} "
              f"s/epoch ({args.rows / lib:.0f} rows/s; validation: none); ratio {lib / hand:.3f} (target <= 1.15)")
        mixed = statistics.median(library(data, args.epochs, batch, mixed_precision=True))
        print(f"batch {batch}: pyro-vae with train.mixed_precision {mixed:.3f} s/epoch (x{lib / mixed:.2f} vs float32)")
        try:
            comp = statistics.median(hand_written(data.train, args.epochs + 1, batch, compiled=True)[1:])
            print(f"batch {batch}: hand-written under torch.compile {comp:.3f} s/epoch (x{hand / comp:.2f} vs eager)")
        except Exception as err:  # compile needs a toolchain; say so and go on
            print(f"batch {batch}: torch.compile failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    return 0


if __name__ == "__main__":
    run_main(main)
