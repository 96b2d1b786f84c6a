"""Transcript sources: precedence (labels > sidecar > ASR), .txt/.srt/.vtt parsing, and malformed sidecars."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from mmckd.extract.config import TranscriptConfig
from mmckd.extract.errors import ModalityMissing
from mmckd.extract.transcript import Transcript, find_sidecar, find_transcript, no_transcript_reason, read_sidecar

SRT = (
    "\ufeff1\r\n"
    "00:00:01,000 --> 00:00:02,500\r\n"
    "<i>Hello</i> there,\r\n"
    '{\\an8}<font color="red">general</font> &amp; Kenobi\r\n'
    "\r\n"
    "2\r\n"
    "00:00:03,000 --> 00:00:04,250 X1:40 X2:600 Y1:20 Y2:50\r\n"
    "<b>Bye</b>\r\n"
    "3\r\n"  # no blank line before the next cue: its number and timing must not end up in the text
    "01:00:05,000 --> 01:00:06,000\r\n"
    "again\r\n"
)

VTT = """WEBVTT - a title
Kind: captions
Language: en

NOTE a one-line note

NOTE
a note over
two lines

STYLE
::cue { color: yellow }

REGION
id:fred width:40%

intro-1
01:02.500 --> 01:04.000 align:start position:10% line:0
<v Roger Bingham><c.yellow>We are</c> in</v>
<00:01:03.000>New York City

00:01:05.000 --> 00:01:06.000
&lt;laughs&gt; really&nbsp;good

