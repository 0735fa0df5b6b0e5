"""Plain-data specifications of a VAE and of a run, loaded from and saved to YAML/TOML.

A spec is a tree of frozen dataclasses that round-trips through plain dicts::

    model:                     # ModelSpec: what p(z), p_theta(x|z), q_phi(z|x) are
      latent_dim: 10
      prior: normal            # a name, or {name: mixture, components: 10}
      likelihood: bernoulli
      encoder: {name: mlp, hidden: [200, 200]}
      decoder: {name: mlp, hidden: [200, 200]}
      guide: diag_normal
    data:  {dataset: digits, binarize: dynamic}          # DataSpec
    train: {elbo: trace, epochs: 50, lr: 0.001, seed: 0}  # TrainSpec

Validation happens on construction: unknown keys, component names or options, and
impossible values raise :class:`~pyro_vae.errors.ConfigError` naming the valid choices.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import tomli_w
import yaml

from pyro_vae.checks import (
    boolean, check_fractions, choice, got, integer, mapping, name_string, number, optional_positive_float, optional_positive_int,
    positive_float, positive_int, seed,
)
from pyro_vae.data import BINARIZE_MODES as BINARIZE, default_binarize
from pyro_vae.errors import ConfigError
from pyro_vae.files import write_text
from pyro_vae.guides import GUIDES
from pyro_vae.likelihoods import LIKELIHOODS
from pyro_vae.networks import NETWORKS
from pyro_vae.plugins import load_entry_points, load_plugins
from pyro_vae.priors import PRIORS
from pyro_vae.programs import PROGRAMS
from pyro_vae.registry import Registry

M1_UNITS = ("all", "active")  # data.m1_units: which of an M1 run's latent units M1+M2 reads (inference.semisup.m1)
M1_FEATURES = ("mean", "sample")  # data.m1_features: M2's training rows, M1's posterior means or fresh draws (same module)
DEVICE_FORMS = ("cpu", "cuda", "cuda:N", "mps", "auto")  # train.device; resolved by inference.devices
_DEVICE = re.compile(r"(cpu|cuda|cuda:\d+|mps|auto)")


@dataclass(frozen=True)
class Component:
    """A registered component by name plus its keyword options."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any, registry: Registry[Any], where: str | None = None) -> "Component":
        """Accept ``"name"``, ``{"name": ..., **options}`` or a Component; validate against ``registry``.

        The name must be registered and the options must be the factory's keyword options, of their
        declared types (:meth:`Registry.check_options`); ``where`` names the spec field in messages.
        """
        where = where or registry.kind
        if isinstance(value, Component):
            comp = value
        elif isinstance(value, str):
            comp = cls(value)
        elif isinstance(value, Mapping):
            if "name" not in value:
                raise ConfigError(f"{where} spec {dict(value)!r} has no 'name'; valid names: {', '.join(registry.names())}")
            extra = mapping(f"{where}.options", value.get("options") or {})
            opts = {k: v for k, v in value.items() if k not in ("name", "options")}
            opts.update(extra)
            comp = cls(value["name"], opts)
        else:
            raise ConfigError(f"{where} must be a name or a mapping with 'name', {got(value)}; e.g. {registry.names()[0]!r}")
        if not isinstance(comp.name, str) or not comp.name:
            raise ConfigError(f"{where} name must be one of: {', '.join(registry.names())}; {got(comp.name)}")
        registry.get(comp.name)  # raises listing valid names
        registry.check_options(comp.name, dict(mapping(f"{where} options", comp.options)))
        return cls(comp.name, dict(comp.options))

    def to_data(self) -> Any:
        return self.name if not self.options else {"name": self.name, **_plain(dict(self.options))}


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so YAML/TOML/JSON stay plain."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelSpec:
    """Which program (``vae``, ``ppca``, ...) and its parts: p(z) (prior), p_theta(x|z) (likelihood, decoder), q_phi(z|x) (guide, encoder)."""

    latent_dim: int = 10
    program: Component | str | Mapping[str, Any] = "vae"  # a name, or {name: ..., **the program's options}
    prior: Component | str | Mapping[str, Any] = "normal"
    likelihood: Component | str | Mapping[str, Any] = "bernoulli"
    encoder: Component | str | Mapping[str, Any] = "mlp"
    decoder: Component | str | Mapping[str, Any] = "mlp"
    guide: Component | str | Mapping[str, Any] = "diag_normal"

    def __post_init__(self) -> None:
        positive_int("model.latent_dim", self.latent_dim)
        for name, reg in (("program", PROGRAMS), ("prior", PRIORS), ("likelihood", LIKELIHOODS), ("encoder", NETWORKS), ("decoder", NETWORKS), ("guide", GUIDES)):
            object.__setattr__(self, name, Component.parse(getattr(self, name), reg, f"model.{name}"))


