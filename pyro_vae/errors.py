"""Exception types raised by pyro-vae.

Every error names the problem and the fix. They subclass the built-in exception a user
would expect (``ValueError`` for bad input, ``RuntimeError`` for a failed run) so that
generic ``except ValueError`` handlers keep working.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A model/run specification is invalid (unknown name, impossible setting, bad type)."""


class DataError(ValueError):
    """Data has the wrong shape or dtype, holds NaN/inf, or lies outside a likelihood's support."""


class TrainingError(RuntimeError):
    """Training stopped (e.g. a NaN or infinite loss); the last good checkpoint was kept."""


class UnsupportedModelError(ValueError):
    """An inference method cannot handle the declared model (it says why)."""


# what a command line ends on with one line and status 2 (the pyro-vae CLI, the benchmark scripts)
REFUSALS = (ConfigError, DataError, TrainingError, UnsupportedModelError)
