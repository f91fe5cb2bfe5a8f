"""The warp edit's first run tracks inside its rendering pass: same track, same edit as a cached run."""

from __future__ import annotations

import numpy as np
import pytest

from spfem_cli.backends.warp import render as warp_render
from spfem_cli.edit.pipeline import EditRequest, edit_video
from spfem_cli.edit.targets import EditTarget
from spfem_cli.face.preprocess import find_cached_track
from spfem_cli.face.tracking.track import track_video
from spfem_cli.video import probe, read_frames


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_single_pass_first_run_matches_the_cached_run(short_clip, tmp_path, monkeypatch):
    # A short estimation prefix, so the 1.2 s clip takes the single pass (track while rendering).
    monkeypatch.setattr(warp_render, "ESTIMATE_SECONDS", 0.3)
    monkeypatch.setenv("SPFEM_HOME", str(tmp_path / "home"))
    calls = {"single": 0}
    real = warp_render.render_single_pass

    def counting(*args, **kwargs):
        calls["single"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(warp_render, "render_single_pass", counting)
    first, cached = tmp_path / "first.mp4", tmp_path / "cached.mp4"
    target = EditTarget(emotion="happy", intensity=1.0)
    result = edit_video(EditRequest(short_clip.path, first, target, backend="warp", progress=False))
    assert calls["single"] == 1
    assert {"prefix decode+track", "decode+track", "render", "encode"} <= set(result.stage_seconds)
    # The track it cached is the one a separate tracking pass makes (same per-frame detections).
    stored = find_cached_track(short_clip.path)
    assert stored is not None
    reference = track_video(short_clip.path, progress=False)
    np.testing.assert_array_equal(stored.valid, reference.valid)
    np.testing.assert_allclose(stored.mesh, reference.mesh, atol=1e-3)
    edit_video(EditRequest(short_clip.path, cached, target, backend="warp", progress=False))
    assert calls["single"] == 1, "the second run reads the cached track"
    assert probe(first).n_frames == probe(cached).n_frames == probe(short_clip.path).n_frames
    src, _ = read_frames(short_clip.path)
    a, _ = read_frames(first)
    b, _ = read_frames(cached)
    face = (np.abs(a.astype(int) - src).max(-1) > 3) | (np.abs(b.astype(int) - src).max(-1) > 3)
    assert face.mean() > 0.01
    # Windowed smoothing in the pass vs the whole-track smoothing of the cached run: the same edit.
    assert _psnr(a[face], b[face]) >= 40.0


@pytest.mark.parametrize("n_valid,expected", [(0, None), (5, None), (40, 8)])
def test_estimation_prefix_is_the_first_seconds_with_a_face(n_valid, expected, monkeypatch):
    monkeypatch.setattr(warp_render, "ESTIMATE_SECONDS", 1.0)
    valid = np.zeros(60, bool)
    valid[2:2 + n_valid] = True
    assert warp_render.estimation_stop(valid, fps=6.0) == expected      # 6 frames with a face needed
