"""MFCCs exactly as ``python_speech_features.mfcc`` computes them with its defaults, in numpy.

SyncNet was trained on these features, so LSE numbers depend on every detail: pre-emphasis 0.97,
25 ms rectangular frames, step given per preset (10 ms, or 1/120 s for the 30 fps SPFEM setting),
frame lengths rounded half-up to whole samples, zero-padded tail frame, 512-point power spectrum
divided by NFFT, 26 triangular mel filters on ``floor((NFFT+1)·hz/rate)`` bins, log, orthonormal
DCT-II, 13 coefficients, sinusoidal lifter 22, and c0 replaced by the log frame energy. Zero
energies become ``float eps`` before the log, as in the reference.

Input scale matters for c0: joonson/syncnet_python reads 16-bit WAV files written by ffmpeg, so its
float audio in [-1, 1] becomes ``round(x·32768)`` first (:func:`int16_scale`); CDRL feeds librosa's
floats as they are (c0 lower by 2·ln 32768).
"""

from __future__ import annotations

import decimal

import numpy as np
from scipy.fft import dct

EPS = np.finfo(float).eps


def _round_half_up(x: float) -> int:
    return int(decimal.Decimal(x).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def int16_scale(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] → the samples of the 16-bit WAV ffmpeg writes (``pcm_s16le``: ×32768,
    rounded to nearest, clipped), as float64."""
    return np.clip(np.rint(np.asarray(audio, np.float64) * 32768.0), -32768, 32767)


def frame_signal(signal: np.ndarray, frame_len: float, frame_step: float) -> np.ndarray:
    """Overlapping frames; the last one zero-padded (``python_speech_features.sigproc.framesig``)."""
    n = len(signal)
    flen, fstep = _round_half_up(frame_len), _round_half_up(frame_step)
    count = 1 if n <= flen else 1 + int(np.ceil((n - flen) / fstep))
    padded = np.concatenate([signal, np.zeros(int((count - 1) * fstep + flen) - n)])
    idx = np.arange(flen)[None, :] + fstep * np.arange(count)[:, None]
    return padded[idx]


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def mel_filterbank(nfilt: int = 26, nfft: int = 512, rate: int = 16000, low: float = 0.0,
                   high: float | None = None) -> np.ndarray:
    """``(nfilt, nfft//2+1)`` triangular filters on integer FFT bins, like the reference."""
    high = high or rate / 2
    mels = np.linspace(hz_to_mel(low), hz_to_mel(high), nfilt + 2)
    bins = np.floor((nfft + 1) * mel_to_hz(mels) / rate)
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        a, b, c = int(bins[j]), int(bins[j + 1]), int(bins[j + 2])
        for i in range(a, b):
            bank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(b, c):
            bank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return bank


def mfcc(signal: np.ndarray, rate: int = 16000, *, winlen: float = 0.025, winstep: float = 0.01,
         numcep: int = 13, nfilt: int = 26, nfft: int = 512, preemph: float = 0.97,
         ceplifter: int = 22) -> np.ndarray:
    """``(n_frames, numcep)`` MFCCs of a mono signal (sample scale as given; see :func:`int16_scale`)."""
    signal = np.asarray(signal, np.float64)
    if signal.ndim != 1 or len(signal) == 0:
        raise ValueError("mfcc needs a non-empty mono signal")
    emphasised = np.append(signal[0], signal[1:] - preemph * signal[:-1])
    frames = frame_signal(emphasised, winlen * rate, winstep * rate)
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, EPS, energy)
    feat = power @ mel_filterbank(nfilt, nfft, rate).T
    feat = np.where(feat == 0, EPS, feat)
    cep = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    if ceplifter > 0:
        n = np.arange(cep.shape[1])
        cep = cep * (1 + (ceplifter / 2.0) * np.sin(np.pi * n / ceplifter))
    cep[:, 0] = np.log(energy)
    return cep
