"""ShapesWorld captions in words the training captions never use: the test set for what a
pretrained, locked text tower buys (LiT; ``benchmarks/lit_vs_scratch.py``).

Every colour and shape is named by a synonym (``crimson`` for red, ``rhombus`` for diamond ...)
inside sentence frames of new words ("an image containing ..."). :func:`write_paraphrase_split`
checks the guarantee against the training captions before it writes anything: apart from the
articles and "and", no word of a paraphrase occurs in ``train.jsonl``.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from polymodal.data.shapes import COLORS, SHAPES

COLOR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "scarlet"),
    "orange": ("amber", "tangerine"),
    "yellow": ("golden", "lemon"),
    "green": ("emerald", "lime"),
    "cyan": ("turquoise", "aqua"),
    "blue": ("navy", "azure"),
    "purple": ("violet", "lilac"),
    "pink": ("rose", "blush"),
}
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("disk", "round dot"),
    "square": ("box", "quadrate"),
    "triangle": ("wedge", "trigon"),
    "diamond": ("rhombus", "lozenge"),
    "star": ("pentagram", "five-pointed asterisk"),
    "hexagon": ("six-sided polygon", "honeycomb cell"),
    "cross": ("plus sign", "plus"),
    "heart": ("valentine", "love symbol"),
}
FRAMES = ("an image containing {}", "this photo shows {}", "{} drawn here")
# Words a sentence cannot do without; everything else in a paraphrase must be new.
ALLOWED_SHARED = frozenset({"a", "an", "and"})

assert set(COLOR_SYNONYMS) == set(COLORS) and set(SHAPE_SYNONYMS) == set(SHAPES)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def _listing(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def paraphrase(objects: list[dict[str, Any]], rng: random.Random) -> str:
    """One caption naming every object by a colour and a shape synonym, in a random frame."""
    named = []
    for obj in objects:
        phrase = f"{rng.choice(COLOR_SYNONYMS[obj['color']])} {rng.choice(SHAPE_SYNONYMS[obj['shape']])}"
        named.append(f"{_article(phrase)} {phrase}")
    return rng.choice(FRAMES).format(_listing(named))


def synonym_class_names() -> list[str]:
    """``"{colour} {shape}"`` class names in synonyms, in the order of the ShapesWorld classes (colour-major)."""
    return [f"{COLOR_SYNONYMS[c][0]} {SHAPE_SYNONYMS[s][0]}" for c in COLORS for s in SHAPES]


def training_vocabulary(data_dir: str | Path) -> set[str]:
    vocabulary: set[str] = set()
    with open(Path(data_dir) / "train.jsonl", encoding="utf-8") as f:
        for line in f:
            for caption in json.loads(line).get("captions", []):
                vocabulary.update(words(caption))
    return vocabulary


def paraphrase_vocabulary() -> set[str]:
    out: set[str] = set()
    for phrase in [
        *FRAMES,
        *(s for syn in COLOR_SYNONYMS.values() for s in syn),
        *(s for syn in SHAPE_SYNONYMS.values() for s in syn),
    ]:
        out.update(words(phrase.replace("{}", "")))
    return out


def write_paraphrase_split(data_dir: str | Path, split: str, captions_per_image: int = 3, seed: int = 0) -> Path:
    """Write ``{split}_paraphrase.jsonl`` next to ``{split}.jsonl``: same images and objects, paraphrased captions.

    Raises ValueError naming the words if any paraphrase word (articles and "and" aside) occurs in
    the training captions of ``data_dir``.
    """
    data_dir = Path(data_dir)
    shared = (paraphrase_vocabulary() & training_vocabulary(data_dir)) - ALLOWED_SHARED
    if shared:
        raise ValueError(f"{data_dir / 'train.jsonl'}: the training captions use paraphrase words {sorted(shared)}")
    rng = random.Random(seed)
    target = data_dir / f"{split}_paraphrase.jsonl"
    tmp = target.with_name(f".{target.name}.tmp")
    with open(data_dir / f"{split}.jsonl", encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as out:
        for line in src:
            row = json.loads(line)
            row["captions"] = [paraphrase(row["objects"], rng) for _ in range(captions_per_image)]
            row.pop("qa", None)
            row.pop("statements", None)
            out.write(json.dumps(row) + "\n")
    tmp.replace(target)
    return target
