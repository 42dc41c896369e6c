"""Checkpoints that lose nothing and load nothing executable.

A checkpoint is a directory ``checkpoint-00001234/`` holding

    model.safetensors    weights
    state.pt             optimizer, scheduler and RNG states (tensors and plain containers
                         only: loaded with ``torch.load(weights_only=True)``)
    meta.json            step, data position, metrics, anything JSON

It is written into a temporary sibling and renamed into place, so a run killed mid-write
leaves the previous checkpoints intact and never a half-written one under a real name.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polymodal.fsutil import atomic_directory
from polymodal.weights import load_weights, save_weights

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{8})$")


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
    meta: dict[str, Any]


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
        save_weights(model, tmp / "model.safetensors")
        torch.save(
            {
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": rng_state(),
            },
            tmp / "state.pt",
        )
        (tmp / "meta.json").write_text(json.dumps({"step": step, **(meta or {})}, indent=2, default=str))
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
            meta = json.loads((child / "meta.json").read_text())
        except FileNotFoundError:  # incomplete, or pruned by a running trainer while we looked
            continue
        out.append(Checkpoint(child, int(m.group(1)), meta))
    return sorted(out, key=lambda c: c.step)


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore weights (strict), optimizer, scheduler and RNG; returns meta.json's content."""
    path = Path(path)
    load_weights(model, path / "model.safetensors")
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return json.loads((path / "meta.json").read_text())


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
