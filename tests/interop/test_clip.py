"""A transformers CLIPModel loaded as a polymodal EmbeddingModel must compute the same features."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers as t
from PIL import Image

from polymodal.backends.base import EMBED, TaskNotSupported
from polymodal.backends.hf import HFClipBackend, load_hf_backend
from polymodal.interop import HFLoadError, clip_features, load_clip
from tests.interop.tiny import EOS_ID, save_tiny_clip

TEXTS = [
    "a photo of a cat",
    "red",
    "a big blue square on the left of a small green triangle and a red circle on the right",
]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("clip")
    save_tiny_clip(directory)
    return directory


@pytest.fixture(scope="module")
def hf_clip(clip_dir: Path) -> t.CLIPModel:
    return t.CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()


def _image(seed: int, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_features_equal_get_image_and_text_features(clip_dir: Path, hf_clip: t.CLIPModel) -> None:
    converted = load_clip(clip_dir)
    pixels = torch.randn(3, 3, 32, 32)
    # The 16-token text is truncated: the tokenizer must keep EOS, where both poolers look.
    ids, mask = converted.tokens(TEXTS)
    assert ids.shape == (3, 16) and (ids[mask.sum(1) == 16, -1] == EOS_ID).all()
    with torch.no_grad():
        ref_image = F.normalize(clip_features(hf_clip, pixel_values=pixels), dim=-1)
        ref_text = F.normalize(clip_features(hf_clip, input_ids=ids, attention_mask=mask.long()), dim=-1)
        torch.testing.assert_close(converted.model.embed("image", pixels), ref_image, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(converted.model.embed("text", ids, mask), ref_text, atol=1e-5, rtol=1e-5)
    assert converted.logit_scale == pytest.approx(hf_clip.logit_scale.exp().item())
    assert converted.model.embed_dim == 24


def test_tokenizer_matches_the_transformers_tokenizer(clip_dir: Path) -> None:
    converted = load_clip(clip_dir)
    hf = t.AutoTokenizer.from_pretrained(clip_dir, local_files_only=True)
    ref = hf(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
    ids, mask = converted.tokens(TEXTS)
    assert torch.equal(ids, ref.input_ids) and torch.equal(mask.long(), ref.attention_mask)


@pytest.mark.parametrize("size", [(32, 32), (50, 37), (32, 39), (41, 64), (400, 300)])
def test_preprocessing_matches_the_clip_image_processor(clip_dir: Path, size: tuple[int, int]) -> None:
    # (50, 37) -> 43 x 32 and (32, 39) leave an overhang of 3 mod 4 (11, 7), where HF's floored
    # crop offset and a rounded one differ by a pixel; (400, 300) takes PIL's reducing_gap path.
    converted = load_clip(clip_dir)
    processor = t.CLIPImageProcessorPil.from_pretrained(clip_dir)
    # Smooth content, like a photo: on pixel noise PIL's reducing_gap box filter (which HF does
    # not use) differs more from a plain bicubic downscale than it does on real images.
    img = _image(1, (8, 6)).resize(size, Image.Resampling.BILINEAR)
    ref = processor(img, return_tensors="pt").pixel_values[0]
    ours = converted.preprocess.to_tensor(img)
    assert ours.shape == ref.shape == (3, 32, 32)
    # Only PIL's reducing_gap shortcut differs from HF's plain resize: well under 1/255 on average.
    diff = (ours - ref).abs() * torch.tensor(converted.preprocess.std).view(3, 1, 1) * 255
    assert diff.mean() < 0.5 and diff.max() < 2


def test_backend_embeds_pil_images_and_texts_like_transformers(clip_dir: Path, hf_clip: t.CLIPModel) -> None:
    backend = load_hf_backend(clip_dir)
    assert isinstance(backend, HFClipBackend) and backend.capabilities == {EMBED} and backend.embed_dim == 24
    images = [_image(i, (32, 32)) for i in range(2)]
    processor = t.CLIPImageProcessorPil.from_pretrained(clip_dir)
    hf_tok = t.AutoTokenizer.from_pretrained(clip_dir, local_files_only=True)
    with torch.no_grad():
        ref_img = F.normalize(clip_features(hf_clip, **processor(images, return_tensors="pt")), dim=-1)
        text_in = hf_tok(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
        ref_txt = F.normalize(clip_features(hf_clip, **text_in), dim=-1)
    torch.testing.assert_close(backend.embed_images(images), ref_img, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(backend.embed_text(TEXTS), ref_txt, atol=1e-5, rtol=1e-5)
    with pytest.raises(TaskNotSupported, match="cannot caption: it supports embed"):
        backend.caption(images)


def test_identity_follows_config_and_weights_not_location(clip_dir: Path, tmp_path: Path) -> None:
    first = load_hf_backend(clip_dir).identity
    copy = tmp_path / "copy"
    shutil.copytree(clip_dir, copy)
    assert load_hf_backend(copy).identity == first
    clip = t.CLIPModel.from_pretrained(copy, local_files_only=True)
    with torch.no_grad():
        clip.visual_projection.weight.mul_(2)
    clip.save_pretrained(copy)
    assert load_hf_backend(copy).identity != first


def test_a_hub_id_without_network_fails_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HFLoadError, match=r"openai/clip-vit-base-patch32: not a local directory.*hf download"):
        load_clip("openai/clip-vit-base-patch32")


def test_a_missing_local_path_is_not_treated_as_a_hub_id(tmp_path: Path) -> None:
    with pytest.raises(HFLoadError, match="not a model directory"):
        load_clip(tmp_path / "nope" / "clip")


def test_bf16_weights_stay_close_to_float32(clip_dir: Path) -> None:
    fast = HFClipBackend.load(clip_dir, dtype=torch.bfloat16)
    exact = HFClipBackend.load(clip_dir)
    assert next(fast.clip.model.parameters()).dtype == torch.bfloat16
    images = [_image(i, (32, 32)) for i in range(3)]
    for a, b in (
        (fast.embed_images(images), exact.embed_images(images)),
        (fast.embed_text(TEXTS), exact.embed_text(TEXTS)),
    ):
        assert a.dtype == torch.float32  # the backend contract: float32 out, whatever runs inside
        assert F.cosine_similarity(a, b).min() > 0.99


def test_a_model_with_no_task_of_the_api_says_where_it_is_used() -> None:
    class Scored:  # a fusion classifier's backend: no task of the Python API
        name, capabilities = "fusion-concat", frozenset()

    message = str(TaskNotSupported(Scored(), "caption"))  # type: ignore[arg-type]
    assert message.startswith("model fusion-concat cannot caption: it supports none of the tasks this API serves (")
    assert message.endswith("`polymodal eval` scores it")
