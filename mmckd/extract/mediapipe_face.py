"""MediaPipe's face networks, loaded once: the face-mesh network in a minimal graph and the BlazeFace detectors.

MediaPipe's own ``FaceMesh`` solution runs its detector on every frame as soon as ``max_num_faces > 1``,
so the mesh network runs here in a minimal MediaPipe graph instead, on square crops (``Roi``) made with
OpenCV; its landmarks match ``FaceMesh``'s. ``quiet_native_stderr`` keeps MediaPipe/TFLite's start-up
chatter, written by C++ straight to fd 2, out of the logs.
"""

from __future__ import annotations

import contextlib
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

_NATIVE_NOISE = re.compile(
    r"Created TensorFlow Lite XNNPACK delegate|All log messages before absl::InitializeLog|"
    r"inference_feedback_manager|^\s*$"
)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
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


MESH_SIZE = 192  # input side of MediaPipe's face-landmark network
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


class MeshNetwork:
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
class Detection:
    """One detected face in frame pixels: box (x0, y0, x1, y1) and eye centres (the subject's right and left)."""

    box: tuple[float, float, float, float]
    eye_right: tuple[float, float]
    eye_left: tuple[float, float]

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class FaceDetector:
    """One of MediaPipe's BlazeFace detectors on whole frames: short-range (model 0, 128x128 input, faces
    larger than about a quarter of the frame) or full-range (model 1, 192x192, smaller faces, ~2.5x the cost)."""

    def __init__(self, min_confidence: float, full_range: bool) -> None:
        import mediapipe as mp

        self._det = mp.solutions.face_detection.FaceDetection(
            min_detection_confidence=min_confidence, model_selection=int(full_range)
        )

    def __call__(self, frame: np.ndarray) -> list[Detection]:
        h, w = frame.shape[:2]
        found = []
        for d in self._det.process(frame).detections or ():
            b = d.location_data.relative_bounding_box
            kp = d.location_data.relative_keypoints
            found.append(
                Detection(
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
class Roi:
    """Square face crop in frame pixels: centre, side, and rotation (radians) of the eye line."""

    cx: float
    cy: float
    side: float
    angle: float

    @staticmethod
    def around(box: tuple[float, float, float, float], eye_right, eye_left) -> Roi:
        # as MediaPipe does: box centre, long side x 1.5, rotated so that the eyes come out level
        angle = math.atan2(eye_left[1] - eye_right[1], eye_left[0] - eye_right[0])
        side = 1.5 * max(box[2] - box[0], box[3] - box[1])
        return Roi((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, max(side, 8.0), angle)

    def crop_to_frame(self, size: int = MESH_SIZE) -> np.ndarray:
        """2x3 affine map from the pixels (0..size) of a size x size crop to frame pixels."""
        s = self.side / size
        c, si = math.cos(self.angle) * s, math.sin(self.angle) * s
        half = size / 2
        return np.array([[c, -si, self.cx - c * half + si * half], [si, c, self.cy - si * half - c * half]])


class FaceModels:
    """The MediaPipe networks, loaded once: face mesh, short- and full-range face detectors."""

    def __init__(self, config: VisionConfig) -> None:
        with quiet_native_stderr():
            self.mesh = MeshNetwork()
            self.short_range = FaceDetector(config.min_detection_confidence, full_range=False)
            self.full_range = FaceDetector(config.min_detection_confidence, full_range=True)
            blank = np.zeros((MESH_SIZE, MESH_SIZE, 3), np.uint8)  # loads the models now, chatter included
            self.mesh(blank)
            self.short_range(blank)
            self.full_range(blank)

    def mesh_at(self, frame: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """Face mesh in frame pixels (468, 3) inside roi, and the network's face-presence score."""
        m = roi.crop_to_frame()
        crop = cv2.warpAffine(
            frame, m, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        points, presence = self.mesh(crop)
        out = np.empty_like(points)
        out[:, :2] = points[:, :2] @ m[:, :2].T + m[:, 2]
        out[:, 2] = points[:, 2] * (roi.side / MESH_SIZE)
        return out, presence

    def close(self) -> None:
        self.mesh.close()
        self.short_range.close()
        self.full_range.close()
