"""Temporal alignment of two utterances of the same sentence: MFCCs at one row per video frame + DTW.

Why per video frame: the metric pairs *frames*, so the audio features are sampled exactly at the
video frame centres (frame k covers [k/fps, (k+1)/fps)); DTW over those rows then returns frame
correspondences directly. Plain NumPy/SciPy (no librosa: its first call JIT-compiles for ~15 s).
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dct, rfft


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_filters: int, n_fft: int, rate: int, fmin: float = 20.0, fmax: float | None = None) -> np.ndarray:
    """Triangular HTK-mel filters, (n_filters, n_fft//2 + 1)."""
    fmax = fmax or rate / 2
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_filters + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins[None] - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - bins[None]) / np.maximum(hi - mid, 1e-9)
    return np.clip(np.minimum(up, down), 0.0, None)


def mfcc_per_frame(samples: np.ndarray, rate: int, n_frames: int, fps: float, *, n_mfcc: int = 13,
                   n_filters: int = 40) -> np.ndarray:
    """(n_frames, n_mfcc) MFCCs, row k from a Hann window of two frame periods centred on video frame k.

    Audio shorter than the video is zero-padded (silence rows), longer audio is ignored past the end.
    """
    samples = np.asarray(samples, dtype=np.float64).reshape(-1)
    period = rate / float(fps)
    win = int(round(2 * period))
    n_fft = 1 << (win - 1).bit_length()
    centres = ((np.arange(n_frames) + 0.5) * period).round().astype(np.int64)
    padded = np.pad(samples, (win, win + max(0, int(centres[-1]) - len(samples)) if n_frames else win))
    starts = centres - win // 2 + win
    frames = padded[starts[:, None] + np.arange(win)[None]] * np.hanning(win)[None]
    power = np.abs(rfft(frames, n=n_fft, axis=1)) ** 2
    mel = power @ mel_filterbank(n_filters, n_fft, rate).T
    return dct(np.log(mel + 1e-10), type=2, axis=1, norm="ortho")[:, :n_mfcc].astype(np.float32)


def dtw_path(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classic DTW (steps (1,0), (0,1), (1,1); L1 row distance; no window): matched index arrays.

    The path starts at (0, 0), ends at (len(a)−1, len(b)−1) and is monotonic in both indices.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        raise ValueError("DTW needs two non-empty sequences")
    cost = np.abs(a[:, None, :] - b[None, :, :]).sum(-1)
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        row, prev = acc[i], acc[i - 1]
        diag_up = np.minimum(prev[:-1], prev[1:]) + cost[i - 1]    # best of (i-1, j-1) and (i-1, j)
        for j in range(1, m + 1):                                  # the (i, j-1) step is sequential
            left = row[j - 1] + cost[i - 1, j - 1]
            row[j] = diag_up[j - 1] if diag_up[j - 1] < left else left
    ia, ib = [n - 1], [m - 1]
    i, j = n, m
    while (i, j) != (1, 1):
        steps = ((acc[i - 1, j - 1], i - 1, j - 1), (acc[i - 1, j], i - 1, j), (acc[i, j - 1], i, j - 1))
        _, i, j = min(steps, key=lambda s: s[0])
        ia.append(i - 1)
        ib.append(j - 1)
    return np.array(ia[::-1]), np.array(ib[::-1])
