"""The face descriptor: a MediaPipe 468-point face mesh reduced to expression and head-pose measures.

``DESCRIPTOR_NAMES`` (one line each in ``DESCRIPTOR_DOCS``): mouth, eye and brow measures in the face's own
frame (so head turns do not masquerade as expressions) divided by the inter-ocular distance, head
yaw/pitch/roll, and face size and position in the frame. Pure geometry: ``face_descriptors`` maps
landmarks in frame pixels to descriptors, ``head_axes`` gives the face's rotation.
"""

from __future__ import annotations

import numpy as np

# Landmark indices of MediaPipe's 468-point face mesh. "right"/"left" are the subject's own sides
# (the subject's right eye appears on the image's left in an unmirrored video).
EYE_R_OUTER, _EYE_R_INNER, EYE_L_OUTER, _EYE_L_INNER = 33, 133, 263, 362
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
    eye_r = (lm[:, EYE_R_OUTER] + lm[:, _EYE_R_INNER]) / 2
    eye_l = (lm[:, EYE_L_OUTER] + lm[:, _EYE_L_INNER]) / 2
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
    eye_r_y = (y(EYE_R_OUTER) + y(_EYE_R_INNER)) / 2
    eye_l_y = (y(EYE_L_OUTER) + y(_EYE_L_INNER)) / 2

    out[:, _COL["mouth_open"]] = dist(_LIP_INNER_TOP, _LIP_INNER_BOTTOM)
    out[:, _COL["mouth_width"]] = mouth_w
    out[:, _COL["mouth_aspect"]] = dist(_LIP_OUTER_TOP, _LIP_OUTER_BOTTOM) / np.maximum(mouth_w, 1e-6)
    out[:, _COL["lip_corner_lift"]] = (lift_r + lift_l) / 2
    out[:, _COL["lip_corner_asymmetry"]] = lift_l - lift_r
    out[:, _COL["eye_open_right"]] = np.mean([dist(u, d) for u, d in _EYE_R_LIDS], 0) / np.maximum(
        dist(EYE_R_OUTER, _EYE_R_INNER), 1e-6
    )
    out[:, _COL["eye_open_left"]] = np.mean([dist(u, d) for u, d in _EYE_L_LIDS], 0) / np.maximum(
        dist(EYE_L_OUTER, _EYE_L_INNER), 1e-6
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
