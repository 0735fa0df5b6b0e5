"""A flow guide shrinks the approximation gap (Cremer et al. 2018) of the same model on digits."""

from __future__ import annotations

import torch

from inference.baselines import LocalFamilyGuide, frozen
from inference.diagnostics import amortization_gaps
from inference.svi import fit
from pyro_vae import build_vae
from pyro_vae.data import load_dataset

SMALL = dict(latent_dim=8, encoder={"name": "mlp", "hidden": [64]}, decoder={"name": "mlp", "hidden": [64]})
TRAIN = {"epochs": 30, "lr": 3e-3, "batch_size": 100, "seed": 0}


def test_iaf_guide_has_a_smaller_approximation_gap_than_the_diagonal_guide_on_the_same_decoder():
    """One model p(x, z) (8 latents), two families: diagonal Gaussian and a 2-layer IAF. The approximation gap
    log p(x) - L[q*] is the family's; to compare families the decoder must be the same, so the IAF
    guide is trained on the diagonal VAE's frozen decoder. Paired per-datapoint gap differences on the
    same 100 test rows: their mean must exceed 2 of its standard errors (fixed seeds)."""
    data = load_dataset("digits", binarize="dynamic")
    x = data.test[:100]
    diag = build_vae(data_dim=64, seed=0, **SMALL)
    fit(diag, data, TRAIN, progress=False)
    flow = build_vae(data_dim=64, seed=0, guide={"name": "iaf", "num_flows": 2}, **SMALL)
    for part in ("prior", "likelihood", "decoder"):
        getattr(flow, part).load_state_dict(getattr(diag, part).state_dict())
    with frozen(flow.decoder), frozen(flow.likelihood), frozen(flow.prior):
        fit(flow, data, TRAIN, progress=False)
    assert torch.equal(flow.decoder[0].weight, diag.decoder[0].weight)
    common = dict(is_samples=500, local_steps=150, elbo_particles=100, seed=0, estimator="A")
    g_diag, g_flow = amortization_gaps(diag, x, **common), amortization_gaps(flow, x, **common)
    assert isinstance(g_flow.local_guide, LocalFamilyGuide)  # q* searched within the flow family
    diff = g_diag.approximation_gap.values - g_flow.approximation_gap.values
    se = diff.std() / diff.numel() ** 0.5  # torch: divisor n - 1
    assert diff.mean() > 2 * se, (g_diag.summary(), g_flow.summary())
    assert g_flow.approximation_gap.mean > -3 * g_flow.approximation_gap.stderr  # still a gap (>= 0 up to noise)


SM = {"encoder": {"name": "mlp", "hidden": [32]}, "decoder": {"name": "mlp", "hidden": [32]}}
QUICK = dict(mcmc_points=3, samples=50, warmup=50, gap_points=5, is_samples=50, local_steps=10, ppc_draws=10, progress=False)


def test_diagnose_takes_a_flow_guide_run_and_a_two_layer_one(tmp_path):
    from inference.diagnostics import diagnose_run, psis_khat
    from inference.run import load_run, train

    train({"model": {"latent_dim": 3, "guide": "sylvester", **SM}, "data": {"dataset": "digits"}, "train": {"epochs": 2}},
          tmp_path / "flow", eval_samples=20, progress=False)
    result = diagnose_run(tmp_path / "flow", **QUICK)
    assert isinstance(result.gaps.local_guide, LocalFamilyGuide) and result.khat.khat.shape[0] > 0
    program = {"name": "hierarchical", "top_latent_dim": 2, "top_hidden": [8]}
    train({"model": {"latent_dim": 3, "program": program, **SM}, "data": {"dataset": "digits"},
           "train": {"epochs": 1, "elbo": "iwae", "num_particles": 2}}, tmp_path / "two", eval_samples=20, progress=False)
    assert set(diagnose_run(tmp_path / "two", **QUICK).layers) == {"z1", "z2"}  # per layer (test_report.py)
    _, data, two = load_run(tmp_path / "two")
    k = psis_khat(two.model, two.guide, data.test[:10], 50, site="z1")  # k-hat over both latents' weights
    assert k.khat.shape == (10,) and k.mean.shape == (10, 3)
