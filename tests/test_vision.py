"""Facial descriptors from real MediaPipe models on real and synthetic videos (real ffmpeg, no mocks)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from mmckd.extract.config import VisionConfig
from mmckd.extract.errors import ModalityMissing
from mmckd.extract.face_descriptors import DESCRIPTOR_DOCS, DESCRIPTOR_NAMES, face_descriptors
from mmckd.extract.media import iter_video_frames, probe
from mmckd.extract.vision import VisionExtractor

COL = {name: i for i, name in enumerate(DESCRIPTOR_NAMES)}
CONFIG = VisionConfig()


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True)


def _encode(inputs: list[Path], graph: str, out: Path) -> Path:
    args = [a for p in inputs for a in ("-i", str(p))]
    _ffmpeg(*args, "-filter_complex", graph, "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", str(out))
    return out


@pytest.fixture(scope="module")
def extractor():
    ex = VisionExtractor(CONFIG)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def real(real_videos, extractor) -> dict[str, object]:
    """Name -> Sequence for each real talking-head video."""
    return {p.name: extractor.extract(probe(p)) for p in real_videos}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Small synthetic clips: a still face, no face, and clips built from them with ffmpeg filters."""
    from mmckd.testing.clips import make_clip

    d = tmp_path_factory.mktemp("vision")
    face = make_clip(d / "face.mp4", None, audio=False, seconds=1.0)
    blank = make_clip(d / "blank.mp4", None, picture="blank", audio=False, seconds=1.0)
    small_then_large = "[0:v]scale=180:180,pad=180:360:0:90[s];[s][1:v]hstack"
    large_then_small = "[1:v]scale=180:180,pad=180:360:0:90[s];[0:v][s]hstack"
    return {
        "face": face,
        "blank": blank,
        "small_left_large_right": _encode([face, face], small_then_large, d / "two_a.mp4"),
        "large_left_small_right": _encode([face, face], large_then_small, d / "two_b.mp4"),
        "face_blank_face": _encode([face, blank, face], "[0:v][1:v][2:v]concat=n=3:v=1:a=0", d / "fbf.mp4"),
        "small_face_wide_frame": _encode([face], "[0:v]scale=160:160,pad=960:540:400:150:gray", d / "wide.mp4"),
    }


def test_descriptor_names_are_documented(extractor):
    assert extractor.dim == len(DESCRIPTOR_NAMES) == len(set(DESCRIPTOR_NAMES))
    assert 16 <= extractor.dim <= 24
    assert set(DESCRIPTOR_DOCS) == set(DESCRIPTOR_NAMES)
    for name, doc in DESCRIPTOR_DOCS.items():
        assert doc.strip() and "\n" not in doc, name


def test_real_videos_layout_and_face_ratio(real_videos, real):
    for path in real_videos:
        seq = real[path.name]
        n = seq.frames
        duration = probe(path).duration
        assert abs(n - duration * CONFIG.fps) <= 2, (path.name, n, duration)
        assert seq.features.shape == (n, len(DESCRIPTOR_NAMES)) and seq.features.dtype == np.float32
        np.testing.assert_allclose(seq.timestamps, np.arange(n) / CONFIG.fps)
        assert seq.mask.mean() > 0.8, (path.name, seq.mask.mean())
        assert np.isfinite(seq.features).all()
        assert (seq.features[~seq.mask] == 0).all() and (seq.confidence[~seq.mask] == 0).all()
        assert ((seq.confidence[seq.mask] >= CONFIG.min_tracking_confidence) & (seq.confidence <= 1)).all()


