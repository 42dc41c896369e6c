"""collate (padding, presence masks, dropped items) and MultimodalDataset (processors, bad files, seeds, memo)."""

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
from polymodal.data.processors import ImageProcessor, ModalityBatch, Processor, TextProcessor, stack_present
from polymodal.data.schema import QA, Sample, Statement
from polymodal.data.text import TextTokenizer, train_tokenizer
from polymodal.data.transforms import Augment, ImagePreprocess

PRE = ImagePreprocess.preset("half", image_size=8)


def procs(
    tok: TextTokenizer | None = None, augment: Augment | None = None, max_length: int = 64
) -> dict[str, Processor]:
    """An image processor over PRE, plus a text processor when given a tokenizer."""
    out: dict[str, Processor] = {"image": ImageProcessor(PRE, augment)}
    if tok is not None:
        out["text"] = TextProcessor(tok, max_length)
    return out


class PadNine:
    """Just enough tokenizer for collate, which only pads: pad id 9, so padding is never mistaken for zeros."""

    pad_id = 9


class SensorProcessor(Processor):
    """A modality beyond the built-in ones: an inline list of floats per sample (no files)."""

    modality = "sensor"
    reads_files = False

    def prepare(self, ref, generator=None, *, source=None, row=None) -> torch.Tensor:  # noqa: ANN001
        return torch.tensor(ref, dtype=torch.float32)

    def collate(self, values) -> ModalityBatch:  # noqa: ANN001
        return stack_present(values, self.modality)


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
        {"id": "a", "inputs": {"image": img, "text": [2, 5, 3]}, "label": 1, "extra": {"text": "x"}},
        {"id": "b", "inputs": {"image": None, "text": [2, 3]}, "label": None},
        None,  # a bad sample skipped by the dataset
        {"id": "c", "inputs": {"image": img * 2, "text": None}, "label": 0, "extra": {"text": "z"}},
    ]
    processors = {"image": ImageProcessor(PRE), "text": TextProcessor(PadNine()), "sensor": SensorProcessor()}  # type: ignore[arg-type]
    batch = collate(items, processors)
    assert batch.ids == ["a", "b", "c"] and len(batch) == 3 and batch.num_dropped == 1
    images, image_mask = batch.input("image")
    assert images.shape == (3, 3, 4, 4) and image_mask is None
    assert batch.present["image"].tolist() == [True, False, True]
    assert torch.equal(images[1], torch.zeros(3, 4, 4)) and torch.equal(images[2], img * 2)
    text_ids, text_mask = batch.input("text")
    assert text_ids.tolist() == [[2, 5, 3], [2, 3, 9], [9, 9, 9]]
    assert text_mask.tolist() == [[True] * 3, [True, True, False], [False] * 3]
    assert batch.present["text"].tolist() == [True, True, False]
    assert batch.text_owner is None
    assert batch.labels.dtype == torch.long and batch.labels.tolist() == [1, 0, 0]
    assert batch.label_present.tolist() == [True, False, True]
    assert batch.extra["text"] == ["x", None, "z"]  # row-aligned even where missing
    # Every prepared modality has a presence mask; one no sample has is all False and has no input.
    assert set(batch.present) == {"image", "text", "sensor"} and set(batch.inputs) == {"image", "text"}
    assert batch.present["sensor"].tolist() == [False] * 3
    with pytest.raises(KeyError, match=r"has no 'sensor' input; it has \['image', 'text'\]"):
        batch.input("sensor")
    assert batch.negative_text_ids is None  # no item carries negatives: none in the batch


def test_collate_several_texts_per_sample_and_float_labels(tok) -> None:
    items = [
        {"id": "a", "inputs": {"image": None, "text": [[1, 2], [1, 2, 3]]}, "label": 0.5},
        {"id": "b", "inputs": {"image": None, "text": [[4]]}, "label": 1},
    ]
    batch = Collator(procs(tok))(items)
    assert tok.pad_id == 0
    assert "image" not in batch.inputs and not batch.present["image"].any()
    text_ids, text_mask = batch.input("text")
    assert text_ids.tolist() == [[1, 2, 0], [1, 2, 3], [4, 0, 0]]
    assert text_mask.tolist() == [[True, True, False], [True] * 3, [True, False, False]]
    assert batch.text_owner.tolist() == [0, 0, 1] and batch.present["text"].tolist() == [True, True]
    assert batch.labels.dtype == torch.float32 and batch.labels.tolist() == [0.5, 1.0]


