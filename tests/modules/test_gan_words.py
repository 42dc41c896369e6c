"""The GAN's word-level conditioning: generator cross-attention to the text tokens and the discriminator's
word-region matching (shapes, the token mask, errors), and a GAN that uses both through training, seeded sampling
and save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polymodal.models import build_model, load_model, save_model
from polymodal.models.config import GanConfig
from polymodal.modules.generators import ConditionalGenerator, ProjectionDiscriminator, TextCondition
from polymodal.train.objectives import AdversarialObjective

TEXT_DIM = 16


def words(batch: int = 3, length: int = 5, seed: int = 0) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, TEXT_DIM, generator=g)
    return TextCondition(tokens.mean(1), tokens, torch.ones(batch, length, dtype=torch.bool))


def padded(text: TextCondition, extra: int, seed: int) -> TextCondition:
    """``text`` with ``extra`` padding tokens of arbitrary values appended (mask False)."""
    garbage = torch.randn(len(text), extra, TEXT_DIM, generator=torch.Generator().manual_seed(seed)) * 10
    mask = torch.cat([text.mask, torch.zeros(len(text), extra, dtype=torch.bool)], 1)  # type: ignore[list-item]
    return TextCondition(text.pooled, torch.cat([text.tokens, garbage], 1), mask)  # type: ignore[list-item]


def networks() -> tuple[ConditionalGenerator, ProjectionDiscriminator]:
    torch.manual_seed(0)
    generator = ConditionalGenerator(
        TEXT_DIM, noise_dim=8, condition_dim=8, image_size=16, widths=(16, 8), word_attention=(8, 16), word_dim=8
    )
    discriminator = ProjectionDiscriminator(
        TEXT_DIM, image_size=16, widths=(8, 16), feature_dim=16, word_matching=8, word_dim=8
    )
    return generator.eval(), discriminator.eval()


def test_word_conditioned_networks_give_images_and_one_logit_per_pair() -> None:
    generator, discriminator = networks()
    assert sorted(generator.word_attention) == ["0", "1"]  # after the 8 px and the 16 px block
    images = generator(torch.randn(3, 8), words())
    assert images.shape == (3, 3, 16, 16) and images.abs().max() <= 1
    assert discriminator(images, words()).shape == (3,)


def test_padding_tokens_do_not_change_either_network() -> None:
    generator, discriminator = networks()
    noise, text = torch.randn(3, 8), words()
    images = generator(noise, text)
    torch.testing.assert_close(generator(noise, padded(text, 4, seed=1)), images)
    torch.testing.assert_close(generator(noise, padded(text, 4, seed=2)), images)
    logits = discriminator(images, text)
    torch.testing.assert_close(discriminator(images, padded(text, 4, seed=1)), logits)


def test_a_masked_token_of_the_same_sequence_is_ignored_and_a_real_one_is_read() -> None:
    generator, discriminator = networks()
    noise, text = torch.randn(3, 8), words()
    text.mask[:, -1] = False  # type: ignore[index]
    images, logits = generator(noise, text), discriminator(torch.zeros(3, 3, 16, 16), text)
    changed = TextCondition(text.pooled, text.tokens.clone(), text.mask)  # type: ignore[union-attr]
    changed.tokens[:, -1] += 5.0  # type: ignore[index]
    torch.testing.assert_close(generator(noise, changed), images)
    torch.testing.assert_close(discriminator(torch.zeros(3, 3, 16, 16), changed), logits)
    changed.tokens[:, 0] += 5.0  # type: ignore[index]  # a real token: the pooled vector is the same, the words not
    assert not torch.allclose(generator(noise, changed), images)
    assert not torch.allclose(discriminator(torch.zeros(3, 3, 16, 16), changed), logits)


def test_a_text_without_any_real_token_gives_finite_output() -> None:
    generator, discriminator = networks()
    text = words()
    text.mask[1] = False  # type: ignore[index]
    assert torch.isfinite(generator(torch.randn(3, 8), text)).all()
    assert torch.isfinite(discriminator(torch.zeros(3, 3, 16, 16), text)).all()


def test_word_options_name_what_is_wrong() -> None:
    generator, discriminator = networks()
    with pytest.raises(ValueError, match="reads the text word by word"):
        generator(torch.randn(3, 8), words().pooled)
    with pytest.raises(ValueError, match="reads the text word by word"):
        discriminator(torch.zeros(3, 3, 16, 16), TextCondition(words().pooled))
    with pytest.raises(ValueError, match=r"word_attention sides \[4\]: the generator's blocks output sides \[8, 16\]"):
        ConditionalGenerator(TEXT_DIM, image_size=16, widths=(16, 8), word_attention=(4,))
    with pytest.raises(ValueError, match=r"word_matching side 16: .* sides \[8, 4\]"):
        ProjectionDiscriminator(TEXT_DIM, image_size=16, widths=(8, 16), word_matching=16)


def test_without_word_options_the_networks_take_the_pooled_tensor_and_have_no_word_weights() -> None:
    generator = ConditionalGenerator(TEXT_DIM, noise_dim=8, condition_dim=8, image_size=16, widths=(16, 8))
    discriminator = ProjectionDiscriminator(TEXT_DIM, image_size=16, widths=(8, 16), feature_dim=16).eval()
    text = words()
    images = generator(torch.randn(3, 8), text.pooled)
    torch.testing.assert_close(discriminator(images, text), discriminator(images, text.pooled))
    names = [*generator.state_dict(), *discriminator.state_dict()]
    assert not any("word" in name for name in names)  # saved pooled-only GANs load unchanged


def test_text_condition_rows_move_together() -> None:
    text = words(batch=3)
    rows = torch.tensor([2, 0])
    picked = text[rows]
    assert len(picked) == 2 and picked.size(0) == 2
    assert torch.equal(picked.pooled, text.pooled[rows]) and torch.equal(picked.tokens, text.tokens[rows])  # type: ignore[index]
    repeated = text.repeat_interleave(2)
    assert torch.equal(repeated.mask, text.mask.repeat_interleave(2, 0))  # type: ignore[union-attr]
    assert torch.equal(repeated.tokens[1], text.tokens[0])  # type: ignore[index]
    grad = TextCondition(text.pooled.requires_grad_(), text.tokens.requires_grad_(), text.mask)  # type: ignore[union-attr]
    assert not grad.detach().pooled.requires_grad and not grad.detach().tokens.requires_grad  # type: ignore[union-attr]


TEXT = {"name": "transformer_text", "params": {"vocab_size": 32, "width": 16, "depth": 1, "heads": 2, "max_length": 8}}


def word_gan() -> torch.nn.Module:
    torch.manual_seed(0)
    config = GanConfig(
        encoders={"text": TEXT},
        image_size=16,
        noise_dim=8,
        condition_dim=8,
        generator_widths=[16, 8],
        discriminator_widths=[8, 16],
        feature_dim=16,
        word_attention=[8, 16],
        word_matching=8,
        word_dim=8,
    )
    return build_model(config).eval()


def prompts(n: int = 2, padding: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    ids = torch.arange(n * 6).remainder(28).add(4).view(n, 6)
    mask = torch.ones(n, 6, dtype=torch.bool)
    if padding:
        ids = torch.cat([ids, torch.full((n, padding), 7)], 1)
        mask = torch.cat([mask, torch.zeros(n, padding, dtype=torch.bool)], 1)
    return {"text": (ids, mask)}


def test_word_gan_samples_are_seeded_and_ignore_padding() -> None:
    model = word_gan()
    model.update_ema()
    a = model.generate(prompts(), num_per_text=2, seed=3)
    assert a.shape == (4, 3, 16, 16)
    assert torch.equal(a, model.generate(prompts(), num_per_text=2, seed=3))
    assert not torch.allclose(a, model.generate(prompts(), num_per_text=2, seed=4))
    torch.testing.assert_close(model.generate(prompts(padding=2), num_per_text=2, seed=3), a)


def test_saved_and_loaded_word_gan_gives_the_same_pixels(tmp_path: Path) -> None:
    model = word_gan()
    model.update_ema()
    save_model(tmp_path / "m", model, {})
    loaded = load_model(tmp_path / "m")
    assert loaded.generator.word_attention.keys() == model.generator.word_attention.keys()
    assert torch.equal(model.generate(prompts(), seed=1), loaded.generate(prompts(), seed=1))


class Batch:
    def __init__(self, images: torch.Tensor, ids: torch.Tensor) -> None:
        self.ids = [str(i) for i in range(len(ids))]
        self.inputs = {"image": (images, None), "text": (ids, torch.ones_like(ids, dtype=torch.bool))}
        self.present = {m: torch.ones(len(ids), dtype=torch.bool) for m in self.inputs}
        self.negative_text_ids, self.negative_text_mask = ids.flip(1), torch.ones_like(ids, dtype=torch.bool)
        self.negative_present = torch.ones(len(ids), dtype=torch.bool)

    def input(self, modality: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.inputs[modality]


def test_both_adversarial_phases_train_the_word_layers() -> None:
    model = word_gan().train()
    batch = Batch(torch.rand(4, 3, 16, 16) * 2 - 1, torch.randint(4, 32, (4, 6)))
    objective = AdversarialObjective()
    objective(model, batch, "discriminator")["loss"].backward()
    matching = model.discriminator.word_matching
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in matching.parameters())
    model.zero_grad()
    objective(model, batch, "generator")["loss"].backward()
    for attention in model.generator.word_attention.values():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attention.parameters())
