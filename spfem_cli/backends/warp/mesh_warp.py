"""Piecewise-affine warp of a face crop from source points to edited points (478-point mesh or iBUG-68).

The mesh is the tracked points plus a ring of fixed anchors outside the face and the crop border.
Anchors never move, so the warp is the identity outside the face and the edited face joins the
untouched frame without a seam. The triangulation is computed once, on the canonical neutral mesh
(:mod:`spfem_cli.backends.warp.canonical_mesh`) with its mouth opened, not per frame: triangles never
change from one frame to the next (no flicker), no vertex is dropped, and no triangle spans the
lips, so an open mouth warps as an open mouth. (The old 68-point triangulation was made on a closed
template mouth where points 62 and 66 coincide: Delaunay dropped 66 and two triangles folded over the
opening when the mouth opened, which is what flattened the re-tracked opening after ``happy``.)
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from scipy.spatial import Delaunay

from spfem_cli.backends.warp import canonical_mesh
from spfem_cli.face.align import ALIGNED_SIZE

# iBUG-68 groups used by the 68-point anchors.
_BROWS_68, _EYES_68, _NOSE_68, _JAW_68 = np.arange(17, 27), np.arange(36, 48), np.arange(27, 36), np.arange(0, 17)
MOUTH_OPEN_PX = 8.0      # canonical mouth opened by this much before triangulating
RING_SCALE = 1.22        # anchor ring: face outline pushed out from the nose by this factor
N_BORDER = 16


@functools.lru_cache(maxsize=8)
def _border(size: float) -> np.ndarray:
    """The crop's border anchors (read-only, cached: anchors are built thousands of times per edit)."""
    edge = np.linspace(0, size - 1, 5)
    out = np.concatenate([
        np.stack([edge, np.zeros(5)], 1), np.stack([edge, np.full(5, size - 1)], 1),
        np.stack([np.zeros(3), edge[1:-1]], 1), np.stack([np.full(3, size - 1), edge[1:-1]], 1),
    ])
    out.setflags(write=False)
    return out


def anchor_points(points: np.ndarray, size: float) -> np.ndarray:
    """Fixed anchors for one face (P, 2), P = 478 or 68, in a crop of ``size`` px: ring + border.

    Mesh: the face outline pushed out from the nose. 68 points: a forehead row above the brows and a
    band outside the jaw (the iBUG jaw stops at the ears).
    """
    pts = np.asarray(points, np.float64)
    if len(pts) == canonical_mesh.N_MESH:
        centre = pts[[1, 4, 5, 195, 197]].mean(0)
        ring = centre + (pts[canonical_mesh.FACE_OVAL] - centre) * RING_SCALE
        return np.concatenate([ring, _border(size)])
    scale = size / ALIGNED_SIZE
    brows = pts[_BROWS_68]
    eye_line = pts[_EYES_68].mean(0)
    forehead = brows + (brows - eye_line) * 1.6 + np.array([0.0, -10.0 * scale])
    centre = pts[_NOSE_68].mean(0)
    jaw_ring = centre + (pts[_JAW_68] - centre) * 1.22
    return np.concatenate([forehead, jaw_ring, _border(size)])


def _open_mouth(points: np.ndarray) -> np.ndarray:
    """Canonical points with the lower lip and chin moved down (the layout the topology is made on)."""
    pts = np.array(points, np.float64, copy=True)
    mesh_like = len(pts) == canonical_mesh.N_MESH
    lip_y = pts[13, 1] if mesh_like else pts[62, 1]
    lower = pts[:, 1] > lip_y + 0.5
    corners = pts[[61, 291], 0] if mesh_like else pts[[48, 54], 0]
    half = (corners[1] - corners[0]) / 2 + 14.0
    fall = np.clip(1.5 - np.abs(pts[:, 0] - 128.0) / half, 0.0, 1.0)
    pts[lower, 1] += MOUTH_OPEN_PX * fall[lower]
    return pts


@functools.lru_cache(maxsize=2)
def mesh_topology(n_points: int = canonical_mesh.N_MESH) -> np.ndarray:
    """Triangles (T, 3) over [points + anchors] for 478 mesh points or 68 iBUG landmarks.

    Delaunay on the canonical neutral face with the mouth opened; the iris (468–477) is left out:
    its ring sits on or outside the lids, and a centre pinned inside a narrowing eye would fold
    the lid triangles; the eye is spanned lid to lid.
    """
    rest = _open_mouth(canonical_mesh.neutral(n_points))
    pts = np.concatenate([rest, anchor_points(rest, ALIGNED_SIZE)])
    use = np.ones(len(pts), bool)
    if n_points == canonical_mesh.N_MESH:
        use[canonical_mesh.IRIS] = False
    index = np.flatnonzero(use)
    tri = Delaunay(pts[index])
    if len(tri.coplanar):
        raise RuntimeError("the canonical layout has coincident points")
    tris = index[tri.simplices].astype(np.int32)
    return tris


def orientation(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed doubled area of each triangle (positive = counter-clockwise in x-right, y-down pixels)."""
    a, b, c = points[triangles[:, 0]], points[triangles[:, 1]], points[triangles[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def piecewise_affine(image: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray,
                     triangles: np.ndarray, *, field_step: int = 4,
                     damping: np.ndarray | None = None) -> np.ndarray:
    """Warp ``image`` so that ``src_points`` land on ``dst_points`` (backward mapping, bilinear).

    The backward displacement is piecewise linear, so it is evaluated exactly on a grid every
    ``field_step`` pixels (at those pixels' centres) and interpolated bilinearly in between: the same
    field up to sub-pixel error along triangle edges, at 1/step² of the cost. Only triangles with a
    moving vertex are rasterised; everything else keeps its own position (identity). ``damping``
    (H×W in [0, 1]) scales the displacement down where rigid things (glasses frames) must not bend.
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
    if damping is not None:
        field *= (1.0 - np.clip(damping, 0.0, 1.0))[..., None].astype(np.float32)
    grid_x, grid_y = _grid(h, w)
    return cv2.remap(image, grid_x + field[..., 0], grid_y + field[..., 1], interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


@functools.lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def warp_points(points: np.ndarray, size: int) -> np.ndarray:
    """[points + anchors] of one face in a crop of ``size`` px (the vertices of :func:`mesh_topology`)."""
    return np.concatenate([points, anchor_points(points, size)])


def warp_face(crop: np.ndarray, points: np.ndarray, edited: np.ndarray, *,
              damping: np.ndarray | None = None) -> np.ndarray:
    """Move the face in ``crop`` from ``points`` to ``edited`` (both (P, 2) in crop pixels, P = 478 or 68).

    The anchors are those of the source face for both sides: they stay where they are.
    """
    size = crop.shape[0]
    anchors = anchor_points(points, size)
    src = np.concatenate([points, anchors])
    dst = np.concatenate([edited, anchors])
    return piecewise_affine(crop, src, dst, mesh_topology(len(points)), damping=damping)


def warp_region_mask(points: np.ndarray, size: int, feather: float = 0.06) -> np.ndarray:
    """Soft mask (size, size) float32 in [0, 1] over the only region the warp can change.

    The hull of the anchor ring: outside it the warp is the identity, so blending with this mask
    changes no pixel outside the face. The edge is feathered inwards.
    """
    ring = anchor_points(points, size)[:-N_BORDER]
    hull = cv2.convexHull(np.round(ring).astype(np.int32))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    k = max(3, int(size * feather) | 1)
    mask = cv2.erode(mask, np.ones((k, k), np.uint8))
    return cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (2 * k + 1, 2 * k + 1), 0)
