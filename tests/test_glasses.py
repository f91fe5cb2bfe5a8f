"""Eyeglasses are judged once per video and their rims held whole: thin rims and the bridge, never the eyes."""

from __future__ import annotations

import cv2
import numpy as np

from spfem_cli.backends.warp import facs
from spfem_cli.backends.warp.backend import LandmarkSeq, WarpBackend
from spfem_cli.backends.warp.canonical_mesh import neutral
from spfem_cli.backends.warp.rigid import BROW_ZONE, rigid_damping, steady_brows
from spfem_cli.edit.targets import EditTarget
from spfem_cli.face import glasses
from spfem_cli.face.align import TEMPLATE_68

SKIN = (200, 160, 140)


def _with_thin_rims(points: np.ndarray, shade: int = 215, bridge: bool = True) -> np.ndarray:
    """Bare skin with lashes and dark brows, and round 1 px metal rims only a little brighter than the skin."""
    crop = np.full((256, 256, 3), SKIN, np.uint8)
    for lid in (facs.LID_UPPER, facs.MIRROR[facs.LID_UPPER]):
        cv2.polylines(crop, [np.round(points[lid]).astype(np.int32)], False, (20, 20, 20), 3)
    for brow in (facs.BROW_UPPER, facs.MIRROR[facs.BROW_UPPER]):
        cv2.polylines(crop, [np.round(points[brow] + (0, 2)).astype(np.int32)], False, (40, 30, 30), 5)
    for lid in (facs.LID_UPPER, facs.MIRROR[facs.LID_UPPER]):
        c = points[lid].mean(0)
        cv2.ellipse(crop, (int(c[0]), int(c[1]) + 2), (24, 17), 0, 0, 360, (shade,) * 3, 1)
    if bridge:
        cv2.line(crop, (118, 90), (138, 90), (shade,) * 3, 1)
    return crop


def test_a_video_is_judged_once_on_its_median_line():
    # A thin frame whose line dips under the cut on some frames: the video has glasses on every frame.
    flickering = np.array([6.0, 14.0, 11.0, np.nan, 16.0, 12.0, 5.5, 13.0])
    per_frame = [glasses.evidence(v) for v in flickering[np.isfinite(flickering)]]
    assert min(per_frame) == 0.0 and max(per_frame) == 1.0
    assert glasses.clip_evidence(flickering) == 1.0
    # A fringe's strands cross the strip on a few frames of a bare face: the video's median stays far below.
    assert glasses.clip_evidence(np.array([0.5, 1.0, 7.5, 0.8, 2.0, 8.0, 1.2])) == 0.0
    assert glasses.clip_evidence(np.array([np.nan, np.nan])) == 0.0


def test_a_fringe_edge_across_the_bridge_is_not_a_frame_and_a_thin_bridge_is():
    """A step (a fringe's lower edge, a shadow) across the strip is not a line; a one-pixel bridge is."""
    pts = neutral()
    inner = pts[[facs.LID_UPPER[0], facs.MIRROR[facs.LID_UPPER[0]]]]
    fringe = np.full((256, 256, 3), SKIN, np.uint8)
    fringe[:int(inner[:, 1].mean()) - 10] = (90, 60, 40)          # dark hair down to just above the corners
    assert glasses.evidence(glasses.line_in_crop(fringe, inner, 1.0)) == 0.0
    bridge = np.full((256, 256, 3), SKIN, np.uint8)
    y = int(inner[:, 1].mean()) - 6
    cv2.line(bridge, (int(inner[0, 0]) - 4, y), (int(inner[1, 0]) + 4, y), (225, 225, 225), 1)
    assert glasses.evidence(glasses.line_in_crop(bridge, inner, 1.0)) == 1.0


def test_the_tracker_measures_the_bridge_in_the_frame():
    """The per-frame cue is the bridge strip's line, read off the frame through the face's alignment."""
    landmarks = TEMPLATE_68 * 2.0 + (100.0, 60.0)            # a face at 2x in a 720p frame
    frame = np.full((720, 1280, 3), SKIN, np.uint8)
    bare = glasses.frame_line(frame, landmarks)
    inner = landmarks[list(glasses.INNER_EYE_CORNERS_68)]
    y = int(round(inner[:, 1].mean() - 8))
    cv2.line(frame, (int(inner[0, 0]) + 4, y), (int(inner[1, 0]) - 4, y), (30, 30, 30), 3)
    assert bare < glasses.GLASSES_LO < glasses.GLASSES_HI < glasses.frame_line(frame, landmarks)


def test_the_plan_reads_glasses_once_and_without_a_measurement_leaves_it_to_each_frame():
    pts = np.repeat(neutral()[None], 10, axis=0)
    valid = np.ones(10, bool)
    backend, target = WarpBackend(), EditTarget(emotion="surprised")
    with_lines = LandmarkSeq(pts, valid, np.array([6.0, 14.0, 11.0, 16.0, 12.0, 5.5, 13.0, 12.0, 10.0, 15.0]))
    assert backend.plan(with_lines, target, 25.0).glasses == 1.0
    assert backend.plan(LandmarkSeq(pts, valid), target, 25.0).glasses is None


