"""What the command line says when a model cannot do the command: a fusion classifier asked to ``classify`` is told
that classify is zero-shot and that it predicts; a model naming a plugin's part says how the CLI imports plugins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from polymodal.backends.base import PREDICT, TASK_HINTS, TaskNotSupported
from polymodal.cli.main import app
from tests.tiny_models import save_tiny_model

runner = CliRunner()
ZERO_SHOT = (
    "classify is zero-shot over the given labels (--labels) and needs an embedding model; this model predicts its own "
    "classes: use `polymodal predict` (or Model.predict)"
)


class _Backend:
    name = "stub"

    def __init__(self, *capabilities: str) -> None:
        self.capabilities = frozenset(capabilities)


def _refused(task: str, *capabilities: str) -> str:
    return str(TaskNotSupported(_Backend(*capabilities), task))  # type: ignore[arg-type]


def test_the_hint_is_added_only_for_its_task_and_capability() -> None:
    assert _refused("classify", PREDICT) == f"model stub cannot classify: it supports predict; {ZERO_SHOT}"
    assert _refused("caption", PREDICT) == "model stub cannot caption: it supports predict"
    assert _refused("classify", "caption") == "model stub cannot classify: it supports caption"
    assert TASK_HINTS["classify", PREDICT] == ZERO_SHOT


@pytest.fixture(scope="module")
def fusion_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model("fusion", tmp_path_factory.mktemp("fusion") / "model")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "red.png"
    Image.new("RGB", (32, 32), (220, 30, 30)).save(path)
    return path


def test_classify_with_a_fusion_classifier_points_to_predict(fusion_dir: Path, image: Path) -> None:
    result = runner.invoke(app, ["classify", str(image), "--labels", "a,b", "--model", str(fusion_dir)])
    assert result.exit_code == 2
    assert f"cannot classify: it supports predict; {ZERO_SHOT}" in " ".join(result.output.split())


def test_a_plugin_part_that_is_not_imported_says_how_the_cli_imports_it(
    fusion_dir: Path, image: Path, tmp_path: Path
) -> None:
    gated = tmp_path / "model"
    gated.mkdir()
    for item in fusion_dir.iterdir():
        (gated / item.name).symlink_to(item)
    (gated / "config.json").unlink()
    document = json.loads((fusion_dir / "config.json").read_text())
    document["config"]["fusion"]["name"] = "gated_sum"
    (gated / "config.json").write_text(json.dumps(document))
    result = runner.invoke(app, ["classify", str(image), "--labels", "a,b", "--model", str(gated)])
    assert result.exit_code != 0
    said = " ".join(result.output.split())
    assert "unknown fusion 'gated_sum' (a plugin's? import the module that registers it before loading; " in said
    assert "CLI: set POLYMODAL_PLUGINS=module)" in said
