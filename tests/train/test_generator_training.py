"""Training text-to-image generators: the adversarial objective's two optimizers and alternating steps as part of
the trainer (exact resume included), and both recipes end to end on a small ShapesWorld."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from polymodal.models import build_model
from polymodal.models.config import GanConfig
from polymodal.train.checkpoint import list_checkpoints
from polymodal.train.config import TrainConfig
from polymodal.train.objectives import AdversarialObjective
from polymodal.train.trainer import Trainer

TEXT = {"name": "transformer_text", "params": {"vocab_size": 32, "width": 16, "depth": 1, "heads": 2, "max_length": 8}}
GAN = {
    "encoders": {"text": TEXT},
    "image_size": 8,
    "noise_dim": 8,
    "condition_dim": 8,
    "generator_widths": [16, 8],
    "discriminator_widths": [8, 16],
    "feature_dim": 16,
}


class Pairs:
    """The slice of a collated batch the generator objectives read."""

    def __init__(self, images: torch.Tensor, ids: torch.Tensor) -> None:
        n = images.size(0)
        self.ids = [str(i) for i in range(n)]
        self.inputs = {"image": (images, None), "text": (ids, torch.ones_like(ids, dtype=torch.bool))}
        self.present = {m: torch.ones(n, dtype=torch.bool) for m in self.inputs}

    def input(self, modality: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.inputs[modality]

    def to(self, device: torch.device) -> Pairs:
        return self


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> Pairs:
    return Pairs(torch.stack([i for i, _ in items]), torch.stack([t for _, t in items]))


def pairs(n: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 3, 8, 8, generator=g) * 2 - 1, torch.randint(4, 32, (n, 6), generator=g))


class KilledAt(AdversarialObjective):
    def __init__(self, call: int) -> None:
        super().__init__()
        self.calls, self.call = 0, call

    def forward(self, model, batch, phase):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == self.call:
            raise KeyboardInterrupt("simulated kill")
        return super().forward(model, batch, phase)


def train_gan(  # type: ignore[no-untyped-def]
    run_dir: Path, objective: AdversarialObjective | None = None, resume: bool = False, gan: dict | None = None, **kw
):
    torch.manual_seed(0)
    model = build_model(GanConfig(**{**GAN, **(gan or {})}))
    config = TrainConfig(
        **{"steps": 6, "batch_size": 8, "lr": 1e-3, "betas": (0.0, 0.9), "checkpoint_every": 2, "seed": 1, **kw}
    )
    trainer = Trainer(model, objective or AdversarialObjective(), pairs(), config, run_dir, collate, progress=False)
    if resume:
        trainer.resume()
    trainer.fit()
    return model, trainer


def test_each_phase_has_its_own_optimizer_over_its_own_parameters(tmp_path: Path) -> None:
    model, trainer = train_gan(tmp_path, steps=2)
    owned = [{id(p) for g in o.param_groups for p in g["params"]} for o in trainer.optimizers]
    assert trainer.phases == ["discriminator", "generator"] and len(owned) == 2 and not owned[0] & owned[1]
    assert owned[0] == {id(p) for m in (model.discriminator, model.encoders) for p in m.parameters()}
    assert owned[1] == {id(p) for p in model.generator.parameters()}
    assert int(model.ema_updates) == 2  # one EMA update after each generator step
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss_discriminator", "loss_generator", "grad_norm_discriminator", "grad_norm_generator"} <= set(record)
    assert record["loss"] == pytest.approx(record["loss_discriminator"] + record["loss_generator"])


def test_a_phase_steps_only_its_own_parameters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(GanConfig(**GAN))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    class DiscriminatorOnly(AdversarialObjective):
        phases = ("discriminator", "generator")

        def forward(self, model, batch, phase):  # type: ignore[no-untyped-def]
            out = super().forward(model, batch, "discriminator")  # the generator's phase gets the D loss
            return out

    config = TrainConfig(steps=1, batch_size=8, lr=1e-2, seed=1)
    Trainer(model, DiscriminatorOnly(), pairs(), config, tmp_path, collate, progress=False).fit()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    # The generator's optimizer saw no gradient for its parameters (the D loss reads the generator under
    # no_grad), so only the discriminator's side and the EMA (which follows the unchanged generator) move.
    assert any(n.startswith("discriminator.") for n in changed)
    assert not any(n.startswith("generator.") for n in changed)


def test_interrupted_adversarial_run_resumes_exactly(tmp_path: Path) -> None:
    reference, _ = train_gan(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train_gan(tmp_path / "b", objective=KilledAt(call=10))  # the 5th step's discriminator phase
    assert [c.step for c in list_checkpoints(tmp_path / "b")][-1] == 4
    resumed, trainer = train_gan(tmp_path / "b", resume=True)
    assert trainer.step == 6
    a, b = reference.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_binding_terms_train_deterministically_and_change_the_weights(tmp_path: Path) -> None:
    terms = {"matching_penalty": 2.0, "matching_penalty_power": 2.0, "contrastive_weight": 1.0}
    a, _ = train_gan(tmp_path / "a", gan=terms, steps=3)
    b, _ = train_gan(tmp_path / "b", gan=terms, steps=3)
    plain, _ = train_gan(tmp_path / "plain", steps=3)
    sa, sb, sp = a.state_dict(), b.state_dict(), plain.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sp[k]) for k in sp)  # the terms change the steps
    record = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"matching_penalty", "contrastive_real", "contrastive_generated"} <= set(record)


@pytest.fixture(scope="module")
def shapes32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from polymodal.data.shapes import generate_shapesworld

    out = tmp_path_factory.mktemp("shapes32")
    generate_shapesworld(out, 60, seed=0, image_size=32, progress=False)
    return out


@pytest.mark.parametrize("recipe", ["shapes-diffusion", "shapes-gan"])
def test_packaged_recipe_trains_saves_and_generates(recipe: str, shapes32: Path, tmp_path: Path) -> None:
    from polymodal.models import load_model
    from polymodal.models.saved import load_processors
    from polymodal.train.recipe import load_recipe
    from polymodal.train.run import run_recipe

    small = ["data.max_length=12", "train.batch_size=8", "train.eval_every=2", "train.warmup_steps=1"]
    loaded = load_recipe(recipe, [f"data.path={shapes32}", "train.steps=2", *small])
    result = run_recipe(loaded, tmp_path / "run", progress=False)
    assert result.step == 2
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval" in e for e in evals)
    model = load_model(tmp_path / "run" / "model")
    processors = load_processors(tmp_path / "run" / "model")
    assert set(processors) == {"image", "text"}  # the image processor says how to turn outputs into pixels
    images = model.generate({"text": processors["text"].batch(["a red circle in the center"])}, num_per_text=2, steps=2)
    assert images.shape == (2, 3, 32, 32)


def test_generator_recipes_need_pixels_in_minus_one_to_one() -> None:
    from polymodal.config import ConfigError
    from polymodal.train.recipe import load_recipe

    with pytest.raises(ConfigError, match=r"needs mean \[0.5, 0.5, 0.5\]"):
        load_recipe("shapes-diffusion", ["data.image.mean=[0.48, 0.45, 0.4]"])


def test_word_swapped_captions_are_one_more_kind_of_fake_for_the_discriminator() -> None:
    torch.manual_seed(0)
    model = build_model(GanConfig(**GAN))
    images, ids = pairs(4).tensors
    batch = Pairs(images, ids)
    judged: list[int] = []
    judge = model.discriminator.judge
    model.discriminator.judge = lambda x, t: judged.append(len(x)) or judge(x, t)  # type: ignore[method-assign]
    AdversarialObjective()(model, batch, "discriminator")
    assert judged == [4, 4, 4]  # real, generated, another row's text
    judged.clear()
    batch.negative_text_ids, batch.negative_text_mask = ids.flip(1), torch.ones_like(ids, dtype=torch.bool)
    batch.negative_present = torch.tensor([True, False, True, True])  # a row without a swappable word has none
    AdversarialObjective()(model, batch, "discriminator")
    assert judged == [4, 4, 4, 3]


def test_each_phases_gradient_norm_is_logged_without_clipping_too(tmp_path: Path) -> None:
    """The shipped GAN recipe does not clip; its gradient norms are still its main diagnostic."""
    unclipped, _ = train_gan(tmp_path / "unclipped", steps=2, grad_clip=None, log_every=1)
    record = json.loads((tmp_path / "unclipped" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["grad_norm_discriminator"] > 0 and record["grad_norm_generator"] > 0
    clipped, _ = train_gan(tmp_path / "clipped", steps=2, grad_clip=1e6, log_every=1)  # a bound never reached
    a, b = unclipped.state_dict(), clipped.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # measuring the norm leaves the gradients as they were
