"""A torch Dataset over :class:`~polymodal.data.schema.Sample` lists.

``__getitem__`` prepares each modality the dataset has a processor for (decoding, augmenting,
tokenizing a picked text), computes the label, and returns an item dict for
:func:`~polymodal.data.collate.collate`.

Bad samples: in lenient mode (``strict=False``, the default) a :class:`BadSampleError` is
handed to the :class:`BadSampleLog` and the item is ``None``; collate drops it and counts it in
``Batch.num_dropped``, so one broken file never ends a long run. ``strict=True`` raises the
error, which names the file, row and field.

DataLoader workers: each worker process gets a *copy* of the dataset and of its BadSampleLog,
so the log's in-memory counts in the main process stay at zero for samples decoded in
workers. Two things do come back: ``Batch.num_dropped`` (sum it in the training loop) and the
log's JSONL file, which every copy appends to one line per record. Give the log a path when
``num_workers > 0``.

Reproducibility: randomness (which caption with ``text_mode="random"``, augmentation) comes
from a generator seeded from ``(seed, epoch, index)``, so it is the same whatever the number
of workers or the order of loading. Call :meth:`MultimodalDataset.set_epoch` before each
epoch (before ``iter(loader)``). The epoch lives in a shared-memory tensor, so it reaches
``persistent_workers=True`` workers too, which keep their copy of the dataset between epochs.

Prepared media (images ...) are memoised when nothing about them is random (no augmentation): several samples
often share one image (a statement or question view has about 11 per image) and every epoch revisits it,
while decoding, resizing and normalising it is most of a step's data time. The memo is an LRU bounded
by ``memo_mb`` (0 turns it off), one per dataset copy: each DataLoader worker fills its own. A path is read
once per run: a file changed on disk during a run is not seen again while it stays in the memo.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from polymodal.data.collate import Collator, Item
from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.processors import Processor, TextProcessor
from polymodal.data.schema import Label, MediaRef, Sample, ShardMember

TextMode = Literal["random", "first", "all"]
LabelFn = Callable[[Sample], "int | float | list[float] | torch.Tensor | None"]


def default_label(sample: Sample) -> int | float | list[Label] | None:
    """The sample's own numeric label; strings need a ``label_fn`` that maps them to ids."""
    label = sample.label
    if label is None or isinstance(label, (int, float)):
        return int(label) if isinstance(label, bool) else label
    if isinstance(label, list) and all(isinstance(x, (int, float)) for x in label):
        return label
    raise TypeError(
        f"{sample.where()}: label {label!r} is not numeric; pass label_fn "
        f"(e.g. label_from_vocab(answer_vocab)) to map it to a class id"
    )


def label_from_vocab(vocab: dict[str, int]) -> LabelFn:
    """``label_fn`` mapping a string label through ``vocab``; unknown labels are absent (None)."""

    def label_fn(sample: Sample) -> int | None:
        return None if sample.label is None else vocab.get(str(sample.label))

    return label_fn


def _check_columns_routed(samples: Sequence[Sample], processors: Mapping[str, Processor], look: int = 1000) -> None:
    """A processor's modality that the first samples hold only as a metadata column was read before its processor
    was registered (a reader routes columns to the processors it knows): without this, no sample would have it."""
    first = [samples[i] for i in range(min(look, len(samples)))]
    for modality in processors:
        if modality == "text" or any(s.reference(modality) is not None for s in first):
            continue
        sample = next((s for s in first if modality in s.metadata), None)
        if sample is not None:
            raise ValueError(
                f"{sample.where()}: column {modality!r} was read as metadata, not as a {modality!r} input: the data "
                f"was read before the {modality!r} processor was registered; import the module that registers it "
                "(CLI: POLYMODAL_PLUGINS) before reading the data"
            )


