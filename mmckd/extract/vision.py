"""Facial expression and head-pose descriptors per video frame, from MediaPipe face detection + face mesh.

Per frame the largest face is located and its 468-point face mesh computed; the mesh is reduced to a
compact descriptor (``DESCRIPTOR_NAMES``, one line each in ``DESCRIPTOR_DOCS``): mouth, eye and brow
measures in the face's own frame (so head turns do not masquerade as expressions) divided by the
inter-ocular distance, head yaw/pitch/roll, and face size and position in the frame.

How faces are found (chosen by measurement): the face-mesh network runs on every frame, on a crop
around the face. With ``tracking`` on, the crop follows the previous frame's landmarks and the face
detector runs only on the first frame, when the mesh loses the face (its face-presence score falls
below ``min_tracking_confidence``), and once a second to notice a larger face entering the picture.
With ``tracking`` off the detector runs on every frame (about 1.7x the cost). Of several faces the
one with the largest box is used. The short-range detector runs first; when it finds nothing the
full-range one (smaller faces, ~2.5x its cost) backs it up. MediaPipe's own ``FaceMesh`` solution
runs its detector on every frame as soon as ``max_num_faces > 1``, so the mesh network runs here in
a minimal MediaPipe graph instead, on crops made with OpenCV; its landmarks match ``FaceMesh``'s.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mmckd.extract.config import VisionConfig
from mmckd.extract.errors import ModalityMissing
from mmckd.extract.media import MediaInfo, iter_video_frames
from mmckd.feature_file import Sequence

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- descriptor definition

# Landmark indices of MediaPipe's 468-point face mesh. "right"/"left" are the subject's own sides
# (the subject's right eye appears on the image's left in an unmirrored video).
_EYE_R_OUTER, _EYE_R_INNER, _EYE_L_OUTER, _EYE_L_INNER = 33, 133, 263, 362
_EYE_R_LIDS = ((159, 145), (158, 153), (160, 144))  # (upper, lower) lid pairs
_EYE_L_LIDS = ((386, 374), (385, 380), (387, 373))
_BROW_R = (105, 66, 52, 65)  # middle of the right brow, upper and lower edge
_BROW_L = (334, 296, 282, 295)
_BROW_R_INNER, _BROW_L_INNER = (107, 55), (336, 285)
_MOUTH_R, _MOUTH_L = 61, 291  # lip corners
_LIP_INNER_TOP, _LIP_INNER_BOTTOM = 13, 14
_LIP_OUTER_TOP, _LIP_OUTER_BOTTOM = 0, 17
_NOSE_BASE, _CHIN, _FOREHEAD = 2, 152, 10
_LOWER_LID_R, _LOWER_LID_L = 145, 374
_SYMMETRIC_PAIRS = ((33, 263), (133, 362), (61, 291), (234, 454), (70, 300))  # (right, left)

DESCRIPTOR_DOCS: dict[str, str] = {
    "mouth_open": "gap between the inner lips (landmarks 13-14) / inter-ocular distance; 0 with the mouth closed",
    "mouth_width": "distance between the lip corners (61-291) / inter-ocular distance; grows with a smile",
    "mouth_aspect": "outer lip height (0-17) / mouth width; high for an open or rounded ('oo') mouth",
    "lip_corner_lift": "height of the lip corners above the inner-lip centre / IOD, face frame; > 0 smile, < 0 frown",
    "lip_corner_asymmetry": "left minus right lip-corner lift / IOD; one-sided smile (sign flips in a mirror image)",
    "eye_open_right": "right eyelid gap / right eye width (eye aspect ratio, 3 lid pairs); ~0 when closed",
    "eye_open_left": "left eyelid gap / left eye width (eye aspect ratio, 3 lid pairs); ~0 when closed",
    "brow_raise_right": "height of the right brow middle above the right eye centre / IOD, face frame",
    "brow_raise_left": "height of the left brow middle above the left eye centre / IOD, face frame",
    "inner_brow_gap": "distance between the inner brow ends (107-336, 55-285) / IOD; smaller when frowning",
    "nose_lip_gap": "nose base (2) to upper-lip top (0) / IOD, face frame; smaller when the upper lip rises",
    "jaw_drop": "nose base (2) to chin (152) / IOD, face frame; grows as the jaw opens",
    "lid_to_lip_corner": "lower eyelid to lip corner, mean of both sides / IOD, face frame; smaller as cheeks rise",
    "head_yaw": "head turn in radians (3-D mesh); > 0 when the face turns toward the image's right (subject's left)",
    "head_pitch": "head nod in radians (3-D mesh, forehead-chin line 10-152); > 0 when the face points up",
    "head_roll": "head tilt in radians; > 0 when tilted clockwise in the image (subject's left eye lower)",
    "face_size": "sqrt(landmark box area / frame area); about 0.5 for a face filling a quarter of the frame",
    "face_x": "horizontal centre of the landmark box / frame width (0 left edge, 1 right edge)",
    "face_y": "vertical centre of the landmark box / frame height (0 top edge, 1 bottom edge)",
}
DESCRIPTOR_NAMES: tuple[str, ...] = tuple(DESCRIPTOR_DOCS)
_COL = {name: i for i, name in enumerate(DESCRIPTOR_NAMES)}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def head_axes(landmarks: np.ndarray) -> np.ndarray:
    """Rotation of each face relative to the camera, (N, 3, 3): columns are the face's own axes in image space.

    landmarks: (N, 468, 3) in pixels (x right, y down, z away from the camera, same scale as x).
    Column 0 points from the subject's right to left side, column 1 from forehead to chin, column 2
    into the head (away from the camera for a frontal face), so a frontal upright face gives identity.
    """
    right = landmarks[:, [r for r, _ in _SYMMETRIC_PAIRS]].mean(1)
    left = landmarks[:, [left for _, left in _SYMMETRIC_PAIRS]].mean(1)
    a = _unit(left - right)
    down = landmarks[:, _CHIN] - landmarks[:, _FOREHEAD]
    b = _unit(down - (down * a).sum(-1, keepdims=True) * a)
    c = np.cross(a, b)
    return np.stack([a, b, c], axis=-1)


def face_descriptors(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """Descriptors (N, len(DESCRIPTOR_NAMES)) float32 of N face meshes.

    landmarks: (N, 468, 3) in pixels of a width x height frame (x right, y down, z away from the camera).
    """
    lm = np.asarray(landmarks, np.float64)
    n = len(lm)
    out = np.zeros((n, len(DESCRIPTOR_NAMES)), np.float64)
    if n == 0:
        return out.astype(np.float32)
    rot = head_axes(lm)
    eye_r = (lm[:, _EYE_R_OUTER] + lm[:, _EYE_R_INNER]) / 2
    eye_l = (lm[:, _EYE_L_OUTER] + lm[:, _EYE_L_INNER]) / 2
    iod = np.maximum(np.linalg.norm(eye_l - eye_r, axis=-1), 1e-6)
    # face-frame coordinates in units of the inter-ocular distance: x to the subject's left, y down, z inward
    q = np.einsum("npk,nkj->npj", lm - ((eye_r + eye_l) / 2)[:, None], rot) / iod[:, None, None]

    def dist(i: int, j: int) -> np.ndarray:
        return np.linalg.norm(q[:, i] - q[:, j], axis=-1)

    def y(idx) -> np.ndarray:
        return q[:, idx, 1] if isinstance(idx, int) else q[:, list(idx), 1].mean(1)

    mouth_w = dist(_MOUTH_R, _MOUTH_L)
    centre_y = (y(_LIP_INNER_TOP) + y(_LIP_INNER_BOTTOM)) / 2
    lift_r, lift_l = centre_y - y(_MOUTH_R), centre_y - y(_MOUTH_L)
    eye_r_y = (y(_EYE_R_OUTER) + y(_EYE_R_INNER)) / 2
    eye_l_y = (y(_EYE_L_OUTER) + y(_EYE_L_INNER)) / 2

    out[:, _COL["mouth_open"]] = dist(_LIP_INNER_TOP, _LIP_INNER_BOTTOM)
    out[:, _COL["mouth_width"]] = mouth_w
    out[:, _COL["mouth_aspect"]] = dist(_LIP_OUTER_TOP, _LIP_OUTER_BOTTOM) / np.maximum(mouth_w, 1e-6)
    out[:, _COL["lip_corner_lift"]] = (lift_r + lift_l) / 2
    out[:, _COL["lip_corner_asymmetry"]] = lift_l - lift_r
    out[:, _COL["eye_open_right"]] = np.mean([dist(u, d) for u, d in _EYE_R_LIDS], 0) / np.maximum(
        dist(_EYE_R_OUTER, _EYE_R_INNER), 1e-6
    )
    out[:, _COL["eye_open_left"]] = np.mean([dist(u, d) for u, d in _EYE_L_LIDS], 0) / np.maximum(
        dist(_EYE_L_OUTER, _EYE_L_INNER), 1e-6
    )
    out[:, _COL["brow_raise_right"]] = eye_r_y - y(_BROW_R)
    out[:, _COL["brow_raise_left"]] = eye_l_y - y(_BROW_L)
    inner = [dist(r, left) for r, left in zip(_BROW_R_INNER, _BROW_L_INNER)]
    out[:, _COL["inner_brow_gap"]] = np.mean(inner, 0)
    out[:, _COL["nose_lip_gap"]] = y(_LIP_OUTER_TOP) - y(_NOSE_BASE)
    out[:, _COL["jaw_drop"]] = y(_CHIN) - y(_NOSE_BASE)
    out[:, _COL["lid_to_lip_corner"]] = ((y(_MOUTH_R) - y(_LOWER_LID_R)) + (y(_MOUTH_L) - y(_LOWER_LID_L))) / 2

    inward = rot[:, :, 2]  # into the head; the face points the other way
    out[:, _COL["head_yaw"]] = np.arctan2(-inward[:, 0], inward[:, 2])
    out[:, _COL["head_pitch"]] = np.arctan2(inward[:, 1], np.hypot(inward[:, 0], inward[:, 2]))
    out[:, _COL["head_roll"]] = np.arctan2(rot[:, 1, 0], rot[:, 0, 0])

    lo, hi = lm[:, :, :2].min(1), lm[:, :, :2].max(1)
    box = np.clip(hi - lo, 0, None)
    out[:, _COL["face_size"]] = np.sqrt(box[:, 0] * box[:, 1] / float(width * height))
    out[:, _COL["face_x"]] = (lo[:, 0] + hi[:, 0]) / 2 / width
    out[:, _COL["face_y"]] = (lo[:, 1] + hi[:, 1]) / 2 / height
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- MediaPipe plumbing

_NATIVE_NOISE = re.compile(
    r"Created TensorFlow Lite XNNPACK delegate|All log messages before absl::InitializeLog|"
    r"inference_feedback_manager|^\s*$"
)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence MediaPipe/TFLite start-up chatter written by C++ straight to fd 2; anything else is passed on."""
    fd = 2  # the C++ side writes to the process's fd 2, whatever Python's sys.stderr is
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no fd 2 at all
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode(errors="replace").splitlines() if not _NATIVE_NOISE.search(ln)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


