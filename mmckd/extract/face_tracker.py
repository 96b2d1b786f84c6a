"""Following the largest face from frame to frame of one clip: when to run the detectors, where to crop the mesh.

With ``tracking`` on, the mesh crop follows the previous frame's landmarks and the face detector runs
only on the first frame, when the mesh loses the face (its face-presence score falls below
``min_tracking_confidence``), and once a second to notice a larger face entering the picture. With
``tracking`` off the detector runs on every frame (about 1.7x the cost). Of several faces the one with
the largest box is used. The short-range detector runs first; when it finds nothing the full-range one
(smaller faces, ~2.5x its cost) backs it up.
"""

from __future__ import annotations

import numpy as np

from mmckd.extract.config import VisionConfig
from mmckd.extract.face_descriptors import EYE_L_OUTER, EYE_R_OUTER
from mmckd.extract.mediapipe_face import Detection, FaceModels, Roi


def _box(points: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _inside(point: tuple[float, float], box: tuple[float, float, float, float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


_REDETECT_SECONDS = 1.0  # while tracking, look for a larger face this often
_FULL_RANGE_EVERY = 5  # without a face, the full-range detector backs up the short-range one every 5th frame


def _centre(box: tuple[float, float, float, float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


class FaceTracker:
    """Finds the largest face frame after frame for one clip (state: the crop that follows the face)."""

    def __init__(self, models: FaceModels, config: VisionConfig) -> None:
        self.models = models
        self.tracking = config.tracking
        self.threshold = config.min_tracking_confidence
        self.redetect_every = max(1, round(_REDETECT_SECONDS * config.fps))
        self.roi: Roi | None = None
        self.tracked: tuple[float, float, float, float] | None = None  # landmark box of the followed face
        self.since_detect = 0
        self.since_full = _FULL_RANGE_EVERY

    def _detect(self, frame: np.ndarray) -> list[Detection]:
        """Short-range detections; when there are none, full-range ones (every frame without tracking,
        else at most every _FULL_RANGE_EVERY frames, which bounds the cost of long stretches without a face)."""
        self.since_detect = 0
        found = self.models.short_range(frame)
        if not found and (not self.tracking or self.since_full >= _FULL_RANGE_EVERY):
            self.since_full = 0
            found = self.models.full_range(frame)
        return found

    def _switch_to(self, detections: list[Detection]) -> Detection | None:
        """The largest detection when it should replace the followed face, else None."""
        if not detections:
            return None
        largest = max(detections, key=lambda d: d.area)
        if self.tracked is None:
            return largest
        if _inside(_centre(largest.box), self.tracked):
            return None  # the largest face is the one followed
        if any(_inside(_centre(d.box), self.tracked) for d in detections):
            return largest  # the followed face was detected too, and it is smaller
        tracked_area = (self.tracked[2] - self.tracked[0]) * (self.tracked[3] - self.tracked[1])
        return largest if largest.area > 0.5 * tracked_area else None  # detector boxes are ~0.6x a mesh box

    def skip(self) -> None:
        """A frame went by without a mesh (adaptive mesh rate): the detector clocks still run."""
        self.since_detect += 1
        self.since_full += 1

    def step(self, frame: np.ndarray) -> tuple[np.ndarray | None, float]:
        """Landmarks (468, 3) of the largest face in frame pixels, or None; and the face-presence score."""
        self.since_detect += 1
        self.since_full += 1
        detections: list[Detection] | None = None
        from_detection = False
        if not self.tracking:
            self.roi, self.tracked = None, None
        if self.roi is None or self.since_detect >= self.redetect_every:
            detections = self._detect(frame)
            best = self._switch_to(detections)
            if best is not None:
                self.roi, from_detection = Roi.around(best.box, best.eye_right, best.eye_left), True
        if self.roi is None:
            return None, 0.0
        points, presence = self.models.mesh_at(frame, self.roi)
        if presence < self.threshold and not from_detection:  # lost while following: find the face again
            if detections is None:
                detections = self._detect(frame)
            if detections:
                best = max(detections, key=lambda d: d.area)
                points, presence = self.models.mesh_at(frame, Roi.around(best.box, best.eye_right, best.eye_left))
        if presence < self.threshold:
            self.roi, self.tracked = None, None
            return None, 0.0
        self.tracked = _box(points)
        self.roi = Roi.around(self.tracked, points[EYE_R_OUTER], points[EYE_L_OUTER])
        return points, presence