def test_collate_all_dropped_and_shape_mismatch() -> None:
    empty = collate([None, None], procs())
    assert len(empty) == 0 and empty.num_dropped == 2 and empty.inputs == {}
    with pytest.raises(ValueError, match="differ in shape"):
        collate(
            [
                {"id": "a", "inputs": {"image": torch.zeros(3, 4, 4)}},
                {"id": "b", "inputs": {"image": torch.zeros(3, 5, 5)}},
            ],
            procs(),
        )


def test_batch_to_moves_every_tensor(tok) -> None:
    batch = collate([{"id": "a", "inputs": {"image": torch.zeros(3, 2, 2), "text": [1]}, "label": 1}], procs(tok))
    moved = batch.to("meta")
    assert moved.input("image")[0].device.type == "meta" and moved.input("image")[1] is None
    assert moved.input("text")[0].device.type == "meta" and moved.input("text")[1].device.type == "meta"
    assert all(p.device.type == "meta" for p in moved.present.values())
    assert moved.labels.device.type == "meta" and moved.label_present.device.type == "meta"
    assert moved.ids == ["a"] and batch.input("image")[0].device.type == "cpu"
    assert batch.present["text"].device.type == "cpu"  # a copy: the original stays


# -- dataset -----------------------------------------------------------------------------------


def test_item_matches_preprocess_and_tokenizer(tmp_path, tok) -> None:
    path = _png(tmp_path / "r.png")
    ds = MultimodalDataset([Sample("s0", image=path, text=["a red square"], label=1)], procs(tok), text_mode="first")
    item = ds[0]
    assert set(item["inputs"]) == {"image", "text"}
    assert torch.equal(item["inputs"]["image"], PRE.to_tensor(Image.open(path).convert("RGB")))
    assert ds.text.max_length == 64
    assert item["inputs"]["text"] == tok.encode("a red square", ds.text.max_length)
    assert item["label"] == 1 and item["extra"]["text"] == "a red square"


def test_a_modality_beyond_the_built_in_ones_comes_from_sample_media(tok) -> None:
    samples = [
        Sample("a", text=["a red square"], media={"sensor": [1.0, 2.0]}),
        Sample("b", text=["a blue circle"]),
    ]
    assert samples[0].modalities() == {"text", "sensor"} and samples[1].modalities() == {"text"}
    assert samples[0].reference("sensor") == [1.0, 2.0] and samples[1].reference("sensor") is None
    assert samples[0].reference("text") == ["a red square"] and samples[0].reference("image") is None
    ds = MultimodalDataset(samples, {"sensor": SensorProcessor(), "text": TextProcessor(tok)}, text_mode="first")
    items = [ds[0], ds[1]]
    assert torch.equal(items[0]["inputs"]["sensor"], torch.tensor([1.0, 2.0])) and items[1]["inputs"]["sensor"] is None
    batch = ds.collate_fn(items)
    x, mask = batch.input("sensor")
    assert x.tolist() == [[1.0, 2.0], [0.0, 0.0]] and mask is None
    assert batch.present["sensor"].tolist() == [True, False] and batch.present["text"].tolist() == [True, True]
    with pytest.raises(TypeError, match="must be a TextProcessor"):
        MultimodalDataset(samples, {"text": SensorProcessor()})


