"""Name -> builder lookups.

A registry holds builder functions (or classes) and nothing else: no hidden state, no
dataset objects. ``describe()`` reads each builder's signature so that ``polymodal models``
can list parameters and defaults from the code itself, never from a copy that could drift.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T", bound=Callable[..., Any])

# What a recipe can hold as a name, a manifest column or a ``--set`` path segment (``hf_text``, ``shapes-clip``):
# no whitespace, '/', '.', ':' or quotes.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class Registry(Generic[T]):
    """``check(name, builder)``, if given, refuses (raises) what this kind of registry cannot hold."""

    def __init__(self, kind: str, check: Callable[[str, T], None] | None = None) -> None:
        self.kind = kind
        self._check = check
        self._builders: dict[str, T] = {}

    @overload
    def register(self, name: str | None = None) -> Callable[[T], T]: ...

    @overload
    def register(self, name: T) -> T: ...

    def register(self, name: Any = None) -> Any:
        """``@REG.register("name")``; ``@REG.register()`` or ``@REG.register`` register under ``__name__``."""
        if callable(name):  # `@REG.register` without (): what it was given is the builder
            return self._add(None, name)
        if name is not None and not isinstance(name, str):
            raise TypeError(
                f"{self.kind} name must be a string, got {name!r} ({type(name).__name__}); "
                f'pass a string: register("my_{_slug(self.kind)}")'
            )
        return lambda builder: self._add(name, builder)

    def _add(self, name: str | None, builder: T) -> T:
        if not callable(builder):
            raise TypeError(
                f"{self.kind}{f' {name!r}' if name else ''}: the builder must be a class or function, got {builder!r} "
                f"({type(builder).__name__})"
            )
        key = getattr(builder, "__name__", "") if name is None else name
        if not key:
            raise ValueError(f'{self.kind} name is empty; pass one: register("my_{_slug(self.kind)}")')
        if not NAME_PATTERN.fullmatch(key):
            suggestion = _slug(key)
            raise ValueError(
                f"{self.kind} name {key!r} cannot be written in a recipe: use letters, digits, '_' and '-', "
                f"starting with a letter or digit"
                + (f" (e.g. {suggestion!r})" if suggestion else "")
                + ('; pass a name: register("...")' if name is None else "")
            )
        if key in self._builders:
            raise ValueError(f"{self.kind} {key!r} is registered twice")
        if self._check is not None:
            self._check(key, builder)
        self._builders[key] = builder
        return builder

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


def _slug(text: str) -> str:
    """``text`` with every run of characters a name cannot hold turned into '_' (``my enc/v1`` -> ``my_enc_v1``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_-")


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


# Named directories a config or a call can give instead of a machine-specific path, as ``SCHEME:NAME``: scheme ->
# NAME -> directory. polymodal.pretrained adds ``pretrained`` (directories inside PyPI packages: pretrained:minilm).
PATH_SCHEMES: Registry[Callable[[str], str | os.PathLike[str]]] = Registry("path scheme")


def resolve_path(path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """``SCHEME:NAME`` of a registered scheme -> that scheme's directory for NAME; any other path unchanged."""
    scheme, sep, name = str(path).partition(":")
    return PATH_SCHEMES.get(scheme)(name) if sep and scheme in PATH_SCHEMES else path
