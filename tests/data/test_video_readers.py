"""Video datasets: manifests with a ``video`` column (a file or a folder of frames), UCF101/HMDB-style class folders
with split lists, Kinetics CSVs and MSR-VTT (its JSON and the 1k-A CSV); bad rows counted with file and row, and
``polymodal data check`` decoding every clip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from polymodal.data.check import check_dataset
from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers import (
    detect_format,
    open_dataset,
    read_class_folders,
    read_kinetics,
    read_manifest,
    read_msrvtt,
)

from .test_audio_readers import write_csv
from .test_video import frame_array, write_clip

pytest.importorskip("av")


def clip(path: Path, frames: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_clip(path, frames)


def test_manifest_video_column_resolves_files_and_frame_folders_and_checks_them(tmp_path: Path) -> None:
    clip(tmp_path / "clips" / "a.mp4")
    (tmp_path / "frames" / "b").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(frame_array(i)).save(tmp_path / "frames" / "b" / f"{i}.png")
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"not a video at all")
    rows = [
        {"id": "a", "video": "clips/a.mp4", "text": "a clip"},
        {"id": "b", "video": "frames/b", "text": "frames"},
        {"id": "c", "video": "clips/gone.mp4", "text": "missing"},
        {"id": "d", "video": "clips/broken.mp4", "text": "garbage"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = BadSampleLog()
    samples = list(read_manifest(manifest, bad_log=log))
    assert [s.id for s in samples] == ["a", "b", "d"]
    assert samples[0].video == str(tmp_path / "clips" / "a.mp4") and samples[1].video == str(tmp_path / "frames" / "b")
    assert [(e.row, e.field, e.kind) for e in log.examples] == [(3, "video", "missing_file")]
    report = check_dataset(manifest, progress=False)
    assert (report.samples, report.bad, report.modalities["video"]) == (2, 2, 2)
    assert report.bad_by_kind == {"missing_file": 1, "decode": 1}
    decode = next(e for e in report.bad_examples if e["kind"] == "decode")
    assert (decode["source"], decode["row"], decode["field"]) == (str(manifest), 4, "video")


def ucf_tree(root: Path) -> Path:
    """root/<class>/v_<class>_gNN_c01.avi for two classes, with UCF101's split lists in root/splits/."""
    for name in ("ApplyLipstick", "Biking"):
        for group in (1, 8):
            clip(root / "videos" / name / f"v_{name}_g{group:02d}_c01.avi")
    (root / "videos" / "Biking" / "notes.txt").write_text("ignored")
    splits = root / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("1 ApplyLipstick\n2 Biking\n")
    (splits / "trainlist01.txt").write_text(
        "ApplyLipstick/v_ApplyLipstick_g08_c01.avi 1\nBiking/v_Biking_g08_c01.avi 2\nBiking/v_Biking_g09_c01.avi 2\n"
    )
    (splits / "testlist01.txt").write_text("ApplyLipstick/v_ApplyLipstick_g01_c01.avi\nBiking/v_Biking_g01_c01.avi\n")
    return root


def test_class_folders_of_clips_and_ucf101_split_lists(tmp_path: Path) -> None:
    root = ucf_tree(tmp_path) / "videos"
    assert detect_format(root) == "imagefolder"
    every = list(open_dataset(root))
    assert [(s.label, s.metadata["class_index"]) for s in every] == [("ApplyLipstick", 0)] * 2 + [("Biking", 1)] * 2
    assert all(s.video and s.image is None for s in every)
    log = BadSampleLog()
    train = list(read_class_folders(root, split_list=tmp_path / "splits" / "trainlist01.txt", bad_log=log))
    assert [s.id for s in train] == ["ApplyLipstick/v_ApplyLipstick_g08_c01.avi", "Biking/v_Biking_g08_c01.avi"]
    assert [(Path(e.source).name, e.row, e.kind) for e in log.examples] == [("trainlist01.txt", 3, "missing_file")]
    test = list(read_class_folders(root, split_list=tmp_path / "splits" / "testlist01.txt"))
    assert [(s.label, s.metadata["class_index"], s.row) for s in test] == [("ApplyLipstick", 0, 1), ("Biking", 1, 2)]


