"""FAN tracker: weights through the registry, strict loading of the published layouts, pupils."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from spfem_cli.face.tracking.fan_tracker import FanTracker, load_fan, pupil_centre
from spfem_cli.face.tracking.track import get_tracker
from spfem_cli.weights import WeightsError

# Layout of the published files (face-alignment 1.5.0: FAN(4) ← 2DFAN4-11f355bf06.pth.tar,
# s3fd ← s3fd-619a316812.pth): key count, parameter+buffer count and anchor shapes.
FAN_MANIFEST = {
    "keys": 1129, "numel": 23874504,
    "shapes": {"conv1.weight": (64, 3, 7, 7), "conv2.conv1.weight": (64, 64, 3, 3), "m0.b1_1.conv1.weight": (128, 256, 3, 3),
               "l0.weight": (68, 256, 1, 1), "bl0.weight": (256, 256, 1, 1), "al0.weight": (256, 68, 1, 1),
               "l3.weight": (68, 256, 1, 1), "l3.bias": (68,)},
}
S3FD_MANIFEST = {
    "keys": 65, "numel": 22459110,
    "shapes": {"conv1_1.weight": (64, 3, 3, 3), "conv3_3_norm.weight": (256,), "conv3_3_norm_mbox_conf.weight": (4, 256, 3, 3),
               "fc7.weight": (1024, 1024, 1, 1), "conv7_2_mbox_loc.weight": (4, 256, 3, 3)},
}


def _check_manifest(state: dict, manifest: dict) -> None:
    assert len(state) == manifest["keys"]
    assert sum(v.numel() for v in state.values()) == manifest["numel"]
    for key, shape in manifest["shapes"].items():
        assert tuple(state[key].shape) == shape, key


@pytest.fixture(scope="module")
def published_layout_files(tmp_path_factory):
    """State dicts in the published layouts, written by the test (random values, real keys/shapes)."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    folder = tmp_path_factory.mktemp("fan")
    torch.manual_seed(0)
    fan_state, s3fd_state = FAN(4).state_dict(), s3fd().state_dict()
    _check_manifest(fan_state, FAN_MANIFEST)
    _check_manifest(s3fd_state, S3FD_MANIFEST)
    torch.save(fan_state, folder / "2DFAN4-11f355bf06.pth.tar")
    torch.save(s3fd_state, folder / "s3fd-619a316812.pth")
    return folder / "2DFAN4-11f355bf06.pth.tar", folder / "s3fd-619a316812.pth", fan_state


def test_missing_weights_name_the_fetch_command():
    with pytest.raises(WeightsError, match="spfem weights fetch"):
        FanTracker()
    with pytest.raises(WeightsError):
        get_tracker("fan")


def test_published_state_dicts_load_strictly(published_layout_files):
    fan_path, s3fd_path, fan_state = published_layout_files
    net = load_fan(fan_path)
    loaded = net.state_dict()
    assert set(loaded) == set(fan_state)
    assert torch.equal(loaded["l3.weight"], fan_state["l3.weight"])
    assert not net.training
    tracker = FanTracker(fan_path=fan_path, s3fd_path=s3fd_path, max_faces=1)
    assert tracker.name == "fan"


def test_registry_user_files_are_used(published_layout_files, monkeypatch):
    fan_path, s3fd_path, _ = published_layout_files
    monkeypatch.setenv("SPFEM_WEIGHT_FAN_2D68", str(fan_path))
    monkeypatch.setenv("SPFEM_WEIGHT_S3FD", str(s3fd_path))
    with pytest.warns(UserWarning, match="unverified"):
        tracker = get_tracker("fan", max_faces=1)
    assert isinstance(tracker, FanTracker)


