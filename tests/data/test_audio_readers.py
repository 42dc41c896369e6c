"""AudioCaps and Clotho caption CSVs: clips grouped with their captions, missing audio counted with file and row,
both detected by open_dataset from their columns."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import soundfile as sf

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers import detect_format, open_dataset, read_audiocaps, read_clotho

from .test_audio import tone


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def write_clip(path: Path, freq: float = 440.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(freq, 0.2, 8000), 8000)


def audiocaps_tree(root: Path) -> Path:
    """test.csv: clip abc (named by its YouTube id, two captions), clip def (named Ydef as in AudioSet), clip ghi
    (named by an audiocap id), clip zzz (no file); each clip its own tone, so retrieval over them has no ties."""
    for name, freq in (("abc.wav", 330.0), ("Ydef.flac", 550.0), ("103.wav", 880.0)):
        write_clip(root / "audio" / "test" / name, freq)
    return write_csv(
        root / "test.csv",
        ["audiocap_id", "youtube_id", "start_time", "caption"],
        [
            [100, "abc", 30, "a dog barks"],
            [101, "def", 0, "rain falls on a roof"],
            [102, "abc", 30, "a dog is barking loudly"],
            [103, "ghi", 10, "an engine idles"],
            [104, "zzz", 0, "nobody downloaded this"],
            [105, "", 0, "a row without a clip"],
        ],
    )


def test_audiocaps_groups_the_captions_of_a_clip_and_finds_its_file_by_any_id(tmp_path: Path) -> None:
    csv_file = audiocaps_tree(tmp_path)
    log = BadSampleLog()
    samples = list(read_audiocaps(csv_file, bad_log=log))
    assert [(s.id, s.text) for s in samples] == [
        ("abc", ["a dog barks", "a dog is barking loudly"]),
        ("def", ["rain falls on a roof"]),
        ("ghi", ["an engine idles"]),
    ]
    audio = tmp_path / "audio" / "test"
    assert [Path(s.audio) for s in samples] == [audio / "abc.wav", audio / "Ydef.flac", audio / "103.wav"]
    assert samples[0].metadata == {"audiocap_ids": ["100", "102"], "start_time": "30"} and samples[0].row == 2
    assert log.total == 2
    rows = {e.row: e for e in log.examples}
    assert rows[6].field == "youtube_id" and "no audio file named zzz" in rows[6].reason
    assert rows[7].field == "youtube_id"
    # Strict: the first bad row (the captions are grouped before any file is looked up).
    with pytest.raises(BadSampleError, match=r"test.csv, row 7, field 'youtube_id': youtube_id is empty"):
        list(read_audiocaps(csv_file, strict=True))
    assert detect_format(csv_file) == "audiocaps"
    assert [s.id for s in open_dataset(csv_file)] == ["abc", "def", "ghi"]


def test_clotho_reads_five_captions_per_clip_from_the_split_folder(tmp_path: Path) -> None:
    write_clip(tmp_path / "evaluation" / "birds singing.wav")
    write_clip(tmp_path / "evaluation" / "door, slams.wav")
    captions = [f"caption {i}" for i in range(1, 6)]
    csv_file = write_csv(
        tmp_path / "clotho_captions_evaluation.csv",
        ["file_name", *(f"caption_{i}" for i in range(1, 6))],
        [
            ["birds singing.wav", *captions],
            ["door, slams.wav", "a door slams", "", "", "", ""],  # a quoted comma in the name; one caption
            ["missing.wav", *captions],
            ["../outside.wav", *captions],
        ],
    )
    log = BadSampleLog()
    samples = list(read_clotho(csv_file, bad_log=log))
    assert [(s.id, s.text) for s in samples] == [("birds singing.wav", captions), ("door, slams.wav", ["a door slams"])]
    assert Path(samples[0].audio) == tmp_path / "evaluation" / "birds singing.wav"
    kinds = {e.row: (e.field, e.kind) for e in log.examples}
    assert kinds == {4: ("file_name", "missing_file"), 5: ("file_name", "unsafe_path")}
    assert detect_format(csv_file) == "clotho" and len(list(open_dataset(csv_file))) == 2


def test_caption_csvs_with_a_wrong_header_or_no_file_are_errors(tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "clotho_captions_x.csv", ["file_name", "caption_1"], [["a.wav", "x"]])
    assert detect_format(bad) == "manifest"  # not Clotho's columns: an ordinary manifest
    with pytest.raises(BadSampleError, match=r"row 1.*header lacks \['caption_2'"):
        list(read_clotho(bad))
    with pytest.raises(BadSampleError, match="no such file"):
        read_audiocaps(tmp_path / "nothing.csv")
