"""Milliseconds per M2 training step, with the networks taking x and onehot(y) apart against the concatenation.

One step of semi-supervised M2 on MNIST (the network of Kingma et al. 2014: 784-500-50, softplus) is
the enumerated ELBO on B unlabelled rows (each decoded and encoded under all C classes), the ELBO on
the labelled rows, the classification term, backward and an Adam step. The encoder of q(z | x, y)
sees [x; onehot(y)]; its first layer is linear, so

    W [x; onehot(y)] + b = W_x x + W_y onehot(y) + b,

and ``pyro_vae.m2.through`` computes W_x x once per row instead of once per row and class
(``MLP`` given the two parts). The reference is the same program, the same weights, with its networks
wrapped so they only see the concatenation (the path any non-MLP network takes). Runs alternate
(reference, library, reference, ...) so load from other processes hits both; the ratio of median
step times is printed (library / reference, below 1 is faster).

    python benchmarks/m2_step.py [--steps 30] [--repeats 3] [--threads 1] [--batch 100] [--hidden 500]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_data_dir, run_main  # noqa: E402

from inference.objectives.enum import ClassificationLoss, EnumeratedELBO  # noqa: E402
from pyro_vae import build_program  # noqa: E402
from pyro_vae.data import load_dataset  # noqa: E402
from pyro_vae.spec import ModelSpec  # noqa: E402


class Concatenated(nn.Module):
    """A network seen from outside as any module: ``through`` hands it the concatenation [a; onehot]."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.network(h)


def m2(hidden: int, latent: int, seed: int) -> nn.Module:
    """M2 with one hidden layer of ``hidden`` softplus units in every network (the paper's)."""
    net = {"name": "mlp", "hidden": [hidden], "activation": "softplus"}
    spec = ModelSpec(program={"name": "m2", "classes": 10}, latent_dim=latent, likelihood="bernoulli",
                     encoder=net, decoder=net)
    return build_program(spec, data_dim=784, seed=seed)


def time_steps(program: nn.Module, batch: dict[str, torch.Tensor], steps: int, num_data: int) -> list[float]:
    """Seconds per training step (module docstring), after two warm-up steps; Pyro's argument checks only in the
    first, as in the training loop (``train.validate_every_step: false``)."""
    opt = torch.optim.Adam(program.parameters(), lr=1e-3)
    elbo, classification = EnumeratedELBO(), ClassificationLoss(5000.0)
    x, x_l, y = batch["x"], batch["x_labelled"], batch["y"]
    out = []
    for i in range(steps + 2):
        start = time.perf_counter()
        opt.zero_grad()
        with pyro.validation_enabled(i == 0):
            loss = (elbo.differentiable_loss(program.model, program.guide, x, num_data=num_data)
                    + elbo.differentiable_loss(program.model, program.guide, x_l, y, num_data=100)
                    + classification.differentiable_loss(program.model, program.guide, x_l, y=y, num_data=100))
        loss.backward()
        opt.step()
        if i >= 2:
            out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=100, help="unlabelled rows per step (2 labelled rows ride along)")
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    args = p.parse_args(argv)
    if min(args.steps, args.repeats, args.threads, args.batch, args.hidden, args.latent_dim) < 1:
        p.error("--steps, --repeats, --threads, --batch, --hidden and --latent-dim must be >= 1")
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", data_dir=args.data_dir, binarize="dynamic", max_train=args.batch + 2)
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(data.train, generator=gen)
    batch = {"x": x[:args.batch], "x_labelled": x[args.batch:], "y": torch.tensor([3, 7])}
    library = m2(args.hidden, args.latent_dim, seed=0)
    reference = copy.deepcopy(library)
    reference.encoder, reference.decoder = Concatenated(reference.encoder), Concatenated(reference.decoder)
    times: dict[str, list[float]] = {"reference": [], "library": []}
    for r in range(args.repeats):
        for name, program in (("reference", reference), ("library", library)):
            times[name] += time_steps(copy.deepcopy(program), batch, args.steps, num_data=50000)
        print(f"repeat {r + 1}/{args.repeats}: median ms per step so far, reference "
              f"{1e3 * statistics.median(times['reference']):.1f}, library {1e3 * statistics.median(times['library']):.1f}",
              flush=True)
    ref, lib = statistics.median(times["reference"]), statistics.median(times["library"])
    print(f"M2 784-{args.hidden}-{args.latent_dim}, batch {args.batch} unlabelled + 2 labelled, 10 classes enumerated, "
          f"{args.threads} thread(s), {args.repeats} x {args.steps} steps each")
    print(f"median ms per step: reference (concatenation) {1e3 * ref:.1f}, library (parts apart) {1e3 * lib:.1f}; "
          f"ratio library / reference {lib / ref:.2f}")
    return 0


if __name__ == "__main__":
    run_main(main)
