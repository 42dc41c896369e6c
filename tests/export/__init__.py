from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from polymodal.cli.main import app
from polymodal.export.onnx import MANIFEST_FILE, PARTS
from polymodal.export.variants import load_check, load_sample


def export_with_cli(model_dir: Path, out: Path) -> list[str]:
    """``polymodal export MODEL --out OUT --json``: the fp32 graphs and export.json it reports, all the files it
    reports (with the int8 variants, the sample and the check set) checked to be what OUT holds besides the
    tokenizer, and the held-out check set checked (:func:`assert_held_out`)."""
    result = CliRunner().invoke(app, ["export", str(model_dir), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*files, "tokenizer"])
    assert_held_out(out)
    return [f for f in files if ".int8" not in f and f not in ("sample.npz", "check.npz")]


def row_keys(feeds: dict[str, np.ndarray]) -> set[bytes]:
    """Each row's inputs as bytes; a text row without its padding (batches pad to different lengths)."""
    keys = set()
    for row in range(len(next(iter(feeds.values())))):
        length = int(feeds["attention_mask"][row].sum()) if "attention_mask" in feeds else None
        keys.add(b"|".join(value[row][..., :length].tobytes() for _, value in sorted(feeds.items())))
    return keys


def assert_held_out(out: Path) -> None:
    """Every tower of the export at ``out`` has a held-out check set larger than its calibration sample, sharing no
    row with it (text: none of its texts; a test's tiny tokenizer maps many words to one id, so a text row can equal
    a calibration row: tests/export/test_check.py checks rows with a real tokenizer), and every variant records its
    worst and mean cosine on all of it."""
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    samples, checks = load_sample(out), load_check(out)
    for modality, part in PARTS.items():
        if part not in manifest:
            continue
        sample_feeds, sample_embeds = samples[modality]
        batches = checks[modality]
        rows = sum(len(embeds) for _, embeds in batches)
        assert manifest[part]["check_set"]["rows"] == rows > len(sample_embeds)
        calibration = row_keys(sample_feeds)
        held_out = set().union(*(row_keys(feeds) for feeds, _ in batches))
        assert len(held_out - calibration) > 1
        if modality != "text":
            assert not held_out & calibration
        for figures in manifest[part]["variants"].values():
            assert figures["heldout_rows"] == rows
            assert -1 <= figures["heldout_cosine_min"] <= figures["heldout_cosine_mean"] <= 1
