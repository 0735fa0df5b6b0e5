"""Do flow guides shrink the approximation gap? Diagonal Gaussian against flows on one MNIST decoder.

Cremer et al. (2018): log p(x) - L[q] = (log p(x) - L[q*]) + (L[q*] - L[q]), approximation gap
plus amortization gap, q* the best member of q's family for each datapoint. The approximation
gap belongs to the family, so the comparison holds the model fixed: a diagonal VAE is trained
first (``--epochs`` on ``--max-train`` rows of dynamically binarized MNIST), then each flow guide
is trained for as many epochs on its frozen prior, likelihood and decoder, and
:func:`inference.diagnostics.amortization_gaps` scores every guide on the same ``--rows`` test rows
(IS with ``-K`` draws from q*, ``--local-steps`` of per-datapoint refinement, ELBO estimator A).
The paired per-datapoint differences of the approximation gaps (diagonal minus flow) are printed
with their standard errors: a positive difference beyond 2 s.e. says the flow shrinks the gap.
Everything printed is also written to ``--out``: ``gaps.json`` and ``gaps.png`` (the gaps by family).

    PYTHONPATH=. python benchmarks/flow_gaps.py --max-train 10000 --epochs 10 --rows 100 --threads 1

``--frontier RUN`` takes the decoder and flow guide of a finished ``benchmarks/mnist_nll.py`` run
instead (its best validation epoch, its data and test rows), trains a diagonal guide for
``--epochs`` on that frozen decoder, and compares the two the same way (issue 16: the gaps of the
frontier models on 500 test rows); ``--flows`` adds other flow guides, each trained as long on the
same frozen decoder:

    PYTHONPATH=. python benchmarks/flow_gaps.py --frontier runs/nll16_iaf --epochs 30 --rows 500 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_data_dir, run_main  # noqa: E402

import json  # noqa: E402
from dataclasses import replace  # noqa: E402

from mnist_nll import run_spec  # noqa: E402

from inference import run  # noqa: E402
from inference.baselines import frozen  # noqa: E402
from inference.diagnostics import amortization_gaps, plot_gaps_by_family  # noqa: E402
from inference.svi import fit  # noqa: E402
from inference.training.checkpoint import load_checkpoint, vae_state  # noqa: E402
from pyro_vae import build_vae, load_dataset  # noqa: E402
from pyro_vae.files import write_json  # noqa: E402
from pyro_vae.priors import VampPrior  # noqa: E402

FLOWS = {"iaf": {"name": "iaf", "num_flows": 2}, "sylvester": {"name": "sylvester", "num_flows": 2},
         "planar": {"name": "planar", "num_flows": 4}, "householder": {"name": "householder", "num_flows": 4},
         "spline": {"name": "spline", "num_flows": 1}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-train", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden", type=int, nargs="+", default=[200, 200])
    p.add_argument("--flows", nargs="+", default=None, choices=sorted(FLOWS),
                   help="flow guides trained on the frozen decoder, with the flow counts of FLOWS (default: iaf sylvester; "
                        "none with --frontier)")
    p.add_argument("--rows", type=int, default=100)
    p.add_argument("-K", type=int, default=500)
    p.add_argument("--local-steps", type=int, default=150)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=str(default_data_dir()))
    p.add_argument("--frontier", help="a finished benchmarks/mnist_nll.py run folder (flow guide): its decoder and guide")
    p.add_argument("--out", default="runs/flow_gaps", help="folder for gaps.json and gaps.png")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.frontier:
        guides, x = frontier_guides(args, t0)
    else:
        guides, x = trained_guides(args, t0)
    common = dict(is_samples=args.K, local_steps=args.local_steps, elbo_particles=100, seed=args.seed, estimator="A")
    gaps = {name: amortization_gaps(vae, x, **common) for name, vae in guides.items()}
    for name, g in gaps.items():
        print(f"{name:12s} {g.summary()}")
    record = {"config": vars(args), "families": {}}
    for name, g in gaps.items():
        d = gaps["diag_normal"].approximation_gap.values - g.approximation_gap.values
        se = float(d.std() / d.numel() ** 0.5)
        record["families"][name] = {key: {"mean": getattr(g, key).mean, "stderr": getattr(g, key).stderr} for key in
                                    ("log_px", "elbo_optimized", "elbo_amortized", "approximation_gap", "amortization_gap")}
        if name == "diag_normal":
            continue
        verdict = "shrinks" if d.mean() > 2 * se else "enlarges" if d.mean() < -2 * se else "does not measurably change"
        record["families"][name]["diagonal_minus_this_approximation_gap"] = {"mean": float(d.mean()), "stderr": se}
        print(f"approximation gap, diagonal - {name}: {d.mean():+.3f} +- {se:.3f} nats: {name} {verdict} it")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "gaps.json", record)
    plot_gaps_by_family(gaps, out / "gaps.png", title=f"gaps by guide family, {x.shape[0]} MNIST test images (+- 2 s.e.)")
    print(f"total {time.perf_counter() - t0:.0f} s; written {out / 'gaps.json'} and {out / 'gaps.png'}")


def on_frozen_decoder(vae, base, data, train) -> None:
    """Train ``vae``'s guide with ``base``'s prior, likelihood and decoder copied in and frozen.

    A VampPrior reads its components through the encoder it was built with, so ``vae`` takes
    ``base``'s prior itself (components from ``base``'s encoder, which is not trained here): a copy
    of its pseudo-inputs alone would put them through ``vae``'s own, changing, encoder.
    """
    if isinstance(base.prior, VampPrior):
        vae.prior = base.prior
    for part in ("prior", "likelihood", "decoder"):
        getattr(vae, part).load_state_dict(getattr(base, part).state_dict())
    with frozen(vae.decoder), frozen(vae.likelihood), frozen(vae.prior):
        fit(vae, data, train, progress=False)


def frontier_guides(args, t0):
    """{"diag_normal": a diagonal guide trained on the run's frozen decoder, <guide>: the run's program}, test rows."""
    folder = Path(args.frontier)
    config = json.loads((folder / "mnist_nll.json").read_text())["config"]
    if config["guide"] not in FLOWS:
        sys.exit(f"flow_gaps.py: error: --frontier {folder} has guide {config['guide']!r}, not a flow guide; "
                 f"pass a run trained with one of {sorted(FLOWS)}")
    spec = run_spec(config)
    data = run.load_data(spec)
    flow = run.new_program(spec, data)
    flow.load_state_dict(vae_state(load_checkpoint(folder / "checkpoints" / "last.pt"), "best"))
    diag = run.new_program(replace(spec, model=replace(spec.model, guide="diag_normal")), data)
    train = {"epochs": args.epochs, "lr": 1e-3, "batch_size": 100, "seed": args.seed}
    on_frozen_decoder(diag, flow, data, train)
    print(f"{folder}: {config['guide']} guide, best epoch of {config['epochs']}; diagonal guide on its frozen decoder, "
          f"{args.epochs} epochs on {len(data.train)} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
    guides = {"diag_normal": diag, config["guide"]: flow}
    for name in [f for f in args.flows or [] if f != config["guide"]]:
        guides[name] = run.new_program(replace(spec, model=replace(spec.model, guide=dict(FLOWS[name]))), data)
        on_frozen_decoder(guides[name], flow, data, train)
        print(f"{name} guide on the frozen decoder ({time.perf_counter() - t0:.0f} s)", flush=True)
    return guides, data.test[: args.rows]


def trained_guides(args, t0):
    """{"diag_normal": a diagonal VAE trained here, <flow>: each flow guide trained on its frozen decoder}, test rows."""
    data = load_dataset("mnist", data_dir=args.data_dir, binarize="dynamic", val_fraction=1 / 60, max_train=args.max_train)
    net = {"name": "mlp", "hidden": list(args.hidden)}
    model = dict(latent_dim=args.latent_dim, encoder=net, decoder=net)
    train = {"epochs": args.epochs, "lr": 1e-3, "batch_size": 100, "seed": args.seed}
    diag = build_vae(data_dim=784, seed=args.seed, **model)
    fit(diag, data, train, progress=False)
    print(f"diagonal VAE: {args.epochs} epochs on {len(data.train)} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
    guides = {"diag_normal": diag}
    for name in args.flows or ["iaf", "sylvester"]:
        vae = build_vae(data_dim=784, seed=args.seed, guide=FLOWS[name], **model)
        on_frozen_decoder(vae, diag, data, train)
        guides[name] = vae
        print(f"{name} guide on the frozen decoder ({time.perf_counter() - t0:.0f} s)", flush=True)
    return guides, data.test[: args.rows]

if __name__ == "__main__":
    run_main(main)
