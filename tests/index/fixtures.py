"""Shared fixtures for the index and CLI task tests: a tiny saved dual encoder and folders of small images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tiny_models import save_tiny_model


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model("dual_encoder", tmp_path_factory.mktemp("models") / "clip")


@pytest.fixture(scope="session")
def other_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture, other weights: a different identity."""
    return save_tiny_model("dual_encoder", tmp_path_factory.mktemp("models") / "clip-other", seed=1)


@pytest.fixture(scope="session")
def clip_model(tiny_clip: Path):  # type: ignore[no-untyped-def]
    import polymodal

    return polymodal.load(tiny_clip)


def write_images(folder: Path, n: int, *, seed: int = 0, prefix: str = "img") -> list[Path]:
    """``n`` distinct small PNGs (random blocks of colour) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8).repeat(10, 0).repeat(10, 1)  # (40, 40, 3)
        path = folder / f"{prefix}{i:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """12 good images plus two bad files: text named .png and an empty .jpg."""
    folder = tmp_path / "photos"
    write_images(folder, 12)
    (folder / "broken.png").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


def write_caption_manifest(folder: Path, n: int = 6) -> Path:
    """A JSONL manifest of ``n`` images with two captions each, plus a row pointing at a missing file."""
    paths = write_images(folder / "images", n)
    words = ["red", "blue", "green", "yellow", "purple", "cyan", "white", "black"]
    rows = [
        {"id": f"s{i}", "image": f"images/{p.name}", "text": [f"a {words[i % 8]} circle", f"two {words[i % 8]} stars"]}
        for i, p in enumerate(paths)
    ]
    rows.append({"id": "gone", "image": "images/missing.png", "text": ["lost"]})
    return write_manifest(folder / "captions.jsonl", rows)


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """``rows`` as a JSONL manifest at ``path``."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
