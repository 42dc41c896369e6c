"""Adversarial training: PGD moves images within epsilon of each pixel towards a higher loss, and a recipe with
``objective.adversarial_examples`` trains on such images (refused where there are no images to move). What it buys
under attack is measured by benchmarks/adversarial_training.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from polymodal.config import ConfigError
from polymodal.modules.attacks import pgd_images
from polymodal.train.build import with_adversarial_examples
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
    with pytest.raises(ValueError, match="adversarial_examples attack a model's images: objective.kind diffusion"):
        load_recipe("shapes-diffusion", ["objective.adversarial_examples={epsilon: 0.01}"])
    with pytest.raises(ValueError, match="epsilon"):
        load_recipe("shapes-fusion", ["objective.adversarial_examples={epsilon: 0}"])
    recipe = load_recipe("shapes-speaker", ["objective.adversarial_examples={epsilon: 0.01}"])
    assert recipe.objective.adversarial_examples is not None
    sound_only = SimpleNamespace(modalities=["audio"])  # what with_adversarial_examples reads of a model
    with pytest.raises(ConfigError, match="moves images; the model reads audio"):
        with_adversarial_examples(recipe, nn.Identity(), sound_only)  # type: ignore[arg-type]
