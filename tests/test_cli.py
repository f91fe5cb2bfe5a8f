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
