"""Translation of whole sequences: windows + Gaussian overlap-add, geometric median, styles, timelines."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from models.ned_translator import NedTranslator, TranslatorConfig
from spfem_cli.backends.ned.translate import (
    EmotionTimeline,
    ExpressionSeq,
    Segment,
    TranslateError,
    envelope,
    gaussian_taps,
    geometric_median,
    overlap_add,
    parse_timeline,
    sliding_windows,
    target_from_edit,
    translate,
)
from spfem_cli.emotions import EMOTIONS

TINY = TranslatorConfig(gen_hidden=16, enc_lstm=8, mapping_hidden=16)


def _seq(t: int = 50, seed: int = 0) -> ExpressionSeq:
    rng = np.random.default_rng(seed)
    c = rng.normal(0, 0.3, (t, 51)).astype(np.float32)
    c[:, 0] = 0.2 + 0.1 * np.sin(np.arange(t) * 0.7)
    return ExpressionSeq(c, fps=30.0)


class _IdentityGenerator(nn.Module):
    def forward(self, x, s):
        return x


class _OffsetGenerator(nn.Module):
    """Adds the style's first value to channel 5: makes the chosen style visible in the output."""

    def forward(self, x, s):
        out = x.clone()
        out[:, :, 5] += s[:, :1]
        return out


def _model(generator: nn.Module | None = None) -> NedTranslator:
    torch.manual_seed(0)
    m = NedTranslator(TINY, with_discriminator=False).eval()
    if generator is not None:
        m.generator = generator
    return m


def test_gaussian_taps_are_opencv_default():
    taps = gaussian_taps(10).numpy()
    np.testing.assert_allclose(taps, cv2.getGaussianKernel(10, -1).ravel(), rtol=1e-6)
    assert abs(taps.sum() - 1) < 1e-6 and np.allclose(taps, taps[::-1])
    # a Gaussian of σ ≈ 1.85 (OpenCV's fixed-point rounding narrows it slightly)
    t = np.arange(10) - 4.5
    sigma = np.sqrt(-(t[0] ** 2 - t[4] ** 2) / (2 * np.log(taps[0] / taps[4])))
    assert abs(sigma - 1.85) < 0.03


@pytest.mark.parametrize("t", [1, 7, 10, 11, 64])
def test_windows_and_overlap_add_reconstruct_input_exactly(t):
    x = torch.randn(t, 51)
    win = sliding_windows(x)
    assert win.shape == (max(t - 9, 1), 10, 51)
    out = overlap_add(win, length=t)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def test_identity_generator_translate_reproduces_sequence():
    seq = _seq(40)
    out = translate(seq, "happy", 1.0, _model(_IdentityGenerator()))
    np.testing.assert_allclose(out.coeffs, seq.coeffs, atol=1e-6)


def _brute_force_median(points: np.ndarray) -> np.ndarray:
    """Grid search then local refinement of Σ‖y − xᵢ‖ over 2-D points (no Weiszfeld involved)."""
    obj = lambda y: np.linalg.norm(points[None] - y[:, None], axis=-1).sum(-1)  # noqa: E731
    lo, hi = points.min(0), points.max(0)
    best = None
    for _ in range(6):
        g = np.stack(np.meshgrid(np.linspace(lo[0], hi[0], 201), np.linspace(lo[1], hi[1], 201)), -1).reshape(-1, 2)
        best = g[np.argmin(obj(g))]
        span = (hi - lo) / 20
        lo, hi = best - span, best + span
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometric_median_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(9, 2))
    pts[0] += 8.0  # an outlier: the median, unlike the mean, hardly moves
    ours = geometric_median(pts).numpy()
    ref = _brute_force_median(pts)
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_geometric_median_at_a_data_point_and_degenerate_sets():
    # collinear odd set: the median is the middle point (Weiszfeld must use the Vardi-Zhang step there)
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [6.0, 0.0], [20.0, 0.0]])
    np.testing.assert_allclose(geometric_median(pts).numpy(), [5.0, 0.0], atol=1e-4)
    same = np.ones((4, 3))
    np.testing.assert_allclose(geometric_median(same).numpy(), np.ones(3))
    # brute force over the candidate points for a set where the median is a vertex
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.1, 0.1]])
    cost = lambda y: np.linalg.norm(pts - y, axis=1).sum()  # noqa: E731
    med = geometric_median(pts).numpy()
    assert cost(med) <= min(cost(p) for p in pts) + 1e-6