def test_thin_rims_and_the_bridge_are_held_along_their_whole_length_and_the_eyes_are_not():
    pts = neutral()
    damping = rigid_damping(_with_thin_rims(pts), pts, evidence=1.0)
    assert damping is not None
    for lid in (facs.LID_UPPER, facs.MIRROR[facs.LID_UPPER]):
        c = pts[lid].mean(0)
        angles = np.deg2rad(np.arange(0, 360, 30))
        rim = np.c_[c[0] + 24 * np.cos(angles), c[1] + 2 + 17 * np.sin(angles)]
        assert (damping[np.round(rim[:, 1]).astype(int), np.round(rim[:, 0]).astype(int)] > 0.5).all()
        opening = np.zeros((256, 256), np.uint8)
        cv2.fillPoly(opening, [np.round(np.r_[pts[lid], pts[facs.LID_LOWER if lid[0] == facs.LID_UPPER[0] else
                                                         facs.MIRROR[facs.LID_LOWER]][::-1]]).astype(np.int32)], 1)
        assert damping[opening > 0].max() < 0.05             # the lids move freely behind the lenses
    assert damping[90, 122:135].min() > 0.5                   # the bridge
    assert rigid_damping(_with_thin_rims(pts), pts, evidence=0.0) is None


def test_behind_glasses_the_brows_are_steadied_and_the_lids_keep_their_motion():
    pts = neutral()
    edited = pts + facs.prototype("surprised")
    damping = rigid_damping(_with_thin_rims(pts), pts, evidence=1.0)
    held = steady_brows(pts, edited, damping)
    brows = facs.BROWS[facs.CANONICAL_MESH[facs.BROWS, 1] < BROW_ZONE[0]]     # above the hand-over to the lids
    upper = facs.LID_UPPER[1:-1]
    assert len(brows) >= 10
    np.testing.assert_allclose(held[brows] - pts[brows], 0.35 * (edited[brows] - pts[brows]), atol=1e-3)
    np.testing.assert_allclose(held[upper], edited[upper])
    np.testing.assert_allclose(steady_brows(pts, edited, None), edited)


def test_tracks_carry_the_bridge_line_of_every_frame_with_a_face(short_clip, tmp_path):
    from spfem_cli.backends.warp.render import estimation_track
    from spfem_cli.face.preprocess import cached_track
    from spfem_cli.face.tracking.base import FaceTrack

    track = cached_track(short_clip.path, "mediapipe", progress=False)
    assert track.bridge_line is not None and track.bridge_line.shape == (len(track),)
    detected = track.valid & ~track.interpolated
    assert np.isfinite(track.bridge_line[detected]).all() and np.isnan(track.bridge_line[~track.valid]).all()
    np.testing.assert_array_equal(FaceTrack.load(track.save(tmp_path / "t.npz")).bridge_line, track.bridge_line)
    backend = WarpBackend()
    plan = backend.plan(backend.encode(estimation_track(track)), EditTarget(emotion="happy"), float(track.fps))
    assert plan.glasses == 0.0                                # the sample's face wears no glasses


def test_a_rim_is_held_in_proportion_to_its_contrast_so_a_still_picture_gives_a_still_mask():
    """Decided yes/no per connected line, a rim near the cut was held fully on one frame and not at all on the
    next of a still scene (the lenses shimmered); held in proportion to its strength, one grey level of
    difference moves the damping on the rim by well under its full range."""
    pts = neutral()
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1.5, (256, 256, 3))
    c = pts[facs.LID_UPPER].mean(0)
    probe = (int(c[1]) + 2 + 17, int(c[0]))                  # on the lower rim

    def held(level: int) -> float:
        crop = np.clip(np.full((256, 256, 3), SKIN, np.float64) + noise, 0, 255).astype(np.uint8)
        for lid in (facs.LID_UPPER, facs.MIRROR[facs.LID_UPPER]):
            cv2.polylines(crop, [np.round(pts[lid]).astype(np.int32)], False, (20, 20, 20), 3)
            centre = pts[lid].mean(0)
            cv2.ellipse(crop, (int(centre[0]), int(centre[1]) + 2), (24, 17), 0, 0, 360, (level,) * 3, 1)
        return float(rigid_damping(crop, pts, evidence=1.0)[probe])

    values = [held(level) for level in range(168, 186)]
    assert values[0] < 0.2 and values[-1] > 0.9                # a faint line is barely held, a clear rim fully
    assert max(abs(a - b) for a, b in zip(values, values[1:], strict=False)) < 0.6


def test_the_lower_rim_of_a_big_round_lens_is_held_too():
    """Big round lenses end ~30 px under the lower lids, below the band the rims were looked for in; their lower
    rims bent with a cheek raise (a smile)."""
    pts = neutral()
    crop = np.full((256, 256, 3), SKIN, np.uint8)
    bottoms = []
    for lid in (facs.LID_UPPER, facs.MIRROR[facs.LID_UPPER]):
        c = pts[lid].mean(0)
        cv2.ellipse(crop, (int(c[0]), int(c[1]) + 8), (26, 28), 0, 0, 360, (60, 40, 40), 1)
        bottoms.append((int(c[1]) + 8 + 28, int(c[0])))
    assert max(b[0] for b in bottoms) - pts[facs.LIDS, 1].max() > 26        # past the old band's reach
    damping = rigid_damping(crop, pts, evidence=1.0)
    assert all(damping[y, x] > 0.5 for y, x in bottoms)
