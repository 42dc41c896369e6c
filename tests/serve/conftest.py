"""Fixtures: the tiny saved models (from tests/conftest.py), a handful of PNGs, an index over them, clients."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import polymodal
from polymodal.api import Model
from polymodal.serve import ServeSettings, create_app
from polymodal.serve.search import IndexDirectory
from tests.serve.fakes import FakeIndex

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (40, 60, 220),
    "yellow": (240, 210, 30),
    "purple": (140, 40, 170),
    "cyan": (30, 200, 210),
}


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode()


def shape_image(color: str, size: int = 48) -> Image.Image:
    """A coloured disc on white: different colours give different embeddings even from an untrained model."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    pixels = np.full((size, size, 3), 255, dtype=np.uint8)
    pixels[disc] = COLORS[color]
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("images")
    for color in COLORS:
        shape_image(color).save(directory / f"{color}.png")
    return directory


@pytest.fixture(scope="session")
def model(tiny_dual_encoder_dir: Path) -> Model:
    return polymodal.load(tiny_dual_encoder_dir, batch_size=64)


@pytest.fixture(scope="session")
def index_dir(
    model: Model, image_dir: Path, tiny_dual_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A real FAISS + SQLite index of the PNGs, built with the tiny model (recorded so `serve` can reload it)."""
    from polymodal.index import build_index

    out = tmp_path_factory.mktemp("index") / "index"
    build_index(image_dir, out, model, model_ref=str(tiny_dual_encoder_dir))
    return out


@pytest.fixture(scope="session")
def fake_index(model: Model, image_dir: Path) -> FakeIndex:
    """The same images plus texts, searched by brute force: a reference, and text hits for the page."""
    return FakeIndex.build(model, sorted(image_dir.glob("*.png")), texts=[f"a {c} circle" for c in COLORS])


@pytest.fixture(scope="session")
def client(model: Model, index_dir: Path) -> Iterator[TestClient]:
    """The server over the tiny dual encoder and the real index, default settings."""
    with TestClient(create_app(model, IndexDirectory(index_dir))) as test_client:
        yield test_client


def make_client(model: Model, index: object = None, **settings: object) -> TestClient:
    return TestClient(create_app(model, index, ServeSettings(**settings)))  # type: ignore[arg-type]
