"""Milliseconds per enumerated M2 gradient with subnormal floats flushed to zero, against without.

Under enumeration every class's branch of M2's unlabelled term is weighted by q(y | x); once the
classifier is sure of a row, its other classes get q(y | x) = e^-gap, which is subnormal in float32
(below 1.2e-38) for gaps of about 88 to 103 nats, and the backward matmuls of those branches slow
down many times on a CPU. The training loop flushes subnormals to zero
(``inference.training.subnormals``). This times the forward and backward pass of the enumerated
ELBO on B rows of the M1+M2 model (M2 784-500-50 on M1's latent means: ``--data-dim`` inputs
drawn N(0, I), a learned-variance Gaussian likelihood), with the classifier set to put
1 - 9 e^-gap on class 0 and e^-gap on each other class, flushed and not, alternating; the ratio of
medians is printed for each gap (a gap of 20 has no subnormals: the control, ratio ~1).

    python benchmarks/subnormals.py [--gaps 20,95] [--steps 10] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_main  # noqa: E402

from inference.objectives.enum import EnumeratedELBO  # noqa: E402
from inference.training.subnormals import flushing_subnormals  # noqa: E402
from pyro_vae import build_program  # noqa: E402
from pyro_vae.spec import ModelSpec  # noqa: E402

TINY = torch.finfo(torch.float32).tiny


def sure_m2(data_dim: int, hidden: int, gap: float) -> torch.nn.Module:
    """The M1+M2 model with its classifier's output layer set to logits (gap, 0, ..., 0) for every row."""
    net = {"name": "mlp", "hidden": [hidden], "activation": "softplus"}
    program = build_program(ModelSpec(program={"name": "m2", "classes": 10}, latent_dim=50,
                                      likelihood="gaussian_learned", encoder=net, decoder=net), data_dim=data_dim, seed=0)
    last = program.classifier[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[0] = gap
    return program


def time_gradients(program: torch.nn.Module, x: torch.Tensor, steps: int, flush: bool) -> list[float]:
    """Seconds per forward and backward pass of the enumerated ELBO (one warm-up pass first)."""
    elbo, out = EnumeratedELBO(), []
    with flushing_subnormals(flush), pyro.validation_enabled(False):
        for i in range(steps + 1):
            program.zero_grad()
            start = time.perf_counter()
            elbo.differentiable_loss(program.model, program.guide, x, num_data=50000).backward()
            if i:
                out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gaps", default="20,95", help="logit gaps in nats (comma-separated)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=100)
    p.add_argument("--data-dim", type=int, default=19, help="M1's active units (19 for the VampPrior M1)")
    p.add_argument("--hidden", type=int, default=500)
    args = p.parse_args(argv)
    try:
        gaps = [float(g) for g in args.gaps.split(",")]
    except ValueError:
        p.error(f"--gaps {args.gaps!r} is not comma-separated numbers; write e.g. --gaps 20,95")
    if min(args.steps, args.repeats, args.threads, args.rows, args.data_dim, args.hidden) < 1:
        p.error("--steps, --repeats, --threads, --rows, --data-dim and --hidden must be >= 1")
    torch.set_num_threads(args.threads)
    x = torch.randn(args.rows, args.data_dim, generator=torch.Generator().manual_seed(0))
    print(f"M1+M2: {args.data_dim} inputs, 500 softplus units, z of 50, {args.rows} rows x 10 classes enumerated, "
          f"{args.threads} thread(s), {args.repeats} x {args.steps} passes each")
    for gap in gaps:
        program = sure_m2(args.data_dim, args.hidden, gap)
        with torch.no_grad():
            q = program.classify(x).probs
        subnormal = int(((q > 0) & (q < TINY)).sum())
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for flush in (False, True):
                times[flush] += time_gradients(program, x, args.steps, flush)
        plain, flushed = statistics.median(times[False]), statistics.median(times[True])
        print(f"gap {gap:g} nats ({subnormal} of {q.numel()} q(y | x) subnormal): median ms per pass, not flushed "
              f"{1e3 * plain:.1f}, flushed {1e3 * flushed:.1f}; ratio flushed / not {flushed / plain:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
