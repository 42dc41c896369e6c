"""Word-swap hard negative captions (NegCLIP) and their way through the dataset and collate."""

from __future__ import annotations

import re

import pytest
import torch

from polymodal.data.collate import collate
from polymodal.data.dataset import MultimodalDataset
from polymodal.data.hard_negatives import WordSwapNegatives
from polymodal.data.processors import ImageProcessor, TextProcessor
from polymodal.data.schema import Sample
from polymodal.data.text import train_tokenizer
from polymodal.data.transforms import ImagePreprocess

COLOURS = ["red", "green", "blue"]
SHAPES = ["circle", "square", "triangle"]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def test_exactly_one_group_word_changes_to_another_member_of_its_group() -> None:
    swap = WordSwapNegatives([COLOURS, SHAPES])
    text = "a red circle left of a blue square"
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        negative = swap(text, generator)
        before, after = _words(text), _words(negative)
        assert len(before) == len(after)
        diffs = [(a, b) for a, b in zip(before, after) if a != b]
        assert len(diffs) == 1
        old, new = diffs[0]
        assert any(old in g and new in g for g in (COLOURS, SHAPES))
        seen.add(diffs[0])
    # Every occurrence and every replacement gets drawn: 4 group words x 2 alternatives each.
    assert len(seen) == 8


def test_phrases_match_whole_words_longest_first_and_no_match_gives_none() -> None:
    swap = WordSwapNegatives([["top left", "top right"], ["redish", "bluish"]])
    generator = torch.Generator().manual_seed(1)
    assert swap("a star in the top left", generator) == "a star in the top right"
    assert swap("a red star", generator) is None  # "red" is not the whole word "redish"
    assert swap("", generator) is None


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([["red"]], "at least two different words"),
        ([["red", "red"]], "at least two different words"),
        ([["red", "blue"], ["blue", "square"]], "'blue' is in two groups"),
    ],
)
def test_bad_groups_are_refused(groups, message) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        WordSwapNegatives(groups)


def test_dataset_items_carry_seeded_negatives_and_collate_masks_missing_ones() -> None:
    tok = train_tokenizer(["a red circle", "a blue square", "nothing to swap"], vocab_size=50)
    samples = [
        Sample("a", text=["a red circle"]),
        Sample("b", text=["nothing to swap"]),
        Sample("c", text=["a blue square"]),
    ]
    processors = {
        "image": ImageProcessor(ImagePreprocess.preset("half", image_size=8)),
        "text": TextProcessor(tok, max_length=64),
    }
    ds = MultimodalDataset(samples, processors, text_mode="random", negative_text=WordSwapNegatives([COLOURS, SHAPES]))
    items = [ds[i] for i in range(3)]
    assert items[1]["negative_text_ids"] is None
    assert [ds[i]["negative_text_ids"] for i in range(3)] == [it["negative_text_ids"] for it in items]  # seeded
    batch = collate(items, ds.processors)
    assert batch.negative_present.tolist() == [True, False, True]
    assert batch.negative_text_ids.shape[0] == 3 and not batch.negative_text_mask[1].any()
    assert batch.negative_text_ids[1].eq(tok.pad_id).all()  # padded with the text processor's pad id
    decoded = tok.decode(batch.negative_text_ids[0][batch.negative_text_mask[0]].tolist())
    assert decoded != "a red circle" and len(decoded.split()) == 3
    # No item with a negative at all: the tensors still exist (every process of a run takes the same path).
    lonely = collate([ds[1]], ds.processors)
    assert lonely.negative_present.tolist() == [False] and lonely.negative_text_ids.shape == (1, 1)
    with pytest.raises(ValueError, match="one caption per item"):
        MultimodalDataset(samples, processors, text_mode="all", negative_text=WordSwapNegatives([COLOURS]))
    with pytest.raises(ValueError, match="needs a 'text' processor"):
        MultimodalDataset(samples, {"image": processors["image"]}, negative_text=WordSwapNegatives([COLOURS]))
