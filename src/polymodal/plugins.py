"""Plugins: modules that register encoders, processors, fusion modules, heads or losses, so that recipes and the
command line can name them (a new modality from outside polymodal).

An installed package declares its module as an entry point of the group ``polymodal.plugins``
(``[project.entry-points."polymodal.plugins"] depth = "my_package.depth"``); ``POLYMODAL_PLUGINS`` names more,
comma-separated module names importable from the working directory or ``sys.path``. The command line imports them
all before it runs a command; a Python program imports its own modules.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import traceback
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "polymodal.plugins"
PLUGINS_ENV = "POLYMODAL_PLUGINS"


class PluginError(ImportError):
    """A plugin that does not import: named with where it was declared and its error."""


@functools.cache
def load_plugins() -> tuple[str, ...]:
    """Import every plugin once (entry points, then ``POLYMODAL_PLUGINS``); the modules imported."""
    declared = [(ep.value.split(":")[0], f"entry point {ep.name!r} of {_package(ep)}") for ep in _entry_points()]
    named = [name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip()]
    if named and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # a module beside the user's recipe, as `python -m` would find it
    declared += [(name, f"{PLUGINS_ENV}") for name in named]
    for module, origin in declared:
        try:
            importlib.import_module(module)
        except Exception as e:  # a plugin's own bug or a missing dependency: said as such, not as polymodal's
            last = traceback.extract_tb(e.__traceback__)[-1]
            raise PluginError(
                f"plugin {module} ({origin}) failed to import: {type(e).__name__}: {e} "
                f"({last.filename}, line {last.lineno})"
            ) from e
    return tuple(module for module, _ in declared)


def _entry_points() -> list:  # type: ignore[type-arg]
    return list(entry_points(group=ENTRY_POINT_GROUP))


def _package(ep: object) -> str:
    dist = getattr(ep, "dist", None)
    return f"package {dist.name}" if dist is not None else "an installed package"
