"""Model.generate: text-to-image by a diffusion model and a GAN, seeded, with pixels mapped by the saved processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import polymodal
from polymodal.api import Model
from polymodal.api.model import MAX_IMAGES_PER_TEXT, MAX_STEPS
from polymodal.backends import TaskNotSupported
from polymodal.data.transforms import ImagePreprocess

PROMPTS = ["a red circle", "a blue square above a green triangle"]


def pixels(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(image) for image in images])  # (N, H, W, 3) uint8


def assert_same_up_to_rounding(got: np.ndarray, want: np.ndarray) -> None:
    """The same uint8 pixels but for float rounding at another batch size: a value at the edge of a level may land
    on its neighbour, so a few values differ by one level, none by more."""
    difference = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert got.shape == want.shape and difference.max() <= 1 and np.mean(difference > 0) < 0.01, difference.max()


def test_to_images_inverts_normalize() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))
    for preprocess in (ImagePreprocess.preset("half", 8), ImagePreprocess.preset("clip", 8)):
        (back,) = preprocess.to_images(preprocess.normalize(image))
        np.testing.assert_array_equal(np.asarray(back), np.asarray(image))
    half = ImagePreprocess.preset("half", 2)
    (extremes,) = half.to_images(torch.tensor([-1.0, 0.0, 1.0, 3.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2))
    assert np.asarray(extremes)[..., 0].tolist() == [[0, 128], [255, 255]]  # x * 0.5 + 0.5, clipped
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        half.to_images(torch.zeros(2, 1, 4, 4))


@pytest.mark.parametrize("kind", ["tiny_diffusion", "tiny_gan"])
def test_generate_gives_the_models_pixels_through_the_saved_preprocess(kind: str, request) -> None:  # noqa: ANN001
    model: Model = request.getfixturevalue(kind)
    assert model.capabilities == {"generate"} and model.media("generate") == {"text"}
    images = model.generate(PROMPTS, n=2, steps=2, guidance=2.0, seed=7)
    saved = model.backend.saved  # type: ignore[attr-defined]
    assert len(images) == 4 and all(i.mode == "RGB" and i.size == (32, 32) for i in images)

    # Reference: the model's own output for both texts in one call (as the API batches them), mapped by hand with
    # the saved mean and std.
    preprocess = saved.processors["image"].preprocess
    # In float32, as the mapping runs: float64 arithmetic can round a pixel at .5 the other way.
    mean, std = np.array(preprocess.mean, dtype=np.float32), np.array(preprocess.std, dtype=np.float32)
    ids, mask = saved.processors["text"].batch(PROMPTS)
    raw = saved.model.generate({"text": (ids, mask)}, num_per_text=2, steps=2, guidance=2.0, seed=7)
    expected = np.round(np.clip(raw.permute(0, 2, 3, 1).numpy() * std + mean, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(pixels(images), expected)  # text-major: both images of the first text first


@pytest.mark.parametrize("kind", ["tiny_diffusion", "tiny_gan"])
def test_generate_is_seeded_and_a_text_does_not_depend_on_its_batch_mates(kind: str, request) -> None:  # noqa: ANN001
    model: Model = request.getfixturevalue(kind)
    both = pixels(model.generate(PROMPTS, n=2, steps=2, seed=3))
    np.testing.assert_array_equal(both, pixels(model.generate(PROMPTS, n=2, steps=2, seed=3)))
    assert_same_up_to_rounding(both[2:], pixels(model.generate(PROMPTS[1], n=2, steps=2, seed=3)))
    assert not np.array_equal(both[0], both[1])  # the n images of one text differ
    assert not np.array_equal(both[:2], pixels(model.generate(PROMPTS[0], n=2, steps=2, seed=4)))


@pytest.mark.parametrize("kind", ["tiny_diffusion_dir", "tiny_gan_dir"])
def test_texts_share_model_calls_of_at_most_batch_size_images(
    kind: str,
    request,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = polymodal.load(request.getfixturevalue(kind), batch_size=4)
    prompts = [*PROMPTS, "two yellow stars", "a green triangle", "a purple heart left of a cyan cross"]
    alone = [pixels(model.generate(prompt, n=2, steps=2, seed=5)) for prompt in prompts]
    calls: list[list[str]] = []
    backend_generate = model.backend.generate
    monkeypatch.setattr(
        model.backend,
        "generate",
        lambda texts, **options: calls.append(list(texts)) or backend_generate(texts, **options),
    )
    batched = pixels(model.generate(prompts, n=2, steps=2, seed=5))
    assert calls == [prompts[0:2], prompts[2:4], prompts[4:5]]  # 2 texts x n=2 fill a batch of 4 images
    assert_same_up_to_rounding(batched, np.concatenate(alone))  # text-major, as one text at a time

    calls.clear()
    assert len(model.generate(prompts[:2], n=5, steps=1)) == 10
    assert calls == [prompts[:1], prompts[1:2]]  # more images per text than a batch: one text per call, whole


def test_samplers_and_steps_drive_diffusion_but_not_the_gan(tiny_diffusion: Model, tiny_gan: Model) -> None:
    by_sampler = {
        s: pixels(tiny_diffusion.generate(PROMPTS[0], steps=2, sampler=s)) for s in ("ddim", "dpm_solver", "ddpm")
    }
    assert not np.array_equal(by_sampler["ddim"], by_sampler["ddpm"])
    np.testing.assert_array_equal(
        by_sampler["ddpm"], pixels(tiny_diffusion.generate(PROMPTS[0], steps=2, sampler="ddpm"))
    )
    assert not np.array_equal(by_sampler["ddim"], pixels(tiny_diffusion.generate(PROMPTS[0], steps=3)))
    one = pixels(tiny_gan.generate(PROMPTS[0], steps=2, guidance=1.0, sampler="ddim"))
    np.testing.assert_array_equal(one, pixels(tiny_gan.generate(PROMPTS[0], steps=50, guidance=7.5, sampler="ddpm")))


def test_generate_errors_name_what_is_wrong(tiny_gan: Model, tiny_dual_encoder_dir) -> None:  # noqa: ANN001
    clip = polymodal.load(tiny_dual_encoder_dir)
    with pytest.raises(TaskNotSupported, match="cannot generate images: it supports embed"):
        clip.generate("a red circle")
    with pytest.raises(TaskNotSupported, match="cannot caption: it supports generate"):
        tiny_gan.caption(Image.new("RGB", (32, 32)))
    bad = [
        ({"n": 0}, f"n must be an integer in 1..{MAX_IMAGES_PER_TEXT}, got 0"),
        ({"n": MAX_IMAGES_PER_TEXT + 1}, "n must be"),
        ({"steps": MAX_STEPS + 1}, f"steps must be an integer in 1..{MAX_STEPS}"),
        ({"steps": 2.5}, "steps must be an integer"),
        ({"guidance": -1.0}, "guidance must be a number in 0..50"),
        ({"guidance": float("nan")}, "guidance must be"),
        ({"seed": -1}, "seed must be an integer in 0.."),
        ({"sampler": "euler"}, "sampler must be one of ddim, dpm_solver, ddpm, got 'euler'"),
    ]
    for options, message in bad:
        with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
            tiny_gan.generate("a red circle", **options)
    with pytest.raises(ValueError, match="text #1 is empty"):
        tiny_gan.generate(["a red circle", "  "])
    with pytest.raises(ValueError, match="at least one text"):
        tiny_gan.generate([])