class MultimodalDataset(Dataset):
    """Samples -> item dicts of tensors (see :mod:`polymodal.data.collate`)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        processors: Mapping[str, Processor],
        *,
        text_mode: TextMode = "random",
        label_fn: LabelFn | None = None,
        bad_log: BadSampleLog | None = None,
        strict: bool = False,
        seed: int = 0,
        negative_text: Callable[[str, torch.Generator | None], str | None] | None = None,
        memo_mb: float = 1024,
    ) -> None:
        """``processors``: modality -> its :class:`~polymodal.data.processors.Processor`; the modalities prepared.
        ``negative_text``: makes a hard negative caption from the sample's caption (e.g.
        :class:`~polymodal.data.hard_negatives.WordSwapNegatives`); items then carry
        ``negative_text_ids`` (None when it returns None). One caption per item only.
        ``memo_mb``: bound of the prepared-media memo (module docstring); 0 turns it off."""
        if memo_mb < 0:
            raise ValueError(f"memo_mb must be >= 0, got {memo_mb}")
        if text_mode not in ("random", "first", "all"):
            raise ValueError(f"text_mode {text_mode!r}; allowed: random, first, all")
        if negative_text is not None and text_mode == "all":
            raise ValueError("negative_text needs one caption per item (text_mode 'random' or 'first')")
        text = processors.get("text")
        if text is not None and not isinstance(text, TextProcessor):
            raise TypeError(f"the 'text' processor must be a TextProcessor, got {type(text).__name__}")
        if negative_text is not None and text is None:
            raise ValueError("negative_text needs a 'text' processor to tokenize the negatives")
        _check_columns_routed(samples, processors)
        self.samples = samples
        self.processors = dict(processors)
        self.text: TextProcessor | None = text
        self.text_mode = text_mode
        self.label_fn = label_fn or default_label
        self.strict = strict
        self.bad_log = bad_log if bad_log is not None else BadSampleLog(strict=strict)
        self.seed = seed
        self.negative_text = negative_text
        # Shared memory: DataLoader workers (forked or spawned, persistent or not) read the
        # same storage, so set_epoch in the main process reaches them.
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()
        self.memo = MediaMemo(int(memo_mb * 2**20))
        self._random_media = any(not p.deterministic for m, p in self.processors.items() if m != "text")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Change the per-sample random draws (captions, augmentation) for a new epoch."""
        self._epoch.fill_(epoch)

    @property
    def collate_fn(self) -> Collator:
        """The collate function for a DataLoader over this dataset."""
        return Collator(self.processors)

    def generator(self, index: int, epoch: int | None = None) -> torch.Generator:
        """Generator seeded from (seed, epoch, index): independent of worker count and order."""
        epoch = self.epoch if epoch is None else epoch
        state = np.random.SeedSequence([self.seed, epoch, index]).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def _texts(self, sample: Sample, generator: torch.Generator | None) -> list[str]:
        if not sample.text:
            return []
        if self.text_mode == "all":
            return list(sample.text)
        if self.text_mode == "first" or len(sample.text) == 1:
            return [sample.text[0]]
        pick = int(torch.randint(len(sample.text), (), generator=generator))
        return [sample.text[pick]]

    # Samplers may pass (epoch, index) pairs (see polymodal.train.sampler.StepBatchSampler).
    epoch_aware = True

    def __getitem__(self, index: int | tuple[int, int]) -> Item | None:
        epoch = None
        if isinstance(index, tuple):
            epoch, index = index
        sample = self.samples[index]
        # Seeding costs ~15 us (a tenth of decoding a 64px PNG): only seed when something is random.
        random_text = self.text_mode == "random" and len(sample.text) > 1
        random_any = random_text or self._random_media or self.negative_text is not None
        generator = self.generator(index, epoch) if random_any else None
        inputs: dict[str, Any] = {}
        for modality, processor in self.processors.items():
            if modality == "text":
                continue
            ref = sample.reference(modality)
            inputs[modality] = None if ref is None else self._prepare(sample, modality, processor, ref, generator)
            if ref is not None and inputs[modality] is None:
                return None  # a bad sample, logged
        texts = self._texts(sample, generator)
        if self.text is not None:
            encoded = self.text.prepare_many(texts) if texts else None
            inputs["text"] = encoded if encoded is None or self.text_mode == "all" else encoded[0]
        extra: dict[str, Any] = {"text": texts if self.text_mode == "all" else (texts[0] if texts else None)}
        try:
            label = self.label_fn(sample)
        except BadSampleError as e:
            return self._bad(sample, e)
        item = {"id": sample.id, "inputs": inputs, "label": label, "extra": extra}
        if self.negative_text is not None:
            negative = self.negative_text(texts[0], generator) if texts else None
            item["negative_text_ids"] = None if negative is None else self.text.prepare(negative)  # type: ignore[union-attr]
        return item

    def _prepare(
        self, sample: Sample, modality: str, processor: Processor, ref: Any, generator: torch.Generator | None
    ) -> Any:
        """The processor's value for ``ref`` (from the memo when deterministic), or None for a bad sample."""
        memo_key = self.memo.key(modality, ref) if processor.deterministic else None
        value = self.memo.get(memo_key)
        if value is not None:
            return value
        try:
            value = processor.prepare(ref, generator, source=sample.source, row=sample.row)
        except BadSampleError as e:
            return self._bad(sample, e)
        self.memo.put(memo_key, value)
        return value

    def _bad(self, sample: Sample, error: BadSampleError) -> None:
        """Raise in strict mode; else log the bad sample (it is skipped: the item is None)."""
        if error.sample_id is None:
            error.sample_id = sample.id
        if self.strict:
            raise error
        self.bad_log.record(error)  # raises if the log itself is strict


