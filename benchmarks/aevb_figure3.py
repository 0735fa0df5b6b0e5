"""AEVB vs wake-sleep vs Monte Carlo EM on MNIST at equal wall time (Kingma & Welling 2014, Figure 3).

The paper's setting, at a reduced budget: MNIST (dynamically binarized, Bernoulli likelihood),
3 latent dimensions, one hidden layer of 100 tanh units in encoder and decoder, minibatches
of 100, training sets of N_train = 1000 and 50000 rows. Methods (``inference.methods``):

* ``svi-trace``  AEVB: SGVB estimator A, one particle;
* ``rws``        wake-sleep: with ``--rws-particles 1`` (default) Hinton et al.'s wake-sleep as
                 in the paper (wake-theta with one z ~ q, sleep-phi on fantasies); with K >= 2
                 reweighted wake-sleep (wake-phi);
* ``mcem``       Monte Carlo EM with persistent HMC chains, the paper's appendix-E settings:
                 10 leapfrog steps, step size adapted to 90% acceptance, one HMC transition then
                 5 weight updates per minibatch.

Every method gets the same ``--seconds`` of training wall time per training size and the
same Adam learning rate. All are scored by the one yardstick, ``inference.evaluate.log_likelihood``
(importance sampling with K = ``-K`` samples on ``--test-rows`` test points): AEVB and wake-sleep
with their encoder, MCEM with local-VI Gaussians fitted to the scored rows (``mcem_proposal``).
The figure (held-out log p(x) against training samples evaluated) uses the states at half and
all of the budget, scored with ``--curve-K`` samples on ``--curve-rows`` test points.

    python benchmarks/aevb_figure3.py                 # about 20 min on a shared 2-core machine, 1 thread
    python benchmarks/aevb_figure3.py --seconds 20    # a quick look

MNIST is read from ``$PYRO_VAE_DATA`` (default ``../shared/data`` next to the repository); the
script stops with a clear message when it is missing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import default_data_dir, run_main  # noqa: E402

from inference.compare import paired_difference, run_compare  # noqa: E402
from pyro_vae.data import load_dataset  # noqa: E402
from pyro_vae.errors import DataError  # noqa: E402

METHODS = ("svi-trace", "rws", "mcem")
NET = {"name": "mlp", "hidden": [100], "activation": "tanh"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=100.0, help="training wall time per method and training size")
    ap.add_argument("--train-sizes", default="1000,50000")
    ap.add_argument("-K", type=int, default=1000, help="importance samples per test point for the table")
    ap.add_argument("--test-rows", type=int, default=1000, help="held-out points scored for the table")
    ap.add_argument("--train-rows", type=int, default=500, help="training points scored (training log p(x))")
    ap.add_argument("--curve-K", type=int, default=200, help="importance samples per point for the figure's curve")
    ap.add_argument("--curve-rows", type=int, default=200, help="test points scored for the figure's curve")
    ap.add_argument("--rws-particles", type=int, default=1, help="1: classic wake-sleep (the paper's); >= 2: RWS")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate, the same for every method")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: the 2 cores are shared, and these small tensors gain nothing from more)")
    ap.add_argument("--out", default="runs/aevb_figure3", help="folder for results.md, results.csv, figure3.png")
    ap.add_argument("-v", "--verbose", action="store_true", help="log each method's progress (INFO)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose:
        for name in ("inference.compare", "inference.methods"):
            logging.getLogger(name).setLevel(logging.INFO)

    data_dir = default_data_dir()
    try:
        data = load_dataset("mnist", data_dir=data_dir, binarize="dynamic", val_fraction=1000 / 60000, seed=args.seed)
    except DataError as err:
        print(f"aevb_figure3: MNIST not found under {data_dir} ($PYRO_VAE_DATA): {err}", file=sys.stderr)
        return 2
    spec = {
        "model": {"latent_dim": 3, "prior": "normal", "likelihood": "bernoulli", "encoder": NET, "decoder": NET,
                  "guide": "diag_normal"},
        "data": {"dataset": "mnist", "binarize": "dynamic"},
        "train": {"elbo": "trace", "num_particles": 1, "lr": args.lr, "batch_size": 100, "epochs": 10**6,
                  "seed": args.seed},
    }
    options = {"rws": {"num_particles": args.rws_particles},
               "mcem": {"hmc_steps": 10, "transitions_per_estep": 1, "m_steps": 5, "target_accept": 0.9}}
    print(f"MNIST from {data_dir}: {len(data.train)} training rows available, {len(data.test)} test rows; "
          f"torch threads {torch.get_num_threads()}")
    print(f"model 784-100(tanh)-3 Bernoulli VAE; methods {', '.join(METHODS)} (rws K={args.rws_particles}); "
          f"budget {args.seconds:g} s of training per method and size; Adam lr {args.lr}")
    t0 = time.perf_counter()
    result = run_compare(
        spec, data, methods=METHODS, train_sizes=args.train_sizes, budget=f"{args.seconds}s", num_samples=args.K,
        eval_rows=args.test_rows, train_rows=args.train_rows, checkpoints=(0.5, 1.0), curve_samples=args.curve_K,
        curve_rows=args.curve_rows, options=options, out=args.out, progress=False,
    )
    print()
    print(result.table())
    print()
    largest = max(r.train_size for r in result.rows)
    aevb = result.row("svi-trace", largest).heldout
    for other in ("rws", "mcem"):
        o = result.row(other, largest).heldout
        if aevb is None or o is None:
            print(f"N_train={largest}: {other} has no score")
            continue
        diff, se = paired_difference(aevb, o)  # same test rows: the paired standard error
        verdict = "beats" if diff > 2 * se else "loses to" if diff < -2 * se else "ties with"
        print(f"N_train={largest}: AEVB {verdict} {other}: held-out log p(x) {aevb.mean:.2f} vs {o.mean:.2f} "
              f"(paired difference {diff:+.2f} +- {se:.2f} nats)")
    print(f"wrote {', '.join(str(p) for p in result.files)}; total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
