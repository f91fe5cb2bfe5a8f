"""Tracking on real face pixels (the astronaut photo and the talking sample), and the temporal rules.

Clip helpers here are shared with tests/test_preprocess.py.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from spfem_cli.face.tracking import FaceTrack, TemporalConfig, track_video
from spfem_cli.face.tracking.base import Detection
from spfem_cli.face.tracking.mediapipe_tracker import MP_TO_IBUG68, MediaPipeTracker
from spfem_cli.face.tracking.temporal import fill_gaps, one_euro, one_euro_zero_phase, runs, shots
from spfem_cli.face.tracking.track import choose_face
from spfem_cli.video import write_video

FPS = 25
MIRROR_68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31]
                     + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
                     + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


# --------------------------------------------------------------------------- clip helpers
def talking_frames(n: int, size: tuple[int, int] = (240, 320), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames of the real-face sample and the mouth signal that drove them."""
    from spfem_cli.demo.sample import render_frame, speech_like_signal

    signal = speech_like_signal(n, FPS, seed=seed)
    frames = np.stack([render_frame(float(a), i / FPS, size=size) for i, a in enumerate(signal)])
    return frames, signal


def write_clip(path: Path, frames: np.ndarray) -> Path:
    return write_video(path, frames, FPS, crf=16)


