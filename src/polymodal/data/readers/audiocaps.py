"""AudioCaps: ``{split}.csv`` (audiocap_id, youtube_id, start_time, caption; one row per caption) naming clips
cut from YouTube videos. Downloads name a clip by its YouTube id (``Y`` + id as in AudioSet, too) or by an
audiocap id; the rows of one clip (several captions in val and test) become one audio Sample holding them all.

The audio folder defaults to the first of ``audio/{split}/``, ``{split}/``, ``audio/`` beside the CSV."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.readers.base import PathResolver, require_file, resolve_log
from polymodal.data.readers.caption_csv import audio_files, csv_header, csv_rows, first_folder
from polymodal.data.schema import Sample

COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")


def is_audiocaps(path: str | os.PathLike) -> bool:
    """True for a CSV file with AudioCaps' columns."""
    return Path(path).suffix.lower() == ".csv" and set(COLUMNS) <= set(csv_header(path))


def default_audio_dir(csv_file: str | os.PathLike) -> Path:
    base, split = Path(csv_file).parent, Path(csv_file).stem
    return first_folder(base / "audio" / split, base / split, base / "audio")


def read_audiocaps(
    csv_file: str | os.PathLike,
    audio_dir: str | os.PathLike | None = None,
    strict: bool = False,
    bad_log: BadSampleLog | None = None,
) -> Iterator[Sample]:
    """One Sample per clip (id: the YouTube id), its captions in ``text`` in file order, its audiocap ids and start
    time in ``metadata``. A clip whose audio file is missing is a bad sample naming its first row."""
    require_file(csv_file)  # a missing CSV fails here, not at the first sample
    audio = Path(audio_dir) if audio_dir is not None else default_audio_dir(csv_file)
    return _samples(Path(csv_file), audio, resolve_log(strict, bad_log))


def _samples(path: Path, audio: Path, log: BadSampleLog) -> Iterator[Sample]:
    clips: dict[tuple[str, str], dict] = {}  # (youtube id, start) -> first row, audiocap ids, captions
    for row, record in csv_rows(path, COLUMNS):
        youtube_id, caption = record["youtube_id"], record["caption"]
        if not youtube_id or not caption:
            field = "youtube_id" if not youtube_id else "caption"
            reason = f"{field} is empty"
            log.record(BadSampleError(reason, source=str(path), row=row, field=field, sample_id=record["audiocap_id"]))
            continue
        clip = clips.setdefault((youtube_id, record["start_time"]), {"row": row, "ids": [], "captions": []})
        clip["ids"].append(record["audiocap_id"])
        clip["captions"].append(caption)
    files = audio_files(audio)
    resolver = PathResolver(audio, str(path))
    for (youtube_id, start), clip in clips.items():
        name = next((files[k] for k in (youtube_id, f"Y{youtube_id}", *clip["ids"]) if k in files), None)
        try:
            if name is None:
                raise BadSampleError(
                    f"no audio file named {youtube_id} (or Y{youtube_id}, or an audiocap id {clip['ids']}) in {audio}",
                    source=str(path),
                    row=clip["row"],
                    field="youtube_id",
                    sample_id=youtube_id,
                    kind="missing_file",
                )
            ref = resolver.resolve(name, "audio", clip["row"], sample_id=youtube_id)
        except BadSampleError as e:
            log.record(e)
            continue
        yield Sample(
            id=youtube_id,
            audio=ref,
            text=clip["captions"],
            metadata={"audiocap_ids": clip["ids"], "start_time": start},
            source=str(path),
            row=clip["row"],
        )
