"""Plugins: modules that register components (or programs) so that a config file or the command line can name them.

A plugin is an importable module whose import registers what it defines (``@PRIORS.register(...)``
and the like). Three ways to load one, before a spec's names are checked:

* ``plugins: [my_package.my_priors]`` at the top of a spec (YAML/TOML/JSON or a dict);
* ``pyro-vae train --plugin my_package.my_priors`` (repeatable), recorded in the run's ``config.yaml``
  so that ``evaluate``, ``sample`` and ``--resume`` load it again;
* an installed package's entry point in the group ``pyro_vae.plugins`` (``[project.entry-points."pyro_vae.plugins"]``
  in its pyproject.toml), loaded by :func:`load_entry_points` the first time a spec is read.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from typing import Iterable

from pyro_vae.errors import ConfigError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "pyro_vae.plugins"
_entry_points_loaded = False


def load_plugins(modules: Iterable[str]) -> tuple[str, ...]:
    """Import every module named in ``modules`` (registering its components); returns the names, in order."""
    names = []
    for name in modules:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"plugins must be module names (e.g. my_package.my_priors), got {name!r}")
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(
                f"plugin {name!r} could not be imported ({type(err).__name__}: {err}); install it, or put the folder "
                "that holds it on PYTHONPATH"
            ) from None
        names.append(name)
    return tuple(names)


def load_entry_points() -> list[str]:
    """Load, once per process, every installed plugin of the entry-point group ``pyro_vae.plugins``."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    loaded = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as err:  # a broken third-party plugin must not stop pyro-vae
            logger.warning("plugin %s (%s) failed to load: %s", entry.name, entry.value, err)
            continue
        loaded.append(entry.value)
    return loaded


__all__ = ["ENTRY_POINT_GROUP", "load_plugins", "load_entry_points"]
