"""Registries and specs: names, options, validation, round-trips."""

from __future__ import annotations

import pytest

from pyro_vae import GUIDES, LIKELIHOODS, NETWORKS, PRIORS, ConfigError, Registry
from pyro_vae.spec import ModelSpec, RunSpec, TrainSpec, DataSpec, load_spec, override, save_spec, spec_from_dict, spec_to_dict


def test_registries_hold_the_required_components():
    assert {"normal", "learnable_normal", "laplace", "student_t", "mixture", "vamp"} <= set(PRIORS.names())
    assert {"bernoulli", "continuous_bernoulli", "gaussian", "gaussian_learned", "laplace", "beta", "poisson"} <= set(LIKELIHOODS.names())
    assert {"mlp", "conv"} <= set(NETWORKS.names())
    assert {"diag_normal", "lowrank_normal", "full_normal"} <= set(GUIDES.names())


@pytest.mark.parametrize("registry", [PRIORS, LIKELIHOODS, NETWORKS, GUIDES])
def test_unknown_name_lists_valid_ones(registry):
    with pytest.raises(ConfigError) as err:
        registry.get("no_such_thing")
    for name in registry.names():
        assert name in str(err.value)


def test_unknown_option_names_accepted_options():
    with pytest.raises(ConfigError, match=r"unknown option.*'dof'.*accepts: df, scale"):
        ModelSpec(prior={"name": "student_t", "dof": 3})


def test_custom_component_registers_in_one_decorator():
    reg: Registry = Registry("widget")

    @reg.register("twice")
    def twice(x: int, *, context=None, factor: int = 2):
        """Multiply by factor."""
        return x * factor

    assert reg.build("twice", 3, factor=5) == 15
    assert reg.describe("twice") == "Multiply by factor."
    assert reg.options("twice") == ["factor"]
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("twice", lambda x: x)


def test_a_registered_component_gets_its_option_types_checked():
    """Types come from the factory's annotations, or from its defaults where it has none; nothing is coerced."""
    reg = Registry("thing")

    @reg.register("thing")
    def thing(x: int, *, context=None, scale: float = 1.0, count=3, width: int | None = None, tags: list[str] = ()):
        return (scale, count, width, tags)

    assert reg.build("thing", 0, scale=2, count=4, width=None, tags=["a"]) == (2, 4, None, ["a"])  # an int is a number
    for options, match in [
        ({"scale": "2"}, r"option scale must be a finite number, got '2' \(text: write the number without quotes\)"),
        ({"scale": float("inf")}, "option scale must be a finite number, got inf"),
        ({"count": 2.5}, "option count must be an integer, got 2.5; e.g. 3"),  # typed by its default
        ({"width": True}, r"option width must be an integer or null, got True \(a bool\)"),
        ({"tags": "a"}, "option tags must be a list of names"),
    ]:
        with pytest.raises(ConfigError, match=match):
            reg.build("thing", 0, **options)
        with pytest.raises(ConfigError, match=match):  # the same check when a spec is read
            reg.check_options("thing", options)


def test_spec_accepts_names_and_mappings():
    spec = ModelSpec(latent_dim=3, prior={"name": "mixture", "components": 4}, encoder="conv")
    assert spec.prior.name == "mixture" and spec.prior.options == {"components": 4}
    assert spec.encoder.name == "conv" and spec.encoder.options == {}


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"model": {"latent_dim": 0}}, "latent_dim must be a positive integer"),
        ({"model": {"latent_dim": 2.5}}, "latent_dim must be a positive integer"),
        ({"model": {"prior": "gauss"}}, "unknown prior 'gauss'.*normal"),
        ({"model": {"likelihood": {"sigma": 1}}}, "has no 'name'"),
        ({"train": {"elbo": ""}}, "train.elbo must be a name"),
        ({"train": {"optimizer": 3}}, "train.optimizer must be a name"),
        ({"train": {"lr": -1}}, "lr must be a positive number"),
        ({"train": {"batch_size": 0}}, "batch_size must be a positive integer"),
        ({"train": {"kl_warmup_epochs": -2}}, "kl_warmup_epochs"),
        ({"data": {"binarize": "yes"}}, "binarize='yes' is not valid"),
        ({"data": {"val_fraction": 0.6, "test_fraction": 0.5}}, "nothing left to train on"),
        ({"trian": {}}, "unknown top-level key.*'trian'"),
        ({"train": {"epoch": 3}}, r"unknown key\(s\) \['epoch'\] in train; valid keys are: .*epochs"),
    ],
)
def test_bad_specs_raise_clear_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        spec_from_dict(bad)


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_spec_round_trips_through_files(tmp_path, suffix):
    spec = spec_from_dict(
        {
            "model": {
                "latent_dim": 4,
                "prior": {"name": "student_t", "df": 5.0},
                "likelihood": "continuous_bernoulli",
                "encoder": {"name": "mlp", "hidden": [32, 16], "activation": "tanh"},
                "guide": {"name": "lowrank_normal", "rank": 1},
            },
            "data": {"dataset": "digits", "binarize": "none"},
            "train": {"elbo": "meanfield", "epochs": 3, "seed": 7},
        }
    )
    path = save_spec(spec, tmp_path / f"run{suffix}")
    again = load_spec(path)
    assert spec_to_dict(again) == spec_to_dict(spec)
    assert again == spec


def test_top_level_model_keys_and_overrides():
    spec = load_spec({"latent_dim": 7, "prior": "laplace"})
    assert spec.model.latent_dim == 7 and spec.model.prior.name == "laplace"
    spec2 = override(spec, model__prior="student_t", epochs=9, seed=None)
    assert spec2.model.prior.name == "student_t" and spec2.train.epochs == 9
    assert spec2.train.seed == spec.train.seed  # None means "not given"
    with pytest.raises(ConfigError, match="unknown setting"):
        override(spec, wings=2)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="could not be parsed"):
        load_spec(bad)
    odd = tmp_path / "spec.ini"
    odd.write_text("x=1")
    with pytest.raises(ConfigError, match="unknown extension"):
        load_spec(odd)


def test_defaults_are_valid():
    spec = RunSpec()
    assert isinstance(spec.train, TrainSpec) and isinstance(spec.data, DataSpec)
    assert spec.model.prior.name == "normal" and spec.train.elbo == "trace"


def test_binarize_defaults_to_what_the_dataset_is():
    """Unset, binarization follows the dataset: static for the set shipped binarized, dynamic otherwise;
    the resolved value is what a saved spec records."""
    from pyro_vae.spec import DataSpec

    assert DataSpec().binarize == "dynamic"
    assert DataSpec(dataset="binarized-mnist").binarize == "static"
    assert DataSpec(dataset="mnist").binarize == "dynamic"
    assert spec_to_dict(spec_from_dict({"data": {"dataset": "binarized-mnist"}}))["data"]["binarize"] == "static"
    assert DataSpec(dataset="binarized-mnist", binarize="none").binarize == "none"
