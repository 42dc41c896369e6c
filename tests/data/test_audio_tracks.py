"""The sound track of a video container through the audio decoding: resampled to the model's rate, mono, with the
sound files' bounds and bad-sample kinds, and ``no_audio`` for a clip without a track."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from polymodal.data.audio import decode_audio, is_av_container
from polymodal.data.errors import BadSampleError
from polymodal.data.processors import AudioProcessor

av = pytest.importorskip("av")


def burst_wave(seconds: float, rate: int, onset: float, freq: float = 880.0) -> np.ndarray:
    """Silence with a 0.2 s tone starting at ``onset`` seconds."""
    wave = np.zeros(int(seconds * rate), dtype=np.float32)
    start = int(onset * rate)
    t = np.arange(int(0.2 * rate)) / rate
    wave[start : start + len(t)] = 0.5 * np.sin(2 * np.pi * freq * t)
    return wave


def write_clip(
    path: Path | None,
    wave: np.ndarray | None,
    rate: int = 44100,
    channels: int = 1,
    fmt: str = "mp4",
    codec: str = "aac",
    seconds: float = 2.0,
) -> bytes:
    """A clip of ``seconds`` at 8 fps, with ``wave`` as its sound track (None: no audio stream)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as container:
        video = container.add_stream("mpeg4", rate=8)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        audio = None
        if wave is not None:
            audio = container.add_stream(codec, rate=rate, layout="stereo" if channels == 2 else "mono")
        for i in range(int(seconds * 8)):
            image = np.full((32, 32, 3), i * 12 % 256, dtype=np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            planes = np.stack([wave] * channels)
            frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=audio.layout.name)
            frame.sample_rate, frame.pts = rate, 0
            for packet in [*audio.encode(frame), *audio.encode()]:
                container.mux(packet)
    data = buf.getvalue()
    if path is not None:
        path.write_bytes(data)
    return data


def onset(wave: torch.Tensor, rate: int) -> float:
    return float(torch.nonzero(wave.abs() > 0.1)[0]) / rate


@pytest.mark.parametrize(
    "fmt,suffix,codec", [("mp4", "mp4", "aac"), ("matroska", "mkv", "libopus"), ("mov", "mov", "aac")]
)
def test_a_clips_sound_track_decodes_to_mono_at_the_model_rate_with_its_onset_and_pitch(
    tmp_path: Path, fmt: str, suffix: str, codec: str
) -> None:
    rate = 48000  # Opus only runs at 48 kHz
    path = tmp_path / f"clip.{suffix}"
    write_clip(path, burst_wave(2.0, rate, onset=1.0), rate=rate, channels=2, fmt=fmt, codec=codec)
    wave = decode_audio(path, 16000)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    assert abs(wave.shape[0] - 32000) < 400  # 2 s, the encoder's last-frame padding trimmed where declared
    assert abs(onset(wave, 16000) - 1.0) < 0.01  # the codec's priming delay is not a shift of the sound
    burst = wave[16000:19200].double()
    assert abs(float(torch.fft.rfft(burst).abs().argmax()) * 16000 / len(burst) - 880) < 6
    assert torch.equal(decode_audio(path.read_bytes(), 16000), wave)  # bytes (a tar shard) decode the same


