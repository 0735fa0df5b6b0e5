"""Command line: ``pyro-vae train | evaluate | classify | sample | complete | export | compare | diagnose | list``.

Only parses arguments and calls library functions (``inference.run``); every number it
prints comes from the run folder it writes. Flags list their valid values from the registries.
Each command imports the modules it runs (comparison, diagnostics with ArviZ) when it runs, so
that ``--help`` and ``list`` stay quick.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from inference.objectives import OBJECTIVES
from inference.training import OPTIMIZERS, SCHEDULES
from pyro_vae import GUIDES, LIKELIHOODS, PRIORS, PROGRAMS
from pyro_vae.errors import REFUSALS, ConfigError
from pyro_vae.networks import ACTIVATIONS
from pyro_vae.plugins import load_plugins
from pyro_vae.spec import BINARIZE, M1_FEATURES, M1_UNITS


def _names(names) -> str:
    """Valid values for a flag's help, read from its registry."""
    return " | ".join(names)


def _train(args: argparse.Namespace) -> int:
    from inference import run
    from inference.training import distributed, launch
    from pyro_vae.checks import positive_int
    from pyro_vae.spec import load_spec, override

    if positive_int("--nproc", args.nproc) > 1 and not distributed.launched():
        # the same command on N local processes under torchrun (inference.training.launch)
        launch.launch(args.nproc, ["-m", "inference.cli", *launch.without_flag(args.argv, "--nproc")], run_dir=args.out)
        return 0
    out = Path(args.out)
    saved = out / "config.yaml"
    if args.resume and not saved.is_file():
        raise ConfigError(f"cannot resume: {saved} does not exist; start the run without --resume")
    plugins = load_plugins(args.plugin or ())  # before the spec: it may name what they register
    # A resumed run starts from its saved config (flags may still extend it, e.g. --epochs).
    spec = load_spec(args.config if args.config or not args.resume else saved)
    if plugins:
        spec = dataclasses.replace(spec, plugins=tuple(dict.fromkeys(spec.plugins + plugins)))
    spec = override(
        spec,
        data__dataset=args.dataset, data__data_dir=args.data_dir, data__binarize=args.binarize,
        data__max_train=args.max_train, data__labels=args.labels, data__m1=args.m1,
        data__m1_units=args.m1_units, data__m1_features=args.m1_features,
        model__program=args.program, model__prior=args.prior, model__likelihood=args.likelihood,
        model__latent_dim=args.latent_dim,
        model__guide=args.guide,
        train__elbo=args.elbo, train__epochs=args.epochs, train__seed=args.seed, train__lr=args.lr,
        train__batch_size=args.batch_size, train__labelled_batch_size=args.labelled_batch_size,
        train__num_particles=args.num_particles,
        train__kl_warmup_epochs=args.kl_warmup, train__patience=args.patience, train__monitor=args.monitor,
        train__lr_schedule=args.lr_schedule, train__lr_final=args.lr_final, train__optimizer=args.optimizer,
        train__weight_decay=args.weight_decay, train__device=args.device, train__mixed_precision=args.mixed_precision or None,
    )
    spec = _with_widths(spec, args.hidden, args.activation)
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    if args.download:
        from pyro_vae.data import download_dataset

        download_dataset(spec.data.dataset, spec.data.data_dir)
    try:
        result = run.train(spec, out, resume=args.resume, overwrite=args.overwrite,
                           allow_data_change=args.allow_data_change, eval_samples=args.eval_samples,
                           eval_rows=args.eval_rows, tensorboard=args.tensorboard, progress=not args.quiet)
    except BaseException:
        distributed.close(synchronize=False)  # another process may be gone: no barrier
        raise
    # on success a torchrun process keeps its group: it ends in distributed.end_process, after a barrier
    if not result.metrics:  # a process > 0 of a torchrun job: process 0 reports
        return 0
    t = result.metrics["test"]
    ll = t["log_likelihood"]
    print(f"run folder: {result.run_dir}")
    print(f"test {t.get('quantity', 'log p(x)')} (IS, K={ll['num_samples']}): {ll['mean']:.3f} +- {ll['stderr']:.3f} nats")
    print(f"test ELBO A: {t['elbo_a']['mean']:.3f} +- {t['elbo_a']['stderr']:.3f}   B: {t['elbo_b']['mean']:.3f} +- {t['elbo_b']['stderr']:.3f}")
    print(f"active units: {t['active_units']} of {len(t['kl_per_dim'])}")
    _print_semi_supervised(t)
    print(f"wall time: training {result.fit.wall_time:.1f} s, evaluation {t['seconds']:.1f} s "
          f"({ll['n']} test rows x K={ll['num_samples']})")
    return 0


