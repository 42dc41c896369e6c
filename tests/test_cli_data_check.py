"""``polymodal data check``'s table says when it shows only some of the bad samples."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from polymodal.cli.main import app


def test_the_table_says_how_many_bad_samples_it_left_out(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "image": f"gone{i}.png"}) + "\n" for i in range(7)))
    result = CliRunner().invoke(app, ["data", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("bad: ") == 5 and "... and 2 more (--bad-samples FILE lists them all)" in result.stdout
    listed = tmp_path / "bad.jsonl"
    result = CliRunner().invoke(app, ["data", "check", str(path), "--bad-samples", str(listed)])
    assert "more (--bad-samples" not in result.stdout and len(listed.read_text().splitlines()) == 7


def test_a_plain_folder_of_media_is_checked_as_the_index_reads_it(tmp_path: Path) -> None:
    """Photos, a recording and clips straight in a folder (and below it), with a labels.csv beside them: `data check`
    decodes each file as `index build` would take it, and names the bad ones."""
    import numpy as np
    import soundfile as sf
    from PIL import Image

    from polymodal.data.readers import detect_format, open_dataset
    from polymodal.index.sources import iter_items

    folder = tmp_path / "media"
    (folder / "trip").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(folder / "a.png")
    Image.new("RGB", (8, 8), "blue").save(folder / "trip" / "b.jpg")
    sf.write(folder / "trip" / "c.wav", np.zeros(800, np.float32), 8000)
    (folder / "broken.png").write_bytes(b"not a picture")
    (folder / ".hidden.png").write_bytes(b"skipped")
    (folder / "labels.csv").write_text("path,label\na.png,red\n")  # a manifest beside the photos reads as a file
    (folder / "link.png").symlink_to(folder / "a.png")  # an item of its own, under its own name
    assert detect_format(folder) == "mediafolder"
    samples = list(open_dataset(folder))
    assert [s.id for s in samples] == ["a.png", "broken.png", "link.png", "trip/b.jpg", "trip/c.wav"]
    assert samples[2].image == str(folder.resolve() / "link.png") and samples[4].audio is not None
    assert [i.item.metadata["id"] for i in iter_items(folder)] == [s.id for s in samples]
    result = CliRunner().invoke(app, ["data", "check", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["format"] == "mediafolder" and report["samples"] == 4 and report["bad"] == 1
    assert report["modalities"]["image"] == 3 and report["modalities"]["audio"] == 1
    (bad,) = report["bad_examples"]
    assert bad["field"] == "image" and "broken.png" in bad["reason"]
