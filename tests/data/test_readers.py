"""Readers on real files written into tmp_path: every format, every bad-input case, in strict
mode (the error names file, row and field) and lenient mode (skipped, counted, logged)."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from polymodal.data.dataset import MediaMemo
from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.image import decode_image
from polymodal.data.readers import (
    detect_format,
    expand_shards,
    open_dataset,
    read_class_folders,
    read_coco_captions,
    read_karpathy,
    read_manifest,
    read_shards,
    read_vqa,
    write_shards,
)
from polymodal.data.schema import QA, Sample, ShardMember, Statement


def png_bytes(color: tuple[int, int, int] = (200, 10, 10), size: tuple[int, int] = (4, 3)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def write_image(path: Path, color: tuple[int, int, int] = (200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(color))
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows are dicts (dumped as JSON) or raw bytes/str lines written as they are."""
    with open(path, "wb") as f:
        for row in rows:
            if isinstance(row, dict):
                row = json.dumps(row)
            f.write((row.encode() if isinstance(row, str) else row) + b"\n")
    return path


def lenient(read, *args, **kw) -> tuple[list[Sample], BadSampleLog, Path]:
    """Run a reader in lenient mode with a log file next to the data."""
    first = args[0][0] if isinstance(args[0], list) else args[0]
    log_path = Path(first).parent / "bad_samples.jsonl"
    log = BadSampleLog(log_path)
    return list(read(*args, bad_log=log, **kw)), log, log_path


def logged(log_path: Path) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines()]


# --- manifests ------------------------------------------------------------------------------

SHAPES_ROW = {
    "id": "shapes-000001",
    "image": "images/000001.png",
    "captions": ["a red square left of a blue circle", "two shapes"],
    "objects": [{"shape": "square", "color": "red", "x": 0.2, "y": 0.5}],
    "qa": [
        {"question": "how many shapes are there?", "answer": "2", "type": "count"},
        {"question": "is there a red square?", "answer": "yes", "type": "exist"},
    ],
    "statements": [
        {"text": "there is a red square", "label": True},
        {"text": "there is a green star", "label": False, "type": "shape"},
    ],
    "label": {"count": 2, "majority_color": "red"},
}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    write_image(tmp_path / "images" / "000001.png")
    write_image(tmp_path / "images" / "000002.png", (0, 0, 255))
    return tmp_path


def test_jsonl_manifest_reads_every_field(dataset: Path) -> None:
    manifest = write_jsonl(
        dataset / "train.jsonl",
        [
            SHAPES_ROW,
            {"image": "images/000002.png", "text": "one caption", "label": 3, "audio": None, "source": "web"},
            {
                "id": 7,
                "text": ["a", "b"],
                "captions": "c",
                "qa": [{"question": "q?", "answers": ["x", "y", "x"]}],
                "metadata": {"split": "train"},
            },
        ],
    )
    s1, s2, s3 = read_manifest(manifest, strict=True)

    assert s1.id == "shapes-000001"
    assert s1.image == str((dataset / "images" / "000001.png").resolve())
    assert s1.text == SHAPES_ROW["captions"]
    assert s1.qa == [QA("how many shapes are there?", ["2"], "count"), QA("is there a red square?", ["yes"], "exist")]
    assert s1.statements == [
        Statement("there is a red square", True),
        Statement("there is a green star", False, "shape"),
    ]
    # A dict label is kept whole in metadata and does not reach Sample.label (collate wants scalars).
    assert s1.label is None and s1.metadata["label"] == SHAPES_ROW["label"]
    assert s1.metadata["objects"] == SHAPES_ROW["objects"]
    assert (s1.source, s1.row) == (str(manifest), 1)

    assert s2.id == "train-2"  # no id: <manifest stem>-<row>
    assert s2.text == ["one caption"] and s2.label == 3 and s2.audio is None
    assert s2.metadata == {"source": "web"}  # unknown keys go to metadata, even Sample attribute names

    assert s3.id == "7" and s3.image is None
    assert s3.text == ["a", "b", "c"]
    assert s3.qa[0].answer == "x"
    assert s3.metadata == {"split": "train"}


def test_label_key_picks_from_dict_label(dataset: Path) -> None:
    manifest = write_jsonl(dataset / "m.jsonl", [SHAPES_ROW])
    (sample,) = read_manifest(manifest, strict=True, label_key="count")
    assert sample.label == 2 and sample.metadata["label"] == SHAPES_ROW["label"]
    with pytest.raises(BadSampleError, match="label.nope"):
        list(read_manifest(manifest, strict=True, label_key="nope"))


def test_csv_manifest_parses_json_cells_and_numbers(dataset: Path) -> None:
    path = dataset / "m.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "captions", "label", "qa", "note"])
        w.writerow(["a", "images/000001.png", '["x", "y"]', "4", '[{"question": "q?", "answer": "no"}]', "hi"])
        w.writerow(["b", "images/000002.png", "just one, with a comma", "cat", "", ""])
        w.writerow(["c", "", "multi\nline", "0.5", "", "3"])
    a, b, c = read_manifest(path, strict=True)
    assert a.text == ["x", "y"] and a.label == 4 and a.qa == [QA("q?", ["no"])] and a.metadata == {"note": "hi"}
    assert b.text == ["just one, with a comma"] and b.label == "cat" and b.qa == [] and b.metadata == {}
    assert c.image is None and c.text == ["multi\nline"] and c.label == 0.5
    assert c.metadata == {"note": "3"}  # only label cells become numbers
    assert [s.row for s in (a, b, c)] == [2, 3, 4]  # the line each row starts on


