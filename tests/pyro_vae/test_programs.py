"""Programs by name: every registered program keeps the contract the inference side relies on."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from torch import nn

from pyro_vae import ConfigError, DataError
from pyro_vae.linear_gaussian import pca_parameters
from pyro_vae.build import build_program
from pyro_vae.programs import PROGRAMS
from pyro_vae.spec import ModelSpec, spec_from_dict, spec_to_dict

SMALL = dict(latent_dim=2, encoder={"name": "mlp", "hidden": [8]}, decoder={"name": "mlp", "hidden": [8]})


def test_vae_and_ppca_are_registered_and_unknown_names_list_them():
    assert {"vae", "ppca"} <= set(PROGRAMS.names())
    with pytest.raises(ConfigError, match=r"unknown program 'gan'; valid programs are: .*ppca.*vae"):
        ModelSpec(program="gan")
    assert spec_to_dict(spec_from_dict({"model": {"program": "ppca"}}))["model"]["program"] == "ppca"
    assert ModelSpec().program.name == "vae"  # a config.yaml written before programs existed still loads


def test_a_program_takes_its_options_from_the_spec_checked_like_any_component():
    """program: {name, **options}: the factory's keyword-only parameters past the build arguments are its options."""
    seen = {}

    def scaled(spec, *, data_dim, image_shape=None, data_sample=None, seed=None, width: int = 3):
        seen["width"] = width
        return PROGRAMS.get("vae")(spec, data_dim=data_dim, image_shape=image_shape, data_sample=data_sample, seed=seed)

    PROGRAMS.register("_test_scaled", scaled)
    try:
        assert PROGRAMS.options("_test_scaled") == ["width"]
        spec = spec_from_dict({"model": {"program": {"name": "_test_scaled", "width": 7}, **SMALL}})
        assert spec_to_dict(spec)["model"]["program"] == {"name": "_test_scaled", "width": 7}
        build_program(spec.model, data_dim=4, seed=0)
        assert seen["width"] == 7
        with pytest.raises(ConfigError, match=r"program '_test_scaled' got unknown option\(s\) \['depth'\]; it accepts: width"):
            ModelSpec(program={"name": "_test_scaled", "depth": 2})
        with pytest.raises(ConfigError, match=r"program '_test_scaled' option width"):
            ModelSpec(program={"name": "_test_scaled", "width": "wide"})
    finally:
        PROGRAMS._factories.pop("_test_scaled")


@pytest.mark.parametrize("name", sorted(PROGRAMS.names()))
def test_every_program_declares_its_inputs_and_latents_inside_the_data_plate(name):
    """The names a program declares are the sites its model has: the observed sites and the latents, all in "data".

    The observed sites are ``program.observed`` where a program declares them (a conditional program
    takes ``x`` and observes the part ``y`` it completes), else its inputs."""
    program = build_program(ModelSpec(program=name, **SMALL), data_dim=6, image_shape=(2, 3), seed=0)
    x = torch.randn(5, 6)
    try:  # real-valued rows, or 0/1 rows for a program whose likelihood is Bernoulli (vae, m2, cvae, hierarchical)
        program.check_data(x)
    except DataError:
        x = torch.rand(5, 6).round()
        program.check_data(x)
    with pyro.validation_enabled(True):
        trace = poutine.trace(program.model).get_trace(**{k: x for k in program.inputs}, num_data=50, beta=0.5)
        guide_trace = poutine.trace(program.guide).get_trace(**{k: x for k in program.inputs}, num_data=50)
    sites = {n: s for n, s in trace.nodes.items() if s["type"] == "sample" and n != "data"}
    assert {n for n, s in sites.items() if s["is_observed"]} == set(getattr(program, "observed", program.inputs))
    assert {n for n, s in sites.items() if not s["is_observed"]} == set(program.latents)
    assert set(program.latents) <= set(guide_trace.nodes)
    for site in sites.values():
        frames = [f for f in site["cond_indep_stack"] if f.name == "data"]
        assert frames and frames[0].dim == -1 and (frames[0].size, frames[0].full_size) == (5, 50)  # scale N / B
    assert program.data_dim == 6


@pytest.mark.parametrize("name", sorted(PROGRAMS.names()))
def test_every_program_draws_its_weights_from_its_seed_and_leaves_the_callers_rng_alone(name):
    """build_program(seed=s): the same s gives the same weights whatever the caller's random state, and the
    caller's global torch stream is where it was (no hidden reseeding)."""
    spec = ModelSpec(program=name, **SMALL)
    states = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        before = torch.get_rng_state()
        program = build_program(spec, data_dim=6, image_shape=(2, 3), seed=0)
        assert torch.equal(torch.get_rng_state(), before), "building with a seed moved the caller's torch RNG"
        states.append(program.state_dict())
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=0, atol=0)
    other = build_program(spec, data_dim=6, image_shape=(2, 3), seed=1).state_dict()
    if any(v.is_floating_point() and v.numel() > 1 for v in other.values()):  # pPCA's zero-started weights excepted
        assert any(not torch.equal(states[0][k], other[k]) for k in other), "another seed gave the same weights"


def test_ppca_is_the_linear_gaussian_model():
    program = build_program(ModelSpec(program="ppca", latent_dim=2, guide="full_normal",
                                      likelihood={"name": "gaussian", "sigma": 0.5}), data_dim=5, seed=0)
    assert isinstance(program.decoder, nn.Linear) and isinstance(program.encoder, nn.Linear)
    W, mu, sigma = pca_parameters(program)
    assert W.shape == (5, 2) and mu.shape == (5,) and float(sigma) == pytest.approx(0.5)
    prior = program.prior()
    assert torch.equal(prior.mean, torch.zeros(2)) and torch.equal(prior.variance, torch.ones(2))
