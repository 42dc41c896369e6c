"""Atomic writes: a reader (or a resumed run) never sees a half-written file or directory; and where polymodal
keeps what it caches between runs."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE_ENV = "POLYMODAL_CACHE_DIR"


def default_cache_dir() -> Path:
    """Where polymodal keeps what it caches between runs (features, exports): ``$POLYMODAL_CACHE_DIR``, default
    ``~/.cache/polymodal``."""
    given = os.environ.get(CACHE_ENV, "").strip()
    return Path(given).expanduser() if given else Path.home() / ".cache" / "polymodal"


def _fsync_tree(path: Path) -> None:
    for child in path.iterdir():
        if child.is_file():
            with open(child, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to fill; on success it replaces ``target``.

    An existing ``target`` is first renamed aside (not deleted), so at every instant either
    the old or the new complete directory exists under a name a reader can find. On an
    exception the temporary directory is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to write by any means; on success it is synced and renamed to
    ``target``, on an exception removed."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a synced temporary sibling and a rename: never half a file."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def hash_files(paths: Iterator[Path] | list[Path], root: Path | None = None, chunk: int = 1 << 20) -> str:
    """sha256 over files' relative names and contents, in sorted order: a content identity for a model or dataset.

    Names count too, so renaming a weight file changes the identity; modification times do not, so a copy of
    the same model has the same identity.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        name = str(path.relative_to(root)) if root is not None else path.name
        digest.update(name.encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def hash_directory(directory: str | os.PathLike) -> str:
    """:func:`hash_files` over every file under ``directory`` (recursively)."""
    root = Path(directory)
    return hash_files([p for p in root.rglob("*") if p.is_file()], root=root)
