"""Example images as small PNG thumbnails (at most 128 px a side), decoded once per file; :func:`thumbnail` makes
the frames of video strips too."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

from polymodal.data.errors import BadSampleError
from polymodal.data.image import decode_image
from polymodal.report.blocks import Asset

THUMB_PX = 128


class Thumbnails:
    """Path -> thumbnail cache: a gallery image that appears in many retrieval rows is decoded,
    resized and (in Markdown) written once."""

    def __init__(self, size: int = THUMB_PX) -> None:
        self.size = size
        self._cache: dict[str, tuple[Asset | None, str | None]] = {}

    def get(self, path: str) -> tuple[Asset | None, str | None]:
        """(thumbnail, None), or (None, reason naming the file) when the file is missing or not an image."""
        if path not in self._cache:
            self._cache[path] = self._make(path)
        return self._cache[path]

    def _make(self, path: str) -> tuple[Asset | None, str | None]:
        try:
            # decode_image refuses decompression bombs and normalises every mode to RGB.
            image = decode_image(path)
        except BadSampleError as e:
            return None, f"{path}: {e.reason}"
        return thumbnail(image, self.size, path_slug("img", path), Path(path).name), None


def path_slug(prefix: str, path: str) -> str:
    """An asset name from the source path's hash: stable across runs, no untrusted text in file names."""
    return f"{prefix}-{hashlib.sha256(path.encode()).hexdigest()[:16]}"


def thumbnail(image: Image.Image, size: int, slug: str, alt: str) -> Asset:
    """``image`` shrunk (in place) to at most ``size`` px a side, keeping its aspect, as a PNG asset."""
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return Asset(slug=slug, png=buffer.getvalue(), alt=alt, width=image.width, height=image.height)
