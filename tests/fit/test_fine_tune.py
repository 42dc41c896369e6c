"""``--fine-tune``: the towers under the searched network train end to end through the ordinary trainer, and a
predictor with tuned towers saves, loads and predicts exactly as it did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from polymodal.cli.main import app
from polymodal.data.errors import BadSampleLog
from polymodal.fit import TablePredictor, rows_table
from polymodal.fit.finetune import fine_tune
from polymodal.fit.network import Candidate
from polymodal.fit.search import encode_targets

FAST = (Candidate("concat", {"hidden_dim": 32}, 32),)


def _rows(n: int) -> list[dict]:
    adjectives = ["wonderful", "dreadful", "lovely", "awful", "great", "terrible"]
    return [
        {
            "review": f"a {adjectives[i % 6]} day number {i}",
            "stars": float(i % 5),
            "label": "good" if i % 2 == 0 else "bad",
        }
        for i in range(n)
    ]


def test_fine_tune_trains_the_towers_within_its_time(tmp_path: Path) -> None:
    rows = _rows(64)
    predictor = TablePredictor.fit(rows_table(rows, tmp_path), "label", time_limit=20, candidates=FAST)
    train, val = rows_table(rows[:48], tmp_path), rows_table(rows[48:], tmp_path)
    problem = predictor.problem
    text = next(f for f in predictor.featurizers if f.name == "review")
    before = [p.clone() for p in text.packaged_tower().parameters()]
    result = fine_tune(
        predictor.featurizers,
        predictor.network,
        problem,
        (train, encode_targets(problem, train.values("label"))),
        (val, encode_targets(problem, val.values("label"))),
        seconds=60,
        run_dir=tmp_path / "run",
        bad_log=BadSampleLog(),
        max_epochs=2,
        progress=False,
    )
    assert result is not None and result.steps == 4  # 2 epochs of 48 rows in batches of 32
    assert result.metrics["score_name"] == "accuracy" and 0 <= result.metrics["accuracy"] <= 1
    tuned = dict(result.model.towers["review"].named_parameters())
    changed = [name for (name, p), old in zip(tuned.items(), before) if not torch.equal(p.detach(), old)]
    assert changed and all(p.requires_grad for p in tuned.values())
    assert all(torch.equal(p, old) for p, old in zip(text.packaged_tower().parameters(), before))  # a copy trained


def test_a_predictor_with_tuned_towers_round_trips(tmp_path: Path) -> None:
    rows = _rows(40)
    predictor = TablePredictor.fit(rows_table(rows, tmp_path), "label", time_limit=20, candidates=FAST)
    text = next(f for f in predictor.featurizers if f.name == "review")
    tower = text.trainable_tower()
    with torch.no_grad():
        next(tower.parameters()).mul_(1.01)  # tuned weights differ from the packaged ones
    text.tower = tower.requires_grad_(False).eval()
    predictor.summary["fine_tuned"] = True
    expected = predictor.predict(rows).values
    predictor.save(tmp_path / "model")
    assert (tmp_path / "model" / "towers.safetensors").is_file()
    again = TablePredictor.load(tmp_path / "model")
    np.testing.assert_allclose(again.predict(rows).values, expected, atol=1e-6)
    untuned = TablePredictor.load(tmp_path / "model")
    next(f for f in untuned.featurizers if f.name == "review").tower = None
    assert not np.allclose(untuned.predict(rows).values, expected, atol=1e-6)


@pytest.mark.slow
def test_fit_command_fine_tunes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path / "cache"))
    table = tmp_path / "t.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in _rows(80)))
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app, ["fit", str(table), "--label", "label", "--out", str(out), "--time-limit", "90", "--fine-tune"]
    )
    assert result.exit_code == 0, result.output
    fitted = json.loads((out / "fit.json").read_text())
    assert fitted["fine_tune"]["steps"] >= 1 and "accuracy" in fitted["fine_tune"]["metrics"]
    assert (out / "towers.safetensors").is_file() == fitted["fine_tuned"]
    assert (out / "fine_tune.log").is_file()
