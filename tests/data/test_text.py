"""TextTokenizer: trained word-level / BPE tokenizers and a transformers BERT tokenizer."""

from __future__ import annotations

import pytest
import torch

from polymodal.data.text import TextTokenizer, pad_ids, train_tokenizer

CORPUS = [
    "A red square is left of a blue circle.",
    "Two green triangles, one yellow circle!",
    "Is the blue square above the red triangle?",
]


@pytest.fixture(scope="module")
def words() -> TextTokenizer:
    return train_tokenizer(CORPUS, vocab_size=100, kind="wordlevel")


def test_wordlevel_specials_and_lowercase_punctuation(words: TextTokenizer) -> None:
    assert (words.pad_id, words.bos_id, words.eos_id, words.mask_id) == (0, 2, 3, 4)
    assert words.backend.token_to_id("[UNK]") == 1
    ids = words.encode("Red, SQUARE!", max_length=16)
    tokens = [words.backend.id_to_token(i) for i in ids]
    assert tokens == ["[BOS]", "red", ",", "square", "!", "[EOS]"]
    assert words.decode(ids) == "red , square !"
    # Words outside the corpus are [UNK], not an error.
    assert words.encode("purple", 8)[1] == words.backend.token_to_id("[UNK]")


def test_encode_batch_pads_and_masks(words: TextTokenizer) -> None:
    ids, mask = words.encode_batch(["a red circle", "two blue triangles left of a square"], max_length=6)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == (2, 6)
    # Short text: BOS a red circle EOS PAD; the pad position is masked out.
    assert ids[0].tolist()[0] == 2 and ids[0].tolist()[4] == 3 and ids[0, 5].item() == 0
    assert mask[0].tolist() == [True] * 5 + [False]
    # Truncation keeps EOS at the end: 4 words + 2 specials.
    assert ids[1, -1].item() == words.eos_id and mask[1].all()
    assert words.decode(ids[1]) == "two blue triangles left"
    # T is the batch's longest, not max_length.
    assert words.encode_batch(["a"], max_length=50)[0].shape == (1, 3)


def test_max_length_too_small(words: TextTokenizer) -> None:
    with pytest.raises(ValueError, match="max_length=2"):
        words.encode("red", max_length=2)


def test_pad_ids_reference() -> None:
    ids, mask = pad_ids([[5, 6, 7], [8], []], pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9], [9, 9, 9]]
    assert mask.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    with pytest.raises(ValueError, match="more than the pad length 2"):
        pad_ids([[1, 2, 3]], 0, length=2)


def test_bpe_round_trip_keeps_case_and_spaces() -> None:
    bpe = train_tokenizer(CORPUS * 3, vocab_size=300, kind="bpe")
    text = "A red circle, left of Two squares"
    ids = bpe.encode(text, max_length=64)
    assert ids[0] == bpe.bos_id and ids[-1] == bpe.eos_id
    assert bpe.decode(ids).strip() == text
    with pytest.raises(ValueError, match="allowed: wordlevel, bpe"):
        train_tokenizer(CORPUS, 50, kind="unigram")  # type: ignore[arg-type]


def test_save_load_round_trip(tmp_path, words: TextTokenizer) -> None:
    words.save(tmp_path / "tok")
    loaded = TextTokenizer.load(tmp_path / "tok")
    assert loaded.tokens == words.tokens and loaded.vocab_size == words.vocab_size
    a, am = words.encode_batch(CORPUS, 10)
    b, bm = loaded.encode_batch(CORPUS, 10)
    assert torch.equal(a, b) and torch.equal(am, bm)


def test_load_transformers_bert_wordpiece(tmp_path) -> None:
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "big"]
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    # transformers 5 takes the vocab path as ``vocab=`` (``vocab_file=`` is silently ignored).
    hf = BertTokenizerFast(vocab=str(vocab_file))
    hf.save_pretrained(tmp_path / "bert")

    tok = TextTokenizer.load(tmp_path / "bert")
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id) == (0, 2, 3, 4)
    assert tok.vocab_size == len(vocab)
    ids = tok.encode("Hello big worlds", max_length=16)
    assert ids == [2, 5, 8, 6, 7, 3]  # [CLS] hello big world ##s [SEP]
    assert ids == hf("Hello big worlds")["input_ids"]
    assert tok.decode(ids) == "hello big worlds"
    # Truncation keeps [SEP], like transformers' own truncation.
    assert tok.encode("Hello big worlds", 4) == hf("Hello big worlds", truncation=True, max_length=4)["input_ids"]


def test_load_missing_dir(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        TextTokenizer.load(tmp_path / "nope")


def test_a_tokenizer_json_with_its_own_padding_and_truncation_is_not_padded_twice(tmp_path) -> None:  # noqa: ANN001
    # sentence-transformers ships tokenizer.json files that pad every text to 128 and truncate.
    tok = train_tokenizer(CORPUS, vocab_size=100, kind="wordlevel")
    tok.save(tmp_path)
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    raw.enable_padding(pad_id=tok.pad_id, pad_token=tok.tokens["pad"], length=64)
    raw.enable_truncation(max_length=64)
    raw.save(str(tmp_path / "tokenizer.json"))
    again = TextTokenizer.load(tmp_path)
    assert again.encode("a red circle", 16) == tok.encode("a red circle", 16)
    assert tok.pad_id not in again.encode("a red circle", 16)


def test_a_text_processor_tokenizes_each_recent_text_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from polymodal.data import processors
    from polymodal.data.processors import TextProcessor

    tokenizer = train_tokenizer(["a red circle left of a blue square", "two objects on a textured background"], 64)
    processor = TextProcessor(tokenizer, max_length=8)
    encoded = []
    real = tokenizer.encode_many

    def counted(texts: list[str], max_length: int) -> list[list[int]]:
        encoded.extend(texts)
        return real(texts, max_length)

    monkeypatch.setattr(tokenizer, "encode_many", counted)
    texts = ["a red circle", "two objects", "a red circle", ""]
    first = processor.prepare_many(texts)
    assert first == real(texts, 8) and encoded == ["a red circle", "two objects", ""]  # a repeat once
    first[0].append(99)  # the caller's lists are its own
    assert processor.prepare_many(["two objects", "a red circle"]) == real(["two objects", "a red circle"], 8)
    assert len(encoded) == 3  # all known: nothing tokenized again
    assert processor.batch(["a blue square"])[0].tolist() == [real(["a blue square"], 8)[0]]
    monkeypatch.setattr(processors, "ENCODED_MEMO", 4)  # a full memo starts again
    assert processor.prepare_many(["x", "y", "z"]) == real(["x", "y", "z"], 8)
    assert processor.prepare_many(["a red circle", "x"]) == real(["a red circle", "x"], 8)
    assert encoded[-4:] == ["x", "y", "z", "a red circle"] and len(processor._encoded) <= 4
    assert processor.prepare_many(["x", "w"]) == real(["x", "w"], 8)  # full: a new memo, with this call's texts
    assert processor.prepare_many(["w", "x"]) == real(["w", "x"], 8) and encoded[-1] == "w"  # neither again
    big = [f"text {i}" for i in range(5)]  # one call larger than the memo: not kept
    assert processor.prepare_many(iter(big)) == real(big, 8) and not set(big) & set(processor._encoded)
    processor.max_length = 3  # another length: other ids, not the memo's
    assert processor.prepare_many(["a red circle"]) == real(["a red circle"], 3)
    import pickle

    monkeypatch.undo()  # the counting stand-in is a local function, which pickle cannot take
    assert processor._encoded and pickle.loads(pickle.dumps(processor))._encoded == {}  # a worker starts empty
