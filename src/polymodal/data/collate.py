"""Collate per-sample items into a :class:`Batch` with a presence mask per modality.

A missing modality is a state, not an error: a sample without an image gets a zero image and
``image_present=False``; without text, a row of padding and ``text_present=False``. Items that
are ``None`` (samples the dataset skipped as bad, in lenient mode) are dropped and counted in
``Batch.num_dropped``, which is how skip counts get back from DataLoader worker processes.

An item is a dict produced by :class:`~polymodal.data.dataset.MultimodalDataset`:

``id``          str
``image``       (3, H, W) float tensor or None
``text_ids``    list[int] (one text), list[list[int]] (``text_mode="all"``) or None
``label``       int | float | tensor | None
``extra``       dict of per-sample values (e.g. the raw ``text``), gathered into lists
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from polymodal.data.text import pad_ids

Item = dict[str, Any]


@dataclass
class Batch:
    """Tensors for one step. Row ``i`` of every (B, ...) tensor is sample ``ids[i]``.

    With ``text_mode="all"`` a sample may have several texts: ``text_ids`` then has N rows
    (all texts of the batch) and ``text_owner`` (N,) gives the sample row of each; otherwise
    ``text_owner`` is None and text row ``i`` belongs to sample ``i``.
    """

    ids: list[str]
    images: torch.Tensor | None = None  # (B, 3, H, W)
    image_present: torch.Tensor | None = None  # (B,) bool
    text_ids: torch.Tensor | None = None  # (B or N, T) long
    text_mask: torch.Tensor | None = None  # (B or N, T) bool
    text_present: torch.Tensor | None = None  # (B,) bool
    text_owner: torch.Tensor | None = None  # (N,) long, only for several texts per sample
    # Hard negative captions (see polymodal.data.hard_negatives), one row per sample when any has one.
    negative_text_ids: torch.Tensor | None = None  # (B, T) long
    negative_text_mask: torch.Tensor | None = None  # (B, T) bool
    negative_present: torch.Tensor | None = None  # (B,) bool
    labels: torch.Tensor | None = None  # (B,) or (B, K); 0 where absent
    label_present: torch.Tensor | None = None  # (B,) bool
    # Placeholders until audio/video decoding exists: always None, present all False.
    audio: torch.Tensor | None = None
    audio_present: torch.Tensor | None = None
    video: torch.Tensor | None = None
    video_present: torch.Tensor | None = None
    extra: dict[str, list[Any]] = field(default_factory=dict)
    num_dropped: int = 0  # bad samples skipped out of this batch

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def present(self) -> dict[str, torch.Tensor]:
        """Modality name -> (B,) bool mask, for the modalities this batch carries at all."""
        masks = {
            "image": self.image_present,
            "text": self.text_present,
            "audio": self.audio_present,
            "video": self.video_present,
        }
        return {name: m for name, m in masks.items() if m is not None}

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor moved to ``device``."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device, non_blocking=non_blocking)
            moved[f.name] = value
        return Batch(**moved)


def _stack_images(items: Sequence[Item]) -> tuple[torch.Tensor | None, torch.Tensor]:
    present = torch.tensor([it.get("image") is not None for it in items], dtype=torch.bool)
    shapes = {tuple(it["image"].shape) for it in items if it.get("image") is not None}
    if not shapes:
        return None, present
    if len(shapes) > 1:
        by_shape = {tuple(it["image"].shape): it["id"] for it in items if it.get("image") is not None}
        raise ValueError(f"images in one batch differ in shape: {by_shape} (sample id per shape)")
    blank = torch.zeros_like(next(it["image"] for it in items if it.get("image") is not None))
    images = torch.stack([blank if it.get("image") is None else it["image"] for it in items])  # (B, 3, H, W)
    return images, present


def _pad_texts(items: Sequence[Item], pad_id: int) -> dict[str, torch.Tensor | None]:
    texts = [it.get("text_ids") for it in items]
    if all(t is None for t in texts):
        return {"text_present": torch.zeros(len(items), dtype=torch.bool)}
    several = any(t and isinstance(t[0], (list, tuple)) for t in texts)
    if not several:
        # One row per sample; a missing text is an all-padding row with an all-False mask.
        ids, mask = pad_ids([t or [] for t in texts], pad_id)
        present = torch.tensor([bool(t) for t in texts], dtype=torch.bool)
        return {"text_ids": ids, "text_mask": mask, "text_present": present}
    rows: list[list[int]] = []
    owner: list[int] = []
    for i, t in enumerate(texts):
        for seq in t or []:
            rows.append(list(seq))
            owner.append(i)
    ids, mask = pad_ids(rows, pad_id)  # (N, T)
    present = torch.tensor([bool(t) for t in texts], dtype=torch.bool)
    return {"text_ids": ids, "text_mask": mask, "text_present": present, "text_owner": torch.tensor(owner)}


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


def collate(items: Sequence[Item | None], pad_id: int = 0) -> Batch:
    """Stack items into a :class:`Batch`; ``None`` items are dropped and counted.

    If every item was dropped the batch is empty (``len(batch) == 0``, tensors None); a
    training loop should skip it.
    """
    kept = [it for it in items if it is not None]
    dropped = len(items) - len(kept)
    if not kept:
        return Batch(ids=[], num_dropped=dropped)
    images, image_present = _stack_images(kept)
    labels, label_present = _stack_labels(kept)
    absent = torch.zeros(len(kept), dtype=torch.bool)
    extra: dict[str, list[Any]] = {}
    for i, it in enumerate(kept):
        for key, value in (it.get("extra") or {}).items():
            # Keys only some items carry are None-filled so that lists stay row-aligned.
            extra.setdefault(key, [None] * i).append(value)
        for key in extra:
            if len(extra[key]) < i + 1:
                extra[key].append(None)
    return Batch(
        ids=[str(it["id"]) for it in kept],
        images=images,
        image_present=image_present,
        labels=labels,
        label_present=label_present,
        audio_present=absent,
        video_present=absent.clone(),
        extra=extra,
        num_dropped=dropped,
        **_pad_texts(kept, pad_id),
        **_pad_negatives(kept, pad_id),
    )


class Collator:
    """``collate`` with a fixed pad id; a picklable object for DataLoader workers."""

    def __init__(self, pad_id: int = 0) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[Item | None]) -> Batch:
        return collate(items, pad_id=self.pad_id)
