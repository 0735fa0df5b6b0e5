"""The few argument checks every public function shares; each raises ConfigError naming the argument, the value and the fix."""

from __future__ import annotations

import math
from typing import Any, Iterable

from pyro_vae.errors import ConfigError


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is an int >= 1 (bools refused), else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def optional_positive_int(name: str, value: Any) -> int | None:
    """None, or :func:`positive_int`."""
    return None if value is None else positive_int(name, value)


def positive_float(name: str, value: Any) -> float:
    """``value`` if it is a finite real number > 0 (bools and strings refused), else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def fraction(name: str, value: Any, *, closed: bool = True) -> float:
    """``value`` in [0, 1] (or (0, 1] with ``closed=False``), else ConfigError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (0 <= value <= 1 if closed else 0 < value <= 1)
    if not ok:
        raise ConfigError(f"{name} must be in {'[0, 1]' if closed else '(0, 1]'}, got {value!r}")
    return float(value)


def choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else ConfigError listing them."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")
    return value


__all__ = ["positive_int", "optional_positive_int", "positive_float", "fraction", "choice"]
