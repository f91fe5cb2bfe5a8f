"""Temporal clean-up of per-frame detections: scene cuts, short gaps, One-Euro smoothing, box medians.

Pure numpy on the small per-frame track (68×2 floats a frame), so it runs after the streaming pass.
Rules: nothing crosses a scene cut; a gap of at most ``max_gap`` frames inside one shot is
interpolated linearly; longer gaps stay invalid (the face left) and the filters restart after them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import median_filter


@dataclass(frozen=True)
class TemporalConfig:
    """Smoothing parameters (One-Euro in face-width units, so they do not depend on resolution)."""

    min_cutoff: float = 1.5     # Hz: cutoff at rest (removes jitter)
    beta: float = 10.0          # cutoff rise per face-width/s of speed (fast lips pass almost unfiltered)
    d_cutoff: float = 1.0       # Hz: cutoff of the speed estimate
    box_median: int = 9         # frames, odd: median window for boxes
    max_gap: int = 3            # frames: longest hole filled by interpolation
    cut_pixels: float = 0.2     # mean thumbnail difference (0..1) that counts as a cut
    cut_histogram: float = 0.45  # half-L1 colour-histogram distance (0..1) that counts as a cut


_HIST_BINS = 48          # 3 channels × 16 bins
_THUMB = (32, 18)        # thumbnail (w, h) for the pixel-difference score


def frame_signature(frame: np.ndarray) -> np.ndarray:
    """Colour histogram (3×16 bins, normalised) followed by a blurred 32×18 thumbnail in [0, 1]."""
    small = cv2.resize(frame, (64, 36), interpolation=cv2.INTER_AREA)
    hist = np.concatenate([np.bincount(small[..., c].ravel() >> 4, minlength=16) for c in range(3)])
    thumb = cv2.resize(cv2.GaussianBlur(small, (0, 0), 1.0), _THUMB, interpolation=cv2.INTER_AREA)
    return np.r_[hist.astype(np.float32) / hist.sum(), thumb.ravel().astype(np.float32) / 255.0]


def is_cut(previous: np.ndarray | None, current: np.ndarray, config: TemporalConfig) -> bool:
    """A hard cut: the picture changes wholesale in one frame.

    Either the thumbnails differ by more than ``cut_pixels`` on average (a new framing; a fast pan
    of 6 % of the width per frame scores ~0.15, a cut between two shots of the same face ~0.3), or
    the colour histograms by more than ``cut_histogram`` (half-L1, 0..1).
    """
    if previous is None:
        return False
    hist = float(np.abs(previous[:_HIST_BINS] - current[:_HIST_BINS]).sum() / 6.0)   # /3 channels, /2 half-L1
    pixels = float(np.abs(previous[_HIST_BINS:] - current[_HIST_BINS:]).mean())
    return pixels > config.cut_pixels or hist > config.cut_histogram


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of the runs of True in a boolean array."""
    padded = np.r_[False, mask, False].astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2], strict=True))


def shots(cuts: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each shot given the per-frame cut flags."""
    starts = np.r_[0, np.flatnonzero(cuts[1:]) + 1]
    stops = np.r_[starts[1:], len(cuts)]
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def fill_gaps(arrays: list[np.ndarray], valid: np.ndarray, cuts: np.ndarray, max_gap: int) -> np.ndarray:
    """Linearly interpolate holes of ≤ ``max_gap`` frames between two valid frames of the same shot.

    Modifies ``arrays`` in place; returns the per-frame flag of the frames it filled.
    """
    filled = np.zeros_like(valid)
    for s0, s1 in shots(cuts):
        for g0, g1 in runs(~valid[s0:s1]):
            a, b = s0 + g0 - 1, s0 + g1          # valid neighbours
            if g0 == 0 or s0 + g1 >= s1 or g1 - g0 > max_gap:
                continue
            for k in range(a + 1, b):
                t = (k - a) / (b - a)
                for arr in arrays:
                    arr[k] = (1 - t) * arr[a] + t * arr[b]
            filled[a + 1:b] = True
    return filled


def _alpha(cutoff: np.ndarray | float, rate: float) -> np.ndarray | float:
    tau = 1.0 / (2 * np.pi * cutoff)
    return 1.0 / (1.0 + tau * rate)


def one_euro(points: np.ndarray, fps: float, scale: float, config: TemporalConfig) -> np.ndarray:
    """One-Euro filter (Casiez et al. 2012) over time for points ``(T, P, 2)``.

    Speed is measured per point (2-D) in units of ``scale`` (the face width) per second, so a
    still face is smoothed hard and moving lips pass almost unfiltered.
    """
    out = np.empty_like(points, dtype=np.float64)
    x_hat = points[0].astype(np.float64)
    dx_hat = np.zeros(points.shape[1:-1])
    out[0] = x_hat
    a_d = _alpha(config.d_cutoff, fps)
    for t in range(1, len(points)):
        x = points[t].astype(np.float64)
        speed = np.linalg.norm(x - x_hat, axis=-1) * fps / scale
        dx_hat = a_d * speed + (1 - a_d) * dx_hat
        a = _alpha(config.min_cutoff + config.beta * dx_hat, fps)[..., None]
        x_hat = a * x + (1 - a) * x_hat
        out[t] = x_hat
    return out


def one_euro_zero_phase(points: np.ndarray, fps: float, scale: float, config: TemporalConfig) -> np.ndarray:
    """Mean of a forward and a time-reversed One-Euro pass: the two lags cancel.

    Tracking is offline (the whole track is known), so there is no reason to accept the causal
    filter's delay: on the sample clip a forward-only pass lowers the correlation of the mouth
    opening with the driving signal from 0.973 (raw) to 0.960, the zero-phase mean keeps 0.975
    while cutting frame-to-frame jitter about threefold.
    """
    forward = one_euro(points, fps, scale, config)
    backward = one_euro(points[::-1], fps, scale, config)[::-1]
    return (forward + backward) / 2


def smooth_runs(landmarks: np.ndarray, pupils: np.ndarray, boxes: np.ndarray, valid: np.ndarray,
                cuts: np.ndarray, fps: float, config: TemporalConfig) -> None:
    """Smooth every valid run of every shot in place; the filters restart at each run start."""
    for s0, s1 in shots(cuts):
        for r0, r1 in runs(valid[s0:s1]):
            a, b = s0 + r0, s0 + r1
            widths = boxes[a:b, 2] - boxes[a:b, 0]
            scale = float(max(np.median(widths), 1.0))
            landmarks[a:b] = one_euro_zero_phase(landmarks[a:b], fps, scale, config)
            pupils[a:b] = one_euro_zero_phase(pupils[a:b], fps, scale, config)
            if b - a >= 3:
                size = min(config.box_median, (b - a) // 2 * 2 + 1)
                boxes[a:b] = median_filter(boxes[a:b], size=(size, 1), mode="nearest")
