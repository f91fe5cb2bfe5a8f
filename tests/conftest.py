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


@pytest.fixture(scope="session")
def small_clip(tmp_path_factory):
    """1 s, 25 fps, 240x320 talking clip with audio (fast CLI end-to-end runs)."""
    from spfem_cli.demo.sample import make_talking_clip

    return make_talking_clip(tmp_path_factory.mktemp("small") / "small.mp4", seconds=1.0, fps=25, size=(240, 320),
                             face_scale=0.9, seed=5)


@pytest.fixture(scope="session")
def spfem():
    """Run the CLI as a user would: a subprocess with stdout/stderr piped. ``spfem(*args, env=None)``."""
    import subprocess
    import sys

    def run(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "spfem_cli.app", *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, env=None if env is None else {**os.environ, **env})

    return run
