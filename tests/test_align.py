"""Alignment: Umeyama similarity, the template, warps and the pose-alignment affine."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from spfem_cli.face.align import (
    ALIGNED_SIZE,
    RIGID_POINTS,
    TEMPLATE_68,
    alignment_transform,
    apply_affine,
    invert_affine,
    pose_align_affine,
    umeyama,
    warp_from_aligned,
    warp_to_aligned,
)


def _similarity(angle: float, scale: float, t: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, t[0]], [scale * s, scale * c, t[1]]])


@pytest.mark.parametrize("angle,scale,shift", [(0.0, 1.0, (0, 0)), (0.4, 2.3, (310, -40)), (-2.9, 0.37, (5, 900))])
def test_umeyama_recovers_a_known_similarity(angle, scale, shift):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (30, 2))
    truth = _similarity(angle, scale, shift)
    dst = apply_affine(truth, src) + rng.normal(0, 1e-6, (30, 2))
    np.testing.assert_allclose(umeyama(src, dst), truth, atol=1e-5)


def test_umeyama_never_returns_a_reflection():
    src = TEMPLATE_68.copy()
    mirrored = src * [-1, 1]
    m = umeyama(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_template_is_centred_upright_and_symmetric():
    t = TEMPLATE_68
    assert t.shape == (68, 2)
    assert np.all((t > 0) & (t < ALIGNED_SIZE))
    eyes_r, eyes_l = t[36:42].mean(0), t[42:48].mean(0)
    assert abs(eyes_r[1] - eyes_l[1]) < 0.5                      # eyes level
    assert abs((eyes_r[0] + eyes_l[0]) / 2 - ALIGNED_SIZE / 2) < 0.5  # face centred
    assert t[8, 1] == t[:17, 1].max()                             # chin is the lowest jaw point
    assert t[62, 1] <= t[66, 1]                                   # upper inner lip above the lower one


def test_alignment_of_a_moved_template_maps_back_onto_the_template():
    moved = apply_affine(_similarity(0.3, 1.7, (400, 120)), TEMPLATE_68)
    m = alignment_transform(moved)
    np.testing.assert_allclose(apply_affine(m, moved), TEMPLATE_68, atol=1e-6)
    np.testing.assert_allclose(apply_affine(invert_affine(m), TEMPLATE_68), moved, atol=1e-6)


def test_alignment_ignores_mouth_motion():
    """Opening the jaw must not move the aligned frame: only rigid points drive the transform."""
    face = TEMPLATE_68.copy()
    opened = face.copy()
    opened[5:12, 1] += 20
    opened[55:60, 1] += 20
    opened[65:68, 1] += 20
    assert not set(range(5, 12)) & set(RIGID_POINTS.tolist())
    np.testing.assert_allclose(alignment_transform(opened), alignment_transform(face), atol=1e-9)


def test_warp_round_trip_keeps_the_face():
    rng = np.random.default_rng(1)
    noise = rng.uniform(0, 255, (300, 400, 3)).astype(np.float32)
    frame = cv2.GaussianBlur(noise, (0, 0), 3).astype(np.uint8)     # smooth texture: resampling is exact-ish
    m = _similarity(0.2, 1.5, (-150, -20))
    crop = warp_to_aligned(frame, m)
    assert crop.shape == (ALIGNED_SIZE, ALIGNED_SIZE, 3)
    back = warp_from_aligned(crop, m, frame.shape[:2])
    inside = np.zeros(frame.shape[:2], bool)
    centre = apply_affine(invert_affine(m), np.array([[128.0, 128.0]]))[0].astype(int)
    inside[centre[1] - 40:centre[1] + 40, centre[0] - 40:centre[0] + 40] = True
    assert np.abs(back[inside].astype(int) - frame[inside]).mean() < 2.0


def test_pose_align_affine_recovers_an_affine_between_two_images():
    truth = np.array([[1.1, 0.15, 12.0], [-0.05, 0.93, -7.0]])
    src = apply_affine(_similarity(0.1, 2.0, (300, 200)), TEMPLATE_68)
    dst = apply_affine(truth, src)
    dst[60:68] += 9.0          # the mouth differs between the two images; it must not matter
    np.testing.assert_allclose(pose_align_affine(src, dst), truth, atol=1e-6)
