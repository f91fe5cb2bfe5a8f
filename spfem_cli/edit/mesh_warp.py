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

from spfem_cli.align import ALIGNED_SIZE, TEMPLATE_68

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
    """Triangle indices over [68 landmarks + anchors], from a Delaunay triangulation of the template.

    Triangles made only of inner-lip points are dropped: the mouth interior warps with its frame.
    """
    points = np.concatenate([TEMPLATE_68, anchor_points(TEMPLATE_68, ALIGNED_SIZE)])
    tris = Delaunay(points).simplices
    return tris.astype(np.int32)


def piecewise_affine(image: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray,
                     triangles: np.ndarray) -> np.ndarray:
    """Warp ``image`` so that ``src_points`` land on ``dst_points`` (backward mapping, bilinear).

    Pixels outside every triangle keep their own position (identity).
    """
    h, w = image.shape[:2]
    tri_index = np.zeros((h, w), np.int32)
    dst = dst_points[triangles]                      # (T, 3, 2)
    src = src_points[triangles]
    # Affine per triangle mapping dst -> src: solve [x y 1] A = [x' y'].
    ones = np.ones((len(triangles), 3, 1))
    dst_h = np.concatenate([dst, ones], axis=2)      # (T, 3, 3)
    det = np.linalg.det(dst_h)
    ok = np.abs(det) > 1e-9
    affine = np.zeros((len(triangles), 3, 2))
    affine[ok] = np.linalg.solve(dst_h[ok], src[ok])
    for t in np.flatnonzero(ok):
        cv2.fillConvexPoly(tri_index, np.round(dst[t] * 16).astype(np.int32), int(t + 1), lineType=cv2.LINE_8, shift=4)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = tri_index > 0
    idx = tri_index[inside] - 1
    a = affine[idx]                                  # (P, 3, 2)
    px, py = xs[inside], ys[inside]
    map_x, map_y = xs.copy(), ys.copy()
    map_x[inside] = px * a[:, 0, 0] + py * a[:, 1, 0] + a[:, 2, 0]
    map_y[inside] = px * a[:, 0, 1] + py * a[:, 1, 1] + a[:, 2, 1]
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


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