00:01:07.000 --> 00:01:08.000
<i></i>
"""


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


# -- formats ----------------------------------------------------------------------------------------------------------
def test_txt_is_joined_to_one_line_without_bom(tmp_path):
    t = read_sidecar(write(tmp_path / "c.txt", "\ufeff  I really\r\nloved\tthis\n\n movie.  \n"))
    assert t == Transcript("I really loved this movie.", "sidecar:txt", ())


def test_srt_cues_tags_numbers_and_timing(tmp_path):
    t = read_sidecar(write(tmp_path / "c.srt", SRT))
    assert t.source == "sidecar:srt"
    assert t.segments == (
        (1.0, 2.5, "Hello there, general & Kenobi"),
        (3.0, 4.25, "Bye"),
        (3605.0, 3606.0, "again"),
    )
    assert t.text == "Hello there, general & Kenobi Bye again"


def test_vtt_header_note_style_region_identifiers_settings_and_tags(tmp_path):
    t = read_sidecar(write(tmp_path / "c.vtt", VTT))
    assert t.source == "sidecar:vtt"
    # hours optional; identifier, settings, voice/class spans and inline timestamps dropped; entities decoded;
    # the cue whose text is only tags contributes nothing
    assert t.segments == ((62.5, 64.0, "We are in New York City"), (65.0, 66.0, "<laughs> really good"))
    assert t.text == "We are in New York City <laughs> really good"
    for leaked in ("Kind", "note", "cue", "fred", "intro", "Roger", "-->"):
        assert leaked not in t.text


def test_vtt_with_crlf_and_bom_matches_plain(tmp_path):
    plain = read_sidecar(write(tmp_path / "a.vtt", VTT))
    crlf = read_sidecar(write(tmp_path / "b.vtt", "\ufeff" + VTT.replace("\n", "\r\n")))
    assert crlf == plain


def test_srt_parses_many_generated_cues(tmp_path):
    rng = random.Random(7)
    words = ["good", "bad", "movie", "really", "not", "the", "plot", "was"]
    cues, t, lines = [], 0.0, []
    for i in range(1, 60):
        start, end = t + rng.randint(0, 900) / 1000, t + rng.randint(1000, 5000) / 1000
        t = end
        text = " ".join(rng.choices(words, k=rng.randint(1, 6)))
        cues.append((round(start, 3), round(end, 3), text))

        def ts(s: float) -> str:
            ms = round(s * 1000)
            return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

        half = len(text.split()) // 2  # split some cues over two lines
        body = text if half == 0 else " ".join(text.split()[:half]) + "\n" + " ".join(text.split()[half:])
        lines.append(f"{i}\n{ts(start)} --> {ts(end)}\n{body}\n")
    got = read_sidecar(write(tmp_path / "many.srt", "\n".join(lines)))
    assert [(round(a, 3), round(b, 3), x) for a, b, x in got.segments] == cues
    assert got.text == " ".join(c[2] for c in cues)


def test_utf16_with_bom_is_decoded(tmp_path):
    t = read_sidecar(write(tmp_path / "c.txt", "Très bien, merci.".encode("utf-16")))
    assert t.text == "Très bien, merci."


def test_non_utf8_bytes_are_replaced_with_a_warning(tmp_path, caplog):
    path = write(tmp_path / "c.txt", "un café noir".encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="mmckd.extract.transcript"):
        t = read_sidecar(path)
    assert t.text == "un caf\ufffd noir"
    assert any(str(path) in r.getMessage() and "UTF-8" in r.getMessage() for r in caplog.records)


def test_empty_sidecars_give_empty_text(tmp_path):
    for name, content in [("a.txt", ""), ("b.txt", " \n\n"), ("c.srt", "\ufeff\r\n"), ("d.vtt", "WEBVTT\n\nNOTE x\n")]:
        t = read_sidecar(write(tmp_path / name, content))
        assert t.text == "" and t.segments == ()


# -- malformed --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.srt", "1\n00:00:01,000 --> soon\nhello\n", "bad.srt:2: unreadable cue timing"),
        ("plain.srt", "just some words\nwith no timing\n", "not SubRip"),
        ("noheader.vtt", "00:01.000 --> 00:02.000\nhello\n", "not WebVTT"),
        ("noheader2.vtt", "\ufeffhello\n", "not WebVTT"),
        ("notimes.vtt", "WEBVTT\n\nhello there\n", "not WebVTT: text but no cue timing"),
        ("backwards.vtt", "WEBVTT\n\n00:05.000 --> 00:02.000\nhi\n", "backwards.vtt:3: cue ends"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data"),
        ("notes.docx", "hello", "unsupported transcript format"),
    ],
)
def test_malformed_sidecar_raises_one_line_error_naming_the_file(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(ValueError) as err:
        read_sidecar(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_unreadable_sidecar_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        read_sidecar(tmp_path / "gone.txt")
    (tmp_path / "dir.srt").mkdir()
    with pytest.raises(ValueError, match="dir.srt: cannot read"):
        read_sidecar(tmp_path / "dir.srt")


# -- finding sidecars ----------------------------------------------------------------------------------------------
def test_find_sidecar_order_case_and_stem(tmp_path):
    media = tmp_path / "clip.v2.mp4"
    assert find_sidecar(media, (".txt", ".srt", ".vtt")) is None
    write(tmp_path / "clip.txt", "other stem")  # "clip" is not the stem of clip.v2.mp4
    write(tmp_path / "clip.v2.SRT", SRT)
    assert find_sidecar(media, (".txt", ".srt", ".vtt")) == tmp_path / "clip.v2.SRT"
    write(tmp_path / "clip.v2.txt", "words")
    assert find_sidecar(media, (".txt", ".srt")) == tmp_path / "clip.v2.txt"
    assert find_sidecar(media, ("srt", "txt")) == tmp_path / "clip.v2.SRT"  # dot optional, order respected
    with pytest.raises(ValueError, match="unsupported format '.json'"):
        find_sidecar(media, (".json",))


# -- precedence -------------------------------------------------------------------------------------------------------
def test_labels_then_sidecars_in_config_order(tmp_path):
    media = tmp_path / "clip.mp4"
    cfg = TranscriptConfig()
    assert find_transcript(media, None, cfg, None) is None
    assert find_transcript(None, None, cfg, None) is None
    write(tmp_path / "clip.vtt", VTT)
    assert find_transcript(media, None, cfg, None).source == "sidecar:vtt"
    write(tmp_path / "clip.srt", SRT)
    assert find_transcript(media, None, cfg, None).source == "sidecar:srt"
    write(tmp_path / "clip.txt", "from the text file")
    assert find_transcript(media, None, cfg, None) == Transcript("from the text file", "sidecar:txt")
    assert find_transcript(media, None, TranscriptConfig(sidecars=(".vtt", ".txt")), None).source == "sidecar:vtt"
    assert find_transcript(media, None, TranscriptConfig(sidecars=()), None) is None
    assert find_transcript(media, "  it was\n good ", cfg, None) == Transcript("it was good", "labels")
    assert find_transcript(None, "only labels", cfg, None).source == "labels"


def test_blank_label_and_empty_sidecar_fall_through(tmp_path):
    media = tmp_path / "clip.mp4"
    write(tmp_path / "clip.txt", "\n \n")
    write(tmp_path / "clip.srt", "")
    write(tmp_path / "clip.vtt", VTT)
    t = find_transcript(media, "   ", TranscriptConfig(), None)
    assert t.source == "sidecar:vtt" and "New York" in t.text


def test_malformed_sidecar_makes_text_missing_with_the_reason(tmp_path):
    media = tmp_path / "clip.mp4"
    write(tmp_path / "clip.srt", "1\n00:00:01 --> 00:00:02\nhi\n")
    with pytest.raises(ModalityMissing) as err:
        find_transcript(media, None, TranscriptConfig(), None)
    assert str(tmp_path / "clip.srt") in err.value.reason and "unreadable cue timing" in err.value.reason
    # a label text wins before the sidecar is ever read
    assert find_transcript(media, "fine", TranscriptConfig(), None).source == "labels"


def test_no_transcript_reason():
    assert no_transcript_reason(TranscriptConfig()) == "no transcript (labels, sidecar .txt/.srt/.vtt, ASR off)"
    assert "ASR heard no speech" in no_transcript_reason(TranscriptConfig(asr=True))
    assert "sidecar .srt," in no_transcript_reason(TranscriptConfig(sidecars=(".srt",)))


# -- with real speech recognition -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recognizer():
    pytest.importorskip("faster_whisper", reason="ASR needs the optional extra mmckd[asr]")
    from mmckd.extract.asr import SpeechRecognizer

    return SpeechRecognizer()


@pytest.fixture(scope="module")
def spoken_wav(tmp_path_factory) -> Path:
    from mmckd.testing.clips import speech_wav

    return speech_wav("I really loved this movie, it was wonderful.", tmp_path_factory.mktemp("asr") / "spoken.wav")


def test_asr_is_last_and_only_when_on(recognizer, spoken_wav):
    on, off = TranscriptConfig(asr=True), TranscriptConfig(asr=False)
    heard = find_transcript(spoken_wav, None, on, recognizer)
    assert heard.source == "asr" and "movie" in heard.text.lower() and heard.segments
    assert find_transcript(spoken_wav, None, off, recognizer) is None
    assert find_transcript(spoken_wav, None, on, None) is None  # callers pass None for clips without audio
    assert find_transcript(spoken_wav, "a label", on, recognizer).source == "labels"
    sidecar = write(spoken_wav.with_suffix(".txt"), "a sidecar")
    try:
        assert find_transcript(spoken_wav, None, on, recognizer) == Transcript("a sidecar", "sidecar:txt")
    finally:
        sidecar.unlink()


def test_transcript_module_does_not_import_asr():
    """transcript.py needs only the Recogniser protocol: importing it loads neither asr.py nor faster-whisper."""
    import subprocess
    import sys

    code = "import sys, mmckd.extract.transcript; print(sorted(m for m in sys.modules if 'asr' in m or 'whisper' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
