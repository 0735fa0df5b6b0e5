"""pyro-vae: variational auto-encoders as Pyro probabilistic programs.

Declare a model from named parts, train it with SVI, score it with importance sampling::

    from pyro_vae import build_vae, load_dataset
    data = load_dataset("digits", binarize="dynamic")
    vae = build_vae(data_dim=data.feature_dim, latent_dim=2, prior="normal", likelihood="bernoulli")
"""

from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError, DataError, TrainingError, UnsupportedModelError
from pyro_vae.guides import GUIDES
from pyro_vae.likelihoods import LIKELIHOODS
from pyro_vae.networks import NETWORKS
from pyro_vae.priors import PRIORS
from pyro_vae.registry import BuildContext, Registry
from pyro_vae.spec import DataSpec, ModelSpec, RunSpec, TrainSpec, load_spec, save_spec
from pyro_vae.vae import VAE, build_vae
import pyro_vae.linear_gaussian  # noqa: E402,F401 - registers the "linear" network and the "ppca" program
import pyro_vae.m2  # noqa: E402,F401 - registers the "m2" program (semi-supervised)
import pyro_vae.cvae  # noqa: E402,F401 - registers the "cvae" and "cvae_baseline" programs
import pyro_vae.flows  # noqa: E402,F401 - registers the flow guide families (iaf, householder, planar, sylvester, spline)
import pyro_vae.hierarchical  # noqa: E402,F401 - registers the "hierarchical" program (two stochastic layers)
from pyro_vae.build import build_program
from pyro_vae.programs import PROGRAMS

__version__ = "0.1.0"

REGISTRIES = {"program": PROGRAMS, "prior": PRIORS, "likelihood": LIKELIHOODS, "network": NETWORKS, "guide": GUIDES}


__all__ = [
    "VAE", "build_vae", "build_program", "PROGRAMS", "load_dataset", "REGISTRIES", "PRIORS", "LIKELIHOODS", "NETWORKS", "GUIDES",
    "Registry", "BuildContext", "ModelSpec", "DataSpec", "TrainSpec", "RunSpec", "load_spec", "save_spec",
    "ConfigError", "DataError", "TrainingError", "UnsupportedModelError",
]
