"""Detecting checkpoint kinds, and HF captioners served as backends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as t
from PIL import Image

from polymodal.backends.base import CAPTION, TaskNotSupported
from polymodal.backends.hf import HFCaptionBackend, load_hf_backend
from polymodal.interop import HFLoadError, UnsupportedHFModel, detect_hf_kind
from polymodal.models import build_preset, save_model
from tests.interop.tiny import save_tiny_blip, save_tiny_clip, save_tiny_vision_encoder_decoder

SAVERS = {"blip-caption": save_tiny_blip, "vision-encoder-decoder": save_tiny_vision_encoder_decoder}


@pytest.fixture(scope="module")
def caption_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("captioners")
    for kind, save in SAVERS.items():
        save(root / kind)
    return {kind: root / kind for kind in SAVERS}


def _images(n: int, size: int = 32) -> list[Image.Image]:
    rng = np.random.RandomState(0)
    return [Image.fromarray(rng.randint(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.mark.parametrize("kind", list(SAVERS))
def test_captions_equal_transformers_greedy_generate(kind: str, caption_dirs: dict[str, Path]) -> None:
    directory = caption_dirs[kind]
    backend = load_hf_backend(directory)
    assert isinstance(backend, HFCaptionBackend) and backend.capabilities == {CAPTION}
    assert detect_hf_kind(directory) == kind and backend.name == f"hf-{kind}:{directory}"
    images = _images(3)
    # The reference is transformers end to end: its image processor, generate and tokenizer.
    model = t.AutoModelForImageTextToText.from_pretrained(directory, local_files_only=True).eval()
    processor = t.AutoImageProcessor.from_pretrained(directory)
    tokenizer = t.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    with torch.no_grad():
        ids = model.generate(**processor(images, return_tensors="pt"), max_new_tokens=8, do_sample=False, num_beams=1)
    expected = [s.strip() for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    captions = backend.caption(images, max_new_tokens=8)
    assert captions == expected and any(captions)  # a random model still says something
    with pytest.raises(TaskNotSupported, match="cannot embed images"):
        backend.embed_images(images)


def test_beam_search_is_passed_through(caption_dirs: dict[str, Path]) -> None:
    backend = load_hf_backend(caption_dirs["blip-caption"])
    images = _images(2)
    with torch.no_grad():
        ids = backend.model.generate(
            pixel_values=backend._pixels(images), max_new_tokens=6, num_beams=3, do_sample=False
        )
    assert backend.caption(images, max_new_tokens=6, num_beams=3) == [backend.tokenizer.decode(r).strip() for r in ids]


def test_detect_hf_kind(tmp_path: Path) -> None:
    save_tiny_clip(tmp_path / "clip")
    assert detect_hf_kind(tmp_path / "clip") == "clip"
    # Not a transformers checkpoint at all: None, so a dispatcher can try other formats.
    assert detect_hf_kind(tmp_path) is None
    save_model(tmp_path / "polymodal", build_preset("shapes-clip", image_size=32), processors={})
    assert detect_hf_kind(tmp_path / "polymodal") is None
    # model_type alone is enough when architectures is missing.
    (tmp_path / "ved").mkdir()
    (tmp_path / "ved" / "config.json").write_text(json.dumps({"model_type": "vision-encoder-decoder"}))
    assert detect_hf_kind(tmp_path / "ved") == "vision-encoder-decoder"


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "bert", "architectures": ["BertModel"]},
        {"model_type": "blip", "architectures": ["BlipForQuestionAnswering"]},
    ],
)
def test_unsupported_checkpoints_name_what_they_are_and_what_is_supported(tmp_path: Path, config: dict) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedHFModel) as info:
        load_hf_backend(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and config["architectures"][0] in message
    assert all(kind in message for kind in ("CLIPModel", "BlipForConditionalGeneration", "VisionEncoderDecoderModel"))


def test_a_directory_without_a_transformers_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HFLoadError, match="not a Hugging Face checkpoint"):
        load_hf_backend(tmp_path)


def test_polymodal_load_serves_hf_directories(tmp_path: Path, caption_dirs: dict[str, Path]) -> None:
    import polymodal

    save_tiny_clip(tmp_path / "clip")
    clip = polymodal.load(tmp_path / "clip")
    assert clip.capabilities == {"embed"} and clip.name == f"hf-clip:{tmp_path / 'clip'}"
    image = np.random.RandomState(0).randint(0, 256, (32, 32, 3), dtype=np.uint8)
    backend = load_hf_backend(tmp_path / "clip")
    np.testing.assert_allclose(
        clip.embed_image(image), backend.embed_images([Image.fromarray(image)]).numpy(), atol=1e-6
    )
    blip = polymodal.load(caption_dirs["blip-caption"])
    assert blip.caption(image, max_new_tokens=5) == load_hf_backend(caption_dirs["blip-caption"]).caption(
        [Image.fromarray(image)], max_new_tokens=5
    )
