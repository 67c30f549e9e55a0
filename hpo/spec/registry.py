"""Name -> factory registries for samplers and pruners, with options checked against signatures."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from hpo.errors import HpoError

T = TypeVar("T")


class Registry(Generic[T]):
    """Builds objects by name from user options, refusing unknown names and unknown options."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._hidden: dict[str, set[str]] = {}

    def register(
        self, name: str, factory: Callable[..., T], *, hidden: tuple[str, ...] = ()
    ) -> None:
        """Register ``factory`` under ``name``; ``hidden`` options are supplied by hpo, not users."""
        self._factories[name] = factory
        self._hidden[name] = set(hidden)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def allowed_options(self, name: str) -> list[str]:
        factory = self._factory(name)
        params = inspect.signature(factory).parameters.values()
        return sorted(
            p.name
            for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in self._hidden[name]
        )

    def check(self, name: str, options: Mapping[str, Any]) -> None:
        """Raise HpoError naming the first unknown option."""
        allowed = self.allowed_options(name)
        for key in options:
            if key not in allowed:
                raise HpoError(
                    f"unknown option {key!r} for {self.kind} {name!r}; "
                    f"allowed: {', '.join(allowed) or '(none)'}"
                )

    def build(self, name: str, options: Mapping[str, Any], **context: Any) -> T:
        """Build ``name`` from user ``options`` plus the ``context`` values its factory accepts."""
        self.check(name, options)
        factory = self._factory(name)
        accepted = inspect.signature(factory).parameters
        hidden = {k: v for k, v in context.items() if k in accepted and k in self._hidden[name]}
        try:
            return factory(**dict(options), **hidden)
        except HpoError:
            raise
        except (TypeError, ValueError) as exc:
            raise HpoError(f"bad options for {self.kind} {name!r}: {exc}") from exc

    def _factory(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            raise HpoError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None
