"""fsutil: what atomic writes leave has the modes a plain write gives; JSON read back names what is wrong."""

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from polymodal.fsutil import UnreadableFileError, atomic_directory, atomic_file, read_json, write_atomic


@pytest.fixture
def umask() -> Iterator[int]:
    """A umask other than the usual 022, restored afterwards."""
    before = os.umask(0o027)
    yield 0o027
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_atomic_directory_has_the_modes_a_plain_mkdir_and_open_give(tmp_path: Path, umask: int) -> None:
    with atomic_directory(tmp_path / "model") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))  # safetensors writes 0600
        (tmp / "config.json").write_text("{}")
        (tmp / "tokenizer").mkdir()
        save_file({"w": torch.zeros(2)}, str(tmp / "tokenizer" / "deep.safetensors"))
    out = tmp_path / "model"
    assert mode(out) == mode(out / "tokenizer") == 0o777 & ~umask  # not mkdtemp's 0700
    for name in ("model.safetensors", "config.json", "tokenizer/deep.safetensors"):
        assert mode(out / name) == 0o666 & ~umask, name


def test_an_atomic_file_is_new_with_the_plain_mode_and_keeps_the_mode_of_the_file_it_replaces(
    tmp_path: Path, umask: int
) -> None:
    target = tmp_path / "weights.safetensors"
    with atomic_file(target) as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))
    assert mode(target) == 0o666 & ~umask
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    secret.chmod(0o600)
    write_atomic(secret, '{"a": 1}')
    assert mode(secret) == 0o600 and read_json(secret) == {"a": 1}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b'{\n  "a": [1,\n  2', "truncated (its JSON breaks off in line 3)"),
        (b'{\n  "name": "polym', "truncated (its JSON breaks off in line 2)"),
        (b"{oops}", "not valid JSON (line 1, column 2: Expecting property name"),
        (b'{"a": "\xff"}', "not UTF-8 text"),
    ],
)
def test_read_json_names_the_file_and_what_is_wrong(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "meta.json"
    path.write_bytes(content)
    with pytest.raises(UnreadableFileError) as error:
        read_json(path)
    assert str(error.value).startswith(f"{path}: {problem}")
    assert error.value.path == path and isinstance(error.value, ValueError)
