"""How soft is the picture? The Gaussian blur of an image, read at its strongest edges.

Whatever an edit draws into a face (the expression creases of :mod:`spfem_cli.backends.warp.wrinkles`) has
to be as soft as the picture round it: drawn crisper than a scanned photo, a painting or an upscaled webcam
face, it reads as drawn on.
The blur is read by blurring the image once more by a known ``probe``: a step edge blurred by σ keeps, at
its centre, σ / sqrt(σ² + probe²) of its gradient, so the median loss over the strongest edges of a region
(lid lines, the iris rim, nostrils, lips) gives σ (the re-blur estimate of Hu & de Haan, "Low cost robust
blur estimator", ICIP 2006). Strongest edges only: noise and fine texture lose far more of their gradient
than an edge and would read the picture as sharper than it is. A step model: blur approaching the size of
the features themselves (a 4 px blur on a 10 px iris) reads low, which only errs on the side of drawing sharp.
"""

from __future__ import annotations

import cv2
import numpy as np

PROBE = 2.0          # px of the re-blur
EDGE_SHARE = 0.02    # the share of the region's pixels, strongest gradient first, that are read
MIN_EDGES = 8        # fewer edge pixels than this: nothing to read


def _gradient(image: np.ndarray) -> np.ndarray:
    return cv2.magnitude(cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3))


def blur_sigma(image: np.ndarray, region: np.ndarray | None = None, *, edge_share: float = EDGE_SHARE) -> float | None:
    """The Gaussian blur σ (px) of ``image`` (RGB uint8 or grey) at its strongest edges inside ``region``
    (bool, same size; default all); None where the region holds no edge to read."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    grey = np.asarray(grey, np.float32)
    inside = np.ones(grey.shape, bool) if region is None else np.asarray(region, bool)
    sharp = _gradient(grey)
    values = sharp[inside]
    if values.size < MIN_EDGES or values.max() <= 1e-3:
        return None
    edges = inside & (sharp >= np.quantile(values, 1.0 - edge_share))
    if edges.sum() < MIN_EDGES:
        edges = inside & (sharp >= np.sort(values)[-MIN_EDGES])
    soft = _gradient(cv2.GaussianBlur(grey, (0, 0), PROBE))
    loss = float(np.median(sharp[edges] / np.maximum(soft[edges], 1e-6)))
    return float(PROBE / np.sqrt(max(loss * loss - 1.0, 1e-6)))


def extra_blur(sigma: float | None, sharp: float, cap: float) -> float:
    """The blur (px) to give something drawn at ``sharp`` so it matches a picture of blur ``sigma``
    (blurs add in quadrature), at most ``cap``; 0 for a picture as sharp as that or unreadable."""
    if sigma is None:
        return 0.0
    return min(float(np.sqrt(max(sigma * sigma - sharp * sharp, 0.0))), cap)
