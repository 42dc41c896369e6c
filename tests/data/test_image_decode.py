"""decode_image on real files: every kind of bad input, EXIF orientation, and every pixel mode
becoming 8-bit RGB (transparency composited on white)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polymodal.data.errors import BadSampleError
from polymodal.data.image import decode_image


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height greyscale pixels, in under 200 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)  # a few rows; the header is what matters
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def rgb(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


@pytest.fixture
def photo() -> Image.Image:
    """40x20: left half red, right half blue, so orientation changes are visible."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    return Image.fromarray(arr)


def bad(ref, **kw) -> BadSampleError:
    with pytest.raises(BadSampleError) as info:
        decode_image(ref, **kw)
    return info.value


# --- bad input ------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    err = bad(str(tmp_path / "nope.jpg"))
    assert err.kind == "missing_file" and "nope.jpg" in str(err) and err.field == "image"


def test_zero_byte_file_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "empty.png").touch()
    assert bad(str(tmp_path / "empty.png")).kind == "empty_file"
    assert bad(b"").kind == "empty_file"


def test_directory(tmp_path: Path) -> None:
    assert bad(str(tmp_path)).kind == "unreadable"


@pytest.mark.parametrize("ref", [Path("/nonexistent/x.png"), 123])
def test_error_for_pathlike_or_wrong_type(ref) -> None:
    assert bad(ref).kind in ("missing_file", "invalid")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "fake.jpg"
    path.write_text("this is not an image, just some text\n")
    err = bad(str(path))
    assert err.kind == "not_an_image" and "looks like text" in str(err)
    assert bad(b"\x00\x01garbage\xff" * 8).kind == "not_an_image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path: Path, photo: Image.Image, fmt: str) -> None:
    data = encode(photo.resize((200, 100)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    err = bad(str(path))
    assert err.kind in ("truncated", "corrupt") and str(path) in str(err)


def test_decompression_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    data = bomb_png(100_000, 100_000)
    assert len(data) < 200
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    err = bad(str(path))
    assert err.kind == "too_large" and "bomb" in str(err)
    # Below PIL's own limit, our max_pixels decides.
    err = bad(bomb_png(3000, 3000), max_pixels=1_000_000)
    assert err.kind == "too_large" and "9,000,000 pixels" in str(err)


def test_error_names_manifest_row_and_path(tmp_path: Path) -> None:
    err = bad(str(tmp_path / "gone.png"), source="train.jsonl", row=7)
    assert (err.source, err.row, err.field) == ("train.jsonl", 7, "image")
    assert str(err).startswith("train.jsonl, row 7, field 'image': ") and "gone.png" in str(err)


# --- orientation and modes ------------------------------------------------------------------


def test_exif_orientation_6_swaps_size_and_rotates(tmp_path: Path, photo: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    path.write_bytes(encode(photo, "JPEG", exif=exif.tobytes(), quality=95))
    out = decode_image(str(path))
    assert out.size == (20, 40)
    arr = rgb(out)
    # A clockwise turn moves the left (red) half to the top.
    assert np.abs(arr[5, 10] - (255, 0, 0)).max() < 40 and np.abs(arr[35, 10] - (0, 0, 255)).max() < 40


def test_rgb_passes_through_exactly(photo: Image.Image) -> None:
    assert np.array_equal(rgb(decode_image(encode(photo))), np.asarray(photo))


def test_greyscale_l() -> None:
    grey = Image.fromarray(np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6), "L")
    arr = rgb(decode_image(encode(grey)))
    assert np.array_equal(arr[..., 0], np.asarray(grey)) and np.array_equal(arr[..., 0], arr[..., 2])


def test_palette_with_transparency_becomes_white() -> None:
    img = Image.new("P", (4, 2), 0)
    img.putpalette([0, 255, 0] + [255, 0, 0] * 255)  # index 0 green, index 1 red
    img.putpixel((3, 1), 1)
    data = encode(img, transparency=0)  # index 0 is transparent
    arr = rgb(decode_image(data))
    assert (arr[0, 0] == 255).all()  # transparent green -> white background
    assert tuple(arr[1, 3]) == (255, 0, 0)


def test_rgba_composited_on_white() -> None:
    arr = np.zeros((1, 3, 4), np.uint8)
    arr[0, 0] = (0, 0, 0, 0)  # fully transparent black
    arr[0, 1] = (0, 0, 255, 255)  # opaque blue
    arr[0, 2] = (0, 0, 0, 128)  # half-transparent black
    out = rgb(decode_image(encode(Image.fromarray(arr, "RGBA"))))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[0, 1]) == (0, 0, 255)
    assert np.abs(out[0, 2] - 127).max() <= 1  # reference: 255 * (1 - 128/255)


def test_la_mode() -> None:
    la = Image.fromarray(np.array([[[10, 0], [10, 255]]], np.uint8), "LA")
    assert rgb(decode_image(encode(la)))[0].tolist() == [[255, 255, 255], [10, 10, 10]]


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # no cyan, full magenta+yellow: red
    out = rgb(decode_image(encode(cmyk, "JPEG", quality=95)))
    assert out.shape == (8, 8, 3) and np.abs(out[4, 4] - (255, 0, 0)).max() < 40


def test_16_bit_greyscale_is_rescaled_not_clipped() -> None:
    ramp = np.array([[0, 1000, 2000, 4000]], dtype=np.uint16)
    img = Image.frombytes("I;16", (4, 1), ramp.astype("<u2").tobytes())
    out = rgb(decode_image(encode(img)))
    expected = (ramp.astype(float) * 255 / 4000).astype(np.uint8)  # value range -> 0..255
    assert np.abs(out[..., 0] - expected).max() <= 1


def test_path_and_bytes_decode_the_same(tmp_path: Path, photo: Image.Image) -> None:
    path = tmp_path / "p.png"
    path.write_bytes(encode(photo))
    assert np.array_equal(rgb(decode_image(str(path))), rgb(decode_image(path.read_bytes())))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_an_image_larger_than_any_photo_is_reduced_as_it_is_decoded(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over DECODED_PIXELS (a scan, a bomb under the pixel limit) an image is kept reduced by a whole factor (a JPEG
    decoded at a smaller scale straight away); one within it decodes unchanged."""
    import polymodal.data.image as image

    monkeypatch.setattr(image, "DECODED_PIXELS", 10_000)  # a 100 x 100 budget, for images the test can afford
    large = Image.new("RGB", (360, 240), (200, 10, 10))
    buffer = io.BytesIO()
    large.save(buffer, fmt)
    got = decode_image(buffer.getvalue())
    assert got.width * got.height <= 10_000 and got.width / got.height == pytest.approx(1.5, rel=0.05)
    assert np.abs(np.asarray(got, dtype=int)[5, 5] - (200, 10, 10)).max() <= 3
    small = Image.new("RGB", (100, 100), (1, 2, 3))
    buffer = io.BytesIO()
    small.save(buffer, "PNG")
    assert decode_image(buffer.getvalue()).size == (100, 100)
