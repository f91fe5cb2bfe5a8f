"""Actor-folder preparation from a real video: track → DECA (random weights, real layout) → conditioning images.

Random DECA weights and a synthetic FLAME: only the plumbing is judged (shapes, alignment of mask and face,
mouth centres, streaming to .npy), and that a short fine-tune runs on the result.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.deca import DECA
from models.flame import FLAME, synthetic_flame
from models.vgg19 import VGG19Features
from spfem_cli.backends.ned.renderer_data import prepare_actor_data
from spfem_cli.backends.ned.train_renderer import RendererTrainConfig, fine_tune, load_actor_data
from spfem_cli.face.align import TEMPLATE_68


@pytest.fixture(scope="module")
def actor_from_video(tmp_path_factory):
    from spfem_cli.demo.sample import make_talking_clip
    from spfem_cli.face.tracking import track_video

    root = tmp_path_factory.mktemp("actor_video")
    video = root / "talk.mp4"
    make_talking_clip(video, seconds=0.4, fps=25, size=(240, 320))
    track = track_video(video, "mediapipe", progress=False)
    torch.manual_seed(0)
    deca = DECA().eval()
    head = deca.E_flame.layers[2]  # random encoder, but a fixed frontal mean face with a sensible camera
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[206] = 7.0  # cam scale (shape 100 + tex 50 + exp 50 + pose 6 precede the camera)
    out = prepare_actor_data(video, root / "actor", device="cpu", progress=False, detail=False, track=track,
                             flame=FLAME(*synthetic_flame(TEMPLATE_68, grid=31)), deca=deca)
    return out, track


def test_actor_folder_from_video(actor_from_video):
    folder, track = actor_from_video
    data = load_actor_data(folder)
    n = int(track.valid.sum())
    assert n >= len(track) - 1
    assert data["frames"].shape == (n, 256, 256, 3) and data["nmfc"].shape == (n, 256, 256, 3)
    assert data["mask"].shape == (n, 256, 256) and set(np.unique(data["mask"])) <= {0, 1}
    assert 0.02 < data["mask"].mean() < 0.9
    assert data["nmfc"][data["mask"] == 0].max() == 0           # NMFC only where the mesh is
    assert data["gaze"][..., 0].max() == 255                   # pupils drawn
    # mouth centres: inside the aligned crop, below the eyes, near the template's mouth
    mouth = np.asarray(data["mouth"])
    assert np.all(np.abs(mouth - TEMPLATE_68[48:68].mean(0)) < 30)
    assert data["frames"].std() > 20                           # real face pixels, not a blank crop


def test_short_finetune_runs_on_prepared_actor(actor_from_video, tmp_path):
    folder, _ = actor_from_video
    cfg = RendererTrainConfig(seq_len=2, frames_per_step=2, ngf=8, n_blocks=3, ndf=8, sample_every=2)
    out = fine_tune(folder, tmp_path / "run", cfg=cfg, max_steps=2, vgg=VGG19Features(), device="cpu",
                    progress=False, log_every=1)
    assert (out / "latest_net_G.pth").is_file() and (out / "samples" / "step_00000002.png").is_file()
