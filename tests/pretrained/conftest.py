"""Pretrained towers, loaded once per test session (they take seconds); skipped without the packages."""

from __future__ import annotations

import importlib.util

import pytest

from polymodal.backends.conse import ConSEBackend
from polymodal.modules.encoders.efficientnet_lite import EfficientNetLite0
from polymodal.pretrained.imagenet import load_efficientnet_lite0
from polymodal.pretrained.locate import EFFICIENTNET_PACKAGE, MINILM_PACKAGE
from polymodal.pretrained.minilm import MiniLM
from polymodal.pretrained.photos import Photo, real_photos


def _require(*packages: str) -> None:
    for package in packages:
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (pip install 'polymodal[pretrained]')")


@pytest.fixture(scope="session")
def efficientnet() -> EfficientNetLite0:
    _require(EFFICIENTNET_PACKAGE)
    return load_efficientnet_lite0()


@pytest.fixture(scope="session")
def minilm() -> MiniLM:
    _require(MINILM_PACKAGE)
    return MiniLM.load()


@pytest.fixture(scope="session")
def conse() -> ConSEBackend:
    _require(EFFICIENTNET_PACKAGE, MINILM_PACKAGE)
    return ConSEBackend.load()


@pytest.fixture(scope="session")
def photos() -> list[Photo]:
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    return real_photos()
