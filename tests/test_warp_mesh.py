"""The warp backend on the full face mesh: tracks carry it, AU fields behave, the warp never folds,
the speech opening is the source's, rigid eyeglass frames are found, a reference moves the edit."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from spfem_cli.backends.warp import facs
from spfem_cli.backends.warp.backend import MIN_AREA, LandmarkSeq, WarpBackend
from spfem_cli.backends.warp.mesh_warp import mesh_topology, orientation, warp_face, warp_points
from spfem_cli.backends.warp.rigid import rigid_damping
from spfem_cli.edit.targets import EditTarget
from spfem_cli.emotions import EDIT_EMOTIONS
from spfem_cli.face.tracking.base import FaceTrack
from spfem_cli.face.tracking.mediapipe_tracker import MP_TO_IBUG68


@pytest.fixture(scope="module")
def track(short_clip):
    from spfem_cli.face.preprocess import cached_track

    return cached_track(short_clip.path, "mediapipe", progress=False)


def test_track_carries_the_mesh_and_its_68_points_are_the_landmarks(track, tmp_path):
    assert track.mesh is not None and track.mesh.shape == (len(track), 478, 2)
    np.testing.assert_allclose(track.mesh[:, MP_TO_IBUG68], track.landmarks, atol=1e-3)
    loaded = FaceTrack.load(track.save(tmp_path / "t.npz"))
    np.testing.assert_allclose(loaded.mesh, track.mesh, atol=1e-3)
    assert WarpBackend().encode(track).landmarks.shape[1] == 478


def test_topology_uses_every_face_vertex_and_spans_no_lip():
    tris = mesh_topology(478)
    used = np.unique(tris)
    assert set(range(468)) <= set(used.tolist())
    upper, lower = set(facs.LIP_INNER_UPPER), set(facs.LIP_INNER_LOWER)
    lips = [t for t in tris if set(t) & upper and set(t) & lower]
    # Triangles joining upper and lower inner lip are the mouth opening itself: they touch no outer-lip vertex.
    outer = set(facs.both(np.r_[facs.LIP_OUTER_UPPER, facs.LIP_OUTER_LOWER])) - {61, 291}
    assert lips and not any(set(t) & outer for t in lips)
    assert len(np.unique(mesh_topology(68))) == 68 + len(warp_points(facs.neutral(68), 256)) - 68


def test_action_units_are_zero_on_the_outline_and_point_where_facs_says():
    fields = facs.action_units()
    for name, field in fields.items():
        assert np.abs(field[facs.FACE_OVAL]).max() < 1e-9, name
    assert fields["AU12"][61, 0] < -5 and fields["AU12"][61, 1] < -5 and fields["AU12"][291, 0] > 5   # corners up and out
    assert fields["AU5"][159, 1] < -2 and abs(fields["AU5"][145, 1]) < 1                              # upper lid up, lower stays
    assert fields["AU4"][107, 1] > 3 and fields["AU4"][107, 0] > 1 and fields["AU4"][336, 0] < -1     # brows down and together
    assert fields["AU10"][0, 1] < -2
    up = fields["AU10"][facs.LIP_OUTER_UPPER, 1]
    assert np.all(np.diff(up) >= -1e-6), "the upper lip rises as one smooth arc, most at the middle (no notch)"
    np.testing.assert_allclose(fields["AU12"][facs.MIRROR, 0], -fields["AU12"][:, 0], atol=1e-6)     # symmetric


def test_lip_corner_depressor_moves_the_two_lip_corners_together():
    """The inner lip lags AU15 near the middle (the tracker reads a downturned inner line as a closing mouth),
    but at the corner the inner and outer lips are one point: a few pixels apart, a lag there shears the
    corner into a notched hook (seen on d19 and d0 close-ups before this was fixed)."""
    au15 = facs.action_units()["AU15"]
    outer, inner = au15[facs.LIP_CORNER_OUTER], au15[facs.LIP_CORNER_INNER]
    assert outer[1] > 5
    assert abs(inner[1] - outer[1]) < 0.25 * outer[1]
    mid_outer, mid_inner = au15[facs.LIP_OUTER_UPPER[2], 1], au15[facs.LIP_INNER_UPPER[2], 1]
    assert mid_inner < 0.75 * mid_outer          # still lagging half-way along the lip


def test_read_back_sees_the_same_units_on_68_points_as_on_the_mesh():
    """The read-back's sparsity cost is per point read: on FAN's 68 points (a third of the mesh's read points) a
    planted disgust and anger are still read, not zeroed (a mesh-sized cost dropped their AU9 entirely)."""
    for n_points in (facs.N_MESH, 68):
        rest = facs.neutral(n_points)
        for emotion in ("disgusted", "angry"):
            planted = {a: 0.8 * w for a, w in facs.EMOTION_AUS[emotion].items()}
            read = dict(zip(facs.AU_NAMES, facs.au_activations((rest + facs.field_of(planted, n_points))[None], rest)[0],
                            strict=True))
            assert read["AU9"] > 0.3 * planted["AU9"], (n_points, emotion, read)
            assert read["AU15"] == pytest.approx(planted["AU15"], abs=0.1), (n_points, emotion, read)


@pytest.mark.parametrize("emotion", EDIT_EMOTIONS)
def test_no_triangle_folds_at_full_intensity(emotion, track):
    backend = WarpBackend()
    seq = backend.encode(track)
    edited = backend.manipulate(seq, backend.plan(seq, EditTarget(emotion=emotion, intensity=1.0), float(track.fps)))
    tris = mesh_topology(478)
    for i in np.flatnonzero(seq.valid):
        src = orientation(warp_points(seq.landmarks[i], 256), tris)
        dst = orientation(warp_points(edited.landmarks[i], 256), tris)
        folded = (np.sign(src) != np.sign(dst)) & (np.abs(src) > MIN_AREA)
        assert not folded.any(), f"{emotion}: frame {i} folds triangles {tris[folded].tolist()}"


def test_extreme_fields_are_scaled_back_until_nothing_folds(track):
    backend = WarpBackend()
    seq = backend.encode(track)
    plan = backend.plan(seq, EditTarget(emotion="surprised", intensity=1.0), float(track.fps))
    plan.activations *= 4.0                                       # far beyond any calibrated AU
    edited = backend.manipulate(seq, plan)
    tris = mesh_topology(478)
    for i in np.flatnonzero(seq.valid)[::5]:
        src = orientation(warp_points(seq.landmarks[i], 256), tris)
        dst = orientation(warp_points(edited.landmarks[i], 256), tris)
        assert not ((np.sign(src) != np.sign(dst)) & (np.abs(src) > MIN_AREA)).any()


def test_a_fold_the_lids_cannot_shed_scales_the_lids_alone(monkeypatch):
    """The brows, the lids and the mouth are made fold-free one over the other: where a very wide eye's
    raised lid folds against its crease (a child's eyes), the lid raise gives way and the brows keep theirs
    (scaled as one upper face, a surprised brow raise dropped with it)."""
    from spfem_cli.backends.warp import backend as warp_backend

    real, calls = warp_backend.fold_free_scale, []

    def lids_always_fold(points, base, field, valid, window=9):
        calls.append(field)
        scale = real(points, base, field, valid, window)
        return np.zeros_like(scale) if len(calls) == 2 else scale

    monkeypatch.setattr(warp_backend, "fold_free_scale", lids_always_fold)
    frames = np.repeat(facs.neutral()[None], 5, axis=0)
    activations = np.zeros((5, len(facs.AU_NAMES)))
    for unit, value in (("AU1", 1.1), ("AU2", 1.1), ("AU5", 1.8), ("AU12", 1.0)):
        activations[:, facs.AU_NAMES.index(unit)] = value
    moved = warp_backend.fold_free(frames, activations, np.ones(5, bool))
    assert len(calls) == 3                                             # brows, lids, mouth
    full = facs.field_of(activations[0], 478)
    np.testing.assert_allclose(moved[2][facs.BROW_UPPER], full[facs.BROW_UPPER], atol=1e-6)
    np.testing.assert_allclose(moved[2][facs.LID_UPPER[1:-1], 1], 0.0, atol=1e-6)   # no lid raise left
    assert moved[2][facs.LIP_CORNER_OUTER, 0] != 0.0                   # the smile is its own layer


@pytest.mark.parametrize("emotion", ["happy", "disgusted", "angry"])
def test_mesh_inner_lip_gaps_and_outline_are_the_source(emotion, track):
    backend = WarpBackend()
    seq = backend.encode(track)
    edited = backend.manipulate(seq, backend.plan(seq, EditTarget(emotion=emotion, intensity=1.0), float(track.fps))).landmarks
    for top, bottom in facs.INNER_LIP_PAIRS_MESH:
        np.testing.assert_allclose(edited[:, bottom] - edited[:, top], seq.landmarks[:, bottom] - seq.landmarks[:, top], atol=1e-9)
    np.testing.assert_allclose(edited[:, facs.FACE_OVAL], seq.landmarks[:, facs.FACE_OVAL])


def test_an_upper_lid_comes_down_a_share_of_its_opening_and_a_squint_still_narrows():
    """Half-shut upper lids read drowsy, not sad: a droop stops at MAX_LID_DROOP of the eye's own opening,
    while the lower lid rising (a squint) may still narrow the eye to the MIN_LID_GAP floor."""
    src = facs.neutral(facs.N_MESH)[None]
    top, bottom = np.array(facs.LID_PAIRS).T
    gap = src[0, bottom, 1] - src[0, top, 1]
    droop = src.copy()
    droop[0, top, 1] += 0.8 * gap
    kept = facs.keep_eyes_open(src, droop)
    np.testing.assert_allclose(kept[0, top, 1] - src[0, top, 1], facs.MAX_LID_DROOP * gap)
    squint = src.copy()
    squint[0, bottom, 1] -= 0.8 * gap
    kept = facs.keep_eyes_open(src, squint)
    np.testing.assert_allclose(kept[0, bottom, 1] - kept[0, top, 1], facs.MIN_LID_GAP * gap)


def test_sad_lids_droop_no_further_than_the_cap_on_a_real_track(track):
    backend = WarpBackend()
    seq = backend.encode(track)
    edited = backend.manipulate(seq, backend.plan(seq, EditTarget(emotion="sad", intensity=1.0), float(track.fps))).landmarks
    top, bottom = np.array(facs.LID_PAIRS).T
    src = seq.landmarks[seq.valid]
    gap = src[:, bottom, 1] - src[:, top, 1]
    drop = edited[seq.valid][:, top, 1] - src[:, top, 1]
    assert drop.max() > 0.5 * facs.MAX_LID_DROOP * gap.mean()          # sad does droop …
    assert np.all(drop[gap > 0] <= facs.MAX_LID_DROOP * gap[gap > 0] + 1e-9)   # … no further than the cap


def test_a_68_point_track_still_edits(track):
    """FAN tracks have no mesh: the same AU fields act on the 68 points and the 68-point warp renders."""
    backend = WarpBackend()
    seq = LandmarkSeq(track.aligned_landmarks(), track.valid.copy())
    plan = backend.plan(seq, EditTarget(emotion="happy", intensity=1.0), float(track.fps))
    edited = backend.manipulate(seq, plan)
    assert edited.landmarks.shape[1] == 68
    assert np.all(edited.landmarks[:, [48, 54], 1] < seq.landmarks[:, [48, 54], 1])
    i = int(np.flatnonzero(track.valid)[0])
    frame = np.full((*track.frame_size, 3), 128, np.uint8)
    face, _ = backend.render(frame, track.transforms[i], seq.landmarks[i], edited.landmarks[i])
    assert face.shape[0] == face.shape[1] >= 256


def test_warp_moves_pixels_with_the_points():
    """A dot under a moving mesh vertex lands where that vertex went."""
    size = 256
    pts = facs.neutral()
    moved = pts + facs.action_units()["AU12"]
    crop = np.full((size, size, 3), 200, np.uint8)
    x, y = np.round(pts[61]).astype(int)
    cv2.circle(crop, (x, y), 2, (0, 0, 0), -1)
    out = warp_face(crop, pts, moved)
    ys, xs = np.nonzero(out[..., 0] < 100)
    assert np.hypot(xs.mean() - moved[61, 0], ys.mean() - moved[61, 1]) < 1.5


def test_eyeglass_frames_are_found_and_damped_and_bare_skin_is_not():
    pts = facs.neutral()
    skin = np.full((256, 256, 3), (200, 160, 140), np.uint8)
    assert rigid_damping(skin, pts) is None
    glasses = skin.copy()
    for eye in (facs.LID_UPPER, facs.MIRROR[facs.LID_UPPER]):
        c = pts[eye].mean(0)
        cv2.ellipse(glasses, (int(c[0]), int(c[1]) + 2), (22, 15), 0, 0, 360, (30, 30, 30), 2)
    cv2.line(glasses, (118, 92), (138, 92), (30, 30, 30), 2)
    damping = rigid_damping(glasses, pts)
    assert damping is not None
    c = pts[facs.LID_UPPER].mean(0)
    assert damping[int(c[1]) + 2 + 15, int(c[0])] > 0.5          # on the lower rim
    assert damping[int(pts[61, 1]), int(pts[61, 0])] == 0         # the mouth is free


def test_glasses_precheck_reads_the_bridge_strip_like_the_full_crop():
    """The render's cheap pre-check (bridge strip only) says maybe exactly where the full crop finds glasses."""
    from spfem_cli.backends.warp.rigid import may_have_glasses

    pts = facs.neutral()
    skin = np.full((256, 256, 3), (200, 160, 140), np.uint8)
    glasses = skin.copy()
    cv2.line(glasses, (118, 92), (138, 92), (30, 30, 30), 2)
    for crop in (skin, glasses):
        frame = cv2.resize(crop, (384, 384), interpolation=cv2.INTER_CUBIC)      # a face at 1.5x in the frame
        for d in (1, 2):
            matrix = np.array([[d / 1.5, 0.0, 0.0], [0.0, d / 1.5, 0.0]])
            full = rigid_damping(cv2.warpAffine(frame, matrix, (256 * d, 256 * d), flags=cv2.INTER_CUBIC), pts * d)
            assert may_have_glasses(frame, matrix, pts * d, 256 * d) == (full is not None) == (crop is glasses)


def test_eye_make_up_and_dark_brows_are_not_glasses():
    """Lashes, eyeliner and brows are strong edges around the eyes of bare faces: no bridge line, no damping."""
    pts = facs.neutral()
    face = np.full((256, 256, 3), (200, 160, 140), np.uint8)
    for lid in (facs.LID_UPPER, facs.LID_LOWER, facs.MIRROR[facs.LID_UPPER], facs.MIRROR[facs.LID_LOWER]):
        cv2.polylines(face, [np.round(pts[lid]).astype(np.int32)], False, (20, 20, 20), 3)
    for brow in (facs.BROW_UPPER, facs.MIRROR[facs.BROW_UPPER]):
        cv2.polylines(face, [np.round(pts[brow] + (0, 2)).astype(np.int32)], False, (40, 30, 30), 5)
    assert rigid_damping(face, pts) is None


def test_reference_expression_is_read_against_each_faces_own_neutral(track):
    """A reference of another "person" (shifted brows, a naturally downturned mouth: identity) who smiles
    through most of the clip and blinks now and then transfers the smile: not the identity, not the
    blinks, and not the downturn that the smile leaves (which a per-AU range would read as AU15)."""
    backend = WarpBackend()
    seq = backend.encode(track)
    fields = facs.action_units()
    identity = np.zeros((478, 2))
    identity[facs.BROWS, 1] -= 4.0
    n = len(seq.valid)
    smile = np.where(np.arange(n) >= n // 3, 1.0, 0.0)[:, None, None]
    blink = np.where(np.arange(n) % 10 == 0, 1.0, 0.0)[:, None, None]
    ref = LandmarkSeq(seq.landmarks + identity + (1 - smile) * 0.6 * fields["AU15"] + smile * fields["AU12"]
                      + blink * fields["AU41"], seq.valid.copy())
    plan = backend.plan(seq, EditTarget(reference=__file__, intensity=1.0), float(track.fps), ref)
    names = list(plan.au_names)
    assert plan.activations[:, names.index("AU12")].mean() > 0.6
    assert np.abs(plan.activations[:, [names.index(a) for a in ("AU1", "AU2", "AU4", "AU41", "AU15")]]).max() < 0.2
    still = LandmarkSeq(seq.landmarks + identity, seq.valid.copy())
    plan = backend.plan(seq, EditTarget(reference=__file__, intensity=1.0), float(track.fps), still)
    assert np.abs(plan.displacement).max() < 1.5


def test_face_edit_reports_the_aus_of_the_frame(track):
    backend = WarpBackend()
    seq = backend.encode(track)
    plan = backend.plan(seq, EditTarget(emotion="happy", intensity=0.5), float(track.fps))
    i = int(np.flatnonzero(seq.valid)[0])
    edit = backend.face_edit(seq.landmarks[i], seq.landmarks[i] + plan.displacement[i], 2.0)
    assert edit.has_mesh and edit.scale == 2.0
    assert edit.aus["AU12"] == pytest.approx(0.5, abs=0.05) and edit.aus["AU6"] == pytest.approx(0.5, abs=0.05)
    assert edit.aus["AU4"] == pytest.approx(0.0, abs=0.05)


def test_brows_behind_glasses_move_less_and_lids_keep_their_motion():
    from spfem_cli.backends.warp.rigid import BROW_KEEP_WITH_GLASSES, steady_brows

    src = facs.neutral()
    edited = src + facs.field_of({"AU1": 1.0, "AU2": 1.0, "AU5": 1.0}, facs.N_MESH)
    assert steady_brows(src, edited, None) is edited                       # no glasses: untouched
    damping = np.zeros((256, 256), np.float32)
    damping[100, 100] = 1.0                                                  # a certain frame somewhere
    out = steady_brows(src, edited, damping)
    brow = facs.BROW_UPPER
    np.testing.assert_allclose(out[brow] - src[brow], BROW_KEEP_WITH_GLASSES * (edited[brow] - src[brow]), atol=1e-9)
    lid = facs.LID_UPPER[3:6]                                                # mid upper lid, seen through the lens
    np.testing.assert_allclose(out[lid], edited[lid])
    half = steady_brows(src, edited, damping * 0.5)                          # weaker evidence, milder cut
    assert np.all(np.abs(half[brow, 1] - src[brow, 1]) > np.abs(out[brow, 1] - src[brow, 1]))


def test_a_smile_does_not_spread_lips_rounded_for_speech(track):
    """Pursing the lips ("oo", "w") is speech, like the opening: on frames where the source's mouth is much
    narrower than usual the AUs that change the mouth's width fade, so the edited mouth keeps the source's width
    there; on ordinary frames the smile is untouched."""
    backend = WarpBackend()
    seq = backend.encode(track)
    plan = backend.plan(seq, EditTarget(emotion="happy", intensity=1.0), float(track.fps))
    n = len(seq.valid)
    pursed = (np.arange(n) >= n // 2) & seq.valid
    squeeze = np.where(pursed, 0.7, 1.0)[:, None, None]          # lips 30 % narrower about the mouth's centre
    landmarks = seq.landmarks.copy()
    lips = facs.both(np.r_[facs.LIP_OUTER_UPPER, facs.LIP_OUTER_LOWER, facs.LIP_INNER_UPPER, facs.LIP_INNER_LOWER])
    centre = landmarks[:, lips].mean(1, keepdims=True)
    landmarks[:, lips, 0] = (centre[..., 0] + squeeze[..., 0] * (landmarks[:, lips] - centre)[..., 0])
    rounded = LandmarkSeq(landmarks, seq.valid.copy())
    edited = backend.manipulate(rounded, plan).landmarks
    widened = facs.mouth_width(edited) - facs.mouth_width(landmarks)
    ordinary = seq.valid & ~pursed
    assert np.nanmedian(widened[ordinary]) > 5.0                 # the smile widens an ordinary mouth
    assert np.nanmax(np.abs(widened[pursed][3:])) < 0.5          # and leaves a pursed one as the speech made it
    keep = facs.rounding_keep(landmarks, plan.mouth_width)
    settled = ordinary & (np.arange(n) < n // 2 - facs.ROUNDING_SMOOTH)    # the width's moving average reaches this far
    assert keep[settled].min() == 1.0 and keep[pursed][3:].max() == 0.0


def test_a_source_that_smiles_first_keeps_its_calm_frames_unfaded(track):
    """Rest is read on the frames that smile least: a face grinning through its first seconds, then calm,
    must not have its calm frames taken for pursed lips (which would strip a "happy" edit of its smile)."""
    backend = WarpBackend()
    seq = backend.encode(track)
    n = len(seq.valid)
    grin = np.where(np.arange(n) < 2 * n // 3, 1.0, 0.0)[:, None, None]      # most of the clip, as in a laugh
    grinning = LandmarkSeq(seq.landmarks + grin * facs.action_units()["AU12"], seq.valid.copy())
    plan = backend.plan(grinning, EditTarget(emotion="happy", intensity=1.0), float(track.fps))
    calm = seq.valid & (np.arange(n) >= 2 * n // 3)
    assert plan.mouth_width == pytest.approx(np.median(facs.mouth_width(seq.landmarks[seq.valid])), rel=0.08)
    assert facs.rounding_keep(grinning.landmarks, plan.mouth_width)[calm].min() == 1.0
