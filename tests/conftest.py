"""Shared fixtures: the real-face talking sample, and an isolated cache for every test session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Isolate caches before any spfem module reads them: tests never touch the user's ~/.cache.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="spfem-test-home-"))
os.environ["SPFEM_HOME"] = str(_SESSION_HOME / "spfem")
os.environ["TORCH_HOME"] = str(_SESSION_HOME / "torch")
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory):
    """3 s, 25 fps, 480x640 talking clip of the astronaut photo with AAC audio and its known mouth signal."""
    from spfem_cli.demo.sample import make_talking_clip

    return make_talking_clip(tmp_path_factory.mktemp("sample") / "talking.mp4", seconds=3.0, fps=25)


@pytest.fixture(scope="session")
def short_clip(tmp_path_factory):
    """1.2 s version of the sample (fast end-to-end runs)."""
    from spfem_cli.demo.sample import make_talking_clip

    return make_talking_clip(tmp_path_factory.mktemp("short") / "short.mp4", seconds=1.2, fps=25, seed=3)
