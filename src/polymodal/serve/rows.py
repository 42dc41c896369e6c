"""/predict's rows -> the rows a fitted predictor or a fusion classifier reads, or a 4xx naming the row and column.

Cells are checked against the model's columns (an unknown column or a number that is not one is refused); a media
cell is a base64 file, checked like any upload (size, pixels, length) and written into the request's own directory,
which the row then points into: clients never name a path on the server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from polymodal.data.audio import is_av_container
from polymodal.data.errors import BadSampleError
from polymodal.fit.columns import MEDIA_KINDS, as_number, is_missing
from polymodal.serve.errors import ApiError
from polymodal.serve.payloads import Upload, decode_base64, decode_media
from polymodal.serve.settings import ServeSettings


def cell_name(row: int, column: str) -> str:
    """How an error names a cell of the request: ``rows[0].photo`` (``row`` counts from 0)."""
    return f"rows[{row}].{column}"


async def predictor_rows(
    rows: Sequence[Mapping[str, Any]],
    kinds: Mapping[str, str],
    label: str,
    directory: Path,
    settings: ServeSettings,
    unread: list[list[str]] | None = None,
) -> list[dict[str, Any]]:
    """The request's rows, for a model whose columns are ``kinds`` (name -> kind, ``ignore``: not read) and whose
    label column is ``label``, with their media written under ``directory`` (absolute paths); ignored columns and the
    label column dropped. A cell that cannot be read is a 422, or, given ``unread`` (one list per row), left out of
    its row and named in that row's list."""
    reads = [name for name, kind in kinds.items() if kind != "ignore"]
    out = []
    for i, row in enumerate(rows):
        cells: dict[str, Any] = {}
        if unknown := [name for name in row if name not in kinds and name != label]:
            raise ApiError(
                422,
                "unknown_column",
                f"{cell_name(i, unknown[0])}: no such column; this predictor reads {', '.join(reads)}",
            )
        if unread is not None:
            unread.append([])
        for j, (column, value) in enumerate(row.items()):
            field = cell_name(i, column)
            kind = kinds.get(column, "ignore")
            if kind == "ignore" or is_missing(value):
                continue
            try:
                if kind in MEDIA_KINDS:
                    cells[column] = str(await _media_file(value, kind, field, directory / f"{i}-{j}", settings))
                elif kind == "numeric" and as_number(value) is None:
                    raise ApiError(422, "invalid_request", f"{field}: expected a number, got {value!r}")
                else:
                    cells[column] = value
            except ApiError as e:
                if unread is None or e.status != 422:
                    raise
                unread[i].append(e.message)
        out.append(cells)
    return out


async def _media_file(value: Any, kind: str, field: str, stem: Path, settings: ServeSettings) -> Path:
    """The checked upload, written to ``stem`` (a sound inside a video container keeps a video suffix, which tells the
    decoder to read its audio track)."""
    if not isinstance(value, str):
        raise ApiError(422, f"bad_{kind}", f"{field}: expected a base64-encoded {kind} file, got {value!r}")
    data = decode_base64(value, field)
    await decode_media(Upload(kind, field, data), settings)
    path = stem.with_suffix(".mp4" if kind == "audio" and is_av_container(data) else "")
    await run_in_threadpool(path.write_bytes, data)
    return path


def bad_cell(error: BadSampleError, kinds: Mapping[str, str]) -> ApiError:
    """A cell the predictor could not read after the checks passed (``error.row`` counts from 1, as the table's)."""
    field = cell_name((error.row or 1) - 1, error.field or "?")
    return ApiError(422, f"bad_{kinds.get(error.field or '', 'input')}", f"{field}: {error.reason}")
