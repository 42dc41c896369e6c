"""The GAN discriminator's binding terms: DF-GAN's matching-aware gradient penalty (against the closed form of a
linear discriminator and a per-row reference), the contrastive heads, and both terms through the adversarial
objective, a saved model and the config's checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from polymodal.models import build_model, load_model, save_model
from polymodal.models.config import GanConfig
from polymodal.models.generator import AdversarialGenerator
from polymodal.modules.generators import (
    ConditionalGenerator,
    ProjectionDiscriminator,
    TextCondition,
    matching_gradient_penalty,
)
from polymodal.train.objectives import AdversarialObjective
from tests.train.test_generator_training import GAN

TEXT_DIM = 16


class LinearJudge(nn.Module):
    """D(x, t) = <w, x> + <v, t>: its gradient is (w, v) at every input, so the penalty has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(3, 4, 4, generator=g) * 0.3)
        self.v = nn.Parameter(torch.randn(TEXT_DIM, generator=g) * 0.3)

    def forward(self, images: Tensor, text: Tensor | TextCondition) -> Tensor:
        pooled = text.pooled if isinstance(text, TextCondition) else text
        return (images * self.w).flatten(1).sum(1) + pooled @ self.v


def test_matching_penalty_of_a_linear_discriminator_is_its_weight_norm_to_the_power() -> None:
    judge = LinearJudge()
    images, text = torch.randn(5, 3, 4, 4), torch.randn(5, TEXT_DIM)
    penalty = matching_gradient_penalty(judge, images, text, power=6.0)
    norm = torch.cat([judge.w.flatten(), judge.v]).norm()
    torch.testing.assert_close(penalty, norm.pow(6))
    penalty.backward()
    # d/dw ||(w, v)||**6 = 6 ||(w, v)||**4 w: the penalty trains the discriminator, shrinking its gradient.
    torch.testing.assert_close(judge.w.grad, 6 * norm.detach().pow(4) * judge.w.detach())
    torch.testing.assert_close(judge.v.grad, 6 * norm.detach().pow(4) * judge.v.detach())


def discriminator(**options: int) -> ProjectionDiscriminator:
    torch.manual_seed(0)
    return ProjectionDiscriminator(TEXT_DIM, image_size=8, widths=(8, 16), feature_dim=16, **options).eval()


def test_matching_penalty_matches_a_row_by_row_reference_and_trains_only_the_discriminator() -> None:
    judge = discriminator()
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    pooled = (torch.randn(4, TEXT_DIM) * 3).requires_grad_()  # as if from a trainable text tower
    penalty = matching_gradient_penalty(judge, images, TextCondition(pooled), power=2.0)
    norms = []
    for i in range(4):  # the reference: each pair's gradient on its own
        x, t = images[i : i + 1].clone().requires_grad_(), pooled[i : i + 1].detach().clone().requires_grad_()
        gx, gt = torch.autograd.grad(judge(x, t).sum(), (x, t))
        norms.append(torch.cat([gx.flatten(), gt.flatten()]).norm())
    torch.testing.assert_close(penalty, torch.stack(norms).pow(2).mean())
    penalty.backward()
    assert pooled.grad is None  # the text enters detached
    weights = [p.grad for name, p in judge.named_parameters() if "weight" in name]  # biases leave gradients as they are
    assert weights and all(g is not None and g.abs().sum() > 0 for g in weights)


def test_contrastive_heads_embed_without_changing_the_logits() -> None:
    plain, heads = discriminator(), discriminator(contrastive_dim=12)
    images, text = torch.rand(3, 3, 8, 8) * 2 - 1, torch.randn(3, TEXT_DIM)
    judged = heads.judge(images, text)
    torch.testing.assert_close(judged.logits, plain(images, text))
    torch.testing.assert_close(judged.logits, heads(images, text))
    assert judged.features.shape == (3, 16)
    assert heads.embed_image(judged.features).shape == (3, 12) and heads.embed_text(text).shape == (3, 12)
    with pytest.raises(ValueError, match="no contrastive heads: build it with contrastive_dim"):
        plain.embed_text(text)


class Batch:
    """Images with captions, and each caption's word-swapped copy where ``swapped`` says it has one."""

    def __init__(self, n: int = 6, swapped: Tensor | None = None) -> None:
        g = torch.Generator().manual_seed(1)
        images, ids = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1, torch.randint(4, 32, (n, 6), generator=g)
        ones = torch.ones_like(ids, dtype=torch.bool)
        self.ids = [str(i) for i in range(n)]
        self.inputs = {"image": (images, None), "text": (ids, ones)}
        self.present = {m: torch.ones(n, dtype=torch.bool) for m in self.inputs}
        self.negative_text_ids, self.negative_text_mask = ids.flip(1), ones
        self.negative_present = torch.ones(n, dtype=torch.bool) if swapped is None else swapped

    def input(self, modality: str) -> tuple[Tensor, Tensor | None]:
        return self.inputs[modality]


