"""Does the face wear glasses? The one cue a tracked face gives of a frame over it: a line across the nose bridge.

Between the inner eye corners a bare face never has a thin horizontal line spanning the whole strip
(lashes, eyeliner, canthus shadows and brows do not reach it); an eyeglass frame's bridge crosses it. The
cue is the strongest row's 25th percentile of :func:`thin_lines` over the strip, in grey levels. A line
filter, not an edge one: a fringe whose lower edge crossed the strip read as strong as a plastic frame on
the vertical gradient (a bare face's photo read 71, where thin metal frames read 22-65 and bare faces'
make-up up to 44, so the gradient's cut had to sit inside both ranges); as a line it reads 1.8. Measured on
the real clips, per frame: bare faces 0-6 (a fringe's strands the most), thin metal frames 10-19, plastic
46-57.

A video is judged once, on its frames' median (:func:`clip_evidence`): judged per frame, the gradient's
cue came and went on a thin frame, the same glasses were found on one frame and missed on the next, and
the rims and brows that the warp holds still behind found glasses jumped between the two.
"""

from __future__ import annotations

import cv2
import numpy as np

from spfem_cli.face.align import ALIGNED_SIZE, alignment_transform, apply_affine

GLASSES_LO, GLASSES_HI = 6.5, 9.5     # the bridge line (grey levels): no glasses below, certain above
LINE_WIDTH = 2.0                      # aligned px: the line filter's radius (wider than a rim, narrower than a brow)
MAX_MEASURE_SCALE = 2                 # the line is read on an aligned crop of at most 512 px, the render's
INNER_EYE_CORNERS_68 = (39, 42)       # iBUG-68: the right eye's inner corner, the left eye's


def thin_lines(crop: np.ndarray, scale: float) -> np.ndarray:
    """How much each pixel of an RGB crop stands out as a thin bright or dark line (grey levels): the larger
    of the morphological top-hat and black-hat at :data:`LINE_WIDTH` aligned px (``scale`` crop px per
    aligned px). An eyeglass rim or bridge is a line a pixel or two wide, bright where metal catches the
    light, dark where plastic or shadow; a step (a fringe's edge, a shadow's) is not a line."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), 0.6 * scale)
    size = 2 * int(round(LINE_WIDTH * scale)) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return np.maximum(cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, kernel), cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, kernel))


def bridge_strip(inner: np.ndarray, scale: float, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the strip between the inner eye corners ``inner`` (2, 2) that a frame's bridge
    crosses, in crop px (``scale`` crop px per aligned px); None when the eyes are too close to hold one."""
    mid = inner.mean(0)
    half = 0.22 * abs(inner[1, 0] - inner[0, 0])
    h, w = shape
    x0, x1 = int(max(0, mid[0] - half)), int(min(w, mid[0] + half))
    y0, y1 = int(max(0, mid[1] - 16 * scale)), int(min(h, mid[1] + 4 * scale))
    return None if x1 - x0 < 3 or y1 - y0 < 3 else (x0, y0, x1, y1)


def _padded(strip: tuple[int, int, int, int], scale: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The strip grown by what the line filter's blur and kernel read around it, inside ``shape``."""
    r = int(np.ceil(4 * 0.6 * scale)) + 2 * int(round(LINE_WIDTH * scale)) + 2
    x0, y0, x1, y1 = strip
    return max(0, x0 - r), max(0, y0 - r), min(shape[1], x1 + r), min(shape[0], y1 + r)


def _strip_line(patch: np.ndarray, strip: tuple[int, int, int, int], origin: tuple[int, int], scale: float) -> float:
    """The bridge line of ``strip`` read off ``patch``, the padded strip's pixels (its corner at ``origin``):
    the strongest row's 25th percentile of the line filter."""
    x0, y0, x1, y1 = strip
    lines = thin_lines(patch, scale)[y0 - origin[1]:y1 - origin[1], x0 - origin[0]:x1 - origin[0]]
    return float(np.percentile(lines, 25, axis=1).max())


def line_in_crop(crop: np.ndarray, inner: np.ndarray, scale: float) -> float:
    """The bridge line's strength in an aligned RGB crop (0 when the strip does not fit)."""
    strip = bridge_strip(inner, scale, crop.shape[:2])
    if strip is None:
        return 0.0
    bx0, by0, bx1, by1 = _padded(strip, scale, crop.shape[:2])
    return _strip_line(np.ascontiguousarray(crop[by0:by1, bx0:bx1]), strip, (bx0, by0), scale)


def line_in_frame(frame: np.ndarray, matrix: np.ndarray, inner: np.ndarray, size: int) -> float:
    """The bridge line of the ``size``² aligned crop of ``frame`` (``matrix``: frame → crop; ``inner`` in crop
    px), read off the few hundred pixels of its padded strip, not a whole crop: ~0.1 ms. The strip is
    resampled on its own, which can move a sample by 1/32 px."""
    scale = size / float(ALIGNED_SIZE)
    strip = bridge_strip(inner, scale, (size, size))
    if strip is None:
        return 0.0
    bx0, by0, bx1, by1 = _padded(strip, scale, (size, size))
    local = np.asarray(matrix, np.float64).copy()
    local[:, 2] -= (bx0, by0)
    patch = cv2.warpAffine(frame, local, (bx1 - bx0, by1 - by0), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return _strip_line(patch, strip, (bx0, by0), scale)


def measure_scale(matrix: np.ndarray) -> int:
    """Aligned crop scale at which a frame's line is read: as sharp as the face in the frame, at most 2."""
    aligned_per_frame_px = float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))
    return int(np.clip(np.ceil(1.0 / max(aligned_per_frame_px, 1e-6)), 1, MAX_MEASURE_SCALE))


def frame_line(frame: np.ndarray, landmarks: np.ndarray) -> float:
    """The bridge line of one tracked face (68 iBUG landmarks, frame px) in ``frame``."""
    matrix = alignment_transform(landmarks)
    d = measure_scale(matrix)
    inner = apply_affine(matrix, np.asarray(landmarks, np.float64)[list(INNER_EYE_CORNERS_68)]) * d
    return line_in_frame(frame, matrix * d, inner, ALIGNED_SIZE * d)


def evidence(line: float) -> float:
    """0 (no glasses) … 1 (glasses) from a bridge line's strength."""
    return float(np.clip((line - GLASSES_LO) / (GLASSES_HI - GLASSES_LO), 0.0, 1.0))


def clip_evidence(lines: np.ndarray) -> float:
    """0 … 1: whether a video's face wears glasses, from the median of its frames' lines (NaN: no
    measurement; a photo's one line is its median)."""
    lines = np.asarray(lines, np.float64)
    finite = lines[np.isfinite(lines)]
    return 0.0 if finite.size == 0 else evidence(float(np.median(finite)))
