"""Data parallel scaling on this machine: rows/s and time to a validation ELBO, 1 and 2 processes vs 2 threads.

Three runs of the same fit (same spec, seed and global batch; each a fresh subprocess):

* ``1 proc x 1 thread``: the reference;
* ``2 procs x 1 thread``: torchrun, gloo, each process on half of every global batch
  (:mod:`inference.training.distributed`);
* ``1 proc x 2 threads``: the same two cores used by intra-op threads instead.

Printed per run: training rows per second (epochs x N / training wall time, validation
included), seconds per epoch (median), the validation ELBO after the last epoch, and the
training seconds until the validation ELBO first reaches ``--target`` (default: the lowest of the
three runs' final validation ELBOs, so that every run reaches it). Ratios are against the
reference.

    python benchmarks/scaling.py [--rows 10000] [--epochs 5] [--hidden 200] [--dataset mnist]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, default_data_dir, run_main  # noqa: E402

RUNS = (("1 proc x 1 thread", 1, 1), ("2 procs x 1 thread", 2, 1), ("1 proc x 2 threads", 1, 2))


def worker(args: argparse.Namespace) -> None:
    """One process of one run: fit, then (process 0) write the per-epoch wall times and validation ELBOs."""
    import torch

    torch.set_num_threads(args.threads)
    from inference import svi
    from inference.training import distributed
    from pyro_vae import build_vae
    from pyro_vae.data import load_dataset
    from pyro_vae.spec import TrainSpec

    distributed.init_from_env(torch.device("cpu"))
    data = load_dataset(args.dataset, data_dir=args.data_dir, max_train=args.rows, seed=0, binarize="dynamic")
    vae = build_vae(data_dim=data.feature_dim, latent_dim=args.latent, seed=0,
                    encoder={"name": "mlp", "hidden": [args.hidden]}, decoder={"name": "mlp", "hidden": [args.hidden]})
    train = TrainSpec(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, seed=0)
    result = svi.fit(vae, data, train, progress=False)
    if distributed.is_main():
        out = {"n": int(data.train.shape[0]), "seconds": [r.seconds for r in result.history],
               "val": [r.val_elbo for r in result.history], "world": distributed.world()[1]}
        Path(args.out).write_text(json.dumps(out))
    distributed.close()


def launch_run(args: argparse.Namespace, procs: int, threads: int, out: Path) -> dict:
    from inference.training.launch import torchrun_command

    target = [str(Path(__file__).resolve()), "--worker", "--out", str(out), "--threads", str(threads),
              "--rows", str(args.rows), "--epochs", str(args.epochs), "--hidden", str(args.hidden),
              "--latent", str(args.latent), "--batch-size", str(args.batch_size), "--dataset", args.dataset,
              "--data-dir", str(args.data_dir)]
    cmd = torchrun_command(procs, target) if procs > 1 else [sys.executable, *target]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, env=env, check=True)
    return json.loads(out.read_text())


def time_to(record: dict, target: float) -> float | None:
    elapsed = 0.0
    for seconds, val in zip(record["seconds"], record["val"]):
        elapsed += seconds
        if val >= target:
            return elapsed
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist", help="mnist (default; digits if it is not there) or digits")
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--rows", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--latent", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--target", type=float, help="validation ELBO to reach (default: the lowest final one)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    if args.dataset == "mnist" and not (Path(args.data_dir) / "mnist").is_dir():
        print(f"no MNIST under {args.data_dir}: using digits")
        args.dataset = "digits"
    records = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, procs, threads in RUNS:
            records[name] = launch_run(args, procs, threads, Path(tmp) / f"{procs}x{threads}.json")
    target = args.target if args.target is not None else min(r["val"][-1] for r in records.values())
    ref = records[RUNS[0][0]]
    ref_rate = ref["n"] * len(ref["seconds"]) / sum(ref["seconds"])
    ref_time = time_to(ref, target)
    print(f"{args.dataset}: {ref['n']} training rows, mlp [{args.hidden}], latent {args.latent}, batch {args.batch_size}, "
          f"{args.epochs} epochs; target validation ELBO {target:.3f}")
    print(f"{'run':22s} {'rows/s':>9s} {'ratio':>6s} {'s/epoch':>8s} {'final val':>10s} {'s to target':>12s} {'ratio':>6s}")
    for name, record in records.items():
        rate = record["n"] * len(record["seconds"]) / sum(record["seconds"])
        reach = time_to(record, target)
        reach_text = f"{reach:12.1f}" if reach is not None else f"{'not reached':>12s}"
        ratio = f"{ref_time / reach:6.2f}" if reach and ref_time else f"{'-':>6s}"
        print(f"{name:22s} {rate:9.0f} {rate / ref_rate:6.2f} {statistics.median(record['seconds']):8.2f} "
              f"{record['val'][-1]:10.3f} {reach_text} {ratio}")
    return 0


if __name__ == "__main__":
    run_main(main)
