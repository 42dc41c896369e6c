"""CIFAR-10 / CIFAR-100 from the *binary* distribution (never the pickled "python version").

Unpickling a file from an untrusted path can run arbitrary code, so only the binary layout is read:

- CIFAR-10 ``cifar-10-batches-bin/``: ``data_batch_{1..5}.bin``, ``test_batch.bin``; records of
  1 label byte + 3072 pixel bytes; class names in ``batches.meta.txt`` (one per line).
- CIFAR-100 ``cifar-100-binary/``: ``train.bin``, ``test.bin``; records of 1 coarse + 1 fine label
  byte + 3072 pixel bytes; names in ``fine_label_names.txt`` (and ``coarse_label_names.txt``).

Pixels are 1024 red, then 1024 green, then 1024 blue bytes, each a row-major 32x32 plane.
Samples carry the image as PNG bytes (``Sample.image``), the class name as ``label``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers.base import file_error, require_file, resolve_log
from polymodal.data.schema import Sample
from polymodal.data.shapes import encode_png

PIXELS = 32 * 32 * 3
LAYOUTS = {
    # variant: (folder, label bytes before the pixels, label names file, files per split)
    "cifar10": (
        "cifar-10-batches-bin",
        1,
        "batches.meta.txt",
        {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
    ),
    "cifar100": ("cifar-100-binary", 2, "fine_label_names.txt", {"train": ["train.bin"], "test": ["test.bin"]}),
}
Variant = Literal["cifar10", "cifar100"]


def cifar_dir(root: str | os.PathLike, variant: Variant) -> Path:
    """The batches folder: ``root`` itself if it holds the label names, else ``root/<folder>``."""
    folder, _, names_file, _ = LAYOUTS[variant]
    base = Path(root)
    return base if (base / names_file).is_file() else base / folder


def cifar_files(root: str | os.PathLike, variant: Variant, split: str = "test") -> list[Path]:
    """The label names file and the record files of ``split`` (what a reader of that split reads)."""
    if variant not in LAYOUTS:
        raise ValueError(f"unknown CIFAR variant {variant!r}; choose cifar10 or cifar100")
    _, _, names_file, splits = LAYOUTS[variant]
    if split not in splits:
        raise ValueError(f"unknown {variant} split {split!r}; choose from {', '.join(splits)}")
    base = cifar_dir(root, variant)
    return [base / names_file, *(base / name for name in splits[split])]


def cifar_classes(root: str | os.PathLike, variant: Variant) -> list[str]:
    """Class names in label order (blank lines at the end of the file are ignored)."""
    path = require_file(cifar_files(root, variant)[0])
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or not all(names):
        raise file_error("expected one class name per line", path, "invalid")
    return names


def read_cifar(
    root: str | os.PathLike,
    variant: Variant = "cifar10",
    split: str = "test",
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
) -> Iterator[Sample]:
    """One Sample per record of ``split``: PNG bytes, class name label, ``metadata['class_index']``.

    A file whose size is not a whole number of records is refused as a whole; a record whose
    label byte is out of range is a bad sample (named by file and 1-based record number).
    """
    _, n_label_bytes, _, _ = LAYOUTS[variant]
    classes = cifar_classes(root, variant)
    log = resolve_log(strict, bad_log)
    record = n_label_bytes + PIXELS
    return _records(cifar_files(root, variant, split)[1:], classes, n_label_bytes, record, log)


def _records(
    files: list[Path], classes: list[str], n_label_bytes: int, record: int, log: BadSampleLog
) -> Iterator[Sample]:
    for path in files:
        data = np.fromfile(require_file(path), dtype=np.uint8)
        if data.size % record:
            raise file_error(
                f"size {data.size} is not a multiple of the {record}-byte CIFAR record (is this the binary version?)",
                path,
                "invalid",
            )
        rows = data.reshape(-1, record)  # (N, label bytes + 3072)
        for i, row in enumerate(rows):
            label = int(row[n_label_bytes - 1])  # CIFAR-100: the fine label is the second byte
            if label >= len(classes):
                log.record(
                    BadSampleError(
                        f"label {label} is out of range for {len(classes)} classes",
                        source=str(path),
                        row=i + 1,
                        field="label",
                    )
                )
                continue
            pixels = row[n_label_bytes:].reshape(3, 32, 32).transpose(1, 2, 0)  # (3, H, W) planes -> (H, W, 3)
            metadata = {"class_index": label}
            if n_label_bytes == 2:
                metadata["coarse_index"] = int(row[0])
            yield Sample(
                id=f"{path.stem}/{i}",
                image=encode_png(Image.fromarray(np.ascontiguousarray(pixels))),
                label=classes[label],
                metadata=metadata,
                source=str(path),
                row=i + 1,
            )
