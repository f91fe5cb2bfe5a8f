"""Does the face wear glasses? The one cue a tracked face gives of a frame over it: a line across the nose bridge.

Between the inner eye corners a bare face never has a horizontal edge spanning the whole strip (lashes,
eyeliner, canthus shadows and brows do not reach it); an eyeglass frame's bridge crosses it. The line's
strength is the strongest row's 25th percentile of |d/dy| over the strip, in grey levels per aligned-256
pixel. Measured on real clips: bare faces 4-44 per frame (heavy eye make-up the most), thin metal frames
22-65, plastic frames ~200.

A thin frame's line comes and goes with the light and the head's turn (one clip read 39-60 from frame to
frame), so a video is judged once, on its frames' median (:func:`clip_evidence`): judged per frame, the
same glasses were found on one frame and missed on the next, and the rims and brows that the warp holds
still behind found glasses jumped between the two.
"""

from __future__ import annotations

import cv2
import numpy as np

from spfem_cli.face.align import ALIGNED_SIZE, alignment_transform, apply_affine

GLASSES_LO, GLASSES_HI = 42.0, 56.0   # one picture's line: no glasses below, certain above
CLIP_LO, CLIP_HI = 36.0, 44.0         # a video's median line: bare faces' medians 5-30, thin metal frames' 46-58
MIN_CLIP_FRAMES = 8                   # frames with a line below which a video is judged like one picture
MAX_MEASURE_SCALE = 2                 # the line is read on an aligned crop of at most 512 px, the render's
INNER_EYE_CORNERS_68 = (39, 42)       # iBUG-68: the right eye's inner corner, the left eye's


def bridge_strip(inner: np.ndarray, scale: float, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the strip between the inner eye corners ``inner`` (2, 2) that a frame's bridge
    crosses, in crop px (``scale`` crop px per aligned px); None when the eyes are too close to hold one."""
    mid = inner.mean(0)
    half = 0.22 * abs(inner[1, 0] - inner[0, 0])
    h, w = shape
    x0, x1 = int(max(0, mid[0] - half)), int(min(w, mid[0] + half))
    y0, y1 = int(max(0, mid[1] - 16 * scale)), int(min(h, mid[1] + 4 * scale))
    return None if x1 - x0 < 3 or y1 - y0 < 3 else (x0, y0, x1, y1)


def gradients(crop: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """d/dx and d/dy of the crop's lightly smoothed grey levels (``scale`` crop px per aligned px)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), 0.8 * scale)
    return cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)


def _line(vertical_gradient: np.ndarray, scale: float) -> float:
    return float(np.percentile(np.abs(vertical_gradient), 25, axis=1).max()) * scale


def line_in_crop(vertical_gradient: np.ndarray, inner: np.ndarray, scale: float) -> float:
    """The bridge line's strength in an aligned crop's d/dy (0 when the strip does not fit)."""
    strip = bridge_strip(inner, scale, vertical_gradient.shape)
    if strip is None:
        return 0.0
    x0, y0, x1, y1 = strip
    return _line(vertical_gradient[y0:y1, x0:x1], scale)


def line_in_frame(frame: np.ndarray, matrix: np.ndarray, inner: np.ndarray, size: int) -> float:
    """The bridge line of the ``size``² aligned crop of ``frame`` (``matrix``: frame → crop; ``inner`` in crop
    px), read off the few hundred pixels of its strip (with the smoothing and gradient kernels' reach), not a
    whole crop: ~0.1 ms. The strip is resampled on its own, which can move a sample by 1/32 px."""
    scale = size / float(ALIGNED_SIZE)
    strip = bridge_strip(inner, scale, (size, size))
    if strip is None:
        return 0.0
    x0, y0, x1, y1 = strip
    reach = int(np.ceil(4 * 0.8 * scale)) + 2             # GaussianBlur's kernel radius (4 sigma) + Sobel's
    bx0, by0 = max(0, x0 - reach), max(0, y0 - reach)
    bx1, by1 = min(size, x1 + reach), min(size, y1 + reach)
    local = np.asarray(matrix, np.float64).copy()
    local[:, 2] -= (bx0, by0)
    crop = cv2.warpAffine(frame, local, (bx1 - bx0, by1 - by0), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    _, gy = gradients(crop, scale)
    return _line(gy[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0], scale)


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


def evidence(line: float, lo: float = GLASSES_LO, hi: float = GLASSES_HI) -> float:
    """0 (no glasses) … 1 (glasses) from a line strength."""
    return float(np.clip((line - lo) / (hi - lo), 0.0, 1.0))


def clip_evidence(lines: np.ndarray) -> float:
    """0 … 1: whether a video's face wears glasses, from its frames' lines (NaN: no measurement). Fewer than
    :data:`MIN_CLIP_FRAMES` lines (a photo) are judged like one picture: a median needs frames to be
    steadier than any one of them (a bare macaque face read 40, over the video cut)."""
    lines = np.asarray(lines, np.float64)
    finite = lines[np.isfinite(lines)]
    if finite.size == 0:
        return 0.0
    lo, hi = (CLIP_LO, CLIP_HI) if finite.size >= MIN_CLIP_FRAMES else (GLASSES_LO, GLASSES_HI)
    return evidence(float(np.median(finite)), lo, hi)
