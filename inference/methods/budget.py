"""How long a method may train: epochs, seconds of training wall time, or training samples evaluated.

``Budget.parse("60s")``, ``"2min"``, ``"20epochs"``, ``"1e6samples"``, or several joined by commas;
with several, training stops at the first reached.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pyro_vae.checks import got, number, optional_positive_int
from pyro_vae.errors import ConfigError


_BUDGET_TERM = re.compile(
    r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>s|sec|secs|seconds?|m|min|minutes?|epochs?|samples?)\s*$"
)


@dataclass(frozen=True)
class Budget:
    """How long a method may train: ``epochs``, ``seconds`` of wall time, training ``samples``
    evaluated. Any combination; training stops when the first is reached; at least one is set."""

    epochs: int | None = None
    seconds: float | None = None
    samples: int | None = None

    def __post_init__(self) -> None:
        if self.epochs is None and self.seconds is None and self.samples is None:
            raise ConfigError("a Budget needs epochs, seconds or samples, e.g. Budget(epochs=20) or Budget.parse('60s')")
        for name in ("epochs", "samples"):
            optional_positive_int(f"budget {name}", getattr(self, name))
        if self.seconds is not None:
            number("budget seconds", self.seconds, above=0)

    @classmethod
    def parse(cls, text: str | "Budget") -> "Budget":
        """``"60s"``, ``"2min"``, ``"20epochs"``, ``"1e6samples"``, or several joined by commas ("60s,20epochs")."""
        if isinstance(text, Budget):
            return text
        if not isinstance(text, str):
            raise ConfigError(f"budget must be text such as '60s', '2min', '20epochs' or '1e6samples', or a Budget, {got(text)}")
        if not text.strip():
            raise ConfigError(f"budget {text!r} is empty; write e.g. 60s, 2min, 20epochs or 1e6samples")
        found: dict[str, float] = {}
        for term in text.split(","):
            m = _BUDGET_TERM.match(term)
            if m is None:
                raise ConfigError(
                    f"cannot read budget {term.strip()!r}: write a number and a unit, e.g. 60s, 2min, 20epochs or "
                    "1e6samples (several joined by commas: training stops at the first reached)"
                )
            value, unit = float(m["num"]), m["unit"].lower()
            key = "epochs" if unit.startswith("epoch") else "samples" if unit.startswith("sample") else "seconds"
            if unit in ("m", "min", "minute", "minutes"):
                value *= 60.0
            if key in found:
                raise ConfigError(f"budget {text!r} gives {key} twice")
            if key != "seconds":
                if value != int(value) or value < 1:
                    raise ConfigError(f"budget {term.strip()!r}: {key} must be a positive whole number")
                value = int(value)
            found[key] = value
        return cls(**found)

    def max_epochs(self, samples_per_epoch: int) -> int | None:
        """The epoch limit implied by ``epochs`` and ``samples`` (ceil(samples / samples_per_epoch)); None if neither."""
        limits = []
        if self.epochs is not None:
            limits.append(self.epochs)
        if self.samples is not None:
            limits.append(max(1, math.ceil(self.samples / max(1, samples_per_epoch))))
        return min(limits) if limits else None

    def __str__(self) -> str:
        parts = []
        if self.epochs is not None:
            parts.append(f"{self.epochs} epochs")
        if self.seconds is not None:
            parts.append(f"{self.seconds:g} s")
        if self.samples is not None:
            parts.append(f"{self.samples:.3g} samples")
        return " or ".join(parts)



__all__ = ["Budget"]