def _with_widths(spec: Any, hidden: list[int] | None, activation: str | None) -> Any:
    """``spec`` with ``--hidden`` / ``--activation`` set on both mlp networks (refused for other networks)."""
    if hidden is None and activation is None:
        return spec
    from pyro_vae.spec import override

    parts = {}
    for part in ("encoder", "decoder"):
        comp = getattr(spec.model, part)
        if comp.name != "mlp":
            raise ConfigError(f"--hidden/--activation set the mlp networks, but this spec's {part} is {comp.name!r}; "
                              "set its options in the config file instead")
        options = {**comp.options, **({"hidden": list(hidden)} if hidden is not None else {}),
                   **({"activation": activation} if activation is not None else {})}
        parts[f"model__{part}"] = {"name": "mlp", **options}
    return override(spec, **parts)


def _evaluate(args: argparse.Namespace) -> int:
    from inference import run

    t = run.evaluate_run(args.run_dir, num_samples=args.K, rows=args.eval_rows, refine_steps=args.refine_steps,
                         progress=not args.quiet, device=args.device)
    ll = t["log_likelihood"]
    print(f"test {t.get('quantity', 'log p(x)')} (IS, K={ll['num_samples']}): {ll['mean']:.3f} +- {ll['stderr']:.3f} nats "
          f"over {ll['n']} datapoints")
    if "log_likelihood_refined" in t:
        r = t["log_likelihood_refined"]
        print(f"test log p(x) (IS from the encoder refined per row, {r['refine_steps']} steps, K={r['num_samples']}): "
              f"{r['mean']:.3f} +- {r['stderr']:.3f} nats ({r['gain']:+.3f} over the encoder's own q; {r['seconds']:.1f} s)")
    print(f"test ELBO A: {t['elbo_a']['mean']:.3f} +- {t['elbo_a']['stderr']:.3f}   B: {t['elbo_b']['mean']:.3f} +- {t['elbo_b']['stderr']:.3f}")
    print(f"evaluation wall time {t['seconds']:.1f} s")
    _print_semi_supervised(t)
    return 0


def _print_semi_supervised(test: dict) -> None:
    """The accuracy and calibration lines of an M2 run (nothing for other programs)."""
    s = test.get("semi_supervised")
    if s:
        ll = s["log_likelihood_summed"]
        print(f"test accuracy {s['accuracy']:.4f} +- {s['accuracy_stderr']:.4f} (error {100 * s['error']:.2f} %), "
              f"ECE {s['ece']:.4f}; log p(x) with y summed out {ll['mean']:.3f} +- {ll['stderr']:.3f} nats")


def _classify(args: argparse.Namespace) -> int:
    from inference import run
    from inference.semisup.results import accuracy_of

    path = run.classify_run(args.run_dir, dataset=args.dataset, out=args.out)
    accuracy = accuracy_of(path)
    print(f"predictions and class probabilities: {path}" + ("" if accuracy is None else f" (accuracy {accuracy:.4f})"))
    return 0


def _sample(args: argparse.Namespace) -> int:
    from inference import run

    out = run.sample_run(args.run_dir, n=args.n, seed=args.seed, device=args.device)
    print(f"{len(out.draws)} samples z ~ p(z): draws x ~ p(x | z) and their means E[x | z] in {out.files['tensors']} "
          "(keys z, draws, means, latents)")
    for kind in ("draws", "means"):
        if kind in out.files:
            print(f"{kind}: {out.files[kind]}")
    return 0


