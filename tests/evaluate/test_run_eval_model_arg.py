"""run_eval takes what names a model on disk (or a model name), and says so when given an in-memory module."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from polymodal.evaluate.runner import run_eval


def test_an_in_memory_module_is_refused_with_how_to_evaluate_it() -> None:
    with pytest.raises(TypeError) as refused:
        run_eval(nn.Linear(2, 2), "shapes-zeroshot")  # type: ignore[arg-type]
    message = str(refused.value)
    assert message.startswith("run_eval takes a model directory, run directory, Hugging Face id or model name, got a")
    assert "got a Linear object;" in message and "polymodal.models.save_model(dir, model, processors)" in message
    assert "\n" not in message  # not str(module) taken as a file name


def test_a_path_object_is_still_a_model_location(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no model here"):
        run_eval(tmp_path / "empty", "shapes-zeroshot")
