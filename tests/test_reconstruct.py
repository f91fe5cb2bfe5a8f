"""`reconstruct` stage end to end and the conditioning images (NMFC, shape, eye gaze) in the aligned frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.deca import DECA
from models.detail import DetailAssets
from models.flame import FLAME, synthetic_flame
from spfem_cli.backends.ned.reconstruct import Reconstruction, reconstruct_video
from spfem_cli.backends.ned.render3d import (
    crop_to_aligned,
    eye_gaze_images,
    nmfc_colours,
    project,
    render_conditioning,
    write_3d_debug_video,
)
from spfem_cli.face.align import TEMPLATE_68
from spfem_cli.video import probe


@pytest.fixture(scope="module")
def flame() -> FLAME:
    return FLAME(*synthetic_flame(TEMPLATE_68, grid=31))


def _ned_disks(pts: np.ndarray, size: int) -> np.ndarray:
    """NED's create_eyes_image/drawCircle loops, transcribed as a slow reference (14 points: 12 eye + 2 pupils)."""
    im = np.zeros((size, size, 3), np.uint8)
    pts = pts.astype(np.int32)
    for eye, pupil in ((pts[0:6], pts[12]), (pts[6:12], pts[13])):
        rad = int((np.linalg.norm(eye[1] - eye[4]) + np.linalg.norm(eye[2] - eye[5])) / 4)
        for i in range(-rad, rad):
            for j in range(-rad, rad):
                if np.linalg.norm(np.array([i, j])) < rad:
                    im[min(max(pupil[1] + i, 0), size - 1), min(max(pupil[0] + j, 0), size - 1)] = (255, 0, 0)
    return im


def test_eye_gaze_image_matches_ned_disks() -> None:
    eyes = TEMPLATE_68[36:48].copy()
    eyes[[1, 2, 7, 8], 1] -= 4  # open the eyes a little more
    pupils = np.stack([eyes[:6].mean(0), eyes[6:].mean(0) + [0.7, -0.4]])
    ours = eye_gaze_images(eyes[None], pupils[None])[0]
    ref = _ned_disks(np.concatenate([eyes, pupils]), 256)
    np.testing.assert_array_equal(ours, ref)
    assert ours[..., 0].sum() > 0 and ours[..., 1:].sum() == 0
    corners = np.array([[[0.0, 0.0], [255.0, 255.0]]])
    edge = eye_gaze_images(eyes[None], corners)[0]  # disks at the border are clipped as NED clips them
    np.testing.assert_array_equal(edge, _ned_disks(np.concatenate([eyes, corners[0]]), 256))
    assert edge[0, 0, 0] == 255 and edge[255, 255, 0] == 255


def test_conditioning_images_land_where_the_projected_landmarks_are(flame: FLAME) -> None:
    pose = torch.tensor([[0.0, 0.15, 0.0, 0.2, 0.0, 0.0]])
    out = flame(torch.zeros(1, 100), torch.zeros(1, 50), pose)
    cam = torch.tensor([[7.0, 0.0, 0.01]])
    crop = np.array([[[1.0, 0, 10], [0, 1.0, 5]]])  # image → 224 crop
    align = np.array([[[1.1, 0.05, -3.0], [-0.05, 1.1, 2.0]]])  # image → aligned 256
    mats = torch.from_numpy(crop_to_aligned(crop, align)).float()
    colours = nmfc_colours(flame.v_template)
    eyes = np.tile(TEMPLATE_68[36:48][None], (1, 1, 1))
    imgs = render_conditioning(out.vertices, cam, flame.faces, colours, mats, eyes, eyes[:, [0, 6]])
    assert imgs.stacked().shape == (1, 9, 256, 256)
    assert 0.05 < imgs.mask.mean() < 0.9
    lm = project(out.landmarks2d, cam, mats)[0, :, :2].round().long()
    lm_vertex = flame.faces[flame.full_lmk_faces_idx, 0]
    hits = 0
    for k in range(17, 68):  # static landmarks sit on vertices: the NMFC there is that vertex's colour
        x, y = lm[k].tolist()
        if imgs.mask[0, 0, y, x] > 0:
            hits += 1
            assert torch.allclose(imgs.nmfc[0, :, y, x], colours[lm_vertex[k]], atol=0.06)
    assert hits >= 45
    assert imgs.shape[0][:, imgs.mask[0, 0] > 0].mean() > 0.2  # the front of the face is lit
    assert (imgs.shape[0][:, imgs.mask[0, 0] == 0] == 0).all()


def test_nmfc_colours_are_min_max_normalised_per_axis(flame: FLAME) -> None:
    c = nmfc_colours(flame.v_template)
    assert torch.allclose(c.amin(0), torch.zeros(3)) and torch.allclose(c.amax(0), torch.ones(3))


@pytest.fixture(scope="module")
def tracked_clip(tmp_path_factory: pytest.TempPathFactory):
    from spfem_cli.demo.sample import make_talking_clip
    from spfem_cli.face.tracking import track_video

    path = tmp_path_factory.mktemp("clip") / "talk.mp4"
    make_talking_clip(path, seconds=0.32, fps=25, size=(240, 320))
    return path, track_video(path, "mediapipe", progress=False)


def test_reconstruct_end_to_end_random_weights_judges_shapes_and_plumbing_only(
        tracked_clip, tmp_path: Path, flame: FLAME, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random DECA weights (real layout) + a synthetic FLAME: only shapes, caching and the written files are judged."""
    video, track = tracked_clip
    assert track.n_valid >= len(track) - 1
    torch.manual_seed(0)
    deca = DECA().eval()
    path = reconstruct_video(video, track, tmp_path, "cpu", deca=deca, batch_size=4, progress=False)
    recon = Reconstruction.load(path)
    assert recon.codes.shape == (len(track), 364) and recon.crop_mats.shape == (len(track), 2, 3)
    np.testing.assert_array_equal(recon.valid, track.valid)
    assert np.isfinite(recon.codes[recon.valid]).all() and np.isnan(recon.codes[~recon.valid]).all()
    assert recon.expression_sequence().shape == (len(track), 51)
    assert recon.fps == probe(video).fps

    import spfem_cli.backends.ned.reconstruct as stage

    def fail(*args, **kwargs):
        raise AssertionError("cache miss: the stage ran again")

    monkeypatch.setattr(stage, "reconstruct_frames", fail)
    assert reconstruct_video(video, track, tmp_path, "cpu", deca=deca, progress=False) == path

    debug = write_3d_debug_video(video, track, path, tmp_path / "debug.mp4", flame=flame, device="cpu", detail=False)
    info = probe(debug)
    assert (info.height, info.width) == (256, 1024) and info.n_frames == len(track)

    v = flame.v_template
    uv = (v[:, :2] - v[:, :2].amin(0)) / (v[:, :2].amax(0) - v[:, :2].amin(0))
    assets = DetailAssets(uv, flame.faces, torch.ones(256, 256), torch.zeros(256, 256))
    detailed = write_3d_debug_video(video, track, recon, tmp_path / "debug_detail.mp4", flame=flame,
                                    deca=deca, detail_assets=assets)
    assert probe(detailed).n_frames == len(track)


def test_reconstruct_without_weights_says_how_to_get_them(tracked_clip, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from spfem_cli.weights import WeightsError

    monkeypatch.setenv("SPFEM_HOME", str(tmp_path))
    monkeypatch.delenv("SPFEM_WEIGHT_DECA_MODEL", raising=False)
    video, track = tracked_clip
    with pytest.raises(WeightsError, match="deca_model"):
        reconstruct_video(video, track, tmp_path / "out", "cpu", progress=False)
