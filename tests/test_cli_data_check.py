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
