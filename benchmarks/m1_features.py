"""How well an M1's latent means separate MNIST's classes from a few labels: a check of an M1 before M1+M2.

M1+M2 (benchmarks/semi_supervised.py) fits M2 to the posterior means u = E_{q_M1}[z | x] of an M1
run folder: each run takes 15-20 minutes at one thread. This script scores the same features in
seconds with two classifiers fitted to the n labelled rows alone (the same balanced draws, seed d,
as semi_supervised.py):

* 1-NN: each test row takes the label of its nearest labelled row (Euclidean distance in u);
* logistic regression (scikit-learn, L2 penalty C = 1) on u standardized by the labelled rows'
  mean and sd,

and prints their test error (mean over draws and each draw), for the raw pixels too with
``--pixels``. Features on which 100 labels already classify well are the ones M2 can build on.

    PYTHONPATH=. python benchmarks/m1_features.py RUN [RUN ...] --pixels --labels 100 --draws 3
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from benchmarks._common import default_data_dir, run_main  # noqa: E402
from inference.semisup.m1 import latent_features  # noqa: E402
from pyro_vae import load_dataset  # noqa: E402
from pyro_vae.labels import labelled_rows, semi_supervised  # noqa: E402
from pyro_vae.spec import M1_UNITS  # noqa: E402


def errors(data, n_labels: int, draw: int) -> tuple[float, float]:
    """(1-NN, logistic regression) test error in % with the n labelled rows of draw ``draw``."""
    semi = semi_supervised(data, n_labels, seed=draw)
    rows = labelled_rows(semi)
    u, y = data.train[rows].numpy(), data.train_labels[rows].numpy()
    test, y_test = data.test.numpy(), data.test_labels.numpy()
    nn_error = 100 * (1 - KNeighborsClassifier(n_neighbors=1).fit(u, y).score(test, y_test))
    mean, sd = u.mean(0), u.std(0) + 1e-6
    logistic = LogisticRegression(C=1.0, max_iter=5000).fit((u - mean) / sd, y)
    return nn_error, 100 * (1 - logistic.score((test - mean) / sd, y_test))


def report(name: str, data, args: argparse.Namespace) -> None:
    """One line per label count: 1-NN and logistic test error, mean and per draw."""
    for n in (int(v) for v in args.labels.split(",")):
        scores = np.array([errors(data, n, d) for d in range(args.draws)])
        nn_error, logistic = (f"{col.mean():.2f} % ({' '.join(f'{v:.1f}' for v in col)})" for col in scores.T)
        print(f"{name}, {n} labels: 1-NN {nn_error}, logistic {logistic}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", help="VAE run folders on MNIST (M1 candidates)")
    p.add_argument("--pixels", action="store_true", help="also score the raw pixels")
    p.add_argument("--labels", default="100", help="comma-separated label counts")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--units", choices=M1_UNITS, default="active", help="all of M1's units or only its active ones")
    p.add_argument("--val-fraction", type=float, default=1 / 6, help="as semi_supervised.py (the same rows)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if not args.runs and not args.pixels:
        p.error("name at least one run folder, or pass --pixels")
    if args.draws < 1:
        p.error(f"--draws must be >= 1, got {args.draws}")
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", data_dir=default_data_dir(), binarize="dynamic", val_fraction=args.val_fraction, seed=0)
    if args.pixels:
        report("pixels", data, args)
    for run in args.runs:
        t0 = time.perf_counter()
        features = latent_features(run, data, units=args.units)
        report(f"{run} ({features.feature_dim} {args.units} units, encoded in {time.perf_counter() - t0:.0f} s)",
               features, args)
    return 0


if __name__ == "__main__":
    run_main(main)
