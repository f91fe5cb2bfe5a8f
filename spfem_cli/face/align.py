"""Alignment of faces to one fixed 68-point template, and the paper's pose-alignment module.

Every later stage (expression encoders, renderers, the metric, paste-back) works on 256×256
aligned crops. A frame goes into that space with the similarity ``M`` (2×3, image → aligned)
estimated by Umeyama's least squares from the tracked iBUG-68 landmarks to :data:`TEMPLATE_68`,
and comes back with :func:`invert_affine`. NED convention: face centred, upright, a fixed scale.
"""

from __future__ import annotations

import cv2
import numpy as np

ALIGNED_SIZE = 256

# iBUG-68 template in a 256×256 aligned crop (x, y pixels). Derived once: the MediaPipe FaceMesh fit
# of the frontal face in skimage.data.astronaut(), mapped to 68 points with
# spfem_cli.face.tracking.mediapipe_tracker.MP_TO_IBUG68, rolled so the eyes are level, mirror-averaged
# over the iBUG left/right pairs, inner lips closed, scaled so the 68 points span 150 px in x,
# and centred at (128, 145) so the crop keeps the forehead and some room below the chin.
TEMPLATE_68 = np.array([
    [53.0, 97.2], [53.2, 111.4], [55.4, 142.2], [59.3, 159.4], [65.5, 173.7], [73.0, 184.8], [91.9, 203.4],
    [113.0, 216.0], [128.0, 217.9], [143.0, 216.0], [164.1, 203.4], [183.0, 184.8], [190.5, 173.7],
    [196.7, 159.4], [200.6, 142.2], [202.8, 111.4], [203.0, 97.2],                       # 0-16 jaw
    [66.5, 79.9], [73.2, 74.7], [83.4, 72.1], [96.5, 73.0], [111.7, 75.1],                # 17-21 right brow
    [144.3, 75.1], [159.5, 73.0], [172.6, 72.1], [182.8, 74.7], [189.5, 79.9],            # 22-26 left brow
    [128.0, 91.3], [128.0, 107.7], [128.0, 123.3], [128.0, 133.0],                        # 27-30 nose bridge
    [110.5, 138.4], [117.5, 142.4], [128.0, 143.9], [138.5, 142.4], [145.5, 138.4],       # 31-35 nostrils
    [78.2, 94.8], [84.8, 89.5], [96.5, 89.0], [108.5, 97.6], [98.0, 99.2], [86.9, 99.1],  # 36-41 right eye
    [147.5, 97.6], [159.5, 89.0], [171.2, 89.5], [177.8, 94.8], [169.1, 99.1], [158.0, 99.2],  # 42-47 left eye
    [92.5, 156.5], [107.6, 155.6], [117.3, 155.5], [128.0, 157.1], [138.7, 155.5], [148.4, 155.6],
    [163.5, 156.5], [147.7, 175.5], [138.7, 179.1], [128.0, 180.3], [117.3, 179.1], [108.3, 175.5],  # 48-59 outer lips
    [95.0, 157.4], [118.3, 166.3], [128.0, 167.3], [137.7, 166.3], [161.0, 157.4], [137.3, 166.3],
    [128.0, 167.3], [118.7, 166.3],                                                       # 60-67 inner lips
], dtype=np.float64)

# Points used to estimate the alignment: the rigid part of the face (brows, nose, eyes, upper jaw).
# The lower jaw and the lips move with speech; fitting to them would scale the face with every
# syllable and hide the very mouth motion the pipeline must preserve.
RIGID_POINTS = np.r_[0:3, 14:17, 17:48]


def umeyama(src: np.ndarray, dst: np.ndarray, *, scale: bool = True) -> np.ndarray:
    """Least-squares similarity ``dst ≈ s·R·src + t`` (Umeyama 1991), returned as a 2×3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (xs ** 2).sum() / len(src)
    s = float(np.trace(np.diag(d) @ sign) / var_s) if scale and var_s > 0 else 1.0
    out = np.empty((2, 3))
    out[:, :2] = s * rot
    out[:, 2] = mu_d - s * rot @ mu_s
    return out


def alignment_transform(landmarks: np.ndarray, template: np.ndarray = TEMPLATE_68,
                        points: np.ndarray = RIGID_POINTS) -> np.ndarray:
    """Image → aligned-crop similarity for one face's 68 landmarks (pixels)."""
    return umeyama(np.asarray(landmarks)[points], template[points])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2×3 affine map."""
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points ``(..., 2)`` through a 2×3 affine."""
    points = np.asarray(points, np.float64)
    return points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def warp_to_aligned(frame: np.ndarray, matrix: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The ``size``² aligned crop of ``frame`` (edges replicated where the crop leaves the frame)."""
    return cv2.warpAffine(frame, np.asarray(matrix, np.float64), (size, size), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)


def warp_from_aligned(aligned: np.ndarray, matrix: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Put an aligned crop back into frame coordinates (``frame_size`` = (H, W)); outside is zero."""
    h, w = frame_size
    return cv2.warpAffine(aligned, invert_affine(matrix), (w, h), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_CONSTANT)


def pose_align_affine(landmarks_src: np.ndarray, landmarks_dst: np.ndarray, *,
                      points: np.ndarray = RIGID_POINTS) -> np.ndarray:
    """The paper's pose-alignment module: 2×3 affine taking image ``src`` onto image ``dst``'s pose.

    ASCCL aligns a neutral and an emotional frame before comparing their feature disparities, so
    that differences of head pose do not pass for differences of expression. The reference code
    wrote this step but never called it; here it is a full affine (least squares over the rigid
    landmarks), so slight yaw/pitch foreshortening is absorbed too. Apply it with
    ``cv2.warpAffine(src_image, M, (W, H))``.
    """
    src = np.asarray(landmarks_src, np.float64)[points]
    dst = np.asarray(landmarks_dst, np.float64)[points]
    design = np.hstack([src, np.ones((len(src), 1))])
    solution, *_ = np.linalg.lstsq(design, dst, rcond=None)
    return solution.T
