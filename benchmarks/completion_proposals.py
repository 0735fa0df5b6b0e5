"""Which importance-sampling proposal estimates log p(x_obs) of a trained VAE best, and at what cost.

The conditional NLL of completion by a VAE is -log p(x_miss | x_obs) = log p(x_obs) - log p(x)
(inference.completion.yardstick); its log p(x_obs) term needs a proposal close to p(z | x_obs).
For each observed quadrant count and each proposal, on the first ``--rows`` test images of a VAE
run folder (binarized MNIST), this prints the IS estimate of the mean log p(x_obs) with K samples
(IS is a lower bound in expectation: the higher, the better the proposal), the PSIS k-hat of the
weights (median and the share above 0.7, where IS is unreliable) and the seconds spent fitting the
proposal and scoring. Proposals: ``defensive``, ``nuts``, ``local_vi`` (the default: 1000 steps x
4 particles per row) and ``local_vi:STEPSxPARTICLES`` for other budgets of the same per-row VI.

    python benchmarks/completion_proposals.py RUN --rows 50 -K 1000 --proposals local_vi,nuts,local_vi:200x4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import run_main  # noqa: E402
from inference.completion.proposals import local_vi_guide  # noqa: E402
from inference.completion.yardstick import importance_log_likelihood, observed_proposal  # noqa: E402
from inference.run import load_run  # noqa: E402
from pyro_vae.masks import quadrant_mask  # noqa: E402
from pyro_vae.observation import ObservedPart  # noqa: E402


def guide_for(part: ObservedPart, name: str, x_obs: torch.Tensor, seed: int):
    """The proposal called ``name`` (``local_vi:STEPSxPARTICLES`` sets the per-row VI's budget)."""
    if name.startswith("local_vi:"):
        steps, particles = (int(v) for v in name.split(":", 1)[1].split("x"))
        return local_vi_guide(part, x_obs, seed, steps=steps, num_particles=particles)
    return observed_proposal(part, name, x_obs, seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a VAE run folder trained on binarized MNIST")
    p.add_argument("--rows", type=int, default=50)
    p.add_argument("-K", type=int, default=1000)
    p.add_argument("--observed", default="1,2,3", help="observed quadrant counts")
    p.add_argument("--proposals", default="defensive,local_vi,nuts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_run(args.run)
    vae, x = loaded.program, loaded.data.test[:args.rows]
    print(f"{args.run}: {len(x)} test rows, K = {args.K}, {args.threads} thread(s)")
    for observed in (int(v) for v in args.observed.split(",")):
        part = ObservedPart(vae, quadrant_mask(loaded.data.image_shape, observed))
        x_obs = part.observed_value(x)
        for name in args.proposals.split(","):
            torch.manual_seed(args.seed)
            t0 = time.perf_counter()
            guide = guide_for(part, name, x_obs, args.seed)
            t1 = time.perf_counter()
            ll, khat = importance_log_likelihood(part.model, guide, x_obs, args.K)
            print(f"observed {observed}  {name:16s} log p(x_obs) {float(ll.mean()):8.2f} +- "
                  f"{float(ll.std() / len(ll) ** 0.5):.2f}  k-hat median {np.median(khat):5.2f}, "
                  f"> 0.7: {100 * (khat > 0.7).mean():5.1f} %  fit {t1 - t0:5.0f} s, IS {time.perf_counter() - t1:4.0f} s",
                  flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