@dataclass(frozen=True)
class DataSpec:
    """Which data, where it lives, how it is binarized and split."""

    dataset: str = "digits"
    data_dir: str | None = None
    binarize: str | None = None  # None: the dataset's own default (static for binarized-mnist, else dynamic)
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    max_train: int | None = None
    labels: int | None = None  # semi-supervised: keep the labels of this many balanced training rows (pyro_vae.labels)
    m1: str | None = None  # M1+M2: a VAE run folder whose posterior means replace every row (inference.semisup.m1)
    m1_units: str = "all"  # M1+M2: all of M1's units, or only its active ones (inference.semisup.m1)
    m1_features: str = "mean"  # M1+M2: train M2 on M1's posterior means, or on a fresh draw of z per minibatch

    def __post_init__(self) -> None:
        name_string("data.dataset", self.dataset, what="a built-in dataset name or a .npy/.npz/.csv path")
        if self.data_dir is not None:
            name_string("data.data_dir", self.data_dir, what="null or a folder path")
        if self.binarize is None:
            object.__setattr__(self, "binarize", default_binarize(self.dataset))
        choice("data.binarize", self.binarize, BINARIZE)
        check_fractions(self.val_fraction, self.test_fraction, prefix="data.")
        optional_positive_int("data.max_train", self.max_train)
        optional_positive_int("data.labels", self.labels)
        if self.m1 is not None:
            name_string("data.m1", self.m1, what="null or the folder of a trained VAE run (M1 of M1+M2)")
        choice("data.m1_units", self.m1_units, M1_UNITS)
        if self.m1 is None and self.m1_units != "all":
            raise ConfigError(f"data.m1_units={self.m1_units!r} selects units of an M1 run, but data.m1 is null; "
                              "set data.m1 (--m1) to a trained VAE run folder, or drop data.m1_units")
        choice("data.m1_features", self.m1_features, M1_FEATURES)
        if self.m1 is None and self.m1_features != "mean":
            raise ConfigError(f"data.m1_features={self.m1_features!r} reads an M1 run's posterior, but data.m1 is null; "
                              "set data.m1 (--m1) to a trained VAE run folder, or drop data.m1_features")


