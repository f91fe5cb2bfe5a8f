"""FSGAN face-segmentation mask: key manifest of the published file, strict loading of its container,
NED's post-processing (face class → soft erosion → largest component), and its use for renderer actor data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.fsgan_unet import CLASSES, FSGANUNet, load_fsgan_unet
from spfem_cli.face.mask import (
    ERODE_KERNEL,
    ERODE_THRESHOLD,
    face_mask_from_logits,
    load_segmenter,
    mesh_or_segmentation,
    ned_blend_mask,
    segment_faces,
)

MANIFEST = Path(__file__).parent / "manifests" / "fsgan_segmentation.json"
ARCH = "fsgan.models.simple_unet.UNet(n_classes=3,feature_scale=1)"
# checked by hand against fsgan/models/simple_unet.py (= NED preprocessing/segmentation/simple_unet.py)
SPOT = {"conv1.conv1.0.weight": [64, 3, 3, 3], "conv1.conv1.1.running_var": [64],
        "center.conv2.0.weight": [1024, 1024, 3, 3], "up_concat4.conv1d.weight": [512, 1024, 1, 1],
        "up_concat4.conv.conv1.0.weight": [512, 1024, 3, 3], "up_concat1.conv.conv2.0.bias": [64],
        "final.weight": [3, 64, 1, 1], "final.bias": [3]}


def _manifest() -> dict[str, list[int]]:
    return json.loads(MANIFEST.read_text())


def _published_state(seed: int = 0, counters: bool = True) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.rand(shape, generator=gen) * 0.02 + (1.0 if k.endswith("running_var") else 0.0)
             for k, shape in _manifest().items()}
    if counters:  # files from PyTorch >= 0.4.1 carry BatchNorm step counters
        for key in [k for k in state if k.endswith("running_var")]:
            state[key.replace("running_var", "num_batches_tracked")] = torch.tensor(1234)
    return state


def _save_published(path: Path, state: dict[str, torch.Tensor]) -> Path:
    # FSGAN's utils.save_checkpoint layout (train_segmentation.py); best_loss may be a numpy scalar
    torch.save({"resolution": 256, "epoch": 90, "state_dict": state, "arch": ARCH,
                "best_loss_256": np.float64(0.123)}, path)
    return path


def test_model_keys_match_the_manifest():
    manifest = _manifest()
    for key, shape in SPOT.items():
        assert manifest[key] == shape
    own = {k: list(v.shape) for k, v in FSGANUNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    assert list(own.items()) == list(manifest.items())
    assert len(manifest) == 86 and CLASSES == ("background", "face", "hair")


def test_published_container_loads_strictly_through_the_registry(tmp_path, monkeypatch):
    state = _published_state()
    path = _save_published(tmp_path / "lfw_figaro_unet_256_2_0_segmentation_v1.pth", state)
    monkeypatch.setenv("SPFEM_WEIGHT_FSGAN_SEGMENTATION", str(path))
    with pytest.warns(UserWarning, match="unverified"):
        model = load_segmenter()
    assert isinstance(model, FSGANUNet) and not model.training
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    # older files without step counters load; a missing or extra real key does not
    torch.save({"state_dict": _published_state(counters=False), "arch": ARCH}, tmp_path / "old.pth")
    assert isinstance(load_fsgan_unet(tmp_path / "old.pth"), FSGANUNet)
    broken = dict(state)
    broken.pop("final.bias")
    torch.save({"state_dict": broken, "arch": ARCH}, tmp_path / "missing.pth")
    with pytest.raises(RuntimeError, match="final.bias"):
        load_fsgan_unet(tmp_path / "missing.pth")
    torch.save({"state_dict": {**state, "extra.weight": torch.zeros(1)}, "arch": ARCH}, tmp_path / "extra.pth")
    with pytest.raises(RuntimeError, match="extra.weight"):
        load_fsgan_unet(tmp_path / "extra.pth")
    torch.save({"state_dict": state, "arch": "fsgan.models.res_unet.MultiScaleResUNet()"}, tmp_path / "arch.pth")
    with pytest.raises(ValueError, match="arch"):
        load_fsgan_unet(tmp_path / "arch.pth")


def test_no_weight_means_no_segmenter(monkeypatch):
    monkeypatch.delenv("SPFEM_WEIGHT_FSGAN_SEGMENTATION", raising=False)
    assert load_segmenter() is None
    mesh = np.zeros((2, 8, 8), np.uint8)
    mesh[:, 2:6, 2:6] = 1
    mask, used = mesh_or_segmentation(np.zeros((2, 8, 8, 3), np.uint8), mesh, None, "cpu")
    assert np.array_equal(mask, mesh) and not used.any()


def _logits(face: np.ndarray, hair: np.ndarray | None = None) -> torch.Tensor:
    """1×3×H×W logits: face where ``face``, hair where ``hair``, background elsewhere."""
    logits = torch.zeros(1, 3, *face.shape)
    logits[0, 0] = 1.0
    logits[0, 1] = torch.from_numpy(face.astype(np.float32)) * 2.0
    if hair is not None:
        logits[0, 2] = torch.from_numpy(hair.astype(np.float32)) * 3.0
    return logits


def _cone(size: int = ERODE_KERNEL) -> np.ndarray:
    """NED's soft-erosion kernel written out independently: max(dist) − dist from the centre, sum 1."""
    r = size // 2
    dist = np.array([[math.hypot(x - r, y - r) for x in range(size)] for y in range(size)])
    weights = dist.max() - dist
    return weights / weights.sum()


