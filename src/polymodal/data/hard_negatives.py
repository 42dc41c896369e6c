"""Hard negative captions by word swaps (NegCLIP: Yuksekgonul et al., 2023, "When and why
vision-language models behave like bags-of-words").

A contrastive batch rarely holds two images that differ in one attribute only, so a dual
encoder can reach a low loss from the easiest cue (on ShapesWorld: colour) and never learn the
rest (shape). A caption with one word swapped for another of its group ("a red circle" ->
"a red square") is a negative only that attribute separates; scoring each image against such
captions too makes the attribute worth learning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch


class WordSwapNegatives:
    """``negatives(text, generator) -> str | None``: ``text`` with one group word replaced.

    ``groups`` are lists of interchangeable words or phrases (e.g. the colours, the shapes).
    One occurrence, drawn uniformly among all group words in the text, is replaced by another
    member of its group, drawn uniformly; None when the text holds no group word. Matching is
    whole-word and case-insensitive; a phrase may have several words ("top left").
    """

    def __init__(self, groups: Sequence[Sequence[str]]) -> None:
        self.groups = [tuple(w.strip().lower() for w in g) for g in groups]
        self._group_of: dict[str, tuple[str, ...]] = {}
        for i, group in enumerate(self.groups):
            if len(set(group)) < 2:
                raise ValueError(f"hard_negatives group {i} needs at least two different words, got {list(group)}")
            for word in group:
                if not word:
                    raise ValueError(f"hard_negatives group {i} has an empty word")
                if word in self._group_of and self._group_of[word] != group:
                    raise ValueError(f"hard_negatives: {word!r} is in two groups")
                self._group_of[word] = group
        # Longest first, so "top left" wins over "left" where both are group words.
        words = sorted(self._group_of, key=len, reverse=True)
        self._pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)

    def __call__(self, text: str, generator: torch.Generator | None = None) -> str | None:
        matches = list(self._pattern.finditer(text))
        if not matches:
            return None
        match = matches[int(torch.randint(len(matches), (), generator=generator))]
        word = match.group(0).lower()
        options = [w for w in self._group_of[word] if w != word]
        new = options[int(torch.randint(len(options), (), generator=generator))]
        return text[: match.start()] + new + text[match.end() :]
