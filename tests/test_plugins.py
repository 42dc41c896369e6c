"""Plugins: modules named by POLYMODAL_PLUGINS or declared as ``polymodal.plugins`` entry points are imported before a
command runs, so what they register (here a fusion module) can be named by recipes and listed by the CLI; a plugin
that fails to import is an error naming it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from polymodal import plugins
from polymodal.cli.main import app
from polymodal.modules.fusion import FUSIONS

PLUGIN = '''
from polymodal.modules.fusion import FUSIONS
from polymodal.modules.fusion.concat import ConcatFusion


@FUSIONS.register("{name}")
class MaxFusion(ConcatFusion):
    """A plugin's fusion module."""
'''


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # noqa: ANN201
    """Plugins loaded anew, a plugin module directory on sys.path, no installed entry points, and what the test
    registered removed afterwards."""
    plugins.load_plugins.cache_clear()
    monkeypatch.setattr(plugins, "_entry_points", lambda: [])
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(FUSIONS.names())
    yield tmp_path
    plugins.load_plugins.cache_clear()
    for name in set(FUSIONS.names()) - before:
        FUSIONS.unregister(name)
    for module in [m for m in sys.modules if m.startswith("plugin_")]:
        del sys.modules[module]


def test_a_module_named_in_the_environment_registers_before_the_command_runs(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (fresh / "plugin_env.py").write_text(PLUGIN.format(name="plugin_max"))
    monkeypatch.setenv(plugins.PLUGINS_ENV, "plugin_env")
    result = CliRunner().invoke(app, ["models", "fusion", "--json"])
    assert result.exit_code == 0, result.output
    assert "plugin_max" in {row["name"] for row in json.loads(result.stdout)["fusion"]}


def test_an_installed_entry_point_is_imported(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (fresh / "plugin_installed.py").write_text(PLUGIN.format(name="plugin_installed_max"))
    point = SimpleNamespace(name="depth", value="plugin_installed", dist=SimpleNamespace(name="my-depth"))
    monkeypatch.setattr(plugins, "_entry_points", lambda: [point])
    assert plugins.load_plugins() == ("plugin_installed",)
    assert "plugin_installed_max" in FUSIONS


def test_a_plugin_that_fails_to_import_is_named_with_its_error(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (fresh / "plugin_broken.py").write_text("import numpy\nraise RuntimeError('no GPU driver here')\n")
    monkeypatch.setenv(plugins.PLUGINS_ENV, "plugin_broken, plugin_missing")
    result = CliRunner().invoke(app, ["models", "fusion"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "plugin plugin_broken (POLYMODAL_PLUGINS) failed to import: RuntimeError: no GPU driver here" in message
    assert "plugin_broken.py, line 2" in message


def test_settings_a_plugins_processor_refuses_are_a_config_error_naming_where_they_were_given(tmp_path: Path) -> None:
    from polymodal.config import ConfigError
    from polymodal.data.processors import PROCESSORS, Processor, processor_from_settings

    class DepthProcessor(Processor):
        modality = "plugin_depth"

        @classmethod
        def from_settings(cls, settings: dict, directory: Path) -> Processor:
            return cls(int(settings["size"]), float(settings["max_depth"]))  # type: ignore[call-arg]

    PROCESSORS.register("plugin_depth")(DepthProcessor)
    try:
        with pytest.raises(ConfigError) as refused:
            processor_from_settings("plugin_depth", {"size": 16}, tmp_path, "data.processors.plugin_depth")
    finally:
        PROCESSORS.unregister("plugin_depth")
    assert str(refused.value) == (
        "data.processors.plugin_depth: DepthProcessor refused the settings {'size': 16}: KeyError: 'max_depth'"
    )