def _symlink_out(root: Path) -> str:
    outside = write_image(root.parent / f"{root.name}-outside" / "secret.png")
    (root / "images" / "link.png").symlink_to(outside)
    return "images/link.png"


# (line, field the error must name, kind); the line is a dict, or raw bytes/str.
BAD_JSONL_LINES = {
    "invalid_json": ('{"id": "x", "image": ', None, "bad_json"),
    "invalid_utf8": (b'{"id": "x", "text": "caf\xe9"}', None, "bad_encoding"),
    "not_an_object": ("[1, 2, 3]", None, "invalid"),
    "missing_file": ({"image": "images/nope.png"}, "image", "missing_file"),
    "dotdot_escape": ({"image": "../../etc/passwd"}, "image", "unsafe_path"),
    "absolute_outside": ({"image": "/etc/passwd"}, "image", "unsafe_path"),
    "symlink_escape": ({"image": "SYMLINK"}, "image", "unsafe_path"),
    "nan_label": ('{"image": "images/000001.png", "label": NaN}', "label", "nan_label"),
    "inf_label": ('{"label": Infinity}', "label", "nan_label"),
    "text_mistyped": ({"text": 42}, "text", "invalid"),
    "captions_list_mistyped": ({"captions": ["ok", 3]}, "captions", "invalid"),
    "image_mistyped": ({"image": 12}, "image", "invalid"),
    "id_mistyped": ({"id": ["a"]}, "id", "invalid"),
    "qa_missing_question": ({"qa": [{"answer": "yes"}]}, "qa[0].question", "invalid"),
    "qa_answers_mistyped": ({"qa": [{"question": "q?", "answers": "yes"}]}, "qa[0].answers", "invalid"),
    "statement_label": ({"statements": [{"text": "t", "label": "maybe"}]}, "statements[0].label", "invalid"),
    "statement_type": ({"statements": [{"text": "t", "label": True, "type": 3}]}, "statements[0].type", "invalid"),
    "label_mistyped": ({"label": [1, None]}, "label", "invalid"),
    "no_content": ({"id": "x", "note": "only metadata"}, None, "empty"),
    "symlink_loop": ({"image": "LOOP"}, "image", "unreadable"),
    "name_too_long": ({"image": "x" * 5000}, "image", "unreadable"),
    "directory": ({"image": "images"}, "image", "unreadable"),
}


def _bad_manifest(root: Path, case: str) -> Path:
    line = BAD_JSONL_LINES[case][0]
    if line == {"image": "SYMLINK"}:
        line = {"image": _symlink_out(root)}
    if line == {"image": "LOOP"}:
        (root / "loop1").symlink_to(root / "loop2")
        (root / "loop2").symlink_to(root / "loop1")
        line = {"image": "loop1"}
    good = {"id": "good", "image": "images/000001.png", "text": "fine"}
    return write_jsonl(root / "m.jsonl", [good, line, dict(good, id="good2")])


@pytest.mark.parametrize("case", sorted(BAD_JSONL_LINES))
def test_bad_row_strict_names_file_row_field(dataset: Path, case: str) -> None:
    manifest = _bad_manifest(dataset, case)
    _, field, kind = BAD_JSONL_LINES[case]
    with pytest.raises(BadSampleError) as info:
        list(read_manifest(manifest, strict=True))
    err = info.value
    assert (err.source, err.row, err.field, err.kind) == (str(manifest), 2, field, kind)
    assert str(manifest) in str(err) and "row 2" in str(err)
    if field is not None:
        assert repr(field) in str(err)


@pytest.mark.parametrize("case", sorted(BAD_JSONL_LINES))
def test_bad_row_lenient_is_skipped_counted_logged(dataset: Path, case: str) -> None:
    manifest = _bad_manifest(dataset, case)
    samples, log, log_path = lenient(read_manifest, manifest)
    assert [s.id for s in samples] == ["good", "good2"]
    assert log.total == 1 and log.counts[BAD_JSONL_LINES[case][2]] == 1
    (entry,) = logged(log_path)
    assert (entry["source"], entry["row"], entry["field"]) == (str(manifest), 2, BAD_JSONL_LINES[case][1])


def test_absolute_path_inside_root_and_root_override(dataset: Path) -> None:
    inside = str((dataset / "images" / "000001.png").resolve())
    sub = dataset / "lists"
    sub.mkdir()
    manifest = write_jsonl(sub / "m.jsonl", [{"image": inside}, {"image": "../images/000002.png"}])
    with pytest.raises(BadSampleError, match="escapes the dataset root"):
        list(read_manifest(manifest, strict=True))  # default root: the manifest's own directory
    samples = list(read_manifest(manifest, strict=True, root=dataset))
    assert [s.image for s in samples] == [inside, str((dataset / "images" / "000002.png").resolve())]


def test_truncated_last_line_and_blank_lines(dataset: Path) -> None:
    manifest = dataset / "m.jsonl"
    manifest.write_bytes(b'{"id": "a", "label": 1}\n\n   \n{"id": "b", "text": "cut he')
    samples, log, _ = lenient(read_manifest, manifest)
    assert [s.id for s in samples] == ["a"]
    assert log.examples[0].row == 4 and log.examples[0].kind == "bad_json"


