"""Property tests: garbage never crashes lenient reading, good rows always survive, counts add
up, strict and lenient agree, paths never escape the root, shards round-trip."""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers import expand_shards, read_manifest, read_shards, write_shards
from polymodal.data.readers.base import PathResolver
from polymodal.data.readers.manifest import csv_records
from polymodal.data.schema import QA, Sample, Statement

SETTINGS = settings(
    max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
fields = st.sampled_from(["id", "image", "text", "captions", "label", "qa", "statements", "audio", "metadata", "other"])

# Lines that may or may not be valid rows: raw bytes, any JSON, objects with random field types.
garbage_lines = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(fields, json_values, max_size=4).map(lambda d: json.dumps(d).encode()),
    st.just(b'{"label": NaN}'),
    st.just(b'{"image": "../../etc/passwd"}'),
    st.just(b'{"image": "missing.png"}'),
)


@st.composite
def good_rows(draw: st.DrawFn, index: int) -> dict:
    row = {"id": f"good-{index}", "text": draw(st.lists(st.text(max_size=10), min_size=1, max_size=3))}
    if draw(st.booleans()):
        row["image"] = "img.png"
    if draw(st.booleans()):
        row["label"] = draw(st.integers() | st.text(max_size=5))
    if draw(st.booleans()):
        row["qa"] = [{"question": "q?", "answer": draw(st.text(max_size=5))}]
    return row


@st.composite
def manifests(draw: st.DrawFn) -> list[tuple[bool, bytes]]:
    """(is_good, line) pairs."""
    kinds = draw(st.lists(st.booleans(), max_size=12))
    return [
        (True, json.dumps(draw(good_rows(i))).encode()) if good else (False, draw(garbage_lines))
        for i, good in enumerate(kinds)
    ]


def _write(root: Path, lines: list[tuple[bool, bytes]]) -> Path:
    (root / "img.png").write_bytes(b"not decoded by readers")
    path = root / "m.jsonl"
    path.write_bytes(b"".join(line + b"\n" for _, line in lines) or b"\n")
    return path


