"""CIFAR binary reader on files written here in the documented layout."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polymodal.data.errors import BadSampleError
from polymodal.data.readers.cifar import cifar_classes, read_cifar

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(root: Path, variant: str, labels: list[int], seed: int = 0) -> np.ndarray:
    """Write a test split with the given labels; returns the (N, 32, 32, 3) pixels written."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    records = []
    for label, img in zip(labels, pixels):
        planes = img.transpose(2, 0, 1).reshape(-1)  # R plane, G plane, B plane
        head = [label] if variant == "cifar10" else [label % 20, label]
        records.append(np.concatenate([np.array(head, dtype=np.uint8), planes]))
    if variant == "cifar10":
        folder = root / "cifar-10-batches-bin"
        folder.mkdir(parents=True)
        (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
        np.stack(records).tofile(folder / "test_batch.bin")
    else:
        folder = root / "cifar-100-binary"
        folder.mkdir(parents=True)
        (folder / "fine_label_names.txt").write_text("\n".join(f"class_{i}" for i in range(100)) + "\n")
        np.stack(records).tofile(folder / "test.bin")
    return pixels


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_read_cifar_decodes_pixels_and_labels(tmp_path: Path, variant: str) -> None:
    labels = [3, 0, 9, 7] if variant == "cifar10" else [99, 0, 42, 17]
    pixels = write_cifar(tmp_path, variant, labels)
    samples = list(read_cifar(tmp_path, variant, "test", strict=True))
    names = cifar_classes(tmp_path, variant)
    assert len(names) == (10 if variant == "cifar10" else 100)
    assert [s.metadata["class_index"] for s in samples] == labels
    assert [s.label for s in samples] == [names[k] for k in labels]
    for sample, expected in zip(samples, pixels):
        decoded = np.asarray(Image.open(io.BytesIO(sample.image)))
        assert np.array_equal(decoded, expected)  # lossless PNG of the exact pixels
    if variant == "cifar100":
        assert [s.metadata["coarse_index"] for s in samples] == [k % 20 for k in labels]


def test_truncated_file_and_bad_label_name_the_file_and_record(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", [1, 2])
    batch = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    data = bytearray(batch.read_bytes())
    data[3073] = 12  # second record's label: out of range for 10 classes
    batch.write_bytes(bytes(data))
    with pytest.raises(BadSampleError) as err:
        list(read_cifar(tmp_path, "cifar10", strict=True))
    assert str(batch) in str(err.value) and "row 2" in str(err.value) and "label 12" in str(err.value)
    assert [s.id for s in read_cifar(tmp_path, "cifar10")] == ["test_batch/0"]  # lenient: skipped
    batch.write_bytes(bytes(data[:-5]))
    with pytest.raises(BadSampleError, match="not a multiple of the 3073-byte"):
        list(read_cifar(tmp_path, "cifar10"))
