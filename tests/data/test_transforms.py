"""ImagePreprocess and augmentation against slow, obvious numpy references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.config import ConfigError
from polymodal.config.base import validate
from polymodal.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    Augment,
    ImagePipeline,
    ImagePreprocess,
    RandomHorizontalFlip,
    RandomResizedCrop,
)


def _random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def _reference_normalize(img: Image.Image, mean, std) -> np.ndarray:
    """Pixel by pixel, channel by channel: (x / 255 - mean) / std, laid out (3, H, W)."""
    arr = np.asarray(img)
    h, w, _ = arr.shape
    out = np.zeros((3, h, w), dtype=np.float64)
    for c in range(3):
        for y in range(h):
            for x in range(w):
                out[c, y, x] = (arr[y, x, c] / 255.0 - mean[c]) / std[c]
    return out


def test_normalize_matches_reference() -> None:
    img = _random_image(7, 5)
    pre = ImagePreprocess.preset("clip", image_size=7)
    got = pre.normalize(img)
    assert got.dtype == torch.float32 and got.shape == (3, 5, 7)
    np.testing.assert_allclose(got.numpy(), _reference_normalize(img, CLIP_MEAN, CLIP_STD), rtol=0, atol=1e-5)


def test_known_pixel_values_per_preset() -> None:
    img = Image.new("RGB", (4, 4), (255, 0, 128))
    half = ImagePreprocess.preset("half", image_size=4).to_tensor(img)
    np.testing.assert_allclose(half[:, 0, 0].numpy(), [1.0, -1.0, 128 / 255 * 2 - 1], atol=1e-6)
    imnet = ImagePreprocess.preset("imagenet", image_size=4).to_tensor(img)
    assert imnet[1, 2, 3].item() == pytest.approx((0 - IMAGENET_MEAN[1]) / 0.224, abs=1e-6)


@pytest.mark.parametrize(
    ("size", "expected"), [((300, 200), (336, 224)), ((200, 300), (224, 336)), ((225, 224), (225, 224))]
)
def test_shortest_side_resize_size(size, expected) -> None:
    assert ImagePreprocess(image_size=224).resized_size(*size) == expected


def test_center_crop_box_and_pixels() -> None:
    # Resize shortest side 6 -> 6 (no-op) then crop the centre 4x4 of a 10x6 image.
    img = _random_image(10, 6, seed=1)
    pre = ImagePreprocess(image_size=4, resize=6, mean=(0, 0, 0), std=(1, 1, 1))
    assert pre.center_crop_box(10, 6) == (3, 1, 7, 5)
    got = pre.to_tensor(img)
    expected = np.asarray(img)[1:5, 3:7].transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def test_odd_margin_rounds_like_torchvision() -> None:
    # (9 - 4) / 2 = 2.5 rounds to 2 (banker's rounding, as torchvision's int(round(...))).
    assert ImagePreprocess(image_size=4).center_crop_box(9, 9) == (2, 2, 6, 6)


def test_geometry_output_shapes() -> None:
    pre = ImagePreprocess(image_size=32)
    for w, h in [(640, 480), (31, 90), (32, 32), (1, 1)]:
        assert pre.to_tensor(_random_image(w, h)).shape == (3, 32, 32)
    squash = ImagePreprocess(image_size=16, crop="none")
    assert squash.geometry(_random_image(64, 16)).size == (16, 16)


def test_big_downscale_close_to_full_resample() -> None:
    # The reduce()-first fast path must stay close to a plain full-resolution resample.
    img = _random_image(1200, 900).resize((1200, 900))
    smooth = img.resize((40, 30), Image.Resampling.BOX).resize((1200, 900), Image.Resampling.BILINEAR)
    pre = ImagePreprocess(image_size=60, mean=(0, 0, 0), std=(1, 1, 1), interpolation="bilinear")
    fast = pre.to_tensor(smooth).numpy()
    full = smooth.resize((80, 60), Image.Resampling.BILINEAR).crop(pre.center_crop_box(80, 60))
    slow = np.asarray(full).transpose(2, 0, 1) / 255.0
    assert np.abs(fast - slow).mean() < 0.01


def test_round_trip_and_save(tmp_path) -> None:
    pre = ImagePreprocess.preset("imagenet", image_size=96, resize=110)
    data = pre.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert ImagePreprocess.from_dict(data) == pre
    pre.save(tmp_path)
    assert ImagePreprocess.load(tmp_path) == pre


def test_invalid_config_names_field() -> None:
    with pytest.raises(ConfigError, match="interpolation"):
        validate(ImagePreprocess, {"interpolation": "nearest"}, "model/preprocess.json")
    with pytest.raises(ValueError, match="std"):
        ImagePreprocess(std=(0.5, 0.0, 0.5))
    with pytest.raises(ConfigError, match="scale must satisfy"):
        validate(Augment, {"random_resized_crop": True, "scale": [0.8, 0.2]}, "recipe.yaml")
    with pytest.raises(ValueError, match="known: clip, imagenet, half"):
        ImagePreprocess.preset("laion")


def test_random_resized_crop_box_bounds_and_reproducible() -> None:
    op = RandomResizedCrop(16, scale=(0.25, 0.5))
    for seed in range(50):
        left, top, right, bottom = op.box(100, 80, torch.Generator().manual_seed(seed))
        assert 0 <= left < right <= 100 and 0 <= top < bottom <= 80
        area = (right - left) * (bottom - top) / (100 * 80)
        assert 0.2 < area < 0.56  # scale range, up to rounding of w and h
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert op.box(100, 80, g()) == op.box(100, 80, g())
    assert op(_random_image(100, 80), g()).size == (16, 16)


def test_random_resized_crop_fallback_is_centre() -> None:
    # A 1000x10 strip can never fit ratio <= 4/3 with scale >= 0.9: falls back to the centre.
    op = RandomResizedCrop(8, scale=(0.9, 1.0))
    assert op.box(1000, 10, torch.Generator().manual_seed(0)) == (493, 0, 506, 10)


def test_hflip_mirrors_and_is_off_by_default() -> None:
    img = _random_image(5, 3)
    flipped = RandomHorizontalFlip(p=1.0)(img, None)
    np.testing.assert_array_equal(np.asarray(flipped), np.asarray(img)[:, ::-1])
    assert RandomHorizontalFlip(p=0.0)(img, None) is img
    assert Augment().ops(ImagePreprocess()) == []


def test_pipeline_applies_ops_then_preprocess() -> None:
    pre = ImagePreprocess(image_size=12, mean=(0, 0, 0), std=(1, 1, 1))
    img = _random_image(40, 30)
    pipe = ImagePipeline.for_training(pre, Augment(random_resized_crop=True, hflip=True, hflip_p=1.0))
    out = pipe(img, torch.Generator().manual_seed(7))
    crop = RandomResizedCrop(12, interpolation="bicubic")(img, torch.Generator().manual_seed(7))
    expected = np.asarray(crop)[:, ::-1].transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    # Without ops the pipeline is exactly the preprocess.
    assert torch.equal(ImagePipeline(pre)(img), pre.to_tensor(img))
