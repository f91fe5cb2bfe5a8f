"""The picture's blur, read at its strongest edges: what the drawn-in creases are softened to."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from spfem_cli.face import focus


def _discs(blur: float) -> np.ndarray:
    """Dark discs on light skin with mild noise (the noise must not read as sharpness), blurred by ``blur``."""
    image = np.full((160, 160), 190.0, np.float32)
    for x, y, r in ((40, 50, 14), (110, 45, 10), (80, 115, 18)):
        cv2.circle(image, (x, y), r, 60.0, -1)
    if blur:
        image = cv2.GaussianBlur(image, (0, 0), blur)
    image += np.random.default_rng(0).normal(0.0, 2.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("blur", [1.0, 1.5, 2.5])
def test_a_blurred_picture_reads_its_blur(blur):
    sharp = focus.blur_sigma(_discs(0.0))
    seen = focus.blur_sigma(_discs(blur))
    assert abs(seen - np.hypot(blur, sharp)) < 0.2 * blur, (blur, seen, sharp)


def test_a_sharp_picture_reads_under_a_pixel_and_a_flat_one_reads_nothing():
    assert focus.blur_sigma(_discs(0.0)) < 1.0
    assert focus.blur_sigma(np.full((40, 40), 128, np.uint8)) is None
    region = np.zeros((160, 160), bool)
    region[:3, :2] = True                        # too few pixels to read
    assert focus.blur_sigma(_discs(0.0), region) is None


def test_the_extra_blur_adds_in_quadrature_and_is_capped():
    assert focus.extra_blur(None, 0.9, 2.5) == 0.0
    assert focus.extra_blur(0.8, 0.9, 2.5) == 0.0
    assert focus.extra_blur(1.5, 0.9, 2.5) == pytest.approx(1.2)
    assert focus.extra_blur(9.0, 0.9, 2.5) == 2.5
