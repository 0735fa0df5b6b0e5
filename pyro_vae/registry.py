"""One tiny registry class, used once per kind of component.

A registry maps a name to a factory (a function or class). ``build(name, **options)`` calls
the factory; an unknown name raises :class:`~pyro_vae.errors.ConfigError` listing the valid
names, an unknown option raises one naming the accepted options, and an option of the wrong
type (``components: "ten"``, ``components: 2.7``, ``sigma: .inf``) raises one naming the option,
the value and the type its factory declares: the keyword-only parameters' annotations (or, without
one, the default's type) are the options' types, so every component is checked the same way and
nothing is coerced. Values inside the type's range (``components >= 1``) are the factory's to check.

Adding a component is one decorator::

    from pyro_vae.priors import PRIORS

    @PRIORS.register("my_prior")
    def my_prior(latent_dim: int, *, context, scale: float = 1.0):
        ...
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Generic, Iterator, TypeVar

from pyro_vae.checks import check_type
from pyro_vae.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> factory mapping for one kind of component (``kind`` is used in messages)."""

    def __init__(self, kind: str, reserved: tuple[str, ...] = ()) -> None:
        self.kind = kind
        # keyword-only parameters the library passes itself (never user options); "context" always is one
        self.reserved = ("context", *reserved)
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str, factory: Callable[..., T] | None = None) -> Any:
        """Register ``factory`` under ``name``; usable as ``@REG.register("name")``."""

        def add(f: F) -> F:
            if name in self._factories and self._factories[name] is not f:
                raise ConfigError(f"a {self.kind} named {name!r} is already registered")
            self._factories[name] = f
            return f

        return add(factory) if factory is not None else add

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; unknown names (and non-names) list the valid ones."""
        try:
            return self._factories[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s are: {', '.join(self.names())}"
            ) from None

    def build(self, name: str, *args: Any, **options: Any) -> T:
        """Call the factory for ``name`` with ``args`` and ``options``; bad options are named."""
        factory = self.get(name)
        self.check_options(name, {k: v for k, v in options.items() if k not in self.reserved})
        return factory(*args, **options)

    def check_options(self, name: str, options: dict[str, Any]) -> None:
        """Raise ConfigError if ``options`` are not keyword parameters of the factory, or not of their types."""
        accepted = self.options(name)
        if accepted is not None:
            unknown = sorted(set(options) - set(accepted), key=str)
            if unknown:
                raise ConfigError(
                    f"{self.kind} {name!r} got unknown option(s) {unknown}; "
                    f"it accepts: {', '.join(accepted) or '(no options)'}"
                )
        types = self.option_types(name)
        for key, value in options.items():
            if key in types:
                annotation, default = types[key]
                check_type(f"{self.kind} {name!r} option {key}", value, annotation, example=default)

    def option_types(self, name: str) -> dict[str, tuple[Any, Any]]:
        """{option: (type, default)} of ``name``'s keyword-only parameters.

        The type is the parameter's annotation, or without one the type of its default (int, float,
        bool or str); options with neither are left out (any value is passed to the factory).
        """
        factory = self.get(name)
        target = factory.__init__ if isinstance(factory, type) else factory
        try:
            hints = typing.get_type_hints(target)
        except (NameError, TypeError, AttributeError):  # an annotation not resolvable here: use the defaults
            hints = {}
        out = {}
        for p in inspect.signature(factory).parameters.values():
            if p.kind is not p.KEYWORD_ONLY or p.name in self.reserved:
                continue
            default = None if p.default is p.empty else p.default
            annotation = hints.get(p.name)
            if annotation is None and type(default) in (int, float, bool, str):
                annotation = type(default)
            if annotation is not None:
                out[p.name] = (annotation, default)
        return out

    def options(self, name: str) -> list[str] | None:
        """The user-settable options of ``name`` (keyword-only params), or None if it takes **kwargs."""
        sig = inspect.signature(self.get(name))
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return None
        return [
            p.name
            for p in sig.parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in self.reserved
        ]

    def describe(self, name: str) -> str:
        """First line of the factory's docstring."""
        doc = inspect.getdoc(self.get(name)) or ""
        return doc.splitlines()[0] if doc else ""

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


class BuildContext:
    """What a component factory may need to know about the model it is built into.

    Attributes:
        latent_dim: dimension of z.
        data_dim: number of features D of one (flattened) datapoint x.
        image_shape: spatial shape of x for image data ((H, W) or (C, H, W)), else None.
        role: ``"encoder"`` or ``"decoder"`` when a network is built, else None.
        posterior: the amortized q_phi(z | x) as a function x -> distribution (VampPrior uses it).
        data_sample: a few training rows (N, D), for data-dependent initialization, or None.
    """

    def __init__(
        self,
        latent_dim: int,
        data_dim: int,
        image_shape: tuple[int, ...] | None = None,
        role: str | None = None,
        posterior: Callable[[Any], Any] | None = None,
        data_sample: Any = None,
    ) -> None:
        self.latent_dim = latent_dim
        self.data_dim = data_dim
        self.image_shape = image_shape
        self.role = role
        self.posterior = posterior
        self.data_sample = data_sample

    def with_role(self, role: str) -> "BuildContext":
        return BuildContext(
            self.latent_dim, self.data_dim, self.image_shape, role, self.posterior, self.data_sample
        )