def _expected_edge_shrink(size: int = ERODE_KERNEL, threshold: float = ERODE_THRESHOLD) -> int:
    """Pixels lost at a straight edge: the first inside pixel whose kernel mass over the face reaches the threshold."""
    r = size // 2
    columns = _cone(size).sum(axis=0)
    for t in range(r + 1):                      # t pixels inside the edge: kernel columns −t..r cover face
        if columns[r - t:].sum() >= threshold:
            return t
    raise AssertionError("threshold never reached")


def _brute_force_erosion(face: np.ndarray, size: int = ERODE_KERNEL, threshold: float = ERODE_THRESHOLD) -> np.ndarray:
    r, kernel = size // 2, _cone(size)
    padded = np.pad(face.astype(np.float64), r)
    h, w = face.shape
    return np.array([[(padded[y:y + size, x:x + size] * kernel).sum() >= threshold for x in range(w)]
                     for y in range(h)])


def test_postprocessing_keeps_the_largest_eroded_face_blob():
    h = w = 128
    yy, xx = np.mgrid[:h, :w]
    big = (yy >= 20) & (yy < 100) & (xx >= 10) & (xx < 70)        # 80×60 face
    small = (yy - 60) ** 2 + (xx - 105) ** 2 <= 12 ** 2            # a second, smaller face blob
    hair = (yy < 30) & (xx >= 10) & (xx < 70)                      # hair wins over face on the top rows
    mask = face_mask_from_logits(_logits(big | small, hair))[0]
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert mask[:, 85:].sum() == 0                                  # the small blob is gone
    shrink = _expected_edge_shrink()
    assert 1 <= shrink < ERODE_KERNEL // 2
    rows = np.flatnonzero(mask[:, 40])
    cols = np.flatnonzero(mask[65])
    assert rows[0] == 30 + shrink and rows[-1] == 99 - shrink     # top edge is the hair line, not the box
    assert cols[0] == 10 + shrink and cols[-1] == 69 - shrink
    # the image border erodes like any edge (zero padding, as NED's conv); corners lose more than edges
    full = face_mask_from_logits(_logits(np.ones((h, w), bool)))[0]
    assert np.flatnonzero(full[64])[0] == shrink and np.flatnonzero(full[:, 64])[-1] == h - 1 - shrink
    assert full[shrink, shrink] == 0 and full[20:108, 20:108].all()
    # every pixel as a direct sum over the written-out kernel (a blob with a notch and a corner)
    face = ((yy[:40, :40] - 18) ** 2 + (xx[:40, :40] - 20) ** 2 <= 14 ** 2) & ~((yy[:40, :40] > 15) & (xx[:40, :40] > 26))
    eroded = face_mask_from_logits(_logits(face))[0]
    assert np.array_equal(eroded.astype(bool), _brute_force_erosion(face)) and 0 < eroded.sum() < face.sum()
    # nothing classed as face: an empty mask, not an error
    assert face_mask_from_logits(_logits(np.zeros((h, w), bool))).sum() == 0


def test_blend_alpha_is_the_soft_erosion_ned_pastes_with():
    face = np.zeros((1, 256, 256), np.uint8)
    face[0, 40:220, 60:200] = 1
    alpha = ned_blend_mask(face)[0]
    assert alpha.dtype == np.float32 and alpha.min() == 0.0 and alpha.max() == 1.0
    assert alpha[130, 130] == 1.0 and alpha[5, 5] == 0.0
    row = alpha[130, 40:140]                                      # across the left edge: rises monotonically
    assert np.all(np.diff(row) >= 0) and 0 < row[20] < 1          # soft at the edge itself (x = 60)
    # the hard core is the 0.8-threshold erosion with the 33 px kernel: deeper than the 0.6/21 px mask's
    core = np.flatnonzero(alpha[130] == 1.0)[0] - 60
    assert core > _expected_edge_shrink() and core == _expected_edge_shrink(33, 0.8)
    assert alpha[130, 60 + core - 1] < 1.0


