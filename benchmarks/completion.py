"""Data completion on MNIST: CVAE vs its deterministic baseline vs an unconditional VAE completed by inference.

Issue #12's benchmark. Two parts:

1. **Quadrants** (dynamically binarized MNIST for training, the test set binarized once with the
   loader's fixed seed; observed = 1, 2, 3 quadrants as in Pyro's CVAE tutorial): the deterministic
   baseline (``cvae_baseline``), the CVAE (``cvae``) and one unconditional VAE completed by each
   inference method. Reported: the conditional NLL -log p(y | c) (CVAE, baseline) or
   -log p(x_miss | x_obs) (VAE), by importance sampling with K samples, nats per test image with its
   standard error; the -ELBO with 10 particles; PSNR of the mean completion; wall times.
   Pyro's tutorial reports -ELBO on grey levels used as Bernoulli targets: not the same quantity.
2. **Super-resolution x4** on grey-level MNIST (continuous Bernoulli likelihood): PSNR/SSIM of bicubic
   interpolation, the deterministic network's mean, the CVAE (mean and best of 10) and the VAE by
   inference (``--superres-methods``, default ``sir`` and ``local_vi``, through x_lr ~ N(pool(E[x | z]), 0.05^2)).

``--quick`` trains small models on a subset for a few epochs, observed = 1 only, K = 200 on 300
test images (a smoke run of the protocol, minutes); the full run is the issue's protocol
(all 60000 training rows, 10000 test images, K = 1000, observed 1 / 2 / 3, x2 and x4, MNIST and
Fashion-MNIST) and takes hours on 2 cores.

    python benchmarks/completion.py --quick --out runs/completion_quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_data_dir, run_main  # noqa: E402

from inference import svi  # noqa: E402
from inference.completion.metrics import image_metrics  # noqa: E402
from inference.completion.samplers import complete_by_inference  # noqa: E402
from inference.completion.yardstick import score_conditional, score_vae_completion  # noqa: E402
from pyro_vae import build_program, load_dataset  # noqa: E402
from pyro_vae.files import write_json  # noqa: E402
from pyro_vae.masks import quadrant_mask  # noqa: E402
from pyro_vae.observation import LowResolution, ObservedPart  # noqa: E402

QUICK = dict(max_train=10000, epochs=8, rows=300, vae_rows=300, K=200, hidden=[256], observed=[1], factors=[4],
             datasets=["mnist"], methods=["naive", "sir", "local_vi", "mwg", "pseudo_gibbs", "nuts"],
             superres_methods=["sir", "local_vi"])
FULL = dict(max_train=None, epochs=50, rows=10000, vae_rows=10000, K=1000, hidden=[500, 500], observed=[1, 2, 3],
            factors=[2, 4], datasets=["mnist", "fashion-mnist"],
            methods=["naive", "sir", "local_vi", "mwg", "pseudo_gibbs", "nuts"], superres_methods=["sir", "local_vi"])
# ``rows``: test images scored for the CVAE, the baseline and bicubic; ``vae_rows``: the first of them completed by
# each method (NUTS costs far more per image); ``nuts_rows``: the first of those scored with the NUTS-fitted proposal;
# ``vae_nll_rows``: the first of them scored through the VAE with the per-row VI proposal (proposal="local_vi")


def fitted(program: dict, data, cfg, likelihood: str, latent_dim: int, seed: int = 0):
    """A program built from the shared spec and trained by the one SVI loop; (program, seconds)."""
    nets = {"name": "mlp", "hidden": cfg["hidden"]}
    model = build_program({"program": program, "latent_dim": latent_dim, "likelihood": likelihood,
                           "encoder": nets, "decoder": nets}, data_dim=data.feature_dim,
                          image_shape=data.image_shape, seed=seed)
    t0 = time.perf_counter()
    svi.fit(model, data, {"epochs": cfg["epochs"], "lr": 1e-3, "batch_size": 128, "seed": seed}, progress=False)
    return model, time.perf_counter() - t0


def row(name, score=None, comps=None, x=None, missing=None, train_s=None, complete_s=None, shape=None):
    out = {"model": name, "train_s": train_s, "complete_s": complete_s}
    if score is not None:
        m = score.metrics()
        out.update(nll=m["conditional_nll"], nll_se=m["conditional_nll_stderr"], neg_elbo=m["neg_elbo"],
                   khat_max=m["khat_max"])
    if comps is not None:
        im = image_metrics(comps, x, shape, missing=missing)
        out.update(psnr_mean=im["psnr_mean"], psnr_best=im["psnr_best"], ssim_mean=im.get("ssim_mean"))
    return out


def quadrants(cfg, data_dir) -> list[dict]:
    data = load_dataset("mnist", data_dir=data_dir, binarize="dynamic", max_train=cfg["max_train"], seed=0)
    x = data.test[: cfg["rows"]]
    xv, xn = x[: cfg["vae_rows"]], x[: cfg["vae_nll_rows"]]
    vae, vae_s = fitted("vae", data, cfg, "bernoulli", 16)
    rows = []
    for observed in cfg["observed"]:
        mask = quadrant_mask(data.image_shape, observed)  # the CVAE's own task mask (pyro_vae.masks)
        for name in cfg["networks"]:
            prog, secs = fitted({"name": name, "observed": observed}, data, cfg, "bernoulli", 16)
            t0 = time.perf_counter()
            score = score_conditional(prog, x, num_samples=cfg["K"])
            comps = prog.complete(x, 10, mean=True)
            rows.append({"observed": observed, **row(name, score, comps, x, ~prog.task.mask, secs,
                                                     time.perf_counter() - t0, data.image_shape)})
        found, lv_score = len(cfg["networks"]), None
        if len(xn) >= 2:  # the VAE's conditional NLL through the per-row VI proposal (cost linear in the rows)
            t0 = time.perf_counter()
            lv_score = score_vae_completion(vae, xn, mask, num_samples=cfg["K"], proposal="local_vi", progress=True)
            rows.append({"observed": observed, **row(f"vae (NLL, proposal=local_vi, {len(xn)} rows)", lv_score,
                                                     train_s=vae_s, complete_s=time.perf_counter() - t0)})
            found += 1
        score, xs = None, xv[: cfg["nuts_rows"]]
        if len(xs) >= 2:  # the NUTS-fitted proposal (its cost grows faster than the rows) on the first nuts_rows images
            score = lv_score if len(xn) == len(xs) else score_vae_completion(vae, xs, mask, num_samples=cfg["K"])
            t0 = time.perf_counter()
            nuts_score = score_vae_completion(vae, xs, mask, num_samples=cfg["K"], proposal="nuts", progress=True)
            rows.append({"observed": observed, **row(f"vae (NLL, proposal=nuts, {len(xs)} rows)", nuts_score,
                                                     train_s=vae_s, complete_s=time.perf_counter() - t0)})
            found += 1
        if len(xv) >= 2:  # every completion method on the first vae_rows images
            for method in cfg["methods"]:
                out = complete_by_inference(ObservedPart(vae, mask), xv, method=method, num_samples=10,
                                            warmup=100, proposals=1000, progress=True)
                rows.append({"observed": observed, **row(f"vae+{method}", score if len(xs) == len(xv) else None,
                                                         out.means, xv, ~mask, vae_s, out.seconds, data.image_shape)})
                found += 1
        print_rows(rows[-found:])
    return rows


def superres(cfg, data_dir) -> list[dict]:
    rows = []
    for dataset in cfg["datasets"]:
        data = load_dataset(dataset, data_dir=data_dir, binarize="none", max_train=cfg["max_train"], seed=0)
        x = data.test[: cfg["rows"]]
        vae, vae_s = fitted("vae", data, cfg, "continuous_bernoulli", 16)
        for f in cfg["factors"]:
            lr = F.avg_pool2d(x.reshape(-1, 1, *data.image_shape[-2:]), f)  # = pyro_vae.masks.average_pool
            bicubic = F.interpolate(lr, scale_factor=f, mode="bicubic", align_corners=False).clamp(0, 1)
            found = [{"dataset": dataset, "factor": f, **row("bicubic", comps=bicubic.reshape(1, len(x), -1), x=x,
                                                             shape=data.image_shape)}]
            for name in ("cvae_baseline", "cvae"):
                prog, secs = fitted({"name": name, "task": "superres", "factor": f}, data, cfg,
                                    "continuous_bernoulli", 16)
                comps = prog.complete(x, 10, mean=True)
                found.append({"dataset": dataset, "factor": f, **row(name, None, comps, x, None, secs, None,
                                                                     data.image_shape)})
            obs = LowResolution(vae, data.image_shape, f, sigma=0.05)
            nv = cfg["vae_rows"]
            for method in cfg["superres_methods"]:
                out = complete_by_inference(obs, lr[:nv].reshape(len(x[:nv]), -1), method=method,
                                            num_samples=10, proposals=1000)
                found.append({"dataset": dataset, "factor": f, **row(f"vae+{method}", None, out.means, x[:nv], None,
                                                                     vae_s, out.seconds, data.image_shape)})
            print_rows(found)
            rows += found
    return rows


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        keys = ("observed", "dataset", "factor", "model", "nll", "nll_se", "neg_elbo", "khat_max", "psnr_mean",
                "psnr_best", "ssim_mean", "train_s", "complete_s")
        print("  ".join(f"{k}={r[k]:.3f}" if isinstance(r.get(k), float) else f"{k}={r[k]}"
                        for k in keys if r.get(k) is not None), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small models, few epochs, observed = 1, x4 on MNIST")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/completion_benchmark"))
    p.add_argument("--epochs", type=int, help="training epochs of every model (default: 8 quick, 50 full)")
    p.add_argument("--rows", type=int, help="test images scored (default: 300 quick, 10000 full)")
    p.add_argument("--vae-rows", type=int, help="of those, completed by each method (default: all; 0: none)")
    p.add_argument("--nuts-rows", type=int, help="of the --vae-rows, scored with the NUTS-fitted proposal of log p(x_obs) "
                   "(default: all of them; 0: none)")
    p.add_argument("--vae-nll-rows", type=int, help="of those, scored through the VAE with the local_vi proposal "
                   "(default: --vae-rows; 0: none)")
    p.add_argument("-K", type=int, help="importance samples per image (default: 200 quick, 1000 full)")
    p.add_argument("--observed", help="comma-separated observed quadrant counts, e.g. 1,2,3")
    p.add_argument("--factors", help="comma-separated super-resolution factors, e.g. 2,4")
    p.add_argument("--datasets", help="comma-separated datasets for super-resolution, e.g. mnist,fashion-mnist")
    p.add_argument("--methods", help="comma-separated VAE completion methods, e.g. naive,sir,local_vi,mwg,pseudo_gibbs,nuts")
    p.add_argument("--superres-methods", help="comma-separated VAE methods for super-resolution, e.g. sir,local_vi,nuts")
    p.add_argument("--skip", choices=["quadrants", "superres"], help="leave one part out")
    p.add_argument("--vae-only", action="store_true", help="quadrants: only the unconditional VAE (no CVAE, no baseline)")
    args = p.parse_args()
    for key in ("rows", "vae_rows", "nuts_rows", "vae_nll_rows", "epochs", "K"):
        if getattr(args, key) is not None and getattr(args, key) < 0:
            p.error(f"--{key.replace('_', '-')} {getattr(args, key)}: must be 0 or more")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = dict(QUICK if args.quick else FULL)
    for key in ("epochs", "rows", "K"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    cfg["vae_rows"] = min(cfg["rows"] if args.vae_rows is None else args.vae_rows, cfg["rows"])
    cfg["nuts_rows"] = min(cfg["vae_rows"] if args.nuts_rows is None else args.nuts_rows, cfg["vae_rows"])
    cfg["vae_nll_rows"] = min(cfg["vae_rows"] if args.vae_nll_rows is None else args.vae_nll_rows, cfg["rows"])
    for key, cast in (("observed", int), ("factors", int), ("datasets", str), ("methods", str),
                      ("superres_methods", str)):
        if getattr(args, key):
            cfg[key] = [cast(v) for v in getattr(args, key).split(",")]
    cfg["networks"] = [] if args.vae_only else ["cvae_baseline", "cvae"]
    print(f"config: {json.dumps(cfg)}", flush=True)
    t0 = time.perf_counter()
    rows = []
    if args.skip != "quadrants":
        print("== quadrants (binarized MNIST; nll = -log p(y | c) or -log p(x_miss | x_obs), nats per image) ==")
        rows += quadrants(cfg, args.data_dir)
    if args.skip != "superres":
        print("== super-resolution (grey levels, continuous Bernoulli) ==")
        rows += superres(cfg, args.data_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "completion.json", {"config": cfg, "rows": rows})
    print(f"total {time.perf_counter() - t0:.0f} s; written {args.out / 'completion.json'}")


if __name__ == "__main__":
    run_main(main)