def test_label_style_is_seeded_and_label_dependent():
    m = _model(_OffsetGenerator())
    seq = _seq(30)
    a = translate(seq, "happy", checkpoint=m, seed=3)
    b = translate(seq, "happy", checkpoint=m, seed=3)
    c = translate(seq, "sad", checkpoint=m, seed=3)
    np.testing.assert_array_equal(a.coeffs, b.coeffs)
    z = torch.randn(4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        s_happy = m.mapping_network(z[None], torch.tensor([EMOTIONS.index("happy")]))[0]
        s_src = geometric_median(m.style_encoder(sliding_windows(torch.from_numpy(seq.coeffs))))
    # _OffsetGenerator: channel 5 moves by the first style value (intensity 1 -> the target style)
    np.testing.assert_allclose(a.coeffs[:, 5] - seq.coeffs[:, 5], float(s_happy[0]), atol=1e-5)
    assert not np.allclose(a.coeffs, c.coeffs)
    # intensity 0 (style mode) = the source's own style
    z0 = translate(seq, "happy", 0.0, m, seed=3)
    np.testing.assert_allclose(z0.coeffs[:, 5] - seq.coeffs[:, 5], float(s_src[0]), atol=1e-5)
    # intensity 0.5 interpolates the styles
    h = translate(seq, "happy", 0.5, m, seed=3)
    np.testing.assert_allclose(h.coeffs[:, 5] - seq.coeffs[:, 5], float((s_src[0] + s_happy[0]) / 2), atol=1e-5)


def test_reference_style_is_geometric_median_of_encoder_over_reference_windows():
    m = _model(_OffsetGenerator())
    seq, ref = _seq(30, 0), _seq(25, 7)
    out = translate(seq, ref, checkpoint=m)
    with torch.no_grad():
        s_ref = geometric_median(m.style_encoder(sliding_windows(torch.from_numpy(ref.coeffs))))
    np.testing.assert_allclose(out.coeffs[:, 5] - seq.coeffs[:, 5], float(s_ref[0]), atol=1e-5)


def test_output_mode_intensity_scales_the_change():
    m = _model()
    seq = _seq(30)
    full = translate(seq, "angry", 1.0, m, mode="output")
    half = translate(seq, "angry", 0.5, m, mode="output")
    zero = translate(seq, "angry", 0.0, m, mode="output")
    np.testing.assert_allclose(zero.coeffs, seq.coeffs, atol=1e-6)
    np.testing.assert_allclose(half.coeffs - seq.coeffs, 0.5 * (full.coeffs - seq.coeffs), atol=1e-5)


def test_timeline_keeps_source_outside_segments_and_ramps():
    m = _model()
    seq = _seq(80)
    tl = EmotionTimeline((Segment(20, 50, "happy", ramp=8, shape="linear"),))
    out = translate(seq, tl, checkpoint=m)
    diff = np.abs(out.coeffs - seq.coeffs).max(1)
    assert diff[:20].max() == 0 and diff[50:].max() == 0
    full = translate(seq, "happy", checkpoint=m)
    # the hold part of the segment: every window around it has the full style -> equals the plain edit
    np.testing.assert_allclose(out.coeffs[33:37], full.coeffs[33:37], atol=1e-5)
    env = envelope(80, tl.segments[0])
    assert env[19] == 0 and env[20] > 0 and env[28:42].min() == 1 and env[49] > 0 and env[50] == 0
    assert np.all(np.diff(env[20:29]) > 0)


def test_envelope_shapes():
    lin = envelope(30, Segment(0, 30, "happy", ramp=10, shape="linear"))
    smooth = envelope(30, Segment(0, 30, "happy", ramp=10, shape="smooth"))
    assert lin.max() == 1 and smooth.max() == 1
    assert np.all(smooth[:5] <= lin[:5] + 1e-12)          # smoothstep starts slower
    hard = envelope(30, Segment(5, 10, "happy", ramp=0))
    assert list(np.nonzero(hard)[0]) == [5, 6, 7, 8, 9]


def test_parse_timeline_and_bad_input():
    tl = parse_timeline("happy@0-1, sad:0.5@1.5-3", fps=30, ramp_s=0.2)
    assert [(s.start, s.end, s.target, s.intensity, s.ramp) for s in tl.segments] == [
        (0, 30, "happy", 1.0, 6), (45, 90, "sad", 0.5, 6)]
    for bad in ("happy", "happy@3-1", "joy@0-1", "contempt@0-1"):
        with pytest.raises(TranslateError):
            parse_timeline(bad, fps=30)
    with pytest.raises(TranslateError):
        ExpressionSeq(np.zeros((5, 50)))
    with pytest.raises(TranslateError):
        translate(_seq(20), "happy", -1.0, _model())


def test_deca_round_trip_and_checkpoint_file(tmp_path):
    pose = np.zeros((12, 6), np.float32)
    pose[:, 3] = np.linspace(0, 0.3, 12)
    exp = np.random.default_rng(0).normal(size=(12, 50)).astype(np.float32)
    seq = ExpressionSeq.from_deca(pose, exp)
    p2, e2 = seq.to_deca()
    np.testing.assert_array_equal(p2, pose)
    np.testing.assert_array_equal(e2, exp)
    m = NedTranslator(TINY)
    path = tmp_path / "tiny_nets.pth"
    torch.save(m.ned_state_dict(), path)
    a = translate(seq, "fear", checkpoint=path)
    assert a.coeffs.shape == (12, 51) and np.isfinite(a.coeffs).all()
    m2 = NedTranslator(TINY, with_discriminator=False)
    m2.load_ned_state_dict(m.ned_state_dict())
    np.testing.assert_allclose(a.coeffs, translate(seq, "fear", checkpoint=m2).coeffs, atol=1e-6)


def test_overlap_add_matches_ned_interior_weights():
    # NED adds every window's output * taps into the frames it covers; for hop 1 an interior frame
    # receives each tap once, and the taps sum to 1, so NED's interior frames equal our normalised sum.
    win = torch.randn(30, 10, 3)
    taps = gaussian_taps(10)
    ned = torch.zeros(39, 3)
    for i in range(30):
        ned[i:i + 10] += win[i] * taps[:, None]
    ours = overlap_add(win)
    torch.testing.assert_close(ours[9:30], ned[9:30], atol=1e-6, rtol=0)
    assert list(itertools.islice(ours.shape, 2)) == [39, 3]


def test_target_from_edit_request_shapes():
    from types import SimpleNamespace as NS

    assert target_from_edit(NS(emotion="Happiness", reference=None, timeline=()), 30.0) == "happy"
    ref = _seq(12)
    assert target_from_edit(NS(emotion=None, reference="ref.mp4", timeline=()), 30.0, ref) is ref
    with pytest.raises(TranslateError):
        target_from_edit(NS(emotion=None, reference="ref.mp4", timeline=()), 30.0)
    tl = target_from_edit(NS(emotion=None, reference=None, ramp=0.4,
                             timeline=(NS(emotion="sad", start=1.0, end=2.5),)), 25.0)
    assert tl.segments == (Segment(25, 62, "sad", 1.0, 10, "smooth"),)


def test_frames_without_face_do_not_spread_nan():
    seq = _seq(30)
    c = seq.coeffs.copy()
    c[10:13] = np.nan
    valid = np.isfinite(c).all(1)
    out = translate(ExpressionSeq(c, valid=valid), "sad", checkpoint=_model())
    assert np.isfinite(out.coeffs).all()
    np.testing.assert_array_equal(out.valid, valid)
    with pytest.raises(TranslateError):
        translate(ExpressionSeq(np.full((12, 51), np.nan, np.float32)), "sad", checkpoint=_model())


def test_from_reconstruction_reads_jaw_and_expression():
    from fractions import Fraction

    from spfem_cli.backends.ned.reconstruct import Reconstruction

    codes = np.random.default_rng(0).normal(size=(6, 364)).astype(np.float32)
    valid = np.array([1, 1, 0, 1, 1, 1], bool)
    codes[2] = np.nan
    recon = Reconstruction(codes=codes, valid=valid, crop_mats=np.zeros((6, 2, 3)), fps=Fraction(30000, 1001))
    seq = ExpressionSeq.from_reconstruction(recon)
    np.testing.assert_array_equal(seq.jaw[valid], codes[valid, 203])       # pose[3] after shape/tex/exp
    np.testing.assert_array_equal(seq.expression[valid], codes[valid, 150:200])
    assert abs(seq.fps - 29.97) < 0.01 and list(seq.valid) == list(valid)