def write_rotated_clip(path: Path, frames: np.ndarray, degrees: int) -> Path:
    """Store frames turned as a phone camera would, with a display matrix that turns them upright."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stored0 = np.rot90(frames[0], k=-degrees // 90)
        stream.height, stream.width = stored0.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "16"}
        stream.set_display_rotation(degrees)
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(frame, k=-degrees // 90)), format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def no_face_frames(n: int, size: tuple[int, int] = (240, 320)) -> np.ndarray:
    from skimage import data

    coffee = cv2.resize(data.coffee(), (size[1], size[0]))
    return np.stack([np.roll(coffee, 3 * i, axis=1) for i in range(n)])


def two_face_frames(n: int) -> np.ndarray:
    """A large face on the left and a smaller one on the right of a 360×640 frame."""
    big, _ = talking_frames(n, size=(360, 360), seed=1)
    other, _ = talking_frames(n, size=(360, 360), seed=2)
    small = np.stack([cv2.resize(f, (180, 180), interpolation=cv2.INTER_AREA) for f in other])
    canvas = np.full((n, 360, 640, 3), (200, 205, 210), np.uint8)
    canvas[:, :, :360] = big
    canvas[:, 90:270, 420:600] = small
    return canvas


@pytest.fixture(scope="module")
def tracker():
    with MediaPipeTracker() as engine:
        yield engine


# --------------------------------------------------------------------------- the 478 → 68 map
def test_index_map_is_68_distinct_mesh_vertices():
    assert MP_TO_IBUG68.shape == (68,)
    assert len(set(MP_TO_IBUG68.tolist())) == 68
    assert MP_TO_IBUG68.min() >= 0 and MP_TO_IBUG68.max() < 468


def test_index_map_has_ibug_semantics_on_a_real_face(tracker):
    from skimage import data

    (det,) = tracker.detect(data.astronaut())
    lm = det.landmarks
    width = lm[16, 0] - lm[0, 0]
    assert width > 50
    # left/right pairs are mirror images about the face's midline (the photo is nearly frontal)
    mid = np.median(lm[[27, 28, 29, 30, 33, 8, 51, 57, 62, 66], 0])
    mirrored = lm[MIRROR_68] * [-1, 1] + [2 * mid, 0]
    assert np.abs(mirrored - lm).mean() < 0.04 * width
    # ordering and grouping as in iBUG-68
    assert np.argmax(lm[:17, 1]) == 8                           # chin lowest on the jaw
    assert np.all(np.diff(lm[0:9, 1]) > 0) and np.all(np.diff(lm[8:17, 1]) < 0)   # down one side, up the other
    assert np.all(np.diff(lm[0:17, 0]) > -1)                                       # ear to ear, left to right
    assert lm[17:27, 1].max() < lm[36:48, 1].min()              # brows above the eyes
    assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]        # eye corners left to right in the image
    assert lm[36:48, 1].max() < lm[30, 1] < lm[51, 1]           # eyes, nose tip, upper lip
    assert lm[62, 1] < lm[66, 1] and lm[51, 1] < lm[62, 1]      # inner lip midpoints, upper above lower
    assert lm[48, 0] < lm[60, 0] < lm[64, 0] < lm[54, 0]        # inner corners inside outer corners
    for eye, pupil in ((lm[36:42], det.pupils[0]), (lm[42:48], det.pupils[1])):
        assert eye[:, 0].min() < pupil[0] < eye[:, 0].max()


def test_tracker_finds_nothing_in_an_empty_frame(tracker):
    assert tracker.detect(np.zeros((240, 320, 3), np.uint8)) == []


# --------------------------------------------------------------------------- the real-face sample
def test_sample_clip_every_frame_and_mouth_signal(sample_clip):
    track = track_video(sample_clip.path, progress=False)
    assert len(track) == len(sample_clip.mouth_signal)
    assert track.valid.all() and not track.interpolated.any() and not track.cuts.any()
    opening = track.mouth_opening()
    r = np.corrcoef(opening, sample_clip.mouth_signal)[0, 1]
    assert r >= 0.95, f"mouth opening vs driving signal: r = {r:.3f}"
    assert track.tracker == "mediapipe" and track.fps == sample_clip.fps
    assert np.isfinite(track.transforms).all() and np.isfinite(track.pupils).all()


def test_no_face_clip_is_all_invalid(tmp_path):
    track = track_video(write_clip(tmp_path / "none.mp4", no_face_frames(12)), progress=False)
    assert len(track) == 12 and not track.valid.any()
    assert np.isnan(track.landmarks).all() and np.isnan(track.transforms).all()
    assert np.isnan(track.mouth_opening()).all()


def test_face_that_leaves_and_returns(tmp_path):
    from spfem_cli.demo.sample import make_talking_clip

    clip = make_talking_clip(tmp_path / "leave.mp4", seconds=1.6, size=(240, 320), hidden=(12, 26), audio=False)
    track = track_video(clip.path, progress=False)
    assert np.array_equal(track.valid, clip.face_visible)
    assert not track.interpolated.any()                    # a 14-frame absence is not papered over
    assert np.isnan(track.landmarks[12:26]).all()
    assert np.isfinite(track.landmarks[26:]).all()         # re-acquired right away


def test_short_occlusion_is_interpolated(tmp_path):
    frames, _ = talking_frames(24)
    with MediaPipeTracker() as engine:
        box = engine.detect(frames[10])[0].box.astype(int)
    hidden = frames.copy()
    pad = 25
    hidden[10:12, max(box[1] - pad, 0):box[3] + pad, max(box[0] - pad, 0):box[2] + pad] = (200, 205, 210)
    track = track_video(write_clip(tmp_path / "occluded.mp4", hidden), progress=False)
    assert track.valid.all()
    assert np.flatnonzero(track.interpolated).tolist() == [10, 11]
    # the filled frames lie between their neighbours
    for k in (10, 11):
        lo = np.minimum(track.landmarks[9], track.landmarks[12]) - 2
        hi = np.maximum(track.landmarks[9], track.landmarks[12]) + 2
        assert np.all((track.landmarks[k] >= lo) & (track.landmarks[k] <= hi))


def test_two_faces_largest_by_default_and_face_index(tmp_path):
    path = write_clip(tmp_path / "two.mp4", two_face_frames(10))
    largest = track_video(path, progress=False)
    second = track_video(path, face_index=1, progress=False)
    third = track_video(path, face_index=2, progress=False)
    assert largest.valid.all() and second.valid.all()
    assert np.nanmean(largest.landmarks[:, :, 0]) < 360 < np.nanmean(second.landmarks[:, :, 0])
    width = lambda t: np.median(t.boxes[:, 2] - t.boxes[:, 0])  # noqa: E731
    assert width(largest) > 1.5 * width(second)
    assert not third.valid.any()


def test_tiny_face_in_720p(tmp_path):
    frames, _ = talking_frames(16)
    faces = np.stack([cv2.resize(f, (80, 60), interpolation=cv2.INTER_AREA) for f in frames])
    canvas = np.full((16, 720, 1280, 3), (200, 205, 210), np.uint8)
    canvas[:, 300:360, 700:780] = faces
    track = track_video(write_clip(tmp_path / "tiny.mp4", canvas), progress=False)
    assert track.valid.all()
    width = np.median(track.boxes[:, 2] - track.boxes[:, 0])
    assert width < 50                                      # it really is a tiny face (~3 % of the width)
    assert np.all((track.landmarks[:, :, 0] > 700) & (track.landmarks[:, :, 0] < 780))


@pytest.mark.parametrize("degrees", [90, 270])
def test_rotated_video_is_tracked_upright(tmp_path, degrees):
    frames, _ = talking_frames(8)
    upright = track_video(write_clip(tmp_path / "up.mp4", frames), progress=False)
    rotated = track_video(write_rotated_clip(tmp_path / f"rot{degrees}.mp4", frames, degrees), progress=False)
    assert rotated.meta["rotation"] == degrees
    assert rotated.frame_size == upright.frame_size == (240, 320)
    assert rotated.valid.all()
    assert np.abs(rotated.landmarks - upright.landmarks).mean() < 2.0


def test_scene_cut_is_detected_and_resets_the_filters(tmp_path, tracker):
    shot_a, _ = talking_frames(14, seed=4)
    zoomed, _ = talking_frames(14, size=(480, 640), seed=5)
    shot_b = (zoomed[:, 60:300, 260:580].astype(np.int16) * [0.55, 0.75, 1.2]).clip(0, 255).astype(np.uint8)
    track = track_video(write_clip(tmp_path / "cut.mp4", np.concatenate([shot_a, shot_b])), progress=False)
    assert np.flatnonzero(track.cuts).tolist() == [14]
    assert track.valid.all()
    raw_13 = tracker.detect(shot_a[13])[0].landmarks
    raw_14 = tracker.detect(shot_b[0])[0].landmarks
    assert np.abs(raw_14 - raw_13).mean() > 40             # the face jumps at the cut...
    assert np.abs(track.landmarks[14] - raw_14).mean() < 4  # ...and the track jumps with it, no smear
    assert np.abs(track.landmarks[13] - raw_13).mean() < 4


# --------------------------------------------------------------------------- temporal rules (pure)
def test_runs_and_shots():
    assert runs(np.array([0, 1, 1, 0, 1], bool)) == [(1, 3), (4, 5)]
    assert shots(np.array([0, 0, 1, 0, 1], bool)) == [(0, 2), (2, 4), (4, 5)]


def test_fill_gaps_respects_length_and_cuts():
    valid = np.array([1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 1], bool)
    cuts = np.zeros(12, bool)
    cuts[11] = True                                         # the hole at 10 borders a cut: not filled
    values = np.where(valid, np.arange(12.0), np.nan)
    filled = fill_gaps([values], valid, cuts, max_gap=3)
    assert np.flatnonzero(filled).tolist() == [1, 2]
    np.testing.assert_allclose(values[:4], [0, 1, 2, 3])
    assert np.isnan(values[4:8]).all() and np.isnan(values[10])


def test_zero_phase_one_euro_has_no_lag_and_removes_jitter():
    t = np.arange(200) / FPS
    clean = 30 * np.sin(2 * np.pi * 1.5 * t)               # 1.5 Hz: syllable-rate motion, pixels
    rng = np.random.default_rng(0)
    noisy = clean + rng.normal(0, 1.0, t.shape)
    pts = np.stack([noisy, np.zeros_like(noisy)], -1)[:, None, :]
    cfg = TemporalConfig()
    zero = one_euro_zero_phase(pts, FPS, 100.0, cfg)[:, 0, 0]
    fwd = one_euro(pts, FPS, 100.0, cfg)[:, 0, 0]

    def best_lag(y):
        return max(range(-5, 6), key=lambda k: np.corrcoef(np.roll(y, -k)[10:-10], clean[10:-10])[0, 1])

    assert best_lag(zero) == 0
    assert best_lag(fwd) >= 0                               # the causal pass can only lag
    assert np.abs(zero - clean)[10:-10].mean() < np.abs(noisy - clean)[10:-10].mean()


def test_choose_face_follows_the_same_face():
    def det(x0, w):
        return Detection(np.zeros((68, 2)), np.array([x0, 0, x0 + w, w], float), np.zeros((2, 2)))

    a, b = det(0, 100), det(300, 90)
    assert choose_face([b, a], None, 0) is a                # largest
    assert choose_face([b, a], None, 1) is b
    assert choose_face([b, a], None, 2) is None
    grown = det(305, 120)                                   # the followed face grows past the other
    assert choose_face([a, grown], b.box, 0) is grown
    assert choose_face([], b.box, 0) is None


def test_face_track_save_load_round_trip(tmp_path):
    n = 5
    rng = np.random.default_rng(0)
    valid = np.array([1, 1, 0, 1, 1], bool)
    lm = rng.uniform(0, 100, (n, 68, 2))
    lm[~valid] = np.nan
    track = FaceTrack(boxes=rng.uniform(0, 100, (n, 4)), landmarks=lm, pupils=rng.uniform(0, 100, (n, 2, 2)),
                      valid=valid, transforms=rng.normal(size=(n, 2, 3)), interpolated=np.zeros(n, bool),
                      cuts=np.zeros(n, bool), fps=Fraction(30000, 1001), frame_size=(720, 1280), tracker="mediapipe",
                      meta={"source": "x.mp4"})
    path = track.save(tmp_path / "track.npz")
    back = FaceTrack.load(path)
    assert back.fps == Fraction(30000, 1001) and back.frame_size == (720, 1280) and back.tracker == "mediapipe"
    np.testing.assert_array_equal(back.landmarks, track.landmarks)
    np.testing.assert_array_equal(back.valid, valid)
    summary = (tmp_path / "track.json").read_text()
    assert '"valid_frames": 4' in summary and '"invalid_frames": [\n    2\n  ]' in summary
