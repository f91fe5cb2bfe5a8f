"""Keep rigid things rigid: find eyeglass frames around the eyes and damp the warp on them.

Brow and lid motion deforms the skin around the eyes; a glasses frame lying there must not bend
with it. The one place where a frame shows and a bare face never has a line is the nose bridge
between the inner eye corners: the frame's bridge crosses it as a horizontal edge spanning the whole
strip (lashes, eyeliner, canthus shadows and brows do not reach it). When that line is there, the
strong edges of the eye band (minus the eyes and brows with a margin, which are meant to move) become
a smooth damping mask: the displacement is scaled towards zero on the frame and recovers a few pixels
away from it (a mask that varies slowly, so the rims neither kink nor pick up doubled highlights).
Without glasses the mask is None.
"""

from __future__ import annotations

import cv2
import numpy as np

from spfem_cli.backends.warp import facs

# Evidence thresholds on the bridge line: 25th percentile of |d/dy| along the strongest row of the strip
# between the inner eye corners, grey levels per aligned-256 pixel. Measured on real clips: bare faces
# 4-40 (heavy eye make-up the most), thin metal frames 22-62, plastic frames ~200.
GLASSES_LO, GLASSES_HI = 42.0, 56.0
EYE_MARGIN, BROW_MARGIN = 2.0, 2.0      # aligned px around the eyes / brows that are never damped
RIM_OUTSIDE = 0.6                       # an edge is a frame when this much of it lies outside them


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


def _brow_lower_edges(points: np.ndarray) -> list[np.ndarray]:
    if len(points) == facs.N_MESH:
        return [points[facs.BROW_LOWER], points[facs.MIRROR[facs.BROW_LOWER]]]
    return [points[17:22], points[22:27]]


def glasses_evidence(vertical_gradient: np.ndarray, points: np.ndarray, scale: float) -> float:
    """0 (no glasses) … 1 (glasses): a horizontal line across the nose bridge between the inner eye corners.

    ``vertical_gradient`` is |d/dy| of the crop's grey levels; ``scale`` crop px per aligned px.
    """
    if len(points) == facs.N_MESH:
        inner = points[[facs.LID_UPPER[0], facs.MIRROR[facs.LID_UPPER[0]]]]
    else:
        inner = points[[39, 42]]
    mid = inner.mean(0)
    half = 0.22 * abs(inner[1, 0] - inner[0, 0])
    h, w = vertical_gradient.shape
    x0, x1 = int(max(0, mid[0] - half)), int(min(w, mid[0] + half))
    y0, y1 = int(max(0, mid[1] - 16 * scale)), int(min(h, mid[1] + 4 * scale))
    if x1 - x0 < 3 or y1 - y0 < 3:
        return 0.0
    line = float(np.percentile(vertical_gradient[y0:y1, x0:x1], 25, axis=1).max()) * scale
    return float(np.clip((line - GLASSES_LO) / (GLASSES_HI - GLASSES_LO), 0.0, 1.0))


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
    evidence = glasses_evidence(np.abs(gy), points, scale)
    if evidence <= 0.0:
        return None
    gradient = cv2.magnitude(gx, gy)
    eyes = _eye_polygons(points)
    pts = np.concatenate(eyes + _brow_polygons(points))
    x0, x1 = pts[:, 0].min() - 22 * scale, pts[:, 0].max() + 22 * scale
    y0, y1 = pts[:, 1].min() - 4 * scale, np.concatenate(eyes)[:, 1].max() + 26 * scale
    band = np.zeros((h, w), bool)
    band[int(max(0, y0)):int(min(h, y1)), int(max(0, x0)):int(min(w, x1))] = True
    # The brows and the hair above them move: everything above each brow's lower edge is left free.
    above = [np.r_[lower, lower[::-1] - (0.0, 60.0 * scale)] for lower in _brow_lower_edges(points)]
    moving = (_polygon_mask((h, w), eyes, dilate=int(EYE_MARGIN * scale))
              | _polygon_mask((h, w), _brow_polygons(points) + above, dilate=int(BROW_MARGIN * scale)))
    # A frame is one long connected edge mostly outside the moving parts; where it passes over them
    # (the top rim under an inner brow head) it is kept whole. Edges mostly inside them (brow hair,
    # lashes) are not frames.
    edges = ((gradient > np.percentile(gradient[band], 80)) & band).astype(np.uint8)
    count, labels = cv2.connectedComponents(edges, connectivity=8)
    outside = np.bincount(labels[~moving], minlength=count)
    total = np.bincount(labels.ravel(), minlength=count)
    frame_like = (outside >= RIM_OUTSIDE * total) & (outside >= 20 * scale)
    frame_like[0] = False
    strong = frame_like[labels]
    mask = cv2.dilate(strong.astype(np.uint8) * 255, np.ones((3, 3), np.uint8), iterations=max(1, int(3 * scale)))
    mask = mask.astype(np.float32) / 255.0
    # Full damping on the frame itself (a rim damped unevenly along its length kinks), a wide smooth
    # falloff around it (the skin next to it takes up the motion gradually).
    mask = np.maximum(cv2.GaussianBlur(mask, (0, 0), 1.5 * scale), 1.3 * cv2.GaussianBlur(mask, (0, 0), 6.0 * scale))
    return np.clip(mask, 0.0, 1.0) * evidence
