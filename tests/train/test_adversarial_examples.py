"""Adversarial training: PGD moves images within epsilon of each pixel towards a higher loss, and a recipe with
``objective.adversarial_examples`` trains on such images (refused where there are no images to move). What it buys
under attack is measured by benchmarks/adversarial_training.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from polymodal.config import ConfigError
from polymodal.data.collate import Batch
from polymodal.modules.attacks import pgd_images
from polymodal.train.build import check_recipe_before_data
from polymodal.train.objectives import AdversarialExamples
from polymodal.train.recipe import load_recipe
from polymodal.train.run import run_recipe
from tests.train.test_pretraining_objectives import _tiny_fusion, squares  # noqa: F401

MEAN, STD = (0.5, 0.4, 0.3), (0.5, 0.25, 0.2)


def _pixels(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def test_pgd_moves_each_pixel_at_most_epsilon_within_0_1_and_raises_the_loss() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    pixels = torch.rand(6, 3, 8, 8)
    pixels[0] = 1.0  # at the top of the range: only downward moves are possible
    images = (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    target = torch.arange(6) % 4
    rows = torch.tensor([True, True, True, True, True, False])  # the last image is absent: it must not move

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), target)

    epsilon = 4 / 255
    moved = pgd_images(loss_of, images, epsilon=epsilon, steps=5, mean=MEAN, std=STD, rows=rows)
    change = (_pixels(moved) - pixels).abs()
    assert change.max() <= epsilon + 1e-5 and change[:5].max() > epsilon * 0.9
    assert bool((_pixels(moved) >= -1e-5).all() and (_pixels(moved) <= 1 + 1e-5).all())
    assert torch.equal(moved[5], images[5])
    assert loss_of(moved) > loss_of(images) + 0.01
    assert all(p.grad is None for p in model.parameters())  # the attack leaves the model's gradients alone
    assert not moved.requires_grad


def test_pgd_refuses_a_loss_that_does_not_read_the_images() -> None:
    images = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="does not depend on the images"):
        pgd_images(lambda x: torch.tensor(1.0, requires_grad=True), images, epsilon=0.01, steps=1, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="epsilon > 0 and steps >= 1"):
        pgd_images(lambda x: x.sum(), images, epsilon=0.0, steps=1, mean=MEAN, std=STD)


def test_adversarial_examples_train_and_their_clean_loss_is_logged(squares: Path, tmp_path: Path) -> None:  # noqa: F811
    attack = "objective.adversarial_examples={epsilon: 0.03, steps: 1, clean_weight: 0.5}"
    recipe = _tiny_fusion(squares, 2, ["objective.kind=matching", attack], steps=4, fusion={"name": "bilinear"})
    result = run_recipe(recipe, tmp_path / "run", progress=False)
    losses = result.last_losses
    # the step trained on attacked images, whose loss (the objective's own name) is above the clean images' loss
    assert losses["matching"] > losses["loss_clean"] > 0, losses
    assert abs(losses["loss"] - (losses["matching"] + 0.5 * losses["loss_clean"])) < 1e-4, losses


def test_adversarial_examples_are_refused_without_images_to_move() -> None:
    """Before any data is read: no image tower, a cached one (never reused once images move), or an objective
    with no loss on images."""
    attack = "objective.adversarial_examples={epsilon: 0.01}"
    with pytest.raises(ValueError, match="adversarial_examples attack a model's images: objective.kind diffusion"):
        load_recipe("shapes-diffusion", [attack])
    with pytest.raises(ValueError, match="epsilon"):
        load_recipe("shapes-fusion", ["objective.adversarial_examples={epsilon: 0}"])
    with pytest.raises(ConfigError, match="moves images; the model reads audio"):
        check_recipe_before_data(load_recipe("shapes-speaker", [attack]))
    with pytest.raises(ConfigError, match="drop model.cache.encoders.image"):
        check_recipe_before_data(load_recipe("shapes-fusion-imagenet", [attack]))
    check_recipe_before_data(load_recipe("shapes-fusion", [attack]))  # images, no cache: fine


def test_the_attack_leaves_the_models_mode_and_draws_what_the_step_draws() -> None:
    """The attack runs in eval mode and the model is back in training mode after; every call of the objective in
    one step draws the same random numbers (a matching objective's partners), the step's own included."""
    seen: list[tuple[bool, float]] = []

    class Noisy(nn.Module):
        def forward(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
            draw = float(torch.rand(()))
            seen.append((model.training, draw))
            return {"loss": model(batch.inputs["image"][0]).square().mean() * draw}

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2), nn.Dropout(0.5)).train()
    images = torch.randn(2, 3, 4, 4)
    batch = Batch(["a", "b"], inputs={"image": (images, None)}, present={"image": torch.ones(2, dtype=torch.bool)})
    wrapper = AdversarialExamples(Noisy(), epsilon=0.05, steps=2, mean=MEAN, std=STD, clean_weight=1.0)
    losses = wrapper(model, batch)
    assert model.training
    assert [mode for mode, _ in seen] == [False, False, True, True]  # two attack steps, then clean and attacked
    assert len({draw for _, draw in seen}) == 1, seen
    assert set(losses) == {"loss", "loss_clean"}


def test_pgd_moves_clips_frame_by_frame() -> None:
    """Clips (B, T, C, H, W): the channel axis is the third from the end, each frame's pixels in [0, 1]."""
    clips = torch.zeros(2, 3, 3, 4, 4)  # normalised zeros: pixels at the mean
    moved = pgd_images(lambda x: x[:, :, 0].sum() - x[:, :, 2].sum(), clips, epsilon=0.1, steps=3, mean=MEAN, std=STD)
    pixels = moved * torch.tensor(STD).view(1, 1, 3, 1, 1) + torch.tensor(MEAN).view(1, 1, 3, 1, 1)
    change = pixels - torch.tensor(MEAN).view(1, 1, 3, 1, 1)
    assert torch.allclose(change[:, :, 0], torch.full_like(change[:, :, 0], 0.1), atol=1e-5)  # up, to the edge
    assert torch.allclose(change[:, :, 2], torch.full_like(change[:, :, 2], -0.1), atol=1e-5)  # down