def test_lenient_skips_corrupt_image_and_logs_jsonl(tmp_path, tok) -> None:
    good = _png(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    samples = [
        Sample("ok", image=good, text=["a red square"], source="manifest.jsonl", row=1),
        Sample("broken", image=str(bad), text=["a blue circle"], source="manifest.jsonl", row=2),
    ]
    log = BadSampleLog(tmp_path / "bad_samples.jsonl")
    ds = MultimodalDataset(samples, procs(tok), bad_log=log)
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
    ds = MultimodalDataset([Sample("m", image=missing)], procs(), strict=True)
    with pytest.raises(BadSampleError, match="missing.png") as err:
        ds[0]
    assert err.value.kind == "missing_file" and err.value.sample_id == "m"


def test_random_text_is_seeded_per_epoch_and_index(tmp_path, tok) -> None:
    captions = [f"caption {i}" for i in range(20)]
    ds = MultimodalDataset([Sample("t", text=captions)] * 4, procs(tok), text_mode="random")
    epoch0 = [ds[i]["extra"]["text"] for i in range(4)]
    assert epoch0 == [ds[i]["extra"]["text"] for i in reversed(range(4))][::-1]  # order-free
    ds.set_epoch(1)
    epoch1 = [ds[i]["extra"]["text"] for i in range(4)]
    assert epoch0 != epoch1  # 20^4 combinations: equal only by a 1-in-160000 accident of a fixed seed
    ds.set_epoch(0)
    assert [ds[i]["extra"]["text"] for i in range(4)] == epoch0


def test_text_modes_all_and_no_image(tok) -> None:
    s = Sample("t", text=["a red square", "a blue circle"])
    ds = MultimodalDataset([s], procs(tok), text_mode="all")
    item = ds[0]
    assert item["inputs"]["image"] is None and len(item["inputs"]["text"]) == 2
    batch = ds.collate_fn([item])
    assert batch.text_owner.tolist() == [0, 0] and not batch.present["image"].any() and "image" not in batch.inputs
    with pytest.raises(ValueError, match="allowed: random, first, all"):
        MultimodalDataset([s], procs(), text_mode="some")  # type: ignore[arg-type]


def test_augmented_pipeline_reproducible_per_epoch(tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    processor = ImageProcessor(PRE, Augment(random_resized_crop=True, scale=(0.1, 0.3)))
    assert processor.pipeline.ops and not processor.deterministic
    assert ImageProcessor(PRE).deterministic and not ImageProcessor(PRE).pipeline.ops
    ds = MultimodalDataset([Sample("n", image=str(path))], {"image": processor})
    first = ds[0]["inputs"]["image"]
    assert torch.equal(first, ds[0]["inputs"]["image"])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[0]["inputs"]["image"])


def test_image_memo_decodes_each_image_once(tmp_path, monkeypatch) -> None:
    import polymodal.data.processors as processors_module

    red, blue = _png(tmp_path / "r.png"), _png(tmp_path / "b.png", colour=(0, 0, 255))
    blue_bytes = (tmp_path / "b.png").read_bytes()
    # Three samples on the red file (a statement view), one on blue's bytes.
    samples = [Sample(f"r{i}", image=red) for i in range(3)] + [Sample("b", image=blue_bytes)]
    decoded = []
    real = processors_module.decode_image
    monkeypatch.setattr(processors_module, "decode_image", lambda ref, **kw: decoded.append(ref) or real(ref, **kw))
    ds = MultimodalDataset(samples, procs())
    items = [ds[i]["inputs"]["image"] for i in (0, 1, 2, 3, 3, 0)]
    assert decoded == [red, blue_bytes]  # once per distinct image, bytes included
    assert torch.equal(items[0], PRE.to_tensor(Image.open(red).convert("RGB")))
    assert torch.equal(items[3], PRE.to_tensor(Image.open(blue).convert("RGB")))
    assert (ds.memo.hits, ds.memo.misses) == (4, 2)

    decoded.clear()
    off = MultimodalDataset(samples, procs(), memo_mb=0)
    [off[i] for i in (0, 1, 0)]
    assert decoded == [red, red, red]

    # Augmented pipelines draw a new image every epoch: never memoised.
    decoded.clear()
    augmented = MultimodalDataset(samples, procs(augment=Augment(hflip=True)))
    [augmented[i] for i in (0, 0)]
    assert decoded == [red, red] and len(augmented.memo.entries) == 0


def test_media_memo_is_bounded_by_bytes_and_keyed_by_modality() -> None:
    from polymodal.data.dataset import MediaMemo

    one = torch.zeros(3, 8, 8)  # 768 bytes
    memo = MediaMemo(2 * 768)
    for key in "abc":
        memo.put(key, one.clone())
    assert list(memo.entries) == ["b", "c"] and memo.bytes == 2 * 768  # the oldest went
    assert memo.get("b") is not None
    memo.put("d", one.clone())
    assert list(memo.entries) == ["b", "d"]  # "c" was least recently used
    memo.put("huge", torch.zeros(3, 16, 16))  # larger than the whole memo: not stored, nothing evicted
    assert list(memo.entries) == ["b", "d"]
    # One file read as two modalities is two entries; bytes are keyed by their digest.
    assert memo.key("image", "/x.png") != memo.key("depth", "/x.png")
    assert memo.key("image", b"abc") == memo.key("image", bytearray(b"abc")) != memo.key("image", b"abd")
    assert memo.key("image", 12) is None and MediaMemo(0).key("image", "/x.png") is None  # inline, or memo off
    with pytest.raises(ValueError, match="memo_mb"):
        MultimodalDataset([], procs(), memo_mb=-1)
    import pickle

    copy = pickle.loads(pickle.dumps(memo))  # what a spawned DataLoader worker gets: the bound, no images
    assert copy.max_bytes == memo.max_bytes and not copy.entries and copy.bytes == 0


def test_image_memo_hands_out_copies_and_datasets_pickle(tmp_path, tok) -> None:
    import pickle

    path = _png(tmp_path / "r.png")
    ds = MultimodalDataset([Sample("a", image=path), Sample("b", image=path)], procs(tok))
    first = ds[0]["inputs"]["image"]
    expected = first.clone()
    first.mul_(0)  # a caller modifying its item in place must not change what the next sample gets
    assert torch.equal(ds[1]["inputs"]["image"], expected) and ds.memo.hits == 1
    # Spawned DataLoader workers receive a pickled dataset: it pickles, with an empty memo and a working log.
    copy = pickle.loads(pickle.dumps(ds))
    assert not copy.memo.entries and torch.equal(copy[0]["inputs"]["image"], expected)
    copy.bad_log.record(BadSampleError("broken", source="x", kind="decode"))
    assert copy.bad_log.total == 1


def test_a_reference_that_is_no_image_is_a_bad_sample_with_the_memo_on(tok) -> None:
    log = BadSampleLog()
    ds = MultimodalDataset([Sample("n", image=12)], procs(tok), bad_log=log)  # type: ignore[arg-type]
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
        MultimodalDataset(text_only, procs())[0]
    assert MultimodalDataset(text_only, procs(), label_fn=label_from_vocab({"red": 4}))[0]["label"] == 4


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
    ds = MultimodalDataset(samples, procs(tok), bad_log=BadSampleLog(log_path))
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=ds.collate_fn)
    batches: list[Batch] = list(loader)
    assert [i for b in batches for i in b.ids] == [f"s{i}" for i in range(6)]
    assert sum(b.num_dropped for b in batches) == 1
    # The count came back through the batch and the file, not the (copied) log object.
    assert ds.bad_log.total == 0
    assert json.loads(log_path.read_text())["id"] == "empty"
    assert batches[0].input("image")[0][1, 0, 0, 0].item() == pytest.approx(40 / 255 * 2 - 1, abs=1e-6)
    # Random captions are drawn per (epoch, index): the same in the main process as in workers.
    in_workers = [t for b in batches for t in b.extra["text"]]
    in_main = [t for b in DataLoader(ds, batch_size=4, collate_fn=ds.collate_fn) for t in b.extra["text"]]
    assert in_workers == in_main and len(set(in_workers)) == 6


