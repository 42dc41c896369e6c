"""A run records each bad sample once: not again in a later epoch or evaluation, nor after a resume, nor twice when
two DataLoader workers meet it."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from polymodal.data.errors import BadSampleError
from polymodal.train.bad_samples import RunBadSampleLog, bad_samples_note, read_bad_samples


def bad(row: int, kind: str = "decode", reason: str = "cannot open as video") -> BadSampleError:
    return BadSampleError(reason, source="data/train.jsonl", row=row, field="video", sample_id=f"{row:06d}", kind=kind)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_bad_sample_is_recorded_once_however_often_it_is_met(tmp_path: Path) -> None:
    log = RunBadSampleLog(tmp_path / "bad_samples.jsonl")
    for epoch in range(3):
        log.record(bad(2))
        log.record(bad(3, "truncated", reason=f"frames end at {epoch}.4 s"))  # the reason may vary by epoch
        log.record(bad(4, "too_long"))
    assert [r["row"] for r in lines(tmp_path / "bad_samples.jsonl")] == [2, 3, 4]
    summary = log.finish()
    assert (summary.total, summary.by_kind) == (3, {"decode": 1, "truncated": 1, "too_long": 1})
    # The same row of another manifest (validation), or another field of the row, is another bad sample.
    log.record(BadSampleError("x", source="data/val.jsonl", row=2, field="video", kind="decode"))
    log.record(BadSampleError("x", source="data/train.jsonl", row=2, field="audio", kind="decode"))
    assert log.finish().total == 5


def test_a_resumed_run_keeps_its_record_and_a_fresh_one_starts_its_own(tmp_path: Path) -> None:
    path = tmp_path / "bad_samples.jsonl"
    RunBadSampleLog(path).record(bad(2))
    resumed = RunBadSampleLog(path, fresh=False)
    resumed.record(bad(2))  # met again after the resume: already recorded
    resumed.record(bad(5))
    assert [r["row"] for r in lines(path)] == [2, 5] and resumed.finish().total == 2
    assert RunBadSampleLog(path, fresh=True).finish().total == 0 and not path.exists()


def test_duplicates_from_dataloader_workers_are_removed_when_the_run_finishes(tmp_path: Path) -> None:
    """Each worker holds a copy of the log: two may both record one sample; the file and the count end up unique
    (and the main process's copy, which saw neither, still counts them)."""
    path = tmp_path / "bad_samples.jsonl"
    main = RunBadSampleLog(path)
    workers = [pickle.loads(pickle.dumps(main)) for _ in range(2)]
    for worker in workers:
        worker.record(bad(7))
    workers[1].record(bad(8, "missing_file"))
    with open(path, "a") as f:
        f.write('{"source": "data/train.jsonl", "row": 9')  # a line cut short by a kill
    summary = main.finish()
    assert (summary.total, summary.by_kind, summary.path) == (2, {"decode": 1, "missing_file": 1}, str(path))
    assert [r["row"] for r in lines(path)] == [7, 8]


def test_the_note_names_the_count_the_kinds_and_the_file(tmp_path: Path) -> None:
    log = RunBadSampleLog(tmp_path / "run" / "bad_samples.jsonl")
    assert bad_samples_note(log.finish()) is None
    for row, kind in ((2, "decode"), (3, "truncated"), (4, "decode")):
        log.record(bad(row, kind))
    assert bad_samples_note(log.finish()) == (
        f"skipped 3 bad samples (decode 2, truncated 1): see {tmp_path / 'run' / 'bad_samples.jsonl'}"
    )


def test_a_run_with_no_usable_sample_says_how_many_were_bad_and_where_they_are_listed(tmp_path: Path) -> None:
    from polymodal.config import ConfigError
    from polymodal.train.recipe import load_recipe
    from polymodal.train.run import run_recipe

    (tmp_path / "train.jsonl").write_text(
        '{"id": "a", "image": "missing.png", "captions": ["a red circle"]}\n{"id": "b", "image": "gone.png", '
        '"captions": ["a blue square"]}\n'
    )
    overrides = [f"data.path={tmp_path}", "data.val=null", "train.steps=2", "train.warmup_steps=1"]
    recipe = load_recipe("shapes-clip", overrides)
    with pytest.raises(ConfigError) as stop:
        run_recipe(recipe, tmp_path / "run", progress=False)
    message = str(stop.value)
    assert message.startswith(f"{tmp_path / 'train.jsonl'}: no usable samples: 2 bad (")
    assert message.endswith(f"listed in {tmp_path / 'run' / 'bad_samples.jsonl'}")
    assert len(lines(tmp_path / "run" / "bad_samples.jsonl")) == 2


def test_a_missing_file_in_a_column_the_model_does_not_read_loses_no_row(tmp_path: Path) -> None:
    """Rows of an image-text recipe whose audio files are gone: the model reads image and text only, so every row
    trains (each was a bad sample, 'sounds/0.flac: no such file', and the run had nothing to train on)."""
    from PIL import Image

    from polymodal.train.recipe import load_recipe
    from polymodal.train.run import run_recipe

    rows = []
    for i, colour in enumerate(["red", "blue", "green", "white"] * 2):
        Image.new("RGB", (32, 32), colour).save(tmp_path / f"{i}.png")
        rows.append({"id": str(i), "image": f"{i}.png", "audio": f"sounds/{i}.flac", "captions": [f"a {colour} one"]})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [f"data.path={tmp_path}", "data.val=null", "data.image.image_size=32", "train.steps=2"]
    recipe = load_recipe("shapes-clip", [*overrides, "train.warmup_steps=1", "train.batch_size=4"])
    result = run_recipe(recipe, tmp_path / "run", progress=False)
    assert result.step == 2 and result.bad_samples.total == 0


def test_a_reason_holding_a_unicode_line_separator_stays_one_record(tmp_path: Path) -> None:
    """json.dumps leaves U+2028, U+2029 and U+0085 raw, and str.splitlines() ends lines at them: a file name or
    decoder message holding one would cut its record in two."""
    path = tmp_path / "bad_samples.jsonl"
    log = RunBadSampleLog(path)
    log.record(bad(2, reason="cannot open clip\u2028two\x85.mp4"))
    assert len(path.read_text().splitlines()) == 1
    assert lines(path)[0]["reason"] == "cannot open clip\u2028two\x85.mp4"
    # A file written raw by an older version still reads as one record per newline.
    path.write_text(json.dumps({**lines(path)[0], "row": 3}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert "\u2028" in path.read_text()
    assert log.finish().total == 1 and [r["row"] for r in read_bad_samples(path)] == [3]
