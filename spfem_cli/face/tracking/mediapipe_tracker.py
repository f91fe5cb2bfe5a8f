"""Embedded default tracker: MediaPipe FaceMesh (478 points with iris) mapped to iBUG-68.

The models ship inside the ``mediapipe==0.10.21`` wheel, so this works offline with no weights.
Faces are found by MediaPipe's full-range face detector (small and distant faces too); each face is
then cropped, scaled to :data:`CROP_SIZE` and meshed alone, which makes tiny faces usable and keeps
several faces apart. Frames are processed independently (static mode): no hidden state carries
across scene cuts; temporal smoothing happens later, the same for every tracker.
"""

from __future__ import annotations

import cv2
import numpy as np

from spfem_cli.face.tracking.base import Detection, Tracker, box_from_landmarks, box_iou

# FaceMesh vertex index for each iBUG-68 point. Derived by semantics on the FaceMesh topology and
# checked on the astronaut photo (points drawn over the image):
# - jaw 0-16: FaceMesh silhouette vertices from ear level (127 / 356) to the chin (152), picked at
#   equal arc length along the contour, left/right pairs symmetric in the mesh;
# - brows 17-26: upper brow edge, outer → inner (right) and inner → outer (left), as in iBUG;
# - nose 27-30: bridge from between the eyes to the tip; 31-35 lower nose, right wing → left wing;
# - eyes 36-47: outer corner, two upper-lid, inner corner, two lower-lid (right eye = image left);
# - outer lips 48-59: right corner, upper lip to the left corner, lower lip back;
# - inner lips 60-67: 60 right corner (78), 62 = upper inner-lip midpoint (13), 64 left corner (308),
#   66 = lower inner-lip midpoint (14); so the mouth opening is |p62 - p66| as with FAN.
MP_TO_IBUG68 = np.array([
    127, 234, 132, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 361, 454, 356,  # jaw
    70, 63, 105, 66, 107,                      # right brow
    336, 296, 334, 293, 300,                   # left brow
    168, 197, 5, 4,                            # nose bridge
    75, 97, 2, 326, 305,                       # lower nose
    33, 160, 158, 133, 153, 144,               # right eye
    362, 385, 387, 263, 373, 380,              # left eye
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips
    78, 82, 13, 312, 308, 317, 14, 87,         # inner lips
])
# Iris centres with refine_landmarks=True: 468 sits in the eye of vertices 33/133 (iBUG right eye),
# 473 in the eye of 362/263 (iBUG left eye).
MP_IRIS_CENTRES = np.array([468, 473])
MESH_POINTS = 478      # FaceMesh with the iris model (refine_landmarks=True)
CROP_SIZE = 256        # px side of the per-face crop given to FaceMesh
CROP_SCALE = 1.9       # crop side / detector box side (keeps the whole head in the crop)
# ROI tracking: the detector's box is ~1.1x the landmarks' (jaw + brows) box and ~5 % of it higher (measured on
# real clips), so the crop around the previous frame's landmarks is the one the detector would have given.
ROI_BOX, ROI_RAISE, ROI_MIN_IOU = 1.1, 0.05, 0.3


def _solutions():
    """MediaPipe's face detection and face mesh modules, imported without matplotlib.

    ``import mediapipe`` loads every solution, and its drawing utilities import ``matplotlib.pyplot``
    (0.3-0.4 s, most of a first warp edit's start-up before its first frame) for plotting helpers that
    tracking never calls. While MediaPipe loads, that name is an empty module; afterwards it is removed,
    so a later ``import matplotlib.pyplot`` (``--plot``) loads the real one.
    """
    import sys
    import types

    stubs = [name for name in ("matplotlib", "matplotlib.pyplot") if name not in sys.modules]
    if "mediapipe" in sys.modules:
        stubs = []
    for name in stubs:
        sys.modules[name] = types.ModuleType(name)
    try:
        from mediapipe.python.solutions import face_detection, face_mesh
    finally:
        for name in stubs:
            sys.modules.pop(name, None)
    return face_detection, face_mesh


