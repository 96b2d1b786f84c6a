"""Facial expression and head-pose descriptors per video frame, from MediaPipe face detection + face mesh.

Per frame the largest face is located (``face_tracker``) and its 468-point face mesh computed
(``mediapipe_face``); the mesh is reduced to a compact descriptor (``face_descriptors``:
``DESCRIPTOR_NAMES``, one line each in ``DESCRIPTOR_DOCS``).

How faces are found (chosen by measurement): the face-mesh network runs on every frame, on a crop
around the face that follows it from frame to frame; the face detector runs on the first frame, when
the mesh loses the face, and once a second (see ``mmckd.extract.face_tracker``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from mmckd.extract.config import VisionConfig
from mmckd.extract.errors import ModalityMissing
from mmckd.extract.face_descriptors import DESCRIPTOR_NAMES, face_descriptors
from mmckd.extract.face_tracker import FaceTracker
from mmckd.extract.media import MediaInfo, iter_video_frames
from mmckd.extract.mediapipe_face import FaceModels
from mmckd.extract.mesh_schedule import Landmarks, MotionGate, fill_skipped
from mmckd.feature_file import Sequence

log = logging.getLogger(__name__)

_DESCRIBE_CHUNK = 256  # frames of landmarks held before they are reduced to descriptors


class VisionExtractor:
    """Face descriptors (``DESCRIPTOR_NAMES``) per frame of a video; the MediaPipe models load once and are reused."""

    def __init__(self, config: VisionConfig) -> None:
        self.config = config
        self.dim = len(DESCRIPTOR_NAMES)
        self.last_meshed = 0  # frames of the last extracted clip that got a face mesh (the others: interpolated)
        cv2.setNumThreads(1)
        self._models = FaceModels(config)

    def close(self) -> None:
        self._models.close()

    def __enter__(self) -> VisionExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _frames(
        self, frames: Iterable[tuple[float, np.ndarray]]
    ) -> Iterator[tuple[float, tuple[int, int], np.ndarray | None, float]]:
        """Yield (timestamp, (width, height), landmarks or None, presence) for every decoded frame, in order."""
        tracker = FaceTracker(self._models, self.config)
        c = self.config
        gate = MotionGate(c.mesh_max_interval, c.mesh_motion_threshold) if c.mesh_max_interval > 1 else None
        self.last_meshed = 0
        skipped: list[float] = []  # timestamps of frames since the last mesh that went without one
        last: Landmarks = (None, 0.0)
        size = (0, 0)
        for ts, frame in frames:
            size = (frame.shape[1], frame.shape[0])
            if gate is not None and last[0] is not None and gate.still(frame, tracker.roi):
                tracker.skip()
                skipped.append(ts)
                continue
            points, presence = tracker.step(frame)
            self.last_meshed += 1
            if gate is not None:
                gate.meshed(frame, tracker.roi)
                for t, filled in zip(skipped, fill_skipped(last, (points, presence), len(skipped))):
                    yield t, size, *filled
                skipped.clear()
            yield ts, size, points, presence
            last = (points, presence)
        for t, filled in zip(skipped, fill_skipped(last, None, len(skipped))):
            yield t, size, *filled

    def extract(self, info: MediaInfo) -> Sequence:
        """Descriptors of the largest face per frame; frames without a face stay, as zeros with mask False."""
        if not info.has_video:
            raise ModalityMissing("no video stream")
        return self.extract_frames(iter_video_frames(info, self.config.fps, self.config.max_side))

    def extract_frames(self, frames: Iterable[tuple[float, np.ndarray]]) -> Sequence:
        """`extract` of frames decoded elsewhere: (timestamp, RGB uint8 HxWx3) at this configuration's fps and
        max_side (`mmckd.extract.media.iter_video_frames` or `decode_streams`)."""
        rows: list[np.ndarray] = []
        timestamps: list[float] = []
        mask: list[bool] = []
        confidence: list[float] = []
        pending: list[np.ndarray] = []
        size = (0, 0)

        def flush() -> None:
            if pending:
                rows.append(face_descriptors(np.stack(pending), *size))
                pending.clear()

        for ts, frame_size, points, presence in self._frames(frames):
            if frame_size != size:  # descriptors are normalised by the frame size: one size per chunk
                flush()
            size = frame_size
            timestamps.append(ts)
            mask.append(points is not None)
            confidence.append(presence)
            if points is not None:
                pending.append(points)
                if len(pending) >= _DESCRIBE_CHUNK:
                    flush()
        flush()
        n = len(timestamps)
        if n == 0:
            raise ModalityMissing("no video frames decoded")
        found = np.array(mask, bool)
        if not found.any():
            raise ModalityMissing(f"no face found in {n} frames")
        features = np.zeros((n, self.dim), np.float32)
        features[found] = np.concatenate(rows)
        log.debug("face in %d of %d frames, mesh on %d", int(found.sum()), n, self.last_meshed)
        return Sequence(
            features=features,
            timestamps=np.array(timestamps, np.float64),
            mask=found,
            confidence=np.array(confidence, np.float32),
        )
