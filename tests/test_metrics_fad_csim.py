"""FAD and CSIM math: closed forms, identities, the sampling protocol, PSNR/SSIM and landmark metrics."""

from __future__ import annotations

import random

import numpy as np
import pytest

from spfem_cli.evaluate import csim, fad, image, landmarks


def test_frechet_equals_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.2, 3.0, 6), rng.uniform(0.2, 3.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert fad.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_equals_closed_form_for_commuting_full_covariances():
    # Σ2 = c·Σ1 commute, so Tr((Σ1Σ2)^½) = √c·Tr(Σ1): d² = ‖Δμ‖² + (1 + c − 2√c)·Tr(Σ1).
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    sigma = a @ a.T + 0.5 * np.eye(5)
    c = 2.7
    mu1, mu2 = np.zeros(5), np.arange(5.0)
    expected = np.sum(mu2 ** 2) + (1 + c - 2 * np.sqrt(c)) * np.trace(sigma)
    assert fad.frechet_distance(mu1, sigma, mu2, c * sigma) == pytest.approx(expected, rel=1e-8)


def test_fad_of_samples_matches_the_moments_and_is_zero_for_identical_sets():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 8))
    y = rng.normal(loc=0.5, scale=1.5, size=(300, 8))
    assert fad.fad(x, x) == pytest.approx(0.0, abs=1e-7)
    expected = fad.frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert fad.fad(x, y) == pytest.approx(expected)
    assert fad.fad(x, y) > 1.0


def test_fad_survives_singular_covariances():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 32))          # fewer samples than dimensions: rank-deficient covariances
    y = rng.normal(size=(6, 32)) + 1.0
    value = fad.fad(x, y)
    assert np.isfinite(value) and value > 0
    assert fad.fad(x, x) == pytest.approx(0.0, abs=1e-4)


def test_frechet_rejects_mismatched_dimensions():
    with pytest.raises(ValueError):
        fad.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_csim_of_identical_sets_is_the_mean_self_cosine():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 16))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    manual = np.mean([[u @ v for v in unit] for u in unit])
    assert csim.csim_actor(x, x) == pytest.approx(manual, rel=1e-12)
    assert csim.csim_actor(x, x) < 1.0      # not the diagonal only: the full matrix
    assert csim.csim_actor(x[:1], x[:1]) == pytest.approx(1.0)


def test_csim_samples_at_most_100_frames_from_one_seeded_stream_and_averages_actors():
    rng = np.random.default_rng(5)
    real, gen = rng.normal(size=(250, 8)), rng.normal(size=(130, 8)) + 0.3
    stream = random.Random(csim.SEED)
    picked = csim.sample_index(len(real), stream)
    assert len(picked) == 100 and len(set(picked)) == 100
    assert picked == csim.sample_index(len(real), random.Random(1))                # reproducible
    assert csim.sample_index(40, stream) == list(range(40))                       # ≤ 100: all, no draw
    expected = csim.cosine_matrix(real[picked], gen[csim.sample_index(len(gen), stream)]).mean()
    assert csim.csim({"A": (real, gen)}) == pytest.approx(expected)
    other = rng.normal(size=(20, 8))
    both = csim.csim({"A": (real, gen), "B": (other, other)})
    assert both == pytest.approx((expected + csim.csim_actor(other, other)) / 2)


def test_psnr_and_ssim():
    rng = np.random.default_rng(6)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-8, 9, a.shape), 0, 255).astype(np.uint8)
    assert image.psnr(a, a) == float("inf")
    mse = np.mean((a.astype(float) - b) ** 2)
    assert image.psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / mse))
    assert image.ssim(a, a) == pytest.approx(1.0)
    assert 0 < image.ssim(a, b) < 1


def test_landmark_distances_and_mouth_opening_correlation():
    rng = np.random.default_rng(7)
    base = rng.uniform(50, 200, (1, 68, 2)).repeat(30, axis=0)
    base[:, 48], base[:, 54] = (100, 150), (140, 150)          # mouth corners 40 px apart
    opening = 0.5 + 0.5 * np.sin(np.linspace(0, 6, 30))
    a = base.copy()
    for top, bottom in ((61, 67), (62, 66), (63, 65)):
        a[:, top] = (120, 150)
        a[:, bottom, 0], a[:, bottom, 1] = 120, 150 + 20 * opening
    b = a.copy()
    b[:, 48:68] += (3.0, 4.0)                                  # mouth moved by 5 px, face kept
    assert landmarks.m_lmd(a, b) == pytest.approx(5.0)
    assert landmarks.f_lmd(a, b) == pytest.approx(5.0 * 20 / 68)
    assert np.allclose(landmarks.mouth_opening(a), 20 * opening / 40)
    assert landmarks.mouth_opening_correlation(a, b) == pytest.approx(1.0)
    c = a.copy()
    c[:, [67, 66, 65], 1] = (150 + 20 * opening[::-1])[:, None]
    assert landmarks.mouth_opening_correlation(a, c) < 0.5
