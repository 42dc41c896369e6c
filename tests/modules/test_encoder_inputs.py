"""Wrong inputs to an encoder, as a user passes them (the API walkthrough's cases): each error names the encoder,
what it expected from its own configuration and what it got, instead of a raw error from a layer inside it.

``test_encoders.py`` runs the same kinds of mistake over every registered encoder; these pin the messages."""

from __future__ import annotations

import re

import pytest
import torch

from polymodal.models import build_model, parse_model_config
from polymodal.modules.encoders import ENCODERS, Encoder
from polymodal.modules.encoders.cache import CachedEncoder, FeatureCache

TEXT = {"vocab_size": 50, "width": 32, "depth": 1, "heads": 2, "max_length": 8}
IMAGE = {"image_size": 16, "patch_size": 4, "width": 32, "depth": 1, "heads": 2}
AUDIO = {"channels": 16, "widths": [8, 16], "width": 32}
B = 4


def raises(kind: type[Exception], *parts: str) -> pytest.RaisesContext:
    """pytest.raises matching the message's start and, in order, each literal part."""
    return pytest.raises(kind, match="^" + ".*".join(re.escape(p) for p in parts))


@pytest.fixture(scope="module")
def vit() -> Encoder:
    torch.manual_seed(0)
    return ENCODERS.build("vit", **IMAGE).eval()


@pytest.mark.parametrize(
    ("x", "wrong"),
    [
        (torch.randn(B, 32, 40), ""),  # n_mels 32 for a tower of 16 bands
        (torch.randn(B, 16000), ""),  # the raw waveform
        (torch.randn(B, 40, 16), "are the dimensions in another order?"),  # (B, T, F) for (B, F, T)
    ],
    ids=["n_mels-32", "waveform", "frames-first"],
)
def test_audio_cnn_names_the_layout_its_bands_make(x, wrong):
    enc = ENCODERS.build("audio_cnn", **AUDIO).eval()  # was: RuntimeError: running_mean should contain 32 elements
    with raises(
        ValueError,
        "audio_cnn: expected log-mel (or MFCC) features (batch, 16 bands, frames) of dtype float32, "
        f"got shape {tuple(x.shape)} dtype float32",
        wrong,
        "n_mels (or n_mfcc): 16",
    ):
        enc(x)


def test_an_audio_error_reaches_the_caller_of_a_composed_model_intact():
    config = {
        "kind": "fusion_classifier",
        "encoders": {
            "text": {"name": "transformer_text", "params": TEXT},
            "audio": {"name": "audio_cnn", "params": AUDIO},
        },
        "fusion": {"name": "concat", "params": {}},
        "fusion_dim": 32,
        "num_classes": 3,
    }
    model = build_model(parse_model_config(config)).eval()
    text = (torch.randint(4, 50, (B, 8)), torch.ones(B, 8, dtype=torch.bool))
    with raises(ValueError, "audio_cnn: expected log-mel", "got shape (4, 16000)"):
        model({"text": text, "audio": (torch.randn(B, 16000), None)})


def test_vit_says_channels_first_and_batch_first(vit):
    with raises(
        ValueError,
        "vit: expected images (batch, 3, 16, 16) of dtype float32, got shape (4, 16, 16, 3)",  # was: "got (16, 3)"
        "are the dimensions in another order?",
    ):
        vit(torch.randn(B, 16, 16, 3))
    with raises(ValueError, "vit: expected images (batch, 3, 16, 16)", "got shape (3, 16, 16)", "no batch dimension"):
        vit(torch.randn(3, 16, 16))  # was: RuntimeError: Sizes of tensors must match except in dimension 1
    with raises(ValueError, "vit: expected images (batch, 3, 16, 16)", "got shape (4, 3, 32, 32)"):
        vit(torch.randn(B, 3, 32, 32))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float64, torch.bfloat16])