def test_real_videos_descriptors_are_plausible(real_videos, real):
    for path in real_videos:
        f = real[path.name].features[real[path.name].mask]
        med = dict(zip(DESCRIPTOR_NAMES, np.median(f, 0)))
        assert 0.6 < med["mouth_width"] < 1.6, (path.name, med)  # lip corners vs eye centres, any adult face
        assert 0.1 < med["eye_open_right"] < 0.6 and 0.1 < med["eye_open_left"] < 0.6, (path.name, med)
        assert 0.0 < med["brow_raise_right"] < 0.8 and 0.0 < med["brow_raise_left"] < 0.8, (path.name, med)
        assert 0.6 < med["jaw_drop"] < 1.6 and 0.0 < med["nose_lip_gap"] < 0.4, (path.name, med)
        assert 0.15 < med["face_x"] < 0.85 and 0.15 < med["face_y"] < 0.85 and 0.1 < med["face_size"] < 0.9
        assert np.abs(f[:, [COL["head_yaw"], COL["head_pitch"], COL["head_roll"]]]).max() < np.pi / 2


def test_mouth_moves_during_speech_but_not_on_a_still(real_videos, real, extractor, clips):
    still = extractor.extract(probe(clips["face"]))
    still_std = still.features[still.mask, COL["mouth_open"]].std()
    for path in real_videos:
        seq = real[path.name]
        speech_std = seq.features[seq.mask, COL["mouth_open"]].std()
        assert speech_std > 0.01 and speech_std > 2 * still_std, (path.name, speech_std, still_std)


def test_matches_mediapipe_face_mesh_solution(real_videos, real):
    """The minimal mesh graph + OpenCV crops reproduce MediaPipe's own FaceMesh (tracking mode) landmarks."""
    import mediapipe as mp

    path = real_videos[0]
    frames = list(iter_video_frames(probe(path), CONFIG.fps, CONFIG.max_side))
    h, w = frames[0][1].shape[:2]
    ours = real[path.name]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1) as mesh:
        found = [mesh.process(frame).multi_face_landmarks for _, frame in frames]
    keep = np.array([r is not None for r in found]) & ours.mask
    assert keep.mean() > 0.8
    ref = np.array([[(p.x * w, p.y * h, p.z * w) for p in r[0].landmark] for r, k in zip(found, keep) if k])
    diff = np.abs(face_descriptors(ref, w, h) - ours.features[keep])
    assert np.median(diff, 0).max() < 0.01, dict(zip(DESCRIPTOR_NAMES, np.median(diff, 0)))


def test_tracking_agrees_with_per_frame_detection(real_videos, real):
    """Following the face from frame to frame gives the same descriptors as detecting it on every frame
    (compared on the liveliest video: small movements are below the landmark jitter of either mode)."""
    path = max(real_videos, key=lambda p: real[p.name].features[real[p.name].mask, COL["mouth_open"]].std())
    with VisionExtractor(VisionConfig(tracking=False)) as static:
        per_frame = static.extract(probe(path))
    tracked = real[path.name]
    both = per_frame.mask & tracked.mask
    assert both.mean() > 0.8
    for name in ("mouth_open", "lip_corner_lift", "jaw_drop", "head_pitch", "head_roll", "face_x"):
        a, b = tracked.features[both, COL[name]], per_frame.features[both, COL[name]]
        assert np.corrcoef(a, b)[0, 1] > 0.85, name


def test_mirrored_video_flips_yaw_roll_and_sides(real_videos, real, extractor, tmp_path):
    path = real_videos[-1]  # the MOSI clip turns its head both ways
    mirrored = extractor.extract(probe(_encode([path], "[0:v]hflip", tmp_path / "mirrored.mp4")))
    seq = real[path.name]
    both = seq.mask & mirrored.mask
    assert both.mean() > 0.8
    a, b = seq.features[both], mirrored.features[both]
    for name in ("head_yaw", "head_roll"):
        assert a[:, COL[name]].std() > 0.05, name  # the clip really turns and tilts
        assert np.corrcoef(a[:, COL[name]], b[:, COL[name]])[0, 1] < -0.9, name
        turned = np.abs(a[:, COL[name]]) > 0.15
        assert turned.sum() > 10 and (np.sign(a[turned, COL[name]]) == -np.sign(b[turned, COL[name]])).mean() > 0.95
    assert np.corrcoef(a[:, COL["head_pitch"]], b[:, COL["head_pitch"]])[0, 1] > 0.8
    np.testing.assert_allclose(a[:, COL["face_x"]] + b[:, COL["face_x"]], 1.0, atol=0.03)
    assert np.corrcoef(a[:, COL["eye_open_right"]], b[:, COL["eye_open_left"]])[0, 1] > 0.5


