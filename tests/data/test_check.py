"""check_dataset and ``polymodal data check`` on a manifest with good and bad samples."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from polymodal.cli.data_check import check
from polymodal.data.check import check_dataset
from polymodal.data.errors import BadSampleError
from polymodal.data.readers import write_shards
from polymodal.data.schema import Sample


def png(size: tuple[int, int] = (4, 4)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """Rows: 1 good image+text, 2 good text+label, 3 text file named .jpg, 4 truncated png,
    5 invalid JSON, 6 good image+qa+audio, 7 missing audio, 8 path escape, 9 duplicate id."""
    (tmp_path / "ok.png").write_bytes(png())
    (tmp_path / "fake.jpg").write_text("hello, I am text")
    (tmp_path / "cut.png").write_bytes(png((64, 64))[:60])
    wav = io.BytesIO()
    with wave.open(wav, "wb") as w:  # a real (silent) clip: data check decodes audio
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    (tmp_path / "a.wav").write_bytes(wav.getvalue())
    rows = [
        {"id": "a", "image": "ok.png", "text": "x"},
        {"id": "b", "text": ["y", "z"], "label": 1},
        {"id": "c", "image": "fake.jpg"},
        {"id": "d", "image": "cut.png"},
        '{"id": "e", ',
        {"id": "f", "image": "ok.png", "qa": [{"question": "q?", "answer": "a"}], "audio": "a.wav"},
        {"id": "g", "audio": "gone.wav"},
        {"id": "h", "image": "../../etc/passwd"},
        {"id": "a", "text": "dup"},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_lenient_report_counts(manifest: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "out" / "bad_samples.jsonl"
    log_path.parent.mkdir()
    log_path.write_text("stale line from an earlier run\n")
    report = check_dataset(manifest, progress=False, bad_samples=log_path)
    assert (report.format, report.samples, report.bad, report.total) == ("manifest", 4, 5, 9)
    assert report.modalities == {"image": 2, "text": 3, "audio": 1, "video": 0, "label": 1, "qa": 1, "statements": 0}
    assert report.bad_by_kind == {"not_an_image": 1, "truncated": 1, "bad_json": 1, "missing_file": 1, "unsafe_path": 1}
    assert report.duplicate_ids == 1
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert sorted(e["row"] for e in lines) == [3, 4, 5, 7, 8]  # the stale line is gone
    assert all(e["source"] == str(manifest) for e in lines)
    assert {e["row"]: e["field"] for e in lines}[7] == "audio"
    assert report.to_dict()["bad_samples_path"] == str(log_path)


def test_strict_raises_first_error_with_file_row_field(manifest: Path) -> None:
    with pytest.raises(BadSampleError) as info:
        check_dataset(manifest, strict=True, progress=False)
    assert (info.value.source, info.value.row, info.value.field, info.value.kind) == (
        str(manifest),
        3,
        "image",
        "not_an_image",
    )


def test_max_pixels_and_shards(tmp_path: Path) -> None:
    shards = write_shards(
        [Sample(id="small", image=png((4, 4))), Sample(id="big", image=png((40, 40)))], str(tmp_path / "s-%d.tar")
    )
    report = check_dataset(shards[0], max_pixels=100, progress=False)
    assert (report.format, report.samples, report.bad_by_kind) == ("webdataset", 1, {"too_large": 1})
    assert report.bad_examples[0]["source"] == shards[0] and report.bad_examples[0]["row"] == 2


def test_progress_bar_does_not_change_the_report(manifest: Path) -> None:
    quiet = check_dataset(manifest, progress=False).to_dict()
    assert check_dataset(manifest, progress=True).to_dict() == quiet


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(check)
    app.command("unused")(lambda: None)  # two commands: typer keeps "check" as a sub-command name
    return app


def test_cli_lenient_json(cli: typer.Typer, manifest: Path, tmp_path: Path) -> None:
    log = tmp_path / "bad.jsonl"
    result = CliRunner().invoke(cli, ["check", str(manifest), "--json", "--bad-samples", str(log)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["samples"], report["bad"], report["total"]) == (4, 5, 9)
    assert len(log.read_text().splitlines()) == 5


def test_cli_lenient_table(cli: typer.Typer, manifest: Path) -> None:
    result = CliRunner().invoke(cli, ["check", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "good samples" in result.stdout and "not_an_image" in result.stdout
    assert f"{manifest}, row 3, field 'image'" in result.stdout.replace("\n", "")


def test_cli_strict_fails_naming_file_row_field(cli: typer.Typer, manifest: Path) -> None:
    result = CliRunner().invoke(cli, ["check", str(manifest), "--strict"])
    assert result.exit_code != 0
    assert "row 3" in result.output and "'image'" in result.output and "data.jsonl" in result.output
    result = CliRunner().invoke(cli, ["check", str(manifest), "--strict", "--json"])
    assert result.exit_code != 0 and "row 3" in json.loads(result.stdout)["error"]


def test_cli_unknown_format_and_missing_path(cli: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"1")
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "x.bin")])
    assert result.exit_code == 1 and "cannot tell the dataset format" in result.output
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 1 and "no such file" in result.output


def test_cli_image_root_for_json_formats(cli: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.png").write_bytes(png())
    coco = tmp_path / "annotations" / "captions.json"
    coco.parent.mkdir()
    coco.write_text(
        json.dumps({"images": [{"id": 1, "file_name": "1.png"}], "annotations": [{"image_id": 1, "caption": "c"}]})
    )
    without = json.loads(CliRunner().invoke(cli, ["check", str(coco), "--json"]).stdout)
    assert (without["samples"], without["bad_by_kind"]) == (0, {"missing_file": 1})  # default: the JSON's folder
    result = CliRunner().invoke(cli, ["check", str(coco), "--json", "--image-root", str(tmp_path / "images")])
    report = json.loads(result.stdout)
    assert (report["format"], report["samples"], report["modalities"]["text"]) == ("coco_captions", 1, 1)


def test_a_sound_is_checked_at_a_fixed_low_rate_so_its_own_rate_does_not_set_the_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 384 kHz file decoded at its own rate held 24x what it does at 16 kHz (2.2 GB for a 1 MB FLAC bomb); that
    the whole file decodes shows at any rate."""
    import polymodal.data.check as check_module
    from polymodal.data.audio import CHECK_RATE

    with wave.open(str(tmp_path / "a.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(384_000)
        w.writeframes(b"\x00\x01" * 3840)
    (tmp_path / "m.jsonl").write_text('{"id": "a", "audio": "a.wav", "text": "a tone"}\n')
    rates: list[int | None] = []
    real = check_module.decode_audio

    def spy(ref, sample_rate, **kwargs):  # noqa: ANN001, ANN003, ANN202
        rates.append(sample_rate)
        return real(ref, sample_rate, **kwargs)

    monkeypatch.setattr(check_module, "decode_audio", spy)
    report = check_dataset(tmp_path / "m.jsonl", progress=False)
    assert rates == [CHECK_RATE] and report.bad == 0
