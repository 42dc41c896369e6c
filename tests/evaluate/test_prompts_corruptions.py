"""Prompt ensembling against a per-class loop, and the seeded corruptions."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.evaluate.corruptions import CORRUPTIONS, corrupt
from polymodal.evaluate.prompts import TEMPLATES, build_prompts, resolve_templates, zero_shot_classifier


def fake_embed(texts: list[str]) -> torch.Tensor:
    """A fixed random (unnormalised) vector per string."""
    rows = [torch.randn(16, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()))) * 3 for t in texts]
    return torch.stack(rows)


def test_zero_shot_classifier_matches_a_per_class_loop() -> None:
    classes, templates = ["apple", "red car", "dog"], TEMPLATES["imagenet"]
    calls = []
    fast = zero_shot_classifier(lambda t: calls.append(len(t)) or fake_embed(t), classes, templates)
    reference = []
    for name in classes:
        prompts = [t.format(name) for t in templates]
        prompts = [p.replace("a apple", "an apple") for p in prompts]
        emb = torch.nn.functional.normalize(fake_embed(prompts), dim=-1)
        mean = emb.mean(0)
        reference.append(mean / mean.norm())
    assert calls == [len(classes) * len(templates)]  # one batched call
    assert fast.shape == (3, 16)
    torch.testing.assert_close(fast, torch.stack(reference))
    torch.testing.assert_close(fast.norm(dim=1), torch.ones(3))


def test_template_sets_and_errors() -> None:
    assert TEMPLATES["simple"] == ["a photo of a {}."]
    assert 15 <= len(TEMPLATES["imagenet"]) <= 25 and len(set(TEMPLATES["imagenet"])) == len(TEMPLATES["imagenet"])
    assert all(t.count("{}") == 1 for ts in TEMPLATES.values() for t in ts)
    assert build_prompts(["orange circle"], ["a {}"]) == ["an orange circle"]
    with pytest.raises(ValueError, match="unknown template set 'clip'.*imagenet"):
        resolve_templates("clip")
    with pytest.raises(ValueError, match="exactly one"):
        resolve_templates(["no slot here"])


def _image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruptions_are_seeded_and_grow_with_severity(name: str) -> None:
    img = _image()
    base = np.asarray(img, dtype=np.float64)
    assert corrupt(img, name, 0) is img
    errors = []
    for severity in range(1, 6):
        out = corrupt(img, name, severity, seed=3, index=7)
        again = corrupt(img, name, severity, seed=3, index=7)
        assert out.size == img.size and out.mode == "RGB"
        assert np.array_equal(np.asarray(out), np.asarray(again))  # same seed, same pixels
        errors.append(float(np.mean((np.asarray(out, dtype=np.float64) - base) ** 2)))
    assert errors[0] > 0
    assert errors[-1] > errors[0]  # severity 5 distorts more than severity 1
    if name == "gaussian_noise":
        assert errors == sorted(errors)
        other = corrupt(img, name, 3, seed=3, index=8)
        assert not np.array_equal(np.asarray(other), np.asarray(corrupt(img, name, 3, seed=3, index=7)))


def test_corrupt_rejects_unknown_names_and_severities() -> None:
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(_image(), "fog", 1)
    with pytest.raises(ValueError, match="severity must be 0..5"):
        corrupt(_image(), "blur", 6)
