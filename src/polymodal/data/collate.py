"""Collate per-sample items into a :class:`Batch`: each modality through its processor, with a presence mask.

A missing modality is a state, not an error: a sample without an image gets a zero image and ``present["image"]``
False; without text, a row of padding. Items that are ``None`` (samples the dataset skipped as bad, in lenient
mode) are dropped and counted in ``Batch.num_dropped``, which is how skip counts get back from DataLoader worker
processes.

An item is a dict produced by :class:`~polymodal.data.dataset.MultimodalDataset`:

``id``          str
``inputs``      modality -> the processor's per-sample value, or None
``label``       int | float | tensor | None
``extra``       dict of per-sample values (e.g. the raw ``text``), gathered into lists
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from polymodal.data.processors import Processor
from polymodal.data.text import pad_ids

Item = dict[str, Any]
ModalityInput = tuple[torch.Tensor, "torch.Tensor | None"]


@dataclass
class Batch:
    """Tensors for one step. Row ``i`` of every (B, ...) tensor is sample ``ids[i]``.

    ``inputs`` holds ``(x, mask)`` for each modality at least one sample has: what a model's forward takes.
    ``present`` holds a (B,) mask for every modality the dataset prepares. A sample may carry several texts
    (``text_mode="all"``): the text input then has N rows and ``text_owner`` (N,) gives the sample row of each.
    """

    ids: list[str]
    inputs: dict[str, ModalityInput] = field(default_factory=dict)
    present: dict[str, torch.Tensor] = field(default_factory=dict)
    text_owner: torch.Tensor | None = None  # (N,) long, only for several texts per sample
    # Hard negative captions (see polymodal.data.hard_negatives), one row per sample when any has one.
    negative_text_ids: torch.Tensor | None = None  # (B, T) long
    negative_text_mask: torch.Tensor | None = None  # (B, T) bool
    negative_present: torch.Tensor | None = None  # (B,) bool
    labels: torch.Tensor | None = None  # (B,) or (B, K); 0 where absent
    label_present: torch.Tensor | None = None  # (B,) bool
    extra: dict[str, list[Any]] = field(default_factory=dict)
    num_dropped: int = 0  # bad samples skipped out of this batch

    def __len__(self) -> int:
        return len(self.ids)

    def input(self, modality: str) -> ModalityInput:
        """``(x, mask)`` of one modality; a clear error when no sample of the batch has it."""
        if modality not in self.inputs:
            raise KeyError(
                f"batch of {len(self.ids)} samples (ids {self.ids[:3]}...) has no {modality!r} input; "
                f"it has {sorted(self.inputs)}"
            )
        return self.inputs[modality]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor moved to ``device``."""

        def move(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value.to(device, non_blocking=non_blocking)
            if isinstance(value, tuple):
                return tuple(move(v) for v in value)
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            return value

        return Batch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})


def _pad_negatives(items: Sequence[Item], pad_id: int) -> dict[str, torch.Tensor]:
    if not any("negative_text_ids" in it for it in items):
        return {}
    # A dataset that makes negatives always yields these tensors, even when no item has one, so that
    # every process of a distributed run takes the same code path.
    negatives = [it.get("negative_text_ids") for it in items]
    ids, mask = pad_ids([n or [] for n in negatives], pad_id, max(1, max(len(n or []) for n in negatives)))  # (B, T)
    present = torch.tensor([bool(n) for n in negatives], dtype=torch.bool)
    return {"negative_text_ids": ids, "negative_text_mask": mask, "negative_present": present}


def _stack_labels(items: Sequence[Item]) -> tuple[torch.Tensor | None, torch.Tensor]:
    labels = [it.get("label") for it in items]
    present = torch.tensor([lab is not None for lab in labels], dtype=torch.bool)
    given = [torch.as_tensor(lab) for lab in labels if lab is not None]
    if not given:
        return None, present
    # Promote across the batch: ints stay long, any float makes the batch float.
    dtype = given[0].dtype
    for t in given[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype == torch.bool:
        dtype = torch.long
    shape = given[0].shape
    out = torch.zeros((len(items), *shape), dtype=dtype)  # (B,) or (B, K)
    for i, lab in enumerate(labels):
        if lab is not None:
            out[i] = torch.as_tensor(lab, dtype=dtype)
    return out, present


def collate(items: Sequence[Item | None], processors: Mapping[str, Processor]) -> Batch:
    """Stack items into a :class:`Batch`; ``None`` items are dropped and counted.

    If every item was dropped the batch is empty (``len(batch) == 0``); a training loop should skip it.
    """
    kept = [it for it in items if it is not None]
    dropped = len(items) - len(kept)
    if not kept:
        return Batch(ids=[], num_dropped=dropped)
    inputs: dict[str, ModalityInput] = {}
    present: dict[str, torch.Tensor] = {}
    text_owner = None
    for modality, processor in processors.items():
        stacked = processor.collate([it["inputs"].get(modality) for it in kept])
        present[modality] = stacked.present
        if stacked.x is not None:
            inputs[modality] = (stacked.x, stacked.mask)
        if modality == "text":
            text_owner = stacked.owner
    labels, label_present = _stack_labels(kept)
    extra: dict[str, list[Any]] = {}
    for i, it in enumerate(kept):
        for key, value in (it.get("extra") or {}).items():
            # Keys only some items carry are None-filled so that lists stay row-aligned.
            extra.setdefault(key, [None] * i).append(value)
        for key in extra:
            if len(extra[key]) < i + 1:
                extra[key].append(None)
    text = processors.get("text")
    return Batch(
        ids=[str(it["id"]) for it in kept],
        inputs=inputs,
        present=present,
        text_owner=text_owner,
        labels=labels,
        label_present=label_present,
        extra=extra,
        num_dropped=dropped,
        **_pad_negatives(kept, getattr(text, "pad_id", 0)),
    )


class Collator:
    """``collate`` with the dataset's processors; a picklable object for DataLoader workers."""

    def __init__(self, processors: Mapping[str, Processor]) -> None:
        self.processors = dict(processors)

    def __call__(self, items: Sequence[Item | None]) -> Batch:
        return collate(items, self.processors)
