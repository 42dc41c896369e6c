"""Text-to-image generators: seeded sampling, classifier-free guidance, the EMA generator, save and load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polymodal.models import AdversarialGenerator, DiffusionGenerator, build_model, load_model, parse_model_config
from polymodal.models.config import DiffusionConfig, GanConfig

TEXT = {"name": "transformer_text", "params": {"vocab_size": 32, "width": 16, "depth": 1, "heads": 2, "max_length": 8}}


def tiny(kind: str, prediction_type: str = "epsilon") -> DiffusionGenerator | AdversarialGenerator:
    torch.manual_seed(0)
    if kind == "diffusion":
        config = DiffusionConfig(
            encoders={"text": TEXT},
            image_size=8,
            widths=[8, 16],
            context_dim=16,
            head_dim=4,
            norm_groups=4,
            prediction_type=prediction_type,
        )
    else:
        config = GanConfig(
            encoders={"text": TEXT},
            image_size=8,
            noise_dim=8,
            condition_dim=8,
            generator_widths=[16, 8],
            discriminator_widths=[8, 16],
            feature_dim=16,
        )
    return build_model(config).eval()  # type: ignore[return-value]


def texts(n: int = 2) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    ids = torch.arange(n * 6).remainder(28).add(4).view(n, 6)
    return {"text": (ids, torch.ones(n, 6, dtype=torch.bool))}


@pytest.mark.parametrize("kind", ["diffusion", "gan"])
def test_same_seed_same_pixels_other_seed_other_pixels(kind: str) -> None:
    model = tiny(kind)
    a = model.generate(texts(), num_per_text=3, steps=4, seed=7)
    assert a.shape == (6, 3, 8, 8) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, model.generate(texts(), num_per_text=3, steps=4, seed=7))
    assert not torch.allclose(a, model.generate(texts(), num_per_text=3, steps=4, seed=8))
    assert not torch.allclose(a[0], a[1])  # each image of a text starts from its own noise


@pytest.mark.parametrize("sampler", ["ddim", "dpm_solver", "ddpm"])
def test_every_sampler_runs_the_asked_steps(sampler: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny("diffusion")
    calls = []
    forward = model.unet.forward
    monkeypatch.setattr(model.unet, "forward", lambda *a, **k: calls.append(a[0].shape[0]) or forward(*a, **k))
    out = model.generate(texts(), steps=5, guidance=2.0, sampler=sampler)
    assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()
    assert calls == [4] * 5  # five steps, each with the texts and the empty text in one batch


def test_guidance_uses_the_learned_empty_text() -> None:
    model = tiny("diffusion")
    unguided = model.generate(texts(), steps=3, guidance=1.0)
    guided = model.generate(texts(), steps=3, guidance=4.0)
    assert not torch.allclose(unguided, guided)
    with torch.no_grad():
        model.null_text_embedding.add_(1.0)
        model.null_pooled_embedding.add_(1.0)
    assert torch.equal(unguided, model.generate(texts(), steps=3, guidance=1.0))  # no guidance: never read
    assert not torch.allclose(guided, model.generate(texts(), steps=3, guidance=4.0))


def test_dropped_rows_see_only_the_empty_text() -> None:
    model = tiny("diffusion")
    other = texts()
    other["text"][0][1] = torch.arange(6) + 10
    drop = torch.tensor([False, True])
    a, b = model.context(texts(), drop), model.context(other, drop)
    for field in ("tokens", "mask", "pooled"):  # the text of row 1 is gone from every part of its conditioning
        assert torch.equal(getattr(a, field)[1], getattr(b, field)[1]), field
    assert a.mask[1].tolist() == [True] + [False] * 5
    assert not torch.equal(a.tokens[0], a.tokens[1]) and not torch.equal(a.pooled[0], a.pooled[1])


def test_bad_sampler_and_counts_are_errors() -> None:
    model = tiny("diffusion")
    with pytest.raises(ValueError, match="sampler must be one of ddim, dpm_solver, ddpm"):
        model.generate(texts(), sampler="euler")
    with pytest.raises(ValueError, match="steps and num_per_text"):
        model.generate(texts(), steps=0)


def test_ema_generator_ramps_towards_the_trained_one() -> None:
    model = tiny("gan")
    start = [p.clone() for p in model.ema_generator.parameters()]
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    model.update_ema()  # first update: decay 1/10, so 90% of the way
    moved = [e - s for e, s in zip(model.ema_generator.parameters(), start, strict=True)]
    assert all(torch.allclose(m, torch.full_like(m, 0.9)) for m in moved)
    assert int(model.ema_updates) == 1
    assert not any(p.requires_grad for p in model.ema_generator.parameters())


def test_generators_need_one_text_tower_only() -> None:
    with pytest.raises(Exception, match="conditioned by one 'text' tower"):
        parse_model_config({"kind": "diffusion", "encoders": {"text": TEXT, "image": {"name": "cnn"}}})


@pytest.mark.parametrize("kind", ["diffusion", "gan"])
def test_saved_and_loaded_generator_gives_the_same_pixels(kind: str, tmp_path: Path) -> None:
    from polymodal.models import save_model

    model = tiny(kind)
    model.update_ema() if kind == "gan" else None
    save_model(tmp_path / "m", model, {})
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model)
    assert torch.equal(model.generate(texts(), steps=3, seed=1), loaded.generate(texts(), steps=3, seed=1))


def uneven_texts() -> tuple[torch.Tensor, torch.Tensor]:
    """Three texts of 3, 6 and 5 tokens, padded to 6 as a batch."""
    ids, mask = texts(3)["text"]
    mask = mask.clone()
    mask[0, 3:] = False
    mask[2, 5:] = False
    return ids, mask


# DPM-Solver++ turns a noise prediction into a clean image by dividing by the signal scale, sqrt(alpha_bar) (5e-5 at
# t=999): an untrained noise-predicting model's rounding grows there thousands of times, so that sampler is checked
# on a clean-image-predicting model, as the shapes-diffusion recipe trains.
@pytest.mark.parametrize(
    ("kind", "sampler", "prediction_type"),
    [
        ("diffusion", "ddim", "epsilon"),
        ("diffusion", "ddpm", "epsilon"),
        ("diffusion", "dpm_solver", "sample"),
        ("gan", "ddim", "epsilon"),
    ],
)
def test_a_texts_images_depend_on_its_own_seed_not_its_batch_mates(
    kind: str, sampler: str, prediction_type: str
) -> None:
    model = tiny(kind, prediction_type)
    ids, mask = uneven_texts()
    seeds = [3, 5, 7]
    options = {"num_per_text": 2, "steps": 3, "guidance": 3.0, "sampler": sampler}
    together = model.generate({"text": (ids, mask)}, seed=seeds, **options)
    alone = []
    for row, seed in enumerate(seeds):
        length = int(mask[row].sum())  # each text alone, without the padding its batch mates brought
        alone.append(
            model.generate({"text": (ids[row : row + 1, :length], mask[row : row + 1, :length])}, seed=seed, **options)
        )
    # Float rounding only: fp32 kernels may sum in another order at another batch size.
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="3 seeds for 2 texts"):
        model.generate(texts(2), seed=[1, 2, 3])


@pytest.mark.parametrize("kind", ["diffusion", "gan"])
def test_the_text_is_padded_to_the_towers_length_whatever_its_batch_mates(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny(kind)
    tower = model.encoders["text"]
    lengths: list[int] = []
    forward = tower.forward
    monkeypatch.setattr(tower, "forward", lambda ids, mask=None: lengths.append(ids.size(1)) or forward(ids, mask))
    ids, mask = uneven_texts()
    model.generate({"text": (ids, mask)}, steps=1)
    model.generate({"text": (ids[:1, :3], mask[:1, :3])}, steps=1)
    assert lengths == [tower.max_length, tower.max_length]  # attention then sums over the same shape alone or not