_MESH_SIZE = 192  # input side of MediaPipe's face-landmark network
_MESH_POINTS = 468
_MESH_GRAPH = r"""
input_stream: "crop"
output_stream: "landmarks"
output_stream: "presence"
node {
  calculator: "ImageToTensorCalculator"
  input_stream: "IMAGE:crop"
  output_stream: "TENSORS:input_tensors"
  options { [mediapipe.ImageToTensorCalculatorOptions.ext] {
    output_tensor_width: 192 output_tensor_height: 192
    output_tensor_float_range { min: 0.0 max: 1.0 } } }
}
node {
  calculator: "InferenceCalculator"
  input_stream: "TENSORS:input_tensors"
  output_stream: "TENSORS:output_tensors"
  options { [mediapipe.InferenceCalculatorOptions.ext] {
    model_path: "mediapipe/modules/face_landmark/face_landmark.tflite"
    delegate { xnnpack { num_threads: 1 } } } }
}
node {
  calculator: "SplitTensorVectorCalculator"
  input_stream: "output_tensors"
  output_stream: "landmark_tensors"
  output_stream: "presence_tensors"
  options { [mediapipe.SplitVectorCalculatorOptions.ext] { ranges { begin: 0 end: 1 } ranges { begin: 1 end: 2 } } }
}
node {
  calculator: "TensorsToFloatsCalculator"
  input_stream: "TENSORS:landmark_tensors"
  output_stream: "FLOATS:landmarks"
}
node {
  calculator: "TensorsToFloatsCalculator"
  input_stream: "TENSORS:presence_tensors"
  output_stream: "FLOAT:presence"
  options { [mediapipe.TensorsToFloatsCalculatorOptions.ext] { activation: SIGMOID } }
}
"""