@dataclass(frozen=True)
class TrainSpec:
    """How to fit: objective, optimizer, schedule, stopping, seed.

    ``elbo``, ``optimizer`` and ``lr_schedule`` are names looked up in the inference side's
    registries (``inference.training.check_train_spec`` refuses unknown ones, listing the valid).
    ``monitor`` names the validation score that selects the kept epoch and drives ``patience``
    (None: the method's own, the validation ELBO; semi-supervised M2 offers ``accuracy``, its
    default, and ``log_q``); a name the method does not offer is refused before training.
    """

    elbo: str = "trace"
    num_particles: int = 1
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_schedule: str = "constant"
    lr_final: float | None = None
    clip_norm: float = 10.0
    weight_decay: float = 0.0  # >= 0: L2 for adam/clipped_adam, decoupled for adamw (inference.training.optimizers)
    batch_size: int = 100
    labelled_batch_size: int | None = None  # M2: labelled rows in every step; None: ceil(L / steps) (inference.semisup.batches)
    epochs: int = 200
    kl_warmup_epochs: int = 0
    patience: int | None = None
    monitor: str | None = None  # the validation score that keeps the best epoch and stops early; None: the task's own
    seed: int = 0
    validate_every_step: bool = False
    device: str = "cpu"  # cpu | cuda | cuda:N | mps | auto (CUDA, then MPS, then CPU): inference.devices
    mixed_precision: bool = False  # networks under bfloat16 autocast, densities in float32 (inference.training.precision)

    def __post_init__(self) -> None:
        # elbo, optimizer and lr_schedule are names resolved by the inference side (its registries list
        # the valid ones); here they only need to be names.
        for key in ("elbo", "optimizer", "lr_schedule"):
            name_string(f"train.{key}", getattr(self, key))
        for key in ("lr", "clip_norm"):
            positive_float(f"train.{key}", getattr(self, key))
        optional_positive_float("train.lr_final", self.lr_final)
        number("train.weight_decay", self.weight_decay, minimum=0)
        if self.lr_final is not None and self.lr_final > self.lr:
            raise ConfigError(f"train.lr_final={self.lr_final!r} must not exceed train.lr={self.lr!r} (the schedules decay)")
        for key in ("num_particles", "batch_size", "epochs"):
            positive_int(f"train.{key}", getattr(self, key))
        integer("train.kl_warmup_epochs", self.kl_warmup_epochs, minimum=0)
        optional_positive_int("train.patience", self.patience)
        optional_positive_int("train.labelled_batch_size", self.labelled_batch_size)
        if self.monitor is not None:  # which names a task offers is checked where it is built (inference.training)
            name_string("train.monitor", self.monitor, what="null or the name of a validation score (e.g. accuracy)")
        seed("train.seed", self.seed)
        boolean("train.validate_every_step", self.validate_every_step)
        check_device_form("train.device", self.device)
        boolean("train.mixed_precision", self.mixed_precision)


def check_device_form(name: str, value: Any) -> str:
    """``value`` if it is written like a device (one of :data:`DEVICE_FORMS`), else ConfigError; whether
    this machine has it is checked where it is used (:func:`inference.devices.resolve_device`)."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ConfigError(f"{name}={value!r} is not a device; use one of: {', '.join(DEVICE_FORMS)} "
                          "(N a CUDA device index, e.g. cuda:0)")
    return value


@dataclass(frozen=True)
class RunSpec:
    """A whole run: model, data and training."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    plugins: tuple[str, ...] = ()  # modules imported before the names are checked (pyro_vae.plugins)


_SECTIONS = {"model": ModelSpec, "data": DataSpec, "train": TrainSpec}


def as_section(cls: type, values: Any, where: str, **overrides: Any) -> Any:
    """``values`` (a ``cls`` instance, a mapping of its keys or None) with ``overrides``, as a ``cls``.

    Unknown keys are refused with the valid ones listed; ``where`` names the section in messages.
    """
    if isinstance(values, cls):
        values = {f.name: getattr(values, f.name) for f in fields(cls)}
    elif values is not None and not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a {cls.__name__} or a mapping of its keys, {got(values)}")
    values = {**dict(values or {}), **overrides}
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(valid), key=str)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid keys are: {', '.join(valid)}")
    return cls(**values)


