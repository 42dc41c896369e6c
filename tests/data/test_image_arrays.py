"""In-memory images in the data layer: a Sample's image may be a numpy array (HW/HWC, uint8 or float 0..1) or a PIL
image, prepared exactly as Model.embed_image takes them, with the same errors (one conversion, in data.image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.api.inputs import to_image
from polymodal.data import Sample
from polymodal.data.dataset import MultimodalDataset
from polymodal.data.errors import BadSampleError
from polymodal.data.image import decode_image
from polymodal.data.processors import ImageProcessor
from polymodal.data.transforms import ImagePreprocess

RGB = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def processor() -> ImageProcessor:
    return ImageProcessor(ImagePreprocess(image_size=16))


def test_arrays_prepare_as_the_same_pil_image(processor: ImageProcessor) -> None:
    expected = processor.prepare(Image.fromarray(RGB))
    torch.testing.assert_close(processor.prepare(RGB), expected, rtol=0, atol=0)
    torch.testing.assert_close(processor.prepare(RGB / 255.0), expected, rtol=0, atol=0)  # float 0..1
    grey = RGB[..., 0]
    torch.testing.assert_close(processor.prepare(grey), processor.prepare(Image.fromarray(grey)), rtol=0, atol=0)
    torch.testing.assert_close(processor.prepare(grey[..., None]), processor.prepare(grey), rtol=0, atol=0)


def test_transparency_is_composited_on_white_for_arrays_and_pil_images_alike(processor: ImageProcessor) -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent black
    white = processor.prepare(np.full((8, 8, 3), 255, dtype=np.uint8))
    torch.testing.assert_close(processor.prepare(rgba), white, rtol=0, atol=0)
    torch.testing.assert_close(processor.prepare(Image.fromarray(rgba, "RGBA")), white, rtol=0, atol=0)


def test_a_sample_holding_an_array_goes_through_the_dataset(processor: ImageProcessor) -> None:
    dataset = MultimodalDataset([Sample(id="0", image=RGB, text=["x"])], {"image": processor}, strict=True)
    torch.testing.assert_close(dataset[0]["inputs"]["image"], processor.prepare(RGB), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.zeros((3, 8, 8), np.uint8), "array of shape (3, 8, 8) looks channels-first; pass (H, W, C)"),
        (
            np.zeros((8, 8, 2), np.uint8),
            "expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got (8, 8, 2)",
        ),
        (np.zeros((8, 8, 3), np.int16), "expected uint8 or float pixels, got int16"),
        (np.full((8, 8, 3), 2.0), "float pixels must lie in [0, 1]"),
    ],
)
def test_bad_arrays_give_the_same_error_in_the_data_layer_and_the_api(
    processor: ImageProcessor, array: np.ndarray, reason: str
) -> None:
    with pytest.raises(BadSampleError) as in_data:
        processor.prepare(array, source="train.jsonl", row=3)
    assert str(in_data.value) == f"train.jsonl, row 3, field 'image': {reason}"
    assert in_data.value.kind == "invalid"
    with pytest.raises(BadSampleError) as in_api:
        to_image(array, index=1)
    assert str(in_api.value) == f"input #1, field 'image': {reason}"


def test_the_api_and_the_data_layer_convert_an_array_to_the_same_pixels() -> None:
    assert np.array_equal(np.asarray(to_image(RGB / 255.0)), np.asarray(decode_image(RGB / 255.0)))
    assert np.array_equal(np.asarray(decode_image(RGB / 255.0)), RGB)


def test_what_is_still_refused_names_every_accepted_kind(processor: ImageProcessor) -> None:
    with pytest.raises(BadSampleError, match="expected a path, bytes, a PIL image or a numpy array, got Tensor"):
        processor.prepare(torch.zeros(3, 8, 8))