class _MeshNetwork:
    """MediaPipe's face-landmark network in a minimal graph.

    Input: a 192x192 RGB crop. Output: 468 points (x, y, z) in crop pixels, and the face-presence score (0..1).
    """

    def __init__(self) -> None:
        import mediapipe as mp
        from mediapipe.python import packet_creator, packet_getter
        from mediapipe.python._framework_bindings import resource_util

        resource_util.set_resource_dir(str(Path(mp.__file__).resolve().parents[1]))
        self._mp = mp
        self._create = packet_creator.create_image_frame
        self._out: dict[str, Any] = {}
        self._graph = mp.CalculatorGraph(graph_config=_MESH_GRAPH)
        out = self._out

        def keep(stream: str, getter):
            self._graph.observe_output_stream(stream, lambda _, packet: out.__setitem__(stream, getter(packet)))

        keep("landmarks", packet_getter.get_float_list)
        keep("presence", packet_getter.get_float)
        self._graph.start_run()
        self._ts = 0

    def __call__(self, crop: np.ndarray) -> tuple[np.ndarray, float]:
        self._out.clear()
        packet = self._create(image_format=self._mp.ImageFormat.SRGB, data=crop).at(self._ts)
        self._ts += 1
        self._graph.add_packet_to_input_stream("crop", packet)
        self._graph.wait_until_idle()
        points = np.asarray(self._out["landmarks"], np.float32).reshape(_MESH_POINTS, 3)
        return points, float(self._out["presence"])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._graph.close()