def test_bom_is_not_an_error(dataset: Path) -> None:
    manifest = dataset / "m.jsonl"
    manifest.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "t"}\n')
    assert [s.id for s in read_manifest(manifest, strict=True)] == ["a"]


@pytest.mark.parametrize("strict", [True, False])
def test_missing_or_empty_manifest_raises_in_both_modes(tmp_path: Path, strict: bool) -> None:
    with pytest.raises(BadSampleError, match="no such file") as info:
        read_manifest(tmp_path / "nope.jsonl", strict=strict)
    assert info.value.kind == "missing_file"
    (tmp_path / "empty.jsonl").touch()
    with pytest.raises(BadSampleError, match="empty") as info:
        read_manifest(tmp_path / "empty.jsonl", strict=strict)
    assert info.value.source == str(tmp_path / "empty.jsonl")


def test_csv_bad_rows(dataset: Path) -> None:
    path = dataset / "m.csv"
    path.write_bytes(
        b"id,image,label,qa\n"
        b"a,images/000001.png,1,\n"
        b"b,images/000001.png,nan,\n"  # NaN label
        b"c,images/000001.png,1,[not json\n"
        b"d,images/caf\xe9.png,1,\n"  # invalid UTF-8 in one cell
        b"e,images/000001.png,1,,extra\n"  # more cells than columns
        b"f,../escape.png,1,\n"
        b"g,images/000002.png,2,\n"
    )
    with pytest.raises(BadSampleError) as info:
        list(read_manifest(path, strict=True))
    assert (info.value.row, info.value.field, info.value.kind) == (3, "label", "nan_label")

    samples, log, log_path = lenient(read_manifest, path)
    assert [s.id for s in samples] == ["a", "g"]
    assert [(e["row"], e["field"], e["kind"]) for e in logged(log_path)] == [
        (3, "label", "nan_label"),
        (4, "qa", "bad_json"),
        (5, "image", "bad_encoding"),
        (6, None, "bad_csv"),
        (7, "image", "unsafe_path"),
    ]


def test_csv_cell_count_unlike_the_header_is_a_bad_row(dataset: Path) -> None:
    path = dataset / "m.csv"
    path.write_text("id,image,label\na,images/000001.png,1\nb,images/000001.png\nc,images/000001.png,1,x\nd,,2\n")
    samples, log, _ = lenient(read_manifest, path)
    assert [s.id for s in samples] == ["a", "b", "d"]  # empty or left-out last cells are missing fields
    assert samples[1].label is None
    assert [(e.row, e.kind, e.reason) for e in log.examples] == [(4, "bad_csv", "4 cells, the header has 3")]


# A quote left open on line 5 would join every later line into one cell.
STRAY_QUOTE_CSV = (
    "id,image,caption,label\n"
    'a,images/000001.png,"commas, ""doubled"" quotes",1\n'
    'b,images/000002.png,"a caption\nover two lines",2\n'
    "c,images/000001.png,plain,3\n"
    '"d,images/000001.png,stray quote,4\n'
    "e,images/000001.png,after the stray quote,5\n"
    'f,images/000002.png,"closed, again",6\n'
    "g,images/000001.png,last,7\n"
)


def test_csv_stray_quote_costs_its_own_line_only(dataset: Path) -> None:
    path = dataset / "m.csv"
    path.write_text(STRAY_QUOTE_CSV)
    samples, log, _ = lenient(read_manifest, path)
    assert [(s.id, s.row) for s in samples] == [("a", 2), ("b", 3), ("c", 5), ("e", 7), ("f", 8), ("g", 9)]
    assert samples[0].text == ['commas, "doubled" quotes'] and samples[1].text == ["a caption\nover two lines"]
    (error,) = log.examples
    assert (error.row, error.field, error.kind) == (6, None, "bad_csv")
    assert "malformed CSV" in error.reason and "runs on to line 8 (a stray quote?)" in error.reason
    with pytest.raises(BadSampleError, match="row 6"):
        list(read_manifest(path, strict=True))


def test_csv_quote_open_to_the_end_of_the_file_costs_its_own_line_only(dataset: Path) -> None:
    path = dataset / "m.csv"
    path.write_text(STRAY_QUOTE_CSV.replace('"closed, again"', "no quotes"))  # nothing closes the stray quote
    samples, log, _ = lenient(read_manifest, path)
    assert [s.id for s in samples] == ["a", "b", "c", "e", "f", "g"]
    (error,) = log.examples
    assert error.row == 6 and error.reason.startswith("unterminated quote") and "line 9" in error.reason


def test_csv_stray_quote_on_the_last_line(dataset: Path) -> None:
    path = dataset / "m.csv"
    path.write_text('id,text\na,fine\n"b,cut off')
    samples, log, _ = lenient(read_manifest, path)
    assert [s.id for s in samples] == ["a"]
    assert [(e.row, e.reason) for e in log.examples] == [(3, "unterminated quote: a quoted field never closes")]


@pytest.fixture
def small_csv_fields() -> Iterator[int]:
    """csv's field size limit lowered to 200 characters for one test."""
    previous = csv.field_size_limit(200)
    yield 200
    csv.field_size_limit(previous)


