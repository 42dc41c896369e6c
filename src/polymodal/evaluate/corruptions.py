"""Image corruptions at five severities (numpy + Pillow), after Hendrycks & Dietterich's ImageNet-C.

Each corruption is ``fn(image, severity, rng) -> image`` with severity 1..5 (0 = unchanged).
Gaussian noise draws from the ``rng`` it is given; :func:`corrupt` seeds that rng from
(seed, corruption, severity, item index) so every image gets its own noise and a rerun gets the
same noise, whatever the batch order.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

SEVERITIES = (1, 2, 3, 4, 5)
# ImageNet-C's parameters, rescaled by image size where they are in pixels.
NOISE_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)  # std of N(0, s) on [0, 1] pixel values
BLUR_RADIUS = (1.0, 2.0, 3.0, 4.0, 6.0)  # Gaussian blur radius in pixels at 224 px, scaled to the image
JPEG_QUALITY = (25, 18, 15, 10, 7)


def _check(severity: int) -> int:
    if severity not in (0, *SEVERITIES):
        raise ValueError(f"severity must be 0..5, got {severity}")
    return severity


def gaussian_noise(image: Image.Image, severity: int, rng: np.random.Generator) -> Image.Image:
    """Additive Gaussian noise on [0, 1] pixels, clipped."""
    if _check(severity) == 0:
        return image
    x = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    x = x + rng.normal(0.0, NOISE_SIGMA[severity - 1], size=x.shape).astype(np.float32)
    return Image.fromarray((np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def blur(image: Image.Image, severity: int, rng: np.random.Generator | None = None) -> Image.Image:
    """Gaussian blur; the radius scales with the image so a severity means the same at 32 px and 224 px."""
    if _check(severity) == 0:
        return image
    radius = BLUR_RADIUS[severity - 1] * min(image.size) / 224.0
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius=max(radius, 0.5)))


def jpeg(image: Image.Image, severity: int, rng: np.random.Generator | None = None) -> Image.Image:
    """Re-encode as JPEG at a low quality (block artefacts, colour bleeding)."""
    if _check(severity) == 0:
        return image
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY[severity - 1])
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


Corruption = Callable[[Image.Image, int, np.random.Generator], Image.Image]
CORRUPTIONS: dict[str, Corruption] = {"gaussian_noise": gaussian_noise, "blur": blur, "jpeg": jpeg}


def corrupt(image: Image.Image, name: str, severity: int, *, seed: int = 0, index: int = 0) -> Image.Image:
    """``image`` with corruption ``name`` at ``severity``; item ``index`` gets its own seeded rng."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    # crc32 (not hash()) so the stream does not change with PYTHONHASHSEED.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), severity, index])
    return CORRUPTIONS[name](image, severity, rng)
