"""Each layer of polymodal imports only the layers below it, checked on the source (AST), not by importing it.

Every import counts: inside functions, under ``if TYPE_CHECKING:`` (a type-only upward import is still an
upward dependency), relative ones, and ``importlib.import_module("polymodal...")`` with a literal name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

# The single source of truth for the layering: top-level module or package -> layer, bottom first.
# Names on one layer are peers and may not import each other; a new package must be placed here.
LAYERS: dict[str, int] = {
    **dict.fromkeys(["version", "registry", "fsutil", "hardware", "progress", "chunking", "config", "plugins"], 0),
    **dict.fromkeys(["data", "metrics", "weights"], 1),  # weights: its read errors are fsutil's
    "modules": 2,
    "pretrained": 3,
    "models": 4,
    "interop": 5,
    "backends": 6,
    **dict.fromkeys(["train", "evaluate", "export"], 7),
    "report": 8,
    "fit": 9,
    "api": 10,
    "index": 11,
    "serve": 12,
    "cli": 13,
    # The entry points, above everything: `polymodal.load` (the package's __init__) and `python -m polymodal`.
    **dict.fromkeys(["__init__", "__main__"], 14),
}

SRC = Path(__file__).resolve().parents[1] / "src" / "polymodal"


def top_level_names(root: Path) -> set[str]:
    """Top-level modules (``x.py``) and packages (directories holding any .py) under a package root."""
    names = {p.stem for p in root.glob("*.py")}
    names |= {d.name for d in root.iterdir() if d.is_dir() and d.name != "__pycache__" and any(d.rglob("*.py"))}
    return names


def _imports(tree: ast.AST, package: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """(line, dotted module) for every import in ``tree``; ``package`` resolves relative imports."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module or ""
            if module == package[0]:  # `from polymodal import api`: the names may be submodules
                yield from ((node.lineno, f"{module}.{alias.name}") for alias in node.names)
            else:
                yield node.lineno, module
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def layer_violations(root: Path, layers: dict[str, int]) -> list[str]:
    """``file:line  layer -> layer (module)`` for every import that goes up a layer or sideways to a peer."""
    names = top_level_names(root)
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        source = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        package = (root.name, *rel.parts[:-1])
        for line, module in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path)), package):
            parts = module.split(".")
            if parts[0] != root.name:
                continue
            # `polymodal.__version__` (or plain `import polymodal`) reaches the package's own __init__.
            target = parts[1] if len(parts) > 1 and parts[1] in names else "__init__"
            if target == source or source not in layers or target not in layers:
                continue  # unplaced names fail in test_every_top_level_package_has_a_layer
            if layers[target] >= layers[source]:
                out.append(
                    f"{root.name}/{rel}:{line}  {layers[source]} {source} -> {layers[target]} {target} ({module})"
                )
    return out


def unplaced(root: Path, layers: dict[str, int]) -> list[str]:
    return sorted(top_level_names(root) - set(layers))


def test_every_top_level_package_has_a_layer():
    missing = unplaced(SRC, LAYERS)
    assert not missing, f"place these in tests/test_layers.py LAYERS: {', '.join(missing)}"
    stale = sorted(set(LAYERS) - top_level_names(SRC))
    assert not stale, f"LAYERS names modules that no longer exist: {', '.join(stale)}"


def test_each_layer_imports_only_the_layers_below():
    bad = layer_violations(SRC, LAYERS)
    assert not bad, "imports that go up a layer or sideways to a peer:\n" + "\n".join(bad)


# (statement in pkg/low/mod.py, the module reported): every form of one upward import.
UPWARD = [
    ("import pkg.high.deep", "pkg.high.deep"),
    ("from pkg.high import thing", "pkg.high"),
    ("from pkg import high", "pkg.high"),
    ("from ..high import thing", "pkg.high"),
    ("def f():\n    from pkg.high.deep import thing", "pkg.high.deep"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high import thing", "pkg.high"),
    ("import importlib\nimportlib.import_module('pkg.high')", "pkg.high"),
]


@pytest.mark.parametrize(("statement", "module"), UPWARD)
def test_checker_reports_an_upward_import(tmp_path, statement, module):
    """A synthetic tree, so the checker cannot silently pass: the one upward import is reported, nothing else."""
    root = tmp_path / "pkg"
    for rel, text in {
        "__init__.py": "__version__ = '0'\n",
        "low/__init__.py": "from pkg import __version__\n",  # down to the root: fine
        "low/mod.py": "import os\n\n" + statement + "\n",
        "high/__init__.py": "from ..low import mod\nfrom . import deep\n",  # down, and within itself: fine
        "high/deep.py": "thing = 1\n",
        "peer.py": "",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    layers = {"__init__": 0, "low": 1, "peer": 1, "high": 2}
    line = 3 + statement.count("\n")
    assert layer_violations(root, layers) == [f"pkg/low/mod.py:{line}  1 low -> 2 high ({module})"]

    (root / "peer.py").write_text("from pkg.low import mod\n")  # sideways between peers
    (root / "extra").mkdir()
    (root / "extra" / "__init__.py").write_text("")
    assert "pkg/peer.py:1  1 peer -> 1 low (pkg.low)" in layer_violations(root, layers)
    assert unplaced(root, layers) == ["extra"]