def test_csv_stray_quote_stops_at_the_field_size_limit(dataset: Path, small_csv_fields: int) -> None:
    """A quote left open in a huge file is given up on at csv's field size limit, not held to the end of the file."""
    path = dataset / "m.csv"
    rows = [f"{i},images/000001.png,caption {i},{i}\n" for i in range(100)]
    rows[3] = '"3,images/000001.png,stray quote,3\n'
    path.write_text("id,image,caption,label\n" + "".join(rows))
    samples, log, _ = lenient(read_manifest, path)
    assert [s.id for s in samples] == [str(i) for i in range(100) if i != 3]
    (error,) = log.examples
    assert error.row == 5 and f"field limit ({small_csv_fields})" in error.reason
    assert int(error.reason.split("runs on to line ")[1].split()[0]) < 20  # gave up after ~200 characters


def test_csv_and_jsonl_caption_column_is_text(dataset: Path) -> None:
    path = dataset / "m.csv"
    path.write_text('image,caption\nimages/000001.png,a red square\nimages/000002.png,"[""one"", ""two""]"\n')
    assert [s.text for s in read_manifest(path, strict=True)] == [["a red square"], ["one", "two"]]
    manifest = write_jsonl(dataset / "m.jsonl", [{"text": "t", "caption": "c", "captions": ["c1", "c2"]}])
    (sample,) = read_manifest(manifest, strict=True)
    assert sample.text == ["t", "c", "c1", "c2"] and sample.metadata == {}
    with pytest.raises(BadSampleError, match="field 'caption'"):
        list(read_manifest(write_jsonl(dataset / "bad.jsonl", [{"caption": 3}]), strict=True))


def test_jsonl_error_column_is_on_the_broken_line(dataset: Path) -> None:
    cut = '{"id": "x", "image": "images/000001.png", "captions": ['
    manifest = dataset / "m.jsonl"
    manifest.write_bytes(b'{"id": "a", "text": "t"}\n' + cut.encode() + b"\n" + cut.encode() + b"\r\n")
    _, log, _ = lenient(read_manifest, manifest)
    expected = f"invalid JSON: Expecting value at column {len(cut) + 1}"
    assert [(e.row, e.reason) for e in log.examples] == [(2, expected), (3, expected)]


# --- ImageFolder ----------------------------------------------------------------------------


