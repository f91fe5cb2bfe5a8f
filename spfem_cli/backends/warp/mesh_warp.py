"""Piecewise-affine warp of a face crop from source landmarks to edited landmarks.

The mesh is the 68 landmarks plus a ring of fixed anchors (forehead above the brows, a band outside
the jaw, the crop border). Anchors never move, so the warp is the identity outside the face and the
edited face joins the untouched frame without a seam. The triangulation is computed once on the
template, not per frame, so triangles never flip from one frame to the next (no flicker).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from scipy.spatial import Delaunay

from spfem_cli.face.align import ALIGNED_SIZE, TEMPLATE_68

_CENTRE = TEMPLATE_68[27:36].mean(0)  # nose: the face centre used to push the jaw ring outwards


def anchor_points(landmarks: np.ndarray, size: float) -> np.ndarray:
    """Fixed anchors for one face (68, 2) in a crop of ``size`` pixels: forehead, jaw band, border."""
    lm = np.asarray(landmarks, np.float64)
    scale = size / ALIGNED_SIZE
    brows = lm[17:27]
    eye_line = lm[36:48].mean(0)
    forehead = brows + (brows - eye_line) * 1.6 + np.array([0.0, -10.0 * scale])
    centre = lm[27:36].mean(0)
    jaw = lm[0:17]
    jaw_ring = centre + (jaw - centre) * 1.22
    edge = np.linspace(0, size - 1, 5)
    border = np.concatenate([
        np.stack([edge, np.zeros(5)], 1), np.stack([edge, np.full(5, size - 1)], 1),
        np.stack([np.zeros(3), edge[1:-1]], 1), np.stack([np.full(3, size - 1), edge[1:-1]], 1),
    ])
    return np.concatenate([forehead, jaw_ring, border])


@functools.lru_cache(maxsize=1)
def mesh_triangles() -> np.ndarray:
    """Triangle indices over [68 landmarks + anchors], from a Delaunay triangulation of the template."""
    points = np.concatenate([TEMPLATE_68, anchor_points(TEMPLATE_68, ALIGNED_SIZE)])
    tris = Delaunay(points).simplices
    return tris.astype(np.int32)


def piecewise_affine(image: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray,
                     triangles: np.ndarray, *, field_step: int = 4) -> np.ndarray:
    """Warp ``image`` so that ``src_points`` land on ``dst_points`` (backward mapping, bilinear).

    The backward displacement is piecewise linear, so it is evaluated exactly on a grid every
    ``field_step`` pixels (at those pixels' centres) and interpolated bilinearly in between: the same
    field up to sub-pixel error along triangle edges, at 1/step² of the cost. Only triangles with a
    moving vertex are rasterised; everything else keeps its own position (identity).
    """
    h, w = image.shape[:2]
    step = max(1, int(field_step))
    gh, gw = -(-h // step), -(-w // step)
    moving = np.abs(src_points - dst_points).max(axis=1) > 1e-6
    tris = triangles[moving[triangles].any(axis=1)]
    if len(tris) == 0:
        return image.copy()
    dst, src = dst_points[tris], src_points[tris]               # (T, 3, 2)
    dst_h = np.concatenate([dst, np.ones((len(tris), 3, 1))], axis=2)
    ok = np.abs(np.linalg.det(dst_h)) > 1e-9
    affine = np.zeros((len(tris), 3, 2))
    affine[ok] = np.linalg.solve(dst_h[ok], src[ok])            # [x y 1] @ A = source point
    offset = (step - 1) / 2.0                                    # grid pixel (i, j) sits at (j*step+offset, i*step+offset)
    tri_index = np.zeros((gh, gw), np.int32)
    for t in np.flatnonzero(ok):
        poly = np.round((dst[t] - offset) / step * 16).astype(np.int32)
        cv2.fillConvexPoly(tri_index, poly, int(t + 1), lineType=cv2.LINE_8, shift=4)
    field = np.zeros((gh, gw, 2), np.float32)
    inside = np.nonzero(tri_index)
    a = affine[tri_index[inside] - 1]                            # (P, 3, 2)
    px = inside[1] * step + offset
    py = inside[0] * step + offset
    field[inside[0], inside[1], 0] = px * a[:, 0, 0] + py * a[:, 1, 0] + a[:, 2, 0] - px
    field[inside[0], inside[1], 1] = px * a[:, 0, 1] + py * a[:, 1, 1] + a[:, 2, 1] - py
    if step > 1:
        field = cv2.resize(field, (gw * step, gh * step), interpolation=cv2.INTER_LINEAR)[:h, :w]
    grid_x, grid_y = _grid(h, w)
    return cv2.remap(image, grid_x + field[..., 0], grid_y + field[..., 1], interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


@functools.lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def warp_face(crop: np.ndarray, landmarks: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """Move the face in ``crop`` from ``landmarks`` to ``edited`` (both (68, 2) in crop pixels)."""
    size = crop.shape[0]
    anchors = anchor_points(landmarks, size)
    src = np.concatenate([landmarks, anchors])
    dst = np.concatenate([edited, anchors])
    return piecewise_affine(crop, src, dst, mesh_triangles())


def warp_region_mask(landmarks: np.ndarray, size: int, feather: float = 0.06) -> np.ndarray:
    """Soft mask (size, size) float32 in [0, 1] over the only region the warp can change.

    The hull of the forehead anchors and the jaw ring: outside it the warp is the identity, so
    blending with this mask changes no pixel outside the face. The edge is feathered inwards.
    """
    anchors = anchor_points(landmarks, size)[:27]
    hull = cv2.convexHull(np.round(anchors).astype(np.int32))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    k = max(3, int(size * feather) | 1)
    mask = cv2.erode(mask, np.ones((k, k), np.uint8))
    return cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (2 * k + 1, 2 * k + 1), 0)
