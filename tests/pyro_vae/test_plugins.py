"""Plugins: components registered by a module can be named in a spec, on the command line, or by an entry point."""

from __future__ import annotations

import importlib.metadata
import uuid

import pytest
import yaml

import pyro_vae.plugins as plugins
from pyro_vae import PRIORS, ConfigError
from pyro_vae.spec import load_spec, spec_from_dict, spec_to_dict

PLUGIN_SOURCE = '''
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.priors import PRIORS


class _Logistic(nn.Module):
    def __init__(self, latent_dim, scale):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.full((latent_dim,), scale))

    def marginals(self):
        return dist.Normal(self.loc, self.scale)

    def forward(self):
        return self.marginals().to_event(1)


@PRIORS.register("{name}")
def _factory(latent_dim: int, *, context, scale: float = 1.0):
    """A test prior."""
    return _Logistic(latent_dim, scale)
'''


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    """A fresh module on sys.path that registers a prior with a fresh name: (module name, prior name)."""
    module, prior = f"plugin_{uuid.uuid4().hex[:8]}", f"test_prior_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(PLUGIN_SOURCE.format(name=prior))
    monkeypatch.syspath_prepend(str(tmp_path))
    return module, prior


def test_a_spec_names_its_plugins_and_keeps_them(plugin, tmp_path):
    module, prior = plugin
    with pytest.raises(ConfigError, match=f"unknown prior '{prior}'"):
        spec_from_dict({"model": {"prior": prior}})
    spec = spec_from_dict({"plugins": [module], "model": {"prior": {"name": prior, "scale": 2.0}}})
    assert spec.plugins == (module,) and spec.model.prior.name == prior and prior in PRIORS
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(spec_to_dict(spec)))
    assert load_spec(path) == spec


@pytest.mark.parametrize("bad", [["no_such_module_xyz"], [""], "one_string", [3]])
def test_bad_plugin_lists_are_refused(bad):
    with pytest.raises(ConfigError, match="plugin"):
        spec_from_dict({"plugins": bad})


def test_the_command_line_loads_a_plugin_and_records_it(plugin, tmp_path):
    from inference.cli import main

    module, prior = plugin
    out = tmp_path / "run"
    argv = ["train", "--plugin", module, "--prior", prior, "--out", str(out), "--epochs", "1", "--latent-dim", "2",
            "--eval-samples", "5", "-q"]
    assert main(argv) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["plugins"] == [module] and config["model"]["prior"] == prior


def test_installed_entry_points_are_loaded_once(plugin, monkeypatch):
    module, prior = plugin
    entry = importlib.metadata.EntryPoint(name="test", value=module, group=plugins.ENTRY_POINT_GROUP)
    broken = importlib.metadata.EntryPoint(name="broken", value="no_such_module_xyz", group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [entry, broken] if group == plugins.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    spec = spec_from_dict({"model": {"prior": prior}})  # the entry point registered it; the broken one is skipped
    assert spec.model.prior.name == prior
    assert plugins.load_entry_points() == []  # once per process
