"""`spfem preprocess`: outputs, the content-hash cache and its manifest, the CLI."""

from __future__ import annotations

import inspect
import json
import shutil

import numpy as np
import pytest
from test_tracking import no_face_frames, write_clip
from typer.testing import CliRunner

from spfem_cli.errors import SpfemError
from spfem_cli.face import preprocess as pp
from spfem_cli.face.tracking.base import FaceTrack
from spfem_cli.video import probe, read_frames


@pytest.fixture()
def forbid_tracking(monkeypatch):
    """Make any tracking call fail: proves a run was served from the cache."""
    import spfem_cli.face.tracking.track as track_module

    def boom(*args, **kwargs):
        raise AssertionError("tracked again although the cache should have answered")

    monkeypatch.setattr(track_module, "track_video", boom)


def test_outputs_and_second_run_from_cache(short_clip, tmp_path, request, monkeypatch):
    monkeypatch.setenv("SPFEM_HOME", str(tmp_path / "home"))   # a cache no other test has filled
    out = tmp_path / "pre"
    result = pp.preprocess(short_clip.path, out, progress=False)
    assert not result.cached
    for name in (*pp.OUTPUT_FILES, "manifest.json"):
        assert (out / name).is_file(), name
    track = FaceTrack.load(out / "track.npz")
    n = len(short_clip.mouth_signal)
    assert len(track) == n and track.valid.all()
    crops, info = read_frames(out / "aligned.mp4")
    assert crops.shape == (n, 256, 256, 3) and info.has_audio
    debug = probe(out / "debug.mp4")
    assert (debug.height, debug.width) == short_clip.size and debug.n_frames == n
    # the aligned crops hold the face in the template position: landmarks found on a crop sit on the template
    from spfem_cli.face.align import TEMPLATE_68
    from spfem_cli.face.tracking.mediapipe_tracker import MediaPipeTracker

    with MediaPipeTracker() as tracker:
        (det,) = tracker.detect(crops[n // 2])
    assert np.abs(det.landmarks[17:48] - TEMPLATE_68[17:48]).mean() < 4.0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] == {"track": True, "media": True}
    assert manifest["video_sha256"] == pp.content_hash(short_clip.path)
    assert manifest["config_hash"] == pp.config_hash(pp.PreprocessConfig())
    assert set(manifest["files"]) == set(pp.OUTPUT_FILES)

    request.getfixturevalue("forbid_tracking")
    again = pp.preprocess(short_clip.path, tmp_path / "again", progress=False)
    assert again.cached
    assert (tmp_path / "again" / "aligned.mp4").read_bytes() == (out / "aligned.mp4").read_bytes()
    # the same content under another name hits the same entry; the edit pipeline gets the track alone
    renamed = tmp_path / "renamed.mp4"
    shutil.copyfile(short_clip.path, renamed)
    cached = pp.cached_track(renamed, progress=False)
    np.testing.assert_array_equal(cached.landmarks, track.landmarks)


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    clip = write_clip(tmp_path / "none.mp4", no_face_frames(6))
    first = pp.preprocess(clip, tmp_path / "a", progress=False)
    entry = pp.cache_entry(pp.content_hash(clip), pp.PreprocessConfig())
    (entry / "aligned.mp4").write_bytes(b"truncated")       # size no longer matches the manifest
    second = pp.preprocess(clip, tmp_path / "b", progress=False)
    assert not first.cached and not second.cached
    assert probe(tmp_path / "b" / "aligned.mp4").n_frames == 6


def test_no_face_video_gives_black_crops_and_an_all_invalid_track(tmp_path):
    clip = write_clip(tmp_path / "none.mp4", no_face_frames(6))
    result = pp.preprocess(clip, tmp_path / "out", progress=False)
    assert result.valid_frames == 0 and result.frames == 6
    crops, _ = read_frames(tmp_path / "out" / "aligned.mp4")
    assert crops.shape == (6, 256, 256, 3) and crops.max() < 20
    summary = json.loads((tmp_path / "out" / "track.json").read_text())
    assert summary["valid_frames"] == 0 and summary["invalid_frames"] == list(range(6))


def test_config_changes_the_cache_key():
    base = pp.PreprocessConfig()
    assert pp.config_hash(base) != pp.config_hash(pp.PreprocessConfig(face_index=1))
    assert pp.config_hash(base) != pp.config_hash(pp.PreprocessConfig(tracker="fan"))
    assert pp.config_hash(base) == pp.config_hash(pp.PreprocessConfig())


def test_bad_inputs_fail_with_one_line(tmp_path):
    with pytest.raises(SpfemError, match="no such file"):
        pp.preprocess(tmp_path / "missing.mp4", tmp_path / "out", progress=False)
    not_a_video = tmp_path / "x.mp4"
    not_a_video.write_text("hello")
    with pytest.raises(SpfemError):
        pp.preprocess(not_a_video, tmp_path / "out", progress=False)
    (tmp_path / "file").write_text("")
    clip = write_clip(tmp_path / "none.mp4", no_face_frames(2))
    with pytest.raises(SpfemError, match="not a folder"):
        pp.preprocess(clip, tmp_path / "file", progress=False)
    with pytest.raises(SpfemError, match="not a writable folder"):
        pp.preprocess(clip, tmp_path / "file" / "below" / "dir", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_preprocess_and_defaults(short_clip, tmp_path):
    from spfem_cli.app import app
    from spfem_cli.app import preprocess as command

    defaults = {name: p.default.default for name, p in inspect.signature(command).parameters.items()
                if hasattr(p.default, "default")}
    assert defaults["tracker"] == pp.PreprocessConfig.tracker
    assert defaults["face"] == pp.PreprocessConfig.face_index
    runner = CliRunner()
    result = runner.invoke(app, ["preprocess", str(short_clip.path), "-o", str(tmp_path / "cli"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "track.npz").is_file()
    bad = runner.invoke(app, ["preprocess", str(short_clip.path), "-o", str(tmp_path / "x"), "--tracker", "dlib"])
    assert bad.exit_code != 0 and "unknown tracker" in str(bad.exception)


def test_fan_without_weights_fails_before_writing_anything(tmp_path):
    from spfem_cli.weights import WeightsError

    clip = write_clip(tmp_path / "none.mp4", no_face_frames(2))
    entries_before = set(pp.cache_root().glob("*")) if pp.cache_root().is_dir() else set()
    with pytest.raises(WeightsError, match="spfem weights fetch fan_2d68"):
        pp.preprocess(clip, tmp_path / "out", pp.PreprocessConfig(tracker="fan"), progress=False)
    assert not (tmp_path / "out").exists()
    entries_after = set(pp.cache_root().glob("*")) if pp.cache_root().is_dir() else set()
    assert entries_after == entries_before
