"""Atomic writes: a reader (or a resumed run) never sees a half-written file or directory; reading back what was
written, with errors that name the file and what is wrong with it; and where polymodal keeps what it caches between
runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CACHE_ENV = "POLYMODAL_CACHE_DIR"
# What an error says of a file that would need unpickling Python objects to load: polymodal never does.
PICKLED_OBJECTS = "refused: it holds pickled Python objects, which are never loaded"


class UnreadableFileError(ValueError):
    """A file cannot be read back: missing, truncated, corrupt, or not the kind of file it should be."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; :class:`UnreadableFileError` says where it is truncated or stops being JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except UnicodeDecodeError as e:
        raise UnreadableFileError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        if not e.doc.strip():
            raise UnreadableFileError(path, "empty (expected JSON)") from None
        # JSON cut short ends mid-value, or inside a string (a string left open is only ever at the end of the text)
        if e.pos >= len(e.doc.rstrip()) or e.msg.startswith("Unterminated string"):
            lines = e.doc.rstrip().count("\n") + 1
            raise UnreadableFileError(path, f"truncated (its JSON breaks off in line {lines})") from None
        raise UnreadableFileError(path, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def default_cache_dir() -> Path:
    """Where polymodal keeps what it caches between runs (features, exports): ``$POLYMODAL_CACHE_DIR``, default
    ``~/.cache/polymodal``."""
    given = os.environ.get(CACHE_ENV, "").strip()
    return Path(given).expanduser() if given else Path.home() / ".cache" / "polymodal"


def _umask() -> int:
    """The process umask. os.umask can only read it by setting it, so Linux's /proc record is read first."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_mode(path: Path, umask: int) -> None:
    """Give ``path`` the mode a plain open()/mkdir() would under ``umask`` (its execute bits kept): temporary files
    and directories are private (mkdtemp makes 0700, safetensors writes 0600), the files they become need not be."""
    current = stat.S_IMODE(path.stat().st_mode)
    base = 0o777 if path.is_dir() else 0o666 | (current & 0o111)
    os.chmod(path, base & ~umask)


def _settle_tree(path: Path, umask: int) -> None:
    """Sync every file and directory under ``path`` to disk and give each its plain mode."""
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            _settle_tree(child, umask)
        elif child.is_file() and not child.is_symlink():
            with open(child, "rb") as f:
                os.fsync(f.fileno())
            _plain_mode(child, umask)
    _plain_mode(path, umask)
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
    exception the temporary directory is removed and ``target`` is untouched. What it holds gets the modes a plain
    open()/mkdir() gives under the umask.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        _settle_tree(tmp, _umask())
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
    ``target``, on an exception removed. It keeps the mode of the ``target`` it replaces, as writing into that file
    would; a new file gets the plain mode under the umask."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if target.is_file():
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        else:
            _plain_mode(tmp, _umask())
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


def data_hash(files: Iterable[Path], root: Path | None) -> str:
    """sha256 over the files a benchmark read, named relative to ``root`` so a moved copy hashes the same."""
    paths = sorted({Path(p).resolve() for p in files})
    base = root.resolve() if root is not None else None
    if base is not None and not all(p.is_relative_to(base) for p in paths):
        base = None  # some file lies outside the data root: name files by their base name only
    return hash_files(paths, root=base)


def hash_directory(directory: str | os.PathLike) -> str:
    """:func:`hash_files` over every file under ``directory`` (recursively)."""
    root = Path(directory)
    return hash_files([p for p in root.rglob("*") if p.is_file()], root=root)


def listing_hash(path: str | os.PathLike) -> str:
    """sha256 over the names (relative to ``path``) and sizes of the files under ``path``, or of the file ``path``:
    a cheap identity of a folder of media or of shards, whose contents are too large to read each time."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.relative_to(root) if root.is_dir() else p.name}\0{p.stat().st_size}\n".encode())
    return digest.hexdigest()


# Characters str.splitlines() (but not a file's line iteration) ends a line at, which json.dumps leaves raw.
_LINE_BREAKS_JSON_KEEPS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_line(value: Any, **options: Any) -> str:
    """``value`` as one line of a JSON Lines file (with its newline), other scripts kept readable
    (``ensure_ascii=False``) but every character any reader may split lines at escaped: a file name or reason holding
    U+2028 would otherwise cut its record in two for ``splitlines()``."""
    return json.dumps(value, ensure_ascii=False, **options).translate(_LINE_BREAKS_JSON_KEEPS) + "\n"


def read_json_lines(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file (none when it is missing), split at newlines only (a U+2028 written raw by
    an older writer is no line end); a line cut short by a kill, or one that is not an object, is left out."""
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