def test_the_audio_processor_reads_a_video_file_named_in_the_audio_field(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_clip(path, burst_wave(2.0, 22050, onset=0.5), rate=22050)
    processor = AudioProcessor()
    batch = processor.collate([processor.prepare(str(path)), None])
    assert batch.present.tolist() == [True, False]
    frames = batch.mask[0].sum().item()
    assert abs(frames - 2.0 * 16000 / 160) <= 3  # 2 s of real frames, the rest of the 5 s window masked
    loudest = int(batch.x[0].mean(0)[: int(frames)].argmax())
    assert 0.5 <= loudest * 160 / 16000 <= 0.72  # the burst's frames


def test_bad_clips_are_bad_samples_with_the_sound_files_kinds(tmp_path: Path) -> None:
    good = write_clip(tmp_path / "good.mp4", burst_wave(2.0, 16000, onset=0.5), rate=16000)
    write_clip(tmp_path / "silent_film.mp4", None)
    (tmp_path / "truncated.mp4").write_bytes(good[: len(good) // 2])  # the index (moov) is at the end: unreadable
    long_mkv = write_clip(
        None, burst_wave(8.0, 48000, onset=0.5), rate=48000, fmt="matroska", codec="libopus", seconds=8
    )
    (tmp_path / "truncated.mkv").write_bytes(long_mkv[: len(long_mkv) // 3])
    (tmp_path / "empty.webm").write_bytes(b"")
    (tmp_path / "notes.avi").write_text("not a clip")
    cases = {
        "silent_film.mp4": "no_audio",
        "truncated.mp4": "decode",
        "truncated.mkv": "truncated",
        "empty.webm": "empty_file",
        "notes.avi": "decode",
        "missing.mov": "missing_file",
    }
    for name, kind in cases.items():
        with pytest.raises(BadSampleError) as err:
            decode_audio(tmp_path / name, 16000, source="train.jsonl", row=4)
        assert (name, err.value.kind) == (name, kind) and err.value.row == 4 and name in str(err.value)
        assert err.value.field == "audio"
    with pytest.raises(BadSampleError) as err:
        decode_audio(tmp_path / "good.mp4", 16000, max_seconds=1.0)
    assert err.value.kind == "too_long"
    with pytest.raises(BadSampleError) as err:
        decode_audio(tmp_path / "good.mp4", 16000, timeout_seconds=1e-9)
    assert err.value.kind == "timeout"
    with pytest.raises(BadSampleError, match="no audio stream"):
        decode_audio((tmp_path / "silent_film.mp4").read_bytes(), 16000)


def test_containers_are_told_from_sound_files_by_extension_or_first_bytes(tmp_path: Path) -> None:
    clip = write_clip(None, burst_wave(1.0, 16000, onset=0.2), rate=16000, seconds=1.0)
    mkv = write_clip(None, burst_wave(1.0, 48000, onset=0.2), rate=48000, fmt="matroska", codec="libopus", seconds=1.0)
    assert is_av_container("a/b.MP4") and is_av_container(Path("x.webm")) and not is_av_container("x.flac")
    assert is_av_container(clip) and is_av_container(mkv)
    assert not is_av_container(b"RIFF\x00\x00\x00\x00WAVEfmt ") and not is_av_container(b"fLaC\x00\x00")


def test_sound_tracks_and_files_left_in_a_shard_decode_as_their_bytes(tmp_path: Path) -> None:
    """Also when a member's extension is wrong: the bytes say what decodes them, as for bytes given directly."""
    import soundfile as sf

    from polymodal.data.readers import read_shards, write_shards
    from polymodal.data.schema import Sample, ShardMember

    clip = write_clip(None, burst_wave(1.0, 16000, onset=0.2), rate=16000, seconds=1.0)
    wav = io.BytesIO()
    sf.write(wav, burst_wave(0.5, 8000, onset=0.1), 8000, format="WAV")
    write_shards([Sample(id="c", audio=clip), Sample(id="w", audio=wav.getvalue())], str(tmp_path / "s-%d.tar"))
    lazy = list(read_shards(tmp_path / "s-0.tar", strict=True, media_in_shard=True))
    assert [type(s.audio) for s in lazy] == [ShardMember, ShardMember]
    assert [s.audio.name for s in lazy] == ["c.m4a", "w.wav"]  # written under their formats' extensions
    mislabelled = dataclasses.replace(lazy[0].audio, name="c.wav")
    for ref, data in zip((*(s.audio for s in lazy), mislabelled), (clip, wav.getvalue(), clip)):
        assert torch.equal(decode_audio(ref, 16000), decode_audio(data, 16000))


def test_sounds_are_written_to_shards_under_their_own_formats_extensions(tmp_path: Path) -> None:
    from polymodal.data.readers import read_shards, write_shards
    from polymodal.data.schema import Sample

    mka = write_clip(None, burst_wave(1.0, 48000, onset=0.2), rate=48000, fmt="matroska", codec="libopus", seconds=1.0)
    (tmp_path / "track.mp4").write_bytes(write_clip(None, burst_wave(1.0, 16000, onset=0.2), rate=16000, seconds=1.0))
    rows = [
        Sample(id="path", audio=str(tmp_path / "track.mp4")),  # a clip's sound track named by its path
        Sample(id="mka", audio=mka),
        Sample(id="mp3", audio=b"\xff\xfb\x90\x00" + bytes(400)),  # MPEG frames without an ID3 tag
    ]
    write_shards(rows, str(tmp_path / "s-%d.tar"))
    back = list(read_shards(tmp_path / "s-0.tar", strict=True, media_in_shard=True))
    assert [(s.id, s.audio.name) for s in back] == [("path", "path.m4a"), ("mka", "mka.mka"), ("mp3", "mp3.mp3")]
    assert torch.equal(decode_audio(back[1].audio, 16000), decode_audio(mka, 16000))