class MediaMemo:
    """An LRU of prepared media tensors bounded by their total bytes (``max_bytes`` 0: off).

    Keys are (modality, reference) pairs (a path, a shard member's place, or a digest of encoded bytes), not the
    processor: a memo belongs to one dataset and its processors. It stores and hands out copies.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: OrderedDict[Any, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0
        self._lock = threading.Lock()  # a dataset may be indexed from several threads

    def __getstate__(self) -> dict[str, int]:
        # A dataset is pickled into each spawned DataLoader worker: send the bound, not the images.
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(state["max_bytes"])  # type: ignore[misc]

    def key(self, modality: str, ref: MediaRef) -> Any:
        """A memo key for a media reference: the path itself, a shard member's place, or a digest of in-memory
        bytes."""
        if not self.max_bytes:
            return None
        if isinstance(ref, (str, os.PathLike)):
            return modality, os.fspath(ref)
        if isinstance(ref, (bytes, bytearray, memoryview)):
            return modality, hashlib.sha256(ref).digest()
        if isinstance(ref, ShardMember):
            return modality, ref.shard, ref.offset
        return None  # an inline value (or a bad reference, which preparing reports): not memoised

    def get(self, key: Any) -> torch.Tensor | None:
        """A copy of the stored value (callers may modify what they get), or None."""
        if key is None:
            return None
        with self._lock:
            image = self.entries.get(key)
            if image is None:
                self.misses += 1
                return None
            self.entries.move_to_end(key)
            self.hits += 1
        return image.clone()  # ~10 us for a 128 px image, against ~0.5 ms to decode and resize it

    def put(self, key: Any, image: torch.Tensor) -> None:
        if key is None or not isinstance(image, torch.Tensor):
            return
        size = image.numel() * image.element_size()
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self.entries:
                return
            self.entries[key] = image.clone()  # the caller keeps (and may modify) its own tensor
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, old = self.entries.popitem(last=False)
                self.bytes -= old.numel() * old.element_size()


def _expand(
    samples: Iterable[Sample], items: Callable[[Sample], Sequence[Any]], make: Callable[[Sample, int, Any], Sample]
) -> list[Sample]:
    """One sample per item of each sample (its statements, its questions ...), built by ``make``."""
    return [make(s, j, item) for s in samples for j, item in enumerate(items(s))]


def statement_samples(samples: Iterable[Sample]) -> list[Sample]:
    """One sample per (image, statement): text = [statement], label = 1 if true else 0."""
    return _expand(
        samples,
        lambda s: s.statements,
        lambda s, j, st: replace(
            s,
            id=f"{s.id}#s{j}",
            text=[st.text],
            label=int(st.label),
            qa=[],
            statements=[st],
            metadata={**s.metadata, "parent_id": s.id},
        ),
    )


def qa_samples(samples: Iterable[Sample]) -> list[Sample]:
    """One sample per (image, question): text = [question], label = the majority answer (a
    string: map it with ``label_from_vocab``), ``qa`` = [that QA] for answer-set metrics."""
    return _expand(
        samples,
        lambda s: s.qa,
        lambda s, j, qa: replace(
            s,
            id=f"{s.id}#q{j}",
            text=[qa.question],
            label=qa.answer,
            qa=[qa],
            statements=[],
            metadata={**s.metadata, "parent_id": s.id, "question_type": qa.type},
        ),
    )
