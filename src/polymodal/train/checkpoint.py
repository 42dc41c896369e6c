"""Checkpoints that lose nothing and load nothing executable.

A checkpoint is a directory ``checkpoint-00001234/`` holding

    model.safetensors    weights
    state.pt             optimizer, scheduler and RNG states (tensors and plain containers
                         only: loaded with ``torch.load(weights_only=True)``)
    meta.json            step, data position, metrics, anything JSON

It is written into a temporary sibling and renamed into place, so a run killed mid-write
leaves the previous checkpoints intact and never a half-written one under a real name. One damaged
afterwards (truncated, edited) is reported naming the file, and resuming goes back past it.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polymodal.fsutil import PICKLED_OBJECTS, UnreadableFileError, atomic_directory, read_json
from polymodal.weights import load_state, read_weights, save_weights

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{8})$")
WEIGHTS_FILE, STATE_FILE, META_FILE = "model.safetensors", "state.pt", "meta.json"
UNREADABLE_SUFFIX = ".unreadable"  # a checkpoint resume went back past is renamed to checkpoint-NNNNNNNN.unreadable


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": json.dumps(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        # Dropout on a GPU draws from this process's device generator, not the CPU's. Only the main process
        # saves, but every rank was seeded alike and draws alike, so each restores it to its own device.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


@dataclass
class Checkpoint:
    path: Path
    step: int
    meta: dict[str, Any]  # its meta.json ({} when that is unreadable: loading the checkpoint says why)


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    target = Path(run_dir) / f"checkpoint-{step:08d}"
    with atomic_directory(target) as tmp:
        save_weights(model, tmp / WEIGHTS_FILE)
        torch.save(
            {
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": rng_state(),
            },
            tmp / STATE_FILE,
        )
        (tmp / META_FILE).write_text(json.dumps({"step": step, **(meta or {})}, indent=2, default=str))
    return target


def list_checkpoints(run_dir: str | os.PathLike) -> list[Checkpoint]:
    """Complete checkpoints in step order (temporary directories are ignored)."""
    out = []
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return out
    for child in run_dir.iterdir():
        m = CHECKPOINT_RE.match(child.name)
        if not m:
            continue
        try:
            meta = read_json(child / META_FILE)
        except FileNotFoundError:  # incomplete, or pruned by a running trainer while we looked
            continue
        except UnreadableFileError:  # listed all the same: a resume says what is wrong and goes back past it
            meta = {}
        out.append(Checkpoint(child, int(m.group(1)), meta if isinstance(meta, dict) else {}))
    return sorted(out, key=lambda c: c.step)


def _state_problem(error: Exception) -> str:
    """What is wrong with a state.pt that ``torch.load(weights_only=True)`` refused or could not read."""
    message = str(error)
    if "Weights only load failed" in message:
        # torch's message goes on to suggest weights_only=False, which would run the file's code: never passed on.
        named = re.search(r"GLOBAL (\S+)", message)
        return PICKLED_OBJECTS + (f" (it names {named.group(1)})" if named else "")
    if isinstance(error, EOFError):
        return "empty or truncated"
    if isinstance(error, PermissionError):
        return "not readable (permission denied)"
    # e.g. "PytorchStreamReader failed reading zip archive: failed finding central directory. This is ..."
    first = message.split(". ")[0].removeprefix("PytorchStreamReader ")
    return f"truncated or corrupt ({type(error).__name__}: {first[:200]})"


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """A checkpoint's weights, state and meta, all read before anything is restored, so one that is unreadable
    (:class:`UnreadableFileError` naming the file and what is wrong) changes nothing."""
    path = Path(path)
    for name in (WEIGHTS_FILE, STATE_FILE, META_FILE):
        if not (path / name).is_file():
            raise UnreadableFileError(path / name, "missing")
    weights = read_weights(path / WEIGHTS_FILE)
    try:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file fails inside torch.load in many ways (RuntimeError, EOFError, KeyError)
        raise UnreadableFileError(path / STATE_FILE, _state_problem(e)) from None
    if not isinstance(state, dict) or not {"optimizer", "scheduler", "rng"} <= state.keys():
        raise UnreadableFileError(path / STATE_FILE, "not a checkpoint's state (optimizer, scheduler and rng)")
    meta = read_json(path / META_FILE)
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise UnreadableFileError(path / META_FILE, "not a checkpoint's meta (a JSON object with its step)")
    return weights, state, meta


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore weights (strict), optimizer, scheduler and RNG; returns meta.json's content."""
    path = Path(path)
    weights, state, meta = read_checkpoint(path)
    load_state(model, weights, path / WEIGHTS_FILE)
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return meta


def restore_newest(checkpoints: list[Checkpoint], restore: Callable[[Path], Any], set_aside: bool = True) -> list[str]:
    """Restore the newest of ``checkpoints`` (in step order, at least one) that loads, through ``restore``, going back
    past those that raise :class:`UnreadableFileError`; returns what was wrong with each skipped one, for the run to
    say.

    A skipped checkpoint is renamed to ``checkpoint-NNNNNNNN.unreadable`` (``set_aside``: by one process only): left
    in place it would count among the newest ``keep_last``, and pruning would delete the good ones written before the
    run reaches its step again. If none loads, an :class:`UnreadableFileError` names them all.
    """
    skipped: list[tuple[Checkpoint, UnreadableFileError]] = []
    for checkpoint in reversed(checkpoints):
        try:
            restore(checkpoint.path)
            break
        except UnreadableFileError as e:
            skipped.append((checkpoint, e))
    else:
        why = "; ".join(f"{c.path.name}: {e.path.name}: {e.problem}" for c, e in skipped)
        them = "it" if len(skipped) == 1 else "them"
        raise UnreadableFileError(
            checkpoints[-1].path.parent,
            f"no checkpoint loads ({why}). To train the run again from step 0 move {them} away, or train into a new "
            "--out",
        )
    lines = []
    for c, e in skipped:
        line = f"{c.path.name} is unreadable: {e.path.name}: {e.problem}"
        if set_aside:
            aside = c.path.with_name(c.path.name + UNREADABLE_SUFFIX)
            shutil.rmtree(aside, ignore_errors=True)  # one from an earlier resume: the same step, damaged again
            c.path.rename(aside)
            line += f"; set aside as {aside.name}"
        lines.append(line)
    return lines


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int, keep: set[int] | None = None) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints and the steps in ``keep`` (best)."""
    checkpoints = list_checkpoints(run_dir)
    protected = {c.step for c in checkpoints[-keep_last:]} if keep_last > 0 else set()
    protected |= keep or set()
    removed = []
    for c in checkpoints:
        if c.step not in protected:
            # Rename first (atomic) so a kill mid-delete never leaves a half checkpoint under a real name.
            doomed = c.path.with_name(f".deleting-{c.path.name}")
            try:
                c.path.rename(doomed)
            except FileNotFoundError:
                continue
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append(c.path)
    return removed
