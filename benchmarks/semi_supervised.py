"""Semi-supervised MNIST: M2 (and M1+M2) test error with few labels, against the same classifier on the labels alone.

For each label count n and draw d (seed d), the n labelled rows are drawn balanced over the 10
classes (pyro_vae.labels.semi_supervised), M2 is fitted by inference.semisup.fit (y enumerated,
alpha = 0.1 N) and the labelled-only classifier with the same network by
inference.semisup.baseline.fit_classifier, both keeping the epoch (and stopping early) by the labelled
validation split's accuracy (--monitor log_q: by its log q(y | x)).
Printed per label count: test error of argmax q(y | x), mean and standard deviation over draws,
for M2, the labelled-only floor and (with --m1 RUN) M1+M2, the wall time per run, and the
anchors: Kingma et al. 2014 Table 1 (M2 11.97 / 4.94 / 3.60 / 3.92 %, M1+M2 3.33 / 2.59 / 2.40 /
2.18 % for 100 / 600 / 1000 / 3000 labels) and Pyro's ss_vae_M2 example (accuracy 93.19 / 94.37 /
94.87 / 95.82 %).

    python benchmarks/semi_supervised.py --quick                  # minutes: 5000 train rows, 100 labels, 1 draw
    python benchmarks/semi_supervised.py --labels 100 --draws 5   # the paper's row (hours on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import default_data_dir, run_main  # noqa: E402
from benchmarks.error_by_labels import PAPER_M1M2, PAPER_M2, PYRO_ACCURACY  # noqa: E402
from inference import semisup  # noqa: E402
from inference.semisup.baseline import baseline_for, fit_classifier  # noqa: E402
from pyro_vae import build_program, load_dataset  # noqa: E402
from pyro_vae.labels import semi_supervised  # noqa: E402
from pyro_vae.spec import M1_FEATURES, M1_UNITS, ModelSpec, TrainSpec  # noqa: E402



def m2_spec(latent_dim: int, hidden: int, likelihood: str = "bernoulli", alpha: float | None = None) -> ModelSpec:
    net = {"name": "mlp", "hidden": [hidden], "activation": "softplus"}
    program = {"name": "m2", "classes": 10, **({"alpha": alpha} if alpha is not None else {})}
    return ModelSpec(program=program, latent_dim=latent_dim, likelihood=likelihood, encoder=net, decoder=net)


def error(model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        pred = torch.cat([model.classify(x[s:s + 2000]).probs.argmax(-1) for s in range(0, len(x), 2000)])
    return 100.0 * float((pred != y).double().mean())


def one_draw(data, n_labels: int, draw: int, args: argparse.Namespace, features=None) -> dict[str, float]:
    """One label draw: M2 on pixels, the labelled-only floor and, given M1's ``features`` of ``data``, M1+M2."""
    semi = semi_supervised(data, n_labels, seed=draw)
    train = TrainSpec(elbo="enum", epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, patience=args.patience,
                      seed=draw, monitor=args.monitor, labelled_batch_size=args.labelled_batch)
    alpha = args.alpha if args.alpha_per_label is None else args.alpha_per_label * n_labels
    program = build_program(m2_spec(args.latent_dim, args.hidden, alpha=alpha), data_dim=data.feature_dim, seed=draw)
    floor = baseline_for(program, seed=draw)
    out = {"m2": float("nan"), "seconds": float("nan"), "epochs": 0}
    if not args.skip_m2:
        t0 = time.perf_counter()
        fit = semisup.fit(program, semi, train, progress=not args.quiet)
        out.update(seconds=time.perf_counter() - t0, epochs=len(fit.history), m2=error(program, semi.test, semi.test_labels),
                   m2_kept=fit.best_epoch)
        print_curve("M2", fit)
    fit_classifier(floor, semi, TrainSpec(epochs=args.epochs * 5, lr=args.lr, batch_size=args.batch_size,
                                          patience=args.patience, seed=draw, monitor=args.monitor), progress=False)
    out["floor"] = error(floor, semi.test, semi.test_labels)
    if features is not None:
        features = dataclasses.replace(features, train_labels=semi.train_labels)  # this draw's labels, the same rows
        m1m2 = build_program(m2_spec(args.latent_dim, args.hidden, "gaussian_learned", alpha),
                             data_dim=features.feature_dim, seed=draw)
        t0 = time.perf_counter()
        fit = semisup.fit(m1m2, features, train, progress=not args.quiet)
        print_curve("M1+M2", fit)
        out.update(m1m2=error(m1m2, features.test, features.test_labels), m1m2_kept=fit.best_epoch,
                   m1m2_seconds=time.perf_counter() - t0)
        print(f"M1+M2: {out['m1m2_seconds']:.0f} s, test error {out['m1m2']:.2f} % ({features.feature_dim} "
              "M1 units)", flush=True)
    print(f"draw {draw}, {n_labels} labels: test error % M2 {out['m2']:.2f}, labelled-only {out['floor']:.2f}, "
          f"M1+M2 {out.get('m1m2', float('nan')):.2f}", flush=True)
    return out


