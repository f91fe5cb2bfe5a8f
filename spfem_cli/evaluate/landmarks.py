"""Landmark distances and the mouth-opening signal (iBUG-68 order).

M-LMD / F-LMD: mean Euclidean distance between corresponding mouth (points 48–67) / all 68
landmarks of two sequences, over points and frames, in the coordinates given (use aligned 256²
landmarks so the numbers do not depend on the video size). Mouth opening: mean gap of the inner-lip
pairs 61–67, 62–66, 63–65 divided by the mouth width 48–54, so it is scale free; the correlation of
two openings over time tells whether an edit kept the speech motion.
"""

from __future__ import annotations

import numpy as np

MOUTH = np.arange(48, 68)
FACE = np.arange(68)
_INNER_PAIRS = ((61, 67), (62, 66), (63, 65))


def _check(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 3 or a.shape[1:] != (68, 2):
        raise ValueError(f"landmark sequences must both be (T, 68, 2), got {a.shape} and {b.shape}")
    return a, b


def lmd(a: np.ndarray, b: np.ndarray, points: np.ndarray = FACE) -> float:
    """Mean distance between corresponding ``points`` of two ``(T, 68, 2)`` sequences."""
    a, b = _check(a, b)
    return float(np.linalg.norm(a[:, points] - b[:, points], axis=-1).mean())


def m_lmd(a: np.ndarray, b: np.ndarray) -> float:
    return lmd(a, b, MOUTH)


def f_lmd(a: np.ndarray, b: np.ndarray) -> float:
    return lmd(a, b, FACE)


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """``(T,)`` inner-lip gap / mouth width."""
    lm = np.asarray(landmarks, np.float64)
    gap = np.mean([np.linalg.norm(lm[:, i] - lm[:, j], axis=-1) for i, j in _INNER_PAIRS], axis=0)
    width = np.linalg.norm(lm[:, 54] - lm[:, 48], axis=-1)
    return gap / np.maximum(width, 1e-9)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either signal is constant (no motion to compare)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = min(len(x), len(y))
    x, y = x[:n] - x[:n].mean(), y[:n] - y[:n].mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def mouth_opening_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation over time of the mouth openings of two landmark sequences."""
    return pearson(mouth_opening(a), mouth_opening(b))


def mouth_correlation(source: np.ndarray, output: np.ndarray) -> float:
    """:func:`pearson` of two mouth-opening series over the frames where both have a face (NaN under 3 such
    frames, or when either barely moves)."""
    source, output = np.asarray(source, np.float64), np.asarray(output, np.float64)
    ok = np.isfinite(source) & np.isfinite(output)
    if ok.sum() < 3 or np.std(source[ok]) < 1e-9 or np.std(output[ok]) < 1e-9:
        return float("nan")
    return pearson(source[ok], output[ok])


PEAK_PERCENTILE = 95


def peak_ratio(source: np.ndarray, output: np.ndarray) -> float:
    """Output / source peak inner-lip opening (95th percentiles over the frames where both have a face: robust
    to one bad frame); NaN under 3 such frames or when the source never opens its mouth."""
    source, output = np.asarray(source, np.float64), np.asarray(output, np.float64)
    ok = np.isfinite(source) & np.isfinite(output)
    if ok.sum() < 3:
        return float("nan")
    top = np.percentile(source[ok], PEAK_PERCENTILE)
    return float(np.percentile(output[ok], PEAK_PERCENTILE) / top) if top > 1e-6 else float("nan")