class MediaPipeTracker(Tracker):
    """FaceMesh landmarks in iBUG-68 order, pupils from the iris model."""

    name = "mediapipe"

    def __init__(self, *, min_detection_confidence: float = 0.5, max_faces: int = 4, tile_levels: int = 2):
        face_detection, face_mesh = _solutions()
        self._detector = face_detection.FaceDetection(model_selection=1,
                                                      min_detection_confidence=min_detection_confidence)
        self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                        min_detection_confidence=min_detection_confidence)
        self._full_mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_faces,
                                             refine_landmarks=True, min_detection_confidence=min_detection_confidence)
        self.max_faces = max_faces
        self.tile_levels = tile_levels

    def close(self) -> None:
        for graph in (self._detector, self._mesh, self._full_mesh):
            graph.close()

    def _detect_in(self, image: np.ndarray, x0: int, y0: int) -> list[tuple[np.ndarray, float]]:
        h, w = image.shape[:2]
        result = self._detector.process(np.ascontiguousarray(image))
        out = []
        for det in result.detections or []:
            rb = det.location_data.relative_bounding_box
            box = np.array([rb.xmin * w + x0, rb.ymin * h + y0, (rb.xmin + rb.width) * w + x0,
                            (rb.ymin + rb.height) * h + y0])
            out.append((box, float(det.score[0])))
        return out

    def _boxes(self, frame: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Face boxes, coarse to fine: the whole frame, then overlapping square tiles.

        The detector sees a 192² letterboxed input and misses faces under ~6 % of the frame's long
        side; tiles of the short side, then of half of it, bring faces down to ~3 % / ~1.5 % of
        the short side (≈ 22 px at 720p) into range. Finer levels run only when coarser found nothing.
        """
        h, w = frame.shape[:2]
        boxes = self._detect_in(frame, 0, 0)
        side = min(h, w)
        for _ in range(self.tile_levels):
            if boxes or side < 96:
                break
            stride = side // 2
            for y in range(0, max(h - side, 0) + stride, stride):
                for x in range(0, max(w - side, 0) + stride, stride):
                    y0, x0 = min(y, h - side), min(x, w - side)
                    boxes += self._detect_in(frame[y0:y0 + side, x0:x0 + side], x0, y0)
            side //= 2
        boxes.sort(key=lambda item: -item[1])
        kept: list[tuple[np.ndarray, float]] = []
        for box, score in boxes:
            if all(box_iou(box, other) < 0.3 for other, _ in kept):
                kept.append((box, score))
        return kept[: self.max_faces]

    @staticmethod
    def _to_detection(points: np.ndarray, score: float) -> Detection:
        """478 FaceMesh points (pixels) → iBUG-68 detection with pupils ordered (right, left)."""
        landmarks = points[MP_TO_IBUG68]
        pupils = points[MP_IRIS_CENTRES] if len(points) > MP_IRIS_CENTRES.max() else np.stack(
            [landmarks[36:42].mean(0), landmarks[42:48].mean(0)])
        return Detection(landmarks=landmarks, box=box_from_landmarks(landmarks), pupils=pupils, score=score,
                         mesh=points if len(points) == MESH_POINTS else None)

    def _mesh_crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """Mesh the face inside ``box``: square crop, scaled to CROP_SIZE, points mapped back."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1]) * CROP_SCALE
        scale = CROP_SIZE / side
        # image → crop: x' = scale * (x - cx) + CROP_SIZE / 2
        matrix = np.array([[scale, 0, CROP_SIZE / 2 - scale * cx], [0, scale, CROP_SIZE / 2 - scale * cy]])
        crop = cv2.warpAffine(frame, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        result = self._mesh.process(crop)
        if not result.multi_face_landmarks:
            return None
        pts = np.array([[p.x, p.y] for p in result.multi_face_landmarks[0].landmark]) * CROP_SIZE
        return (pts - CROP_SIZE / 2) / scale + [cx, cy]

    def detect_near(self, frame: np.ndarray, previous: Detection) -> Detection | None:
        """ROI tracking: the face of the previous frame's ``previous``, meshed in a crop around its points
        without running the full-frame detector (about half the cost of :meth:`detect`). None when the
        face is lost there or jumped; the caller then runs :meth:`detect`."""
        box = box_from_landmarks(previous.landmarks)
        side = max(box[2] - box[0], box[3] - box[1]) * ROI_BOX
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2 - ROI_RAISE * side
        points = self._mesh_crop(np.ascontiguousarray(frame), np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]))
        if points is None:
            return None
        det = self._to_detection(points, previous.score)
        return det if box_iou(det.box, previous.box) >= ROI_MIN_IOU else None

    def detect(self, frame: np.ndarray) -> list[Detection]:
        frame = np.ascontiguousarray(frame)
        h, w = frame.shape[:2]
        found: list[Detection] = []
        for box, score in self._boxes(frame):
            points = self._mesh_crop(frame, box)
            if points is None:
                continue
            det = self._to_detection(points, score)
            if all(box_iou(det.box, other.box) < 0.5 for other in found):
                found.append(det)
        if not found:
            # Close-ups the full-range detector can miss: mesh the whole frame.
            result = self._full_mesh.process(frame)
            for face in result.multi_face_landmarks or []:
                pts = np.array([[p.x * w, p.y * h] for p in face.landmark])
                found.append(self._to_detection(pts, 1.0))
        return found
