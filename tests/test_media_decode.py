"""One ffmpeg process per clip (`decode_streams`): the same frames and audio as the one-stream decoders, streams
found without ffprobe, cover art, rotation, size changes and hostile metadata (real ffmpeg, real files)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from mmckd.extract.audio import AudioExtractor
from mmckd.extract.config import AudioConfig
from mmckd.extract.errors import MediaError, ModalityMissing
from mmckd.extract.media import decode_streams, iter_audio, iter_video_frames, probe, scaled_size
from mmckd.testing.clips import face_image

SR = 16000


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True)


def _frames_list(frames):
    return [(t, f.copy()) for t, f in frames]


def _chunks_concat(chunks):
    return np.concatenate(list(chunks))


def _decode(path, on_frames=_frames_list, on_audio=_chunks_concat, max_side=320, **kw):
    return decode_streams(path, fps=25, max_side=max_side, sample_rate=SR, chunk_samples=SR,
                          on_frames=on_frames, on_audio=on_audio, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def tone_video(tmp_path_factory) -> Path:
    """4 s of moving test pattern (400x300) with a 440 Hz tone."""
    out = tmp_path_factory.mktemp("decode") / "tone.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=400x300:rate=30:duration=4", "-f", "lavfi", "-i",
            "sine=frequency=440:duration=4", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-shortest", str(out))  # fmt: skip
    return out


def test_one_process_gives_the_frames_and_samples_of_the_one_stream_decoders(tone_video):
    info = probe(tone_video)
    alone_frames = [(t, f.copy()) for t, f in iter_video_frames(info, 25, 320)]
    alone_audio = np.concatenate(list(iter_audio(info, SR, SR)))
    got = _decode(tone_video)
    assert got.info.has_video and got.info.has_audio
    assert got.video_error is None and got.audio_error is None
    assert len(got.video) == len(alone_frames) == 100
    assert all(t0 == t1 and np.array_equal(f0, f1) for (t0, f0), (t1, f1) in zip(got.video, alone_frames))
    assert got.video[0][1].shape == (240, 320, 3) == (*scaled_size(400, 300, 320)[::-1], 3)
    assert np.array_equal(got.audio, alone_audio) and abs(len(got.audio) / SR - 4.0) < 0.05
    assert got.info.duration == pytest.approx(info.duration, abs=0.01)


def test_real_clip_audio_features_match_the_one_stream_path(real_videos):
    extractor = AudioExtractor(AudioConfig())
    path = real_videos[0]
    alone = extractor.extract(probe(path))
    got = _decode(path, on_frames=None, on_audio=extractor.extract_chunks)
    assert got.info.has_audio and not got.info.has_video  # video not asked for
    assert np.array_equal(got.audio.features, alone.features)


def test_a_missing_stream_is_found_without_ffprobe(tmp_path, tone_video):
    silent = tmp_path / "video_only.mp4"
    _ffmpeg("-i", str(tone_video), "-an", "-c:v", "copy", str(silent))
    wav = tmp_path / "audio_only.wav"
    _ffmpeg("-i", str(tone_video), "-vn", str(wav))
    v = _decode(silent)
    assert v.info.has_video and not v.info.has_audio and v.audio is None and len(v.video) == 100
    a = _decode(wav)
    assert a.info.has_audio and not a.info.has_video and a.video is None and len(a.audio) > 3.9 * SR
    presence = _decode(silent, on_frames=None, on_audio=None, audio_presence=True)
    assert not presence.info.has_audio


def test_cover_art_is_not_a_video_stream(tmp_path, tone_video):
    cover = tmp_path / "cover.png"
    from PIL import Image

    Image.fromarray(face_image("face", 128)).save(cover)
    mp3 = tmp_path / "song.mp3"
    _ffmpeg("-i", str(tone_video), "-i", str(cover), "-map", "0:a", "-map", "1:v", "-c:a", "libmp3lame",
            "-c:v", "png", "-disposition:v", "attached_pic", str(mp3))  # fmt: skip
    assert any(s == "video" for s in _stream_types(mp3))  # the file does hold a picture stream
    got = _decode(mp3)
    assert got.info.has_audio and not got.info.has_video and got.video is None


def _stream_types(path: Path) -> list[str]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True).stdout  # fmt: skip
    return out.split()


def test_a_rotated_phone_video_keeps_its_aspect(tmp_path, tone_video):
    rotated = tmp_path / "rotated.mp4"
    _ffmpeg("-i", str(tone_video), "-metadata:s:v:0", "rotate=90", "-c", "copy", str(rotated))  # display matrix
    frames = _decode(rotated).video
    assert frames[0][1].shape == (320, 240, 3)  # 400x300 shown upright as 300x400, scaled to a long side of 320
    assert [f.shape for _, f in iter_video_frames(probe(rotated), 25, 320)][0] == (320, 240, 3)


def test_a_size_change_mid_stream_keeps_the_first_size(tmp_path):
    """ffmpeg scales frames after a resolution change to the size its output started with (as before)."""
    parts = []
    for k, size in enumerate(("320x240", "160x160")):
        part = tmp_path / f"part{k}.ts"
        _ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate=25:duration=1", "-c:v", "libx264", "-preset",
                "veryfast", "-pix_fmt", "yuv420p", str(part))  # fmt: skip
        parts.append(part.read_bytes())
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(parts))
    frames = _decode(joined).video
    shapes = [f.shape[:2] for _, f in frames]
    assert set(shapes) == {(240, 320)} and 48 <= len(frames) <= 52
    assert [t for t, _ in frames] == [i / 25 for i in range(len(frames))]


def test_metadata_cannot_fake_the_duration(tmp_path, tone_video):
    hostile = tmp_path / "hostile.mp4"
    _ffmpeg("-i", str(tone_video), "-metadata", "title=x\n  Duration: 99:00:00.00, start: 0",
            "-metadata", "comment=[info]   Duration: 88:00:00.00, start", "-c", "copy", str(hostile))  # fmt: skip
    assert _decode(hostile).info.duration == pytest.approx(4.0, abs=0.05)


def test_a_consumer_failure_is_per_stream_and_an_early_stop_does_not_hang(tone_video):
    def no_face(frames):
        next(iter(frames))  # stops after one frame: ffmpeg must not stay blocked on the video pipe
        raise ModalityMissing("no face found in 1 frames")

    got = _decode(tone_video, on_frames=no_face)
    assert isinstance(got.video_error, ModalityMissing) and got.video is None
    assert got.audio is not None and len(got.audio) > 3.9 * SR  # the audio was not cut short


def test_unreadable_and_streamless_files_fail_naming_the_file(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(MediaError, match=r"junk\.mp4: .*Invalid data"):
        _decode(junk)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp4: empty file"):
        _decode(empty)
    data_only = tmp_path / "subs.mkv"
    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    _ffmpeg("-i", str(srt), str(data_only))
    with pytest.raises(MediaError, match=r"subs\.mkv: no audio or video stream"):
        _decode(data_only)


def test_a_truncated_file_fails_with_how_much_was_decodable(tmp_path, tone_video):
    whole = tmp_path / "faststart.mp4"  # index first, so ffmpeg decodes up to the cut and reports a partial file
    _ffmpeg("-i", str(tone_video), "-c", "copy", "-movflags", "+faststart", str(whole))
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(MediaError, match=r"cut\.mp4: truncated file \(only [12]\.\d s of 4\.0 s decodable\)"):
        _decode(cut)
