"""A damaged saved-model directory is reported naming the file and what is wrong, as an error the CLI reports in
one line, and loading it never executes code."""

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from polymodal.backends import load_backend
from polymodal.fsutil import PICKLED_OBJECTS
from polymodal.models import SavedModel


class Evil:
    def __reduce__(self) -> tuple:
        return os.system, ('touch "$POLYMODAL_TEST_PWNED"',)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


TAMPER: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "weights truncated": (lambda d: truncate(d / "model.safetensors"), "model.safetensors", "truncated ("),
    "weights cut to 4 bytes": (
        lambda d: (d / "model.safetensors").write_bytes(b"\x08\x0f\x00\x00"),
        "model.safetensors",
        "truncated (4 bytes",
    ),
    "weights a torch.save pickle": (
        lambda d: torch.save({"w": Evil()}, d / "model.safetensors"),
        "model.safetensors",
        f"not a safetensors file: {PICKLED_OBJECTS}",
    ),
    "processors.json garbage": (lambda d: (d / "processors.json").write_text("{not json"), "processors.json", "not"),
    "tokenizer.json truncated": (
        lambda d: truncate(d / "tokenizer" / "tokenizer.json"),
        "tokenizer/tokenizer.json",
        "truncated (its JSON breaks off in line",
    ),
    "config.json truncated": (lambda d: truncate(d / "config.json"), "config.json", "truncated"),
}


@pytest.mark.parametrize("case", list(TAMPER))
@pytest.mark.parametrize("load", [SavedModel.load, load_backend], ids=["SavedModel.load", "load_backend"])
def test_a_damaged_model_directory_names_the_file_and_what_is_wrong(
    case: str, load: Callable, tiny_dual_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = tmp_path / "PWNED"
    monkeypatch.setenv("POLYMODAL_TEST_PWNED", str(mark))
    directory = tmp_path / "model"
    shutil.copytree(tiny_dual_encoder_dir, directory)
    tamper, file, problem = TAMPER[case]
    tamper(directory)
    with pytest.raises(ValueError) as error:  # what load_model_or_fail turns into one line
        load(directory)
    assert str(error.value).startswith(f"{directory / file}: {problem}")
    assert not mark.exists()
