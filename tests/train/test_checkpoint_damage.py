"""A damaged checkpoint is reported naming its file and what is wrong, never executes code, and a resume goes back
to the newest checkpoint that loads, saying which it skipped."""

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from polymodal.fsutil import PICKLED_OBJECTS, UnreadableFileError
from polymodal.train.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_newest,
    save_checkpoint,
)
from tests.train.test_trainer import MSETask, same_weights, train

MARK_ENV = "POLYMODAL_TEST_PWNED"


class Evil:
    """Unpickling this runs a shell command that creates the file named by $POLYMODAL_TEST_PWNED."""

    def __reduce__(self) -> tuple:
        return os.system, (f'touch "${MARK_ENV}"',)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


TAMPER: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "state truncated": (lambda c: truncate(c / "state.pt"), "state.pt", "truncated or corrupt"),
    "state empty": (lambda c: (c / "state.pt").write_bytes(b""), "state.pt", "empty or truncated"),
    "state pickles code": (
        lambda c: torch.save({"optimizer": Evil(), "scheduler": None, "rng": None}, c / "state.pt"),
        "state.pt",
        f"{PICKLED_OBJECTS} (it names posix.system)",
    ),
    "state missing": (lambda c: (c / "state.pt").unlink(), "state.pt", "missing"),
    "weights truncated": (lambda c: truncate(c / "model.safetensors"), "model.safetensors", "truncated ("),
    "weights pickle code": (
        lambda c: torch.save({"w": Evil()}, c / "model.safetensors"),
        "model.safetensors",
        f"not a safetensors file: {PICKLED_OBJECTS}",
    ),
    "meta garbage": (lambda c: (c / "meta.json").write_text("{oops"), "meta.json", "not valid JSON"),
    "meta not an object": (lambda c: (c / "meta.json").write_text("[]"), "meta.json", "not a checkpoint's meta"),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_a_damaged_checkpoint_names_the_file_and_changes_nothing(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = tmp_path / "PWNED"
    monkeypatch.setenv(MARK_ENV, str(mark))
    tamper, file, problem = TAMPER[case]
    path = save_checkpoint(tmp_path, 7, nn.Linear(4, 4))
    tamper(path)
    model = nn.Linear(4, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnreadableFileError) as error:
        load_checkpoint(path, model)
    assert str(error.value).startswith(f"{path / file}: {problem}")
    assert "weights_only" not in str(error.value)  # torch's advice to load unsafely is not passed on
    assert not mark.exists()  # no code ran
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-restored
    assert [c.step for c in list_checkpoints(tmp_path)] == [7]  # listing never fails on it


def test_checkpoints_have_the_modes_a_plain_write_gives(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path, 1, nn.Linear(4, 4))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in path.iterdir()} == dict.fromkeys(
        ("model.safetensors", "state.pt", "meta.json"), 0o644
    )


def test_restore_newest_sets_aside_what_it_skips_so_pruning_keeps_the_good_ones(tmp_path: Path) -> None:
    model = nn.Linear(4, 4)
    for step in (3, 6, 9):
        save_checkpoint(tmp_path, step, model)
    truncate(tmp_path / "checkpoint-00000009" / "state.pt")
    (tmp_path / "checkpoint-00000006" / "meta.json").write_text("{oops")
    restored: list[Path] = []
    skipped = restore_newest(list_checkpoints(tmp_path), lambda p: restored.append(load_checkpoint(p, model) and p))
    assert restored == [tmp_path / "checkpoint-00000003"]
    assert skipped[0].startswith("checkpoint-00000009 is unreadable: state.pt: truncated or corrupt")
    assert skipped[0].endswith("; set aside as checkpoint-00000009.unreadable")
    assert skipped[1].startswith("checkpoint-00000006 is unreadable: meta.json: not valid JSON")
    assert (tmp_path / "checkpoint-00000009.unreadable" / "state.pt").is_file()
    save_checkpoint(tmp_path, 4, model)
    prune_checkpoints(tmp_path, keep_last=1)  # the damaged step 9 would have been the one kept
    assert [c.step for c in list_checkpoints(tmp_path)] == [4]


def test_resume_goes_back_past_a_damaged_newest_checkpoint_saying_so_and_ends_the_same(tmp_path: Path) -> None:
    reference, _ = train(tmp_path / "a", keep_last=3)
    run = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        train(run, objective=MSETask(fail_at_call=11), keep_last=3)  # dies during step 11
    assert [c.step for c in list_checkpoints(run)] == [3, 6, 9]
    truncate(run / "checkpoint-00000009" / "model.safetensors")
    resumed, trainer = train(run, resume=True, keep_last=3)
    assert trainer.step == 12 and same_weights(reference, resumed)  # steps 7-9 were trained again
    lines = (run / "train.log").read_text().splitlines()
    note = next(line for line in lines if line.startswith("resuming"))
    assert note.startswith(f"resuming {run} from step 6 (checkpoint-00000009 is unreadable: model.safetensors: trunc")
    assert note.endswith("set aside as checkpoint-00000009.unreadable)")


def test_resume_with_no_checkpoint_that_loads_names_them(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, objective=MSETask(fail_at_call=5), steps=6)  # one checkpoint, of step 3
    (tmp_path / "checkpoint-00000003" / "meta.json").write_text("")
    with pytest.raises(UnreadableFileError, match=r"no checkpoint loads \(checkpoint-00000003: meta.json: empty"):
        train(tmp_path, resume=True, steps=6)
    assert (tmp_path / "checkpoint-00000003").is_dir()  # left where it was