class RedIsFace(nn.Module):
    """Stand-in network: face where the red channel is above mid-range; records what it was fed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        mid = (x.amax() + x.amin()) / 2
        face = (x[:, 0] > mid).float() * 4.0
        return torch.stack([torch.ones_like(face), face, torch.zeros_like(face)], 1)


def test_segment_faces_batches_normalises_and_resizes():
    images = np.zeros((5, 128, 128, 3), np.uint8)
    images[:, 30:90, 40:100, 0] = 255
    images[:, 5:10, 5:10, 0] = 255                                 # a speck: not the largest component
    images[4] = 0                                                 # no face in the last frame
    net = RedIsFace()
    masks = segment_faces(images, net, "cpu", batch_size=2)
    assert masks.shape == (5, 128, 128) and masks.dtype == np.uint8
    assert [len(x) for x in net.seen] == [2, 2, 1]
    assert all(x.shape[-2:] == (256, 256) for x in net.seen)          # the network's training size
    assert net.seen[0].min() == -1.0 and net.seen[0].max() == 1.0     # FSGAN's (x/255 − 0.5)/0.5
    assert masks[:4, 5:10, 5:10].sum() == 0 and masks[4].sum() == 0
    inside = masks[0, 45:75, 55:85]
    assert inside.all() and masks[0, :25].sum() == 0 and masks[0, :, :35].sum() == 0
    net = RedIsFace()
    ned = segment_faces(images[:1], net, "cpu", input_range="ned")
    assert net.seen[0].min() == 0.0 and net.seen[0].max() == 1.0
    assert np.array_equal(ned[0], masks[0])
    # per-frame fallback to the mesh mask where segmentation found nothing
    mesh = np.ones((5, 128, 128), np.uint8)
    mask, used = mesh_or_segmentation(images, mesh, RedIsFace(), "cpu")
    assert used.tolist() == [True] * 4 + [False]
    assert np.array_equal(mask[:4], masks[:4]) and mask[4].all()
    with pytest.raises(ValueError, match="uint8"):
        segment_faces(images.astype(np.float32), net, "cpu")


def _all_face_state() -> dict[str, torch.Tensor]:
    """A published-layout state whose network calls every pixel 'face' (zero weights, biased classifier)."""
    state = {k: torch.zeros(shape) for k, shape in _manifest().items()}
    for key in [k for k in state if k.endswith("running_var")]:
        state[key] = torch.ones_like(state[key])
    state["final.bias"] = torch.tensor([0.0, 1.0, 0.0])
    return state


def test_prepare_actor_data_uses_the_segmentation_when_the_weight_is_present(tmp_path, monkeypatch):
    from models.deca import DECA
    from models.flame import FLAME, synthetic_flame
    from spfem_cli.backends.ned.renderer_data import prepare_actor_data
    from spfem_cli.backends.ned.train_renderer import load_actor_data
    from spfem_cli.demo.sample import make_talking_clip
    from spfem_cli.face.align import TEMPLATE_68
    from spfem_cli.face.tracking import track_video

    video = make_talking_clip(tmp_path / "talk.mp4", seconds=0.12, fps=25, size=(240, 320)).path
    track = track_video(video, "mediapipe", progress=False)
    torch.manual_seed(0)
    deca = DECA().eval()
    head = deca.E_flame.layers[2]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[206] = 7.0  # cam scale: a frontal mean face covering part of the crop
    path = _save_published(tmp_path / "fsgan.pth", _all_face_state())
    monkeypatch.setenv("SPFEM_WEIGHT_FSGAN_SEGMENTATION", str(path))
    with pytest.warns(UserWarning, match="unverified"):
        out = prepare_actor_data(video, tmp_path / "actor", device="cpu", progress=False, detail=False, track=track,
                                 flame=FLAME(*synthetic_flame(TEMPLATE_68, grid=31)), deca=deca)
    data = load_actor_data(out)
    info = json.loads((out / "actor.json").read_text())
    assert info["mask"] == "FSGAN segmentation" and info["mask_mesh_fallback_frames"] == 0
    n = info["frames"]
    assert n >= 2 and data["mask"].shape == (n, 256, 256)
    # the whole aligned frame is 'face' to this network: NED's mask is the frame eroded at its border,
    # unlike the mesh coverage, which leaves NMFC-free face pixels outside the mesh at zero
    expected = face_mask_from_logits(_logits(np.ones((256, 256), bool)))[0]
    assert all(np.array_equal(m, expected) for m in data["mask"])
    assert (data["nmfc"][data["mask"] == 1].max(axis=-1) == 0).any()
