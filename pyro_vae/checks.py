"""The few argument checks every public function shares.

Each check returns the value unchanged (never coerced: ``"5"`` is not 5 and 2.7 is not 2) or raises
one line naming the argument, the value and what to give instead: :class:`ConfigError` for
settings, :class:`DataError` for data (:func:`float_rows`). Public functions call them once, at
their boundary; :func:`check_type` checks a value against a type annotation, which is how the
registries check every component option from its factory's signature.
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import math
import os
import re
import types
import typing
from typing import Any, Iterable

import torch

from pyro_vae.errors import ConfigError, DataError

SEED_LIMIT = 2**32


def got(value: Any) -> str:
    """``got VALUE`` plus what is wrong with its type, for the end of a message."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return f"got {value!r} (text)"
        if re.fullmatch(r"\s*[+-]?\d+[eE][+-]?\d+\s*", value):  # YAML 1.1 reads 1e-3 (no dot) as text
            return f"got {value!r} (text: YAML reads a number like 1e-3 as text; write 1.0e-3)"
        return f"got {value!r} (text: write the number without quotes)"
    if isinstance(value, bool):
        return f"got {value!r} (a bool)"
    if isinstance(value, (int, float)) or value is None:
        return f"got {value!r}"
    if isinstance(value, (list, tuple, dict)) and len(repr(value)) <= 60:
        return f"got {value!r}"
    shape = f" of shape {tuple(value.shape)}" if hasattr(value, "shape") else ""
    return f"got a {type(value).__name__}{shape}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` if it is an int (bools refused) in [minimum, maximum], else ConfigError stating the range."""
    if not _is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            bounds = f" in [{minimum}, {maximum}]"
        else:
            bounds = f" >= {minimum}" if minimum is not None else f" <= {maximum}" if maximum is not None else ""
        raise ConfigError(f"{name} must be an integer{bounds}, {got(value)}")
    return value


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is an int >= 1 (bools refused), else ConfigError."""
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{name} must be a positive integer (a whole number >= 1), {got(value)}")
    return value


def optional_positive_int(name: str, value: Any) -> int | None:
    """None, or :func:`positive_int`."""
    return None if value is None else positive_int(name, value)


def positive_ints(name: str, value: Any, *, at_least_one: bool = False, example: str = "[32, 64]") -> list[int]:
    """``value`` (a list or tuple of ints >= 1; non-empty with ``at_least_one``) as a list, else ConfigError."""
    ok = isinstance(value, (list, tuple)) and all(_is_int(v) and v >= 1 for v in value) and (value or not at_least_one)
    if not ok:
        what = "a non-empty list of positive integers" if at_least_one else "a list of positive integers"
        raise ConfigError(f"{name} must be {what}, {got(value)}; e.g. {example}")
    return list(value)


def positive_float(name: str, value: Any) -> float:
    """``value`` if it is a finite real number > 0 (bools and strings refused), else ConfigError."""
    if not _is_number(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number (finite, > 0), {got(value)}")
    return float(value)


def optional_positive_float(name: str, value: Any) -> float | None:
    """None, or :func:`positive_float`."""
    return None if value is None else positive_float(name, value)


def number(name: str, value: Any, *, above: float | None = None, minimum: float | None = None) -> float:
    """``value`` if it is a finite real number, > ``above`` and >= ``minimum`` where given, else ConfigError."""
    ok = _is_number(value) and (above is None or value > above) and (minimum is None or value >= minimum)
    if not ok:
        bounds = " and ".join(([f"> {above:g}"] if above is not None else []) + ([f">= {minimum:g}"] if minimum is not None else []))
        raise ConfigError(f"{name} must be {bounds or 'a number'} (a finite number), {got(value)}")
    return float(value)


def fraction(name: str, value: Any, *, closed: bool = True, below_one: bool = False) -> float:
    """``value`` in [0, 1] ((0, 1] with ``closed=False``, [0, 1) with ``below_one=True``), else ConfigError."""
    low_ok = _is_number(value) and (0 <= value if closed else 0 < value)
    ok = low_ok and (value < 1 if below_one else value <= 1)
    if not ok:
        interval = ("[0, " if closed else "(0, ") + ("1)" if below_one else "1]")
        raise ConfigError(f"{name} must be in {interval}, {got(value)}")
    return float(value)


def check_fractions(val_fraction: Any, test_fraction: Any, prefix: str = "") -> None:
    """ConfigError unless both fractions are finite numbers in [0, 1) leaving rows to train on."""
    for key, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        fraction(f"{prefix}{key}", v, below_one=True)
    if val_fraction + test_fraction >= 1:
        raise ConfigError(f"{prefix}val_fraction + {prefix}test_fraction = {val_fraction + test_fraction:g} leaves no training "
                          "data (nothing left to train on); keep the sum below 1")


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is True or False (not 1, not "yes"), else ConfigError."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, {got(value)}")
    return value


def name_string(name: str, value: Any, *, what: str = "a name") -> str:
    """``value`` if it is a non-empty string, else ConfigError saying it must be ``what`` (non-empty text)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be {what} (non-empty text), {got(value)}")
    return value


