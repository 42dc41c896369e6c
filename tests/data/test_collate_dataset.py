"""collate (padding, presence masks, dropped items) and MultimodalDataset (bad files, seeds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from polymodal.data.collate import Batch, Collator, collate
from polymodal.data.dataset import (
    MultimodalDataset,
    label_from_vocab,
    qa_samples,
    statement_samples,
)
from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.schema import QA, Sample, Statement
from polymodal.data.text import train_tokenizer
from polymodal.data.transforms import Augment, ImagePipeline, ImagePreprocess

PRE = ImagePreprocess.preset("half", image_size=8)


def _png(path, colour=(255, 0, 0), size=(12, 10)) -> str:
    Image.new("RGB", size, colour).save(path)
    return str(path)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["a red square", "a blue circle left of a green triangle"], vocab_size=50)


# -- collate -----------------------------------------------------------------------------------


def test_collate_pads_text_and_masks_missing_modalities() -> None:
    img = torch.ones(3, 4, 4)
    items = [
        {"id": "a", "image": img, "text_ids": [2, 5, 3], "label": 1, "extra": {"text": "x"}},
        {"id": "b", "image": None, "text_ids": [2, 3], "label": None},
        None,  # a bad sample skipped by the dataset
        {"id": "c", "image": img * 2, "text_ids": None, "label": 0, "extra": {"text": "z"}},
    ]
    batch = collate(items, pad_id=9)
    assert batch.ids == ["a", "b", "c"] and len(batch) == 3 and batch.num_dropped == 1
    assert batch.images.shape == (3, 3, 4, 4)
    assert batch.image_present.tolist() == [True, False, True]
    assert torch.equal(batch.images[1], torch.zeros(3, 4, 4)) and torch.equal(batch.images[2], img * 2)
    assert batch.text_ids.tolist() == [[2, 5, 3], [2, 3, 9], [9, 9, 9]]
    assert batch.text_mask.tolist() == [[True] * 3, [True, True, False], [False] * 3]
    assert batch.text_present.tolist() == [True, True, False]
    assert batch.labels.dtype == torch.long and batch.labels.tolist() == [1, 0, 0]
    assert batch.label_present.tolist() == [True, False, True]
    assert batch.extra["text"] == ["x", None, "z"]  # row-aligned even where missing
    assert set(batch.present) == {"image", "text", "audio", "video"}
    assert not batch.present["audio"].any() and batch.audio is None


def test_collate_several_texts_per_sample_and_float_labels() -> None:
    items = [
        {"id": "a", "image": None, "text_ids": [[1, 2], [1, 2, 3]], "label": 0.5},
        {"id": "b", "image": None, "text_ids": [[4]], "label": 1},
    ]
    batch = Collator(pad_id=0)(items)
    assert batch.images is None and not batch.image_present.any()
    assert batch.text_ids.tolist() == [[1, 2, 0], [1, 2, 3], [4, 0, 0]]
    assert batch.text_owner.tolist() == [0, 0, 1]
    assert batch.labels.dtype == torch.float32 and batch.labels.tolist() == [0.5, 1.0]


def test_collate_all_dropped_and_shape_mismatch() -> None:
    empty = collate([None, None])
    assert len(empty) == 0 and empty.num_dropped == 2 and empty.images is None
    with pytest.raises(ValueError, match="differ in shape"):
        collate([{"id": "a", "image": torch.zeros(3, 4, 4)}, {"id": "b", "image": torch.zeros(3, 5, 5)}])


def test_batch_to_moves_every_tensor() -> None:
    batch = collate([{"id": "a", "image": torch.zeros(3, 2, 2), "text_ids": [1], "label": 1}])
    moved = batch.to("meta")
    assert moved.images.device.type == "meta" and moved.text_mask.device.type == "meta"
    assert moved.ids == ["a"] and batch.images.device.type == "cpu"


# -- dataset -----------------------------------------------------------------------------------


def test_item_matches_preprocess_and_tokenizer(tmp_path, tok) -> None:
    path = _png(tmp_path / "r.png")
    ds = MultimodalDataset([Sample("s0", image=path, text=["a red square"], label=1)], PRE, tok, text_mode="first")
    item = ds[0]
    assert torch.equal(item["image"], PRE.to_tensor(Image.open(path).convert("RGB")))
    assert item["text_ids"] == tok.encode("a red square", ds.max_length)
    assert item["label"] == 1 and item["extra"]["text"] == "a red square"


def test_lenient_skips_corrupt_image_and_logs_jsonl(tmp_path, tok) -> None:
    good = _png(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    samples = [
        Sample("ok", image=good, text=["a red square"], source="manifest.jsonl", row=1),
        Sample("broken", image=str(bad), text=["a blue circle"], source="manifest.jsonl", row=2),
    ]
    log = BadSampleLog(tmp_path / "bad_samples.jsonl")
    ds = MultimodalDataset(samples, PRE, tok, bad_log=log)
    items = [ds[0], ds[1]]
    assert items[1] is None
    batch = ds.collate_fn(items)
    assert batch.ids == ["ok"] and batch.num_dropped == 1
    assert log.total == 1 and log.counts["corrupt"] + log.counts["truncated"] == 1
    record = json.loads((tmp_path / "bad_samples.jsonl").read_text().splitlines()[0])
    assert record["source"] == "manifest.jsonl" and record["row"] == 2 and record["id"] == "broken"
    assert record["field"] == "image" and "bad.png" in record["reason"]


def test_strict_raises_naming_the_file(tmp_path) -> None:
    missing = str(tmp_path / "missing.png")
    ds = MultimodalDataset([Sample("m", image=missing)], PRE, strict=True)
    with pytest.raises(BadSampleError, match="missing.png") as err:
        ds[0]
    assert err.value.kind == "missing_file" and err.value.sample_id == "m"


def test_random_text_is_seeded_per_epoch_and_index(tmp_path, tok) -> None:
    captions = [f"caption {i}" for i in range(20)]
    ds = MultimodalDataset([Sample("t", text=captions)] * 4, PRE, tok, text_mode="random")
    epoch0 = [ds[i]["extra"]["text"] for i in range(4)]
    assert epoch0 == [ds[i]["extra"]["text"] for i in reversed(range(4))][::-1]  # order-free
    ds.set_epoch(1)
    epoch1 = [ds[i]["extra"]["text"] for i in range(4)]
    assert epoch0 != epoch1  # 20^4 combinations: equal only by a 1-in-160000 accident of a fixed seed
    ds.set_epoch(0)
    assert [ds[i]["extra"]["text"] for i in range(4)] == epoch0


def test_text_modes_all_and_no_image(tok) -> None:
    s = Sample("t", text=["a red square", "a blue circle"])
    ds = MultimodalDataset([s], PRE, tok, text_mode="all")
    item = ds[0]
    assert item["image"] is None and len(item["text_ids"]) == 2
    batch = ds.collate_fn([item])
    assert batch.text_owner.tolist() == [0, 0] and not batch.image_present.any()
    with pytest.raises(ValueError, match="allowed: random, first, all"):
        MultimodalDataset([s], PRE, text_mode="some")  # type: ignore[arg-type]


def test_augmented_pipeline_reproducible_per_epoch(tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    pipe = ImagePipeline.for_training(PRE, Augment(random_resized_crop=True, scale=(0.1, 0.3)))
    ds = MultimodalDataset([Sample("n", image=str(path))], pipe)
    first = ds[0]["image"]
    assert torch.equal(first, ds[0]["image"])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[0]["image"])


def test_image_memo_decodes_each_image_once(tmp_path, monkeypatch) -> None:
    import polymodal.data.dataset as dataset_module

    red, blue = _png(tmp_path / "r.png"), _png(tmp_path / "b.png", colour=(0, 0, 255))
    blue_bytes = (tmp_path / "b.png").read_bytes()
    # Three samples on the red file (a statement view), one on blue's bytes.
    samples = [Sample(f"r{i}", image=red) for i in range(3)] + [Sample("b", image=blue_bytes)]
    decoded = []
    real = dataset_module.decode_image
    monkeypatch.setattr(dataset_module, "decode_image", lambda ref, **kw: decoded.append(ref) or real(ref, **kw))
    ds = MultimodalDataset(samples, PRE)
    items = [ds[i]["image"] for i in (0, 1, 2, 3, 3, 0)]
    assert decoded == [red, blue_bytes]  # once per distinct image, bytes included
    assert torch.equal(items[0], PRE.to_tensor(Image.open(red).convert("RGB")))
    assert torch.equal(items[3], PRE.to_tensor(Image.open(blue).convert("RGB")))
    assert (ds.image_memo.hits, ds.image_memo.misses) == (4, 2)

    decoded.clear()
    off = MultimodalDataset(samples, PRE, image_memo_mb=0)
    [off[i] for i in (0, 1, 0)]
    assert decoded == [red, red, red]

    # Augmented pipelines draw a new image every epoch: never memoised.
    decoded.clear()
    augmented = MultimodalDataset(samples, ImagePipeline.for_training(PRE, Augment(hflip=True)))
    [augmented[i] for i in (0, 0)]
    assert decoded == [red, red] and len(augmented.image_memo.entries) == 0


def test_image_memo_is_bounded_by_bytes() -> None:
    from polymodal.data.dataset import ImageMemo

    one = torch.zeros(3, 8, 8)  # 768 bytes
    memo = ImageMemo(2 * 768)
    for key in "abc":
        memo.put(key, one.clone())
    assert list(memo.entries) == ["b", "c"] and memo.bytes == 2 * 768  # the oldest went
    assert memo.get("b") is not None
    memo.put("d", one.clone())
    assert list(memo.entries) == ["b", "d"]  # "c" was least recently used
    memo.put("huge", torch.zeros(3, 16, 16))  # larger than the whole memo: not stored, nothing evicted
    assert list(memo.entries) == ["b", "d"]
    with pytest.raises(ValueError, match="image_memo_mb"):
        MultimodalDataset([], PRE, image_memo_mb=-1)
    import pickle

    copy = pickle.loads(pickle.dumps(memo))  # what a spawned DataLoader worker gets: the bound, no images
    assert copy.max_bytes == memo.max_bytes and not copy.entries and copy.bytes == 0


def test_image_memo_hands_out_copies_and_datasets_pickle(tmp_path, tok) -> None:
    import pickle

    path = _png(tmp_path / "r.png")
    ds = MultimodalDataset([Sample("a", image=path), Sample("b", image=path)], PRE, tok)
    first = ds[0]["image"]
    expected = first.clone()
    first.mul_(0)  # a caller modifying its item in place must not change what the next sample gets
    assert torch.equal(ds[1]["image"], expected) and ds.image_memo.hits == 1
    # Spawned DataLoader workers receive a pickled dataset: it pickles, with an empty memo and a working log.
    copy = pickle.loads(pickle.dumps(ds))
    assert not copy.image_memo.entries and torch.equal(copy[0]["image"], expected)
    copy.bad_log.record(BadSampleError("broken", source="x", kind="decode"))
    assert copy.bad_log.total == 1


def test_a_reference_that_is_no_image_is_a_bad_sample_with_the_memo_on(tok) -> None:
    log = BadSampleLog()
    ds = MultimodalDataset([Sample("n", image=12)], PRE, tok, bad_log=log)  # type: ignore[arg-type]
    assert ds[0] is None and log.total == 1


def test_expand_statements_and_questions() -> None:
    s = Sample(
        "img1",
        image="/x.png",
        statements=[Statement("a red square", True), Statement("two circles", False)],
        qa=[QA("what colour?", ["red", "red", "blue"], type="color")],
        source="m.jsonl",
        row=3,
    )
    st = statement_samples([s])
    assert [(x.id, x.text, x.label) for x in st] == [
        ("img1#s0", ["a red square"], 1),
        ("img1#s1", ["two circles"], 0),
    ]
    assert all(x.image == "/x.png" and x.where() == "m.jsonl:3" for x in st)
    (q,) = qa_samples([s])
    assert (q.id, q.text, q.label, q.metadata["question_type"]) == ("img1#q0", ["what colour?"], "red", "color")
    assert label_from_vocab({"red": 4})(q) == 4 and label_from_vocab({"blue": 0})(q) is None
    text_only = qa_samples([Sample("t", qa=s.qa)])
    with pytest.raises(TypeError, match="label_fn"):
        MultimodalDataset(text_only, PRE)[0]
    assert MultimodalDataset(text_only, PRE, label_fn=label_from_vocab({"red": 4}))[0]["label"] == 4


def test_dataloader_two_workers(tmp_path, tok) -> None:
    samples = []
    for i in range(6):
        path = _png(tmp_path / f"{i}.png", colour=(i * 40, 0, 0))
        captions = [f"caption {i}-{j}" for j in range(10)]
        samples.append(Sample(f"s{i}", image=path, text=captions, label=i % 2))
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    samples.append(Sample("empty", image=str(bad), text=["x"]))
    log_path = tmp_path / "bad.jsonl"
    ds = MultimodalDataset(samples, PRE, tok, bad_log=BadSampleLog(log_path))
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=ds.collate_fn)
    batches: list[Batch] = list(loader)
    assert [i for b in batches for i in b.ids] == [f"s{i}" for i in range(6)]
    assert sum(b.num_dropped for b in batches) == 1
    # The count came back through the batch and the file, not the (copied) log object.
    assert ds.bad_log.total == 0
    assert json.loads(log_path.read_text())["id"] == "empty"
    assert batches[0].images[1, 0, 0, 0].item() == pytest.approx(40 / 255 * 2 - 1, abs=1e-6)
    # Random captions are drawn per (epoch, index): the same in the main process as in workers.
    in_workers = [t for b in batches for t in b.extra["text"]]
    in_main = [t for b in DataLoader(ds, batch_size=4, collate_fn=ds.collate_fn) for t in b.extra["text"]]
    assert in_workers == in_main and len(set(in_workers)) == 6


def test_set_epoch_reaches_persistent_workers(tok) -> None:
    samples = [Sample(f"s{i}", text=[f"caption {i}-{j}" for j in range(50)]) for i in range(4)]
    ds = MultimodalDataset(samples, PRE, tok)
    loader = DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True, collate_fn=ds.collate_fn)

    def expected() -> list[str]:
        return [ds[i]["extra"]["text"] for i in range(len(ds))]

    seen = {}
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen[epoch] = [t for b in loader for t in b.extra["text"]]
        assert seen[epoch] == expected()
    assert seen[0] != seen[1]
