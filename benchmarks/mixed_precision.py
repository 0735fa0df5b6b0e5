"""train.mixed_precision (bfloat16 networks, float32 densities) against float32: speed and what it costs in ELBO.

The same fit (spec, seed, data) twice per repetition, float32 then mixed, alternating A B A B so that
a change in the machine's load touches both; printed per batch size: seconds per epoch (median over
repetitions and epochs) of each, their ratio (mixed / float32; below 1 means mixed is faster), and
the validation ELBO after the last epoch of each (the precision's cost in nats per datapoint).

    python benchmarks/mixed_precision.py [--device cpu] [--rows 10000] [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, default_data_dir, run_main  # noqa: E402

sys.path.insert(0, str(REPO))
from inference import svi  # noqa: E402
from pyro_vae import build_vae  # noqa: E402
from pyro_vae.data import load_dataset  # noqa: E402
from pyro_vae.spec import TrainSpec  # noqa: E402


def one_fit(data, args: argparse.Namespace, batch: int, mixed: bool) -> tuple[list[float], float]:
    """(seconds of each epoch, validation ELBO after the last) of one fresh fit."""
    net = {"name": "mlp", "hidden": args.hidden}
    vae = build_vae(data_dim=data.feature_dim, latent_dim=args.latent, seed=0, encoder=net, decoder=net)
    train = TrainSpec(epochs=args.epochs, batch_size=batch, lr=1e-3, seed=0, mixed_precision=mixed, device=args.device)
    fit = svi.fit(vae, data, train, progress=False)
    return [r.seconds for r in fit.history], float(fit.history[-1].val_elbo)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--hidden", type=int, nargs="+", default=[400, 400])
    p.add_argument("--latent", type=int, default=50)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, data_dir=args.data_dir, max_train=args.rows, seed=0, binarize="dynamic")
    print(f"{args.dataset}: {len(data.train)} rows, mlp {args.hidden}, latent {args.latent}, {args.epochs} epochs x "
          f"{args.repeats} repeats, device {args.device}, {args.threads} thread(s), torch {torch.__version__}")
    print("batch  float32 s/epoch  mixed s/epoch  ratio  val ELBO float32  val ELBO mixed  difference")
    for batch in args.batch_sizes:
        times: dict[bool, list[float]] = {False: [], True: []}
        elbos: dict[bool, float] = {}
        for _ in range(args.repeats):
            for mixed in (False, True):
                seconds, elbos[mixed] = one_fit(data, args, batch, mixed)
                times[mixed] += seconds
        f32, mix = statistics.median(times[False]), statistics.median(times[True])
        print(f"{batch:5d}  {f32:15.3f}  {mix:13.3f}  {mix / f32:5.2f}  {elbos[False]:16.3f}  {elbos[True]:14.3f}  "
              f"{elbos[True] - elbos[False]:+10.3f}", flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
