"""FAD: Fréchet distance between ArcFace embeddings of real and generated face frames.

``d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2·(Σ₁Σ₂)^½)`` (Dowson & Landau 1982; the FID formula of Heusel et
al. 2017 and pytorch-fid's ``calculate_frechet_distance``). Numerics as pytorch-fid, without its
deprecated ``sqrtm(disp=False)``: if the square root of the product is not finite, retry with 1e-6
added to both diagonals; keep the real part and refuse an imaginary part above ``atol``.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ``np.cov``) covariance of ``(N, D)`` features; needs N ≥ 2."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError("need at least two feature rows of shape (N, D)")
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     eps: float = 1e-6, atol: float = 1e-3) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two distributions must have the same dimension")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=atol):
            raise ValueError(f"sqrtm has an imaginary component of {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fad(real: np.ndarray, generated: np.ndarray) -> float:
    """FAD between two ``(N, D)`` embedding sets (all real vs all generated frames of an emotion)."""
    return frechet_distance(*moments(real), *moments(generated))
