"""What a run directory keeps so that ``--resume`` continues the same run: absolute paths in its config.yaml (it
resumes from any working directory) and the hash of the manifests it trains on (a resume on changed data warns)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from polymodal.cli.main import app
from polymodal.data.shapes import generate_shapesworld

runner = CliRunner()
SMALL = ["train.steps=2", "train.batch_size=8", "train.warmup_steps=1", "data.image.image_size=32"]


@pytest.fixture
def stopped_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A shapes-clip run trained with a relative data.path, as if killed after its last checkpoint (no summary):
    resuming it reads the data again."""
    monkeypatch.chdir(tmp_path)
    generate_shapesworld(tmp_path / "shapes", 40, seed=0, image_size=32, progress=False)
    sets = [arg for value in ["data.path=shapes", *SMALL] for arg in ("--set", value)]
    result = runner.invoke(app, ["train", "shapes-clip", *sets, "--out", "runs/clip", "--json"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "clip"
    (run / "train_summary.json").unlink()
    return run


def test_a_run_resumes_from_another_working_directory(
    stopped_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = yaml.safe_load((stopped_run / "config.yaml").read_text())
    assert saved["data"]["path"] == str(tmp_path / "shapes")  # resolved where the run started
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    resumed = runner.invoke(app, ["train", "--resume", str(stopped_run), "--json"])
    assert resumed.exit_code == 0, resumed.output
    # The recipe as typed where the run started is still the same recipe; another data directory is not.
    monkeypatch.chdir(tmp_path)
    (stopped_run / "train_summary.json").unlink()
    again = runner.invoke(
        app,
        [
            "train",
            "shapes-clip",
            *[a for v in ["data.path=shapes", *SMALL] for a in ("--set", v)],
            "--resume",
            str(stopped_run),
            "--json",
        ],
    )
    assert again.exit_code == 0, again.output
    other = runner.invoke(app, ["train", "--resume", str(stopped_run), "--set", "data.path=elsewhere"])
    assert other.exit_code == 2 and "data.path cannot change on resume" in other.output


def test_a_resume_on_changed_manifests_warns_and_keeps_the_fingerprint_it_started_with(stopped_run: Path) -> None:
    started = json.loads((stopped_run / "data.json").read_text())
    assert started["manifests"] == [str(Path("shapes/train.jsonl").resolve()), str(Path("shapes/val.jsonl").resolve())]
    manifest = Path("shapes/train.jsonl")
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join(rows[1:]) + "\n")  # one row fewer
    resumed = runner.invoke(app, ["train", "--resume", str(stopped_run)])
    assert resumed.exit_code == 0, resumed.output
    said = " ".join(resumed.output.split())
    assert f"warning: the training data changed since {stopped_run} started: its splits" in said
    assert f"hash {started['hash'][:12]} in {stopped_run / 'data.json'}" in said
    assert "warning: the training data changed" in (stopped_run / "train.log").read_text()
    assert json.loads((stopped_run / "data.json").read_text()) == started
    (stopped_run / "train_summary.json").unlink()
    manifest.write_text("\n".join(rows) + "\n")  # as it was: nothing to say
    quiet = runner.invoke(app, ["train", "--resume", str(stopped_run)])
    assert quiet.exit_code == 0 and "warning" not in quiet.output