def test_vit_says_which_dtype_and_where_pixels_come_from(vit, dtype):
    x = torch.randint(0, 255, (B, 3, 16, 16)).to(dtype)
    # was: RuntimeError: Input type (unsigned char) and bias type (float) should be the same
    with raises(TypeError, "vit: expected images (batch, 3, 16, 16) of dtype float32", f"dtype {str(dtype)[6:]}; "):
        vit(x)
    with raises(TypeError, "vit: ", "; the model's image processor makes them (normalised float pixels)"):
        vit(x)


def test_under_autocast_a_lower_precision_image_is_taken(vit):
    x = torch.randn(B, 3, 16, 16)
    with raises(TypeError, "vit: expected images", "dtype bfloat16"):
        vit(x.bfloat16())  # outside autocast the first convolution would refuse it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert vit(x.bfloat16()).pooled.shape == (B, 32)
        with raises(TypeError, "vit: expected images", "dtype float64"):  # autocast does not cast float64
            vit(x.double())


@pytest.mark.parametrize("name", ["transformer_text", "rnn_text"])
def test_text_towers_name_bad_ids_and_masks(name):
    params = TEXT if name == "transformer_text" else {"vocab_size": 50, "width": 32}
    enc = ENCODERS.build(name, **params).eval()
    ids, mask = torch.randint(4, 50, (B, 8)), torch.ones(B, 8, dtype=torch.bool)
    with raises(TypeError, f"{name}: expected token ids (batch, length) of dtype int64", "dtype float32"):
        enc(ids.float(), mask)  # was: RuntimeError from F.embedding
    # was: IndexError: index out of range in self
    with raises(ValueError, f"{name}: token id 999 >= vocab_size 50 (was the text tokenised with this model's"):
        enc(ids.clamp(max=0) + 999, mask)
    with raises(ValueError, f"{name}: token id -3 < 0"):
        enc(ids.index_fill(1, torch.tensor([2]), -3), mask)
    # was: RuntimeError: The size of tensor a (8) must match the size of tensor b (5) at non-singleton dimension 3
    with raises(ValueError, f"{name}: expected a (batch, length) mask of shape (4, 8) (or None), got shape (4, 5)"):
        enc(ids, mask[:, :5])
    with raises(ValueError, f"{name}: expected token ids (batch, length)", "got shape (8,)", "no batch dimension"):
        enc(ids[0])


def test_video_towers_name_the_clip_layout():
    vivit = ENCODERS.build("video_vit", frames=4, image_size=16, width=32, depth=1, heads=2).eval()
    with raises(ValueError, "video_vit: expected clips (batch, frames, 3, 16, 16)", "got shape (2, 4, 16, 16, 3)"):
        vivit(torch.randn(2, 4, 16, 16, 3))
    with raises(TypeError, "video_vit: expected clips", "dtype uint8"):
        vivit(torch.zeros(2, 4, 3, 16, 16, dtype=torch.uint8))
    frames = ENCODERS.build("video_frames").eval()
    with raises(ValueError, "video_frames: expected clips (batch, frames, channels, height, width)", "(2, 3, 16, 16)"):
        frames(torch.randn(2, 3, 16, 16))  # one image, not a clip
    with raises(ValueError, "video_frames: expected a (batch, frames) mask of shape (2, 4)"):
        frames(torch.randn(2, 4, 3, 16, 16), torch.ones(2, 3, dtype=torch.bool))


def test_a_cached_tower_refuses_a_wrong_input_in_the_towers_words(vit):
    frozen = ENCODERS.build("vit", **IMAGE)
    frozen.freeze()
    cached = CachedEncoder(frozen, FeatureCache.for_encoder(frozen, 16))
    with raises(ValueError, "vit: expected images (batch, 3, 16, 16)", "got shape (4, 16, 16, 3)"):
        cached(torch.randn(B, 16, 16, 3))
    assert cached.store.misses == 0  # refused before anything was hashed or computed
