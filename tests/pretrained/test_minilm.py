"""MiniLM loaded with transformers equals sentence-transformers' own pipeline."""

from __future__ import annotations

import pytest
import torch

SENTENCES = [
    "a photo of a cat.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Zero-shot classification maps images into a text embedding space.",
    "espresso",
    "",
    "long " * 300,  # past the 128 tokens of the shipped tokenizer.json and the 256-token limit
]


def test_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    from polymodal.pretrained.locate import minilm_dir

    reference = st.SentenceTransformer(str(minilm_dir()), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    ours = minilm.embed(SENTENCES, batch_size=4)  # several batches, sorted by length inside
    assert ours.shape == (len(SENTENCES), 384) and minilm.dim == 384
    torch.testing.assert_close(ours, torch.from_numpy(reference), atol=1e-5, rtol=0)


def test_batching_and_padding_do_not_change_embeddings(minilm):
    alone = torch.cat([minilm.embed([s]) for s in SENTENCES[:4]])
    together = minilm.embed(SENTENCES[:4], batch_size=64)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(together.norm(dim=1), torch.ones(4))
    assert minilm.embed([]).shape == (0, 384)
