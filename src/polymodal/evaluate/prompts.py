"""Prompt templates for zero-shot classification and CLIP-style prompt ensembling.

A template is a format string with one ``{}`` for the class name. A class is represented by the
mean of its L2-normalised prompt embeddings, renormalised (Radford et al. 2021, "prompt
ensembling"): averaging several phrasings smooths out the quirks of any single one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# Our own CLIP-style ensemble for natural photos: varied photo conditions and framings, each
# naming the class once. 18 templates (CLIP's ImageNet set has 80; 18 keeps evaluation cheap).
IMAGENET_TEMPLATES = [
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a blurry photo of a {}.",
    "a cropped photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a close-up photo of a {}.",
    "a low resolution photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a good photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a drawing of a {}.",
    "a painting of a {}.",
    "a sculpture of a {}.",
    "a rendering of a {}.",
    "a toy {}.",
    "itap of a {}.",
]

# ShapesWorld: phrasings that occur in its captions, so a model trained on them can be probed.
SHAPES_TEMPLATES = [
    "a picture with a {}",
    "a {}",
    "one object: a {}",
]

# Sound classes (ESC-50 and the like): phrasings of a recording, as the CLAP papers prompt ("the sound of ...").
AUDIO_TEMPLATES = [
    "the sound of {}.",
    "the sound of a {}.",
    "a recording of {}.",
    "this is a sound of {}.",
    "a {} can be heard.",
]

# ShapesWorld moves: what a shape does in a clip ("moves left", "grows"), phrased as its captions tell events.
ACTION_TEMPLATES = [
    "a shape {}",
    "the shape {}",
    "one of the shapes {}",
]

# People acting in videos (UCF101, Kinetics): CLIP's 48 UCF101 prompts, "a video of a person {}" and its variants.
HUMAN_ACTION_TEMPLATES = [
    f"a {medium} of {who} {verb}{{}}."
    for verb in ("", "using ", "doing ", "during ", "performing ", "practicing ")
    for who in ("a person", "the person")
    for medium in ("photo", "video", "example", "demonstration")
]

TEMPLATES: dict[str, list[str]] = {
    "simple": ["a photo of a {}."],
    "imagenet": IMAGENET_TEMPLATES,
    "shapes": SHAPES_TEMPLATES,
    "audio": AUDIO_TEMPLATES,
    "actions": ACTION_TEMPLATES,
    "human_actions": HUMAN_ACTION_TEMPLATES,
}


def class_words(name: str) -> str:
    """A class's folder or file name as prompt words: ``maple_tree`` -> "maple tree", ``ApplyEyeMakeup`` -> "apply
    eye makeup" (capitalised words lowercased, acronyms such as ``UFO`` kept)."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name.replace("_", " ")).split()
    return " ".join(w.lower() if w[1:].islower() else w for w in words)


def resolve_templates(templates: str | Sequence[str]) -> list[str]:
    """A template set by name (one of :data:`TEMPLATES`) or an explicit list, checked for one ``{}`` each."""
    if isinstance(templates, str):
        if templates not in TEMPLATES:
            raise ValueError(f"unknown template set {templates!r}; choose from {', '.join(sorted(TEMPLATES))}")
        return list(TEMPLATES[templates])
    out = list(templates)
    if not out:
        raise ValueError("templates is empty; give at least one format string with '{}'")
    for t in out:
        if t.count("{}") != 1:
            raise ValueError(f"template {t!r} must contain exactly one '{{}}' for the class name")
    return out


def _article_fix(prompt: str) -> str:
    """'a apple' -> 'an apple': templates say 'a {}' and class names may start with a vowel."""
    words = prompt.split(" ")
    for i in range(len(words) - 1):
        if words[i].lower() == "a" and words[i + 1][:1].lower() in "aeiou" and words[i + 1][:1]:
            words[i] = "an" if words[i] == "a" else "An"
    return " ".join(words)


def build_prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """All prompts, class-major: ``prompts[c * T + t]`` is template ``t`` filled with class ``c``."""
    return [_article_fix(t.format(name)) for name in classnames for t in templates]


def zero_shot_classifier(
    embed_text: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
) -> torch.Tensor:
    """(C, D) unit class embeddings: the renormalised mean of each class's normalised prompt embeddings.

    ``embed_text`` maps a list of strings to (N, D) embeddings (normalised or not: each prompt
    embedding is normalised here before averaging). All prompts go through one call, so the
    caller's batching decides the batch size.
    """
    templates = resolve_templates(templates)
    if not classnames:
        raise ValueError("classnames is empty")
    emb = embed_text(build_prompts(classnames, templates)).float()  # (C * T, D)
    emb = F.normalize(emb, dim=-1).view(len(classnames), len(templates), -1)  # (C, T, D)
    return F.normalize(emb.mean(dim=1), dim=-1)  # (C, D)