def gan(**options: float) -> nn.Module:
    torch.manual_seed(0)
    return build_model(GanConfig(**GAN, **options)).train()


def losses(model: nn.Module, phase: str, batch: Batch | None = None) -> dict[str, Tensor]:
    torch.manual_seed(2)  # the objective's noise
    return AdversarialObjective()(model, batch or Batch(), phase)  # type: ignore[no-any-return]


def test_matching_penalty_joins_the_discriminator_loss_with_its_weight() -> None:
    base = losses(gan(), "discriminator")
    out = losses(gan(matching_penalty=2.0, matching_penalty_power=2.0), "discriminator")
    assert float(out["matching_penalty"].detach()) > 0
    torch.testing.assert_close(out["discriminator"], base["discriminator"])
    torch.testing.assert_close(out["loss"], base["loss"] + 2.0 * out["matching_penalty"])
    assert "matching_penalty" not in losses(gan(matching_penalty=2.0), "generator")


def test_contrastive_terms_train_the_discriminator_on_real_and_the_generator_on_generated_images() -> None:
    model = gan(contrastive_weight=0.5)
    out = losses(model, "discriminator")
    torch.testing.assert_close(out["loss"], out["discriminator"] + 0.5 * out["contrastive_real"])
    out["contrastive_real"].backward()
    heads = [*model.discriminator.contrastive_image.parameters(), *model.discriminator.contrastive_text.parameters()]
    tower = list(model.encoders["text"].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tower)
    assert all(p.grad is None for p in model.generator.parameters())
    model.zero_grad(set_to_none=True)
    out = losses(model, "generator")
    torch.testing.assert_close(out["loss"], out["generator"] + 0.5 * out["contrastive_generated"])
    out["contrastive_generated"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.parameters())
    assert all(p.grad is None for p in tower)  # the generator reads the text detached


def test_a_word_swapped_caption_is_one_more_text_its_image_must_not_pick() -> None:
    model = gan(contrastive_weight=1.0)
    none = torch.zeros(6, dtype=torch.bool)
    some = torch.tensor([True, False, True, False, True, False])
    without = float(losses(model, "discriminator", Batch(swapped=none))["contrastive_real"].detach())
    with_some = float(losses(model, "discriminator", Batch(swapped=some))["contrastive_real"].detach())
    with_all = float(losses(model, "discriminator", Batch())["contrastive_real"].detach())
    assert without < with_some < with_all  # each extra candidate in an image's softmax raises its loss


def test_the_terms_are_deterministic_and_off_by_default() -> None:
    a = losses(gan(matching_penalty=2.0, contrastive_weight=1.0), "discriminator")
    b = losses(gan(matching_penalty=2.0, contrastive_weight=1.0), "discriminator")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    default = gan()
    assert default.matching_penalty == 0 and default.contrastive_weight == 0
    assert default.discriminator.contrastive_image is None
    assert set(losses(default, "discriminator")) == {"discriminator", "loss"}


def test_saved_and_loaded_gan_keeps_its_terms_and_pixels(tmp_path: Path) -> None:
    model = gan(matching_penalty=2.0, contrastive_weight=0.5).eval()
    model.update_ema()
    save_model(tmp_path / "m", model, {})
    loaded = load_model(tmp_path / "m")
    assert (loaded.matching_penalty, loaded.matching_penalty_power, loaded.contrastive_weight) == (2.0, 6.0, 0.5)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "discriminator.contrastive_text.weight" in b
    prompts = {"text": (torch.arange(12).add(4).view(2, 6), torch.ones(2, 6, dtype=torch.bool))}
    assert torch.equal(model.generate(prompts, seed=1), loaded.generate(prompts, seed=1))


def test_bad_term_settings_name_the_field() -> None:
    for field, value in (("matching_penalty", -1.0), ("matching_penalty_power", 0.0), ("contrastive_weight", -0.5)):
        with pytest.raises(ValidationError, match=field):
            GanConfig(**GAN, **{field: value})
    generator = ConditionalGenerator(TEXT_DIM, noise_dim=8, condition_dim=8, image_size=8, widths=(16, 8))
    with pytest.raises(ValueError, match="contrastive_weight > 0 needs a discriminator built with contrastive_dim"):
        AdversarialGenerator({}, generator, discriminator(), (3, 8, 8), contrastive_weight=1.0)
