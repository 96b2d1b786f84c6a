"""Audio features: real speech, synthetic tones, silence, missing tracks, and streaming == one-shot."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

from mmckd.extract.audio import AUDIO_FEATURE_NAMES, AudioExtractor
from mmckd.extract.config import AudioConfig
from mmckd.extract.errors import ModalityMissing
from mmckd.extract.media import iter_audio, probe

SR = 16000
F0, VOICING, LOG_ENERGY = AUDIO_FEATURE_NAMES.index("f0_hz"), AUDIO_FEATURE_NAMES.index("voicing"), -1


@pytest.fixture(scope="module")
def extractor() -> AudioExtractor:
    return AudioExtractor(AudioConfig())


def _write_wav(path: Path, x: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def tone_dir(tmp_path_factory) -> Path:
    """Synthetic files: 2 s tones and silence as WAV (numpy), and a video with a silent AAC track (ffmpeg)."""
    d = tmp_path_factory.mktemp("tones")
    t = np.arange(2 * SR) / SR
    _write_wav(d / "sine220.wav", 0.5 * np.sin(2 * np.pi * 220 * t))
    _write_wav(d / "saw110.wav", 0.5 * (2 * ((110 * t) % 1) - 1))
    _write_wav(d / "silence.wav", np.zeros_like(t))
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=64x64:r=10:d=2",
         "-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "2", "-c:v", "libx264", "-c:a", "aac",
         str(d / "silent_track.mp4")],
        check=True,
    )  # fmt: skip
    return d


def _decode(path: Path) -> np.ndarray:
    return np.concatenate(list(iter_audio(probe(path), SR, 10**8)))


def test_feature_names_match_dimensions(extractor):
    assert len(AUDIO_FEATURE_NAMES) == extractor.dim == AudioConfig().n_mels + 3
    assert AUDIO_FEATURE_NAMES[:2] == ("mel_00", "mel_01") and AUDIO_FEATURE_NAMES[39] == "mel_39"
    assert AUDIO_FEATURE_NAMES[40:] == ("f0_hz", "voicing", "log_energy")


def _check_speech(seq, duration: float) -> None:
    feats = seq.features
    assert feats.shape[1] == len(AUDIO_FEATURE_NAMES)
    assert abs(seq.frames - duration * 25) <= 2
    assert np.isfinite(feats).all() and seq.mask.all()
    np.testing.assert_allclose(seq.timestamps, (np.arange(seq.frames) + 0.5) * 0.04)
    f0, voicing = feats[:, F0], feats[:, VOICING]
    voiced = f0 > 0
    assert 0.2 <= voiced.mean() <= 0.95, f"voiced fraction {voiced.mean():.2f}"
    assert ((f0[voiced] >= 60) & (f0[voiced] <= 400)).all()
    assert 70 <= np.median(f0[voiced]) <= 300, f"median f0 {np.median(f0[voiced]):.0f} Hz"
    assert ((voicing >= 0) & (voicing <= 1)).all()
    assert voicing[voiced].mean() > voicing[~voiced].mean()
    # speech is louder where it is voiced than in the pauses
    assert feats[voiced, LOG_ENERGY].mean() > feats[~voiced, LOG_ENERGY].mean()


def test_real_mosi_utterance(extractor, shared_data):
    path = shared_data / "mosi" / "03bSnISJMiM_1.wav"
    info = probe(path)
    _check_speech(extractor.extract(info), info.duration)


def test_real_videos(extractor, real_videos):
    for path in real_videos:
        info = probe(path)
        _check_speech(extractor.extract(info), info.duration)


def test_pure_tone_pitch(extractor, tone_dir):
    seq = extractor.extract(probe(tone_dir / "sine220.wav"))
    assert seq.frames == 50
    inner = seq.features[1:-1]  # the edge frames see the zero padding
    np.testing.assert_allclose(inner[:, F0], 220.0, atol=1.0)
    assert (inner[:, VOICING] > 0.95).all()
    # a sine at half scale: mean square 1/8
    np.testing.assert_allclose(inner[:, LOG_ENERGY], np.log(0.125), atol=0.02)


def test_harmonic_rich_tone_gives_fundamental_not_octave(extractor, tone_dir):
    seq = extractor.extract(probe(tone_dir / "saw110.wav"))
    np.testing.assert_allclose(seq.features[1:-1, F0], 110.0, atol=1.5)


def test_log_mel_matches_torchaudio(extractor, shared_data):
    x = _decode(shared_data / "mosi" / "03bSnISJMiM_1.wav")
    ours = extractor.extract_chunks([x]).features
    # reference: torchaudio's MelSpectrogram; hop k's 25 ms window is centred on samples [160k, 160k+160),
    # i.e. starts at 160k - 120; torch.stft puts the 400-sample window in the middle of its 512 samples
    hops = -(-len(x) // 160)
    lead = 120 + (512 - 400) // 2
    y = torch.from_numpy(np.pad(x, (lead, hops * 160 + 512)))
    mel = torchaudio.transforms.MelSpectrogram(
        SR, n_fft=512, win_length=400, hop_length=160, n_mels=40, center=False, power=2.0, mel_scale="htk"
    )(y)[:, :hops]
    ref = torch.log(mel.clamp_min(1e-10)).T.numpy()
    full = hops // 4
    ref_pooled = ref[: full * 4].reshape(full, 4, 40).mean(1)
    np.testing.assert_allclose(ours[:full, :40], ref_pooled, atol=2e-3)


def test_streaming_equals_one_shot(extractor, shared_data):
    x = _decode(shared_data / "mosi" / "03bSnISJMiM_1.wav")
    one_shot = extractor.compute([x])
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), 60, replace=False))
    cuts = np.concatenate([[1, 2, 161], cuts])  # tiny chunks, shorter than one hop, too
    streamed = extractor.compute(np.split(x, np.unique(cuts)))
    assert streamed.n_samples == one_shot.n_samples == len(x)
    assert streamed.features.shape == one_shot.features.shape
    np.testing.assert_allclose(streamed.features, one_shot.features, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(streamed.timestamps, one_shot.timestamps)


def test_streamed_decoding_chunk_size_does_not_change_result(shared_data):
    info = probe(shared_data / "mosi" / "Oz06ZWiO20M_6.mp4")
    small = AudioExtractor(AudioConfig(), chunk_seconds=0.3).extract(info)
    large = AudioExtractor(AudioConfig(), chunk_seconds=60).extract(info)
    np.testing.assert_allclose(small.features, large.features, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["silence.wav", "silent_track.mp4"])
def test_silent_track_is_missing(extractor, tone_dir, name):
    info = probe(tone_dir / name)
    assert info.has_audio
    with pytest.raises(ModalityMissing, match=r"silent audio track \(max level -?\d+\.\d dBFS\)"):
        extractor.extract(info)


@pytest.mark.parametrize("dbfs, present", [(-70.0, False), (-40.0, True)])
def test_silence_threshold(extractor, dbfs, present):
    t = np.arange(SR) / SR
    x = (10 ** (dbfs / 20) * np.sqrt(2) * np.sin(2 * np.pi * 150 * t)).astype(np.float32)  # RMS at dbfs
    if present:
        assert extractor.extract_chunks([x]).frames == 25
    else:
        with pytest.raises(ModalityMissing, match="silent"):
            extractor.extract_chunks([x])


def test_video_without_audio_track_is_missing(extractor, synthetic_dir):
    with pytest.raises(ModalityMissing, match="no audio track"):
        extractor.extract(probe(synthetic_dir / "face_silent.mp4"))


def test_empty_audio_is_missing(extractor):
    with pytest.raises(ModalityMissing, match="no audio samples"):
        extractor.extract_chunks([np.zeros(0, np.float32)])


def test_frame_rate_must_be_whole_hops():
    with pytest.raises(ValueError, match="multiple of hop_ms"):
        AudioExtractor(AudioConfig(frame_rate=16.0))
    assert AudioExtractor(AudioConfig(frame_rate=50.0)).extract_chunks([np.ones(SR, np.float32) * 0.1]).frames == 50
