"""Keep rigid things rigid: find eyeglass frames around the eyes and damp the warp on them.

Brow and lid motion deforms the skin around the eyes; a glasses frame lying there must not bend
with it. Frames are thin, long, high-contrast lines where skin has none: under the lower lids (the
lower rim crosses the cheek) and over the nose bridge (the bridge piece). When those two places
carry strong edges, the strong edges of the whole eye band (minus the eye openings and the brows,
which are meant to move) become a damping mask: the displacement is scaled towards zero on the
frame and recovers a few pixels away from it. Without glasses the mask is zero.
"""

from __future__ import annotations

import cv2
import numpy as np

from spfem_cli.backends.warp import facs

# Evidence thresholds on the mean gradient magnitude (0-255 grey levels per pixel) of the probe strips.
GLASSES_LO, GLASSES_HI = 9.0, 16.0


def _polygon_mask(shape: tuple[int, int], polys: list[np.ndarray], dilate: int = 0) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for p in polys:
        cv2.fillPoly(mask, [np.round(p).astype(np.int32)], 255)
    if dilate > 0:
        mask = cv2.dilate(mask, np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8))
    return mask > 0


def _eye_polygons(points: np.ndarray) -> list[np.ndarray]:
    if len(points) == facs.N_MESH:
        out = []
        for upper, lower in ((facs.LID_UPPER, facs.LID_LOWER), (facs.MIRROR[facs.LID_UPPER], facs.MIRROR[facs.LID_LOWER])):
            out.append(np.r_[points[upper], points[lower[::-1]]])
        return out
    return [points[36:42], points[42:48]]


def _brow_polygons(points: np.ndarray) -> list[np.ndarray]:
    if len(points) == facs.N_MESH:
        return [np.r_[points[u], points[lo[::-1]]] for u, lo in ((facs.BROW_UPPER, facs.BROW_LOWER),
                                                                   (facs.MIRROR[facs.BROW_UPPER], facs.MIRROR[facs.BROW_LOWER]))]
    return [points[17:22], points[22:27]]


def glasses_evidence(gradient: np.ndarray, points: np.ndarray, scale: float) -> float:
    """0 (no glasses) … 1 (glasses): gradient strength under the lower lids and on the nose bridge."""
    eyes = _eye_polygons(points)
    h, w = gradient.shape
    probes = []
    for eye in eyes:
        x0, x1 = eye[:, 0].min(), eye[:, 0].max()
        y = eye[:, 1].max()
        probes.append((x0, x1, y + 5 * scale, y + 17 * scale))        # under the lower lid (the lower rim)
    inner = np.array([e[:, 0].max() if e[:, 0].mean() < w / 2 else e[:, 0].min() for e in eyes])
    eye_y = np.mean([e[:, 1].mean() for e in eyes])
    probes.append((inner.min() + 2 * scale, inner.max() - 2 * scale, eye_y - 10 * scale, eye_y + 2 * scale))  # the bridge
    scores = []
    for x0, x1, y0, y1 in probes:
        xa, xb = int(max(0, x0)), int(min(w, x1))
        ya, yb = int(max(0, y0)), int(min(h, y1))
        if xb - xa < 2 or yb - ya < 2:
            continue
        # The strongest rows: a rim is a line, so the mean over the best rows tells it from smooth skin.
        rows = np.sort(gradient[ya:yb, xa:xb].mean(1))[::-1]
        scores.append(float(rows[: max(1, len(rows) // 4)].mean()))
    if not scores:
        return 0.0
    score = float(np.median(scores))
    return float(np.clip((score - GLASSES_LO) / (GLASSES_HI - GLASSES_LO), 0.0, 1.0))


def rigid_damping(crop: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """Damping (H×W float32 in [0, 1]) over eyeglass frames in an aligned crop, or None without glasses.

    ``points`` are the face's points in the crop's pixels (478 mesh or 68 iBUG).
    """
    h, w = crop.shape[:2]
    scale = w / 256.0
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), 0.8 * scale)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    gradient = cv2.magnitude(gx, gy)
    evidence = glasses_evidence(gradient, points, scale)
    if evidence <= 0.0:
        return None
    eyes = _eye_polygons(points)
    pts = np.concatenate(eyes + _brow_polygons(points))
    x0, x1 = pts[:, 0].min() - 22 * scale, pts[:, 0].max() + 22 * scale
    y0, y1 = pts[:, 1].min() - 4 * scale, np.concatenate(eyes)[:, 1].max() + 26 * scale
    band = np.zeros((h, w), bool)
    band[int(max(0, y0)):int(min(h, y1)), int(max(0, x0)):int(min(w, x1))] = True
    moving = _polygon_mask((h, w), eyes, dilate=int(2 * scale)) | _polygon_mask((h, w), _brow_polygons(points), dilate=int(2 * scale))
    strong = (gradient > np.percentile(gradient[band], 80)) & band & ~moving
    mask = cv2.dilate(strong.astype(np.uint8) * 255, np.ones((3, 3), np.uint8), iterations=max(1, int(1.5 * scale)))
    mask = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 2.0 * scale)
    return np.clip(mask * 1.5, 0.0, 1.0) * evidence