def print_curve(name: str, fit) -> None:
    """The validation accuracy (%) and log q(y | x) (nats) of every epoch, and the epoch kept (by ``fit.monitor``)."""
    acc = " ".join(f"{100 * r.stats.get('val_accuracy', float('nan')):.1f}" for r in fit.history)
    logq = " ".join(f"{r.stats.get('val_log_q', float('nan')):.2f}" for r in fit.history)
    print(f"{name}: kept epoch {fit.best_epoch} (by validation {fit.monitor}); validation accuracy by epoch: {acc}",
          flush=True)
    print(f"{name}: validation log q(y | x) by epoch: {logq}", flush=True)


def record(path: str, n_labels: int, draw: int, out: dict[str, float], args: argparse.Namespace) -> None:
    """Append one JSON line per method run in this draw to ``path`` (read by ``error_by_labels.py``)."""
    protocol = (f"{args.epochs} epochs, patience {args.patience}, lr {args.lr:g}, batch {args.batch_size}, alpha "
                f"{_alpha_text(args)}, kept by validation {args.monitor or 'accuracy'}"
                + (f", M1 units {args.m1_units}, M1 features {args.m1_features}" if args.m1 else "")
                + (f", {args.max_train} train rows" if args.max_train else "")
                + (f", {args.labelled_batch} labelled rows per step" if args.labelled_batch else ""))
    rows = [("labelled-only", None, out["floor"], None, None)]
    if not args.skip_m2:
        rows.append(("M2", None, out["m2"], out["seconds"], out.get("m2_kept")))
    if "m1m2" in out:
        rows.append(("M1+M2", Path(args.m1).resolve().name, out["m1m2"], out["m1m2_seconds"], out["m1m2_kept"]))
    lines = [json.dumps({"labels": n_labels, "draw": draw, "method": method, "m1": m1, "error": round(err, 4),
                         "seconds": None if sec is None else round(sec), "kept_epoch": kept, "protocol": protocol,
                         "date": time.strftime("%Y-%m-%d")}) for method, m1, err, sec, kept in rows]
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def _alpha_text(args: argparse.Namespace) -> str:
    if args.alpha_per_label is not None:
        return f"{args.alpha_per_label:g} x labels"
    return f"{args.alpha:g}" if args.alpha is not None else "0.1 N"


