"""What a result file records so a number can be traced to its model, data and software."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from polymodal.evaluate.results import DataProvenance, JudgeProvenance, Provenance
from polymodal.fsutil import hash_directory

VERSIONED = ("polymodal", "torch", "transformers", "numpy")


def library_versions(packages: Iterable[str] = VERSIONED) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def model_hash(model_dir: Path | None, fallback_identity: str) -> str:
    """sha256 over the model directory's sorted files (names + contents); a named model uses its identity."""
    return hash_directory(model_dir) if model_dir is not None else fallback_identity


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed (``polymodal eval ...``), quoted so it can be pasted back into a shell."""
    args = sys.argv if argv is None else argv
    prog = "polymodal" if args and Path(args[0]).name in ("polymodal", "__main__.py", "-m") else Path(args[0]).name
    return shlex.join([prog, *args[1:]]) if args else "polymodal"


def make_provenance(
    *,
    model: str,
    model_hash_value: str,
    data_path: str | os.PathLike | None,
    data_hash_value: str,
    seed: int,
    command: str,
    created: datetime | None = None,
    machine: dict[str, Any] | None = None,
    judges: dict[str, JudgeProvenance] | None = None,
) -> Provenance:
    """A :class:`Provenance` stamped now (UTC) unless ``created`` is given."""
    when = (created or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    return Provenance(
        model=model,
        model_hash=model_hash_value,
        data=DataProvenance(path=str(data_path) if data_path is not None else "", hash=data_hash_value),
        judges=judges or None,
        versions=library_versions(),
        seed=seed,
        command=command,
        created=when,
        machine=machine,
    )
