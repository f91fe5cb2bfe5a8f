"""The CLI surface: every mission command has --help; errors are one line with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = ["edit", "preprocess", "train-metric", "eval", "doctor", "weights", "weights list",
            "weights fetch", "weights verify", "weights path"]


def _spfem(*args, env=None):
    return subprocess.run([sys.executable, "-m", "spfem_cli.app", *args], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_every_command(command):
    result = _spfem(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_weights_list_and_path():
    listing = _spfem("weights", "list")
    assert listing.returncode == 0
    assert "syncnet_v2" in listing.stdout
    path = _spfem("weights", "path", "syncnet_v2")
    assert path.stdout.strip().endswith("syncnet_v2.model")


def test_gated_fetch_is_one_clear_line_and_fails():
    result = _spfem("weights", "fetch", "flame_generic")
    assert result.returncode != 0
    assert "flame.is.tue.mpg.de" in result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_reports_device_and_weights():
    result = _spfem("doctor")
    assert result.returncode == 0
    assert "device (auto)" in result.stdout and "cpu" in result.stdout
    assert "backend ned" in result.stdout and "deca_model" in result.stdout   # nothing gated in the test home


def _bad_inputs(tmp_path):
    import numpy as np

    from spfem_cli.video import write_audio, write_video

    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file")
    good = write_video(tmp_path / "good.mp4", np.full((10, 32, 32, 3), 100, np.uint8), 25)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    audio_only = write_audio(tmp_path / "speech.m4a", np.zeros(8000), 16000)
    return {"missing": tmp_path / "nope.mp4", "directory": tmp_path, "text": text, "truncated": truncated,
            "audio-only": audio_only}


@pytest.mark.parametrize("kind", ["missing", "directory", "text", "truncated", "audio-only"])
def test_bad_input_videos_give_one_line_and_write_nothing(kind, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    bad = _bad_inputs(inputs)[kind]
    out = tmp_path / "out.mp4"
    result = _spfem("edit", str(bad), "--emotion", "happy", "-o", str(out))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.strip().splitlines() if line.strip()]) <= 3  # one message (may wrap)
    assert not out.exists()


def test_preprocess_3d_without_gated_weights_names_them_all_before_work(short_clip, tmp_path):
    result = _spfem("preprocess", str(short_clip.path), "-o", str(tmp_path / "pre"), "--3d", "--tracker", "fan")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    for name in ("flame_generic", "flame_landmark_embedding", "deca_model", "deca_head_template",
                 "deca_uv_face_eye_mask", "deca_fixed_displacement", "fan_2d68", "s3fd"):
        assert name in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "pre").exists()             # refused before any work
