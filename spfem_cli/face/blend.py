"""Paste-back: put an edited 256² aligned face into the original frame.

Inverse similarity warp, a soft-eroded face mask, and 4-level Laplacian-pyramid blending (NED's
last step), all restricted to the face's region of the frame so a 720p/1080p frame costs the same
as a crop. :func:`paste_back` is pure: it returns a new frame and never touches its inputs.
"""

from __future__ import annotations

import functools
from typing import Literal

import cv2
import numpy as np

from spfem_cli.face.align import ALIGNED_SIZE, TEMPLATE_68, invert_affine

BlendMode = Literal["laplacian", "copy"]
LEVELS = 4


def face_mask(landmarks: np.ndarray, size: int = ALIGNED_SIZE, *, erode: float = 0.03,
              blur: float = 0.03, forehead: float = 0.15) -> np.ndarray:
    """Soft face mask (float32 in [0, 1], ``size``²) from 68 landmarks in the same coordinates.

    Convex hull of the jaw and the brows, the brows lifted by ``forehead`` × face height so the
    brow region is covered, eroded by ``erode`` × size (the blend seam stays inside the skin) and
    blurred with σ = ``blur`` × size.
    """
    pts = np.asarray(landmarks, np.float64)
    brows = pts[17:27].copy()
    height = pts[8, 1] - brows[:, 1].min()
    brows[:, 1] -= forehead * height
    hull = cv2.convexHull(np.vstack([pts[0:17], brows]).astype(np.float32))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull[:, 0]).astype(np.int32), 255)
    k = max(1, int(round(erode * size)))
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    sigma = max(0.5, blur * size)
    return cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigma)


@functools.lru_cache(maxsize=4)
def template_mask(size: int = ALIGNED_SIZE) -> np.ndarray:
    """The default mask: :func:`face_mask` of the alignment template (read-only)."""
    mask = face_mask(TEMPLATE_68 * size / ALIGNED_SIZE, size)
    mask.setflags(write=False)
    return mask


def _region(matrix_inv: np.ndarray, mask: np.ndarray, frame_hw: tuple[int, int], pad: int) -> tuple[int, int, int, int]:
    """Frame rectangle (x0, y0, x1, y1) covering the mask's support, padded for the pyramid and clipped.

    Only this rectangle is warped and blended: with the default mask it is about half of the
    aligned square's footprint, and it does not grow with the frame size.
    """
    ys, xs = np.nonzero(mask > 1e-3)
    if len(xs) == 0:
        return 0, 0, 0, 0
    corners = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.min()], [xs.min(), ys.max() + 1],
                        [xs.max() + 1, ys.max() + 1]], np.float64)
    mapped = corners @ matrix_inv[:, :2].T + matrix_inv[:, 2]
    h, w = frame_hw
    x0, y0 = np.floor(mapped.min(0)).astype(int) - pad
    x1, y1 = np.ceil(mapped.max(0)).astype(int) + pad
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def _laplacian_blend(base: np.ndarray, top: np.ndarray, alpha: np.ndarray, levels: int) -> np.ndarray:
    """Blend float images with a Laplacian pyramid of the images and a Gaussian pyramid of ``alpha``."""
    gauss_b, gauss_t, gauss_a = [base], [top], [alpha]
    for _ in range(levels - 1):
        gauss_b.append(cv2.pyrDown(gauss_b[-1]))
        gauss_t.append(cv2.pyrDown(gauss_t[-1]))
        gauss_a.append(cv2.pyrDown(gauss_a[-1]))
    out = None
    for level in range(levels - 1, -1, -1):
        if level == levels - 1:
            lap_b, lap_t = gauss_b[level], gauss_t[level]
        else:
            shape = gauss_b[level].shape[1::-1]
            lap_b = gauss_b[level] - cv2.pyrUp(gauss_b[level + 1], dstsize=shape)
            lap_t = gauss_t[level] - cv2.pyrUp(gauss_t[level + 1], dstsize=shape)
        a = gauss_a[level][..., None]
        blended = lap_t * a + lap_b * (1 - a)
        out = blended if out is None else cv2.pyrUp(out, dstsize=blended.shape[1::-1]) + blended
    return out


def paste_back(frame: np.ndarray, aligned_face: np.ndarray, M: np.ndarray, mask: np.ndarray | None = None,
               mode: BlendMode = "laplacian") -> np.ndarray:
    """Return ``frame`` with ``aligned_face`` (S×S RGB uint8, the crop made with ``M``) blended in.

    ``M`` is the 2×3 image → aligned transform of this frame (``FaceTrack.transforms[i]``);
    ``mask`` is an S×S float mask in aligned coordinates (default: :func:`template_mask`).
    ``mode="copy"`` pastes the masked pixels with a hard threshold (debugging seams and warps).
    """
    size = aligned_face.shape[0]
    if aligned_face.shape[:2] != (size, size):
        raise ValueError("aligned_face must be square")
    if mask is None:
        mask = template_mask(size)
    if mask.shape[:2] != (size, size):
        raise ValueError(f"mask {mask.shape[:2]} does not match the aligned face {size}x{size}")
    if not np.isfinite(M).all():
        raise ValueError("no transform for this frame (invalid track frame): pass the frame through unchanged")
    m_inv = invert_affine(M)
    x0, y0, x1, y1 = _region(m_inv, mask, frame.shape[:2], pad=2 ** LEVELS)
    out = frame.copy()
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    local = m_inv.copy()
    local[:, 2] -= (x0, y0)
    roi_size = (x1 - x0, y1 - y0)
    face = cv2.warpAffine(aligned_face, local, roi_size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(np.asarray(mask, np.float32), local, roi_size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)
    region = frame[y0:y1, x0:x1]
    if mode == "copy":
        hard = alpha > 0.5
        out[y0:y1, x0:x1][hard] = face[hard]
        return out
    if mode != "laplacian":
        raise ValueError(f"unknown blend mode {mode!r}")
    blended = _laplacian_blend(region.astype(np.float32), face.astype(np.float32), alpha, LEVELS)
    # Outside the mask's support the result must be the frame itself, bit for bit.
    support = cv2.dilate((alpha > 1e-3).astype(np.uint8), np.ones((2 ** LEVELS + 1,) * 2, np.uint8)) > 0
    result = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1] = np.where(support[..., None], result, region)
    return out
