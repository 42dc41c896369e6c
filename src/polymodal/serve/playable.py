"""Clips a browser can play: an indexed video whose codec or container browsers do not play (MPEG-4 Part 2, HEVC,
AVI, MKV) is transcoded once to H.264 in MP4 into the server's own temporary folder, removed when the server stops."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from pathlib import Path

from polymodal.data.errors import BadSampleError
from polymodal.data.video import VideoSampling, transcode_for_web, web_playable

log = logging.getLogger(__name__)

MAX_SECONDS = 600.0  # a longer clip is served as it is: transcoding it would hold its request for minutes


class PlayableVideos:
    """``path_for(path)``: ``path`` itself when browsers play it, else its transcoded copy (made on first request;
    a clip that cannot be transcoded, or is longer than ``max_seconds``, is served as it is)."""

    def __init__(self, max_seconds: float = MAX_SECONDS) -> None:
        self.max_seconds = max_seconds
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._known: dict[str, Path] = {}  # file identity -> the file to serve
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path_for(self, path: Path) -> Path:
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:32]
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one transcode per clip, however many requests ask for it at once
            known = self._known.get(key)
            if known is None:
                known = self._known[key] = self._playable(path, key)
            return known

    def _playable(self, path: Path, key: str) -> Path:
        try:
            if web_playable(path):
                return path
            target = self._directory() / f"{key}.mp4"
            return transcode_for_web(path, target, VideoSampling(max_seconds=self.max_seconds))
        except BadSampleError as e:
            log.warning("serving %s as it is: %s", path, e)
        except Exception as e:  # an unreadable container: the player will say so
            log.warning("serving %s as it is: cannot read it (%s: %s)", path, type(e).__name__, e)
        return path

    def _directory(self) -> Path:
        with self._guard:
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="polymodal-playable-")
            return Path(self._folder.name)

    def close(self) -> None:
        """Remove the transcoded copies."""
        with self._guard:
            if self._folder is not None:
                self._folder.cleanup()
                self._folder = None
            self._known.clear()
