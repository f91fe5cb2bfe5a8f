"""Emotion prototypes as FACS action units acting on iBUG-68 landmarks in the aligned frame.

Each action unit (AU) is a displacement field on the 68 landmarks, in pixels of the 256² aligned
template, where the outer eye corners are 100 px apart (:data:`spfem_cli.face.align.TEMPLATE_68`); a face
of any size in the video is normalised to that scale by the alignment, so "scaled by face size"
holds by construction. Directions follow the FACS manual (Ekman & Friesen): e.g. AU12 pulls the lip
corners up and out, AU1 raises the inner brows. Emotions combine AUs as in the EMFACS prototypes.

AU26 (jaw drop) and every change of the inner-lip gap are deliberately absent: the speech opening
is the one thing the edit must not change (see :func:`keep_mouth_opening`).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from spfem_cli.face.align import TEMPLATE_68

MIDLINE_X = 128.0
_OUT = np.sign(TEMPLATE_68[:, 0] - MIDLINE_X)   # +1 on the image-right half, -1 on the left


def _field(moves: dict[tuple[int, ...], tuple[float, float]], *, outward: bool = True) -> np.ndarray:
    """Build a (68, 2) field; dx is measured outward from the midline when ``outward``."""
    field = np.zeros((68, 2))
    for points, (dx, dy) in moves.items():
        for p in points:
            field[p, 0] += dx * (_OUT[p] if outward else 1.0)
            field[p, 1] += dy
    return field


# Displacements in aligned pixels (inter-ocular distance = 100 px), for a strong but natural AU.
ACTION_UNITS: dict[str, np.ndarray] = {
    "AU1": _field({(21, 22): (0, -8), (20, 23): (0, -5), (19, 24): (0, -2)}),            # inner brow raiser
    "AU2": _field({(17, 26): (0, -7), (18, 25): (0, -7), (19, 24): (0, -4)}),            # outer brow raiser
    "AU4": _field({(21, 22): (-4, 6), (20, 23): (-2, 5), (19, 24): (0, 4), (17, 18, 25, 26): (0, 2),
                   (37, 38, 43, 44): (0, 1.5)}),                                          # brow lowerer
    "AU5": _field({(37, 38, 43, 44): (0, -3.5), (36, 39, 42, 45): (0, -1)}),              # upper lid raiser
    "AU6": _field({(40, 41, 46, 47): (0, -2.5), (36, 45): (0, -1)}),                      # cheek raiser
    "AU7": _field({(40, 41, 46, 47): (0, -2), (37, 38, 43, 44): (0, 1)}),                 # lid tightener
    "AU9": _field({(31, 35): (0, -3), (32, 33, 34): (0, -2), (21, 22): (0, 2), (50, 51, 52): (0, -1)}),  # nose wrinkler
    "AU10": _field({(50, 51, 52): (0, -4), (49, 53): (0, -3), (61, 62, 63): (0, -2)}),    # upper lip raiser
    "AU12": _field({(48, 54): (7, -7), (60, 64): (6, -6), (49, 53, 59, 55): (3, -3)}),    # lip corner puller
    "AU15": _field({(48, 54): (0, 6), (60, 64): (0, 5), (49, 53, 59, 55): (0, 2.5)}),     # lip corner depressor
    "AU20": _field({(48, 54): (6, 1), (60, 64): (5, 1), (49, 53, 59, 55): (2.5, 0)}),     # lip stretcher
    "AU23": _field({(48, 54): (-4, 0), (60, 64): (-3, 0), (50, 51, 52): (0, 1), (56, 57, 58): (0, -1)}),  # lip tightener
    # AU14 (dimpler) on the subject's left only (image right): the asymmetric contempt smirk.
    "AU14R": _field({(54,): (4, -4), (64,): (3, -3), (53, 55): (1.5, -1.5)}),
}

# EMFACS-style prototypes: AU weights per emotion.
EMOTION_AUS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"AU6": 1.0, "AU12": 1.0},
    "sad": {"AU1": 1.0, "AU4": 0.6, "AU15": 1.0},
    "surprised": {"AU1": 1.0, "AU2": 1.0, "AU5": 1.0},         # AU26 left out: the opening is the speech's
    "fear": {"AU1": 1.0, "AU2": 0.7, "AU4": 0.6, "AU5": 1.0, "AU20": 1.0},
    "angry": {"AU4": 1.0, "AU5": 0.6, "AU7": 1.0, "AU23": 1.0},
    "disgusted": {"AU9": 1.0, "AU10": 1.0, "AU15": 0.6},
    "contempt": {"AU14R": 1.0},
}

# Points whose static offset says something about expression. The jaw line, the lower lip and the
# inner-lip gap move with speech (their median over a clip is biased by how much the person talks),
# so only the brows, nose wings, eyes, mouth corners and upper lip are read.
EXPRESSIVE_POINTS = np.r_[17:27, 31:36, 36:48, 48:55, 60, 64]

# A neutral face in the aligned frame. TEMPLATE_68 was fitted to a smiling portrait: its mouth corners
# sit 11 px above the lip line and the mouth is ~6 px too wide. Undo that (corners level with the lip
# line, slightly narrower, AU6's lifted lower lids lowered) so "neutral" means no expression.
NEUTRAL_68 = TEMPLATE_68 + _field({(48, 54): (-3, 11), (60, 64): (-3, 10), (49, 53): (-1, 4), (59, 55): (-1, 3),
                                    (40, 41, 46, 47): (0, 1.5)})
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))


def prototype(emotion: str) -> np.ndarray:
    """Landmark displacement (68, 2) of a full-intensity emotion."""
    field = np.zeros((68, 2))
    for au, weight in EMOTION_AUS[emotion].items():
        field += weight * ACTION_UNITS[au]
    return field


def estimate_expression(aligned_landmarks: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """The expression offset of a face: its median landmarks relative to a neutral face, projected on the AU basis.

    Non-negative least squares over the AU fields (coefficients capped at 1.5) keeps what looks like
    an expression (a smile pulls the corners up and out) and drops identity shape that no AU explains.
    Returns the (68, 2) offset and the AU coefficients.
    """
    pts = np.asarray(aligned_landmarks, np.float64)
    median = np.nanmedian(pts.reshape(-1, 68, 2), axis=0)
    deviation = (median - NEUTRAL_68)[EXPRESSIVE_POINTS].ravel()
    names = list(ACTION_UNITS)
    basis = np.stack([ACTION_UNITS[n][EXPRESSIVE_POINTS].ravel() for n in names], axis=1)
    coefs, _ = nnls(basis, deviation)
    coefs = np.minimum(coefs, 1.5)
    offset = sum(c * ACTION_UNITS[n] for n, c in zip(names, coefs, strict=True))
    return np.asarray(offset), {n: float(c) for n, c in zip(names, coefs, strict=True) if c > 1e-3}


def keep_mouth_opening(source: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """Restore the source's inner-lip gaps and jaw line in the edited landmarks (N, 68, 2).

    Each upper/lower inner-lip pair keeps the source's vertical and horizontal gap around the edited
    pair's midpoint, so mouth corners may move but the opening never changes; jaw points are kept.
    """
    out = np.array(edited, np.float64, copy=True)
    src = np.asarray(source, np.float64)
    for top, bottom in INNER_LIP_PAIRS:
        mid = 0.5 * (out[..., top, :] + out[..., bottom, :])
        gap = src[..., bottom, :] - src[..., top, :]
        out[..., top, :] = mid - 0.5 * gap
        out[..., bottom, :] = mid + 0.5 * gap
    out[..., 0:17, :] = src[..., 0:17, :]
    return out
