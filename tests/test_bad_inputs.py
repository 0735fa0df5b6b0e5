"""Every bad input gets a clear error: one line from the library that names the argument.

Table-driven: each row is a bad input (a spec, a config file, a Python call or a command line) with
the error class it must raise and a piece of text that names the argument. A Python call must raise
that class, from a frame inside ``pyro_vae`` or ``inference`` (never a traceback from torch, numpy or
Pyro), with a one-line message; a command line must exit with status 2 and print the one line
``pyro-vae: error: ...`` on stderr, refusing before it trains (nothing written to --out).
Everything here fails before training: the file runs in seconds.
"""

from __future__ import annotations

import functools
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml

import inference
import pyro_vae
from inference import evaluate, svi
from inference.cli import main
from inference.methods import Budget
from inference.methods import fit as method_fit
from inference.run_folder import existing_run
from inference.training.settings import check_train_spec
from pyro_vae import build_program, build_vae, load_dataset
from pyro_vae.data import DataSplits
from pyro_vae.errors import ConfigError, DataError, UnsupportedModelError
from pyro_vae.spec import DataSpec, ModelSpec, TrainSpec, load_spec, spec_from_dict

LIBRARY = (Path(pyro_vae.__file__).parent, Path(inference.__file__).parent)
NAN, INF = float("nan"), float("inf")
SMALL = {"name": "mlp", "hidden": [8]}
TINY_MODEL = {"latent_dim": 2, "encoder": SMALL, "decoder": SMALL}

# --------------------------------------------------------------------------- helpers


@functools.cache
def digits() -> DataSplits:
    """200 training rows of the embedded 8x8 digits, thresholded to 0/1."""
    return load_dataset("digits", binarize="threshold", max_train=200)


def grey_digits() -> DataSplits:
    return load_dataset("digits", binarize="none", max_train=200)


def vae(**options: Any):
    """A tiny fresh VAE for the digits."""
    return build_vae(data_dim=64, image_shape=(8, 8), seed=0, **{**TINY_MODEL, **options})


def from_dict(data: dict) -> Any:
    """What a run does with a spec before it loads data: parse it, resolve the names, build the program."""
    spec = spec_from_dict(data)
    check_train_spec(spec.train)
    return build_program(spec.model, data_dim=64, image_shape=(8, 8), seed=0)


def model(**section: Any) -> Callable[[], Any]:
    return lambda: from_dict({"model": {**TINY_MODEL, **section}})


def data(**section: Any) -> Callable[[], Any]:
    return lambda: from_dict({"data": section})


def train(**section: Any) -> Callable[[], Any]:
    return lambda: from_dict({"train": section})


_FILES: list[Path] = []


def files_dir() -> Path:
    if not _FILES:
        _FILES.append(Path(tempfile.mkdtemp(prefix="pyro-vae-bad-inputs-")))
    return _FILES[0]


@pytest.fixture(scope="module", autouse=True)
def _remove_files():
    yield
    if _FILES:
        shutil.rmtree(_FILES.pop(), ignore_errors=True)


def text_file(name: str, text: str) -> Path:
    path = files_dir() / name
    path.write_text(text)
    return path


def npy(name: str, array: np.ndarray) -> Path:
    path = files_dir() / name
    np.save(path, array, allow_pickle=True)
    return path


def rows_csv(n: int, name: str | None = None) -> Path:
    """A CSV of n rows of 3 values in [0, 1]."""
    values = np.random.default_rng(0).random((n, 3))
    return text_file(name or f"rows{n}.csv", "\n".join(",".join(f"{v:.3f}" for v in row) for row in values) + "\n")


