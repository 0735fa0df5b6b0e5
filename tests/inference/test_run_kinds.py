"""inference.run_kinds: every program gets the kind whose fit, test metrics, figures and checks a run uses."""

from __future__ import annotations

import pytest

from inference import semisup, svi
from inference.run_kinds import RUN_KINDS, generative_test_metrics, kind_of
from pyro_vae import build_program

MLP = {"name": "mlp", "hidden": [8]}


@pytest.mark.parametrize("program, kind, fit", [
    ("vae", "generative", svi.fit),
    ({"name": "hierarchical", "top_latent_dim": 2, "top_hidden": [4]}, "generative", svi.fit),
    ({"name": "m2", "classes": 10}, "semi_supervised", semisup.fit),
    ({"name": "cvae", "observed": 1}, "conditional", svi.fit),
    ({"name": "cvae_baseline", "observed": 2}, "conditional", svi.fit),
])
def test_each_program_gets_its_kind(program, kind, fit):
    built = build_program({"program": program, "latent_dim": 2, "encoder": MLP, "decoder": MLP}, data_dim=64,
                          image_shape=(8, 8), seed=0)
    assert kind_of(built).name == kind and kind_of(built).fit is fit


def test_generative_applies_to_every_program_and_comes_last():
    assert [k.name for k in RUN_KINDS][-1] == "generative" and RUN_KINDS[-1].applies(object())
    assert RUN_KINDS[-1].test_metrics is generative_test_metrics