def test_set_epoch_reaches_persistent_workers(tok) -> None:
    samples = [Sample(f"s{i}", text=[f"caption {i}-{j}" for j in range(50)]) for i in range(4)]
    ds = MultimodalDataset(samples, procs(tok))
    loader = DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True, collate_fn=ds.collate_fn)

    def expected() -> list[str]:
        return [ds[i]["extra"]["text"] for i in range(len(ds))]

    seen = {}
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen[epoch] = [t for b in loader for t in b.extra["text"]]
        assert seen[epoch] == expected()
    assert seen[0] != seen[1]


def test_a_column_read_before_its_processor_was_registered_is_named_not_dropped() -> None:
    """A reader routes only the columns whose processors it knows; a plugin imported after the manifest was read
    leaves its column in metadata, where no sample would ever have the modality: the dataset says so."""
    samples = [Sample(id=str(i), metadata={"vector": [1.0, 2.0]}, source="data.jsonl", row=i + 1) for i in range(3)]
    with pytest.raises(ValueError, match=r"data.jsonl:1: column 'vector' was read as metadata.*POLYMODAL_PLUGINS"):
        MultimodalDataset(samples, {"vector": ImageProcessor(ImagePreprocess(image_size=8))})
    # A modality some sample has, or one no sample mentions at all, is no mistake.
    MultimodalDataset([Sample(id="a", text=["x"])], {"vector": ImageProcessor(ImagePreprocess(image_size=8))})
