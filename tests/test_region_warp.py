"""The fast face-region warp against the reference path (aligned crop → mesh warp → Laplacian paste-back)."""

from __future__ import annotations

import numpy as np
import pytest

from spfem_cli.backends.warp.backend import WarpBackend
from spfem_cli.backends.warp.mesh_warp import N_BORDER, warp_points, warp_region_mask
from spfem_cli.backends.warp.region_warp import piecewise_affine_field, warp_face_region
from spfem_cli.backends.warp.render import render_frame, warp_mesh
from spfem_cli.edit.targets import EditTarget
from spfem_cli.face.align import apply_affine, invert_affine
from spfem_cli.face.blend import paste_back
from spfem_cli.video import read_frames


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def reference_render(backend: WarpBackend, frame, matrix, source, edited) -> np.ndarray:
    """The unoptimised path: supersampled aligned crop, mesh warp, inverse warp + Laplacian blend of the full crop."""
    face, matrix_k = backend.render(frame, matrix, source, edited)
    mask = warp_region_mask(source * face.shape[0] / 256.0, face.shape[0])
    return paste_back(frame, face, matrix_k, mask=mask)


def _eye_boxes(shape: tuple[int, int], matrix, source, edited) -> np.ndarray:
    """Frame pixels of the boxes round both eye openings, source and edited (where the eyeballs are redrawn)."""
    from spfem_cli.backends.warp import eyeball, facs

    out = np.zeros(shape, bool)
    back = invert_affine(matrix)
    for upper, lower in facs.EYE_CONTOURS:
        pts = apply_affine(back, np.r_[eyeball.opening(source, upper, lower), eyeball.opening(edited, upper, lower)])
        (x0, y0), (x1, y1) = np.floor(pts.min(0)).astype(int) - 6, np.ceil(pts.max(0)).astype(int) + 7
        out[max(y0, 0):y1, max(x0, 0):x1] = True
    return out


@pytest.fixture(scope="module")
def edited_sample(sample_clip):
    from spfem_cli.face.preprocess import cached_track

    track = cached_track(sample_clip.path, "mediapipe", progress=False)
    backend = WarpBackend()
    seq = backend.encode(track)
    edited = backend.manipulate(seq, backend.plan(seq, EditTarget(emotion="happy", intensity=1.0), float(track.fps)))
    frames, _ = read_frames(sample_clip.path, max_frames=60)
    return backend, track, seq, edited, frames


@pytest.mark.parametrize("scale", [1.0, 1.6])
def test_region_warp_matches_the_reference_path(edited_sample, scale):
    """≥ 40 dB over the face region on the sample (and upscaled: a larger supersampled crop), wrinkles included."""
    import cv2

    backend, track, seq, edited, frames = edited_sample
    errors, eye_errors = [], []
    for i in range(3, 60, 7):
        frame = cv2.resize(frames[i], None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        matrix = track.transforms[i].copy()
        matrix[:, :2] /= scale
        ref = reference_render(backend, frame, matrix, seq.landmarks[i], edited.landmarks[i])
        fast = frame.copy()
        render_frame(backend, fast, matrix, seq.landmarks[i], edited.landmarks[i])
        face = (np.abs(ref.astype(int) - frame).max(-1) > 2) | (np.abs(fast.astype(int) - frame).max(-1) > 2)
        assert face.sum() > 500, "the edit must change the face"
        assert _psnr(ref[face], frame[face]) < 35.0, "the comparison must be over a visible edit"
        assert _psnr(ref[face], fast[face]) >= 33.0, f"frame {i}"         # no frame far off
        eyes = _eye_boxes(frame.shape[:2], matrix, seq.landmarks[i], edited.landmarks[i])
        errors.append((ref[face & ~eyes].astype(np.float64) - fast[face & ~eyes]).ravel())
        eye_errors.append((ref[face & eyes].astype(np.float64) - fast[face & eyes]).ravel())
        ring = apply_affine(invert_affine(matrix), warp_points(seq.landmarks[i], 256)[:-N_BORDER])
        outside = np.ones(frame.shape[:2], bool)
        (x0, y0), (x1, y1) = np.floor(ring.min(0)).astype(int) - 6, np.ceil(ring.max(0)).astype(int) + 7
        outside[max(y0, 0):y1, max(x0, 0):x1] = False        # + the field's 4-px interpolation step
        assert np.array_equal(fast[outside], frame[outside]), "nothing outside the face's anchor ring changes"
    psnr = 10 * np.log10(255.0 ** 2 / float(np.mean(np.concatenate(errors) ** 2)))
    psnr_eyes = 10 * np.log10(255.0 ** 2 / float(np.mean(np.concatenate(eye_errors) ** 2)))
    print(f"scale {scale}: face-region PSNR vs the reference path {psnr:.2f} dB, eye openings {psnr_eyes:.2f} dB")
    assert psnr >= 40.0, "PSNR of the edited face regions (eyes aside) over the sampled frames"
    # The redrawn eyeballs are made at each path's own resolution (frame vs supersampled crop): their
    # one-pixel ramps and lid bands differ by a pixel, so they agree less closely than the warp itself.
    assert psnr_eyes >= 30.0, "PSNR of the redrawn eye openings"


def test_still_parts_of_the_region_are_skipped_bit_for_bit(edited_sample, monkeypatch):
    """Only the bands where the map moves a pixel are resampled: the same frame as resampling the whole box."""
    from spfem_cli.backends.warp import region_warp

    backend, track, seq, edited, frames = edited_sample
    for i in (4, 31, 58):
        args = warp_mesh(backend, frames[i], track.transforms[i], seq.landmarks[i], edited.landmarks[i],
                         warp_region_mask(seq.landmarks[i], 256))
        fast, region = warp_face_region(frames[i], *args)
        with monkeypatch.context() as m:
            m.setattr(region_warp, "STILL_SHIFT", -1.0)
            m.setattr(region_warp, "STILL_ALPHA", -1.0)
            whole, _ = warp_face_region(frames[i], *args)
        assert not region.empty and np.array_equal(fast, whole)


def test_identity_mesh_returns_the_frame_bit_for_bit(edited_sample):
    backend, track, seq, _, frames = edited_sample
    alpha = warp_region_mask(seq.landmarks[5], 256)
    out, region = warp_face_region(frames[5], *warp_mesh(backend, frames[5], track.transforms[5], seq.landmarks[5],
                                                         seq.landmarks[5], alpha))
    assert region.empty and np.array_equal(out, frames[5])


def test_field_is_the_exact_affine_map_inside_a_triangle():
    src = np.array([[10.0, 10.0], [50.0, 12.0], [20.0, 60.0]])
    dst = src + [[3.0, -2.0], [1.0, 1.0], [0.0, 4.0]]
    field = piecewise_affine_field(src, dst, np.array([[0, 1, 2]]), (64, 64), step=1)
    design = np.c_[dst, np.ones(3)]
    affine = np.linalg.solve(design, src)
    x, y = 22, 25                                   # a pixel well inside the triangle
    expected = np.array([x, y, 1.0]) @ affine - [x, y]
    assert np.allclose(field[y, x], expected, atol=1e-4)
    assert not field[0, 63].any() and not field[63, 0].any()     # outside every triangle: identity