@SETTINGS
@given(lines=manifests())
def test_garbage_never_crashes_and_good_rows_survive(lines: list[tuple[bool, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), lines)
        log = BadSampleLog(Path(tmp) / "bad.jsonl")
        samples = list(read_manifest(path, bad_log=log))

        by_row = {s.row: s for s in samples}
        for row, (good, line) in enumerate(lines, start=1):
            if good:
                assert by_row[row].id == json.loads(line)["id"]
        counted = sum(1 for _, line in lines if line.strip())  # blank lines are not rows
        assert len(samples) + log.total == counted
        logged = (Path(tmp) / "bad.jsonl").read_text().splitlines() if log.total else []  # escaped: whole lines
        assert len(logged) == log.total
        assert {json.loads(e)["row"] for e in logged}.isdisjoint(by_row)

        # Strict mode fails exactly when lenient mode logged something, at the first such row.
        try:
            strict = list(read_manifest(path, strict=True))
        except BadSampleError as e:
            assert log.total > 0 and e.row == log.examples[0].row and e.source == str(path)
        else:
            assert log.total == 0 and [s.id for s in strict] == [s.id for s in samples]


# CSV cells as users write them: commas, quotes and line breaks, quoted by csv.writer; never a leading [ or {
# (a JSON cell).
csv_cells = st.text(alphabet=st.sampled_from(list('ab ,"\n\ré')), max_size=10)


def _csv_line(cells: list[str]) -> str:
    text = io.StringIO(newline="")
    csv.writer(text).writerow(cells)
    return text.getvalue()


def _write_csv(path: Path, rows: list[str]) -> list[int]:
    """Writes the header ``id,caption,note`` and ``rows`` (each as written, newline included); the line each row
    starts on."""
    starts, line = [], 2
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(_csv_line(["id", "caption", "note"]))
        for row in rows:
            f.write(row)
            starts.append(line)
            line += len(row.splitlines())
    return starts


@SETTINGS
@given(cells=st.lists(st.tuples(csv_cells, csv_cells), max_size=8))
def test_csv_from_csv_writer_reads_back_cell_for_cell(cells: list[tuple[str, str]]) -> None:
    """Well-formed CSV (quoted commas, doubled quotes, cells over several lines) reads back whole, each row at the
    line it starts on."""
    rows = [[f"r{i}", caption, note] for i, (caption, note) in enumerate(cells)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.csv"
        starts = _write_csv(path, [_csv_line(row) for row in rows])
        expected = [{k: v for k, v in zip(("id", "caption", "note"), row) if v} for row in rows]
        assert list(csv_records(path)) == list(zip(starts, expected))


@SETTINGS
@given(
    captions=st.lists(csv_cells.map(lambda t: "a" + t), min_size=1, max_size=8),
    stray=st.text(alphabet=st.sampled_from(list("ab ,")), max_size=10),
    stray_at=st.integers(0, 8),
)
def test_csv_stray_quote_costs_only_its_line(captions: list[str], stray: str, stray_at: int) -> None:
    """A line that opens a quote and never closes it is one bad row; every other row survives. Cells start with a
    letter so that every quote after the stray one is followed by text, and the stray quote cannot close cleanly
    (a cell starting with a comma would close it, which no reader can tell from a cell over several lines)."""
    rows = [[f"r{i}", caption, "n"] for i, caption in enumerate(captions)]
    lines = [_csv_line(row) for row in rows]
    stray_at = min(stray_at, len(lines))
    lines.insert(stray_at, f'"{stray}\r\n')
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.csv"
        stray_line = _write_csv(path, lines)[stray_at]
        records = list(csv_records(path))
        good = [record for _, record in records if not isinstance(record, BadSampleError)]
        bad = [(row, record.kind) for row, record in records if isinstance(record, BadSampleError)]
        assert [(r["id"], r["caption"]) for r in good] == [(row[0], row[1]) for row in rows]
        assert bad == [(stray_line, "bad_csv")]


segments = st.lists(st.sampled_from(["..", ".", "a", "b", "img.png", "/", "link"]), min_size=1, max_size=6)


@SETTINGS
@given(parts=segments)
def test_resolved_paths_never_escape_root(parts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "a").mkdir(parents=True)
        (root / "a" / "link").symlink_to(Path(tmp))  # a directory link out of the root
        value = "/".join(parts)
        try:
            resolved = PathResolver(root, "m.jsonl", check_exists=False).resolve(value, "image", 1)
        except BadSampleError as e:
            assert e.kind in ("unsafe_path", "invalid") and e.field == "image"
        else:
            assert Path(resolved).is_relative_to(root.resolve())


captions = st.text(max_size=12)
labels = st.none() | st.integers() | st.text(max_size=6) | st.lists(st.integers(), max_size=3)
qas = st.builds(
    QA,
    question=st.text(min_size=1, max_size=8),
    answers=st.lists(st.text(max_size=4), max_size=3),
    type=st.none() | st.text(max_size=4),
    question_id=st.none() | st.integers(),
)
samples_strategy = st.builds(
    Sample,
    id=st.text(min_size=1, max_size=12),
    image=st.none() | st.binary(max_size=64),
    text=st.lists(captions, min_size=1, max_size=3),  # a sample with no content is read as bad
    label=labels,
    qa=st.lists(qas, max_size=2),
    statements=st.lists(st.builds(Statement, text=st.text(min_size=1, max_size=6), label=st.booleans()), max_size=2),
    metadata=st.dictionaries(st.text(max_size=5), json_values, max_size=3),
)


@SETTINGS
@given(samples=st.lists(samples_strategy, max_size=8), max_count=st.integers(1, 4))
def test_write_shards_then_read_round_trips(samples: list[Sample], max_count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_shards(samples, str(Path(tmp) / "s-%04d.tar"), max_count=max_count)
        assert len(paths) == math.ceil(len(samples) / max_count)
        back = list(read_shards(paths, strict=True))
        assert len(back) == len(samples)
        for got, want in zip(back, samples):
            assert (got.id, got.image, got.text, got.label, got.qa, got.statements, got.metadata) == (
                want.id,
                want.image,
                want.text,
                want.label,
                want.qa,
                want.statements,
                want.metadata,
            )
        assert sorted(p.name for p in Path(tmp).iterdir()) == sorted(Path(p).name for p in paths)


@SETTINGS
@given(lo=st.integers(0, 50), span=st.integers(0, 20), width=st.integers(1, 6))
def test_brace_ranges_expand_with_padding(lo: int, span: int, width: int) -> None:
    hi = lo + span
    pattern = f"d/shard-{{{str(lo).zfill(width)}..{str(hi).zfill(width)}}}.tar"
    padded = width > len(str(lo))  # a leading zero in the range start asks for fixed width
    expected = [f"d/shard-{str(i).zfill(width) if padded else i}.tar" for i in range(lo, hi + 1)]
    assert expand_shards(pattern) == expected