class _PeakNet(torch.nn.Module):
    """Stand-in FAN: heatmaps with one peak per landmark at a fixed 64×64 position."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hm = torch.zeros(x.shape[0], 68, 64, 64)
        hm[:, :, 32, 16] = 1.0
        return hm


def test_torchscript_fan_and_crop_geometry(tmp_path, published_layout_files):
    """The .zip (TorchScript) format loads, and heatmap positions map back into the image box."""
    path = tmp_path / "2DFAN4-cd938726ad.zip"
    torch.jit.script(_PeakNet()).save(str(path))
    _, s3fd_path, _ = published_layout_files
    tracker = FanTracker(fan_path=path, s3fd_path=s3fd_path)
    frame = np.zeros((400, 600, 3), np.uint8)
    box = np.array([[200.0, 100.0, 400.0, 300.0]])
    points = tracker.landmarks_for_boxes(frame, box)
    assert points.shape == (1, 68, 2)
    # face-alignment's crop: centre (300, 200 - 0.12·200), side 200·(400/195) px over 64 heatmap cells;
    # the peak a quarter across (column 16) and half down (row 32), within one cell
    side = 200 * 400 / 195
    x, y = points[0, 0]
    assert abs(x - (300 - side / 4)) < side / 64 and abs(y - 176) < side / 64


def test_detect_assembles_detections(tmp_path, published_layout_files, monkeypatch):
    """Boxes from the detector → landmarks from FAN → pupils from the image, best score first."""
    path = tmp_path / "peak.zip"
    torch.jit.script(_PeakNet()).save(str(path))
    _, s3fd_path, _ = published_layout_files
    tracker = FanTracker(fan_path=path, s3fd_path=s3fd_path, max_faces=1)
    boxes = [np.array([10, 10, 60, 60, 0.7]), np.array([100, 20, 220, 140, 0.99])]
    monkeypatch.setattr(tracker.detector, "detect_from_image", lambda image: boxes)
    (det,) = tracker.detect(np.full((200, 300, 3), 128, np.uint8))
    assert det.score == pytest.approx(0.99)
    np.testing.assert_allclose(det.box, [100, 20, 220, 140])
    assert det.landmarks.shape == (68, 2) and det.pupils.shape == (2, 2)
    assert np.isfinite(det.pupils).all()
    monkeypatch.setattr(tracker.detector, "detect_from_image", lambda image: [])
    assert tracker.detect(np.zeros((50, 50, 3), np.uint8)) == []


def test_pupil_centre_is_the_dark_blob_in_the_eye():
    img = np.full((60, 100), 170, np.uint8)
    eye = np.array([[20, 30], [35, 20], [65, 20], [80, 30], [65, 40], [35, 40]], float)
    cv2.fillPoly(img, [eye.astype(np.int32)], 235)
    cv2.circle(img, (58, 29), 8, 40, -1)
    centre = pupil_centre(img, eye)
    assert np.abs(centre - [58, 29]).max() < 1.0
    closed = np.full((60, 100), 170, np.uint8)
    np.testing.assert_allclose(pupil_centre(closed, eye), eye.mean(0))


def test_heatmap_decoding_matches_face_alignment(monkeypatch):
    """Same convention as face-alignment's get_preds_fromhm (which truncates to int; we keep floats).

    The reference's numba kernel is called as plain Python (``py_func``): same code, no 25 s compile.
    """
    from face_alignment import utils

    from spfem_cli.face.tracking.fan_tracker import heatmap_to_points

    rng = np.random.default_rng(0)
    hm = rng.uniform(0, 0.1, (1, 68, 64, 64)).astype(np.float32)
    for j in range(68):
        y, x = rng.integers(0, 64, 2)
        hm[0, j, y, x] = 1.0
    centre, scale = np.array([311.0, 207.0]), 1.7
    ours = heatmap_to_points(hm[0], centre, scale)
    idx = hm.reshape(1, 68, -1).argmax(-1)
    monkeypatch.setattr(utils, "transform_np", utils.transform_np.py_func)
    _, theirs = utils._get_preds_fromhm.py_func(hm, idx, centre, scale)
    assert np.abs(ours - theirs[0]).max() <= 1.0
