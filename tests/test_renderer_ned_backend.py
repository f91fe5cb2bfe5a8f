"""NED edit backend stages: weight check for --backend auto, sequence runs of the renderer state, render_video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spfem_cli.backends.ned.backend import missing_weights, sequence_runs


def test_sequence_runs_reset_at_gaps_and_cuts():
    cuts = np.zeros(20, bool)
    cuts[12] = True
    sel = np.array([3, 4, 5, 8, 9, 10, 11, 12, 13])
    # continuing from frame 2 of the previous chunk: no reset at 3; gap 5→8 and the cut at 12 reset
    assert sequence_runs(sel, cuts, last_ok=2) == [(0, 3, False), (3, 7, True), (7, 9, True)]
    assert sequence_runs(sel[:3], cuts, last_ok=-2) == [(0, 3, True)]


def test_missing_weights_lists_renderer_and_gated_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SPFEM_HOME", str(tmp_path / "home"))
    missing = missing_weights(tmp_path / "no_renderer")
    assert "ned_translator" in missing and "deca_model" in missing
    assert any("actor renderer" in m for m in missing)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A short talking clip tracked and reconstructed (random DECA with a frontal camera), an edited expression
    sequence, a FLAME-layout model and detail assets: everything render_video needs but the renderer."""
    import torch
    from fakes import frontal_deca

    from models.detail import DetailAssets
    from models.flame import FLAME, synthetic_flame
    from spfem_cli.backends.ned.reconstruct import Reconstruction, reconstruct_video
    from spfem_cli.backends.ned.translate import ExpressionSeq
    from spfem_cli.demo.sample import make_talking_clip
    from spfem_cli.face.align import TEMPLATE_68
    from spfem_cli.face.tracking import track_video

    tmp = tmp_path_factory.mktemp("ned_scene")
    video = tmp / "talk.mp4"
    make_talking_clip(video, seconds=0.4, fps=25, size=(240, 320))
    track = track_video(video, "mediapipe", progress=False)
    deca = frontal_deca()
    recon = Reconstruction.load(reconstruct_video(video, track, tmp / "cache", "cpu", deca=deca, progress=False))
    source = ExpressionSeq.from_reconstruction(recon)
    edited = ExpressionSeq(source.coeffs + np.linspace(0, 0.5, 51, dtype=np.float32), source.fps, source.valid)
    flame = FLAME(*synthetic_flame(TEMPLATE_68, grid=31))
    v = flame.v_template
    uv = (v[:, :2] - v[:, :2].amin(0)) / (v[:, :2].amax(0) - v[:, :2].amin(0))
    assets = DetailAssets(uv, flame.faces, torch.ones(256, 256), torch.zeros(256, 256))
    return {"video": video, "track": track, "recon": recon, "edited": edited, "flame": flame, "deca": deca,
            "assets": assets}


def _render(scene, out, segmenter):
    import torch

    from models.ned_renderer import NedGenerator
    from spfem_cli.backends.ned.backend import NedBackend
    from spfem_cli.backends.ned.neural_render import NeuralRenderer

    torch.manual_seed(0)
    renderer = NeuralRenderer(NedGenerator(ngf=8, n_blocks=3), "cpu", batch_frames=4)
    backend = NedBackend(out.parent / "renderer", device="cpu", check_weights=False)
    return backend.render_video(scene["video"], out, scene["track"], scene["recon"], scene["edited"],
                                flame=scene["flame"], deca=scene["deca"], detail_assets=scene["assets"],
                                renderer=renderer, chunk_size=4, segmenter=segmenter)


def _changed(scene, out) -> np.ndarray:
    from spfem_cli.video import read_frames

    src, _ = read_frames(scene["video"])
    got, _ = read_frames(out)
    return np.abs(got.astype(int) - src.astype(int)).mean(-1)


def test_ned_render_stage_end_to_end_on_sample_clip(scene, tmp_path):
    """Track → DECA (random weights, real layout) → conditioning (detailed shape) → renderer (random, narrow) →
    paste-back → H.264 with the source audio. Random weights: the plumbing is judged, not the picture."""
    from spfem_cli.video import probe, read_audio

    out = tmp_path / "edited.mp4"
    n = _render(scene, out, segmenter=None)
    src_info, out_info = probe(scene["video"]), probe(out)
    assert n == src_info.n_frames == out_info.n_frames and out_info.fps == src_info.fps
    assert len(read_audio(out)) > 0.3 * 16000
    diff = _changed(scene, out)
    assert diff[:, :20].mean() < 3            # far from the face: the frame itself (codec noise only)
    assert diff.max() > 40                    # the rendered face was pasted in


class _UpperHalfFace(torch.nn.Module):
    """A segmentation stand-in with FSGAN's output layout (3 classes): 'face' only in the upper half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        logits[:, 1, : x.shape[-2] // 2] = 1.0
        return logits


def test_segmentation_mask_limits_what_is_rendered_and_pasted(scene, tmp_path):
    """With a segmenter, its mask of the aligned source frame (not the mesh coverage) is the renderer's mask
    input and the base of the paste-back alpha, as in NED: nothing below the mask's edge may change."""
    from spfem_cli.face.align import apply_affine

    out = tmp_path / "seg.mp4"
    _render(scene, out, segmenter=_UpperHalfFace())
    diff = _changed(scene, out)
    track = scene["track"]
    lower, upper = 0, 0
    for i in range(len(diff)):
        ys, xs = np.nonzero(diff[i] > 25)
        aligned_y = apply_affine(track.transforms[i], np.stack([xs, ys], 1).astype(float))[:, 1]
        lower += int((aligned_y > 128 + 8).sum())
        upper += int((aligned_y < 128).sum())
    assert upper > 500 and lower < 0.01 * upper
