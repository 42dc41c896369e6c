"""``--adversarial``: zero-shot image accuracy on images moved by PGD against their true class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from polymodal.backends.base import logit_scale, pixel_tower
from polymodal.backends.hf import HFClipBackend
from polymodal.backends.polymodal_dir import PolymodalBackend
from polymodal.cli.main import app
from polymodal.data.readers import read_manifest
from polymodal.data.shapes import COLORS, SHAPES
from polymodal.evaluate.benchmarks import LoadedSplit
from polymodal.evaluate.context import Attack, EvalContext
from polymodal.evaluate.prompts import SHAPES_TEMPLATES, zero_shot_classifier
from polymodal.evaluate.results import describe_epsilon, epsilon_key, load_results
from polymodal.evaluate.runner import adversarial_curve, parse_epsilons, run_eval
from tests.interop.tiny import save_tiny_clip


def test_epsilons_parse_as_fractions_or_numbers_and_bad_ones_are_named() -> None:
    assert parse_epsilons("4/255, 1/255,0.01") == [1 / 255, 0.01, 4 / 255]
    assert parse_epsilons("2/255,2/255") == [2 / 255]
    for bad, why in (
        ("x", "'x' is not a number"),
        ("1/0", "fraction"),
        ("0", "in \\(0, 1\\]"),
        ("2", "'2': epsilon 2 must be in"),
        ("300/255", "'300/255': epsilon 1.17647 must be in"),
        (",", "no epsilon"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_epsilons(bad)
    assert describe_epsilon(4 / 255) == "4/255" and describe_epsilon(0.01) == "0.01"
    assert epsilon_key(4 / 255) == "0.0156863"


def _one_object_scenes(shapes_dir: Path) -> tuple[list[str], list[int], list[str]]:
    classnames = [f"{c} {s}" for c in COLORS for s in SHAPES]
    scenes = [s for split in ("test", "test_novel") for s in read_manifest(shapes_dir / f"{split}.jsonl")]
    scenes = [s for s in scenes if len(s.metadata["objects"]) == 1]
    return (
        [str(s.image) for s in scenes],
        [classnames.index(s.metadata["label"]["color_shape"]) for s in scenes],
        classnames,
    )


def test_the_attack_raises_the_true_class_loss_and_leaves_the_model_alone(shapes_dir: Path, models: dict) -> None:
    ctx = EvalContext(model=str(models["clip"]), batch_size=4)
    images, labels, classnames = _one_object_scenes(shapes_dir)
    classes = zero_shot_classifier(ctx.embed_texts, classnames, SHAPES_TEMPLATES)
    scale = logit_scale(ctx.backend, "image")
    target = torch.tensor(labels)
    params = {k: v.clone() for k, v in ctx.saved.model.state_dict().items()}

    def loss(embedded: torch.Tensor) -> float:
        return float(F.cross_entropy(scale * embedded @ classes.T, target))

    clean = ctx.embed_media("image", images)
    store = ctx.saved.model.encoders["image"].store  # the eval's cache of the image tower's outputs
    stored = len(store.entries)
    with torch.inference_mode():  # as the runner calls it
        attacked = ctx.embed_attacked(images, labels, classes, Attack(8 / 255, steps=3))
    again = ctx.embed_attacked(images, labels, classes, Attack(8 / 255, steps=3))
    assert attacked.shape == clean.shape
    assert loss(attacked) > loss(clean) + 0.01
    assert torch.equal(attacked, again)  # the random start is seeded
    assert len(store.entries) == stored  # attacked images are never seen again: not kept
    assert all(torch.equal(v, ctx.saved.model.state_dict()[k]) for k, v in params.items())
    assert all(p.grad is None for p in ctx.saved.model.parameters())


def test_adversarial_curve_in_the_result_and_the_table(tmp_path: Path, shapes_dir: Path, models: dict) -> None:
    kwargs = {"data": shapes_dir, "splits": ["test"], "n_resamples": 20, "epsilons": [1 / 255, 16 / 255]}
    kwargs["attack_steps"] = 2
    doc = run_eval(str(models["clip"]), "shapes-zeroshot,shapes-retrieval", **kwargs)
    zero_shot, retrieval = doc.results
    rob = zero_shot.robustness
    assert rob.metric == "accuracy" and rob.corruptions is None and rob.missing_modality is None  # no --robustness
    assert list(rob.adversarial) == ["0", "0.00392157", "0.0627451"]
    assert rob.adversarial["0"] == zero_shot.metrics["accuracy"]
    assert all(0 <= v <= 1 for v in rob.adversarial.values()) and "PGD-2" in rob.attack
    assert (
        run_eval(str(models["clip"]), "shapes-zeroshot", **kwargs).results[0].robustness.adversarial == rob.adversarial
    )
    # Retrieval too: each image moved away from its own captions; its curve is the headline, caption -> image R@1.
    curve = retrieval.robustness.adversarial
    assert retrieval.robustness.metric == "t2i_R@1" and curve["0"] == retrieval.metrics["t2i_R@1"]
    assert list(curve) == list(rob.adversarial) and all(0 <= v <= curve["0"] for v in curve.values())
    assert "each image's own captions among the split's captions" in retrieval.robustness.attack
    captions_only = LoadedSplit("shapes-retrieval", "test", "CIDEr-D", lambda *a: None)  # as a captioner's is
    assert adversarial_curve(captions_only, 0.5, [0.01], 2) == (
        None,
        "adversarial examples are measured for zero-shot image classification and image-caption retrieval by an "
        "embedding model; this run scores CIDEr-D of image",
    )

    out = tmp_path / "eval.json"
    args = ["eval", str(models["clip"]), "-b", "shapes-zeroshot", "--data", str(shapes_dir), "--split", "test"]
    result = CliRunner().invoke(app, [*args, "--adversarial", "16/255,1/255", "--attack-steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "PGD at 1/255" in result.output and "PGD at 16/255" in result.output
    assert load_results(out).results[0].robustness.adversarial == rob.adversarial
    assert json.loads(out.read_text())["results"][0]["robustness"]["attack"] == rob.attack
    bad = CliRunner().invoke(app, [*args, "--adversarial", "4/255,half"])
    assert bad.exit_code == 2 and "--adversarial: epsilon 'half' is not a number" in bad.output
    alone = CliRunner().invoke(app, [*args, "--attack-steps", "3"])
    assert alone.exit_code == 2 and "give the radii too" in alone.output


def test_the_retrieval_attack_moves_each_image_away_from_its_own_captions(shapes_dir: Path, models: dict) -> None:
    ctx = EvalContext(model=str(models["clip"]), batch_size=4)
    scenes = list(read_manifest(shapes_dir / "test.jsonl"))[:12]
    images = [str(s.image) for s in scenes]
    texts = [t for s in scenes for t in s.text]
    owner = [i for i, s in enumerate(scenes) for _ in s.text]
    own = [[j for j, o in enumerate(owner) if o == i] for i in range(len(scenes))]
    captions = ctx.embed_texts(texts)
    scale = logit_scale(ctx.backend, "image")

    def own_share(embedded: torch.Tensor) -> torch.Tensor:  # per image, its captions' share of the softmax
        probs = (scale * embedded @ captions.T).softmax(dim=1)
        return torch.stack([probs[i, own[i]].sum() for i in range(len(scenes))])

    clean = ctx.embed_media("image", images)
    attacked = ctx.embed_attacked(images, own, captions, Attack(8 / 255, steps=3))
    assert bool((own_share(attacked) < own_share(clean)).all())
    # A target given as a number (a class index, numpy's too) or as a list of one.
    one = ctx.embed_attacked(images, [np.int64(o[0]) for o in own], captions, Attack(8 / 255, steps=2))
    assert torch.equal(one, ctx.embed_attacked(images, [o[:1] for o in own], captions, Attack(8 / 255, steps=2)))
    # An image with nothing to move away from is left as it is.
    kept = ctx.embed_attacked(images[:2], [own[0], []], captions, Attack(8 / 255, steps=2))
    assert torch.allclose(kept[1], clean[1], atol=1e-5) and not torch.allclose(kept[0], clean[0], atol=1e-3)


def test_a_model_without_a_pixel_tower_is_skipped_and_bad_attacks_refused(
    shapes_dir: Path, models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = {"data": shapes_dir, "splits": ["test"], "n_resamples": 20}
    with pytest.raises(ValueError, match="epsilon 0 must be in"):
        run_eval(str(models["clip"]), "shapes-zeroshot", epsilons=[0.0], **kwargs)
    with pytest.raises(ValueError, match="at least one step, got 0"):
        run_eval(str(models["clip"]), "shapes-zeroshot", epsilons=[0.01], attack_steps=0, **kwargs)
    monkeypatch.setattr(PolymodalBackend, "pixel_tower", lambda self: None)  # as polymodal-base's classifier
    (result,) = run_eval(str(models["clip"]), "shapes-zeroshot", epsilons=[0.01], **kwargs).results
    assert result.robustness.adversarial is None
    assert "nothing to attack" in result.robustness.skipped["adversarial examples"]


def test_a_hugging_face_clip_can_be_attacked(tmp_path: Path) -> None:
    save_tiny_clip(tmp_path / "clip")
    backend = HFClipBackend.load(tmp_path / "clip")
    tower = pixel_tower(backend)
    from PIL import Image

    images = [Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (30, 40), (20, 30, 200))]
    pixels, mask = tower.pixels(images)
    assert mask is None and tower.mean == tuple(backend.preprocess.mean)
    pixels.requires_grad_(True)
    embedded = tower.embed(pixels, mask)
    assert torch.allclose(embedded, backend.embed_images(images), atol=1e-6)
    embedded[:, 0].sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0

    backend.clip.model.zero_grad(set_to_none=True)
    ctx = EvalContext(model=str(tmp_path / "clip"), batch_size=1)
    ctx._backend = backend  # the model checked above (its parameters train: an attack must leave their grads alone)
    classes = ctx.embed_texts(["red", "blue", "green"])
    classes = classes / classes.norm(dim=-1, keepdim=True)
    clean = backend.embed_images(images)
    attacked = ctx.embed_attacked(images, [0, 1], classes, Attack(16 / 255, steps=3))
    scale, target = logit_scale(backend, "image"), torch.tensor([0, 1])
    assert F.cross_entropy(scale * attacked @ classes.T, target) > F.cross_entropy(scale * clean @ classes.T, target)
    assert all(p.grad is None for p in backend.clip.model.parameters())