def with_nan(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[1, 3] = NAN
    return x


def with_inf(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[0, 0] = INF
    return x


def splits(train: torch.Tensor, val: torch.Tensor | None = None, test: torch.Tensor | None = None) -> DataSplits:
    val = train[:0] if val is None else val
    test = train[:0] if test is None else test
    return DataSplits("tiny", train, val, test, None, None, None, None, "none")


def assert_refused(call: Callable[[], Any], error: type[Exception], names: str) -> None:
    """``call`` raises exactly ``error``, from library code, with one line naming ``names``."""
    with pytest.raises(Exception) as info:
        call()
    err = info.value
    assert type(err) is error, f"expected {error.__name__}, got {type(err).__name__}: {err}"
    message = str(err)
    assert names_word(names, message), f"the message does not name {names!r}: {message}"
    assert "\n" not in message, f"the message spans several lines: {message!r}"
    tb = info.tb
    while tb.tb_next is not None:
        tb = tb.tb_next
    origin = Path(tb.tb_frame.f_code.co_filename).resolve()
    assert any(root in origin.parents for root in LIBRARY), f"raised from {origin}, not from the library"


def names_word(names: str, message: str) -> bool:
    """Whether ``names`` occurs in ``message`` as a whole word (not inside a longer name)."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(names)}(?![A-Za-z0-9_])", message) is not None


def group(prefix: str, cases: list[Any]) -> list[Any]:
    """The cases with ids ``prefix:id`` (the group shows in each test id)."""
    return [pytest.param(*c.values, id=f"{prefix}:{c.id}", marks=c.marks) for c in cases]


def case(id: str, call: Callable[[], Any], error: type[Exception], names: str, *marks: Any) -> Any:
    return pytest.param(call, error, names, id=id, marks=marks)


# --------------------------------------------------------------------------- 1. component options in a spec
COMPONENT_OPTIONS = [
    # types: refused when the spec is read, never coerced
    case("mixture-components-text", model(prior={"name": "mixture", "components": "ten"}), ConfigError, "components"),
    case("mixture-components-2.7", model(prior={"name": "mixture", "components": 2.7}), ConfigError, "components"),
    case("mixture-components-2.0", model(prior={"name": "mixture", "components": 2.0}), ConfigError, "components"),
    case("mixture-components-bool", model(prior={"name": "mixture", "components": True}), ConfigError, "components"),
    case("mixture-components-list", model(prior={"name": "mixture", "components": [3]}), ConfigError, "components"),
    case("mixture-components-null", model(prior={"name": "mixture", "components": None}), ConfigError, "components"),
    case("mixture-init_spread-text", model(prior={"name": "mixture", "init_spread": "2"}), ConfigError, "init_spread"),
    case("mixture-init_spread-nan", model(prior={"name": "mixture", "init_spread": NAN}), ConfigError, "init_spread"),
    case("vamp-components-text", model(prior={"name": "vamp", "components": "5"}), ConfigError, "components"),
    case("vamp-components-5.0", model(prior={"name": "vamp", "components": 5.0}), ConfigError, "components"),
    case("student_t-df-text", model(prior={"name": "student_t", "df": "x"}), ConfigError, "df"),
    case("student_t-df-nan", model(prior={"name": "student_t", "df": NAN}), ConfigError, "df"),
    case("student_t-df-inf", model(prior={"name": "student_t", "df": INF}), ConfigError, "df"),
    case("student_t-scale-text", model(prior={"name": "student_t", "scale": "1"}), ConfigError, "scale"),
    case("laplace-prior-scale-text", model(prior={"name": "laplace", "scale": "0.5"}), ConfigError, "scale"),
    case("laplace-prior-scale-inf", model(prior={"name": "laplace", "scale": INF}), ConfigError, "scale"),
    case("learnable_normal-init_scale-text", model(prior={"name": "learnable_normal", "init_scale": "1"}), ConfigError, "init_scale"),
    case("learnable_normal-init_scale-nan", model(prior={"name": "learnable_normal", "init_scale": NAN}), ConfigError, "init_scale"),
    case("gaussian-sigma-text", model(likelihood={"name": "gaussian", "sigma": "0.1"}), ConfigError, "sigma"),
    case("gaussian-sigma-inf", model(likelihood={"name": "gaussian", "sigma": INF}), ConfigError, "sigma"),
    case("gaussian-sigma-nan", model(likelihood={"name": "gaussian", "sigma": NAN}), ConfigError, "sigma"),
    case("gaussian-sigma-bool", model(likelihood={"name": "gaussian", "sigma": True}), ConfigError, "sigma"),
    case("gaussian_learned-shared-text", model(likelihood={"name": "gaussian_learned", "shared": "yes"}), ConfigError, "shared"),
    case("gaussian_learned-shared-1", model(likelihood={"name": "gaussian_learned", "shared": 1}), ConfigError, "shared"),
    case("gaussian_learned-init_sigma-text", model(likelihood={"name": "gaussian_learned", "init_sigma": "0.1"}), ConfigError, "init_sigma"),
    case("laplace-likelihood-scale-text", model(likelihood={"name": "laplace", "scale": "1"}), ConfigError, "scale"),
    case("laplace-likelihood-init_scale-nan", model(likelihood={"name": "laplace", "init_scale": NAN}), ConfigError, "init_scale"),
    case("lowrank-rank-text", model(guide={"name": "lowrank_normal", "rank": "two"}), ConfigError, "rank"),
    case("lowrank-rank-1.5", model(guide={"name": "lowrank_normal", "rank": 1.5}), ConfigError, "rank"),
    case("lowrank-rank-bool", model(guide={"name": "lowrank_normal", "rank": True}), ConfigError, "rank"),
    case("mlp-hidden-text", model(encoder={"name": "mlp", "hidden": "200"}), ConfigError, "hidden"),
    case("mlp-hidden-text-item", model(encoder={"name": "mlp", "hidden": [200, "200"]}), ConfigError, "hidden"),
    case("mlp-hidden-float-item", model(decoder={"name": "mlp", "hidden": [2.5]}), ConfigError, "hidden"),
    case("mlp-hidden-float", model(decoder={"name": "mlp", "hidden": 2.5}), ConfigError, "hidden"),
    case("mlp-hidden-mapping", model(decoder={"name": "mlp", "hidden": {"a": 1}}), ConfigError, "hidden"),
    case("mlp-activation-number", model(encoder={"name": "mlp", "activation": 5}), ConfigError, "activation"),
    case("conv-channels-text", model(encoder={"name": "conv", "channels": "32"}), ConfigError, "channels"),
    case("conv-channels-float-item", model(encoder={"name": "conv", "channels": [32.0]}), ConfigError, "channels"),
    case("linear-bias-text", model(encoder={"name": "linear", "bias": "true"}), ConfigError, "bias"),
    case("unknown-option", model(prior={"name": "mixture", "compnents": 3}), ConfigError, "compnents"),
    case("option-of-optionless-prior", model(prior={"name": "normal", "scale": 1.0}), ConfigError, "scale"),
    case("component-name-number", model(prior={"name": 5}), ConfigError, "prior"),
    case("component-name-empty", model(prior={"name": ""}), ConfigError, "prior"),
    case("component-as-list", model(prior=["mixture"]), ConfigError, "prior"),
    case("component-without-name", model(likelihood={"sigma": 1.0}), ConfigError, "likelihood"),
    case("component-options-not-mapping", model(prior={"name": "mixture", "options": 5}), ConfigError, "options"),
    case("unknown-prior", model(prior="gauss"), ConfigError, "prior"),
    case("unknown-likelihood", model(likelihood="bernouli"), ConfigError, "likelihood"),
    case("unknown-guide", model(guide="diag"), ConfigError, "guide"),
    case("unknown-network", model(encoder="transformer"), ConfigError, "network"),
    case("latent_dim-text", model(latent_dim="2"), ConfigError, "latent_dim"),
    case("latent_dim-0", model(latent_dim=0), ConfigError, "latent_dim"),
    case("latent_dim-2.0", model(latent_dim=2.0), ConfigError, "latent_dim"),
    case("latent_dim-bool", model(latent_dim=True), ConfigError, "latent_dim"),
    case("latent_dim-negative", model(latent_dim=-3), ConfigError, "latent_dim"),
    case("program-misspelled", model(program="vea"), ConfigError, "program"),
    case("program-number", model(program=5), ConfigError, "program"),
    case("model-unknown-key", model(latnt_dim=2), ConfigError, "latnt_dim"),
    # values: refused when the component is built (still before any data is read)
    case("mixture-components-0", model(prior={"name": "mixture", "components": 0}), ConfigError, "components"),
    case("mixture-components-negative", model(prior={"name": "mixture", "components": -2}), ConfigError, "components"),
    case("vamp-components-0", model(prior={"name": "vamp", "components": 0}), ConfigError, "components"),
    case("student_t-df-0", model(prior={"name": "student_t", "df": 0}), ConfigError, "df"),
    case("student_t-df-negative", model(prior={"name": "student_t", "df": -1.0}), ConfigError, "df"),
    case("student_t-scale-0", model(prior={"name": "student_t", "scale": 0}), ConfigError, "scale"),
    case("laplace-prior-scale-negative", model(prior={"name": "laplace", "scale": -1}), ConfigError, "scale"),
    case("learnable_normal-init_scale-0", model(prior={"name": "learnable_normal", "init_scale": 0}), ConfigError, "init_scale"),
    case("gaussian-sigma-0", model(likelihood={"name": "gaussian", "sigma": 0}), ConfigError, "sigma"),
    case("gaussian-sigma-negative", model(likelihood={"name": "gaussian", "sigma": -0.1}), ConfigError, "sigma"),
    case("gaussian_learned-init_sigma-below-floor", model(likelihood={"name": "gaussian_learned", "init_sigma": 5e-4}), ConfigError, "init_sigma"),
    case("laplace-likelihood-scale-0", model(likelihood={"name": "laplace", "scale": 0}), ConfigError, "scale"),
    case("laplace-likelihood-init_scale-0", model(likelihood={"name": "laplace", "init_scale": 0}), ConfigError, "init_scale"),
    case("lowrank-rank-0", model(guide={"name": "lowrank_normal", "rank": 0}), ConfigError, "rank"),
    case("lowrank-rank-50-latent-2", model(guide={"name": "lowrank_normal", "rank": 50}), ConfigError, "rank"),
    case("lowrank-rank-3-latent-2", model(guide={"name": "lowrank_normal", "rank": 3}), ConfigError, "rank"),
    case("mlp-hidden-0", model(encoder={"name": "mlp", "hidden": [0]}), ConfigError, "hidden"),
    case("mlp-hidden-negative", model(decoder={"name": "mlp", "hidden": -5}), ConfigError, "hidden"),
    case("mlp-activation-unknown", model(encoder={"name": "mlp", "activation": "relux"}), ConfigError, "activation"),
    case("conv-channels-empty", model(encoder={"name": "conv", "channels": []}), ConfigError, "channels"),
    case("conv-channels-0", model(decoder={"name": "conv", "channels": [0]}), ConfigError, "channels"),
    case("conv-on-rows", lambda: build_vae(data_dim=10, encoder="conv"), ConfigError, "conv"),
    # flow guides (pyro_vae/flows.py)
    case("iaf-num_flows-0", model(guide={"name": "iaf", "num_flows": 0}), ConfigError, "num_flows"),
    case("iaf-num_flows-text", model(guide={"name": "iaf", "num_flows": "two"}), ConfigError, "num_flows"),
    case("iaf-hidden-text", model(guide={"name": "iaf", "hidden": "64"}), ConfigError, "hidden"),
    case("iaf-stable-text", model(guide={"name": "iaf", "stable": "yes"}), ConfigError, "stable"),
    case("planar-hidden-0", model(guide={"name": "planar", "hidden": [0]}), ConfigError, "hidden"),
    case("planar-context_dim-0", model(guide={"name": "planar", "context_dim": 0}), ConfigError, "context_dim"),
    case("householder-num_flows-above-latent_dim", model(guide={"name": "householder", "num_flows": 3}), ConfigError, "num_flows"),
    case("sylvester-reflections-0", model(guide={"name": "sylvester", "reflections": 0}), ConfigError, "reflections"),
    case("spline-count_bins-1", model(guide={"name": "spline", "count_bins": 1}), ConfigError, "count_bins"),
    case("spline-bound-negative", model(guide={"name": "spline", "bound": -1.0}), ConfigError, "bound"),
    case("flow-unknown-option", model(guide={"name": "iaf", "flows": 2}), ConfigError, "flows"),
    # the hierarchical program (pyro_vae/hierarchical.py)
    case("hierarchical-top_latent_dim-0", model(program={"name": "hierarchical", "top_latent_dim": 0}), ConfigError, "top_latent_dim"),
    case("hierarchical-top_latent_dim-text", model(program={"name": "hierarchical", "top_latent_dim": "50"}), ConfigError, "top_latent_dim"),
    case("hierarchical-top_hidden-0", model(program={"name": "hierarchical", "top_hidden": [0]}), ConfigError, "top_hidden"),
    case("hierarchical-top_hidden-text", model(program={"name": "hierarchical", "top_hidden": "100"}), ConfigError, "top_hidden"),
    case("hierarchical-inference-unknown", model(program={"name": "hierarchical", "inference": "sideways"}), ConfigError, "inference"),
    case("hierarchical-top_activation-unknown", model(program={"name": "hierarchical", "top_activation": "relux"}), ConfigError, "activation"),
    case("hierarchical-vamp-prior", model(program="hierarchical", prior="vamp"), ConfigError, "vamp"),
]

# --------------------------------------------------------------------------- 2. data spec
DATA_SPEC = [
    case("dataset-number", data(dataset=5), ConfigError, "data.dataset"),
    case("dataset-null", data(dataset=None), ConfigError, "data.dataset"),
    case("dataset-empty", data(dataset=""), ConfigError, "data.dataset"),
    case("dataset-list", data(dataset=["digits"]), ConfigError, "data.dataset"),
    case("data_dir-number", data(data_dir=5), ConfigError, "data.data_dir"),
    case("data_dir-list", data(data_dir=["a"]), ConfigError, "data.data_dir"),
    case("binarize-unknown", data(binarize="yes"), ConfigError, "binarize"),
    case("binarize-bool", data(binarize=True), ConfigError, "binarize"),
    case("val_fraction-text", data(val_fraction="0.1"), ConfigError, "data.val_fraction"),
    case("val_fraction-nan", data(val_fraction=NAN), ConfigError, "data.val_fraction"),
    case("val_fraction-1", data(val_fraction=1), ConfigError, "data.val_fraction"),
    case("val_fraction-negative", data(val_fraction=-0.1), ConfigError, "data.val_fraction"),
    case("val_fraction-bool", data(val_fraction=True), ConfigError, "data.val_fraction"),
    case("test_fraction-inf", data(test_fraction=INF), ConfigError, "data.test_fraction"),
    case("test_fraction-text", data(test_fraction="0.2"), ConfigError, "data.test_fraction"),
    case("fractions-leave-nothing", data(val_fraction=0.5, test_fraction=0.5), ConfigError, "val_fraction"),
    case("max_train-2.5", data(max_train=2.5), ConfigError, "data.max_train"),
    case("max_train-0", data(max_train=0), ConfigError, "data.max_train"),
    case("max_train-negative", data(max_train=-1), ConfigError, "data.max_train"),
    case("max_train-text", data(max_train="100"), ConfigError, "data.max_train"),
    case("max_train-bool", data(max_train=True), ConfigError, "data.max_train"),
    case("data-unknown-key", data(datset="digits"), ConfigError, "datset"),
    case("DataSpec-direct", lambda: DataSpec(max_train=2.5), ConfigError, "data.max_train"),
]

# --------------------------------------------------------------------------- 3. train spec
TRAIN_SPEC = [
    case("elbo-number", train(elbo=5), ConfigError, "train.elbo"),
    case("elbo-empty", train(elbo=""), ConfigError, "train.elbo"),
    case("elbo-unknown", train(elbo="elbo_of_dreams"), ConfigError, "train.elbo"),
    case("optimizer-null", train(optimizer=None), ConfigError, "train.optimizer"),
    case("optimizer-unknown", train(optimizer="sgdd"), ConfigError, "train.optimizer"),
    case("lr_schedule-number", train(lr_schedule=3), ConfigError, "train.lr_schedule"),
    case("lr_schedule-unknown", train(lr_schedule="linear"), ConfigError, "train.lr_schedule"),
    case("lr-text", train(lr="1e-3"), ConfigError, "train.lr"),
    case("lr-0", train(lr=0), ConfigError, "train.lr"),
    case("lr-negative", train(lr=-1), ConfigError, "train.lr"),
    case("lr-nan", train(lr=NAN), ConfigError, "train.lr"),
    case("lr-inf", train(lr=INF), ConfigError, "train.lr"),
    case("lr-bool", train(lr=True), ConfigError, "train.lr"),
    case("lr_final-above-lr", train(lr_final=1.0, lr_schedule="cosine"), ConfigError, "train.lr_final"),
    case("lr_final-nan", train(lr_final=NAN, lr_schedule="cosine"), ConfigError, "train.lr_final"),
    case("lr_final-text", train(lr_final="x", lr_schedule="cosine"), ConfigError, "train.lr_final"),
    case("lr_final-with-constant", train(lr_final=1e-5), ConfigError, "train.lr_final"),
    case("weight_decay-negative", train(weight_decay=-0.1), ConfigError, "train.weight_decay"),
    case("weight_decay-nan", train(weight_decay=NAN), ConfigError, "train.weight_decay"),
    case("weight_decay-text", train(weight_decay="0.1"), ConfigError, "train.weight_decay"),
    case("clip_norm-0", train(clip_norm=0), ConfigError, "train.clip_norm"),
    case("clip_norm-inf", train(clip_norm=INF), ConfigError, "train.clip_norm"),
    case("batch_size-0", train(batch_size=0), ConfigError, "train.batch_size"),
    case("batch_size-2.5", train(batch_size=2.5), ConfigError, "train.batch_size"),
    case("batch_size-text", train(batch_size="100"), ConfigError, "train.batch_size"),
    case("batch_size-bool", train(batch_size=True), ConfigError, "train.batch_size"),
    case("epochs-0", train(epochs=0), ConfigError, "train.epochs"),
    case("epochs-negative", train(epochs=-1), ConfigError, "train.epochs"),
    case("epochs-1.5", train(epochs=1.5), ConfigError, "train.epochs"),
    case("epochs-null", train(epochs=None), ConfigError, "train.epochs"),
    case("num_particles-0", train(num_particles=0), ConfigError, "train.num_particles"),
    case("num_particles-text", train(num_particles="5"), ConfigError, "train.num_particles"),
    case("kl_warmup_epochs-negative", train(kl_warmup_epochs=-1), ConfigError, "train.kl_warmup_epochs"),
    case("kl_warmup_epochs-1.5", train(kl_warmup_epochs=1.5), ConfigError, "train.kl_warmup_epochs"),
    case("patience-0", train(patience=0), ConfigError, "train.patience"),
    case("patience-2.5", train(patience=2.5), ConfigError, "train.patience"),
    case("patience-text", train(patience="3"), ConfigError, "train.patience"),
    case("seed-negative", train(seed=-1), ConfigError, "train.seed"),
    case("seed-2**32", train(seed=2**32), ConfigError, "train.seed"),
    case("seed-1.5", train(seed=1.5), ConfigError, "train.seed"),
    case("seed-text", train(seed="0"), ConfigError, "train.seed"),
    case("validate_every_step-text", train(validate_every_step="yes"), ConfigError, "train.validate_every_step"),
    case("validate_every_step-1", train(validate_every_step=1), ConfigError, "train.validate_every_step"),
    case("train-unknown-key", train(epoch=3), ConfigError, "epoch"),
    case("device-gpu", train(device="gpu"), ConfigError, "train.device"),
    case("device-cuda-x", train(device="cuda:x"), ConfigError, "train.device"),
    case("device-number", train(device=0), ConfigError, "train.device"),
    case("mixed_precision-text", train(mixed_precision="yes"), ConfigError, "train.mixed_precision"),
    case("TrainSpec-direct", lambda: TrainSpec(lr=INF), ConfigError, "train.lr"),
    case("check_train_spec-not-a-spec", lambda: check_train_spec({"epochs": 1}), ConfigError, "train"),
]


@pytest.mark.parametrize("call, error, names", group("component", COMPONENT_OPTIONS) + group("data-spec", DATA_SPEC)
                         + group("train-spec", TRAIN_SPEC))
def test_bad_spec_values_are_refused(call, error, names):
    assert_refused(call, error, names)


# --------------------------------------------------------------------------- 4. config files
TINY_YAML = yaml.safe_dump({"model": TINY_MODEL})


def yaml_model(**model: Any) -> str:
    return yaml.safe_dump({"model": {**TINY_MODEL, **model}})


CONFIG_FILES = [
    pytest.param("c.yaml", yaml_model(prior={"name": "mixture", "components": "ten"}), ConfigError, "components", id="yaml-components-ten"),
    pytest.param("c.yaml", "model:\n  prior: {name: mixture, components: 2.7}\n", ConfigError, "components", id="yaml-components-2.7"),
    pytest.param("c.yaml", "model:\n  prior: {name: vamp, components: '5'}\n", ConfigError, "components", id="yaml-vamp-components-quoted"),
    pytest.param("c.yaml", "model:\n  prior: {name: student_t, df: x}\n", ConfigError, "df", id="yaml-df-x"),
    pytest.param("c.yaml", "model:\n  guide: {name: lowrank_normal, rank: two}\n", ConfigError, "rank", id="yaml-rank-two"),
    pytest.param("c.yaml", "model:\n  latent_dim: 2\n  guide: {name: lowrank_normal, rank: 50}\n", ConfigError, "rank", id="yaml-rank-50-latent-2"),
    pytest.param("c.yaml", "model:\n  likelihood: {name: gaussian, sigma: '0.1'}\n", ConfigError, "sigma", id="yaml-sigma-quoted"),
    pytest.param("c.yaml", "model:\n  likelihood: {name: gaussian, sigma: .inf}\n", ConfigError, "sigma", id="yaml-sigma-inf"),
    pytest.param("c.yaml", "model:\n  latent_dim: '2'\n", ConfigError, "latent_dim", id="yaml-latent_dim-quoted"),
    pytest.param("c.yaml", "data:\n  max_train: 2.5\n", ConfigError, "max_train", id="yaml-max_train-2.5"),
    pytest.param("c.yaml", "data:\n  dataset: 5\n", ConfigError, "dataset", id="yaml-dataset-5"),
    pytest.param("c.yaml", "data:\n  data_dir: 5\n", ConfigError, "data_dir", id="yaml-data_dir-5"),
    pytest.param("c.yaml", "train:\n  lr: 1e-3\n", ConfigError, "train.lr", id="yaml-lr-1e-3-is-text"),
    pytest.param("c.yaml", "train:\n  epochs: ten\n", ConfigError, "train.epochs", id="yaml-epochs-ten"),
    pytest.param("c.yaml", "train:\n  validate_every_step: maybe\n", ConfigError, "validate_every_step", id="yaml-flag-maybe"),
    pytest.param("c.yaml", "model: 5\n", ConfigError, "model", id="yaml-model-scalar"),
    pytest.param("c.yaml", "data: [1, 2]\n", ConfigError, "data", id="yaml-data-list"),
    pytest.param("c.yaml", "train: fast\n", ConfigError, "train", id="yaml-train-text"),
    pytest.param("c.yaml", "- model\n- train\n", ConfigError, "mapping", id="yaml-top-level-list"),
    pytest.param("c.yaml", "5\n", ConfigError, "mapping", id="yaml-top-level-scalar"),
    pytest.param("c.yaml", "modle: {}\n", ConfigError, "modle", id="yaml-unknown-top-level-key"),
    pytest.param("c.yaml", "train:\n  1: 2\n  epochs: 3\n", ConfigError, "1", id="yaml-number-key"),
    pytest.param("c.yaml", "model: {latent_dim: 2\n", ConfigError, "c.yaml", id="yaml-syntax-error"),
    pytest.param("c.yaml", "model:\n\tlatent_dim: 2\n", ConfigError, "c.yaml", id="yaml-tab-indent"),
    pytest.param("c.toml", "[model]\nlatent_dim = \n", ConfigError, "c.toml", id="toml-syntax-error"),
    pytest.param("c.toml", "[model.prior]\nname = \"mixture\"\ncomponents = \"ten\"\n", ConfigError, "components", id="toml-components-text"),
    pytest.param("c.toml", "[train]\nlr = \"0.001\"\n", ConfigError, "train.lr", id="toml-lr-text"),
    pytest.param("c.toml", "[train]\nepochs = 1.5\n", ConfigError, "train.epochs", id="toml-epochs-1.5"),
    pytest.param("c.toml", "[trian]\nepochs = 1\n", ConfigError, "trian", id="toml-unknown-section"),
    pytest.param("c.toml", "[data]\nval_fraction = nan\n", ConfigError, "val_fraction", id="toml-val_fraction-nan"),
    pytest.param("c.json", "{\"model\": {\"latent_dim\": 2,}}", ConfigError, "c.json", id="json-syntax-error"),
    pytest.param("c.json", "{\"model\": {\"latent_dim\": \"2\"}}", ConfigError, "latent_dim", id="json-latent_dim-text"),
    pytest.param("c.json", "{\"train\": {\"epochs\": null}}", ConfigError, "train.epochs", id="json-epochs-null"),
    pytest.param("c.json", "[1, 2]", ConfigError, "mapping", id="json-top-level-list"),
    pytest.param("c.json", "{\"data\": {\"val_fraction\": 1.2}}", ConfigError, "val_fraction", id="json-val_fraction-1.2"),
    pytest.param("c.json", "{\"model\": {\"guide\": {\"name\": \"lowrank_normal\", \"rank\": 2.0}}}", ConfigError, "rank", id="json-rank-2.0"),
    pytest.param("c.txt", "model: {}\n", ConfigError, "c.txt", id="unknown-extension"),
    pytest.param("c.yaml", "\udcff", ConfigError, "c.yaml", id="yaml-not-text"),
]


@pytest.mark.parametrize("name, text, error, names", group("config", CONFIG_FILES))
def test_bad_config_files_are_refused(tmp_path, name, text, error, names):
    path = tmp_path / name
    if text == "\udcff":
        path.write_bytes(b"\xff\xfe\x00model")
    else:
        path.write_text(text)
    assert_refused(lambda: from_dict_spec(load_spec(path)), error, names)


def from_dict_spec(spec: Any) -> Any:
    check_train_spec(spec.train)
    return build_program(spec.model, data_dim=64, image_shape=(8, 8), seed=0)


# --------------------------------------------------------------------------- 5. the Python API
LOAD_DATASET = [
    case("source-ndarray", lambda: load_dataset(np.zeros((10, 3))), ConfigError, "source"),
    case("source-tensor", lambda: load_dataset(torch.zeros(10, 3)), ConfigError, "source"),
    case("source-int", lambda: load_dataset(5), ConfigError, "source"),
    case("source-None", lambda: load_dataset(None), ConfigError, "source"),
    case("source-list", lambda: load_dataset(["digits"]), ConfigError, "source"),
    case("source-empty", lambda: load_dataset(""), ConfigError, "source"),
    case("source-unknown-name", lambda: load_dataset("digitz"), DataError, "digitz"),
    case("source-missing-file", lambda: load_dataset(files_dir() / "missing.npy"), DataError, "missing.npy"),
    case("source-folder", lambda: load_dataset(files_dir()), DataError, str(files_dir())),
    case("source-wrong-extension", lambda: load_dataset(text_file("x.txt", "1,2\n")), DataError, "x.txt"),
    case("seed-negative", lambda: load_dataset("digits", seed=-1), ConfigError, "seed"),
    case("seed-1.5", lambda: load_dataset("digits", seed=1.5), ConfigError, "seed"),
    case("seed-text", lambda: load_dataset("digits", seed="0"), ConfigError, "seed"),
    case("seed-2**32", lambda: load_dataset("digits", seed=2**32), ConfigError, "seed"),
    case("binarize-unknown", lambda: load_dataset("digits", binarize="yes"), ConfigError, "binarize"),
    case("binarize-number", lambda: load_dataset("digits", binarize=5), ConfigError, "binarize"),
    case("binarize-static-digits", lambda: load_dataset("digits", binarize="static"), ConfigError, "binarize"),
    case("val_fraction-text", lambda: load_dataset("digits", val_fraction="0.1"), ConfigError, "val_fraction"),
    case("val_fraction-nan", lambda: load_dataset("digits", val_fraction=NAN), ConfigError, "val_fraction"),
    case("val_fraction-1", lambda: load_dataset("digits", val_fraction=1.0), ConfigError, "val_fraction"),
    case("test_fraction-negative", lambda: load_dataset("digits", test_fraction=-0.5), ConfigError, "test_fraction"),
    case("fractions-sum-1", lambda: load_dataset("digits", val_fraction=0.5, test_fraction=0.5), ConfigError, "val_fraction"),
    case("max_train-2.5", lambda: load_dataset("digits", max_train=2.5), ConfigError, "max_train"),
    case("max_train-0", lambda: load_dataset("digits", max_train=0), ConfigError, "max_train"),
    case("max_train-text", lambda: load_dataset("digits", max_train="10"), ConfigError, "max_train"),
    case("download-text", lambda: load_dataset("digits", download="yes"), ConfigError, "download"),
    case("data_dir-number", lambda: load_dataset("digits", data_dir=5), ConfigError, "data_dir"),
    case("csv-1-row", lambda: load_dataset(rows_csv(1)), DataError, "rows"),
    case("csv-2-rows", lambda: load_dataset(rows_csv(2)), DataError, "test_fraction"),
    case("csv-4-rows-no-val", lambda: load_dataset(rows_csv(4)), DataError, "val_fraction"),
    case("csv-6-rows-1-test-row", lambda: load_dataset(rows_csv(6), val_fraction=0.2, test_fraction=0.1), DataError, "test_fraction"),
    case("csv-nan", lambda: load_dataset(text_file("nan.csv", "1,2\nnan,3\n4,5\n")), DataError, "NaN"),
    case("csv-text-cell", lambda: load_dataset(text_file("oops.csv", "1,2\n3,oops\n")), DataError, "oops.csv"),
    case("csv-header-only", lambda: load_dataset(text_file("head.csv", "a,b,c\n")), DataError, "head.csv"),
    case("csv-empty", lambda: load_dataset(text_file("empty.csv", "")), DataError, "empty.csv"),
    case("npy-1-d", lambda: load_dataset(npy("flat.npy", np.ones(5))), DataError, "flat.npy"),
    case("npy-object", lambda: load_dataset(npy("obj.npy", np.array([{"a": 1}, None], dtype=object))), DataError, "obj.npy"),
    case("npy-no-rows", lambda: load_dataset(npy("none.npy", np.zeros((0, 3)))), DataError, "none.npy"),
    case("npy-inf", lambda: load_dataset(npy("inf.npy", np.array([[1.0, np.inf]] * 20))), DataError, "infinite"),
    case("npy-grey-threshold-out-of-range", lambda: load_dataset(npy("big.npy", np.full((20, 2), 3.0)), binarize="threshold"), DataError, "binarize"),
]

BUILD = [
    case("data_dim-0", lambda: build_vae(data_dim=0), ConfigError, "data_dim"),
    case("data_dim-negative", lambda: build_vae(data_dim=-4), ConfigError, "data_dim"),
    case("data_dim-text", lambda: build_vae(data_dim="64"), ConfigError, "data_dim"),
    case("data_dim-float", lambda: build_vae(data_dim=64.0), ConfigError, "data_dim"),
    case("data_dim-bool", lambda: build_vae(data_dim=True), ConfigError, "data_dim"),
    case("data_dim-None", lambda: build_vae(data_dim=None), ConfigError, "data_dim"),
    case("image_shape-mismatch", lambda: build_vae(data_dim=64, image_shape=(8, 9)), DataError, "image_shape"),
    case("image_shape-int", lambda: build_vae(data_dim=64, image_shape=64), ConfigError, "image_shape"),
    case("image_shape-text", lambda: build_vae(data_dim=64, image_shape="8x8"), ConfigError, "image_shape"),
    case("image_shape-zero", lambda: build_vae(data_dim=0, image_shape=(8, 0)), ConfigError, "data_dim"),
    case("data_sample-ndarray", lambda: build_vae(data_dim=64, prior="vamp", data_sample=np.zeros((3, 64))), DataError, "data_sample"),
    case("data_sample-width", lambda: build_vae(data_dim=64, prior="vamp", data_sample=torch.zeros(3, 10)), DataError, "data_sample"),
    case("seed-negative", lambda: build_vae(data_dim=64, seed=-1), ConfigError, "seed"),
    case("seed-text", lambda: build_vae(data_dim=64, seed="0"), ConfigError, "seed"),
    case("seed-float", lambda: build_vae(data_dim=64, seed=1.5), ConfigError, "seed"),
    case("misspelled-keyword", lambda: build_vae(data_dim=64, latnt_dim=3), ConfigError, "latnt_dim"),
    case("misspelled-key-in-mapping", lambda: build_vae({"prio": "normal"}, data_dim=64), ConfigError, "prio"),
    case("spec-number", lambda: build_vae(5, data_dim=64), ConfigError, "spec"),
    case("spec-text", lambda: build_vae("vae", data_dim=64), ConfigError, "spec"),
    case("sigma-inf", lambda: build_vae(data_dim=64, likelihood={"name": "gaussian", "sigma": INF}), ConfigError, "sigma"),
    case("sigma-text", lambda: build_vae(data_dim=64, likelihood={"name": "gaussian", "sigma": "0.1"}), ConfigError, "sigma"),
    case("df-nan", lambda: build_vae(data_dim=64, prior={"name": "student_t", "df": NAN}), ConfigError, "df"),
    case("rank-above-latent_dim", lambda: build_vae(data_dim=64, latent_dim=2, guide={"name": "lowrank_normal", "rank": 50}), ConfigError, "rank"),
    case("components-2.7", lambda: build_vae(data_dim=64, prior={"name": "mixture", "components": 2.7}), ConfigError, "components"),
    case("latent_dim-keyword-0", lambda: build_vae(data_dim=64, latent_dim=0), ConfigError, "latent_dim"),
    case("program-spec-not-a-spec", lambda: build_program(5, data_dim=64), ConfigError, "spec"),
    case("program-data_dim-0", lambda: build_program(ModelSpec(), data_dim=0), ConfigError, "data_dim"),
    case("program-ppca-data_dim-text", lambda: build_program(ModelSpec(program="ppca"), data_dim="5"), ConfigError, "data_dim"),
    case("program-seed-negative", lambda: build_program(ModelSpec(), data_dim=64, seed=-2), ConfigError, "seed"),
    case("program-unknown-key", lambda: build_program({"latent": 2}, data_dim=64), ConfigError, "latent"),
    case("sample-n-0", lambda: vae().sample(0), ConfigError, "n"),
    case("sample-n-negative", lambda: vae().sample(-3), ConfigError, "n"),
    case("sample-n-float", lambda: vae().sample(2.5), ConfigError, "n"),
]

TRAIN_FAST = TrainSpec(epochs=1, batch_size=50)

SVI_FIT = [
    case("device-gpu", lambda: svi.fit(vae(), digits(), TRAIN_FAST, device="gpu", progress=False), ConfigError, "device"),
    case("device-cuda-absent", lambda: svi.fit(vae(), digits(), TRAIN_FAST, device="cuda", progress=False), ConfigError,
         "device", *([pytest.mark.skip("this machine has CUDA")] if torch.cuda.is_available() else [])),
    case("val-with-splits", lambda: svi.fit(vae(), digits(), TRAIN_FAST, val=digits().val, progress=False), ConfigError, "val"),
    case("data-dataset-wrong-width", lambda: svi.fit(vae(), torch.utils.data.TensorDataset(torch.rand(200, 5)), TRAIN_FAST,
                                                     progress=False), DataError, "training rows"),
    case("train-unknown-key", lambda: svi.fit(vae(), digits(), {"epoch": 1}, progress=False), ConfigError, "epoch"),
    case("train-None", lambda: svi.fit(vae(), digits(), None, progress=False), ConfigError, "train"),
    case("train-text", lambda: svi.fit(vae(), digits(), "fast", progress=False), ConfigError, "train"),
    case("train-bad-value", lambda: svi.fit(vae(), digits(), {"lr": "x"}, progress=False), ConfigError, "train.lr"),
    case("train-unknown-elbo", lambda: svi.fit(vae(), digits(), {"elbo": "nope"}, progress=False), ConfigError, "train.elbo"),
    case("data-tensor", lambda: svi.fit(vae(), digits().train, TRAIN_FAST, progress=False), DataError, "data"),
    case("data-ndarray", lambda: svi.fit(vae(), digits().train.numpy(), TRAIN_FAST, progress=False), DataError, "data"),
    case("data-None", lambda: svi.fit(vae(), None, TRAIN_FAST, progress=False), DataError, "data"),
    case("data-dict", lambda: svi.fit(vae(), {"train": digits().train}, TRAIN_FAST, progress=False), DataError, "data"),
    case("vae-None", lambda: svi.fit(None, digits(), TRAIN_FAST, progress=False), ConfigError, "vae"),
    case("vae-plain-module", lambda: svi.fit(torch.nn.Linear(64, 2), digits(), TRAIN_FAST, progress=False), ConfigError, "vae"),
    case("batch_size-above-rows", lambda: svi.fit(vae(), digits(), TrainSpec(epochs=1, batch_size=1000), progress=False), ConfigError, "batch_size"),
    case("batch_size-above-rows-mapping", lambda: svi.fit(vae(), splits(torch.ones(3, 64)), {"batch_size": 4}, progress=False), ConfigError, "batch_size"),
    case("data-width", lambda: svi.fit(build_vae(data_dim=10, **TINY_MODEL), digits(), TRAIN_FAST, progress=False), DataError, "(N, 10)"),
    case("data-grey-under-bernoulli", lambda: svi.fit(vae(), grey_digits(), TRAIN_FAST, progress=False), DataError, "bernoulli"),
    case("max_seconds-0", lambda: svi.fit(vae(), digits(), TRAIN_FAST, max_seconds=0, progress=False), ConfigError, "max_seconds"),
    case("max_seconds-text", lambda: svi.fit(vae(), digits(), TRAIN_FAST, max_seconds="10", progress=False), ConfigError, "max_seconds"),
    case("max_seconds-nan", lambda: svi.fit(vae(), digits(), TRAIN_FAST, max_seconds=NAN, progress=False), ConfigError, "max_seconds"),
    case("resume-text", lambda: svi.fit(vae(), digits(), TRAIN_FAST, resume="yes", progress=False), ConfigError, "resume"),
    case("allow_data_change-text", lambda: svi.fit(vae(), digits(), TRAIN_FAST, allow_data_change="no", progress=False), ConfigError, "allow_data_change"),
    case("progress-text", lambda: svi.fit(vae(), digits(), TRAIN_FAST, progress="no"), ConfigError, "progress"),
    case("state-text", lambda: svi.fit(vae(), digits(), TRAIN_FAST, state="last", progress=False), ConfigError, "state"),
    case("run_dir-number", lambda: svi.fit(vae(), digits(), TRAIN_FAST, run_dir=5, progress=False), ConfigError, "run_dir"),
    case("rws-planar-flow", lambda: svi.fit(vae(guide="planar"), digits(), TrainSpec(epochs=1, batch_size=50, elbo="rws"), progress=False), UnsupportedModelError, "rws"),
]

X = lambda: digits().test[:20]  # noqa: E731 - twenty 0/1 test rows


def ll(x: Any, **kwargs: Any) -> Callable[[], Any]:
    """evaluate.log_likelihood of a tiny VAE on x (a callable, for the table)."""
    def call():
        v = vae()
        rows = x() if callable(x) else x
        return evaluate.log_likelihood(v.model, v.guide, rows, **{"num_samples": 5, "progress": False, **kwargs})
    return call


def ev(x: Any, **kwargs: Any) -> Callable[[], Any]:
    """evaluate.evaluate_vae of a tiny VAE on x."""
    def call():
        rows = x() if callable(x) else x
        return evaluate.evaluate_vae(vae(), rows, **{"num_samples": 5, "elbo_particles": 2, "kl_samples": 2, "progress": False, **kwargs})
    return call


EVALUATE = [
    case("ll-wrong-width", ll(torch.zeros(3, 10)), DataError, "x"),
    case("ll-ndarray", ll(lambda: X().numpy()), DataError, "x"),
    case("ll-list", ll(lambda: X().tolist()), DataError, "x"),
    case("ll-None", ll(None), DataError, "x"),
    case("ll-nan-rows", ll(lambda: with_nan(X())), DataError, "x"),
    case("ll-inf-rows", ll(lambda: with_inf(X())), DataError, "x"),
    case("ll-grey-under-bernoulli", ll(torch.full((3, 64), 0.5)), DataError, "x"),
    case("ll-int64-rows", ll(torch.ones(3, 64, dtype=torch.int64)), DataError, "x"),
    case("ll-bool-rows", ll(torch.ones(3, 64, dtype=torch.bool)), DataError, "x"),
    case("ll-1-d", ll(torch.ones(64)), DataError, "x"),
    case("ll-3-d", ll(torch.ones(2, 8, 8)), DataError, "x"),
    case("ll-no-rows", ll(torch.ones(0, 64)), DataError, "x"),
    case("ll-num_samples-0", ll(X, num_samples=0), ConfigError, "num_samples"),
    case("ll-num_samples-2.5", ll(X, num_samples=2.5), ConfigError, "num_samples"),
    case("ll-num_samples-text", ll(X, num_samples="10"), ConfigError, "num_samples"),
    case("ll-batch_size-0", ll(X, batch_size=0), ConfigError, "batch_size"),
    case("ll-particle_batch-0", ll(X, particle_batch=0), ConfigError, "particle_batch"),
    case("ll-max_floats-nan", ll(X, max_floats=NAN), ConfigError, "max_floats"),
    case("ll-max_floats-0", ll(X, max_floats=0), ConfigError, "max_floats"),
    case("elbo-estimator-C", lambda: evaluate.elbo(vae().model, vae().guide, X(), estimator="C"), ConfigError, "estimator"),
    case("elbo-num_particles-0", lambda: evaluate.elbo(vae().model, vae().guide, X(), num_particles=0), ConfigError, "num_particles"),
    case("elbo-grey-rows", lambda: evaluate.elbo(vae().model, vae().guide, torch.full((3, 64), 0.5)), DataError, "x"),
    case("ev-wrong-width", ev(torch.zeros(3, 10)), DataError, "x"),
    case("ev-ndarray", ev(lambda: X().numpy()), DataError, "x"),
    case("ev-nan-rows", ev(lambda: with_nan(X())), DataError, "x"),
    case("ev-int64-rows", ev(torch.ones(3, 64, dtype=torch.int64)), DataError, "x"),
    case("ev-one-row", ev(lambda: X()[:1]), DataError, "x"),
    case("ev-num_samples-0", ev(X, num_samples=0), ConfigError, "num_samples"),
    case("ev-elbo_particles-0", ev(X, elbo_particles=0), ConfigError, "elbo_particles"),
    case("ev-kl_samples-0", ev(X, kl_samples=0), ConfigError, "kl_samples"),
    case("ev-batch_size-text", ev(X, batch_size="100"), ConfigError, "batch_size"),
    case("ev-threshold-nan", ev(X, threshold=NAN), ConfigError, "threshold"),
    case("ev-threshold-negative", ev(X, threshold=-1.0), ConfigError, "threshold"),
    case("ev-seed-text", ev(X, seed="0"), ConfigError, "seed"),
    case("ev-vae-None", lambda: evaluate.evaluate_vae(None, X()), ConfigError, "vae"),
]

SPEC = {"model": TINY_MODEL, "train": {"batch_size": 50}}

METHODS = [
    case("budget-text", lambda: Budget.parse("abc"), ConfigError, "budget"),
    case("budget-empty", lambda: Budget.parse(""), ConfigError, "budget"),
    case("budget-0s", lambda: Budget.parse("0s"), ConfigError, "seconds"),
    case("budget-negative", lambda: Budget.parse("-5s"), ConfigError, "budget"),
    case("budget-1.5epochs", lambda: Budget.parse("1.5epochs"), ConfigError, "epochs"),
    case("budget-0epochs", lambda: Budget.parse("0epochs"), ConfigError, "epochs"),
    case("budget-twice", lambda: Budget.parse("60s,30s"), ConfigError, "budget"),
    case("budget-inf-seconds", lambda: Budget.parse("1e400s"), ConfigError, "seconds"),
    case("budget-int", lambda: Budget.parse(5), ConfigError, "budget"),
    case("budget-None", lambda: Budget.parse(None), ConfigError, "budget"),
    case("Budget-empty", lambda: Budget(), ConfigError, "Budget"),
    case("Budget-seconds-text", lambda: Budget(seconds="5"), ConfigError, "seconds"),
    case("Budget-seconds-inf", lambda: Budget(seconds=INF), ConfigError, "seconds"),
    case("Budget-epochs-1.5", lambda: Budget(epochs=1.5), ConfigError, "epochs"),
    case("Budget-samples-0", lambda: Budget(samples=0), ConfigError, "samples"),
    case("Budget-epochs-bool", lambda: Budget(epochs=True), ConfigError, "epochs"),
    case("fit-method-unknown", lambda: method_fit(SPEC, digits(), method="nope", budget="1epochs"), ConfigError, "nope"),
    case("fit-method-number", lambda: method_fit(SPEC, digits(), method=5, budget="1epochs"), ConfigError, "method"),
    case("fit-method-list", lambda: method_fit(SPEC, digits(), method=["svi-trace"], budget="1epochs"), ConfigError, "method"),
    case("fit-data-tensor", lambda: method_fit(SPEC, digits().train, method="svi-trace", budget="1epochs"), DataError, "data"),
    case("fit-data-None", lambda: method_fit(SPEC, None, method="svi-trace", budget="1epochs"), DataError, "data"),
    case("fit-budget-int", lambda: method_fit(SPEC, digits(), method="svi-trace", budget=5), ConfigError, "budget"),
    case("fit-budget-text", lambda: method_fit(SPEC, digits(), method="svi-trace", budget="soon"), ConfigError, "budget"),
    case("fit-checkpoints-0", lambda: method_fit(SPEC, digits(), method="svi-trace", budget="1epochs", checkpoints=[0]), ConfigError, "checkpoints"),
    case("fit-checkpoints-1.5", lambda: method_fit(SPEC, digits(), method="svi-trace", budget="1epochs", checkpoints=[1.5]), ConfigError, "checkpoints"),
    case("fit-checkpoints-scalar", lambda: method_fit(SPEC, digits(), method="svi-trace", budget="1epochs", checkpoints=0.5), ConfigError, "checkpoints"),
    case("fit-options-unknown", lambda: method_fit(SPEC, digits(), method="map", budget="1epochs", options={"weight_dcay": 1}), ConfigError, "weight_dcay"),
    case("fit-options-not-mapping", lambda: method_fit(SPEC, digits(), method="map", budget="1epochs", options=5), ConfigError, "options"),
    case("fit-spec-unknown-key", lambda: method_fit({"modle": {}}, digits(), method="svi-trace", budget="1epochs"), ConfigError, "modle"),
    case("fit-spec-number", lambda: method_fit(5, digits(), method="svi-trace", budget="1epochs"), ConfigError, "5"),
    case("fit-batch_size-above-rows", lambda: method_fit({**SPEC, "train": {"batch_size": 1000}}, digits(), method="map", budget="1epochs"), ConfigError, "batch_size"),
    case("fit-device-cuda-absent", lambda: method_fit({**SPEC, "train": {"batch_size": 50, "device": "cuda:0"}}, digits(),
                                                     method="svi-trace", budget="1epochs"), ConfigError, "train.device",
         *([pytest.mark.skip("this machine has CUDA")] if torch.cuda.is_available() else [])),
    case("fit-device-gpu", lambda: method_fit(SPEC, digits(), method="svi-trace", budget="1epochs", device="gpu"),
         ConfigError, "device='gpu'"),
    case("fit-progress-text", lambda: method_fit(SPEC, digits(), method="svi-trace", budget="1epochs", progress="no"), ConfigError, "progress"),
]


def _cvae(data_dim=16, image_shape=(4, 4), **options):
    return build_program({"program": {"name": "cvae", **options}, **TINY_MODEL}, data_dim=data_dim,
                         image_shape=image_shape, seed=0)


def _complete_ppca(method, x=None, **options):
    from inference.completion.samplers import complete_by_inference
    from pyro_vae.linear_gaussian import linear_gaussian_vae
    from pyro_vae.observation import LowResolution

    vae = linear_gaussian_vae(torch.zeros(16, 2), torch.zeros(16), 0.1)
    return complete_by_inference(LowResolution(vae, (4, 4), 2), torch.zeros(3, 4) if x is None else x, method=method,
                                 **options)


def _score_ppca(**options):
    from inference.completion.yardstick import score_vae_completion
    from pyro_vae.linear_gaussian import linear_gaussian_vae

    vae = linear_gaussian_vae(torch.zeros(16, 2), torch.zeros(16), 0.1)
    return score_vae_completion(vae, torch.zeros(3, 16), torch.arange(16) < 8, num_samples=5, **options)


def _other_task():
    from pyro_vae.completion import build_task, same_task

    same_task(build_task("inpaint", 16, (4, 4), observed=1), build_task("superres", 16, (4, 4), factor=2))


COMPLETION = [
    case("cvae-mask-hides-nothing", lambda: _cvae(mask="random", fraction=0.0), ConfigError, "hides nothing"),
    case("cvae-mask-hides-everything", lambda: _cvae(mask="rows", fraction=1.0), ConfigError, "hides every"),
    case("cvae-factor-not-dividing", lambda: _cvae(36, (6, 6), task="superres", factor=4), DataError, "factor 4"),
    case("cvae-factor-3", lambda: _cvae(task="superres", factor=3), ConfigError, "factor"),
    case("cvae-quadrants-non-image", lambda: _cvae(10, None), DataError, "image_shape"),
    case("cvae-observed-4", lambda: _cvae(observed=4), ConfigError, "observed"),
    case("cvae-task-unknown", lambda: _cvae(task="denoise"), ConfigError, "task"),
    case("cvae-mask-unknown", lambda: _cvae(mask="stripes"), ConfigError, "mask"),
    case("cvae-other-task", _other_task, ConfigError, "trained for"),
    case("complete-method-unknown", lambda: _complete_ppca("gibbs"), ConfigError, "method"),
    case("complete-mwg-superres", lambda: _complete_ppca("mwg"), ConfigError, "mwg"),
    case("complete-progress-text", lambda: _complete_ppca("sir", progress="yes"), ConfigError, "progress"),
    case("score-progress-int", lambda: _score_ppca(progress=1), ConfigError, "progress"),
    case("complete-low-res-shape", lambda: _complete_ppca("sir", torch.zeros(3, 5)), DataError, "low-resolution"),
    case("parse-mask-unknown", lambda: __import__("pyro_vae.masks").masks.parse_mask("quadrant:1"), ConfigError, "--mask"),
]


@pytest.mark.parametrize("call, error, names", group("load_dataset", LOAD_DATASET) + group("build", BUILD)
                         + group("svi.fit", SVI_FIT) + group("evaluate", EVALUATE) + group("methods", METHODS)
                         + group("completion", COMPLETION))
def test_bad_python_arguments_are_refused(call, error, names):
    assert_refused(call, error, names)


# --------------------------------------------------------------------------- 6. the command line
CLI_FILES = {
    "tiny.yaml": TINY_YAML,
    "ten.yaml": yaml_model(prior={"name": "mixture", "components": "ten"}),
    "rank.yaml": yaml_model(guide={"name": "lowrank_normal", "rank": 50}),
    "broken.yaml": "model: {latent_dim: 2\n",
    "lr.yaml": yaml.safe_dump({"model": TINY_MODEL}) + "train: {lr: 1e-3}\n",
    "notest.yaml": yaml.safe_dump({"model": TINY_MODEL, "data": {"test_fraction": 0.0}}),
    "c.txt": "model: {}\n",
}
CSV_FILES = {"two.csv": 2, "one.csv": 1, "five.csv": 5}
TRAIN = ["train", "--config", "{files}/tiny.yaml", "--out", "{out}", "--epochs", "1", "--eval-samples", "5", "-q"]
def cli(id: str, args: list[str], names: str, *marks: Any, base: list[str] | None = None) -> Any:
    return pytest.param((TRAIN if base is None else base) + args, names, id=id, marks=marks)


NO_CUDA = [pytest.mark.skip("this machine has CUDA")] if torch.cuda.is_available() else []
CLI = [
    cli("device-gpu", ["--device", "gpu"], "device"),
    cli("device-cuda-absent", ["--device", "cuda"], "available", *NO_CUDA),
    cli("nproc-0", ["--nproc", "0"], "nproc"),
    cli("evaluate-device-absent", ["{out}", "--device", "cuda:3"], "device", *NO_CUDA, base=["evaluate"]),
    cli("sample-device-bad", ["{files}", "--device", "tpu"], "device", base=["sample"]),
    cli("diagnose-device-bad", ["{files}", "--device", "gpu0"], "device", base=["diagnose"]),
    cli("latent-dim-0", ["--latent-dim", "0"], "latent_dim"),
    cli("latent-dim-negative", ["--latent-dim", "-2"], "latent_dim"),
    cli("epochs-0", ["--epochs", "0"], "epochs"),
    cli("lr-0", ["--lr", "0"], "train.lr"),
    cli("lr-negative", ["--lr", "-1"], "train.lr"),
    cli("lr-nan", ["--lr", "nan"], "train.lr"),
    cli("lr-inf", ["--lr", "inf"], "train.lr"),
    cli("lr-final-above-lr", ["--lr-schedule", "cosine", "--lr-final", "1"], "lr_final"),
    cli("lr-final-with-constant", ["--lr-final", "1e-5"], "lr_final"),
    cli("weight-decay-negative", ["--weight-decay", "-1"], "weight_decay"),
    cli("batch-size-0", ["--batch-size", "0"], "batch_size"),
    cli("batch-size-above-rows", ["--batch-size", "100000"], "batch_size"),
    cli("batch-size-above-max-train", ["--max-train", "10", "--batch-size", "20"], "batch_size"),
    cli("num-particles-0", ["--num-particles", "0"], "num_particles"),
    cli("kl-warmup-negative", ["--kl-warmup", "-1"], "kl_warmup_epochs"),
    cli("patience-0", ["--patience", "0"], "patience"),
    cli("seed-negative", ["--seed", "-1"], "seed"),
    cli("seed-too-large", ["--seed", "4294967296"], "seed"),
    cli("max-train-0", ["--max-train", "0"], "max_train"),
    cli("max-train-negative", ["--max-train", "-5"], "max_train"),
    cli("prior-unknown", ["--prior", "gauss"], "prior"),
    cli("likelihood-unknown", ["--likelihood", "bernouli"], "likelihood"),
    cli("guide-unknown", ["--guide", "diag"], "guide"),
    cli("program-unknown", ["--program", "vea"], "program"),
    cli("elbo-unknown", ["--elbo", "nope"], "train.elbo"),
    cli("lr-schedule-unknown", ["--lr-schedule", "linear"], "lr_schedule"),
    cli("binarize-unknown", ["--binarize", "maybe"], "binarize"),
    cli("binarize-static-digits", ["--binarize", "static"], "binarize"),
    cli("dataset-missing-file", ["--dataset", "{files}/missing.npy"], "missing.npy"),
    cli("dataset-unknown-name", ["--dataset", "digitz"], "digitz"),
    cli("dataset-2-rows", ["--dataset", "{files}/two.csv", "--binarize", "none"], "test_fraction"),
    cli("dataset-1-row", ["--dataset", "{files}/one.csv", "--binarize", "none"], "rows"),
    cli("dataset-5-rows", ["--dataset", "{files}/five.csv", "--binarize", "none"], "val_fraction"),
    cli("dataset-grey-bernoulli", ["--binarize", "none"], "bernoulli"),
    cli("eval-samples-0", ["--eval-samples", "0"], "eval_samples"),
    cli("eval-samples-negative", ["--eval-samples", "-3"], "eval_samples"),
    cli("config-components-ten", ["--config", "{files}/ten.yaml"], "components"),
    cli("config-rank-50", ["--config", "{files}/rank.yaml"], "rank"),
    cli("config-yaml-lr-text", ["--config", "{files}/lr.yaml"], "train.lr"),
    cli("config-broken-yaml", ["--config", "{files}/broken.yaml"], "broken.yaml"),
    cli("config-missing", ["--config", "{files}/missing.yaml"], "missing.yaml"),
    cli("config-unknown-extension", ["--config", "{files}/c.txt"], "c.txt"),
    cli("config-no-test-split", ["--config", "{files}/notest.yaml"], "test"),
    cli("resume-without-run", ["--resume"], "resume"),
    cli("evaluate-K-0", ["{out}", "-K", "0"], "num_samples", base=["evaluate"]),
    cli("evaluate-refine-steps-negative", ["{out}", "--refine-steps", "-1"], "refine_steps", base=["evaluate"]),
    cli("evaluate-not-a-run", ["{files}", "-K", "10", "-q"], "config.yaml", base=["evaluate"]),
    cli("sample-not-a-run", ["{files}"], "config.yaml", base=["sample"]),
    cli("diagnose-not-a-run", ["{files}"], "config.yaml", base=["diagnose"]),
    cli("complete-not-a-run", ["{files}"], "config.yaml", base=["complete"]),
    cli("compare-train-sizes-text", ["--train-sizes", "abc", "--budget", "1epochs", "--out", "{out}"], "abc", base=["compare"]),
    cli("compare-train-sizes-0", ["--train-sizes", "0", "--budget", "1epochs", "--out", "{out}"], "training size", base=["compare"]),
    cli("compare-budget-text", ["--train-sizes", "100", "--budget", "abc", "--out", "{out}"], "budget", base=["compare"]),
    cli("compare-budget-0s", ["--train-sizes", "100", "--budget", "0s", "--out", "{out}"], "seconds", base=["compare"]),
    cli("compare-K-0", ["--train-sizes", "100", "--budget", "1epochs", "-K", "0", "--out", "{out}"], "num_samples", base=["compare"]),
    cli("compare-eval-rows-0", ["--train-sizes", "100", "--budget", "1epochs", "--eval-rows", "0", "--out", "{out}"], "eval_rows", base=["compare"]),
    cli("compare-checkpoints-2", ["--train-sizes", "100", "--budget", "1epochs", "--checkpoints", "2", "--out", "{out}"], "checkpoints", base=["compare"]),
    cli("compare-methods-unknown", ["--train-sizes", "100", "--budget", "1epochs", "--methods", "nope", "--out", "{out}"], "nope", base=["compare"]),
    cli("compare-seed-negative", ["--train-sizes", "100", "--budget", "1epochs", "--seed", "-1", "--out", "{out}"], "seed", base=["compare"]),
    cli("m1-not-a-run", ["--program", "m2", "--elbo", "enum", "--labels", "20", "--m1", "{files}"], "not a run folder"),
    cli("compare-device-gpu", ["--train-sizes", "100", "--budget", "1epochs", "--device", "gpu", "--out", "{out}"], "device", base=["compare"]),
    cli("compare-device-cuda-absent", ["--train-sizes", "100", "--budget", "1epochs", "--device", "cuda", "--out", "{out}"],
        "available", *NO_CUDA, base=["compare"]),
    cli("compare-config-bad", ["--train-sizes", "100", "--budget", "1epochs", "--config", "{files}/ten.yaml", "--out", "{out}"], "components", base=["compare"]),
]


# --------------------------------------------------------------------------- semi-supervised M2 (labels, m2, M1+M2)
CLI_FILES["m2five.yaml"] = yaml.safe_dump({"model": {**TINY_MODEL, "program": {"name": "m2", "classes": 5}},
                                           "data": {"labels": 20}, "train": {"elbo": "enum"}})
CLI_FILES["nanlabels.csv"] = "a,b,label\n" + "".join(f"{i / 20},{(i % 3) / 3},{'nan' if i == 7 else i % 2}\n" for i in range(20))
CLI.extend([
    cli("m2-labels-below-classes", ["--program", "m2", "--labels", "5"], "labels"),
    cli("m2-labels-0", ["--program", "m2", "--labels", "0"], "data.labels"),
    cli("labels-without-m2", ["--labels", "20"], "data.labels"),
    cli("labelled-batch-without-m2", ["--labelled-batch-size", "5"], "train.labelled_batch_size"),
    cli("labelled-batch-above-labels", ["--program", "m2", "--elbo", "enum", "--labels", "20", "--labelled-batch-size",
                                        "21"], "train.labelled_batch_size"),
    cli("labelled-batch-0", ["--program", "m2", "--labels", "20", "--labelled-batch-size", "0"], "train.labelled_batch_size"),
    cli("m2-labels-outside-classes", ["--config", "{files}/m2five.yaml"], "classes"),
    cli("m2-nan-label-column", ["--program", "m2", "--labels", "2", "--dataset", "{files}/nanlabels.csv", "--binarize", "none"], "labels"),
    cli("classify-not-a-run", ["{files}"], "config.yaml", base=["classify"]),
])


def semi(n_labels: Any, **kwargs: Any) -> Callable[[], Any]:
    from pyro_vae.labels import semi_supervised

    return lambda: semi_supervised(load_dataset("digits", binarize="threshold"), n_labels, **kwargs)


def m2_fit(data: Callable[[], DataSplits], **program: Any) -> Callable[[], Any]:
    def call():
        from inference import semisup

        m2 = build_program({**TINY_MODEL, "program": {"name": "m2", **program}}, data_dim=64, seed=0)
        return semisup.fit(m2, data(), {"elbo": "enum", "epochs": 1, "batch_size": 50}, progress=False)
    return call


def class_labels(y: Any, n: int) -> Callable[[], Any]:
    from pyro_vae.labels import class_labels as check

    return lambda: check(y, n, "labels")


def m1_run() -> Path:
    """A VAE run folder (latent_dim 2, one epoch on 200 digits): the M1 of M1+M2."""
    from inference import run

    folder = files_dir() / "m1"
    if not (folder / "metrics.json").is_file():
        run.train({"model": TINY_MODEL, "data": {"max_train": 200}, "train": {"epochs": 1, "batch_size": 50}},
                  folder, eval_samples=2, progress=False, overwrite=True)
    return folder


def m1_features(**kwargs: Any) -> Callable[[], Any]:
    from inference.semisup.m1 import latent_features

    return lambda: latent_features(m1_run(), **kwargs)


def m1_flow_draws() -> Any:
    """M1+M2 on draws of z from an M1 whose guide is a flow: its q has no per-unit sds to draw with."""
    from inference import run
    from inference.semisup.m1 import latent_features

    folder = files_dir() / "m1_flow"
    if not (folder / "metrics.json").is_file():
        run.train({"model": {**TINY_MODEL, "guide": "planar"}, "data": {"max_train": 100},
                   "train": {"epochs": 1, "batch_size": 50}}, folder, eval_samples=2, progress=False, overwrite=True)
    return latent_features(folder, features="sample")


def npz_labels(y: np.ndarray) -> Callable[[], Any]:
    def call():
        path = files_dir() / "labels.npz"
        np.savez(path, x=np.random.default_rng(0).random((10, 3)), y=y)
        return load_dataset(path, binarize="none")
    return call


SEMI_SUPERVISED = [
    case("npz-labels-wrong-length", npz_labels(np.arange(9) % 2), DataError, "labels"),
    case("npz-labels-nan", npz_labels(np.array([0, 1, np.nan, 1, 0, 1, 0, 1, 0, 1])), DataError, "labels"),
    case("m1-latent-size-mismatch", m1_features(latent_dim=50), ConfigError, "latent_dim"),
    case("m1-units-unknown", m1_features(units="some"), ConfigError, "data.m1_units"),
    case("m1-units-without-m1", lambda: DataSpec(m1_units="active"), ConfigError, "data.m1_units"),
    case("m1-units-spec-unknown", lambda: DataSpec(m1="runs/m1", m1_units="most"), ConfigError, "data.m1_units"),
    case("m1-features-unknown", m1_features(features="draws"), ConfigError, "data.m1_features"),
    case("m1-features-sample-flow-guide", m1_flow_draws, ConfigError, "diagonal Gaussian q(z | x)"),
    case("m1-features-without-m1", lambda: DataSpec(m1_features="sample"), ConfigError, "data.m1_features"),
    case("m1-features-spec-unknown", lambda: DataSpec(m1="runs/m1", m1_features="mode"), ConfigError, "data.m1_features"),
    case("m1-data-other-width", m1_features(data=splits(torch.zeros(4, 10), torch.zeros(2, 10), torch.zeros(2, 10))),
         DataError, "features"),
    case("labels-below-classes", semi(9), ConfigError, "labels"),
    case("labels-text", semi("100"), ConfigError, "labels"),
    case("labels-above-rows", semi(10**6), ConfigError, "labels"),
    case("labels-classes-too-few", semi(20, num_classes=5), DataError, "train_labels"),
    case("labels-seed-negative", semi(20, seed=-1), ConfigError, "seed"),
    case("label-array-nan", class_labels(np.array([0.0, NAN, 1.0]), 3), DataError, "labels"),
    case("label-array-short", class_labels(np.array([0, 1]), 3), DataError, "labels"),
    case("label-array-negative", class_labels(np.array([0, -3, 1]), 3), DataError, "labels"),
    case("label-array-text", class_labels(np.array(["a", "b", "c"]), 3), DataError, "labels"),
    case("m2-classes-1", lambda: build_program({"program": {"name": "m2", "classes": 1}}, data_dim=4), ConfigError, "classes"),
    case("m2-conv-encoder", lambda: build_program({"program": "m2", "encoder": "conv", "decoder": "conv"}, data_dim=64,
                                                  image_shape=(8, 8)), ConfigError, "model.encoder"),
    case("m2-alpha-negative", lambda: build_program({"program": {"name": "m2", "alpha": -1.0}}, data_dim=4), ConfigError, "alpha"),
    case("m2-fit-without-labels", m2_fit(lambda: splits(digits().train, digits().val, digits().test)), DataError, "labels"),
    case("m2-fit-classes-too-few", m2_fit(lambda: semi(20)(), classes=5), DataError, "train_labels"),
    case("m2-fit-vae", lambda: __import__("inference.semisup", fromlist=["fit"]).fit(vae(), semi(20)(), {"epochs": 1}),
         ConfigError, "m2"),
]


@pytest.mark.parametrize("call, error, names", group("semi-supervised", SEMI_SUPERVISED))
def test_bad_semi_supervised_inputs_are_refused(call, error, names):
    assert_refused(call, error, names)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli-files")
    for name, text in CLI_FILES.items():
        (folder / name).write_text(text)
    for name, n in CSV_FILES.items():
        shutil.copy(rows_csv(n), folder / name)
    return folder


@pytest.mark.parametrize("argv, names", group("cli", CLI))
def test_bad_command_lines_exit_2_with_one_line(cli_files, tmp_path, capsys, argv, names):
    out = tmp_path / "run"
    argv = [a.format(files=cli_files, out=out) for a in argv]
    names = names.format(files=cli_files)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit status {code}; stderr: {err}"
    assert err.startswith("pyro-vae: error: ") and "\n" not in err, f"not one error line: {err!r}"
    assert "Traceback" not in err
    assert names_word(names, err), f"the message does not name {names!r}: {err}"
    assert not out.exists() or existing_run(out) == [], f"refused after writing {existing_run(out)}"


def test_the_table_is_large_enough():
    total = len(COMPONENT_OPTIONS + DATA_SPEC + TRAIN_SPEC + CONFIG_FILES + LOAD_DATASET + BUILD + SVI_FIT
                + EVALUATE + METHODS + CLI)
    assert total >= 200, total