def _complete(args: argparse.Namespace) -> int:
    from inference.completion.api import complete_run

    out = complete_run(args.run_dir, mask=args.mask, method=args.method, rows=args.rows, samples=args.samples,
                       num_samples=args.K, sigma=args.sigma, proposal=args.proposal, seed=args.seed, device=args.device,
                       progress=not args.quiet)
    m = out.metrics
    if m.get("conditional_nll") is not None:
        print(f"conditional NLL (IS, K={m['num_samples']}): {m['conditional_nll']:.3f} +- {m['conditional_nll_stderr']:.3f} "
              f"nats; -ELBO(10) {m['neg_elbo']:.3f}; k-hat max {m['khat_max']:.2f}")
    print(f"PSNR mean {m['psnr_mean']:.2f} dB, best of {m['samples']} {m['psnr_best']:.2f} dB"
          + (f"; SSIM mean {m['ssim_mean']:.3f}, best {m['ssim_best']:.3f}" if "ssim_mean" in m else ""))
    print(f"completion folder: {out.files['metrics'].parent}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from inference import run

    path = run.export_run(args.run_dir, args.to, which=args.which)
    print(f"exported {args.run_dir} ({args.which} parameters) to {path}; load it with pyro_vae.export.load_program")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from inference import compare, run
    from pyro_vae.spec import load_spec, override

    spec = override(
        load_spec(args.config),
        data__dataset=args.dataset, data__data_dir=args.data_dir, data__binarize=args.binarize, train__seed=args.seed,
    )
    result = compare.run_compare(
        spec, run.load_data(spec), methods=args.methods or compare.DEFAULT_METHODS, train_sizes=args.train_sizes, budget=args.budget,
        num_samples=args.K, eval_rows=args.eval_rows, checkpoints=args.checkpoints, out=args.out,
        progress=not args.quiet, device=args.device,
    )
    print(result.table())
    print("wrote " + ", ".join(str(p) for p in result.files))
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    from inference.diagnostics import diagnose_run

    result = diagnose_run(
        args.run_dir, mcmc_points=args.mcmc_points, samples=args.samples, warmup=args.warmup, chains=args.chains,
        gap_points=args.gap_points, is_samples=args.is_samples, local_steps=args.local_steps, ppc_draws=args.ppc_draws,
        rows=args.rows,
        seed=args.seed, threads=args.threads, progress=not args.quiet, device=args.device,
    )
    for check in result.checks:
        print(f"{check.status:4s}  {check.name}: {check.detail}")
    print(f"report: {result.files['report']}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from pyro_vae import REGISTRIES

    titles = {f"{kind}s (--{kind})": reg for kind, reg in REGISTRIES.items() if kind != "network"}
    titles.update({"networks (encoder/decoder in a config)": REGISTRIES["network"], "objectives (--elbo)": OBJECTIVES})
    for title, reg in titles.items():
        print(f"{title}:")
        for name in reg.names():
            opts = reg.options(name)
            opt_text = f" [options: {', '.join(opts)}]" if opts else ""
            print(f"  {name:22s} {reg.describe(name)}{opt_text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyro-vae", description="Variational auto-encoders as Pyro programs.")
    p.add_argument("-v", "--verbose", action="store_true", help="log details (INFO level)")
    sub = p.add_subparsers(dest="command", required=True)

    _add_train(sub)
    _add_evaluate(sub)
    _add_classify(sub)
    _add_sample(sub)
    _add_complete(sub)
    _add_export(sub)
    _add_compare(sub)
    _add_diagnose(sub)
    _add_list(sub)
    return p


def _add_train(sub: argparse._SubParsersAction) -> None:
    """The ``train`` command's flags."""
    t = sub.add_parser("train", help="train a VAE and write a run folder")
    t.add_argument("--config", help="YAML/TOML/JSON spec; flags below override it")
    t.add_argument("--plugin", action="append", metavar="MODULE",
                   help="import MODULE first, so its registered components can be named (repeatable; kept in config.yaml)")
    t.add_argument("--dataset", help="digits | mnist | fashion-mnist | binarized-mnist | PATH (.npy/.npz/.csv)")
    t.add_argument("--data-dir", help="folder with the dataset files (default: $PYRO_VAE_DATA, else the user cache)")
    t.add_argument("--download", action="store_true", help="download MNIST/Fashion-MNIST (checksummed) first")
    t.add_argument("--binarize", help=f"{_names(BINARIZE)} (default: static for binarized-mnist, else dynamic)")
    t.add_argument("--max-train", type=int, help="use only the first N training rows")
    t.add_argument("--labels", type=int, help="semi-supervised (program m2): keep the labels of N training rows, balanced over the classes")
    t.add_argument("--m1", help="M1+M2: a trained VAE run folder; every row becomes its posterior mean there (use a "
                   "continuous likelihood, e.g. --likelihood gaussian_learned)")
    t.add_argument("--m1-units", help=f"M1+M2: {_names(M1_UNITS)} of the M1 run's latent units (active: "
                   "Var_x E_q[z_u | x] > 0.01 on its training rows; default all)")
    t.add_argument("--m1-features", help=f"M1+M2: train M2 on {_names(M1_FEATURES)} of the M1 run's q(z | x) "
                   "(sample: a fresh draw per minibatch; default mean)")
    t.add_argument("--program", help=f"{_names(PROGRAMS.names())} (default vae)")
    t.add_argument("--prior", help=_names(PRIORS.names()))
    t.add_argument("--likelihood", help=_names(LIKELIHOODS.names()))
    t.add_argument("--guide", help=_names(GUIDES.names()))
    t.add_argument("--latent-dim", type=int)
    t.add_argument("--hidden", type=int, nargs="+", help="hidden widths of the mlp encoder and decoder, e.g. 200 200")
    t.add_argument("--activation", help=f"activation of the mlp networks: {_names(sorted(ACTIVATIONS))}")
    t.add_argument("--optimizer", help=f"{_names(OPTIMIZERS.names())} (clipped_adam clips gradients: use it if training diverges)")
    t.add_argument("--elbo", help=f"{_names(OBJECTIVES.names())} (trace: estimator A, meanfield: estimator B)")
    t.add_argument("--num-particles", type=int)
    t.add_argument("--epochs", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--lr-schedule", help=f"{_names(SCHEDULES.names())} (per epoch, from --lr to --lr-final)")
    t.add_argument("--lr-final", type=float, help="learning rate of the last epoch (default lr / 100)")
    t.add_argument("--weight-decay", type=float, help="weight decay: decoupled with adamw (e.g. 0.05); with adam/clipped_adam an L2 term on the "
                   "whole-data loss, so it needs far smaller values; default 0")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--labelled-batch-size", type=int, help="M2: labelled rows in every step (default: the labelled rows "
                   "spread over an epoch's steps, each seen about once per epoch)")
    t.add_argument("--kl-warmup", type=int, help="epochs of linear KL warm-up")
    t.add_argument("--patience", type=int, help="early stopping patience (epochs)")
    t.add_argument("--monitor", help="the validation score that keeps the best epoch and stops early "
                                     "(default: the ELBO; M2: accuracy, or log_q)")
    t.add_argument("--seed", type=int)
    t.add_argument("--out", default="runs/default", help="run folder (default: runs/default)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out (its files are removed)")
    t.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: continue although the data's values changed (same shape)")
    t.add_argument("--eval-samples", type=int, default=1000, help="K for the test log p(x) (default 1000)")
    t.add_argument("--eval-rows", type=int, help="score only the first N test rows (default: all)")
    t.add_argument("--tensorboard", action="store_true",
                   help="log losses, lr, KL terms and sample grids to RUN/tensorboard (pip install 'pyro-vae[tensorboard]')")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress (a bar on a terminal, a line a minute in a log)")
    _add_device(t)
    t.add_argument("--mixed-precision", action="store_true",
                   help="networks in bfloat16 under autocast, densities in float32 (off by default; measure first)")
    t.add_argument("--nproc", type=int, default=1,
                   help="train on N local processes (data parallel; runs this command under torchrun, gloo on CPU, "
                        "NCCL on CUDA); for several machines call torchrun yourself (README: Scale out)")
    t.set_defaults(func=_train)


def _add_device(parser: argparse.ArgumentParser) -> None:
    """``--device`` (the commands that compute)."""
    from pyro_vae.spec import DEVICE_FORMS

    parser.add_argument("--device", help=f"{_names(DEVICE_FORMS)} (auto: CUDA, then MPS, then CPU; default: the "
                        "spec's train.device for train, cpu otherwise)")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    """The ``evaluate`` command's flags."""
    e = sub.add_parser("evaluate", help="importance-sampled test log p(x) of a run")
    e.add_argument("run_dir")
    e.add_argument("-K", type=int, default=5000, help="importance samples per datapoint (default 5000)")
    e.add_argument("--eval-rows", type=int, help="score only the first N test rows (default: all)")
    e.add_argument("--refine-steps", type=int, default=0,
                   help="also score log p(x) with the encoder refined per row for N steps as the IS proposal (e.g. 300)")
    e.add_argument("-q", "--quiet", action="store_true")
    _add_device(e)
    e.set_defaults(func=_evaluate)


def _add_classify(sub: argparse._SubParsersAction) -> None:
    """The ``classify`` command's flags."""
    c = sub.add_parser("classify", help="predictions and class probabilities of an M2 run (CSV)")
    c.add_argument("run_dir")
    c.add_argument("--dataset", default="test", help="test | val | train (the run's splits) or a .npy/.npz/.csv file")
    c.add_argument("--out", help="the CSV to write (default RUN/predictions/<dataset>.csv)")
    c.set_defaults(func=_classify)


def _add_sample(sub: argparse._SubParsersAction) -> None:
    """The ``sample`` command's flags."""
    s = sub.add_parser("sample", help="draw new datapoints from a trained run")
    s.add_argument("run_dir")
    s.add_argument("-n", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    _add_device(s)
    s.set_defaults(func=_sample)


def _add_complete(sub: argparse._SubParsersAction) -> None:
    """The ``complete`` command's flags."""
    from inference.completion.samplers import METHODS

    c = sub.add_parser("complete", help="complete test data of a run (cvae, or any VAE by inference); writes RUN/completion/")
    c.add_argument("run_dir")
    c.add_argument("--mask", default="quadrants:1",
                   help="quadrants:1|2|3 | random:FRACTION | center | rows:FRACTION | downsample:2|4 (default quadrants:1)")
    c.add_argument("--method", help=f"model (a cvae run, the default there) | {_names(METHODS)} (a VAE run; default sir)")
    c.add_argument("--rows", type=int, default=100, help="test rows to complete (default 100)")
    c.add_argument("--samples", type=int, default=8, help="completions per row (default 8)")
    c.add_argument("-K", type=int, default=1000, help="importance samples of the conditional NLL (default 1000)")
    c.add_argument("--sigma", type=float, default=0.05, help="noise sd of the low-resolution observation (VAE downsample)")
    c.add_argument("--proposal", default="local_vi",
                   help="IS proposal of log p(x_obs) for a VAE run: local_vi (default; per-row VI, cost linear in the rows) | "
                        "defensive (encoder + prior; cheap, often far off) | nuts (fitted to NUTS draws)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("-q", "--quiet", action="store_true", help="no progress (a bar on a terminal, a line a minute in a log)")
    _add_device(c)
    c.set_defaults(func=_complete)


def _add_export(sub: argparse._SubParsersAction) -> None:
    """The ``export`` command's flags."""
    x = sub.add_parser("export", help="write a run's program, spec and data recipe to one file")
    x.add_argument("run_dir")
    x.add_argument("--to", required=True, help="the file to write (e.g. model.pt)")
    x.add_argument("--which", default="best", choices=("best", "last"), help="parameters of the best or the last epoch")
    x.set_defaults(func=_export)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    """The ``compare`` command's flags."""
    c = sub.add_parser("compare", help="train several inference methods on one spec; table + figure3.png")
    c.add_argument("--methods", help="comma-separated methods (default: svi-trace,svi-meanfield,iwae,rws,map,local-vi,mcem; "
                   "also mcmc for small pPCA models); an unknown name lists the valid ones")
    c.add_argument("--train-sizes", required=True, help="comma-separated training-set sizes, e.g. 1000,50000")
    c.add_argument("--budget", required=True, help="per method and size: 60s | 2min | 20epochs | 1e6samples")
    c.add_argument("--config", help="YAML/TOML/JSON spec; flags below override it")
    c.add_argument("--dataset", help="digits | mnist | fashion-mnist | binarized-mnist | PATH")
    c.add_argument("--data-dir", help="folder with the dataset files (default: $PYRO_VAE_DATA, else the user cache)")
    c.add_argument("--binarize", help="none | threshold | static | dynamic")
    c.add_argument("--seed", type=int)
    c.add_argument("-K", type=int, default=1000, help="importance samples per datapoint for log p(x) (default 1000)")
    c.add_argument("--eval-rows", type=int, default=1000, help="held-out and training rows scored (default 1000)")
    c.add_argument("--checkpoints", default="0.125,0.25,0.5,1", help="budget fractions drawn in figure3.png")
    c.add_argument("--out", required=True, help="folder for results.md, results.csv, figure3.png")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress (a bar on a terminal, a line a minute in a log)")
    _add_device(c)
    c.set_defaults(func=_compare)


def _add_diagnose(sub: argparse._SubParsersAction) -> None:
    """The ``diagnose`` command's flags."""
    g = sub.add_parser("diagnose", help="MCMC, PSIS k-hat, inference gaps, collapse and PPC of a run; writes RUN_DIR/diagnostics/")
    g.add_argument("run_dir")
    g.add_argument("--mcmc-points", type=int, default=20, help="test rows whose codes get NUTS (default 20; 0 skips MCMC)")
    g.add_argument("--samples", type=int, default=300, help="MCMC draws per chain after warm-up (default 300)")
    g.add_argument("--warmup", type=int, default=300, help="MCMC warm-up steps per chain (default 300)")
    g.add_argument("--chains", type=int, default=2, help="MCMC chains, started from the prior (default 2)")
    g.add_argument("--gap-points", type=int, default=50, help="test rows for the inference gaps (default 50; 0 skips them)")
    g.add_argument("--is-samples", type=int, default=1000, help="importance samples per row for k-hat and log p(x) (default 1000)")
    g.add_argument("--local-steps", type=int, default=300, help="optimization steps of the per-datapoint q* (default 300)")
    g.add_argument("--ppc-draws", type=int, default=100, help="replicated data sets for the PPC (default 100)")
    g.add_argument("--rows", type=int, help="diagnose only the first N test rows (default: all; bounds time and memory)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=1, help="torch threads while diagnosing (default 1: small networks only contend)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress (a bar on a terminal, a line a minute in a log)")
    _add_device(g)
    g.set_defaults(func=_diagnose)


def _add_list(sub: argparse._SubParsersAction) -> None:
    """The ``list`` command's flags."""
    ls = sub.add_parser("list", help="list the registered components")
    ls.set_defaults(func=_list)


def _one_process_unless_training(command: str) -> None:
    """ConfigError for a command other than ``train`` started by torchrun on several processes."""
    from inference.training.distributed import launched

    if command != "train" and launched():
        raise ConfigError(f"`pyro-vae {command}` runs on one process; only `train` runs under torchrun "
                          "(--nproc_per_node N): start it without torchrun")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # `train --nproc N` relaunches the same command line
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        _one_process_unless_training(args.command)
        return args.func(args)
    except REFUSALS as err:
        print(f"pyro-vae: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (e.g. `pyro-vae list | head`): nothing left to say
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    _code = main()
    from inference.training import distributed as _distributed

    if _distributed.launched():  # a process of a torchrun job: end it without the interpreter's teardown
        _distributed.end_process(_code)
    sys.exit(_code)