def summary(values: list[float]) -> str:
    """mean +- sd of the measured values (NaN: not run, e.g. M2 under --skip-m2); a dash when none was."""
    measured = [v for v in values if math.isfinite(v)]
    if not measured:
        return "       -       "
    sd = statistics.stdev(measured) if len(measured) > 1 else float("nan")
    return f"{statistics.fmean(measured):6.2f} +- {sd:5.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="5000 train rows, 3000 validation rows, 100 labels, 1 draw, 5 epochs")
    p.add_argument("--val-fraction", type=float, default=1 / 6, help="validation rows carved from MNIST's 60000 (1/6: 10000)")
    p.add_argument("--labels", default="100,600,1000,3000")
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--first-draw", type=int, default=0,
                   help="label draws --first-draw .. --first-draw + --draws - 1 (split the draws over processes)")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--patience", type=int, default=30)
    p.add_argument("--max-train", type=int)
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--labelled-batch", type=int, help="labelled rows in every M2 step (train.labelled_batch_size; "
                   "default: the labels spread over an epoch's steps)")
    p.add_argument("--alpha", type=float, help="weight of alpha E_labelled[log q(y | x)] (default 0.1 N)")
    p.add_argument("--monitor", choices=["accuracy", "log_q"], help="the validation score that keeps the epoch and "
                   "stops early (default: accuracy)")
    p.add_argument("--alpha-per-label", type=float, help="alpha = this x the number of labels (e.g. 0.1 N = 5000: "
                   "the weight 0.1 N on every labelled row's log q(y | x), the sum reading); overrides --alpha")
    p.add_argument("--m1", help="a VAE run folder on MNIST: also fit M1+M2 on its latent means")
    p.add_argument("--m1-units", choices=M1_UNITS, default="all",
                   help="M1+M2 on all of M1's units or only its active ones (Var_x E_q[z_u | x] > 0.01)")
    p.add_argument("--m1-features", choices=M1_FEATURES, default="mean",
                   help="M1+M2 trained on M1's posterior means, or on a fresh draw of z ~ q(z | x) per minibatch")
    p.add_argument("--skip-m2", action="store_true", help="fit only the floor (and M1+M2 with --m1), not M2 on pixels")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--figure", help="write the error-against-labels figure (PNG) here")
    p.add_argument("--record", help="append each draw's errors to this JSON-lines file (error_by_labels.py draws "
                   "the figure from several such files)")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.first_draw < 0 or args.draws < 1:
        p.error(f"--first-draw must be >= 0 and --draws >= 1, got {args.first_draw} and {args.draws}")
    if args.record and not Path(args.record).resolve().parent.is_dir():
        p.error(f"--record {args.record}: the folder {Path(args.record).resolve().parent} does not exist; create it "
                "or record elsewhere (checked before hours of training, not after)")
    if args.alpha is not None and args.alpha_per_label is not None:
        p.error(f"--alpha {args.alpha:g} and --alpha-per-label {args.alpha_per_label:g} both set the weight; pass one")
    if args.quick:
        args.labels, args.draws, args.epochs, args.max_train = "100", 1, 5, args.max_train or 5000
        args.lr, args.val_fraction = 1e-3, 0.05
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", data_dir=default_data_dir(), binarize="dynamic", val_fraction=args.val_fraction, seed=0,
                        max_train=args.max_train)
    print(f"MNIST: {len(data.train)} train, {len(data.val)} labelled validation, {len(data.test)} test rows; "
          f"M2 784-{args.hidden}-{args.latent_dim}, {args.epochs} epochs max, lr {args.lr}, {args.threads} threads, "
          f"alpha {_alpha_text(args)}, kept epoch by validation {args.monitor or 'accuracy'}"
          + (f", M1+M2 on {args.m1_units} M1 units ({args.m1_features})" if args.m1 else ""))
    print("labels | M2 error %        | labelled-only %   | M1+M2 %           | s/run | paper M2 / M1+M2 | Pyro ex. acc")
    features = None
    if args.m1:  # encoded once: every draw has the same rows, only which labels are hidden changes
        from inference.semisup.m1 import latent_features

        t0 = time.perf_counter()
        features = latent_features(args.m1, data, units=args.m1_units, features=args.m1_features)
        print(f"M1 features: {features.feature_dim} units of {args.m1} ({time.perf_counter() - t0:.0f} s)", flush=True)
    table: dict[int, list[dict[str, float]]] = {}
    for n in (int(v) for v in args.labels.split(",")):
        draws = range(args.first_draw, args.first_draw + args.draws)
        runs = table[n] = []
        for d in draws:
            runs.append(one_draw(data, n, d, args, features))
            if args.record:
                record(args.record, n, d, runs[-1], args)
        m1m2 = summary([r.get("m1m2", float("nan")) for r in runs])
        print(f"{n:6d} | {summary([r['m2'] for r in runs])} | {summary([r['floor'] for r in runs])} | {m1m2} | "
              f"{statistics.fmean(r['seconds'] for r in runs):5.0f} | {PAPER_M2.get(n, float('nan')):5.2f} / "
              f"{PAPER_M1M2.get(n, float('nan')):4.2f}    | {PYRO_ACCURACY.get(n, float('nan')):.2f} "
              f"(epochs run: {[r['epochs'] for r in runs]})", flush=True)
    if args.figure:
        from pyro_vae.plots.classes import plot_error_by_labels

        keys = {**({} if args.skip_m2 else {"M2": "m2"}), "labelled-only": "floor", **({"M1+M2": "m1m2"} if args.m1 else {})}
        series = {name: ([statistics.fmean(r[k] for r in runs) for runs in table.values()],
                         [statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0 for runs in table.values()])
                  for name, k in keys.items()}
        print(f"figure: {plot_error_by_labels(list(table), series, args.figure)}")
    return 0


if __name__ == "__main__":
    run_main(main)
