from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field, model_validator

from polymodal.config import Config, ConfigError, apply_overrides, load_config


class Optim(Config):
    lr: float = Field(1e-3, gt=0)
    schedule: Literal["cosine", "constant"] = "cosine"


class Recipe(Config):
    name: str
    steps: int = Field(100, ge=1)
    optim: Optim = Optim()


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    return p


def test_valid_recipe_with_overrides(tmp_path: Path) -> None:
    p = write(tmp_path, "name: demo\noptim:\n  lr: 0.01\n")
    cfg = load_config(Recipe, p, ["steps=7", "optim.schedule=constant"])
    assert cfg.name == "demo" and cfg.steps == 7
    assert cfg.optim.lr == 0.01 and cfg.optim.schedule == "constant"


def test_unknown_key_names_file_path_and_known_keys(tmp_path: Path) -> None:
    p = write(tmp_path, "name: demo\noptim:\n  lrr: 0.01\n")
    with pytest.raises(ConfigError) as e:
        load_config(Recipe, p)
    msg = str(e.value)
    assert str(p) in msg and "optim.lrr" in msg and "unknown key" in msg
    assert "lr" in msg.split("known keys:")[1] and "schedule" in msg


def test_bad_literal_lists_allowed_values(tmp_path: Path) -> None:
    p = write(tmp_path, "name: demo\noptim:\n  schedule: linear\n")
    with pytest.raises(ConfigError) as e:
        load_config(Recipe, p)
    msg = str(e.value)
    assert "optim.schedule" in msg and "'linear'" in msg and "cosine" in msg and "constant" in msg


def test_bound_and_type_errors_all_reported(tmp_path: Path) -> None:
    p = write(tmp_path, "steps: 0\noptim:\n  lr: abc\n")
    with pytest.raises(ConfigError) as e:
        load_config(Recipe, p)
    msg = str(e.value)
    assert "name: Field required" in msg
    assert "steps" in msg and ">= 1" in msg
    assert "optim.lr" in msg and "'abc'" in msg


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    p = write(tmp_path, "name: demo\nsteps: [1, 2\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml, line \d+, column \d+: invalid YAML"):
        load_config(Recipe, p)


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(Recipe, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Recipe, write(tmp_path, "- a\n- b\n"))


def test_overrides_parse_yaml_scalars_and_reject_bad_syntax() -> None:
    out = apply_overrides({"a": {"b": 1}}, ["a.b=2.5", "a.c=[x, y]", "d.e=true", "f=null"])
    assert out == {"a": {"b": 2.5, "c": ["x", "y"]}, "d": {"e": True}, "f": None}
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


class Schedule(Config):
    steps: int = Field(10, ge=1)
    warmup: int = 0

    @model_validator(mode="after")
    def _fits(self) -> "Schedule":
        if self.warmup > self.steps:
            raise ValueError(f"warmup ({self.warmup}) exceeds steps ({self.steps})")
        return self


class Run(Config):
    name: str = "demo"
    schedule: Schedule = Schedule()

    @model_validator(mode="after")
    def _named(self) -> "Run":
        if self.name == "reserved":
            raise ValueError("name 'reserved' is taken")
        return self


def test_an_error_from_an_override_names_the_override_not_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, "name: demo\n")
    with pytest.raises(ConfigError) as e:
        load_config(Run, p, ["schedule.stepz=5"])
    header, line = str(e.value).splitlines()
    assert header.startswith(f"--set on {p}:")
    assert line.startswith("  schedule.stepz (from --set schedule.stepz=5): unknown key; known keys: steps, warmup")
    # An error in the file itself still names the file alone.
    with pytest.raises(ConfigError) as e:
        load_config(Run, write(tmp_path, "schedule: {stepz: 5}\n"), ["name=other"])
    assert str(e.value).startswith(f"{tmp_path / 'recipe.yaml'}: invalid Run") and "--set" not in str(e.value)
    # An error about the whole config names the override its message is about.
    with pytest.raises(ConfigError) as e:
        load_config(Run, write(tmp_path, "name: demo\n"), ["name=reserved", "schedule.steps=3"])
    assert str(e.value).splitlines()[1] == "  <root> (from --set name=reserved): name 'reserved' is taken"


def test_a_section_validators_error_says_its_sentence_without_dumping_the_section(tmp_path: Path) -> None:
    p = write(tmp_path, "schedule: {steps: 100, warmup: 10}\n")
    with pytest.raises(ConfigError) as e:
        load_config(Run, p, ["schedule.steps=5"])
    line = str(e.value).splitlines()[1]
    assert line == "  schedule (from --set schedule.steps=5): warmup (10) exceeds steps (5)"
