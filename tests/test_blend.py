"""Paste-back: identity round trip, locality, masks, copy mode."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from spfem_cli.face.align import TEMPLATE_68, alignment_transform, apply_affine, invert_affine, warp_to_aligned
from spfem_cli.face.blend import face_mask, paste_back, template_mask


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def astronaut_face():
    """The real photo and its MediaPipe landmarks."""
    from skimage import data

    from spfem_cli.face.tracking.mediapipe_tracker import MediaPipeTracker

    image = data.astronaut()
    with MediaPipeTracker() as tracker:
        detections = tracker.detect(image)
    assert len(detections) == 1
    return image, detections[0].landmarks


def _frame_720p(image: np.ndarray) -> np.ndarray:
    big = cv2.resize(image, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(np.pad(big, ((0, 0), (128, 128), (0, 0)), mode="edge")[0:720])


@pytest.mark.parametrize("mode", ["laplacian", "copy"])
def test_identity_round_trip_psnr(astronaut_face, mode):
    image, landmarks = astronaut_face
    m = alignment_transform(landmarks)
    out = paste_back(image, warp_to_aligned(image, m), m, mode=mode)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert psnr(out, image) >= 40.0


def test_identity_round_trip_psnr_720p_face_region(astronaut_face):
    """A face larger than the crop (downsampled to 256², then back): still ≥ 40 dB on the whole frame,
    and the face region itself stays close."""
    image, landmarks = astronaut_face
    frame = _frame_720p(image)
    lm = landmarks * 2 + [128, 0]
    m = alignment_transform(lm)
    out = paste_back(frame, warp_to_aligned(frame, m), m)
    assert psnr(out, frame) >= 40.0
    x0, y0 = lm.min(0).astype(int)
    x1, y1 = lm.max(0).astype(int)
    assert psnr(out[y0:y1, x0:x1], frame[y0:y1, x0:x1]) >= 30.0


def test_paste_back_changes_only_the_face(astronaut_face):
    image, landmarks = astronaut_face
    m = alignment_transform(landmarks)
    edited = 255 - warp_to_aligned(image, m)          # a very different "edit"
    out = paste_back(image, edited, m)
    face_centre = apply_affine(invert_affine(m), TEMPLATE_68[30:31])[0].astype(int)
    assert np.abs(out[face_centre[1], face_centre[0]].astype(int) - image[face_centre[1], face_centre[0]]).max() > 50
    # far from the face (corners of the frame) nothing changes, bit for bit
    assert np.array_equal(out[:40, :40], image[:40, :40])
    assert np.array_equal(out[-60:, -60:], image[-60:, -60:])
    assert np.array_equal(image, data_astronaut())   # input untouched (pure function)


def data_astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def test_mask_is_soft_inside_the_face_and_zero_outside():
    mask = template_mask()
    assert mask.shape == (256, 256) and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    nose = TEMPLATE_68[30].astype(int)
    assert mask[nose[1], nose[0]] > 0.99
    assert mask[0, 0] == 0 and mask[255, 128] < 0.01
    # soft edge: a ramp of intermediate values exists
    assert ((mask > 0.05) & (mask < 0.95)).sum() > 500
    # eroded: the jaw line itself is mostly outside the opaque core
    jaw = TEMPLATE_68[3:14].astype(int)
    assert mask[jaw[:, 1], jaw[:, 0]].max() < 0.6


def test_custom_mask_from_landmarks_follows_them():
    shifted = TEMPLATE_68 + [30, 0]
    assert face_mask(shifted)[128, 200] > face_mask(TEMPLATE_68)[128, 200]


def test_paste_back_handles_a_face_at_the_frame_border(astronaut_face):
    image, landmarks = astronaut_face
    frame = np.ascontiguousarray(image[60:, 150:])       # face partly cut by the top/left border
    lm = landmarks - [150, 60]
    m = alignment_transform(lm)
    out = paste_back(frame, warp_to_aligned(frame, m), m)
    assert out.shape == frame.shape
    assert psnr(out, frame) >= 40.0


def test_paste_back_rejects_mismatched_mask_and_invalid_frames(astronaut_face):
    image, landmarks = astronaut_face
    m = alignment_transform(landmarks)
    face = warp_to_aligned(image, m)
    with pytest.raises(ValueError, match="does not match"):
        paste_back(image, face, m, mask=np.ones((128, 128), np.float32))
    with pytest.raises(ValueError, match="invalid track frame"):
        paste_back(image, face, np.full((2, 3), np.nan))


def test_supersampled_face_and_mask(astronaut_face):
    """A 512² crop made with 2·M (sharper render) pastes back like the 256² one."""
    image, landmarks = astronaut_face
    m2 = alignment_transform(landmarks) * 2.0
    out = paste_back(image, warp_to_aligned(image, m2, size=512), m2)
    assert psnr(out, image) >= 40.0
