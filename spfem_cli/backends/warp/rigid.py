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
PRECHECK_SLACK = 4.0                    # grey levels below GLASSES_LO at which the strip pre-check still says maybe


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


def _bridge_strip(points: np.ndarray, scale: float, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the strip between the inner eye corners that a frame's bridge crosses, in crop px."""
    if len(points) == facs.N_MESH:
        inner = points[[facs.LID_UPPER[0], facs.MIRROR[facs.LID_UPPER[0]]]]
    else:
        inner = points[[39, 42]]
    mid = inner.mean(0)
    half = 0.22 * abs(inner[1, 0] - inner[0, 0])
    h, w = shape
    x0, x1 = int(max(0, mid[0] - half)), int(min(w, mid[0] + half))
    y0, y1 = int(max(0, mid[1] - 16 * scale)), int(min(h, mid[1] + 4 * scale))
    return None if x1 - x0 < 3 or y1 - y0 < 3 else (x0, y0, x1, y1)


def _bridge_line(vertical_gradient: np.ndarray, scale: float) -> float:
    """The bridge line's strength in a strip of |d/dy|: its strongest row's 25th percentile, per aligned px."""
    return float(np.percentile(vertical_gradient, 25, axis=1).max()) * scale


def _gradients(crop: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """d/dx and d/dy of the crop's lightly smoothed grey levels (``scale`` crop px per aligned px)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), 0.8 * scale)
    return cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)


def glasses_evidence(vertical_gradient: np.ndarray, points: np.ndarray, scale: float) -> float:
    """0 (no glasses) … 1 (glasses): a horizontal line across the nose bridge between the inner eye corners.

    ``vertical_gradient`` is |d/dy| of the crop's grey levels; ``scale`` crop px per aligned px.
    """
    strip = _bridge_strip(points, scale, vertical_gradient.shape)
    if strip is None:
        return 0.0
    x0, y0, x1, y1 = strip
    line = _bridge_line(vertical_gradient[y0:y1, x0:x1], scale)
    return float(np.clip((line - GLASSES_LO) / (GLASSES_HI - GLASSES_LO), 0.0, 1.0))


def may_have_glasses(frame: np.ndarray, matrix: np.ndarray, points: np.ndarray, size: int) -> bool:
    """Whether the ``size``² aligned crop of ``frame`` (``matrix``: frame → crop) may show a glasses bridge.

    The same cue as :func:`glasses_evidence`, read off the few hundred crop pixels of the bridge strip
    (with the smoothing and gradient kernels' reach) instead of the whole crop: a face without glasses,
    the common case, then costs ~0.1 ms instead of a bicubic crop and its gradients (~5 ms at 720p).
    The strip is resampled on its own, which can move a sample by 1/32 px, so it answers True within
    :data:`PRECHECK_SLACK` of the threshold and :func:`rigid_damping` decides on the full crop.
    """
    scale = size / 256.0
    strip = _bridge_strip(points, scale, (size, size))
    if strip is None:
        return False
    x0, y0, x1, y1 = strip
    reach = int(np.ceil(4 * 0.8 * scale)) + 2             # GaussianBlur's kernel radius (4 sigma) + Sobel's
    bx0, by0 = max(0, x0 - reach), max(0, y0 - reach)
    bx1, by1 = min(size, x1 + reach), min(size, y1 + reach)
    local = np.asarray(matrix, np.float64).copy()
    local[:, 2] -= (bx0, by0)
    crop = cv2.warpAffine(frame, local, (bx1 - bx0, by1 - by0), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    _, gy = _gradients(crop, scale)
    line = _bridge_line(np.abs(gy[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]), scale)
    return line > GLASSES_LO - PRECHECK_SLACK


def rigid_damping(crop: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """Damping (H×W float32 in [0, 1]) over eyeglass frames in an aligned crop, or None without glasses.

    ``points`` are the face's points in the crop's pixels (478 mesh or 68 iBUG).
    """
    h, w = crop.shape[:2]
    scale = w / 256.0
    gx, gy = _gradients(crop, scale)
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


# Canonical heights (aligned px, y down) between which the brow region hands over to the eyes: brows sit
# at ~72, the upper lids at ~88. Above BROW_ZONE[0] a vertex moves as the brows do, below BROW_ZONE[1]
# as the face below them.
BROW_ZONE = (80.0, 88.0)
BROW_KEEP_WITH_GLASSES = 0.35     # share of the brow/forehead motion kept behind a certain eyeglass frame


def steady_brows(source: np.ndarray, edited: np.ndarray, damping: np.ndarray | None) -> np.ndarray:
    """``edited`` (P, 2 mesh points, any scale) with the brow and forehead motion cut to
    :data:`BROW_KEEP_WITH_GLASSES` when a glasses frame is found (``damping`` not None; its peak is the
    evidence), fading back to the full motion over the lids.

    Brows often sit on or behind the top rims. The damping holds a rim it can see, but a top rim hidden in
    the brow hair is not seen, and a brow dragged up across a held rim leaves a grey smear in the lens:
    raising brows by their full amount behind glasses bent the top rims of round frames (d19) and bumped
    a lens top (d13). The lids, seen through the lenses, keep their motion (wide or narrowed eyes read).
    """
    if damping is None or len(source) != facs.N_MESH:
        return edited
    evidence = float(np.clip(damping.max(), 0.0, 1.0))
    y = facs.CANONICAL_MESH[:, 1]
    brow_weight = np.clip((BROW_ZONE[1] - y) / (BROW_ZONE[1] - BROW_ZONE[0]), 0.0, 1.0)
    keep = 1.0 - (1.0 - BROW_KEEP_WITH_GLASSES) * evidence * brow_weight
    src = np.asarray(source, np.float64)
    return src + (np.asarray(edited, np.float64) - src) * keep[:, None]