@dataclass(frozen=True)
class _Detection:
    """One detected face in frame pixels: box (x0, y0, x1, y1) and eye centres (the subject's right and left)."""

    box: tuple[float, float, float, float]
    eye_right: tuple[float, float]
    eye_left: tuple[float, float]

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class _FaceDetector:
    """One of MediaPipe's BlazeFace detectors on whole frames: short-range (model 0, 128x128 input, faces
    larger than about a quarter of the frame) or full-range (model 1, 192x192, smaller faces, ~2.5x the cost)."""

    def __init__(self, min_confidence: float, full_range: bool) -> None:
        import mediapipe as mp

        self._det = mp.solutions.face_detection.FaceDetection(
            min_detection_confidence=min_confidence, model_selection=int(full_range)
        )

    def __call__(self, frame: np.ndarray) -> list[_Detection]:
        h, w = frame.shape[:2]
        found = []
        for d in self._det.process(frame).detections or ():
            b = d.location_data.relative_bounding_box
            kp = d.location_data.relative_keypoints
            found.append(
                _Detection(
                    box=(b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h),
                    eye_right=(kp[0].x * w, kp[0].y * h),
                    eye_left=(kp[1].x * w, kp[1].y * h),
                )
            )
        return found

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._det.close()


@dataclass(frozen=True)
class _Roi:
    """Square face crop in frame pixels: centre, side, and rotation (radians) of the eye line."""

    cx: float
    cy: float
    side: float
    angle: float

    @staticmethod
    def around(box: tuple[float, float, float, float], eye_right, eye_left) -> _Roi:
        # as MediaPipe does: box centre, long side x 1.5, rotated so that the eyes come out level
        angle = math.atan2(eye_left[1] - eye_right[1], eye_left[0] - eye_right[0])
        side = 1.5 * max(box[2] - box[0], box[3] - box[1])
        return _Roi((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, max(side, 8.0), angle)

    def crop_to_frame(self) -> np.ndarray:
        """2x3 affine map from crop pixels (0..192) to frame pixels."""
        s = self.side / _MESH_SIZE
        c, si = math.cos(self.angle) * s, math.sin(self.angle) * s
        half = _MESH_SIZE / 2
        return np.array([[c, -si, self.cx - c * half + si * half], [si, c, self.cy - si * half - c * half]])


def _box(points: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _inside(point: tuple[float, float], box: tuple[float, float, float, float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


# ----------------------------------------------------------------------------- the extractor

_REDETECT_SECONDS = 1.0  # while tracking, look for a larger face this often
_FULL_RANGE_EVERY = 5  # without a face, the full-range detector backs up the short-range one every 5th frame
_DESCRIBE_CHUNK = 256  # frames of landmarks held before they are reduced to descriptors


def _centre(box: tuple[float, float, float, float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


class _FaceTracker:
    """Finds the largest face frame after frame for one clip (state: the crop that follows the face)."""

    def __init__(self, models: _Models, config: VisionConfig) -> None:
        self.models = models
        self.tracking = config.tracking
        self.threshold = config.min_tracking_confidence
        self.redetect_every = max(1, round(_REDETECT_SECONDS * config.fps))
        self.roi: _Roi | None = None
        self.tracked: tuple[float, float, float, float] | None = None  # landmark box of the followed face
        self.since_detect = 0
        self.since_full = _FULL_RANGE_EVERY

    def _detect(self, frame: np.ndarray) -> list[_Detection]:
        """Short-range detections; when there are none, full-range ones (every frame without tracking,
        else at most every _FULL_RANGE_EVERY frames, which bounds the cost of long stretches without a face)."""
        self.since_detect = 0
        found = self.models.short_range(frame)
        if not found and (not self.tracking or self.since_full >= _FULL_RANGE_EVERY):
            self.since_full = 0
            found = self.models.full_range(frame)
        return found

    def _switch_to(self, detections: list[_Detection]) -> _Detection | None:
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

    def step(self, frame: np.ndarray) -> tuple[np.ndarray | None, float]:
        """Landmarks (468, 3) of the largest face in frame pixels, or None; and the face-presence score."""
        self.since_detect += 1
        self.since_full += 1
        detections: list[_Detection] | None = None
        from_detection = False
        if not self.tracking:
            self.roi, self.tracked = None, None
        if self.roi is None or self.since_detect >= self.redetect_every:
            detections = self._detect(frame)
            best = self._switch_to(detections)
            if best is not None:
                self.roi, from_detection = _Roi.around(best.box, best.eye_right, best.eye_left), True
        if self.roi is None:
            return None, 0.0
        points, presence = self.models.mesh_at(frame, self.roi)
        if presence < self.threshold and not from_detection:  # lost while following: find the face again
            if detections is None:
                detections = self._detect(frame)
            if detections:
                best = max(detections, key=lambda d: d.area)
                points, presence = self.models.mesh_at(frame, _Roi.around(best.box, best.eye_right, best.eye_left))
        if presence < self.threshold:
            self.roi, self.tracked = None, None
            return None, 0.0
        self.tracked = _box(points)
        self.roi = _Roi.around(self.tracked, points[_EYE_R_OUTER], points[_EYE_L_OUTER])
        return points, presence


class _Models:
    """The MediaPipe networks, loaded once: face mesh, short- and full-range face detectors."""

    def __init__(self, config: VisionConfig) -> None:
        with _quiet_native_stderr():
            self.mesh = _MeshNetwork()
            self.short_range = _FaceDetector(config.min_detection_confidence, full_range=False)
            self.full_range = _FaceDetector(config.min_detection_confidence, full_range=True)
            blank = np.zeros((_MESH_SIZE, _MESH_SIZE, 3), np.uint8)  # loads the models now, chatter included
            self.mesh(blank)
            self.short_range(blank)
            self.full_range(blank)

    def mesh_at(self, frame: np.ndarray, roi: _Roi) -> tuple[np.ndarray, float]:
        """Face mesh in frame pixels (468, 3) inside roi, and the network's face-presence score."""
        m = roi.crop_to_frame()
        crop = cv2.warpAffine(
            frame, m, (_MESH_SIZE, _MESH_SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        points, presence = self.mesh(crop)
        out = np.empty_like(points)
        out[:, :2] = points[:, :2] @ m[:, :2].T + m[:, 2]
        out[:, 2] = points[:, 2] * (roi.side / _MESH_SIZE)
        return out, presence

    def close(self) -> None:
        self.mesh.close()
        self.short_range.close()
        self.full_range.close()


class VisionExtractor:
    """Face descriptors (``DESCRIPTOR_NAMES``) per frame of a video; the MediaPipe models load once and are reused."""

    def __init__(self, config: VisionConfig) -> None:
        self.config = config
        self.dim = len(DESCRIPTOR_NAMES)
        cv2.setNumThreads(1)
        self._models = _Models(config)

    def close(self) -> None:
        self._models.close()

    def __enter__(self) -> VisionExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _frames(self, info: MediaInfo) -> Iterator[tuple[float, np.ndarray, np.ndarray | None, float]]:
        """Yield (timestamp, frame, landmarks or None, presence) for every decoded frame."""
        tracker = _FaceTracker(self._models, self.config)
        for ts, frame in iter_video_frames(info, self.config.fps, self.config.max_side):
            points, presence = tracker.step(frame)
            yield ts, frame, points, presence

    def extract(self, info: MediaInfo) -> Sequence:
        """Descriptors of the largest face per frame; frames without a face stay, as zeros with mask False."""
        if not info.has_video:
            raise ModalityMissing("no video stream")
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

        for ts, frame, points, presence in self._frames(info):
            size = (frame.shape[1], frame.shape[0])
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
        log.debug("%s: face in %d of %d frames", info.path, int(found.sum()), n)
        return Sequence(
            features=features,
            timestamps=np.array(timestamps, np.float64),
            mask=found,
            confidence=np.array(confidence, np.float32),
        )