def spec_from_dict(data: Mapping[str, Any]) -> RunSpec:
    """Build a RunSpec from plain data. Model keys may also sit at the top level."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a spec must be a mapping, got {type(data).__name__}")
    data = dict(data)
    load_entry_points()
    raw_plugins = data.pop("plugins", None) or ()
    if isinstance(raw_plugins, str) or not isinstance(raw_plugins, (list, tuple)):
        raise ConfigError(f"plugins must be a list of module names, e.g. [my_package.my_priors], got {raw_plugins!r}")
    plugins = load_plugins(raw_plugins)
    model_keys = {f.name for f in fields(ModelSpec)}
    top_model = {k: data.pop(k) for k in list(data) if k in model_keys}
    unknown = sorted(set(data) - set(_SECTIONS), key=str)
    if unknown:
        raise ConfigError(
            f"unknown top-level key(s) {unknown}; valid are plugins, the sections {', '.join(_SECTIONS)} "
            f"or model keys {', '.join(sorted(model_keys))}"
        )
    for name in _SECTIONS:
        mapping(f"section {name!r} of the spec", data.get(name), optional=True)
    model = {**top_model, **(data.get("model") or {})}
    return RunSpec(
        model=as_section(ModelSpec, model, "model"),
        data=as_section(DataSpec, data.get("data"), "data"),
        train=as_section(TrainSpec, data.get("train"), "train"),
        plugins=plugins,
    )


def spec_to_dict(spec: RunSpec | ModelSpec | DataSpec | TrainSpec) -> dict[str, Any]:
    """Plain-data form of a spec (inverse of :func:`spec_from_dict`)."""
    if isinstance(spec, RunSpec):
        out = {"plugins": list(spec.plugins)} if spec.plugins else {}
        return {**out, **{name: spec_to_dict(getattr(spec, name)) for name in _SECTIONS}}
    out = {}
    for f in fields(spec):
        v = getattr(spec, f.name)
        out[f.name] = v.to_data() if isinstance(v, Component) else _plain(v)
    return out


def load_spec(source: str | Path | Mapping[str, Any] | RunSpec | None) -> RunSpec:
    """Load a RunSpec from a YAML/TOML/JSON file, a dict, or pass a RunSpec through."""
    if source is None:
        return RunSpec()
    if isinstance(source, RunSpec):
        return source
    if isinstance(source, Mapping):
        return spec_from_dict(source)
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"config source must be a file path, a mapping or a RunSpec, {got(source)}")
    path = Path(source)
    if path.is_dir():
        raise ConfigError(f"config {str(path)!r} is a folder; give the path of a .yaml, .toml or .json file")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config {str(path)!r} is not UTF-8 text ({err.reason} at byte {err.start}); "
                          "save it as a text .yaml, .toml or .json file") from err
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config {str(path)!r}: unknown extension {path.suffix!r}; use .yaml, .yml, .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"config {str(path)!r} could not be parsed: {' '.join(str(err).split())}; "
                          "fix the syntax there") from err
    return spec_from_dict(data)


def save_spec(spec: RunSpec, path: str | Path) -> Path:
    """Write ``spec`` as YAML (.yaml/.yml), TOML (.toml) or JSON (.json), atomically."""
    path = Path(path)
    data = spec_to_dict(spec)
    if path.suffix == ".toml":
        text = tomli_w.dumps(_drop_none(data))
    elif path.suffix == ".json":
        text = json.dumps(data, indent=2)
    else:
        text = yaml.safe_dump(data, sort_keys=False)
    return write_text(path, text)


def _drop_none(value: Any) -> Any:
    """TOML has no null: omit None values (they are the defaults)."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def override(spec: RunSpec, **dotted: Any) -> RunSpec:
    """Return ``spec`` with ``section__key=value`` or ``key=value`` overrides (None values ignored).

    ``override(spec, model__prior="laplace", train__epochs=5)``; a bare key is looked up in
    the sections (``epochs=5`` sets ``train.epochs``).
    """
    sections = {name: spec_to_dict(getattr(spec, name)) for name in _SECTIONS}
    for key, value in dotted.items():
        if value is None:
            continue
        if "__" in key:
            section, name = key.split("__", 1)
        else:
            owners = [s for s, cls in _SECTIONS.items() if key in {f.name for f in fields(cls)}]
            if not owners:
                raise ConfigError(f"unknown setting {key!r}")
            section, name = owners[0], key
        if section not in sections:
            raise ConfigError(f"unknown section {section!r}; valid: {', '.join(_SECTIONS)}")
        sections[section][name] = value.to_data() if isinstance(value, Component) else value
    return spec_from_dict({**sections, "plugins": list(spec.plugins)})


__all__ = [
    "Component", "DEVICE_FORMS", "M1_UNITS", "check_device_form", "ModelSpec", "DataSpec", "TrainSpec", "RunSpec", "as_section",
    "spec_from_dict", "spec_to_dict", "load_spec", "save_spec", "override",
]
