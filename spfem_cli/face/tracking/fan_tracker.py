"""Reference tracker: face-alignment's S3FD detector + FAN 2D-68 (the landmarker NED uses).

Weights come from the registry (``fan_2d68``, ``s3fd``), never from face-alignment's own
downloader, so a missing file is one clear :class:`WeightsError` naming the fetch command. Both
published FAN formats load: the TorchScript ``2DFAN4-cd938726ad.zip`` (face-alignment ≤ 1.4) and the
plain state dict ``2DFAN4-11f355bf06.pth.tar`` that face-alignment 1.5 downloads (loaded strictly
into ``face_alignment.models.FAN(4)``). Pupils are the intensity-weighted centre of the dark pixels
inside each eye polygon, as in NED's preprocessing.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from spfem_cli.face.tracking.base import LEFT_EYE, RIGHT_EYE, Detection, Tracker
from spfem_cli.weights import resolve

FAN_INPUT = 256          # FAN crop side
REFERENCE_SCALE = 195.0  # face-alignment: box (w + h) / scale → crop scale
CENTER_Y_OFFSET = 0.12   # face-alignment 1.5: crop centre moved up by this fraction of the box height


def load_fan(path: Path, device: str = "cpu") -> torch.nn.Module:
    """FAN 2D-68 from either published file format, in eval mode on ``device``."""
    path = Path(path)
    if path.suffix == ".zip":
        net = torch.jit.load(str(path), map_location=device)
    else:
        from face_alignment.models import FAN

        net = FAN(4)
        state = torch.load(path, map_location=device, weights_only=True)
        net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state, strict=True)
        net.to(device)
    return net.eval()


def heatmap_to_points(heatmaps: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    """FAN heatmaps ``(68, R, R)`` → image points ``(68, 2)``, face-alignment's decoding convention.

    Arg-max cell, moved a quarter cell towards the larger neighbour, cell centre at +0.5, then the
    crop (side 200·scale px around ``centre``) is mapped back. Unlike face-alignment's
    ``transform_np`` the result is not truncated to integers, and no numba compile is needed.
    """
    n, rows, cols = heatmaps.shape
    flat = heatmaps.reshape(n, -1).argmax(1)
    py, px = flat // cols, flat % cols
    pts = np.stack([px, py], 1).astype(np.float64) + 0.5
    inner = (px > 0) & (px < cols - 1) & (py > 0) & (py < rows - 1)
    k = np.flatnonzero(inner)
    dx = heatmaps[k, py[k], px[k] + 1] - heatmaps[k, py[k], px[k] - 1]
    dy = heatmaps[k, py[k] + 1, px[k]] - heatmaps[k, py[k] - 1, px[k]]
    pts[k] += np.stack([np.sign(dx), np.sign(dy)], 1) * 0.25
    side = 200.0 * scale
    return (pts / cols - 0.5) * side + np.asarray(centre, np.float64)


def pupil_centre(gray: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre of the dark pixels inside the 6-point eye polygon (pixels).

    Darkness weight = max(0, median − I) over the pixels in the polygon, so skin and sclera weigh
    nothing and the iris/pupil dominate; falls back to the polygon centroid on a closed eye.
    """
    x0, y0 = np.floor(eye.min(0)).astype(int)
    x1, y1 = np.ceil(eye.max(0)).astype(int) + 1
    h, w = gray.shape
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return eye.mean(0)
    patch = gray[y0:y1, x0:x1].astype(np.float64)
    mask = np.zeros(patch.shape, np.uint8)
    cv2.fillPoly(mask, [np.round(eye - (x0, y0)).astype(np.int32)], 1)
    inside = mask.astype(bool)
    if inside.sum() < 3:
        return eye.mean(0)
    weight = np.clip(np.median(patch[inside]) - patch, 0, None) * inside
    total = weight.sum()
    if total <= 0:
        return eye.mean(0)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    return np.array([(weight * xs).sum() / total, (weight * ys).sum() / total])


class FanTracker(Tracker):
    """S3FD boxes → FAN heatmaps → 68 landmarks; pupils from the eye polygons."""

    name = "fan"

    def __init__(self, *, device: str = "auto", detector_threshold: float = 0.5, max_faces: int = 4,
                 fan_path: Path | None = None, s3fd_path: Path | None = None):
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        from spfem_cli.device import pick_device

        fan_path = fan_path or resolve("fan_2d68")
        s3fd_path = s3fd_path or resolve("s3fd")
        device = str(pick_device(device))
        self.device = device
        self.max_faces = max_faces
        self.detector = SFDDetector(device=device, path_to_detector=str(s3fd_path), filter_threshold=detector_threshold)
        self.net = load_fan(fan_path, device)

    @torch.no_grad()
    def landmarks_for_boxes(self, frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """68 landmarks (pixels) for each box ``(K, 4)`` with face-alignment's crop convention."""
        from face_alignment.utils import crop

        out = []
        for box in np.asarray(boxes, np.float64):
            centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
            centre[1] -= (box[3] - box[1]) * CENTER_Y_OFFSET
            scale = (box[2] - box[0] + box[3] - box[1]) / REFERENCE_SCALE
            patch = crop(frame, centre, scale).transpose(2, 0, 1).astype(np.float32) / 255.0
            heat = self.net(torch.from_numpy(patch)[None].to(self.device))
            heat = heat[-1] if isinstance(heat, list | tuple) else heat
            out.append(heatmap_to_points(heat[0].float().cpu().numpy(), centre, scale))
        return np.asarray(out, np.float64).reshape(-1, 68, 2)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        frame = np.ascontiguousarray(frame)
        found = self.detector.detect_from_image(frame.copy())
        found = sorted(found, key=lambda b: -float(b[4]))[: self.max_faces]
        if not found:
            return []
        boxes = np.array([b[:4] for b in found], np.float64)
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        detections = []
        for box, score, landmarks in zip(boxes, found, self.landmarks_for_boxes(frame, boxes), strict=True):
            pupils = np.stack([pupil_centre(gray, landmarks[RIGHT_EYE]), pupil_centre(gray, landmarks[LEFT_EYE])])
            detections.append(Detection(landmarks=landmarks, box=box, pupils=pupils, score=float(score[4])))
        return detections
