"""Keep rigid things rigid: find eyeglass frames around the eyes and damp the warp on them.

Brow and lid motion deforms the skin around the eyes; a glasses frame lying there must not bend
with it. Whether the face wears glasses is read off its nose bridge (:mod:`spfem_cli.face.glasses`:
once per video when the track has measured it, else on the picture itself). With glasses, the thin
lines of the eye band (minus the eyes and brows, which are meant to move) become a smooth damping mask:
the displacement is scaled towards zero on the frame and recovers a few pixels away from it (a mask that
varies slowly, so the rims neither kink nor pick up doubled highlights). Without glasses the mask is None.
"""

from __future__ import annotations

import cv2
import numpy as np

from spfem_cli.backends.warp import facs
from spfem_cli.face import glasses

EYE_MARGIN, BROW_MARGIN = 2.0, 2.0      # aligned px around the eyes / brows that are never damped
RIM_PERCENTILE = 80                     # lines above this percentile of the eye band's are candidate rims …
RIM_FLOOR = 2.0                         # … and above this many grey levels (real skin's 80th percentile: 2-7)
RIM_REACH = 8.0                         # aligned px a held line is followed into the brows
RIM_BELOW_EYES = 34.0                   # aligned px below the lower lids the band reaches (big round lenses end ~30 down)
RIM_RAMP = 0.5                          # a line is held fully from (1 + RIM_RAMP) × the cut, in proportion below
PRECHECK_SLACK = 1.0                    # grey levels below GLASSES_LO at which the strip pre-check still says maybe


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


def _nose_wings(points: np.ndarray) -> list[np.ndarray]:
    """Each nose wing's outline (the wings move with a nose wrinkle and a raised upper lip)."""
    if len(points) == facs.N_MESH:
        wings = [points[facs.NOSE_WING], points[facs.MIRROR[facs.NOSE_WING]]]
    else:
        wings = [points[[31, 32, 33]], points[[33, 34, 35]]]
    return [cv2.convexHull(np.asarray(w, np.float32)).reshape(-1, 2) for w in wings]


def _inner_eye_corners(points: np.ndarray) -> np.ndarray:
    """The two inner eye corners (2, 2) of a face's points (478 mesh or 68 iBUG)."""
    if len(points) == facs.N_MESH:
        return points[[facs.LID_UPPER[0], facs.MIRROR[facs.LID_UPPER[0]]]]
    return points[list(glasses.INNER_EYE_CORNERS_68)]


def may_have_glasses(frame: np.ndarray, matrix: np.ndarray, points: np.ndarray, size: int) -> bool:
    """Whether the ``size``² aligned crop of ``frame`` (``matrix``: frame → crop) may show a glasses bridge,
    read off the bridge strip alone (:func:`~spfem_cli.face.glasses.line_in_frame`): a face without glasses,
    the common case, then costs ~0.1 ms instead of a bicubic crop and its line filter (~5 ms at 720p). It
    answers True within :data:`PRECHECK_SLACK` of the threshold and :func:`rigid_damping` decides on the
    full crop."""
    line = glasses.line_in_frame(frame, matrix, _inner_eye_corners(points), size)
    return line > glasses.GLASSES_LO - PRECHECK_SLACK


def rigid_damping(crop: np.ndarray, points: np.ndarray, evidence: float | None = None) -> np.ndarray | None:
    """Damping (H×W float32 in [0, 1]) over eyeglass frames in an aligned crop, or None without glasses.

    ``points`` are the face's points in the crop's pixels (478 mesh or 68 iBUG); ``evidence`` (0…1) that
    the face wears glasses, the video's (:func:`~spfem_cli.face.glasses.clip_evidence`), or None to judge
    this crop alone.
    """
    h, w = crop.shape[:2]
    scale = w / 256.0
    if evidence is None:
        evidence = glasses.evidence(glasses.line_in_crop(crop, _inner_eye_corners(points), scale))
    if evidence <= 0.0:
        return None
    eyes = _eye_polygons(points)
    pts = np.concatenate(eyes + _brow_polygons(points))
    x0, x1 = pts[:, 0].min() - 22 * scale, pts[:, 0].max() + 22 * scale
    y0, y1 = pts[:, 1].min() - 4 * scale, np.concatenate(eyes)[:, 1].max() + RIM_BELOW_EYES * scale
    box = np.s_[int(max(0, y0)):int(min(h, y1)), int(max(0, x0)):int(min(w, x1))]
    # The brows and the hair above them move, and so do the nose wings below: they are left free …
    above = [np.r_[lower, lower[::-1] - (0.0, 60.0 * scale)] for lower in _brow_lower_edges(points)]
    eye_area = _polygon_mask((h, w), eyes, dilate=int(EYE_MARGIN * scale))
    moving = eye_area | _polygon_mask((h, w), _brow_polygons(points) + above + _nose_wings(points),
                                      dilate=int(BROW_MARGIN * scale))
    # … but a line of the free band (a rim) is followed into them for up to RIM_REACH (the top rim under an
    # inner brow head stays whole), never into the eyes. Lines, not edges: ranked against the brows', lashes'
    # and hair's edges by a gradient's magnitude, thin metal rims and the bridge fell below the cut on whole
    # stretches, which then bent with the brows. Every line is held in proportion to its strength (a ramp from
    # the cut up to RIM_RAMP above it, then a grey-level reconstruction from the free band): the mask changes
    # as little from frame to frame as the picture does. Decided yes/no per connected line, it flipped on
    # still frames and the lenses shimmered.
    lines = glasses.thin_lines(crop[box], scale)   # the band only (its border rows see a replicated edge)
    cut = max(float(np.percentile(lines, RIM_PERCENTILE)), RIM_FLOOR)
    strength = np.clip((lines - cut) / (RIM_RAMP * cut), 0.0, 1.0)
    strength[eye_area[box]] = 0.0
    held = np.where(moving[box], 0.0, strength).astype(np.float32)
    step = np.ones((3, 3), np.uint8)
    for _ in range(int(RIM_REACH * scale)):
        held = np.minimum(cv2.dilate(held, step), strength)
    mask = np.zeros((h, w), np.float32)
    mask[box] = held
    mask = cv2.dilate(mask, step, iterations=max(1, int(3 * scale)))
    # Full damping on the frame itself (a rim damped unevenly along its length kinks), a wide smooth
    # falloff around it (the skin next to it takes up the motion gradually).
    mask = np.maximum(cv2.GaussianBlur(mask, (0, 0), 1.5 * scale), 1.3 * cv2.GaussianBlur(mask, (0, 0), 6.0 * scale))
    # The falloff inside a lens must not reach the lids: a rim never crosses the eye, and a damped lid
    # would not widen or narrow behind it (the skin between lid and rim takes up the motion instead).
    eye_openings = cv2.GaussianBlur(eye_area.astype(np.float32), (0, 0), scale)
    return np.clip(mask * (1.0 - eye_openings), 0.0, 1.0) * evidence


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
