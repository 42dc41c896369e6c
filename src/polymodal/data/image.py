"""Image decoding that never trusts its input.

:func:`decode_image` turns a path or bytes into an RGB ``PIL.Image`` or raises a
:class:`~polymodal.data.errors.BadSampleError` that says why: missing, empty, not an image,
truncated, or a decompression bomb (checked from the header, before any pixels are decoded).
EXIF orientation is applied, and every mode (L, LA, P with transparency, RGBA, CMYK, I;16,
I, F ...) becomes 8-bit RGB, with transparency composited on white. An in-memory PIL image or
numpy array (HW/HWC, uint8 or float 0..1) is converted the same way.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from polymodal.data.errors import BadSampleError, media_errors, open_media
from polymodal.data.schema import MediaRef

# Far above any real training image (e.g. 16k x 11k), far below what fits a small file that
# expands to gigabytes. Checked against the header's width x height before decoding.
DEFAULT_MAX_PIXELS = 178_956_970

# What a decoded image keeps at most: a 16 MP photo as it is; a larger scan (or a bomb under the limit above) is
# reduced by a whole factor as it is decoded (a JPEG at a smaller scale straight away), since no model input is
# that large and a batch may hold many decoded images. Embeddings of images up to this size do not change.
DECODED_PIXELS = 16_000_000

_BACKGROUND = (255, 255, 255)


def to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit-depth greyscale: rescale the actual value range to 0..255 rather than
        # clipping (a 16-bit scan would otherwise be almost all white).
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.nan_to_num(scaled).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        # Palette images may carry transparency in their info dict; go through RGBA so that
        # transparent pixels become background, not the palette's arbitrary colour.
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        if img.mode == "RGB":
            return img
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def decode_image(
    ref: MediaRef | Image.Image | np.ndarray,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    source: str | None = None,
    row: int | None = None,
    field: str = "image",
) -> Image.Image:
    """Decode ``ref`` (path or encoded bytes; a PIL image or numpy array is converted) into an RGB image, or raise
    BadSampleError.

    ``source``/``row`` name where the reference came from (e.g. the manifest and line), so the
    error points at the row to fix; for a path the path itself is named as well.
    """

    bad = media_errors(ref, source, row, field)
    if isinstance(ref, Image.Image):
        return to_rgb(ref)
    if isinstance(ref, np.ndarray):
        return _from_array(ref, bad)
    handle = open_media(ref, bad, expected="a path, bytes, a PIL image or a numpy array")
    if isinstance(handle, Path):
        try:
            data = handle.read_bytes()
        except OSError as e:
            raise bad(f"cannot read file ({e.strerror})", "unreadable") from None
    else:
        data = handle.getvalue()

    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise bad(
                    f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,} (possible decompression bomb)",
                    "too_large",
                )
            _load_within(img, DECODED_PIXELS)
            if img.width * img.height > DECODED_PIXELS:
                img = _reduced(img, DECODED_PIXELS)
    except BadSampleError:
        raise
    except Image.DecompressionBombError as e:
        raise bad(f"decompression bomb: {e}", "too_large") from None
    except Image.UnidentifiedImageError:
        head = data[:16]
        hint = " (looks like text)" if _looks_like_text(head) else ""
        raise bad(f"not a recognised image format{hint}", "not_an_image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # PIL reports truncated data as OSError("image file is truncated ...") and corrupt
        # headers as SyntaxError/ValueError depending on the plugin.
        kind = "truncated" if "truncated" in str(e).lower() else "corrupt"
        raise bad(f"cannot decode image: {e}", kind) from None

    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the pixels
        pass
    return to_rgb(img)


def _from_array(array: np.ndarray, bad: Callable[[str, str], BadSampleError]) -> Image.Image:
    """HWC or HW arrays, uint8 0..255 or float 0..1 (the two conventions numpy image code uses)."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        raise bad(f"array of shape {array.shape} looks channels-first; pass (H, W, C)", "invalid")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)):
        raise bad(f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}", "invalid")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise bad(f"expected uint8 or float pixels, got {array.dtype}", "invalid")
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1):
            raise bad("float pixels must lie in [0, 1]", "invalid")
        array = np.round(np.nan_to_num(array) * 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return to_rgb(Image.fromarray(array))


def _load_within(img: Image.Image, pixels: int) -> None:
    """Decode ``img``; a JPEG over ``pixels`` at the largest of libjpeg's scales (1/2, 1/4, 1/8) it still exceeds."""
    if img.format == "JPEG" and img.width * img.height > pixels:
        factor = math.sqrt(img.width * img.height / pixels)
        img.draft(img.mode, (math.ceil(img.width / factor), math.ceil(img.height / factor)))
    img.load()


def _reduced(img: Image.Image, pixels: int) -> Image.Image:
    """``img`` reduced by the smallest whole factor that fits ``pixels`` (box filter; palette images in RGB)."""
    factor = math.ceil(math.sqrt(img.width * img.height / pixels))
    try:
        return img.reduce(factor)
    except ValueError:  # modes reduce does not take (palette, 16-bit): in RGB first
        return to_rgb(img).reduce(factor)


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(b >= 9 for b in head)
