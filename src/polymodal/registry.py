"""Name -> builder lookups.

A registry holds builder functions (or classes) and nothing else: no hidden state, no
dataset objects. ``describe()`` reads each builder's signature so that ``polymodal models``
can list parameters and defaults from the code itself, never from a copy that could drift.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def wrap(builder: T) -> T:
            key = name or getattr(builder, "__name__", None)
            if not key:
                raise ValueError(f"{self.kind}: builder needs a name")
            if key in self._builders:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._builders[key] = builder
            return builder

        return wrap

    def unregister(self, name: str) -> T:
        """Remove and return a builder (a plugin or a test that registered one for a while)."""
        try:
            return self._builders.pop(name)
        except KeyError:
            raise KeyError(f"{self.kind} {name!r} is not registered") from None

    def get(self, name: str) -> T:
        try:
            return self._builders[name]
        except KeyError:
            known = ", ".join(sorted(self._builders)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def build(self, name: str, /, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._builders)

    def describe(self) -> list[dict[str, Any]]:
        """Name, one-line summary and parameters (name, default, annotation) of each builder."""
        rows = []
        for name in self.names():
            builder = self._builders[name]
            doc = inspect.getdoc(builder) or ""
            params = []
            for p in inspect.signature(builder).parameters.values():
                if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                params.append(
                    {
                        "name": p.name,
                        "default": None if p.default is p.empty else _jsonable(p.default),
                        "required": p.default is p.empty,
                        "type": _annotation(p.annotation),
                    }
                )
            rows.append({"name": name, "summary": doc.split("\n\n")[0].replace("\n", " "), "params": params})
        return rows


def _annotation(a: Any) -> str | None:
    if a is inspect.Parameter.empty:
        return None
    return a if isinstance(a, str) else getattr(a, "__name__", str(a))


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return repr(v)
