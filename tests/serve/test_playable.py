"""Clips a browser can play: a playable MP4 or WebM is served as it is, anything else by its H.264 copy, made once per
file (a changed file is transcoded again) and removed when the server closes; a clip that cannot be transcoded is
served as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from polymodal.data.video import web_playable
from polymodal.serve.playable import PlayableVideos
from tests.api.video_model import write_clip, write_webm

pytest.importorskip("av")


def test_only_clips_browsers_cannot_play_are_served_by_a_transcoded_copy(tmp_path: Path) -> None:
    part2 = write_clip(tmp_path / "red.mp4", ["red", "blue"], 1.0)  # MPEG-4 Part 2
    webm = write_webm(tmp_path / "red.webm", ["red"], 1.0)  # VP8 in WebM
    playable = PlayableVideos()
    assert playable.path_for(webm) == webm
    copy = playable.path_for(part2)
    assert copy != part2 and web_playable(copy) and copy.parent != tmp_path
    made = copy.stat().st_mtime_ns
    assert playable.path_for(part2) == copy and copy.stat().st_mtime_ns == made  # made once, not again
    write_clip(part2, ["blue"], 2.0)  # the file changed: a new copy
    again = playable.path_for(part2)
    assert again != copy and web_playable(again)
    (tmp_path / "cut.mp4").write_bytes(part2.read_bytes()[:300])
    assert playable.path_for(tmp_path / "cut.mp4") == tmp_path / "cut.mp4"  # cannot be transcoded: as it is
    playable.close()
    assert not copy.exists() and not again.exists()
    long_clips = PlayableVideos(max_seconds=1.0)
    assert long_clips.path_for(part2) == part2  # 2 s is over its bound: served as it is