def test_synthetic_face_is_found(synthetic_dir, extractor):
    seq = extractor.extract(probe(synthetic_dir / "face_speech.mp4"))
    assert seq.mask.mean() >= 0.9


def test_no_face_raises(synthetic_dir, extractor):
    with pytest.raises(ModalityMissing, match=r"no face found in \d+ frames"):
        extractor.extract(probe(synthetic_dir / "noface_speech.mp4"))


def test_audio_only_file_raises(synthetic_dir, extractor):
    with pytest.raises(ModalityMissing, match="no video stream"):
        extractor.extract(probe(synthetic_dir / "speech_only.wav"))


def test_frames_without_face_are_kept_as_masked_zeros(clips, extractor):
    seq = extractor.extract(probe(clips["face_blank_face"]))
    n = seq.frames
    assert n == 75
    third = n // 3
    assert seq.mask[: third - 2].all() and not seq.mask[third + 2 : 2 * third - 2].any()
    assert seq.mask[2 * third + 2 :].all()  # the face is found again after it was lost
    assert (seq.features[~seq.mask] == 0).all() and (seq.confidence[~seq.mask] == 0).all()


@pytest.mark.parametrize("layout", ["small_left_large_right", "large_left_small_right"])
def test_largest_of_two_faces_is_reported(clips, extractor, layout):
    alone = extractor.extract(probe(clips["face"]))
    seq = extractor.extract(probe(clips[layout]))
    assert seq.mask.mean() >= 0.9
    x = np.median(seq.features[seq.mask, COL["face_x"]])
    # frame 540 px wide: the large (360 px) copy spans x 0..2/3 or 1/3..1 of it
    expected = np.median(alone.features[alone.mask, COL["face_x"]]) * 360 / 540
    expected += 180 / 540 if layout == "small_left_large_right" else 0.0
    assert abs(x - expected) < 0.03, (x, expected)
    size, size_alone = (np.median(s.features[s.mask, COL["face_size"]]) for s in (seq, alone))
    assert abs(size / size_alone - np.sqrt(360 / 540)) < 0.05  # the same face in a frame of 1.5x the area


def test_small_face_in_wide_frame_is_found(clips, extractor):
    seq = extractor.extract(probe(clips["small_face_wide_frame"]))
    assert seq.mask.mean() >= 0.9
    assert np.median(seq.features[seq.mask, COL["face_size"]]) < 0.15


@pytest.mark.parametrize("angle", [0.35, -0.35])
def test_rotated_face_reads_as_head_roll(clips, extractor, tmp_path, angle):
    """ffmpeg's rotate turns the picture clockwise by angle radians; roll is documented clockwise-positive."""
    alone = extractor.extract(probe(clips["face"]))
    rotated = extractor.extract(probe(_encode([clips["face"]], f"[0:v]rotate={angle}", tmp_path / "rotated.mp4")))
    assert rotated.mask.mean() >= 0.9
    roll = np.median(rotated.features[rotated.mask, COL["head_roll"]])
    assert abs(roll - np.median(alone.features[alone.mask, COL["head_roll"]]) - angle) < 0.05
    for name in ("mouth_width", "eye_open_left", "brow_raise_right"):  # expressions do not change with roll
        before, after = (np.median(s.features[s.mask, COL[name]]) for s in (alone, rotated))
        assert abs(after - before) < 0.1 * abs(before), name


# -- adaptive mesh rate (VisionConfig.mesh_max_interval / mesh_motion_threshold) ---------------------------------------
FULL_RATE = VisionConfig(mesh_max_interval=1)


