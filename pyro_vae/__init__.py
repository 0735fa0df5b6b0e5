"""pyro-vae: variational auto-encoders as Pyro probabilistic programs."""

__version__ = "0.1.0"