def test_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    write_image(root / "dog" / "b.png")
    write_image(root / "cat" / "a.jpg")
    write_image(root / "cat" / "nested" / "c.png")
    (root / "cat" / "README.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    write_image(root / ".hidden" / "x.png")
    samples = list(read_class_folders(root, strict=True))
    assert [(s.id, s.label, s.metadata["class_index"]) for s in samples] == [
        ("cat/a.jpg", "cat", 0),
        ("cat/nested/c.png", "cat", 0),
        ("dog/b.png", "dog", 1),
    ]
    assert all(Path(s.image).is_absolute() and Path(s.image).is_file() for s in samples)
    pinned = list(read_class_folders(root, classes=["ant", "cat", "dog"]))
    assert [s.metadata["class_index"] for s in pinned] == [1, 1, 2]


def test_image_folder_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    write_image(root / "cat" / "a.png")
    outside = write_image(tmp_path / "elsewhere" / "secret.png")
    (root / "cat" / "z.png").symlink_to(outside)
    with pytest.raises(BadSampleError, match="escapes the dataset root") as info:
        list(read_class_folders(root, strict=True))
    assert info.value.field == "image" and info.value.row == 2
    samples, log, _ = lenient(read_class_folders, root)
    assert [s.id for s in samples] == ["cat/a.png"] and log.counts["unsafe_path"] == 1


# --- COCO captions and Karpathy -------------------------------------------------------------


def _coco(tmp_path: Path, annotations: list | None = None, images: list | None = None) -> tuple[Path, Path]:
    image_root = tmp_path / "val2017"
    write_image(image_root / "000000000001.jpg")
    write_image(image_root / "000000000002.jpg")
    data = {
        "images": images
        or [
            {"id": 1, "file_name": "000000000001.jpg", "height": 3, "width": 4},
            {"id": 2, "file_name": "000000000002.jpg"},
        ],
        "annotations": annotations
        or [
            {"id": 10, "image_id": 1, "caption": "A cat. "},
            {"id": 11, "image_id": 1, "caption": "A small cat."},
        ],
    }
    path = tmp_path / "captions_val2017.json"
    path.write_text(json.dumps(data))
    return path, image_root


def test_coco_captions_one_sample_per_image(tmp_path: Path) -> None:
    path, image_root = _coco(tmp_path)
    s1, s2 = read_coco_captions(path, image_root, strict=True)
    assert (s1.id, s1.text, s1.metadata) == ("1", ["A cat.", "A small cat."], {"image_id": 1, "height": 3, "width": 4})
    assert s1.image == str((image_root / "000000000001.jpg").resolve())
    assert (s2.id, s2.text) == ("2", [])  # an image without captions is still a sample


def test_coco_bad_entries(tmp_path: Path) -> None:
    path, image_root = _coco(
        tmp_path,
        annotations=[
            {"image_id": 1, "caption": "ok"},
            {"image_id": 99, "caption": "orphan"},
            {"image_id": 2, "caption": 5},
        ],
        images=[
            {"id": 1, "file_name": "000000000001.jpg"},
            {"id": 2, "file_name": "../../etc/passwd"},
            {"id": 3, "file_name": "missing.jpg"},
        ],
    )
    with pytest.raises(BadSampleError) as info:
        list(read_coco_captions(path, image_root, strict=True))
    assert (info.value.source, info.value.row, info.value.field) == (str(path), 2, "annotations.image_id")
    samples, log, log_path = lenient(read_coco_captions, path, image_root)
    assert [(s.id, s.text) for s in samples] == [("1", ["ok"])]
    assert [(e["row"], e["field"], e["kind"]) for e in logged(log_path)] == [
        (2, "annotations.image_id", "invalid"),
        (3, "annotations.caption", "invalid"),
        (2, "images.file_name", "unsafe_path"),
        (3, "images.file_name", "missing_file"),
    ]


@pytest.mark.parametrize("strict", [True, False])
def test_whole_file_json_errors_raise(tmp_path: Path, strict: bool) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"images": [')
    with pytest.raises(BadSampleError, match="invalid JSON") as info:
        read_coco_captions(path, tmp_path, strict=strict)
    assert info.value.kind == "bad_json" and info.value.source == str(path)
    path.write_text('{"images": {}}')
    with pytest.raises(BadSampleError) as info:
        read_coco_captions(path, tmp_path, strict=strict)
    assert info.value.field == "images"


def _karpathy(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "coco"
    write_image(root / "val2014" / "a.jpg")
    write_image(root / "train2014" / "b.jpg")
    write_image(root / "flat.jpg")
    images = [
        {
            "filepath": "val2014",
            "filename": "a.jpg",
            "split": "test",
            "imgid": 0,
            "cocoid": 42,
            "sentences": [{"raw": "A dog runs.", "tokens": ["a"]}, {"raw": " Dog. "}],
            "sentids": [0, 1],
        },
        {"filepath": "train2014", "filename": "b.jpg", "split": "restval", "imgid": 1, "cocoid": 7, "sentences": []},
        {"filename": "flat.jpg", "split": "train", "imgid": 2, "sentences": [{"raw": "flat"}]},
        {"filepath": "val2014", "filename": "a.jpg", "split": "val", "imgid": 3, "sentences": [{"tokens": []}]},
    ]
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path, root


def test_karpathy_split_filter(tmp_path: Path) -> None:
    path, root = _karpathy(tmp_path)
    (test,) = read_karpathy(path, root, split="test", strict=True)
    assert (test.id, test.text, test.row) == ("42", ["A dog runs.", "Dog."], 1)
    assert test.image == str((root / "val2014" / "a.jpg").resolve())
    assert test.metadata["split"] == "test" and test.metadata["dataset"] == "coco"
    train = list(read_karpathy(path, root, split=["train", "restval"], strict=True))
    assert [s.id for s in train] == ["7", "2"]  # no cocoid: imgid
    with pytest.raises(ValueError, match="restval"):
        read_karpathy(path, root, split="dev")
    with pytest.raises(BadSampleError) as info:
        list(read_karpathy(path, root, split="val", strict=True))
    assert (info.value.row, info.value.field) == (4, "sentences[0].raw")


# --- VQAv2 ----------------------------------------------------------------------------------


def _vqa(tmp_path: Path) -> tuple[Path, Path, Path]:
    image_dir = tmp_path / "val2014"
    write_image(image_dir / "COCO_val2014_000000000042.jpg")
    write_image(image_dir / "COCO_val2014_000000000043.jpg")
    questions = {
        "data_subtype": "val2014",
        "questions": [
            {"image_id": 42, "question": "What color?", "question_id": 420},
            {"image_id": 43, "question": "How many?", "question_id": 430},
            {"image_id": 42, "question": "Is it red?", "question_id": 421},
            {"image_id": 44, "question": "No image?", "question_id": 440},
        ],
    }

    def ann(qid: int, image_id: int, answers: list[str], atype: str) -> dict:
        return {
            "question_id": qid,
            "image_id": image_id,
            "answers": [{"answer": a, "answer_id": i} for i, a in enumerate(answers)],
            "answer_type": atype,
            "multiple_choice_answer": answers[0],
            "question_type": "what",
        }

    annotations = {
        "annotations": [
            ann(420, 42, ["red", "red", "blue"], "other"),
            ann(430, 43, ["2"], "number"),
            ann(421, 42, ["yes"], "yes/no"),
            ann(440, 44, ["x"], "other"),
        ]
    }
    qpath, apath = tmp_path / "questions.json", tmp_path / "annotations.json"
    qpath.write_text(json.dumps(questions))
    apath.write_text(json.dumps(annotations))
    return qpath, apath, image_dir


def test_vqa_per_image_and_per_question(tmp_path: Path) -> None:
    qpath, apath, image_dir = _vqa(tmp_path)
    samples, log, _ = lenient(read_vqa, qpath, image_dir, apath)
    assert [s.id for s in samples] == ["42", "43"]
    s42 = samples[0]
    assert s42.image == str((image_dir / "COCO_val2014_000000000042.jpg").resolve())
    assert [(q.question, q.answer, q.type, q.question_id) for q in s42.qa] == [
        ("What color?", "red", "other", 420),
        ("Is it red?", "yes", "yes/no", 421),
    ]
    assert s42.metadata["multiple_choice_answer"] == ["red", "yes"]
    assert log.total == 1 and log.examples[0].row == 4 and log.examples[0].field == "image_id"
    assert "COCO_val2014_000000000044.jpg" in str(log.examples[0])

    per_q = list(read_vqa(qpath, image_dir, apath, per="question"))
    assert [(s.id, len(s.qa), s.metadata["image_id"]) for s in per_q] == [
        ("420", 1, 42),
        ("430", 1, 43),
        ("421", 1, 42),
    ]
    no_answers = list(read_vqa(qpath, image_dir))
    assert all(q.answers == [] for s in no_answers for q in s.qa)


def test_vqa_image_pattern_and_bad_annotation(tmp_path: Path) -> None:
    qpath, apath, image_dir = _vqa(tmp_path)
    write_image(image_dir / "img-42.png")
    samples = list(read_vqa(qpath, image_dir, image_pattern="img-{image_id}.png"))
    assert [s.id for s in samples] == ["42"]
    data = json.loads(apath.read_text())
    data["annotations"][1]["answers"] = "2"
    del data["annotations"][2]
    apath.write_text(json.dumps(data))
    with pytest.raises(BadSampleError) as info:
        list(read_vqa(qpath, image_dir, apath, strict=True))
    assert (info.value.source, info.value.row, info.value.field) == (str(apath), 2, "annotations.answers")
    _, log, _ = lenient(read_vqa, qpath, image_dir, apath)
    assert [(e.row, e.field) for e in log.examples] == [(2, "annotations.answers"), (3, "question_id"), (4, "image_id")]


# --- WebDataset shards ----------------------------------------------------------------------


def write_tar(path: Path, members: list[tuple[str, bytes]], *, cut: int | None = None) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    path.write_bytes(data[:cut] if cut is not None else data)
    return path


def test_read_shards_groups_members(tmp_path: Path) -> None:
    img = png_bytes()
    write_tar(
        tmp_path / "shard-000000.tar",
        [
            ("0001.jpg", img),
            ("0001.txt", b"a caption"),
            ("0001.cls", b"3"),
            ("0002.png", img),
            ("0002.json", json.dumps({"label": "dog", "text": ["x", "y"], "url": "u"}).encode()),
            ("README", b"not a sample"),
        ],
    )
    write_tar(tmp_path / "shard-000001.tar", [("./sub/0003.webp", img), ("sub/0003.txt", "ünï".encode())])
    s1, s2, s3 = read_shards(str(tmp_path / "shard-{000000..000001}.tar"), strict=True)
    assert (s1.id, s1.image, s1.text, s1.label, s1.row) == ("0001", img, ["a caption"], 3, 1)
    assert (s2.id, s2.text, s2.label, s2.metadata) == ("0002", ["x", "y"], "dog", {"url": "u"})
    assert (s3.id, s3.text, s3.source) == ("sub/0003", ["ünï"], str(tmp_path / "shard-000001.tar"))
    assert expand_shards(tmp_path) == [str(tmp_path / "shard-000000.tar"), str(tmp_path / "shard-000001.tar")]


def test_media_left_in_the_shard_read_as_their_bytes_when_decoded(tmp_path: Path) -> None:
    red, blue = png_bytes(), png_bytes((10, 10, 200), (5, 5))
    members = [("0001.png", red), ("0001.cls", b"3"), ("0002.seg.png", blue), ("0002.txt", b"t"), ("0003.png", b"no")]
    shard = write_tar(tmp_path / "s.tar", members)
    eager = list(read_shards(shard, strict=True))
    lazy = list(read_shards(shard, strict=True, media_in_shard=True))
    assert [type(s.image) for s in lazy] == [ShardMember] * 3
    assert [s.image.read() for s in lazy] == [s.image for s in eager] == [red, blue, b"no"]
    assert [(s.id, s.text, s.label, s.row) for s in lazy] == [(s.id, s.text, s.label, s.row) for s in eager]
    assert pickle.loads(pickle.dumps(lazy[1])) == lazy[1]  # what a DataLoader worker is sent: no pixels
    assert decode_image(lazy[0].image).tobytes() == decode_image(red).tobytes()
    assert decode_image(lazy[1].image).size == (5, 5)
    memo = MediaMemo(1 << 20)
    assert memo.key("image", lazy[0].image) != memo.key("image", lazy[1].image)
    # A mislabelled member fails as its bytes would, naming the shard, the row and the member.
    with pytest.raises(BadSampleError) as info:
        decode_image(lazy[2].image, source=lazy[2].source, row=lazy[2].row)
    assert (info.value.source, info.value.row, info.value.kind) == (str(shard), 3, "not_an_image")
    assert f"{shard}:0003.png" in str(info.value)
    # Written again as shards, the members' bytes go along.
    again = write_shards(lazy[:2], str(tmp_path / "again-%d.tar"))
    assert [s.image for s in read_shards(again, strict=True)] == [red, blue]
    # A shard rewritten (even at its old size), cut or removed after it was listed: its samples are bad, named, and
    # nothing is read from where a member used to be.
    assert Path(lazy[0].image.shard).is_absolute()
    os.utime(shard, ns=(1, 1))
    with pytest.raises(BadSampleError, match="changed since it was listed") as info:
        decode_image(lazy[1].image, source=lazy[1].source, row=lazy[1].row)
    assert (info.value.kind, info.value.row) == ("changed", 2)
    listed = list(read_shards(shard, strict=True, media_in_shard=True))[0].image
    copy = tmp_path / "copy.tar"  # replaced by another file of the same size and time: refused too
    copy.write_bytes(shard.read_bytes())
    os.utime(copy, ns=(1, 1))
    os.replace(copy, shard)
    with pytest.raises(BadSampleError, match="changed since it was listed"):
        decode_image(listed)
    relisted = list(read_shards(shard, strict=True, media_in_shard=True))
    shard.write_bytes(shard.read_bytes()[: relisted[1].image.offset + 10])  # cut short
    with pytest.raises(BadSampleError, match="changed since it was listed"):
        decode_image(relisted[0].image)
    shard.unlink()
    with pytest.raises(BadSampleError, match="the shard is gone") as info:
        decode_image(relisted[0].image)
    assert info.value.kind == "missing_file"


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar writes the sparse member")
def test_a_sparse_member_is_read_whole_not_left_in_its_shard(tmp_path: Path) -> None:
    holey = tmp_path / "in" / "0001.png"
    holey.parent.mkdir()
    with open(holey, "wb") as f:  # a PNG followed by a hole: tar -S stores only the data blocks
        f.write(png_bytes())
        f.seek(1 << 20)
        f.write(b"end")
    (tmp_path / "in" / "0002.png").write_bytes(png_bytes((1, 2, 3)))
    subprocess.run(["tar", "-S", "-cf", str(tmp_path / "s.tar"), "-C", str(tmp_path / "in"), "0001.png", "0002.png"])
    first, second = read_shards(tmp_path / "s.tar", strict=True, media_in_shard=True)
    assert first.image == holey.read_bytes()  # whole, as an eager read gives it
    assert isinstance(second.image, ShardMember) and second.image.read() == png_bytes((1, 2, 3))


def test_shard_json_caption_is_the_text(tmp_path: Path) -> None:
    shard = write_tar(tmp_path / "s.tar", [("0001.json", b'{"caption": "from json"}'), ("0001.txt", b"from txt")])
    (sample,) = read_shards(str(shard), strict=True)
    assert sample.text == ["from json"] and sample.metadata == {}  # as with text and captions, the json wins


BAD_MEMBERS = {
    "dotdot": ([("../evil.jpg", b"x")], "unsafe_path", "../evil.jpg"),
    "absolute": ([("/etc/evil.jpg", b"x")], "unsafe_path", "/etc/evil.jpg"),
    "bad_json": ([("0002.jpg", b"img"), ("0002.json", b"{nope")], "bad_json", "json"),
    "bad_txt": ([("0002.txt", b"\xff\xfe")], "bad_encoding", "txt"),
    "json_not_object": ([("0002.json", b"[1]")], "invalid", "json"),
    "nan_label": ([("0002.json", b'{"label": NaN}')], "nan_label", "label"),
    "json_media_path": ([("0002.json", b'{"image": "/etc/passwd"}')], "invalid", "image"),
}


@pytest.mark.parametrize("case", sorted(BAD_MEMBERS))
def test_bad_shard_members(tmp_path: Path, case: str) -> None:
    members, kind, field = BAD_MEMBERS[case]
    good = [("0001.txt", b"good"), *members, ("0003.txt", b"also good")]
    shard = write_tar(tmp_path / "s.tar", good)
    with pytest.raises(BadSampleError) as info:
        list(read_shards(shard, strict=True))
    assert (info.value.source, info.value.field, info.value.kind) == (str(shard), field, kind)
    samples, log, log_path = lenient(read_shards, shard)
    assert [s.id for s in samples] == ["0001", "0003"] and log.total == 1
    assert logged(log_path)[0]["field"] == field
    assert not (tmp_path / "evil.jpg").exists() and not Path("/etc/evil.jpg").exists()  # nothing extracted


def test_symlink_member_rejected(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("0001.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    (tmp_path / "s.tar").write_bytes(buf.getvalue())
    samples, log, _ = lenient(read_shards, tmp_path / "s.tar")
    assert samples == [] and log.counts["unsafe_path"] == 1


def test_member_media_win_and_oversized_members_are_refused(tmp_path: Path) -> None:
    img = png_bytes()
    shard = write_tar(
        tmp_path / "s.tar",
        [("a.json", b'{"image": "../x.jpg", "text": "t"}'), ("a.jpg", img), ("b.txt", b"t"), ("b.png", b"x" * 2000)],
    )
    samples, log, _ = lenient(read_shards, shard, max_member_bytes=1000)
    assert [(s.id, s.image) for s in samples] == [("a", img), ("b", None)]
    assert log.examples[0].kind == "too_large" and log.examples[0].field == "b.png"


def test_truncated_empty_and_missing_shards(tmp_path: Path) -> None:
    members = [
        (f"{i:04d}.{ext}", png_bytes() if ext == "png" else b"caption") for i in range(3) for ext in ("png", "txt")
    ]
    full = write_tar(tmp_path / "full.tar", members).read_bytes()
    # Cut inside the third sample's first header. Sample 2 may have had more members after the
    # cut, so only sample 1 is known complete; sample 2 is dropped with the damage.
    third = full.index(b"0002.png")
    write_tar(tmp_path / "cut.tar", members, cut=third + 100)
    (tmp_path / "empty.tar").touch()
    with pytest.raises(BadSampleError, match="truncated") as info:
        list(read_shards(tmp_path / "cut.tar", strict=True))
    assert info.value.source == str(tmp_path / "cut.tar") and info.value.row == 2
    samples, log, _ = lenient(
        read_shards, [tmp_path / "cut.tar", tmp_path / "empty.tar", tmp_path / "nope.tar", tmp_path / "full.tar"]
    )
    assert [s.id for s in samples] == ["0000", "0000", "0001", "0002"]
    assert dict(log.counts) == {"truncated": 1, "empty_file": 1, "missing_file": 1}
    for cut in range(0, len(full), 997):  # no cut position crashes lenient reading
        write_tar(tmp_path / "c.tar", members, cut=cut)
        list(read_shards(tmp_path / "c.tar"))


def test_write_shards_round_trip_and_atomic(tmp_path: Path) -> None:
    write_image(tmp_path / "x.png")
    samples = [
        Sample(id="a.b/c", image=str(tmp_path / "x.png"), text=["one"], label=1),
        Sample(
            id="a_b_c",
            image=png_bytes((1, 2, 3)),
            text=["two", "three"],
            label="cat",
            qa=[QA("q?", ["a", "b"], "t", 5)],
            statements=[Statement("s", False, "color")],
            metadata={"k": [1, 2]},
        ),
        Sample(id="n", label=[1, 2]),
    ]
    out = tmp_path / "out"
    paths = write_shards(samples, str(out / "shard-%06d.tar"), max_count=2)
    assert paths == [str(out / "shard-000000.tar"), str(out / "shard-000001.tar")]
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar", "shard-000001.tar"]  # no temp files left
    back = list(read_shards(str(out / "shard-{000000..000001}.tar"), strict=True))
    assert back[0].image == (tmp_path / "x.png").read_bytes()
    for got, want in zip(back, samples):
        want_image = Path(want.image).read_bytes() if isinstance(want.image, str) else want.image
        assert (got.id, got.image, got.text, got.label, got.qa, got.statements, got.metadata) == (
            want.id,
            want_image,
            want.text,
            want.label,
            want.qa,
            want.statements,
            want.metadata,
        )

    def failing():
        yield samples[2]
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError):
        write_shards(failing(), str(tmp_path / "f-%d.tar"), max_count=5)
    assert list(tmp_path.glob("*f-*")) == []  # the unfinished shard never appears, not even as a temp
    with pytest.raises(ValueError, match="%d"):
        write_shards(samples, str(tmp_path / "no-field.tar"))


# --- dispatch -------------------------------------------------------------------------------


def test_open_dataset_dispatch(tmp_path: Path) -> None:
    write_image(tmp_path / "folder" / "cat" / "a.png")
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"id": "r", "text": "t"}])
    coco, image_root = _coco(tmp_path / "c")
    karpathy, kroot = _karpathy(tmp_path / "k")
    qpath, _, vqa_images = _vqa(tmp_path / "v")
    shards = write_shards([Sample(id="w", text=["t"])], str(tmp_path / "w" / "s-%02d.tar"))
    cases = [
        (manifest, {}, "manifest", ["r"]),
        (tmp_path / "folder", {}, "imagefolder", ["cat/a.png"]),
        (coco, {"image_root": image_root}, "coco_captions", ["1", "2"]),
        (karpathy, {"image_root": kroot, "split": "test"}, "karpathy", ["42"]),
        (qpath, {"image_dir": vqa_images}, "vqa", ["42", "43"]),
        (qpath, {"image_root": vqa_images, "per": "question"}, "vqa", ["420", "430", "421"]),
        (shards[0], {}, "webdataset", ["w"]),
        (tmp_path / "w", {}, "webdataset", ["w"]),
        (str(tmp_path / "w" / "s-{00..00}.tar"), {}, "webdataset", ["w"]),
    ]
    for path, kw, fmt, ids in cases:
        assert detect_format(path) == fmt
        assert [s.id for s in open_dataset(path, **kw)] == ids, path
    # ShapesWorld's layout (split manifests + images/) is not a one-class ImageFolder.
    write_image(tmp_path / "other" / "images" / "0.png")
    write_jsonl(tmp_path / "other" / "train.jsonl", [])
    with pytest.raises(ValueError, match="train.jsonl"):
        detect_format(tmp_path / "other")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither"):
        detect_format(tmp_path / "empty")


def test_paths_are_not_left_relative_to_cwd(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = write_jsonl(dataset / "m.jsonl", [{"image": "images/000001.png"}])
    monkeypatch.chdir(os.sep)
    (sample,) = read_manifest(manifest, strict=True)
    assert Path(sample.image).is_file()


def test_a_row_with_media_under_another_column_name_says_which_to_use(tmp_path: Path) -> None:
    """A manifest whose sounds are in a `clip` column has rows with nothing a reader reads: the error says what the
    column holds and the name to give it (an index build of such a table skipped every row as 'nothing to learn')."""
    table = tmp_path / "voices.csv"
    table.write_text("id,clip,speaker_note\na,x/one.wav,calm\nb,,\n")
    with pytest.raises(BadSampleError, match=r"row 2: no image.*'clip' holds audio files: name it 'audio'"):
        list(read_manifest(table, strict=True))
    log = BadSampleLog()
    assert list(read_manifest(table, bad_log=log)) == []
    assert str(log.examples[1]).endswith(
        "row 3: no image, text, audio, video, label, qa or statements (no cell filled in but its id)"
    )