@pytest.fixture(scope="module")
def full_rate():
    ex = VisionExtractor(FULL_RATE)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def moving_face(clips, tmp_path_factory) -> Path:
    """The still face panned across the frame (a moving 360x360 crop of a 480x480 picture): every frame differs."""
    out = tmp_path_factory.mktemp("moving") / "moving.mp4"
    return _encode([clips["face"]], "[0:v]scale=480:480,crop=360:360:'t*100':'t*50'", out)


def test_full_rate_is_the_per_frame_tracker(real_videos, full_rate):
    """mesh_max_interval 1 is the behaviour before the adaptive rate existed: the tracker on every frame."""
    from mmckd.extract.face_tracker import FaceTracker

    info = probe(real_videos[0])
    seq = full_rate.extract(info)
    tracker = FaceTracker(full_rate._models, FULL_RATE)
    steps = [tracker.step(frame) for _, frame in iter_video_frames(info, FULL_RATE.fps, FULL_RATE.max_side)]
    h, w = next(iter_video_frames(info, FULL_RATE.fps, FULL_RATE.max_side))[1].shape[:2]
    found = np.array([p is not None for p, _ in steps])
    np.testing.assert_array_equal(seq.mask, found)
    np.testing.assert_array_equal(seq.confidence, np.array([c for _, c in steps], np.float32))
    np.testing.assert_array_equal(
        seq.features[found], face_descriptors(np.stack([p for p, _ in steps if p is not None]), w, h)
    )
    assert full_rate.last_meshed == seq.frames


def test_still_face_skips_meshes_and_keeps_every_frame(clips, extractor, full_rate):
    assert CONFIG.mesh_max_interval > 1  # the default is adaptive
    full = full_rate.extract(probe(clips["face"]))
    adaptive = extractor.extract(probe(clips["face"]))
    assert full_rate.last_meshed == full.frames
    assert extractor.last_meshed <= full.frames / 2, (extractor.last_meshed, full.frames)
    assert extractor.last_meshed >= full.frames / CONFIG.mesh_max_interval  # never more than max_interval apart
    np.testing.assert_array_equal(adaptive.timestamps, full.timestamps)
    np.testing.assert_array_equal(adaptive.mask, full.mask)
    assert adaptive.mask.all() and (adaptive.confidence >= CONFIG.min_tracking_confidence).all()
    np.testing.assert_allclose(adaptive.features, full.features, atol=0.02)


def test_moving_face_is_meshed_on_every_changed_frame(moving_face, extractor, full_rate):
    full = full_rate.extract(probe(moving_face))
    adaptive = extractor.extract(probe(moving_face))
    assert extractor.last_meshed == full.frames  # threshold 0: any change meshes the frame
    np.testing.assert_array_equal(adaptive.features, full.features)
    assert np.ptp(full.features[:, COL["face_x"]]) > 0.05  # the face really moves


def test_interval_caps_the_frames_without_mesh(moving_face, full_rate):
    """With a threshold no change exceeds, the mesh runs every max_interval-th frame; the rows in between are
    interpolated: one row per sampled frame, same timestamps, values between their meshed neighbours."""
    full = full_rate.extract(probe(moving_face))
    config = VisionConfig(mesh_max_interval=3, mesh_motion_threshold=255.0)
    with VisionExtractor(config) as ex:
        seq = ex.extract(probe(moving_face))
        meshed = ex.last_meshed
    assert meshed == -(-full.frames // 3), (meshed, full.frames)
    np.testing.assert_array_equal(seq.timestamps, full.timestamps)
    assert seq.mask.all()
    x = seq.features[:, COL["face_x"]]
    for i in range(1, full.frames - 3, 3):  # rows 1, 2 lie between meshed rows 0 and 3
        lo, hi = sorted((x[i - 1], x[i + 2]))
        assert lo - 1e-6 <= x[i] <= hi + 1e-6 and lo - 1e-6 <= x[i + 1] <= hi + 1e-6
    assert np.corrcoef(x, full.features[:, COL["face_x"]])[0, 1] > 0.95
