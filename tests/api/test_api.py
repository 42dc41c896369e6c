"""polymodal.load and the Model handle: inputs of every kind, tasks by capability, clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import polymodal
from polymodal.backends import TaskNotSupported, load_backend
from polymodal.data.errors import BadSampleError
from tests.tiny_models import ANSWERS


def _image(seed: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def clip(tiny_dual_encoder_dir):  # noqa: ANN001, ANN201
    return polymodal.load(tiny_dual_encoder_dir, batch_size=2)


def test_every_image_input_kind_gives_the_same_embedding(clip, tmp_path) -> None:  # noqa: ANN001
    img = _image(1)
    path = tmp_path / "a.png"
    img.save(path)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    inputs = [img, str(path), path, buffer.getvalue(), np.asarray(img), np.asarray(img) / 255.0]
    emb = clip.embed_image(inputs)
    assert emb.shape == (6, clip.embed_dim) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, np.repeat(emb[:1], 6, axis=0), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_results(tiny_dual_encoder_dir) -> None:  # noqa: ANN001
    images = [_image(i) for i in range(5)]
    texts = ["a red circle", "two yellow stars", "a blue square", "no", "a green triangle"]
    one = polymodal.load(tiny_dual_encoder_dir, batch_size=1)
    many = polymodal.load(tiny_dual_encoder_dir, batch_size=64)
    np.testing.assert_allclose(one.embed_image(images), many.embed_image(images), atol=1e-5)
    np.testing.assert_allclose(one.embed_text(texts), many.embed_text(texts), atol=1e-5)


def test_texts_are_batched_by_token_count_and_come_back_in_order(
    tiny_dual_encoder_dir, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """More texts than a batch go in batches of like token counts (each pads to its own longest, short ones in
    larger batches), rows in input order; the counts are the model's own (special tokens in), and a backend that
    cannot count gets characters."""
    import polymodal.api.model as api_model
    from polymodal.backends.base import text_lengths

    texts = ["a red circle above a blue square", "no", "two yellow stars", "a", "a green triangle", "big"]
    chunks: list[list[str]] = []

    def spy(backend, modality, chunk):  # noqa: ANN001, ANN202
        chunks.append(list(chunk))
        return real(backend, modality, chunk)

    real = api_model.embed
    model = polymodal.load(tiny_dual_encoder_dir, batch_size=2)
    _, mask = model.backend.saved.text.tokenizer.encode_batch(texts, model.backend.saved.text.max_length)
    counts = text_lengths(model.backend, texts)
    assert counts == mask.sum(1).tolist() and counts != [len(t) for t in texts]
    monkeypatch.setattr(api_model, "embed", spy)
    rows = model.embed_text(texts)
    order = sorted(range(len(texts)), key=lambda i: counts[i])
    assert sum(chunks, []) == [texts[i] for i in order]  # batches of like counts, shortest first
    # No batch pads to more than 2 (batch_size) x the longest text: short texts share larger batches.
    assert all(len(c) * max(counts[texts.index(t)] for t in c) <= 2 * max(counts) for c in chunks)
    assert max(map(len, chunks)) > 2 and len(chunks[-1]) <= 2
    alone = np.concatenate([model.embed_text(t) for t in texts])
    np.testing.assert_allclose(rows, alone, atol=1e-5)
    assert text_lengths(object(), texts) == [len(t) for t in texts]


def test_a_corpus_larger_than_the_memo_is_tokenized_once_a_window_at_a_time(
    tiny_dual_encoder_dir, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    import polymodal.api.model as api_model
    from polymodal.data import processors

    monkeypatch.setattr(api_model, "ENCODED_MEMO", 6)
    monkeypatch.setattr(processors, "ENCODED_MEMO", 6)
    model = polymodal.load(tiny_dual_encoder_dir, batch_size=2)
    tokenizer = model.backend.saved.text.tokenizer
    texts = [f"a {'red ' * (i % 4)}circle {i}" for i in range(15)]  # three windows: 6, 6 and 3 texts
    alone = np.concatenate([model.embed_text(t) for t in texts])
    encoded: list[str] = []
    real = tokenizer.encode_many

    def counted(chunk: list[str], max_length: int) -> list[list[int]]:
        encoded.extend(chunk)
        return real(chunk, max_length)

    monkeypatch.setattr(tokenizer, "encode_many", counted)
    rows = model.embed_text(texts)
    np.testing.assert_allclose(rows, alone, atol=1e-5)  # rows in input order across windows
    assert sorted(encoded) == sorted(texts)  # counted for the length sort, then found in the memo per batch


def test_embed_text_matches_the_model_directly(clip, tiny_dual_encoder_dir) -> None:  # noqa: ANN001
    backend = load_backend(tiny_dual_encoder_dir)
    text = backend.saved.text  # the tokenizer and length the model was saved with
    ids, mask = text.tokenizer.encode_batch(["a red circle"], text.max_length)
    with torch.no_grad():
        expected = backend.saved.model.embed("text", ids, mask).numpy()
    np.testing.assert_allclose(clip.embed_text("a red circle"), expected, atol=1e-6)


def test_classify_ranks_by_similarity_and_probabilities_sum_to_one(clip) -> None:  # noqa: ANN001
    labels = ["red circle", "blue square", "green triangle"]
    images = [_image(3), _image(4)]
    result = clip.classify(images, labels, templates=["{}"])
    image_emb, label_emb = clip.embed_image(images), clip.embed_text(labels)
    for ranked, sims in zip(result, image_emb @ label_emb.T):
        assert [label for label, _ in ranked] == [labels[i] for i in np.argsort(-sims)]
        assert sum(p for _, p in ranked) == pytest.approx(1.0, abs=1e-5)
    assert len(clip.classify(images[0], labels, top_k=1)[0]) == 1


def test_bf16_stays_close_to_fp32(tiny_dual_encoder_dir) -> None:  # noqa: ANN001
    images = [_image(i) for i in range(3)]
    fp32 = polymodal.load(tiny_dual_encoder_dir).embed_image(images)
    bf16 = polymodal.load(tiny_dual_encoder_dir, precision="bf16").embed_image(images)
    assert bf16.dtype == np.float32
    assert float(np.min(np.sum(fp32 * bf16, axis=1))) > 0.98  # cosine similarity


def test_tasks_follow_capabilities(clip, tiny_captioner_dir, tiny_vqa_dir) -> None:  # noqa: ANN001
    with pytest.raises(TaskNotSupported, match="cannot caption: it supports embed"):
        clip.caption(_image(0))
    captioner = polymodal.load(tiny_captioner_dir)
    captions = captioner.caption([_image(0), _image(1)], max_new_tokens=4)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    assert len(captioner.caption(_image(0), max_new_tokens=500)) == 1  # capped at the decoder's 16 positions
    vqa = polymodal.load(tiny_vqa_dir)
    answers = vqa.answer(_image(0), ["what color is the shape", "is there a circle", "how many shapes are there"])
    assert len(answers) == 3 and set(answers) <= set(ANSWERS)
    with pytest.raises(ValueError, match="2 image inputs and 3 questions"):
        vqa.answer([_image(0), _image(1)], ["a", "b", "c"])


def test_bad_inputs_name_what_is_wrong(clip, tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(BadSampleError, match="missing.png"):
        clip.embed_image(tmp_path / "missing.png")
    with pytest.raises(BadSampleError, match="input #1"):
        clip.embed_image([_image(0), b"not an image at all"])
    with pytest.raises(ValueError, match="channels-first"):
        clip.embed_image(np.zeros((3, 32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clip.embed_image(np.full((8, 8, 3), 2.0))
    with pytest.raises(ValueError, match="at least two"):
        clip.classify(_image(0), ["only one"])
    with pytest.raises(ValueError, match="precision"):
        polymodal.load(clip.backend.saved.path, precision="fp8")


def test_load_backend_accepts_run_dirs_and_names_what_it_expected(tiny_dual_encoder_dir, tmp_path) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    run.mkdir()
    (run / "best").symlink_to(tiny_dual_encoder_dir, target_is_directory=True)
    backend = load_backend(run)
    assert backend.identity == load_backend(tiny_dual_encoder_dir).identity
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no model here"):
        load_backend(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not a Hugging Face hub id"):
        load_backend("no/such/thing")


def test_a_long_list_of_image_paths_is_decoded_one_batch_at_a_time(
    clip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """Decoding every path first held all the images at once (a folder of photos in memory); a batch at a time
    holds batch_size of them, and the embeddings are the same."""
    import polymodal.api.inputs as inputs

    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.png")
        _image(i).save(paths[-1])
    expected = clip.embed_image([_image(i) for i in range(7)])
    live: list[int] = []  # images decoded and not yet given to the model, at each decode
    decoded_since_call = [0]
    real_to_image, real_embed = inputs.to_image, clip.backend.embed

    def counting_to_image(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        decoded_since_call[0] += 1
        live.append(decoded_since_call[0])
        return real_to_image(*args, **kwargs)

    def counting_embed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        decoded_since_call[0] = 0
        return real_embed(*args, **kwargs)

    monkeypatch.setattr(inputs, "to_image", counting_to_image)
    monkeypatch.setattr(clip.backend, "embed", counting_embed)
    np.testing.assert_allclose(clip.embed_image([str(p) for p in paths]), expected, atol=1e-5)
    assert len(live) == 7 and max(live) <= clip.batch_size