def test_kinetics_csv_finds_clips_by_id_and_times_and_counts_bad_rows(tmp_path: Path) -> None:
    clip(tmp_path / "val" / "abseiling" / "abc_000010_000020.mp4")
    clip(tmp_path / "val" / "def.mkv")
    csv_file = write_csv(
        tmp_path / "val.csv",
        ["label", "youtube_id", "time_start", "time_end", "split"],
        [
            ["abseiling", "abc", 10, 20, "val"],
            ["air drumming", "def", 0, 10, "val"],
            ["archery", "zzz", 5, 15, "val"],
            ["archery", "bad", "soon", 15, "val"],
        ],
    )
    assert detect_format(csv_file) == "kinetics"
    log = BadSampleLog()
    samples = list(open_dataset(csv_file, bad_log=log))
    assert [(s.id, s.label, Path(s.video).name) for s in samples] == [
        ("abc_000010_000020", "abseiling", "abc_000010_000020.mp4"),
        ("def_000000_000010", "air drumming", "def.mkv"),
    ]
    assert samples[0].metadata == {"youtube_id": "abc", "time_start": 10.0, "time_end": 20.0, "split": "val"}
    assert [(e.row, e.field, e.kind) for e in log.examples] == [
        (4, "youtube_id", "missing_file"),
        (5, "time_start", "invalid"),
    ]
    with pytest.raises(BadSampleError, match="zzz"):
        list(read_kinetics(csv_file, strict=True))


def test_msrvtt_json_gives_clips_with_all_their_sentences_and_the_1k_a_csv_one_each(tmp_path: Path) -> None:
    for i in (0, 1, 7010):
        clip(tmp_path / "videos" / "all" / f"video{i}.mp4")
    data = {
        "videos": [
            {"video_id": "video0", "split": "train", "category": 9},
            {"video_id": "video1", "split": "validate", "category": 3},
            {"video_id": "video2", "split": "train", "category": 1},
        ],
        "sentences": [
            {"video_id": "video0", "caption": "a man plays a guitar", "sen_id": 0},
            {"video_id": "video1", "caption": "a cat jumps", "sen_id": 1},
            {"video_id": "video0", "caption": "someone is playing music", "sen_id": 2},
            {"video_id": "video2", "caption": "nobody downloaded this", "sen_id": 3},
        ],
    }
    annotations = tmp_path / "train_val_videodatainfo.json"
    annotations.write_text(json.dumps(data))
    assert detect_format(annotations) == "msrvtt"
    log = BadSampleLog()
    samples = list(open_dataset(annotations, bad_log=log))
    assert [(s.id, s.text) for s in samples] == [
        ("video0", ["a man plays a guitar", "someone is playing music"]),
        ("video1", ["a cat jumps"]),
    ]
    assert samples[0].metadata == {"split": "train", "category": 9}
    assert [(e.row, e.field, e.kind) for e in log.examples] == [(3, "video_id", "missing_file")]
    assert [s.id for s in read_msrvtt(annotations, split="validate")] == ["video1"]
    test = write_csv(
        tmp_path / "MSRVTT_JSFUSION_test.csv",
        ["key", "vid_key", "video_id", "sentence"],
        [["ret0", "msr7010", "video7010", "a woman cooks"], ["ret1", "msr7011", "video7011", "missing clip"]],
    )
    assert detect_format(test) == "msrvtt"
    log = BadSampleLog()
    rows = list(open_dataset(test, bad_log=log))
    assert [(s.id, s.text, Path(s.video).name) for s in rows] == [("ret0", ["a woman cooks"], "video7010.mp4")]
    assert [(Path(e.source).name, e.row) for e in log.examples] == [("MSRVTT_JSFUSION_test.csv", 3)]
