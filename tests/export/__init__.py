from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from polymodal.cli.main import app


def export_with_cli(model_dir: Path, out: Path) -> list[str]:
    """``polymodal export MODEL --out OUT --json``: the fp32 graphs and export.json it reports, all the files it
    reports (with the int8 variants and the sample) checked to be what OUT holds besides the tokenizer."""
    result = CliRunner().invoke(app, ["export", str(model_dir), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*files, "tokenizer"])
    return [f for f in files if ".int8" not in f and f not in ("sample.npz", "check.npz")]