def path_like(name: str, value: Any, *, optional: bool = False) -> Any:
    """``value`` if it is a non-empty string or ``os.PathLike`` (or None with ``optional``), else ConfigError."""
    if value is None and optional:
        return None
    if isinstance(value, os.PathLike) or (isinstance(value, str) and value.strip()):
        return value
    raise ConfigError(f"{name} must be a path (text){' or null' if optional else ''}, {got(value)}")


def seed(name: str, value: Any, *, optional: bool = False) -> int | None:
    """``value`` if it is an int in [0, 2**32) (or None with ``optional``), else ConfigError."""
    if value is None and optional:
        return None
    if not _is_int(value) or not 0 <= value < SEED_LIMIT:
        raise ConfigError(f"{name} must be an integer in [0, 2**32){' or None' if optional else ''}, {got(value)}")
    return value


def mapping(name: str, value: Any, *, optional: bool = False) -> Any:
    """``value`` if it is a mapping (or None with ``optional``), else ConfigError."""
    if (value is None and optional) or isinstance(value, collections.abc.Mapping):
        return value
    raise ConfigError(f"{name} must be a mapping of names to values, {got(value)}")


def choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else ConfigError listing them."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")
    return value


def float_rows(name: str, x: Any, *, min_rows: int = 1, why: str = "") -> torch.Tensor:
    """``x`` if it is a floating-point tensor (N, D) with N >= ``min_rows`` (``why`` says why) and finite values, else DataError."""
    if not torch.is_tensor(x):
        raise DataError(f"{name} must be a torch tensor of rows (N, D), {got(x)}; convert it with "
                        "torch.as_tensor(x, dtype=torch.float32)")
    if x.dim() != 2:
        raise DataError(f"{name} must be 2-D rows (N, D), got shape {tuple(x.shape)}; flatten images with "
                        "x.reshape(len(x), -1), or use x.reshape(1, -1) for one row")
    if not x.is_floating_point():
        raise DataError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; convert it with x.float()")
    if x.shape[0] < min_rows:
        raise DataError(f"{name} has {x.shape[0]} row(s); at least {min_rows} are needed{f' ({why})' if why else ''}: "
                        "give more rows")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        row, col = (int(i) for i in (~finite).nonzero()[0])
        raise DataError(f"{name} holds {int((~finite).sum())} non-finite value(s) (first: {float(x[row, col])} at row "
                        f"{row}, feature {col}); remove or impute them")
    return x


# -- values against type annotations (component options) ------------------------------------------
def matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` has the type ``annotation`` (int, float, bool, str, None, X | Y, Sequence[X], ...).

    Strict: a bool is not an int, 2.0 is not an int, a string is not a number or a sequence, and a
    float must be finite. Annotations this does not understand accept every value.
    """
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in typing.get_args(annotation))
    if annotation is None or annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return _is_int(value)
    if annotation is float:
        return _is_number(value)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis] or [Any]
        return isinstance(value, (list, tuple)) and all(matches(v, args[0]) for v in value)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _as_written(value: Any) -> str:
    """``value`` as a config file writes it (true, null, [200, 200], 0.1, 'relu')."""
    if isinstance(value, str):
        return repr(value)
    try:
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    except TypeError:
        return repr(value)


def describe(annotation: Any) -> str:
    """A type annotation in words ("an integer", "a list of integers or an integer", ...)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(annotation))
    if origin in (list, tuple, collections.abc.Sequence):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis] or [Any]
        plural = {int: "integers", float: "finite numbers", str: "names", bool: "true/false values"}
        return f"a list of {plural.get(args[0], 'values')}"
    words = {bool: "true or false", int: "an integer", float: "a finite number", str: "a name (text)",
             type(None): "null", None: "null"}
    return words.get(annotation, f"a {getattr(annotation, '__name__', annotation)}")


def check_type(name: str, value: Any, annotation: Any, *, example: Any = None) -> Any:
    """``value`` if it :func:`matches` ``annotation``, else ConfigError saying what to give (with ``example``)."""
    if not matches(value, annotation):
        hint = f"; e.g. {_as_written(example)}" if example is not None else ""
        raise ConfigError(f"{name} must be {describe(annotation)}, {got(value)}{hint}")
    return value


__all__ = [
    "got", "integer", "positive_int", "optional_positive_int", "positive_ints", "positive_float", "optional_positive_float", "number",
    "fraction", "check_fractions", "boolean", "name_string", "path_like", "seed", "mapping", "choice", "float_rows", "matches",
    "describe", "check_type",
]
