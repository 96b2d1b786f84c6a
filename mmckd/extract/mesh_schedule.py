"""Adaptive face-mesh rate: which sampled frames get a face mesh, and landmarks for the frames that do not.

Set by ``VisionConfig.mesh_max_interval`` and ``mesh_motion_threshold``. At full rate (``max_interval`` 1,
the behaviour before this module existed) every sampled frame gets a
mesh. Above it, a frame whose face crop looks like the crop of the last meshed frame is skipped, at most
``max_interval - 1`` frames in a row. "Looks like": the crop (the square the mesh would see, around the
followed face) reduced to a 12x12 grey thumbnail, each cell the mean of 1/144 of the crop, has no cell
that changed by more than ``motion_threshold`` grey levels (0-255) since the last meshed frame; a blink,
a mouth opening or a head turn changes some cells by more and meshes the frame. At threshold 0 (the
default) the test is exact and cheaper: the frame must be identical to the last meshed one (a frame that
ffmpeg repeated to reach the sampling rate), so no thumbnail is computed at all. Skipped frames get
landmarks and presence interpolated linearly between the meshes before and after them (held from the
last mesh at the end of the clip or when the next mesh finds no face), so the output keeps one row per
sampled frame with the same timestamps.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from mmckd.extract.mediapipe_face import Roi

_THUMB_SAMPLES = 48  # the crop is sampled on a 48x48 grid ...
_THUMB_CELLS = 12  # ... then averaged to 12x12 cells

Landmarks = tuple[np.ndarray | None, float]  # (468, 3) frame-pixel landmarks or None, face-presence score


def face_thumbnail(frame: np.ndarray, roi: Roi) -> np.ndarray:
    """12x12 float32 grey thumbnail (cell means, 0-255) of the roi's square crop of an RGB frame."""
    crop = cv2.warpAffine(
        frame, roi.crop_to_frame(_THUMB_SAMPLES), (_THUMB_SAMPLES, _THUMB_SAMPLES),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.resize(grey, (_THUMB_CELLS, _THUMB_CELLS), interpolation=cv2.INTER_AREA)


class MotionGate:
    """Decides frame by frame whether the followed face is still enough to skip its mesh (state: the
    thumbnail of the last meshed frame and how many frames were skipped since)."""

    def __init__(self, max_interval: int, motion_threshold: float) -> None:
        self.max_interval = max_interval
        self.motion_threshold = motion_threshold
        self.reference: np.ndarray | None = None  # thumbnail of the last meshed frame, or the frame itself at 0
        self.skipped = 0

    def still(self, frame: np.ndarray, roi: Roi | None) -> bool:
        """True when this frame may go without a mesh (counted as skipped)."""
        if roi is None or self.reference is None or self.skipped >= self.max_interval - 1:
            return False
        if self.motion_threshold == 0:
            if not np.array_equal(frame, self.reference):
                return False
        elif float(np.abs(face_thumbnail(frame, roi) - self.reference).max()) > self.motion_threshold:
            return False
        self.skipped += 1
        return True

    def meshed(self, frame: np.ndarray, roi: Roi | None) -> None:
        """The frame was meshed; roi: where the face is followed from now on (None: no face)."""
        self.skipped = 0
        if roi is None:
            self.reference = None
        else:
            # at 0 a copy of the frame: a caller may hand frames in a buffer it then reuses
            self.reference = frame.copy() if self.motion_threshold == 0 else face_thumbnail(frame, roi)


def fill_skipped(before: Landmarks, after: Landmarks | None, count: int) -> Iterator[Landmarks]:
    """Landmarks of `count` skipped frames between two meshed frames: linear between them when both found
    the face, else held from `before` (after is None at the end of the clip)."""
    points0, presence0 = before
    if points0 is None:
        raise ValueError("frames are skipped only after a mesh that found the face")
    points1, presence1 = after if after is not None else (None, 0.0)
    for k in range(1, count + 1):
        if points1 is None:
            yield points0, presence0
        else:
            w = k / (count + 1)
            yield (1 - w) * points0 + w * points1, (1 - w) * presence0 + w * presence1
