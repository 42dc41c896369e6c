"""The examples run as written: examples/own_training_loop.py trains, scores, saves and reloads a model of its own
loop (a few steps on a small ShapesWorld), and what it saved works with polymodal.load and run_eval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_own_training_loop_saves_a_model_polymodal_loads(tmp_path: Path) -> None:
    command = [sys.executable, str(EXAMPLES / "own_training_loop.py"), "--out", str(tmp_path), "--n", "120"]
    result = subprocess.run([*command, "--steps", "4"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 4: loss" in result.stdout and "test retrieval: {'t2i_R@1'" in result.stdout
    assert "polymodal eval, t2i R@1:" in result.stdout
    saved = json.loads((tmp_path / "model" / "config.json").read_text())["config"]
    assert saved["kind"] == "embedding" and saved["logit_scales"]["image-text"] > 1  # the loss's temperature
    assert {p.name for p in (tmp_path / "model").iterdir()} >= {"model.safetensors", "processors.json", "tokenizer"}
