"""One process of the data-parallel tests (run alone, or under torchrun by tests/inference/training/test_distributed.py).

A tiny VAE-like program whose guide draws its noise from a fixed per-row table (eps[idx]), so a
step depends only on the rows of the global batch, not on how the processes split them or on
their RNG streams: 1 and 2 processes must then reach the same parameters. Validation (no idx)
evaluates at the posterior mean, so the validation ELBO, summed over the processes' slices of the
validation rows, must equal one process's too.
"""

from __future__ import annotations

import argparse
import os
import sys

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from inference import svi
from inference.training import distributed
from pyro_vae.data import load_dataset
from pyro_vae.plates import data_plate
from pyro_vae.sources import DatasetSource, NpyRows
from pyro_vae.spec import TrainSpec


class FixedNoiseVAE(nn.Module):
    """p(z) = N(0, I), p(x | z) = Bernoulli(logits = W z + b); q(z | x): z = mu(x) + sigma(x) eps[idx]."""

    inputs = ("x", "idx")
    latents = ("z",)

    def __init__(self, data_dim: int, num_rows: int, latent_dim: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.encoder, self.decoder = nn.Linear(data_dim, 2 * latent_dim), nn.Linear(latent_dim, data_dim)
        self.register_buffer("eps", torch.randn(num_rows, latent_dim, generator=torch.Generator().manual_seed(1)))

    def model(self, x, idx=None, num_data=None, beta=1.0):
        zeros = torch.zeros(x.shape[0], self.latent_dim, dtype=x.dtype, device=x.device)
        with data_plate(x.shape[0], num_data, device=x.device):
            with pyro.poutine.scale(scale=beta):
                z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x, idx=None, num_data=None, beta=1.0):
        loc, raw = self.encoder(x).chunk(2, -1)
        scale = softplus(raw) + 1e-3
        eps = self.eps[idx] if idx is not None else torch.zeros_like(loc)  # validation: at the mean, deterministic
        z = loc + scale * eps
        with data_plate(x.shape[0], num_data, device=x.device):
            with pyro.poutine.scale(scale=beta):
                pyro.sample("z", dist.Delta(z, log_density=dist.Normal(loc, scale).log_prob(z).sum(-1), event_dim=1))

    def check_data(self, x, name="data"):
        pass


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rows", type=int, default=300)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--die-after", type=int, default=0, help="process 1 exits after this epoch (0: never)")
    p.add_argument("--npy", help="train on these rows, memory-mapped (pyro_vae.sources.NpyRows), instead of the tensor")
    args = p.parse_args()
    torch.set_num_threads(1)
    stage = _stages(args.out)
    distributed.init_from_env(torch.device("cpu"))
    stage("joined")
    data = load_dataset("digits", binarize="dynamic", max_train=args.rows, seed=0)
    program = FixedNoiseVAE(data.feature_dim, data.train.shape[0])
    train = TrainSpec(epochs=args.epochs, batch_size=args.batch_size, lr=1e-2, seed=0)
    rank = distributed.world()[0]

    def die(state, record):
        if rank == 1 and record.epoch == args.die_after:
            os._exit(3)

    rows, val = (DatasetSource(NpyRows(args.npy), binarize=True), data.val) if args.npy else (data, None)
    result = svi.fit(program, rows, train, val=val, run_dir=os.path.join(args.out, "run"), resume=args.resume,
                     progress=False, callbacks=[die] if args.die_after else ())
    if distributed.is_main():
        last = result.state.last["program"] if result.state.last is not None else program.state_dict()
        torch.save({"params": last,
                    "history": [(r.epoch, r.train_elbo, r.val_elbo) for r in result.history],
                    "world": distributed.world()[1]}, os.path.join(args.out, "result.pt"))
    stage("fitted")
    return 0


def _stages(out: str):
    """Append each stage this process reaches to OUT/stages-RANK.txt (the test shows them when a process fails)."""
    path = os.path.join(out, f"stages-{os.environ.get('RANK', '0')}.txt")
    os.makedirs(out, exist_ok=True)

    def stage(name: str) -> None:
        with open(path, "a") as f:
            f.write(name + "\n")

    stage("started")
    return stage


if __name__ == "__main__":
    code = main()
    if distributed.launched():  # as the command line ends a torchrun process
        distributed.end_process(code)
    sys.exit(code)
